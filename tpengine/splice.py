"""Copying bytes both ways between two streams, as a TCP proxy must.

Each direction ends when its source reaches EOF; the destination is then half-closed
(``send_eof``) so the far end sees FIN, not a reset, while the other direction goes on
(RFC 9293 §3.6: a half-closed connection may still carry data the other way). When one
side breaks (a reset, a tunnel that died), the other side is reset too — so an app whose
connection went through a lost manager gets ECONNRESET at once instead of hanging.
"""

from __future__ import annotations

import socket
import struct

import trio

CHUNK = 256 * 1024

_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


async def reset(stream: trio.abc.Stream) -> None:
    """Abort ``stream`` so its peer sees a reset rather than an orderly close."""
    try:
        if isinstance(stream, trio.SocketStream):
            # SO_LINGER with a zero timeout: close(2) sends RST (socket(7)).
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()
        elif callable(getattr(stream, "abort", None)):
            stream.abort()  # type: ignore[attr-defined]
            await trio.lowlevel.checkpoint()
        elif callable(getattr(stream, "reset", None)):
            await stream.reset("the other side of the connection was reset")  # type: ignore[attr-defined]
        else:
            await stream.aclose()
    except (*_GONE, OSError):
        pass


class _Splice:
    def __init__(self) -> None:
        self.broken: set[int] = set()

    async def pump(
        self, source: trio.abc.Stream, sink: trio.abc.Stream, done: trio.CancelScope
    ) -> None:
        try:
            while True:
                try:
                    data = await source.receive_some(CHUNK)
                except _GONE:
                    self.broken.add(id(source))
                    raise
                if not data:
                    break
                try:
                    await sink.send_all(data)
                except _GONE:
                    self.broken.add(id(sink))
                    raise
            if isinstance(sink, trio.abc.HalfCloseableStream):
                await sink.send_eof()
            else:
                await sink.aclose()
        except _GONE:
            done.cancel()  # one side broke: the other direction has nowhere to go either


async def splice(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
    """Copy a→b and b→a until both directions ended; close (or reset) both at the end."""
    state = _Splice()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(state.pump, a, b, nursery.cancel_scope)
            nursery.start_soon(state.pump, b, a, nursery.cancel_scope)
    finally:
        with trio.CancelScope(shield=True):
            for stream, other in ((a, b), (b, a)):
                if id(other) in state.broken and id(stream) not in state.broken:
                    await reset(stream)
                else:
                    try:
                        await stream.aclose()
                    except _GONE:
                        pass
