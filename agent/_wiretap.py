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
        self._wake = trio.Event()

    def offer(self, data: bytes) -> bool:
        """Queue a copy; False (and a drop counted) when the client cannot keep up."""
        if self.dead or self.closed or self.size + len(data) > self.limit:
            self.stats.dropped += 1
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
    """Observer for :class:`agent._http1.Http1Router`: each request that matches a
    wiretap's filter is re-serialised whole and offered to that wiretap's copier."""

    def __init__(self, taps: list[tuple[HttpFilter, Copier]], limit: int = COPY_BUFFER) -> None:
        self.taps = taps
        self.limit = limit
        self._current: list[tuple[Copier, h11.Connection, bytearray]] = []

    def __call__(self, event: h11.Event) -> None:
        if isinstance(event, h11.Request):
            self._current = [
                (copier, h11.Connection(h11.CLIENT), bytearray())
                for http_filter, copier in self.taps
                if http_filter.matches(event.target, event.headers.raw_items())
            ]
            event = h11.Request(
                method=event.method,
                target=event.target,
                headers=list(event.headers.raw_items()),
                http_version=event.http_version,
            )
        elif isinstance(event, h11.EndOfMessage):
            event = h11.EndOfMessage(headers=list(event.headers.raw_items()))
        kept = []
        for copier, conn, buf in self._current:
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
        self._current = kept
