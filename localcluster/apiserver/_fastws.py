"""A lean server-side websocket for the port-forward relay (RFC 6455 framing only).

The port-forward relay stands in for a Go kube-apiserver and kubelet: it must not be the
bottleneck of a client's data path. :class:`~._websocket.WebSocket` (wsproto: events,
generators, Python unmasking) costs several times the work of the client itself per
megabyte, so port-forward uses this one: frames parsed with ``struct`` in the reading
task, client frames unmasked by websockets' C ``apply_mask``. Same interface as
``WebSocket``: ``send``, ``receive`` (None once closed), ``aclose``.

RFC 6455 rules kept: client frames must be masked (§5.1, else close 1002), reserved bits
unset (§5.2), control frames short and unfragmented (§5.5), pings answered (§5.5.2),
a close echoed (§5.5.1), fragmented messages reassembled (§5.4) up to MAX_MESSAGE.
"""

from __future__ import annotations

import struct

import trio

from ._fdio import LeanTLS, lean_tls
from ._websocket import MAX_MESSAGE

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets ships wheels for this platform
    from websockets.utils import apply_mask

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RECEIVE_SIZE = 256 * 1024
_H2 = struct.Struct("!BB")
_H4 = struct.Struct("!BBH")
_H10 = struct.Struct("!BBQ")


class _Malformed(Exception):
    """The client broke the framing rules; the connection is closed with 1002."""


Malformed = _Malformed


def _header(opcode: int, n: int) -> bytes:
    if n < 126:
        return _H2.pack(0x80 | opcode, n)
    if n < 65536:
        return _H4.pack(0x80 | opcode, 126, n)
    return _H10.pack(0x80 | opcode, 127, n)


def frame(opcode: int, payload: bytes, prefix: bytes = b"") -> bytes:
    """One final, unmasked frame (servers never mask, RFC 6455 §5.1) whose payload is
    ``prefix + payload`` (joined once, with the header)."""
    return b"".join((_header(opcode, len(prefix) + len(payload)), prefix, payload))


async def _acquire(lock: trio.StrictFIFOLock) -> None:
    """Take ``lock`` at once when free (no scheduling point: the send that follows is one)."""
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()


