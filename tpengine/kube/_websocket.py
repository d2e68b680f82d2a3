"""A thin websocket client for the API server's streaming endpoints (port-forward).

The data path of ``tp connect`` runs through one port-forward websocket. httpx-ws (what
kr8s offers) layers httpcore, anyio and a background task with a queue under every
message; this client speaks RFC 6455 directly over a trio TCP or TLS stream instead:

* the opening handshake is one HTTP/1.1 request driven through h11 (sans-IO), with the
  kubeconfig's credentials as kr8s read them (bearer token, client certificate, CA);
* frames are encoded and parsed here (:class:`FrameReader` is sans-IO): client frames are
  masked with a fresh random key each (RFC 6455 §5.3), server frames must not be (§5.1);
* a message is parsed in the task that asked for it: no background task, no queue;
* a message can be sent from the task that has it without waiting
  (:meth:`WebSocketClient.send_nowait`): a frame is taken whole or not at all, and the
  rest of one the socket took only part of goes out before any other frame (§5.4: frames
  do not interleave; control frames only between frames).
"""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit

import h11
import trio

from tpengine.fdstream import FdStream
from tpengine.kube._tls import TlsClientStream

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPCODES = (TEXT, BINARY)
_CONTROL_OPCODES = (CLOSE, PING, PONG)
#: Bytes read from the socket at once (many frames per read when the peer is fast).
RECEIVE_SIZE = 256 * 1024
#: Largest message accepted (the API server sends at most 32 KiB per port-forward read).
MAX_MESSAGE = 16 * 1024 * 1024
#: Largest refusal body read to explain a failed upgrade.
MAX_REFUSAL_BODY = 64 * 1024
#: Seconds to connect, shake hands (TLS, HTTP upgrade) and read a refusal.
OPEN_TIMEOUT = 30.0


class WebSocketError(Exception):
    """The peer broke the websocket protocol (we close with 1002)."""


class UpgradeRefused(Exception):
    """The server answered the upgrade with an HTTP status instead of 101."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


def accept_key(key: str) -> str:
    """RFC 6455 §4.2.2: base64(SHA-1(key + GUID)); the client checks it (§4.1)."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


#: ``_XOR[k]`` maps each byte to itself XOR k: a translate table (as wsproto does).
_XOR = [bytes(b ^ k for b in range(256)) for k in range(256)]
#: Below this size one big-integer XOR is faster than four translates.
_SMALL = 2048


