"""Wiretap copies: the engaging client gets a copy of the traffic, the caller never waits.

Each wiretap of a connection has a :class:`Copier`: a bounded buffer the caller's path
fills without blocking (``offer`` drops the copy when the buffer is full and counts it)
and a task that dials the client through the tunnel, writes the copies and reads and
discards whatever the client answers (Telepresence: "local replies are discarded").
For HTTP a copy is one whole request, re-serialised by h11, so a dropped copy never cuts
a request in half; for other TCP it is the caller's bytes.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable

import h11
import trio

from ._filters import HttpFilter

log = logging.getLogger(__name__)

#: Bytes of copies waiting for one wiretap's stream before new copies are dropped.
COPY_BUFFER = 1024 * 1024
#: After the caller's connection ended, how long a copier may take to deliver the rest.
FLUSH_TIMEOUT = 5.0


class CopyStats:
    """Counters over the agent's whole life (shown in logs, asserted by tests)."""

    def __init__(self) -> None:
        self.copied = 0
        self.dropped = 0


class Copier:
    def __init__(
        self,
        name: str,
        connect: Callable[[], Awaitable[trio.abc.Stream]],
        stats: CopyStats,
        limit: int = COPY_BUFFER,
    ) -> None:
        self.name = name
        self.connect = connect
        self.stats = stats
        self.limit = limit
        self.pending: deque[bytes] = deque()
        self.size = 0
        self.dead = False
        self.closed = False
        self.dropped = 0  # this copier's drops (stats counts the agent's)
        self._wake = trio.Event()

    def offer(self, data: bytes) -> bool:
        """Queue a copy; False (and a drop counted) when the client cannot keep up."""
        if self.dead or self.closed or self.size + len(data) > self.limit:
            self.stats.dropped += 1
            self.dropped += 1
            if self.dropped == 1 and not self.dead:
                log.info("wiretap %s: the client is not keeping up; copies dropped", self.name)
            return False
        self.pending.append(data)
        self.size += len(data)
        self._wake.set()
        return True

    def close(self) -> None:
        """No more copies: deliver what is queued, then end the stream."""
        self.closed = True
        self._wake.set()

    async def run(self) -> None:
        while not self.pending and not self.closed:  # dial only once there is a copy
            self._wake = trio.Event()
            await self._wake.wait()
        if not self.pending:
            return
        try:
            stream = await self.connect()
        except (OSError, trio.BrokenResourceError) as exc:
            log.info("wiretap %s: client not reachable (%s); copies dropped", self.name, exc)
            self._die()
            return
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(self._discard_answers, stream)
            try:
                await self._write(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.info("wiretap %s: client stream broke (%s)", self.name, exc)
                self._die()
                nursery.cancel_scope.cancel()

    async def _write(self, stream: trio.abc.Stream) -> None:
        while True:
            while self.pending:
                data = self.pending.popleft()
                self.size -= len(data)
                await stream.send_all(data)
                self.stats.copied += 1
            if self.closed:
                if isinstance(stream, trio.abc.HalfCloseableStream):
                    await stream.send_eof()
                return
            self._wake = trio.Event()
            await self._wake.wait()

    async def _discard_answers(self, stream: trio.abc.Stream) -> None:
        try:
            while await stream.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def _die(self) -> None:
        self.dead = True
        self.stats.dropped += len(self.pending)
        self.pending.clear()
        self.size = 0


class HttpCopies:
    """Copies of HTTP requests for the wiretaps whose filter matches: each request is
    re-serialised whole as HTTP/1.1 by h11 and offered to that wiretap's copier.

    Called as an observer by :class:`agent._http1.Http1Router` (one request at a time),
    and as a stream tap by :class:`agent._h2c.H2Router`: an HTTP/2 request is copied as
    the equivalent HTTP/1.1 request (RFC 9113 §8.3.1: ``:authority`` becomes Host), so
    any local handler can take the copy; its answer is discarded anyway.
    """

    def __init__(self, taps: list[tuple[HttpFilter, Copier]], limit: int = COPY_BUFFER) -> None:
        self.taps = taps
        self.limit = limit
        self._open: dict[int, list[tuple[Copier, h11.Connection, bytearray]]] = {}

    # -- Http1Router's observer ------------------------------------------------------------

    def __call__(self, event: h11.Event) -> None:
        if isinstance(event, h11.Request):
            self._start(0, event)
        else:
            self._feed(0, event)

    # -- H2Router's stream tap -------------------------------------------------------------

    def request(self, stream_id: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        pseudo = dict(h for h in headers if h[0].startswith(b":"))
        plain = [h for h in headers if not h[0].startswith(b":")]
        names = {name for name, _ in plain}
        if b":authority" in pseudo and b"host" not in names:
            plain.insert(0, (b"host", pseudo[b":authority"]))
        if not ended and b"content-length" not in names:
            plain.append((b"transfer-encoding", b"chunked"))  # RFC 9112 §7.1
        try:
            request = h11.Request(
                method=pseudo.get(b":method", b"GET"),
                target=pseudo.get(b":path", b"/"),
                headers=[(n, v) for n, v in plain if n not in _HOP_BY_HOP],
            )
        except h11.LocalProtocolError:
            return
        self._start(stream_id, request)
        if ended:
            self._feed(stream_id, h11.EndOfMessage())

    def data(self, stream_id: int, data: bytes) -> None:
        if data:
            self._feed(stream_id, h11.Data(data=data))

    def end(self, stream_id: int) -> None:
        self._feed(stream_id, h11.EndOfMessage())

    def reset(self, stream_id: int) -> None:
        self._open.pop(stream_id, None)

    # -- common ----------------------------------------------------------------------------

    def _start(self, key: int, event: h11.Request) -> None:
        matching = [
            copier
            for http_filter, copier in self.taps
            if http_filter.matches(event.target, event.headers.raw_items())
        ]
        self._open[key] = [(copier, h11.Connection(h11.CLIENT), bytearray()) for copier in matching]
        copy = h11.Request(
            method=event.method,
            target=event.target,
            headers=list(event.headers.raw_items()),
            http_version=event.http_version,
        )
        self._feed(key, copy)

    def _feed(self, key: int, event: h11.Event) -> None:
        if isinstance(event, h11.EndOfMessage):
            event = h11.EndOfMessage(headers=list(event.headers.raw_items()))
        kept = []
        for copier, conn, buf in self._open.get(key, ()):
            try:
                buf += conn.send(event) or b""
            except h11.LocalProtocolError:
                continue
            if len(buf) > self.limit:  # too big to copy whole: drop it
                copier.stats.dropped += 1
                continue
            if isinstance(event, h11.EndOfMessage):
                copier.offer(bytes(buf))
            else:
                kept.append((copier, conn, buf))
        if kept:
            self._open[key] = kept
        else:
            self._open.pop(key, None)


#: HTTP/2 forbids connection-specific fields (RFC 9113 §8.2.2); keep the copy clean too.
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te"})
