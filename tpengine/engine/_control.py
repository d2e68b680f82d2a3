"""The engine's control socket: how ``tp`` talks to a running engine.

An abstract unix socket ``@tpengine-<uid>`` (unix(7)): abstract names belong to a network
namespace, so two laptops on one machine never see each other's engine, and nothing is
left on disk when the engine dies. Only the engine's own uid (or root) may talk to it
(SO_PEERCRED).

Newline-delimited JSON. A request ``{"id": 1, "method": "status", "params": {}}`` is
answered by zero or more ``{"id": 1, "progress": "…"}`` lines and then exactly one
``{"id": 1, "result": …}`` or ``{"id": 1, "error": "…", "code": "…"}``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast

import trio

from tpengine.engine._control_client import (
    ControlError,
    EngineNotRunning,
    LineBuffer,
    control_socket_name,
    decode_reply,
    encode_request,
)

log = logging.getLogger(__name__)

Progress = Callable[[str], Awaitable[None]]
Handler = Callable[[dict[str, Any], Progress], Awaitable[Any]]


class _LineReader:
    """Lines from a trio stream (``LineBuffer``'s framing); None at its end."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.lines = LineBuffer()

    async def read_line(self) -> bytes | None:
        while (line := self.lines.next_line()) is None:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return None
            self.lines.feed(chunk)
        return line


def _peer_uid(sock: trio.socket.SocketType) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


async def serve_control(
    handlers: Mapping[str, Handler],
    *,
    name: str | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handlers`` on the control socket until cancelled. Raises OSError(EADDRINUSE)
    when another engine already serves it."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        await sock.bind(name or control_socket_name())
        sock.listen(16)
        listener = trio.SocketListener(sock)
        task_status.started()
        await trio.serve_listeners(
            lambda stream: _serve_client(handlers, cast(trio.SocketStream, stream)), [listener]
        )


async def _serve_client(handlers: Mapping[str, Handler], stream: trio.SocketStream) -> None:
    async with stream:
        if _peer_uid(stream.socket) not in (os.getuid(), 0):
            return
        reader = _LineReader(stream)
        try:
            while (line := await reader.read_line()) is not None:
                await _answer(handlers, stream, line)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
            return


async def _answer(handlers: Mapping[str, Handler], stream: trio.SocketStream, line: bytes) -> None:
    async def send(message: dict[str, Any]) -> None:
        await stream.send_all(json.dumps(message).encode() + b"\n")

    try:
        request = json.loads(line)
        request_id = request["id"]
        method = request["method"]
        params = request.get("params") or {}
    except (ValueError, KeyError, TypeError):
        await send({"id": None, "error": "malformed request", "code": "bad-request"})
        return
    handler = handlers.get(method)
    if handler is None:
        await send({"id": request_id, "error": f"unknown method {method!r}", "code": "bad-request"})
        return

    async def progress(text: str) -> None:
        await send({"id": request_id, "progress": text})

    try:
        result = await handler(params, progress)
    except ControlError as exc:
        await send({"id": request_id, "error": str(exc), "code": exc.code})
    except Exception as exc:
        log.exception("control: %s failed", method)
        await send({"id": request_id, "error": f"{method} failed: {exc}", "code": "internal"})
    else:
        await send({"id": request_id, "result": result})


class ControlClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._reader = _LineReader(stream)
        self._next_id = 0

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        on_progress: Callable[[str], None] | None = None,
    ) -> Any:
        self._next_id += 1
        try:
            await self._stream.send_all(encode_request(self._next_id, method, params))
            while True:
                line = await self._reader.read_line()
                if line is None:
                    raise ControlError(f"the engine closed the connection during {method}", "gone")
                final, value = decode_reply(line, method)
                if final:
                    return value
                if on_progress is not None:
                    on_progress(value)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ControlError(f"lost the engine during {method}: {exc}", "gone") from None


@asynccontextmanager
async def open_control_client(name: str | None = None) -> AsyncIterator[ControlClient]:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.connect(name or control_socket_name())
    except (ConnectionRefusedError, FileNotFoundError):
        sock.close()
        raise EngineNotRunning("no engine is running (run tp connect)") from None
    stream = trio.SocketStream(sock)
    async with stream:
        yield ControlClient(stream)
