"""``TcpStream``: one accepted connection as a trio ``HalfCloseableStream``.

The stream calls into the sans-IO endpoint directly and asks the stack to flush what
the call produced; it waits only when the endpoint says so (no data, send buffer full).
It raises only trio's resource errors: ``ClosedResourceError`` after our own
``aclose``/``send_eof``, ``BrokenResourceError`` when the connection reset, and
``BusyResourceError`` for concurrent calls of the same direction.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import trio

from ._errors import LocalProtocolError
from ._state import TcpState

if TYPE_CHECKING:
    from ._stack import Connection

_DEFAULT_RECEIVE = 65536


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
        return self._conn.endpoint.receive_buffered

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

    # ------------------------------------------------------------------ closing

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            ep = self._conn.endpoint
            if ep.state is not TcpState.CLOSED:
                ep.close_input()  # unread or later data: RST, as Linux close() does
                self._close_sending()
                self._conn.flush()
            self._wake()
        await trio.lowlevel.checkpoint()

    def abort(self) -> None:
        """Reset the connection at once (the peer sees ECONNRESET)."""
        self._closed = True
        self._conn.endpoint.abort()
        self._conn.flush()
        self._wake()


_CAN_SEND = (TcpState.SYN_RECEIVED, TcpState.ESTABLISHED, TcpState.CLOSE_WAIT)
