"""A client TLS stream for the port-forward's connection to the API server.

``trio.SSLStream`` is general (renegotiation, handshakes from either side, several
tasks racing for the transport) and pays for it on every TLS record: a retry loop, a
lock and a scheduling point each. One TLS record holds at most 16 KiB (RFC 8446 §5.1),
so a bulk download through the port-forward costs 64 of those per MB. This stream
drives an :class:`ssl.SSLObject` over memory BIOs from the task that reads and the task
that writes (one of each at a time), and hands out every record the socket already
delivered in one ``receive_some``.

What it keeps: certificate and hostname checks (the context's, with ``server_hostname``
for SNI), TLS 1.3 post-handshake messages (session tickets, KeyUpdate: whatever the
read produces for the peer is sent at once), close_notify both ways, and a ragged EOF
read as end of stream (``https_compatible`` in trio's terms: the API server's HTTP
framing says where data ends). Client side only; no renegotiation (TLS 1.3 has none).

:meth:`TlsClientStream.send_nowait` encrypts and writes from the calling task without
waiting (the tunnel's driver writes each message from the task that queued it). Data is
committed once encrypted (its records carry sequence numbers, RFC 8446 §5.3): ciphertext
the socket did not take is kept and goes out first on the next send, or on
:meth:`TlsClientStream.flush`; :attr:`TlsClientStream.output_pending` says when some is kept.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

import trio

#: Bytes read from the socket at once (many TLS records).
RECEIVE_SIZE = 256 * 1024


class _OneAtATime:
    __slots__ = ("held", "_what")

    def __init__(self, what: str) -> None:
        self.held = False
        self._what = what

    def __enter__(self) -> None:
        if self.held:
            raise trio.BusyResourceError(f"another task is already {self._what}")
        self.held = True

    def __exit__(self, *exc: object) -> None:
        self.held = False


class TlsClientStream(trio.abc.Stream):
    def __init__(
        self, transport: trio.abc.Stream, context: ssl.SSLContext, server_hostname: str | None
    ) -> None:
        self.transport = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_side=False, server_hostname=server_hostname
        )
        self._send_lock = trio.StrictFIFOLock()  # one ordered writer of the outgoing BIO
        self._sending = _OneAtATime("sending on this TLS stream")
        self._receiving = _OneAtATime("receiving on this TLS stream")
        self._broken: str | None = None
        self._closed = False
        #: Ciphertext taken out of the outgoing BIO that the socket has not taken yet:
        #: it goes out before anything the BIO holds (whoever holds the send lock).
        self._unsent = b""
        self._transport_nowait: Callable[[bytes], int] | None = getattr(
            transport, "send_nowait", None
        )

    async def do_handshake(self) -> None:
        """RFC 8446 §4: until the server's Finished (certificate checked by the context)."""
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    raise trio.BrokenResourceError(
                        "the server closed during the TLS handshake"
                    ) from None
                continue
            except ssl.SSLError as exc:  # SSLCertVerificationError among them
                raise trio.BrokenResourceError(f"TLS handshake failed: {exc}") from exc
            break
        await self._flush()

    async def _fill(self) -> bool:
        """Feed what the socket has (waiting for it); False at the socket's EOF."""
        data = await self.transport.receive_some(RECEIVE_SIZE)
        if not data:
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    async def _flush(self) -> None:
        """Send what the TLS object produced, in order: whoever holds the lock sends all
        of the outgoing BIO, so bytes leave in the order they were produced."""
        if not self._outgoing.pending and not self._unsent:
            return
        try:
            self._send_lock.acquire_nowait()  # free: no scheduling point of its own
        except trio.WouldBlock:
            await self._send_lock.acquire()
        try:
            data, self._unsent = self._unsent + self._outgoing.read(), b""
            if data:
                await self.transport.send_all(data)
        except BaseException:
            # Some of a record may have left: the stream cannot be used any more.
            self._broken = "TLS stream broken by an interrupted send"
            raise
        finally:
            self._send_lock.release()

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("TLS stream was closed")
        if self._broken is not None:
            raise trio.BrokenResourceError(self._broken)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with self._sending:
            self._check()
            try:
                self._ssl.write(data)  # all of it, as records, into the outgoing BIO
            except ssl.SSLError as exc:
                self._broken = f"TLS error: {exc}"
                raise trio.BrokenResourceError(self._broken) from exc
            if self._outgoing.pending or self._unsent:
                await self._flush()
            else:
                await trio.lowlevel.checkpoint()

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt all of ``data`` and write what the socket takes now, without waiting
        or yielding: ``len(data)`` once encrypted (ciphertext the socket did not take is
        kept, see :attr:`output_pending`), or 0 when nothing can be taken now: another
        task is sending, earlier ciphertext is still unsent, the transport cannot write
        without waiting, or the stream is closed or broken (the next :meth:`send_all`
        says how)."""
        nowait = self._transport_nowait
        if (
            nowait is None
            or not data
            or self._sending.held
            or self._send_lock.locked()
            or self._unsent
            or self._closed
            or self._broken is not None
        ):
            return 0
        try:
            self._ssl.write(data)
        except ssl.SSLError as exc:
            self._broken = f"TLS error: {exc}"
            return 0
        out = self._outgoing.read()  # with anything older the BIO held: in order
        try:
            sent = nowait(out)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._broken = f"TLS stream broken: {exc}"
            return 0
        if sent < len(out):
            self._unsent = out[sent:]
        return len(data)

    @property
    def output_pending(self) -> bool:
        """Whether ciphertext of an earlier :meth:`send_nowait` is not on the wire yet:
        :meth:`flush` (or any send) puts it there."""
        return bool(self._unsent)

    async def flush(self) -> None:
        """Send the ciphertext :meth:`send_nowait` kept (a checkpoint when none is)."""
        with self._sending:
            self._check()
            if self._unsent or self._outgoing.pending:
                await self._flush()
            else:
                await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        with self._sending:
            self._check()
            await self.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        with self._receiving:
            self._check()
            limit = RECEIVE_SIZE if max_bytes is None else max_bytes
            if limit < 1:
                raise ValueError("max_bytes must be >= 1")
            waited = eof = False
            incoming, tls = self._incoming, self._ssl
            while True:
                if not (eof or incoming.pending or tls.pending()):
                    # Nothing to decrypt: a read would only say so, by a costly exception
                    # (about 1.6 µs each, twice per message).
                    waited = True
                    eof = await self._wait_for_records()
                    continue
                try:
                    first = tls.read(limit)
                except ssl.SSLWantReadError:  # part of a record
                    if eof:
                        return b""
                    waited = True
                    eof = await self._wait_for_records()
                    continue
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    if not waited:
                        await trio.lowlevel.checkpoint()
                    return b""  # close_notify, or a ragged EOF (see the module doc)
                except ssl.SSLError as exc:
                    self._broken = f"TLS error: {exc}"
                    raise trio.BrokenResourceError(self._broken) from exc
                break
            chunks, total = [first], len(first)
            # Records that are already here: no I/O, no yield.
            while total < limit and (incoming.pending or tls.pending()):
                try:
                    more = tls.read(limit - total)
                except ssl.SSLError:
                    break  # want-read, or an end/error that the next call reports
                if not more:
                    break
                chunks.append(more)
                total += len(more)
            if self._outgoing.pending:
                await self._flush()
            elif not waited:
                await trio.lowlevel.checkpoint()
            return first if len(chunks) == 1 else b"".join(chunks)

    async def _wait_for_records(self) -> bool:
        """Send what is owed (e.g. our answer to a KeyUpdate, RFC 8446 §4.6.3), then wait
        for the socket; True at its EOF (the next read says how the stream ended)."""
        await self._flush()
        return not await self._fill()

    async def aclose(self) -> None:
        """close_notify (RFC 8446 §6.1) without waiting for the server's, then close."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        with trio.move_on_after(1) as scope:
            scope.shield = True
            if self._broken is None:
                try:
                    self._ssl.unwrap()
                except ssl.SSLError:
                    pass  # want-read: the server's close_notify is not waited for
                try:
                    await self._flush()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
        await trio.aclose_forcefully(self.transport)
