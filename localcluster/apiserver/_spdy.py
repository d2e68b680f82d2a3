"""SPDY/3.1 framing, sans-IO: bytes in, frames out (draft-mbelshe-httpbis-spdy-00).

Just what the kubelet's port-forward server side needs: SYN_STREAM in, SYN_REPLY out,
DATA both ways with FIN, RST_STREAM, PING echo, GOAWAY; SETTINGS and WINDOW_UPDATE are
read and ignored (moby/spdystream, the client kubectl uses, does no flow control).
Header blocks are zlib streams, one per direction per connection, primed with the SPDY/3
dictionary (§2.6.10.1).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1,
    2,
    3,
    4,
    6,
    7,
    8,
    9,
)
FLAG_FIN = 0x01
MAX_FRAME = 16 * 1024 * 1024
RST_PROTOCOL_ERROR, RST_INVALID_STREAM, RST_REFUSED_STREAM, RST_CANCEL = 1, 2, 3, 5

_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding "
    "accept-language accept-ranges age allow authorization cache-control connection "
    "content-base content-encoding content-language content-length content-location "
    "content-md5 content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
    "server te trailer transfer-encoding upgrade user-agent vary via warning "
    "www-authenticate method get status 200_OK version HTTP/1.1 url public set-cookie "
    "keep-alive origin"
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
    "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
    "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
    "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,"
    "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


def _dictionary() -> bytes:
    # §2.6.10.1: length-prefixed header names and values, then a raw tail of common values.
    words = [w.replace("_", " ") for w in _WORDS.split(" ")]  # "200_OK" is "200 OK"
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + _TAIL.encode()


DICTIONARY = _dictionary()


class SpdyProtocolError(Exception):
    """The peer broke SPDY framing; the session ends (GOAWAY PROTOCOL_ERROR)."""


@dataclass(frozen=True, kw_only=True)
class SynStream:
    stream_id: int
    headers: dict[str, str]
    fin: bool


@dataclass(frozen=True, kw_only=True)
class Data:
    stream_id: int
    data: bytes
    fin: bool


@dataclass(frozen=True, kw_only=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True, kw_only=True)
class Ping:
    ping_id: int


@dataclass(frozen=True, kw_only=True)
class GoAway:
    last_stream_id: int


Frame = SynStream | Data | RstStream | Ping | GoAway


class SpdyConnection:
    """Server side of a SPDY/3.1 session: ``receive_data`` → frames; builders → bytes."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zdict=DICTIONARY)

    def receive_data(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            length = int.from_bytes(self._buffer[5:8], "big")
            if length > MAX_FRAME:
                raise SpdyProtocolError(f"frame of {length} bytes is too large")
            if len(self._buffer) < 8 + length:
                break
            head = bytes(self._buffer[:8])
            body = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            frame = self._parse(head, body)
            if frame is not None:
                frames.append(frame)
        return frames

    def _parse(self, head: bytes, body: bytes) -> Frame | None:
        flags = head[4]
        if not head[0] & 0x80:
            stream_id = int.from_bytes(head[0:4], "big") & 0x7FFFFFFF
            return Data(stream_id=stream_id, data=body, fin=bool(flags & FLAG_FIN))
        version = int.from_bytes(head[0:2], "big") & 0x7FFF
        kind = int.from_bytes(head[2:4], "big")
        if version != VERSION:
            raise SpdyProtocolError(f"unsupported SPDY version {version}")
        if kind == SYN_STREAM:
            if len(body) < 10:
                raise SpdyProtocolError("short SYN_STREAM")
            stream_id = int.from_bytes(body[0:4], "big") & 0x7FFFFFFF
            headers = self._headers(body[10:])
            return SynStream(stream_id=stream_id, headers=headers, fin=bool(flags & FLAG_FIN))
        if kind in (HEADERS, SYN_REPLY):
            self._headers(body[4:])  # keep the zlib context in step; content unused
            return None
        if kind == RST_STREAM:
            if len(body) < 8:
                raise SpdyProtocolError("short RST_STREAM")
            sid, status = struct.unpack(">II", body[:8])
            return RstStream(stream_id=sid & 0x7FFFFFFF, status=status)
        if kind == PING:
            if len(body) < 4:
                raise SpdyProtocolError("short PING")
            return Ping(ping_id=struct.unpack(">I", body[:4])[0])
        if kind == GOAWAY:
            last = struct.unpack(">I", body[:4])[0] & 0x7FFFFFFF if len(body) >= 4 else 0
            return GoAway(last_stream_id=last)
        return None  # SETTINGS, WINDOW_UPDATE, NOOP and unknown types: ignored (§2.2.1)

    def _headers(self, block: bytes) -> dict[str, str]:
        try:
            raw = self._inflate.decompress(block, 1 << 20)
        except zlib.error as exc:
            raise SpdyProtocolError(f"bad header block: {exc}") from None
        try:
            (count,) = struct.unpack_from(">I", raw, 0)
            offset, headers = 4, {}
            for _ in range(count):
                (n,) = struct.unpack_from(">I", raw, offset)
                name = raw[offset + 4 : offset + 4 + n].decode("latin-1").lower()
                offset += 4 + n
                (v,) = struct.unpack_from(">I", raw, offset)
                value = raw[offset + 4 : offset + 4 + v].decode("latin-1")
                offset += 4 + v
                headers[name] = value.split("\x00")[0]
        except struct.error:
            raise SpdyProtocolError("truncated header block") from None
        return headers

    def _control(self, kind: int, flags: int, body: bytes) -> bytes:
        return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(body)) + body

    def _header_block(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers)) + b"".join(
            struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
            for k, v in headers.items()
        )
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def syn_reply(
        self, stream_id: int, headers: dict[str, str] | None = None, fin: bool = False
    ) -> bytes:
        body = struct.pack(">I", stream_id) + self._header_block(headers or {})
        return self._control(SYN_REPLY, FLAG_FIN if fin else 0, body)

    def data(self, stream_id: int, data: bytes, fin: bool = False) -> bytes:
        out = bytearray()
        view = memoryview(data)
        while len(view) > 0xFFFFFF:
            out += struct.pack(">II", stream_id, 0xFFFFFF) + view[:0xFFFFFF]
            view = view[0xFFFFFF:]
        out += struct.pack(">II", stream_id, ((FLAG_FIN if fin else 0) << 24) | len(view))
        out += view
        return bytes(out)

    def rst_stream(self, stream_id: int, status: int) -> bytes:
        return self._control(RST_STREAM, 0, struct.pack(">II", stream_id, status))

    def ping(self, ping_id: int) -> bytes:
        return self._control(PING, 0, struct.pack(">I", ping_id))

    def goaway(self, last_stream_id: int, status: int = 0) -> bytes:
        return self._control(GOAWAY, 0, struct.pack(">II", last_stream_id, status))
