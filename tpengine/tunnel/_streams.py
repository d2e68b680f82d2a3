"""Trio faces of one tunnel stream: a HalfCloseableStream, a datagram flow, a dial.

These objects only touch the sans-IO core through their session and wake the session's
writer; they never do I/O themselves. Public methods raise only trio's
ClosedResourceError (we closed it), BrokenResourceError (reset by the peer, or the tunnel
died) and BusyResourceError (two tasks sending or receiving at once).
"""

from __future__ import annotations

import logging
import operator
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ._errors import ErrorCode, LocalProtocolError, RejectReason
from ._events import Destination
from ._frames import Proto
from ._state import StreamState

if TYPE_CHECKING:
    from ._driver import MuxSession

log = logging.getLogger(__name__)


class _Busy:
    """Raise BusyResourceError when two tasks use one direction at once."""

    __slots__ = ("_held", "_msg")

    def __init__(self, msg: str) -> None:
        self._held = False
        self._msg = msg

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(self._msg)
        self._held = True

    def __exit__(self, *exc: object) -> None:
        self._held = False


class MuxStream(trio.abc.HalfCloseableStream):
    """One proxied TCP connection inside the tunnel."""

    def __init__(self, session: MuxSession, stream_id: int, destination: Destination) -> None:
        self.session = session
        self.stream_id = stream_id
        self.destination = destination
        self._buf: deque[bytes] = deque()
        self._offset = 0  # bytes of the head chunk already returned
        #: Bytes handed to the tunnel so far (never ahead of the peer's window).
        self.sent = 0
        self._buffered = 0
        self._eof = False  # the peer sent FIN
        self._eof_sent = False
        self._broken: str | None = None
        self._closed = False
        self._readable = trio.Event()
        self._credit = trio.Event()
        self._send_busy = _Busy("another task is already sending on this stream")
        self._recv_busy = _Busy("another task is already receiving on this stream")
        self._forward: Callable[[bytes], int] | None = None

    def __repr__(self) -> str:
        d = self.destination
        return f"<MuxStream {self.stream_id} {d.host}:{d.port}>"

    # -- hand-off without a task (tpengine.splice) --------------------------------------

    def set_forward(self, forward: Callable[[bytes], int] | None) -> None:
        """Offer data from the peer to ``forward`` as it arrives, in the tunnel's reader,
        before waking a reader: it returns how many bytes it took; the rest is read with
        :meth:`receive_some` as usual. Only data that finds nothing buffered is offered,
        so the order of the bytes never changes. None stops it."""
        self._forward = forward

    def send_nowait(self, data: bytes | memoryview) -> int:
        """Queue as much of ``data`` as the windows allow without waiting; returns how
        many bytes were taken (0 also when the stream cannot send: :meth:`send_all`
        then says why). ``data`` must not change afterwards (frames point into it)."""
        if self._closed or self._broken is not None or self._eof_sent:
            return 0
        try:
            taken = self.session._conn.send_data(self.stream_id, data)
        except LocalProtocolError:
            return 0
        if taken:
            self.sent += taken
            self.session._kick()
        return taken

    @property
    def buffered(self) -> int:
        """Bytes received from the peer and not yet read (never more than the window)."""
        return self._buffered

    # -- HalfCloseableStream ------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with self._send_busy:
            self._check_send()
            if isinstance(data, bytes) or (
                isinstance(data, memoryview) and isinstance(data.obj, bytes)
            ):
                view = memoryview(data)
            else:
                view = memoryview(bytes(data))  # the caller may reuse its buffer
            pos, total = 0, len(view)
            conn = self.session._conn
            await trio.lowlevel.checkpoint()
            while pos < total:
                self._check_send()
                try:
                    taken = conn.send_data(self.stream_id, view[pos:])
                except LocalProtocolError as exc:  # the stream ended under us
                    raise trio.BrokenResourceError(str(exc)) from None
                if taken:
                    pos += taken
                    self.sent += taken
                    self.session._kick()
                else:
                    await self._wait_credit()

    async def _wait_credit(self) -> None:
        self._credit = trio.Event()
        self.session._credit_waiters.add(self)
        try:
            await self._credit.wait()
        finally:
            self.session._credit_waiters.discard(self)

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_busy:
            self._check_send()
            if self.session._conn.send_credit(self.stream_id) > 0:
                await trio.lowlevel.checkpoint()
            else:
                await self._wait_credit()

    async def send_eof(self) -> None:
        with self._send_busy:
            if self._closed:
                raise trio.ClosedResourceError("stream was closed")
            await trio.lowlevel.checkpoint()
            if self._eof_sent:
                return
            if self._broken is not None:
                raise trio.BrokenResourceError(self._broken)
            self._eof_sent = True
            try:
                self.session._conn.send_eof(self.stream_id)
            except LocalProtocolError as exc:
                raise trio.BrokenResourceError(str(exc)) from None
            self.session._kick()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)  # TypeError for 1.5, as trio streams do
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        with self._recv_busy:
            # One scheduling point either way: waiting is one, so only a read that
            # finds data (or an end) ready needs its own checkpoint.
            if self._has_news():
                await trio.lowlevel.checkpoint()
            while not self._has_news():
                self._readable = trio.Event()
                await self._readable.wait()
            if self._closed:
                raise trio.ClosedResourceError("stream was closed")
            if self._buf:
                return self._take(max_bytes)
            if self._broken is not None:
                raise trio.BrokenResourceError(self._broken)
            return b""  # the peer's FIN

    def _has_news(self) -> bool:
        return bool(self._closed or self._buf or self._broken is not None or self._eof)

    def _take(self, max_bytes: int | None) -> bytes:
        head, offset = self._buf[0], self._offset
        if max_bytes is None or max_bytes >= len(head) - offset:
            chunk = head[offset:] if offset else head
            self._buf.popleft()
            self._offset = 0
        else:  # copy only what is returned, so tiny reads of a big frame stay linear
            chunk = head[offset : offset + max_bytes]
            self._offset += max_bytes
        self._buffered -= len(chunk)
        self.session._conn.acknowledge_received(self.stream_id, len(chunk))
        self.session._kick()
        return chunk

    async def reset(self, message: str = "reset by the application") -> None:
        """Abort the stream: the peer's reads and writes fail (a TCP RST)."""
        if not self._closed:
            if self._broken is None and not self.session._conn.closed:
                self.session._conn.reset_stream(self.stream_id, ErrorCode.CANCEL, message)
                self.session._kick()
            self._on_broken(message)
        await self.aclose()

    async def aclose(self) -> None:
        """Close both directions, as close(2) on a socket: FIN if our side is open, and
        RESET instead when unread data would be thrown away (RFC 9293 §3.10.4)."""
        if not self._closed:
            self._closed = True
            conn = self.session._conn
            if self._broken is None and not conn.closed:
                if self._buffered:
                    conn.reset_stream(self.stream_id, ErrorCode.CANCEL, "closed by the application")
                else:
                    conn.close_stream(self.stream_id)
                self.session._kick()
            self._drop_unread()
            self.session._forget(self.stream_id)
            self._readable.set()
            self._credit.set()
        await trio.lowlevel.checkpoint()

    # -- fed by the session -------------------------------------------------------------

    def _check_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        if self._broken is not None:
            raise trio.BrokenResourceError(self._broken)
        if self._eof_sent:
            raise trio.ClosedResourceError("can't send after send_eof()")

    def _drop_unread(self) -> None:
        if self._buffered:
            self._buf.clear()
            self._offset = 0
            self._buffered = 0
            self.session._conn.forget_received(self.stream_id)
            self.session._kick()

    def _on_data(self, data: bytes) -> None:
        forward = self._forward
        if forward is not None and not self._buf:
            try:
                taken = forward(data)
            except Exception:  # a bug downstream must not end the whole tunnel
                log.exception("forwarding data of %r failed", self)
                taken, self._forward = 0, None
            if taken:
                self.session._conn.acknowledge_received(self.stream_id, taken)
                if taken == len(data):
                    return
                data = data[taken:]
        self._buf.append(data)
        self._buffered += len(data)
        self._readable.set()

    def _on_eof(self) -> None:
        self._eof = True
        self._readable.set()

    def _on_broken(self, why: str) -> None:
        if self._broken is None:
            self._broken = why
        self._drop_unread()  # a reset discards unread data, as a TCP RST does
        self._readable.set()
        self._credit.set()


