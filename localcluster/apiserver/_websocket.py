"""A server-side websocket over an already-upgraded trio stream (wsproto's sans-IO framing).

RFC 6455: the handshake is answered by the HTTP layer (101 with ``Sec-WebSocket-Accept``);
this class only frames messages. One task may send while another receives; sends are
serialized by a lock. Pings are answered, fragmented messages are reassembled.
"""

from __future__ import annotations

import base64
import hashlib

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 16 * 1024 * 1024


def accept_key(key: str) -> str:
    """RFC 6455 §4.2.2: base64(SHA-1(key + GUID))."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def handshake_headers(key: str, protocol: str | None) -> list[tuple[str, str]]:
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    if protocol:
        headers.append(("Sec-WebSocket-Protocol", protocol))
    return headers


class WebSocket:
    def __init__(self, stream: trio.abc.Stream, trailing: bytes = b"") -> None:
        self._stream = stream
        self._conn = Connection(ConnectionType.SERVER, trailing_data=trailing)
        self._send_lock = trio.Lock()
        self._parts: list[bytes | str] = []
        self._size = 0
        self.closed = False

    async def _write(self, data: bytes) -> None:
        if not data:
            return
        async with self._send_lock:
            await self._stream.send_all(data)

    async def send(self, data: bytes | str) -> None:
        """Send one message; raises trio.BrokenResourceError once the socket is closed."""
        if self.closed or self._conn.state is not ConnectionState.OPEN:
            raise trio.BrokenResourceError("websocket closed")
        try:
            if isinstance(data, str):
                frame = self._conn.send(TextMessage(data=data))
            else:
                frame = self._conn.send(BytesMessage(data=data))
        except LocalProtocolError as exc:
            raise trio.BrokenResourceError("websocket closed") from exc
        await self._write(frame)

    async def receive(self) -> bytes | str | None:
        """The next whole message, or None when the peer closed (or broke) the connection."""
        while True:
            for event in self._conn.events():
                result = await self._handle(event)
                if result is not None:
                    return result
                if self.closed:
                    return None
            if self.closed:
                return None
            try:
                data = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.closed = True
                return None
            try:
                self._conn.receive_data(bytes(data))
            except RemoteProtocolError:
                await self.aclose(1002)
                return None

    async def _handle(self, event: object) -> bytes | str | None:
        if isinstance(event, Message):
            self._parts.append(event.data)
            self._size += len(event.data)
            if self._size > MAX_MESSAGE:
                await self.aclose(1009)
                return None
            if not event.message_finished:
                return None
            parts, self._parts, self._size = self._parts, [], 0
            if isinstance(event, TextMessage):
                return "".join(str(p) for p in parts)
            return b"".join(p for p in parts if isinstance(p, bytes))
        if isinstance(event, Ping):
            await self._safe_write(self._conn.send(event.response()))
        elif isinstance(event, CloseConnection):
            if self._conn.state is ConnectionState.REMOTE_CLOSING:
                await self._safe_write(self._conn.send(event.response()))
            self.closed = True
        return None

    async def _safe_write(self, data: bytes) -> None:
        try:
            await self._write(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (if still open) and close the transport."""
        if self._conn.state is ConnectionState.OPEN:
            try:
                await self._safe_write(self._conn.send(CloseConnection(code=code, reason=reason)))
            except LocalProtocolError:
                pass
        self.closed = True
        with trio.move_on_after(2) as scope:
            scope.shield = True
            try:
                await self._stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
