"""The engine's end of the volume protocol: many requests in flight on one stream, and a
new stream (to whichever agent pod is current) after the old one broke.

``VolumeClient.run`` keeps the connection: it dials with ``connect()`` when the first
request wants it, reads replies and wakes their callers. When the stream breaks (the
agent's pod was deleted, the tunnel dropped) every request in flight fails at once with
EIO, and so do new ones until a dial succeeds again: a reader gets an error promptly,
never a hang. A request that gets no reply within ``request_timeout`` fails with EIO too.
File handles belong to one connection; ``generation`` tells the file system when its
handles are stale (it reopens them by path).
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from tpengine.fs._protocol import (
    BIG_FRAME,
    MAX_CHUNK,
    VERSION,
    FrameDecoder,
    Op,
    ProtocolViolation,
    Reply,
    encode_request,
    write_request_header,
)

log = logging.getLogger(__name__)

Connect = Callable[[], Awaitable[trio.abc.Stream]]


class _Call:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: Reply | None = None


class _Link:
    """One connected stream and the requests waiting on it."""

    def __init__(self, stream: trio.abc.Stream, generation: int) -> None:
        self.stream = stream
        self.generation = generation
        self.pending: dict[int, _Call] = {}
        self.send_lock = trio.Lock()
        self.broken = False
        self.mounts: list[dict[str, Any]] = []

    def fail_all(self) -> None:
        self.broken = True
        for call in self.pending.values():
            call.done.set()  # reply stays None: EIO
        self.pending.clear()


class VolumeClient:
    def __init__(
        self,
        connect: Connect,
        *,
        streams: int = 1,
        request_timeout: float = 15.0,
        connect_timeout: float = 5.0,
        retry_every: float = 1.0,
    ) -> None:
        self._connect = connect
        self.streams = streams
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.retry_every = retry_every
        self._links: list[_Link] = []
        self._next_id = 1
        self._next_read = 0
        self._generation = 0
        self._changed = trio.Event()
        self.last_error = ""

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def connected(self) -> bool:
        return bool(self._links) and not any(link.broken for link in self._links)

    @property
    def mounts(self) -> list[dict[str, Any]]:
        """The mountPaths the agent serves: [{"path": "/etc/web", "ro": false}, …]."""
        return self._links[0].mounts if self._links else []

    async def wait_changed(self) -> None:
        """Until the next connect, break or failed dial."""
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep ``streams`` streams to one agent up (dial, read, re-dial all after any
        of them broke: they share the agent's file handles), forever."""
        task_status.started()
        while True:
            streams: list[trio.abc.Stream] = []
            try:
                with trio.fail_after(self.connect_timeout):
                    while len(streams) < self.streams:
                        streams.append(await self._connect())
            except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                log.info("volumes: cannot reach the agent: %s", self.last_error)
                await _close_all(streams)
                self._notify()  # waiters give up with EIO rather than wait for us
                await trio.sleep(self.retry_every)
                continue
            self._generation += 1
            await self._serve([_Link(stream, self._generation) for stream in streams])
            await trio.sleep(self.retry_every)

    async def _serve(self, links: list[_Link]) -> None:
        token = os.urandom(16)
        try:
            async with trio.open_nursery() as nursery:
                for link in links:  # any of them ending ends them all
                    nursery.start_soon(self._read, link, nursery.cancel_scope)
                for link in links:
                    if not await self._hello(link, token):
                        nursery.cancel_scope.cancel()
                        return
                self._links = links
                self.last_error = ""
                self._notify()
                log.info(
                    "volumes: connected (generation %d, %d streams)", self._generation, len(links)
                )
        finally:
            for link in links:
                link.fail_all()
            self._links = []
            self._notify()
            await _close_all([link.stream for link in links])

    async def _hello(self, link: _Link, token: bytes) -> bool:
        reply = await self._roundtrip(link, Op.HELLO, (VERSION, token))
        if reply is None or reply.errno:
            log.info("volumes: the agent did not answer HELLO")
            return False
        try:
            link.mounts = list(json.loads(reply.values[1]).get("mounts") or [])
        except (ValueError, AttributeError):
            link.mounts = []
        return True

    async def _read(self, link: _Link, scope: trio.CancelScope) -> None:
        decoder = FrameDecoder()
        # File data is received straight into the buffer of the frame it belongs to.
        sock = link.stream.socket if isinstance(link.stream, trio.SocketStream) else None
        try:
            while True:
                space = decoder.space()
                if space is not None and sock is not None:
                    n = await sock.recv_into(space)
                    space.release()
                    if not n:
                        break
                    decoder.filled(n)
                else:
                    data = await link.stream.receive_some(MAX_CHUNK + 65536)
                    if not data:
                        break
                    decoder.feed(data)
                for frame in decoder.frames():
                    if not isinstance(frame, Reply):
                        raise ProtocolViolation("a request sent to the client")
                    call = link.pending.pop(frame.id, None)
                    if call is not None:
                        call.reply = frame
                        call.done.set()
        except ProtocolViolation as exc:
            log.warning("volumes: the agent broke the protocol: %s", exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.info("volumes: the stream to the agent broke: %s", exc)
        finally:
            link.fail_all()
            scope.cancel()

    async def _roundtrip(self, link: _Link, op: Op, args: tuple[Any, ...]) -> Reply | None:
        request_id = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF or 1
        call = link.pending[request_id] = _Call()
        if op is Op.WRITE and len(args[2]) >= BIG_FRAME:  # the data as it is, after a header
            handle, offset, data = args
            pieces = [write_request_header(request_id, handle, offset, len(data)), data]
        else:
            pieces = [encode_request(request_id, op, *args)]
        try:
            async with link.send_lock:  # one request's pieces together
                for piece in pieces:
                    await link.stream.send_all(piece)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            link.pending.pop(request_id, None)
            link.fail_all()
            return None
        with trio.move_on_after(self.request_timeout):
            await call.done.wait()
        link.pending.pop(request_id, None)
        return call.reply

    async def _current(self, op: Op) -> _Link:
        """A live link, waiting for a dial in progress (at most connect_timeout): reads
        take turns on all streams, everything else goes on the first (in order)."""
        with trio.move_on_after(self.connect_timeout):
            while not self.connected:
                await self._changed.wait()
                if not self._links and self.last_error:
                    break
        links = self._links
        if not links or any(link.broken for link in links):
            raise OSError(errno.EIO, f"the agent is not reachable: {self.last_error or 'no link'}")
        if op is not Op.READ:
            return links[0]
        self._next_read = (self._next_read + 1) % len(links)
        return links[self._next_read]

    async def call(
        self, op: Op, *args: Any, generation: int | None = None
    ) -> tuple[tuple[Any, ...], int]:
        """Send one request; its reply values and the link's generation. OSError with
        the agent's errno, or EIO when the link broke or the reply did not come, or
        when ``generation`` (of a file handle) is not the current link's: a handle
        means nothing to another agent."""
        link = await self._current(op)
        if generation is not None and generation != link.generation:
            raise OSError(errno.EIO, "the agent's pod was replaced since the file was opened")
        reply = await self._roundtrip(link, op, args)
        if reply is None:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        if reply.errno:
            raise OSError(reply.errno, os.strerror(reply.errno))
        return reply.values, link.generation


async def _close_all(streams: list[trio.abc.Stream]) -> None:
    with trio.CancelScope(shield=True):
        for stream in streams:
            await stream.aclose()
