"""The client side of the engine's control socket, without trio: the protocol's messages
(sans-IO) and a blocking driver for the CLI, so ``tp list`` or ``tp leave`` cost a
socket round trip rather than an event loop's start-up. The socket and the wire format
are described in :mod:`tpengine.engine._control` (the trio server and client).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from typing import Any

MAX_LINE = 1 << 20


def control_socket_name(uid: int | None = None) -> str:
    return f"\0tpengine-{os.getuid() if uid is None else uid}"


class ControlError(Exception):
    """The engine answered a request with an error."""

    def __init__(self, message: str, code: str = "error") -> None:
        super().__init__(message)
        self.code = code


class EngineNotRunning(Exception):
    """No engine listens on the control socket."""


class LineBuffer:
    """Bytes in, complete lines out: the framing of both ends of the control socket (one
    JSON message per line). A line longer than ``MAX_LINE`` is refused (ValueError)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> None:
        self._buffer += data

    def next_line(self) -> bytes | None:
        """The next complete line without its newline, or None until more is fed."""
        index = self._buffer.find(b"\n")
        if index < 0:
            if len(self._buffer) > MAX_LINE:
                raise ValueError(f"a line longer than {MAX_LINE} bytes")
            return None
        line = bytes(self._buffer[:index])
        del self._buffer[: index + 1]
        return line


def encode_request(request_id: int, method: str, params: dict[str, Any] | None) -> bytes:
    return json.dumps({"id": request_id, "method": method, "params": params or {}}).encode() + b"\n"


def decode_reply(line: bytes, method: str) -> tuple[bool, Any]:
    """One reply line: ``(False, text)`` for progress, ``(True, result)`` for the answer;
    raises ControlError for an error answer or a line that is not a reply."""
    try:
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError("not an object")
    except ValueError:
        raise ControlError(f"the engine sent a malformed reply to {method}", "gone") from None
    if "progress" in message:
        return False, message["progress"]
    if "error" in message:
        raise ControlError(str(message["error"]), str(message.get("code", "error")))
    return True, message.get("result")


def call_engine_sync(
    method: str,
    params: dict[str, Any] | None = None,
    *,
    on_progress: Callable[[str], None] | None = None,
    name: str | None = None,
) -> Any:
    """One request to the engine, blocking; EngineNotRunning when nothing listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        try:
            sock.connect(name or control_socket_name())
        except (ConnectionRefusedError, FileNotFoundError):
            raise EngineNotRunning("no engine is running (run tp connect)") from None
        try:
            sock.sendall(encode_request(1, method, params))
            lines = LineBuffer()
            while True:
                try:
                    line = lines.next_line()
                except ValueError:
                    raise ControlError(
                        f"the engine's reply to {method} is too long", "gone"
                    ) from None
                if line is None:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ControlError(
                            f"the engine closed the connection during {method}", "gone"
                        )
                    lines.feed(chunk)
                    continue
                final, value = decode_reply(line, method)
                if final:
                    return value
                if on_progress is not None:
                    on_progress(value)
        except OSError as exc:
            raise ControlError(f"lost the engine during {method}: {exc}", "gone") from None