class MuxDatagramFlow:
    """One UDP flow: datagrams out with :meth:`send_nowait`, in through :meth:`receive`.
    Datagrams that find the queue full are dropped, which is UDP's contract."""

    def __init__(
        self, session: MuxSession, stream_id: int, destination: Destination, queue: int
    ) -> None:
        self.session = session
        self.stream_id = stream_id
        self.destination = destination
        self._send, self._recv = trio.open_memory_channel[bytes](queue)
        self.dropped = 0
        self._closed = False

    @property
    def receive_channel(self) -> trio.MemoryReceiveChannel[bytes]:
        """The datagrams from the peer as a trio memory channel (ends with the flow)."""
        return self._recv

    def send_nowait(self, data: bytes) -> bool:
        if self._closed:
            raise trio.ClosedResourceError("flow was closed")
        if self.session._conn.stream_state(self.stream_id) is StreamState.CLOSED:
            raise trio.BrokenResourceError("flow was reset by the peer or the tunnel closed")
        try:
            sent = self.session._conn.send_datagram(self.stream_id, bytes(data))
        except LocalProtocolError as exc:
            raise trio.BrokenResourceError(str(exc)) from None
        self.session._kick()
        return sent

    async def send(self, data: bytes) -> bool:
        await trio.lowlevel.checkpoint()
        return self.send_nowait(data)

    async def receive(self) -> bytes:
        """The next datagram; raises EndOfChannel when the flow ended."""
        try:
            return await self._recv.receive()
        except trio.ClosedResourceError:
            raise trio.ClosedResourceError("flow was closed") from None

    def __aiter__(self) -> MuxDatagramFlow:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            conn = self.session._conn
            if not conn.closed:
                conn.reset_stream(self.stream_id, ErrorCode.CANCEL, "flow closed")
                self.session._kick()
            self.session._forget(self.stream_id)
            await self._recv.aclose()
        await trio.lowlevel.checkpoint()

    def _on_datagram(self, data: bytes) -> None:
        try:
            self._send.send_nowait(data)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def _on_broken(self, why: str) -> None:
        self._send.close()


