"""Copying bytes both ways between two streams, with half-close, as a TCP proxy must.

Each direction ends when its source reaches EOF; the destination is then half-closed
(``send_eof``) so the far end sees FIN, not a reset, while the other direction goes on
(RFC 9293 §3.6: a half-closed connection may still carry data the other way). An error
on either side ends both directions.
"""

from __future__ import annotations

import trio

CHUNK = 256 * 1024

_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


async def _pump(
    source: trio.abc.ReceiveStream, sink: trio.abc.SendStream, done: trio.CancelScope
) -> None:
    try:
        while True:
            data = await source.receive_some(CHUNK)
            if not data:
                break
            await sink.send_all(data)
        if isinstance(sink, trio.abc.HalfCloseableStream):
            await sink.send_eof()
        else:
            await sink.aclose()
    except _GONE:
        done.cancel()  # one side broke: the other direction has nowhere to go either


async def splice(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
    """Copy a→b and b→a until both directions ended; close both streams at the end."""
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, a, b, nursery.cancel_scope)
            nursery.start_soon(_pump, b, a, nursery.cancel_scope)
    finally:
        with trio.CancelScope(shield=True):
            for stream in (a, b):
                try:
                    await stream.aclose()
                except _GONE:
                    pass
