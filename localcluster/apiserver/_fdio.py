"""Lean I/O for the port-forward relay: TLS and sockets driven on their descriptors.

A port-forward's websocket stays open for the whole life of a ``tp connect`` and carries
every message of every proxied connection, so the relay's cost per message is what
counts (a Go kube-apiserver and kubelet do this in a fraction of a Python process's
time). trio's ``SSLStream`` and ``SocketStream`` add locks, conflict detectors and an
extra scheduling pass to every call; here each call tries the nonblocking operation
first and waits on the descriptor only when it would block.

:func:`lean_tls` takes over an idle, handshaken ``trio.SSLStream`` (its ``ssl.SSLObject``
and memory BIOs, as trio made them) after the HTTP upgrade; anything else is returned
unchanged. Neither ``LeanTLS.send_all`` nor :func:`write_fd` is a checkpoint unless it had
to wait: the relay's loops checkpoint on their reads (:func:`read_fd`, ``receive_some``).
"""

from __future__ import annotations

import os
import ssl

import trio

RECEIVE_SIZE = 256 * 1024
#: Ciphertext read from the socket at a time (TLS records are at most ~16 KiB each).
_RAW_READ = 256 * 1024


async def read_fd(fd: int, size: int = RECEIVE_SIZE) -> bytes:
    """Up to ``size`` bytes from a nonblocking socket (b"" at EOF); a checkpoint either
    way. OSError (ECONNRESET, …) is raised as trio.BrokenResourceError."""
    try:
        data = os.read(fd, size)
    except BlockingIOError:
        pass
    except OSError as exc:
        raise trio.BrokenResourceError(str(exc)) from exc
    else:
        await trio.lowlevel.checkpoint()
        return data
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            return os.read(fd, size)
        except BlockingIOError:
            continue
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc


async def write_fd(fd: int, data: bytes | bytearray | memoryview) -> None:
    """All of ``data`` to a nonblocking socket, waiting only while its buffer is full."""
    view = memoryview(data)
    while True:
        try:
            sent = os.write(fd, view)
        except BlockingIOError:
            sent = 0
        except OSError as exc:  # EPIPE, ECONNRESET
            raise trio.BrokenResourceError(str(exc)) from exc
        if sent == len(view):
            return
        view = view[sent:]
        await trio.lowlevel.wait_writable(fd)


class LeanTLS(trio.abc.Stream):
    """A server-side TLS stream over a socket's descriptor (one reader, any senders).

    Records are encrypted whole by ``send_all`` before it can wait, so concurrent senders
    never interleave inside a message; the ciphertext leaves in order from one backlog.
    """

    def __init__(
        self,
        origin: trio.SSLStream[trio.SocketStream],
        ssl_object: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        delayed: bytes = b"",
    ) -> None:
        self._origin = origin
        self._tls = ssl_object
        self._in = incoming
        self._out = outgoing
        self._fd = origin.transport_stream.socket.fileno()
        #: Ciphertext for the socket, in order (first what trio held back, if anything).
        self._backlog = bytearray(delayed)
        self._flushing = False
        self._flushed = trio.lowlevel.ParkingLot()
        self._closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = max_bytes or RECEIVE_SIZE
        waited = False
        while True:
            if self._closed:
                raise trio.ClosedResourceError("stream was closed")
            try:
                data = self.receive_nowait(size)
            except trio.WouldBlock:
                await trio.lowlevel.wait_readable(self._fd)
                waited = True
                continue
            if not waited:
                await trio.lowlevel.checkpoint()
            return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        try:
            self._tls.write(data)
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(f"TLS: {exc}") from exc
        self._send_backlog_nowait()
        while self._backlog:
            if self._flushing:  # another sender waits on the socket and sends ours too
                await self._flushed.park()
                continue
            self._flushing = True
            try:
                await trio.lowlevel.wait_writable(self._fd)
            finally:
                self._flushing = False
                self._flushed.unpark_all()
            self._send_backlog_nowait()

    def _send_backlog_nowait(self) -> None:
        self._backlog += self._out.read()
        if not self._backlog or self._flushing:
            return
        try:
            sent = os.write(self._fd, self._backlog)
        except BlockingIOError:
            return
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc
        del self._backlog[:sent]

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self._fd)

    # -- for the relay thread (_threadrelay): no waiting, no trio calls -------------------

    def fileno(self) -> int:
        return self._fd

    def receive_nowait(self, size: int = RECEIVE_SIZE) -> bytes:
        """Decrypted bytes at hand (b"" at the end), or trio.WouldBlock."""
        while True:
            try:
                data = self._tls.read(size)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLEOFError, ssl.SSLSyscallError):
                # The peer closed without close_notify: an end, as for https clients
                # (trio's https_compatible, which the API server uses).
                return b""
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError(f"TLS: {exc}") from exc
            else:
                if self._out.pending:  # e.g. an answer to a TLS 1.3 KeyUpdate
                    self._send_backlog_nowait()
                return data
            try:
                raw = os.read(self._fd, _RAW_READ)
            except BlockingIOError:
                raise trio.WouldBlock from None
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            if raw:
                self._in.write(raw)
            else:
                self._in.write_eof()

    def send_nowait(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and send what the socket takes; the rest waits in the backlog
        (:attr:`backlog`, sent by :meth:`flush_nowait` once the socket is writable)."""
        try:
            self._tls.write(data)
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(f"TLS: {exc}") from exc
        self._send_backlog_nowait()

    def flush_nowait(self) -> None:
        self._send_backlog_nowait()

    @property
    def backlog(self) -> int:
        """Ciphertext bytes not yet taken by the socket."""
        return len(self._backlog) + self._out.pending

    async def aclose(self) -> None:
        self._closed = True
        await self._origin.aclose()  # https_compatible: the TCP connection just closes


def lean_tls(stream: trio.abc.Stream) -> trio.abc.Stream:
    """:class:`LeanTLS` in place of an idle, handshaken ``trio.SSLStream`` over a plain
    ``trio.SocketStream``; ``stream`` itself otherwise (or if trio's internals differ)."""
    if not isinstance(stream, trio.SSLStream):
        return stream
    transport = stream.transport_stream
    ssl_object = getattr(stream, "_ssl_object", None)
    incoming = getattr(stream, "_incoming", None)
    outgoing = getattr(stream, "_outgoing", None)
    # TLS 1.3 session tickets that trio holds back until the stream's next send.
    delayed = getattr(stream, "_delayed_outgoing", b"") or b""
    if (
        type(transport) is not trio.SocketStream
        or not isinstance(ssl_object, ssl.SSLObject)
        or not isinstance(incoming, ssl.MemoryBIO)
        or not isinstance(outgoing, ssl.MemoryBIO)
        or not isinstance(delayed, bytes)
        or getattr(getattr(stream, "_state", None), "name", None) != "OK"
    ):
        return stream
    stream._delayed_outgoing = None  # ours to send now
    return LeanTLS(stream, ssl_object, incoming, outgoing, delayed)