class FastWebSocket:
    def __init__(self, stream: trio.abc.Stream, trailing: bytes = b"") -> None:
        self._stream = lean_tls(stream)
        #: LeanTLS encrypts each send whole before it can wait: frames cannot interleave.
        self._atomic_send = isinstance(self._stream, LeanTLS)
        self._buf = bytearray(trailing)
        self._pos = 0
        self._send_lock = trio.StrictFIFOLock()
        self._parts: list[bytes] = []
        self._size = 0
        self._opcode: int | None = None
        self._close_sent = False
        self.closed = False

    async def send(self, data: bytes | str, prefix: bytes = b"") -> None:
        """Send one message (``prefix + data``: a binary one unless ``data`` is text);
        trio.BrokenResourceError once the socket is closed."""
        if self.closed or self._close_sent:
            raise trio.BrokenResourceError("websocket closed")
        if isinstance(data, str):
            out = frame(TEXT, data.encode(), prefix)
        else:
            out = frame(BINARY, data, prefix)
        if self._atomic_send:
            await self._stream.send_all(out)
            return
        await _acquire(self._send_lock)
        try:
            await self._stream.send_all(out)
        finally:
            self._send_lock.release()

    @property
    def lean(self) -> LeanTLS | None:
        """The lean TLS stream underneath, when there is one (see ``_threadrelay``)."""
        return self._stream if isinstance(self._stream, LeanTLS) else None

    def feed(self, data: bytes | bytearray) -> None:
        """Bytes read from the stream by someone else (the relay thread), to parse."""
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_frame(self) -> tuple[bool, int, bytes] | None:
        """The next complete frame in what was read: (fin, opcode, unmasked payload), or
        None; raises :class:`Malformed` for a frame the client must not send."""
        return self._next_frame()

    async def receive(self) -> bytes | str | None:
        """The next whole message, or None when the peer closed (or broke) the connection."""
        while not self.closed:
            try:
                parsed = self._next_frame()
            except _Malformed:
                await self.aclose(1002)
                return None
            if parsed is None:
                if not await self._fill():
                    self.closed = True
                    return None
                continue
            message = await self._on_frame(*parsed)
            if message is not None:
                return message
        return None

    async def _fill(self) -> bool:
        try:
            data = await self._stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        if not data:
            return False
        self.feed(data)
        return True

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail < 2:
            return None
        b0, b1 = buf[pos], buf[pos + 1]
        if b0 & 0x70 or not b1 & 0x80:
            raise _Malformed("reserved bits set, or an unmasked client frame")
        length, head = b1 & 0x7F, 2
        if length == 126:
            if avail < 4:
                return None
            length, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
        elif length == 127:
            if avail < 10:
                return None
            length, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
        if length > MAX_MESSAGE:
            raise _Malformed("frame too big")
        if avail < head + 4 + length:
            return None
        key = bytes(buf[pos + head : pos + head + 4])
        start = pos + head + 4
        with memoryview(buf) as view:
            payload = apply_mask(view[start : start + length], key)
        self._pos = start + length
        return bool(b0 & 0x80), b0 & 0x0F, payload

    async def _on_frame(self, fin: bool, opcode: int, payload: bytes) -> bytes | str | None:
        message, reply, abort = self.consume_frame(fin, opcode, payload)
        if reply is not None:
            await self._control(*reply)
            if reply[0] == CLOSE:
                self.closed = True
        if abort is not None:
            await self.aclose(abort)
        return message

    def consume_frame(
        self, fin: bool, opcode: int, payload: bytes
    ) -> tuple[bytes | str | None, tuple[int, bytes] | None, int | None]:
        """One parsed frame → (a whole message if one is complete, a control frame to
        send back, a close code to end the connection with). No I/O: the relay thread
        (``_threadrelay``) uses it too."""
        if opcode >= CLOSE:
            if not fin or len(payload) > 125:
                return None, None, 1002
            if opcode == PING:
                return None, (PONG, payload), None
            if opcode == CLOSE:
                return None, (CLOSE, payload[:2]), None  # echoed, then closed (§5.5.1)
            if opcode != PONG:
                return None, None, 1002  # reserved control opcode (§5.2)
            return None, None, None
        if opcode in (TEXT, BINARY) and self._opcode is None:
            if fin:
                text = opcode == TEXT
                return (payload.decode("utf-8", "replace") if text else payload), None, None
            self._opcode = opcode
        elif opcode != CONTINUATION or self._opcode is None:
            return None, None, 1002  # a new message inside a fragmented one, or unknown
        self._parts.append(payload)
        self._size += len(payload)
        if self._size > MAX_MESSAGE:
            return None, None, 1009
        if not fin:
            return None, None, None
        whole, first = b"".join(self._parts), self._opcode
        self._parts, self._size, self._opcode = [], 0, None
        return (whole.decode("utf-8", "replace") if first == TEXT else whole), None, None

    async def echo_close(self, payload: bytes) -> None:
        """Answer the client's close frame (its code echoed, RFC 6455 §5.5.1)."""
        await self._control(CLOSE, payload)
        self.closed = True

    async def _control(self, opcode: int, payload: bytes) -> None:
        await _acquire(self._send_lock)
        try:
            if self._close_sent:
                return
            self._close_sent = opcode == CLOSE
            try:
                await self._stream.send_all(frame(opcode, payload))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.closed = True
        finally:
            self._send_lock.release()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (if not yet sent) and close the transport."""
        if not self.closed:
            with trio.move_on_after(2) as scope:
                scope.shield = True
                await self._control(CLOSE, struct.pack("!H", code) + reason.encode()[:120])
        self.closed = True
        with trio.move_on_after(2) as scope:
            scope.shield = True
            try:
                await self._stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
