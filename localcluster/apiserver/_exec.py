"""Exec over the websocket channel protocol (v5.channel.k8s.io … channel.k8s.io).

Every binary message starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error
(a ``Status`` when the command ends: Success, or Failure with reason NonZeroExitCode and
the exit code in ``details.causes[reason=ExitCode]``), 4 resize (JSON Width/Height), and
in v5 255 "close" whose payload names the channel the client will not write any more.
"""

from __future__ import annotations

import json
import logging

import trio

from ..runtime_api import ExecSession
from ._websocket import WebSocket

log = logging.getLogger(__name__)

PROTOCOLS = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def exit_status(code: int, command: list[str]) -> dict[str, object]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command "
        f"{json.dumps(command)}, exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def failure_status(message: str) -> dict[str, object]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }


async def _pump(ws: WebSocket, stream: trio.abc.ReceiveStream, channel: int) -> None:
    header = bytes([channel])
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            await ws.send(header + data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


async def _from_client(ws: WebSocket, session: ExecSession, scope: trio.CancelScope) -> None:
    stdin = session.stdin
    while True:
        message = await ws.receive()
        if message is None:
            scope.cancel()  # the client went away: stop the command
            return
        if isinstance(message, str) or not message:
            continue
        channel, payload = message[0], message[1:]
        if channel == STDIN and stdin is not None and payload:
            try:
                await stdin.send_all(payload)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                stdin = None
        elif channel == RESIZE:
            try:
                size = json.loads(payload)
                session.resize(int(size.get("Width", 0)), int(size.get("Height", 0)))
            except (ValueError, TypeError, AttributeError):
                continue
        elif channel == CLOSE and payload[:1] == bytes([STDIN]) and stdin is not None:
            await stdin.aclose()
            stdin = None


async def serve_exec(ws: WebSocket, session: ExecSession, command: list[str]) -> None:
    """Pipe one exec session over the websocket, then report its exit status."""
    try:
        async with trio.open_nursery() as outer:
            outer.start_soon(_from_client, ws, session, outer.cancel_scope)
            async with trio.open_nursery() as pumps:
                pumps.start_soon(_pump, ws, session.stdout, STDOUT)
                if session.stderr is not None:
                    pumps.start_soon(_pump, ws, session.stderr, STDERR)
            code = await session.wait()
            try:
                await ws.send(bytes([ERROR]) + json.dumps(exit_status(code, command)).encode())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            outer.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await session.aclose()
            await ws.aclose()
