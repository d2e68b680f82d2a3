"""Copying bytes both ways between two streams, as a TCP proxy must.

Each direction ends when its source reaches EOF; the destination is then half-closed
(``send_eof``) so the far end sees FIN, not a reset, while the other direction goes on
(RFC 9293 §3.6: a half-closed connection may still carry data the other way). When one
side breaks (a reset, a tunnel that died), the other side is reset too — so an app whose
connection went through a lost manager gets ECONNRESET at once instead of hanging.

A side that is a plain :class:`trio.SocketStream` is read and written on its file
descriptor directly: try the nonblocking call first and wait only when it would block.
trio's socket methods add a scheduling pass after every call that did not wait; on a
chain of processes relaying small messages those passes are most of the CPU per message.

Hand-off without a task: a source that can *forward* (``set_forward(fn)``: a tunnel stream,
a netstack connection) calls ``fn(data)`` from the task that received the data (the
tunnel's reader, the TUN loop), and a sink that can take bytes without waiting
(``send_nowait(data) -> int``, or a socket's descriptor) takes them there and then: the
pump task of that direction is not woken at all. ``fn`` takes nothing while the pump holds
bytes it has not written yet (they must go first), and the source keeps what ``fn`` did
not take for the pump, so the byte order never changes. The end of the stream (EOF, a
reset) always goes through the pump.
"""

from __future__ import annotations

import functools
import os
import socket
import struct
from collections.abc import Callable

import trio

CHUNK = 256 * 1024

_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


_LINGER_0 = struct.pack("ii", 1, 0)


async def reset(stream: trio.abc.Stream) -> None:
    """Abort ``stream`` so its peer sees a reset rather than an orderly close."""
    try:
        if isinstance(stream, trio.SocketStream):
            # SO_LINGER with a zero timeout: close(2) sends RST (socket(7)).
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
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


#: A spliced side: any trio stream, or a connected nonblocking socket (splice_socket).
_Side = trio.abc.Stream | socket.socket
_AnySocket = socket.socket | trio.socket.SocketType


def _socket_of(side: _Side) -> _AnySocket | None:
    """The socket under a side that is one: a stdlib socket, or a plain SocketStream's
    (not a subclass, which may change the I/O); None for other streams."""
    if isinstance(side, socket.socket):
        return side
    if type(side) is trio.SocketStream:
        return side.socket
    return None


class _Broken(Exception):
    """One side of the splice broke (reset, closed under us, or a dead tunnel)."""

    def __init__(self, side: _Side) -> None:
        self.side = side


async def _receive(source: _Side, fd: int) -> bytes | bytearray:
    if fd < 0:
        assert isinstance(source, trio.abc.Stream)
        try:
            return await source.receive_some(CHUNK)
        except _GONE:
            raise _Broken(source) from None
    while True:
        try:
            return os.read(fd, CHUNK)
        except BlockingIOError:
            pass
        except OSError:  # ECONNRESET, ETIMEDOUT (keepalive): the peer is gone
            raise _Broken(source) from None
        try:
            await trio.lowlevel.wait_readable(fd)
        except trio.ClosedResourceError:
            raise _Broken(source) from None


async def _send(sink: _Side, fd: int, data: bytes | bytearray) -> None:
    if fd < 0:
        assert isinstance(sink, trio.abc.Stream)
        try:
            await sink.send_all(data)
        except _GONE:
            raise _Broken(sink) from None
        return
    view: bytes | bytearray | memoryview = data
    while True:
        try:
            sent = os.write(fd, view)
        except BlockingIOError:
            sent = 0
        except OSError:  # EPIPE, ECONNRESET
            raise _Broken(sink) from None
        if sent == len(view):
            return
        view = memoryview(view)[sent:]
        try:
            await trio.lowlevel.wait_writable(fd)
        except trio.ClosedResourceError:
            raise _Broken(sink) from None


def _write_nowait(fd: int, data: bytes) -> int:
    try:
        return os.write(fd, data)
    except OSError:  # would block, or broken: the pump's own write says which
        return 0


