"""A TCP connection read and written on its descriptor: a trio stream without trio's
extra scheduling pass per call.

Every message of every proxied connection crosses the engine's one connection to the API
server (the port-forward), so its cost per call is paid on every round trip. trio's
``SocketStream`` adds a scheduling pass after each call that did not wait; here a receive
that had to wait returns at once when woken, and a send that the kernel took whole
returns without yielding. Semantics are otherwise ``SocketStream``'s.
"""

from __future__ import annotations

import os
import socket

import trio

RECEIVE_SIZE = 256 * 1024


class FdStream(trio.abc.HalfCloseableStream):
    """A HalfCloseableStream over a connected socket (taken from a ``trio.SocketStream``),
    with ``head``: bytes already read from it (e.g. a protocol sniff), handed out first.

    ``receive_some`` is always a checkpoint (one scheduling pass, never two); ``send_all``
    is one only when it had to wait for the socket's buffer: its callers (a tunnel's
    writer) wait for new output between sends.
    """

    def __init__(self, stream: trio.SocketStream, head: bytes = b"") -> None:
        self._stream = stream
        self._socket = stream.socket
        self._fd = stream.socket.fileno()
        self._head = head
        self._closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = RECEIVE_SIZE if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._closed:
            raise trio.ClosedResourceError("socket was closed")
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
            await trio.lowlevel.checkpoint()
            return data
        try:
            data = os.read(self._fd, size)
        except BlockingIOError:
            pass
        except OSError as exc:
            raise self._error(exc) from exc
        else:
            await trio.lowlevel.checkpoint()
            return data
        while True:
            await trio.lowlevel.wait_readable(self._fd)
            try:
                return os.read(self._fd, size)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise self._error(exc) from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("socket was closed")
        if self._socket.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        view = memoryview(data)
        while True:
            try:
                sent = os.write(self._fd, view)
            except BlockingIOError:
                sent = 0
            except OSError as exc:  # EPIPE, ECONNRESET
                raise self._error(exc) from exc
            if sent == len(view):
                return
            view = view[sent:]
            await trio.lowlevel.wait_writable(self._fd)

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """What the socket takes of ``data`` now (0 when its buffer is full), without
        waiting or yielding. Raises like :meth:`send_all`."""
        if self._closed:
            raise trio.ClosedResourceError("socket was closed")
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
        if self._closed or self._socket.fileno() == -1:
            return trio.ClosedResourceError("socket was closed")
        return trio.BrokenResourceError(str(exc))

    async def wait_send_all_might_not_block(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("socket was closed")
        await trio.lowlevel.wait_writable(self._fd)

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("socket was closed")
        if not self._socket.did_shutdown_SHUT_WR:
            try:
                self._socket.shutdown(socket.SHUT_WR)
            except OSError as exc:
                raise self._error(exc) from exc

    async def aclose(self) -> None:
        self._closed = True  # before the descriptor's number can be reused
        await self._stream.aclose()