class IncomingDial:
    """A dial from the peer, handed to the session's dial handler, which accepts it
    (getting the stream or flow) or rejects it with a reason."""

    def __init__(self, session: MuxSession, stream_id: int, destination: Destination) -> None:
        self.session = session
        self.stream_id = stream_id
        self.destination = destination
        self.decided = False

    async def accept(self) -> MuxStream | MuxDatagramFlow:
        await trio.lowlevel.checkpoint()
        self._decide()
        self.session._conn.accept_stream(self.stream_id)
        self.session._kick()
        return self.session._attach(self.stream_id, self.destination)

    async def accept_stream(self) -> MuxStream:
        if self.destination.proto is not Proto.TCP:
            raise TypeError("accept_stream() is for TCP dials; use accept()")
        accepted = await self.accept()
        assert isinstance(accepted, MuxStream)
        return accepted

    async def accept_flow(self) -> MuxDatagramFlow:
        if self.destination.proto is not Proto.UDP:
            raise TypeError("accept_flow() is for UDP dials; use accept()")
        accepted = await self.accept()
        assert isinstance(accepted, MuxDatagramFlow)
        return accepted

    async def reject(self, reason: RejectReason, message: str = "") -> None:
        await trio.lowlevel.checkpoint()
        self._decide()
        if not self.session._conn.closed:
            self.session._conn.reject_stream(self.stream_id, reason, message)
            self.session._kick()

    def _decide(self) -> None:
        if self.decided:
            raise RuntimeError("this dial was already accepted or rejected")
        if self.session._conn.stream_state(self.stream_id) is not StreamState.DIALED:
            self.decided = True
            raise trio.BrokenResourceError("the dialer gave up or the tunnel closed")
        self.decided = True
