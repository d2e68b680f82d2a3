"""``TcpStream``: one accepted connection as a trio ``HalfCloseableStream``.

The stream calls into the sans-IO endpoint directly and asks the stack to flush what
the call produced; it waits only when the endpoint says so (no data, send buffer full).
It raises only trio's resource errors: ``ClosedResourceError`` after our own
``aclose``/``send_eof``, ``BrokenResourceError`` when the connection reset, and
``BusyResourceError`` for concurrent calls of the same direction.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ._errors import LocalProtocolError
from ._state import TcpState

if TYPE_CHECKING:
    from ._stack import Connection

_DEFAULT_RECEIVE = 65536

log = logging.getLogger(__name__)


class TcpStream(trio.abc.HalfCloseableStream):
    """The application (kernel) side of a TCP connection the netstack terminated."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._closed = False
        self._eof_sent = False
        self._sending = False
        self._receiving = False
        self._recv_wakeup: trio.Event | None = None
        self._send_wakeup: trio.Event | None = None
        self._forward: Callable[[bytes], int] | None = None
        self._unread = b""  # received and offered to _forward, which did not take it

    @property
    def source(self) -> tuple[str, int]:
        """The local application's address and port (the connection's client)."""
        return self._conn.source

    @property
    def destination(self) -> tuple[str, int]:
        """The address and port the application connected to (its original destination)."""
        return self._conn.destination

    def __repr__(self) -> str:
        ep = self._conn.endpoint
        return f"<TcpStream {self.source} -> {self.destination} {ep.state.value}>"

    @property
    def receive_buffered(self) -> int:
        """Bytes received and not read yet (at most the configured receive buffer)."""
        return self._conn.endpoint.receive_buffered + len(self._unread)

    @property
    def send_buffered(self) -> int:
        """Bytes sent and not acknowledged yet (at most the configured send buffer)."""
        return self._conn.endpoint.send_unacknowledged

    # ------------------------------------------------------------------ wakeups (driver side)

    def _wake(self, *, readers: bool = True, writers: bool = True) -> None:
        if readers and self._recv_wakeup is not None:
            self._recv_wakeup.set()
            self._recv_wakeup = None
        if writers and self._send_wakeup is not None:
            self._send_wakeup.set()
            self._send_wakeup = None

    async def _wait(self, *, send: bool) -> None:
        event = trio.Event()
        if send:
            self._send_wakeup = event
        else:
            self._recv_wakeup = event
        await event.wait()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")

    # ------------------------------------------------------------------ hand-off (tpengine.splice)

    def set_forward(self, forward: Callable[[bytes], int] | None) -> None:
        """Offer data from the application to ``forward`` as it arrives, in the TUN loop,
        before waking a reader: it returns how many bytes it took; the rest is read with
        :meth:`receive_some` as usual (first). None stops it."""
        self._forward = forward

    def _hand_on(self, now: float) -> bool:
        """Data became readable: offer it to the forward. Returns whether any was taken
        (the endpoint may then owe the peer a window update); wakes the reader for what
        is left."""
        forward = self._forward
        if forward is None or self._unread or self._closed:
            self._wake(writers=False)
            return False
        ep = self._conn.endpoint
        handed = False
        while data := ep.receive_data(_DEFAULT_RECEIVE, now):
            handed = True
            try:
                taken = forward(data)
            except Exception:  # a bug downstream must not take the TUN loop down
                log.exception("forwarding data of %r failed", self)
                taken, self._forward = 0, None
            if taken < len(data):
                self._unread = data[taken:]
                self._wake(writers=False)
                break
        return handed

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Take as much of ``data`` as the send buffer has room for, without waiting;
        returns how many bytes (0 also when the stream cannot send: :meth:`send_all`
        then says why)."""
        if self._closed or self._eof_sent or self._sending:
            return 0
        ep = self._conn.endpoint
        if ep.reset_reason is not None or ep.state not in _CAN_SEND:
            return 0
        n = ep.send(data)
        if n:
            self._conn.flush()
        return n

    # ------------------------------------------------------------------ sending

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._check_open()
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            view = memoryview(data).cast("B")
            blocked = False
            while True:
                self._check_open()
                if self._eof_sent:
                    raise trio.ClosedResourceError("send_eof was called")
                ep = self._conn.endpoint
                if ep.reset_reason is not None or ep.state not in _CAN_SEND:
                    raise trio.BrokenResourceError(ep.reset_reason or "connection closed")
                if not view:
                    break
                n = ep.send(view)
                if n:
                    view = view[n:]
                    self._conn.flush()
                if view:
                    blocked = True
                    await self._wait(send=True)
            if not blocked:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._check_open()
        self._sending = True
        try:
            ep = self._conn.endpoint
            if ep.send_free > 0 or ep.state not in _CAN_SEND:
                await trio.lowlevel.checkpoint()
                return
            ep.notify_when_writable()
            await self._wait(send=True)
            self._check_open()  # woken by our own aclose
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._check_open()
        await trio.lowlevel.checkpoint()
        if self._eof_sent:
            return
        self._eof_sent = True
        self._close_sending()

    def _close_sending(self) -> None:
        ep = self._conn.endpoint
        if ep.state in _CAN_SEND:
            try:
                ep.close()
            except LocalProtocolError:  # pragma: no cover - guarded by the state check
                return
            self._conn.flush()

    # ------------------------------------------------------------------ receiving

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        self._check_open()
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            blocked = False
            while True:
                self._check_open()
                if self._unread:  # left by the hand-off: it comes first
                    data, self._unread = self._take_unread(max_bytes)
                    break
                ep = self._conn.endpoint
                data = ep.receive_data(max_bytes or _DEFAULT_RECEIVE, trio.current_time())
                if data:
                    if ep.output_pending(self._conn.deadline):
                        self._conn.flush()  # a window update or the delayed-ACK timer
                    break
                if ep.at_eof:
                    break
                if ep.reset_reason is not None:
                    raise trio.BrokenResourceError(ep.reset_reason)
                if ep.state is TcpState.CLOSED:
                    break
                blocked = True
                await self._wait(send=False)
            if not blocked:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        finally:
            self._receiving = False

    def _take_unread(self, max_bytes: int | None) -> tuple[bytes, bytes]:
        unread = self._unread
        if max_bytes is None or max_bytes >= len(unread):
            return unread, b""
        return unread[:max_bytes], unread[max_bytes:]

    # ------------------------------------------------------------------ closing

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            ep = self._conn.endpoint
            if ep.state is not TcpState.CLOSED:
                if self._unread:
                    ep.abort()  # unread data: RST, as Linux close() does
                else:
                    ep.close_input()  # unread or later data: RST, as Linux close() does
                    self._close_sending()
                self._conn.flush()
            self._unread = b""
            self._wake()
        await trio.lowlevel.checkpoint()

    def abort(self) -> None:
        """Reset the connection at once (the peer sees ECONNRESET)."""
        self._closed = True
        self._conn.endpoint.abort()
        self._conn.flush()
        self._wake()


_CAN_SEND = (TcpState.SYN_RECEIVED, TcpState.ESTABLISHED, TcpState.CLOSE_WAIT)