def mask_python(key: bytes, data: bytes | bytearray | memoryview) -> bytes | bytearray:
    """XOR ``data`` with the 4-byte ``key`` repeated (RFC 6455 §5.3), in pure Python:
    small payloads as one big-integer XOR (~1 µs for 100 B), large ones by translating
    every fourth byte through a table (~1.3 ms for 256 KiB on this machine)."""
    n = len(data)
    if n < _SMALL:
        if not n:
            return b""
        keys = (key * ((n + 3) // 4))[:n]
        value = int.from_bytes(data, "little") ^ int.from_bytes(keys, "little")
        return value.to_bytes(n, "little")
    out = bytearray(data)
    for i in range(4):
        out[i::4] = out[i::4].translate(_XOR[key[i]])
    return out


def _mask_c(key: bytes, data: bytes | bytearray | memoryview) -> bytes | bytearray:
    """websockets' C implementation (~25 µs for 256 KiB)."""
    return apply_mask(data, key)


try:
    from websockets.speedups import apply_mask
except ImportError:  # a platform without its wheel: correct, only slower
    mask = mask_python
else:
    mask = _mask_c


def encode_frame(opcode: int, payload: bytes | bytearray | memoryview, *, masked: bool) -> bytes:
    """One final frame (FIN set). Clients mask every frame (RFC 6455 §5.1)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, (0x80 if masked else 0) | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, (0x80 if masked else 0) | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, (0x80 if masked else 0) | 127, n)
    if not masked:
        return head + payload
    key = _masking_keys.next()
    return head + key + mask(key, payload)


class _MaskingKeys:
    """Masking keys from the OS's entropy source (RFC 6455 §5.3: unpredictable, from a
    strong source), drawn 1,024 at a time: one getrandom(2) per thousand frames rather
    than per frame."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> bytes:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(4096), 0
        key = self._pool[self._at : self._at + 4]
        self._at += 4
        return key


_masking_keys = _MaskingKeys()


class FrameReader:
    """Sans-IO: bytes in (:meth:`feed`), whole messages and control frames out
    (:meth:`next_message`). Fragmented messages are reassembled (§5.4); control frames
    may arrive between fragments and come out at once."""

    def __init__(self, *, expect_masked: bool = False, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._expect_masked = expect_masked
        self._max = max_message
        self._parts: list[bytes] = []
        self._size = 0
        self._opcode: int | None = None  # of the message being reassembled

    def feed(self, data: bytes | bytearray) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_message(self) -> tuple[int, bytes] | None:
        """``(opcode, payload)`` of the next whole message or control frame, or None
        until more bytes arrive. Raises :class:`WebSocketError` on a protocol error."""
        while True:
            frame = self._next_frame()
            if frame is None:
                return None
            fin, opcode, payload = frame
            if opcode in _CONTROL_OPCODES:
                if not fin or len(payload) > 125:
                    raise WebSocketError("fragmented or oversized control frame (§5.5)")
                return opcode, payload
            if opcode == CONTINUATION:
                if self._opcode is None:
                    raise WebSocketError("continuation frame without a message (§5.4)")
            elif opcode in _DATA_OPCODES:
                if self._opcode is not None:
                    raise WebSocketError("new message inside a fragmented one (§5.4)")
                if fin:
                    return opcode, payload  # the common case: one frame, one message
                self._opcode = opcode
            else:
                raise WebSocketError(f"unknown opcode {opcode:#x}")
            self._size += len(payload)
            if self._size > self._max:
                raise WebSocketError("message too big")
            self._parts.append(payload)
            if fin:
                whole, first = b"".join(self._parts), self._opcode
                self._parts, self._size, self._opcode = [], 0, None
                assert first is not None
                return first, whole

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail < 2:
            return None
        b0, b1 = buf[pos], buf[pos + 1]
        if b0 & 0x70:
            raise WebSocketError("reserved bits set without an extension (§5.2)")
        length, head = b1 & 0x7F, 2
        if length == 126:
            if avail < 4:
                return None
            (length,) = struct.unpack_from("!H", buf, pos + 2)
            head = 4
        elif length == 127:
            if avail < 10:
                return None
            (length,) = struct.unpack_from("!Q", buf, pos + 2)
            head = 10
        if length > self._max:
            raise WebSocketError("frame too big")
        masked = bool(b1 & 0x80)
        if masked != self._expect_masked:
            raise WebSocketError("frame masking is wrong for its direction (§5.1)")
        key = b""
        if masked:
            if avail < head + 4:
                return None
            key = bytes(buf[pos + head : pos + head + 4])
            head += 4
        if avail < head + length:
            return None
        start = pos + head
        self._pos = start + length
        if masked:
            payload = bytes(mask(key, buf[start : start + length]))
        else:
            payload = bytes(buf[start : start + length])
        return bool(b0 & 0x80), b0 & 0x0F, payload


async def acquire(lock: trio.StrictFIFOLock) -> None:
    """Take ``lock`` at once when it is free: no scheduling point of its own (the send
    that follows is one), which saves a trip through the scheduler per message."""
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()


class WebSocketClient:
    """One open websocket over a trio stream. One task may receive while another
    sends; pongs and the closing handshake share the send lock."""

    def __init__(self, stream: trio.abc.Stream, subprotocol: str | None, head: bytes) -> None:
        self.stream = stream
        self.subprotocol = subprotocol
        self._reader = FrameReader()
        if head:
            self._reader.feed(head)
        self._send_lock = trio.StrictFIFOLock()
        # send_nowait: what the stream below takes without waiting, and the rest of a
        # frame it took only part of (sent first by whoever sends next, under the lock:
        # no other frame may start inside it, RFC 6455 §5.4).
        self._stream_nowait: Callable[[bytes], int] | None = getattr(stream, "send_nowait", None)
        self._holder = stream if isinstance(stream, TlsClientStream) else None
        self._unsent = b""
        self.close_code: int | None = None  # the server's close code, once it closed
        self.close_reason = ""
        self._close_sent = False
        self._closed = False

    async def receive_message(self) -> tuple[int, bytes] | None:
        """``(TEXT or BINARY, payload)``; None once the server closed the websocket
        (see :attr:`close_code`). Raises trio.BrokenResourceError if the connection
        broke, :class:`WebSocketError` if the server broke the protocol."""
        while True:
            message = self._reader.next_message()
            if message is None:
                if self.close_code is not None:
                    return None
                data = await self.stream.receive_some(RECEIVE_SIZE)
                if not data:
                    raise trio.BrokenResourceError("the API server closed the connection")
                self._reader.feed(data)
                continue
            opcode, payload = message
            if opcode in _DATA_OPCODES:
                return message
            if opcode == PING:
                await self._send_control(PONG, payload)  # §5.5.2
            elif opcode == CLOSE:
                self._on_close(payload)
                await self._send_control(CLOSE, payload[:2])  # echo the code (§5.5.1)
                return None

    def _on_close(self, payload: bytes) -> None:
        if len(payload) >= 2:
            (self.close_code,) = struct.unpack_from("!H", payload)
            self.close_reason = payload[2:].decode("utf-8", "replace")
        else:
            self.close_code = 1005  # no status code present (§7.4.1)

    async def send_message(
        self, payload: bytes | bytearray | memoryview, *, text: bool = False
    ) -> None:
        frame = encode_frame(TEXT if text else BINARY, payload, masked=True)
        await acquire(self._send_lock)
        try:
            if self._close_sent:
                raise trio.ClosedResourceError("websocket is closing")
            await self.stream.send_all(self._after_unsent(frame))
        finally:
            self._send_lock.release()

    def send_nowait(self, payload: bytes | bytearray | memoryview) -> int:
        """Send ``payload`` as one binary message from this task without waiting:
        ``len(payload)`` once the whole frame is taken (what the stream below did not
        write yet is kept, see :attr:`output_pending`), or 0 when it cannot be now (a
        send in progress, a frame's rest still unsent, closing, a stream that cannot
        take it without waiting or is broken: the next :meth:`send_message` says how)."""
        nowait = self._stream_nowait
        if nowait is None or self._unsent or self._close_sent or self._send_lock.locked():
            return 0
        frame = encode_frame(BINARY, payload, masked=True)
        try:
            sent = nowait(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return 0
        if not sent:
            return 0  # none of the frame left: it is dropped whole (a fresh key next time)
        if sent < len(frame):
            self._unsent = frame[sent:]
        return len(payload)

    @property
    def output_pending(self) -> bool:
        """Whether bytes of an earlier :meth:`send_nowait` are not on the wire yet:
        :meth:`flush` (or any send) puts them there."""
        return bool(self._unsent) or (self._holder is not None and self._holder.output_pending)

    async def flush(self) -> None:
        """Send what :meth:`send_nowait` left (a checkpoint when nothing is)."""
        await acquire(self._send_lock)
        try:
            if self._unsent:
                data, self._unsent = self._unsent, b""
                await self.stream.send_all(data)
            elif self._holder is not None:
                await self._holder.flush()
            else:
                await trio.lowlevel.checkpoint()
        finally:
            self._send_lock.release()

    def _after_unsent(self, frame: bytes) -> bytes:
        """``frame`` behind the rest of a frame that send_nowait began (under the lock)."""
        if not self._unsent:
            return frame
        data, self._unsent = self._unsent + frame, b""
        return data

    async def _send_control(self, opcode: int, payload: bytes) -> None:
        await acquire(self._send_lock)
        try:
            if self._close_sent:
                return
            self._close_sent = opcode == CLOSE
            frame = encode_frame(opcode, payload, masked=True)
            try:
                await self.stream.send_all(self._after_unsent(frame))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        finally:
            self._send_lock.release()

    async def aclose(self, code: int = 1000) -> None:
        """Send a close frame (if not done) and close the connection. The server's
        close frame is not waited for: the port-forward ends with the TCP connection."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        with trio.move_on_after(2) as scope:
            scope.shield = True
            await self._send_control(CLOSE, struct.pack("!H", code))
            await trio.aclose_forcefully(self.stream)


async def _handshake(
    stream: trio.abc.Stream, host: str, target: str, subprotocols: list[str], token: str | None
) -> WebSocketClient:
    key = base64.b64encode(os.urandom(16)).decode()
    headers = [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", ", ".join(subprotocols)),
        ("User-Agent", "tpengine"),
    ]
    if token:
        headers.append(("Authorization", f"Bearer {token}"))
    conn = h11.Connection(our_role=h11.CLIENT)
    await stream.send_all(conn.send(h11.Request(method="GET", target=target, headers=headers)))
    try:
        event = await _response(conn, stream)
    except h11.RemoteProtocolError as exc:
        raise WebSocketError(f"the server's HTTP answer is malformed: {exc}") from None
    answer = {k.decode().lower(): v.decode() for k, v in event.headers}
    if answer.get("sec-websocket-accept") != accept_key(key):
        raise WebSocketError("the server's Sec-WebSocket-Accept does not match (RFC 6455 §4.1)")
    chosen = answer.get("sec-websocket-protocol") or None
    if chosen is not None and chosen not in subprotocols:
        raise WebSocketError(f"the server chose a subprotocol we did not offer: {chosen}")
    head, _ = conn.trailing_data
    return WebSocketClient(stream, chosen, bytes(head))


async def _response(conn: h11.Connection, stream: trio.abc.Stream) -> h11.InformationalResponse:
    """The 101 answering our upgrade; :class:`UpgradeRefused` for any other status."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            return event
        elif isinstance(event, h11.Response):
            raise UpgradeRefused(event.status_code, await _body(conn, stream))
        elif isinstance(event, h11.ConnectionClosed):
            raise trio.BrokenResourceError("the API server closed the connection")


async def _body(conn: h11.Connection, stream: trio.abc.Stream) -> bytes:
    body = b""
    with trio.move_on_after(5):
        while len(body) < MAX_REFUSAL_BODY:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                break  # the status alone explains the refusal
            if event is h11.NEED_DATA:
                data = bytes(await stream.receive_some(65536))
                conn.receive_data(data)
                if not data:
                    break
            elif isinstance(event, h11.Data):
                body += event.data
            else:
                break
    return body[:MAX_REFUSAL_BODY]


def usable_for(api: Any) -> bool:
    """This client speaks to the server directly; a proxy (kubeconfig ``proxy-url`` or
    the environment, which httpx honours) is left to kr8s's own client."""
    auth = getattr(api, "auth", None)
    server = getattr(auth, "server", "")
    if not isinstance(server, str) or urlsplit(server).scheme not in ("http", "https"):
        return False
    if getattr(auth, "proxy", None):
        return False
    return not any(
        os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
    ) or _no_proxy(urlsplit(server).hostname or "")


def _no_proxy(host: str) -> bool:
    entries = (os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or "").split(",")
    return any(e.strip() and (e.strip() == "*" or host.endswith(e.strip())) for e in entries)


@asynccontextmanager
async def open_api_websocket(
    api: Any, path: str, params: dict[str, str], subprotocols: list[str]
) -> AsyncIterator[WebSocketClient]:
    """A websocket to ``path`` (below the server's URL, e.g. ``/api/v1/namespaces/…``) of
    kr8s ``api``'s server, with its credentials. Raises :class:`UpgradeRefused` (after one
    re-authentication on 401, as kr8s does), OSError or trio.BrokenResourceError."""
    auth = api.auth
    url = urlsplit(auth.server)
    port = url.port or (443 if url.scheme == "https" else 80)
    target = url.path.rstrip("/") + path + ("?" + urlencode(params) if params else "")
    for attempt in (1, 2):
        stream: trio.abc.Stream
        with trio.fail_after(OPEN_TIMEOUT):
            stream = FdStream(await trio.open_tcp_stream(url.hostname or "localhost", port))
            try:
                if url.scheme == "https":
                    stream = await _tls(stream, auth, url.hostname or "")
                ws = await _handshake(stream, url.netloc, target, subprotocols, auth.token)
            except UpgradeRefused as exc:
                await trio.aclose_forcefully(stream)
                if exc.status == 401 and attempt == 1:
                    await auth.reauthenticate()
                    continue
                raise
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        try:
            yield ws
        finally:
            await ws.aclose()
        return


async def _tls(stream: trio.abc.Stream, auth: Any, hostname: str) -> TlsClientStream:
    context = await auth.ssl_context()
    if not isinstance(context, ssl.SSLContext):  # kr8s: True means default verification
        context = ssl.create_default_context()
    tls = TlsClientStream(stream, context, server_hostname=auth.tls_server_name or hostname)
    await tls.do_handshake()
    return tls