class _Forward:
    """The hand-off of one direction (see the module doc): what the source calls with
    new data, taking nothing while the pump holds bytes of its own."""

    __slots__ = ("holding", "write")

    def __init__(self, write: Callable[[bytes], int]) -> None:
        self.holding = False
        self.write = write

    def __call__(self, data: bytes) -> int:
        if self.holding:
            return 0
        return self.write(data)


def _forward_for(source: _Side, sink: _Side, sink_fd: int) -> _Forward | None:
    if getattr(source, "set_forward", None) is None:
        return None
    if sink_fd >= 0:
        return _Forward(functools.partial(_write_nowait, sink_fd))
    write = getattr(sink, "send_nowait", None)
    return None if write is None else _Forward(write)


class _Splice:
    def __init__(self) -> None:
        self.broken: set[int] = set()

    async def pump(self, source: _Side, sink: _Side, done: trio.CancelScope) -> None:
        source_sock, sink_sock = _socket_of(source), _socket_of(sink)
        source_fd = -1 if source_sock is None else source_sock.fileno()
        sink_fd = -1 if sink_sock is None else sink_sock.fileno()
        forward = _forward_for(source, sink, sink_fd)
        if forward is not None:
            source.set_forward(forward)  # type: ignore[union-attr]
        try:
            await self._copy(source, source_fd, sink, sink_fd, sink_sock, forward)
        except _Broken as exc:
            self.broken.add(id(exc.side))
            done.cancel()  # one side broke: the other direction has nowhere to go either
        finally:
            if forward is not None:
                source.set_forward(None)  # type: ignore[union-attr]

    @staticmethod
    async def _copy(
        source: _Side,
        source_fd: int,
        sink: _Side,
        sink_fd: int,
        sink_sock: _AnySocket | None,
        forward: _Forward | None,
    ) -> None:
        while True:
            data = await _receive(source, source_fd)
            if not data:
                break
            if forward is None:
                await _send(sink, sink_fd, data)
            else:
                forward.holding = True
                try:
                    await _send(sink, sink_fd, data)
                finally:
                    forward.holding = False
            if source_fd >= 0 and sink_fd >= 0:
                # Neither side's call is then a scheduling point by itself.
                await trio.lowlevel.checkpoint()
        try:
            if sink_sock is not None:
                # What SocketStream.send_eof does, minus its scheduling pass.
                sink_sock.shutdown(socket.SHUT_WR)
            elif isinstance(sink, trio.abc.HalfCloseableStream):
                await sink.send_eof()
            else:
                assert isinstance(sink, trio.abc.Stream)
                await sink.aclose()
        except (*_GONE, OSError):
            raise _Broken(sink) from None


async def splice(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
    """Copy a→b and b→a until both directions ended; close (or reset) both at the end."""
    await _splice(a, b)


async def splice_socket(stream: trio.abc.Stream, sock: socket.socket) -> None:
    """:func:`splice` with a connected nonblocking stdlib socket, which this closes (or
    resets) at the end: no trio socket objects made for a connection that only relays."""
    await _splice(stream, sock)


async def _splice(a: _Side, b: _Side) -> None:
    state = _Splice()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(state.pump, a, b, nursery.cancel_scope)
            # b→a runs in this task: one task fewer to start and wake per connection.
            await state.pump(b, a, nursery.cancel_scope)
    finally:
        with trio.CancelScope(shield=True):
            for side, other in ((a, b), (b, a)):
                reset_it = id(other) in state.broken and id(side) not in state.broken
                sock = _socket_of(side)
                if sock is not None:
                    _close_socket(sock, reset=reset_it)
                elif reset_it:
                    assert isinstance(side, trio.abc.Stream)
                    await reset(side)
                else:
                    assert isinstance(side, trio.abc.Stream)
                    try:
                        await side.aclose()
                    except _GONE:
                        pass


def _close_socket(sock: _AnySocket, *, reset: bool) -> None:
    """SocketStream.aclose (or :func:`reset`) without the scheduling pass."""
    if reset:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
        except OSError:
            pass
    sock.close()
