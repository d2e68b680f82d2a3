"""Frame codec: byte-stream framing, independent of websocket message boundaries.

See the package docstring for the wire format. ``FrameParser`` accepts arbitrary chunks
(a websocket message may hold several frames or a fraction of one) and yields
``(type, flags, stream_id, payload)`` tuples; payloads are ``bytes`` copies so nothing
downstream pins a large receive buffer.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Generator, Iterator
from typing import Any

from ._errors import FrameSizeViolation, ProtocolViolation, VersionMismatch

MAGIC = b"TPMUX"
VERSION_MAJOR = 1
VERSION_MINOR = 0
PREAMBLE = struct.Struct("!5sBB")  # magic, major, minor
HEADER = struct.Struct("!IBBI")  # payload length, type, flags, stream id
HEADER_LEN = HEADER.size
MAX_STREAM_ID = 2**32 - 1
#: Largest HELLO accepted before the peer's settings are known.
HELLO_MAX = 16 * 1024

FLAG_FIN = 0x01  # DATA: the sender half-closed after this payload
FLAG_ACK = 0x01  # PING: this is the pong
FLAG_ERROR = 0x01  # RESPONSE: payload is an error message


class FrameType(enum.IntEnum):
    HELLO = 0
    DIAL = 1
    ACCEPT = 2
    REJECT = 3
    DATA = 4
    WINDOW_UPDATE = 5
    RESET = 6
    DATAGRAM = 7
    PING = 8
    GOAWAY = 9
    REQUEST = 10
    RESPONSE = 11
    PUSH = 12


class Proto(enum.IntEnum):
    TCP = 6  # IANA protocol numbers
    UDP = 17


Frame = tuple[int, int, int, bytes]

_DIAL = struct.Struct("!BHB")  # proto, port, host length; then host, then tag
_U32 = struct.Struct("!I")
_CODE = struct.Struct("!B")
_GOAWAY = struct.Struct("!IB")
_PING = struct.Struct("!Q")


def header(ftype: int, flags: int, stream_id: int, length: int) -> bytes:
    return HEADER.pack(length, ftype, flags, stream_id)


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), ftype, flags, stream_id) + payload


def preamble() -> bytes:
    return PREAMBLE.pack(MAGIC, VERSION_MAJOR, VERSION_MINOR)


# -- payload codecs -----------------------------------------------------------------------


def encode_dial(host: str, port: int, proto: Proto, tag: bytes) -> bytes:
    raw = host.encode("idna" if not host.isascii() else "ascii")
    if not 0 < len(raw) <= 255:
        raise ValueError(f"destination host must be 1-255 bytes, got {len(raw)}")
    return _DIAL.pack(proto, port, len(raw)) + raw + tag


def decode_dial(payload: bytes) -> tuple[str, int, Proto, bytes]:
    if len(payload) < _DIAL.size:
        raise ProtocolViolation("DIAL payload too short")
    proto, port, hlen = _DIAL.unpack_from(payload)
    if proto not in (Proto.TCP, Proto.UDP):
        raise ProtocolViolation(f"DIAL with unknown transport protocol {proto}")
    end = _DIAL.size + hlen
    if hlen == 0 or len(payload) < end:
        raise ProtocolViolation("DIAL destination host truncated")
    try:
        host = payload[_DIAL.size : end].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolViolation("DIAL destination host is not ASCII") from None
    return host, port, Proto(proto), payload[end:]


def encode_coded(code: int, message: str) -> bytes:
    return _CODE.pack(code) + message.encode("utf-8", "replace")[:4096]


def decode_coded(payload: bytes, what: str) -> tuple[int, str]:
    if not payload:
        raise ProtocolViolation(f"{what} payload too short")
    return payload[0], payload[1:].decode("utf-8", "replace")


def encode_u32(value: int) -> bytes:
    return _U32.pack(value)


def decode_u32(payload: bytes, what: str) -> int:
    if len(payload) != 4:
        raise ProtocolViolation(f"{what} payload must be 4 bytes")
    value: int = _U32.unpack(payload)[0]
    return value


def encode_goaway(last_stream_id: int, code: int, message: str) -> bytes:
    return _GOAWAY.pack(last_stream_id, code) + message.encode("utf-8", "replace")[:4096]


def decode_goaway(payload: bytes) -> tuple[int, int, str]:
    if len(payload) < _GOAWAY.size:
        raise ProtocolViolation("GOAWAY payload too short")
    last, code = _GOAWAY.unpack_from(payload)
    return last, code, payload[_GOAWAY.size :].decode("utf-8", "replace")


def encode_ping(opaque: int) -> bytes:
    return _PING.pack(opaque)


def decode_ping(payload: bytes) -> int:
    if len(payload) != 8:
        raise ProtocolViolation("PING payload must be 8 bytes")
    value: int = _PING.unpack(payload)[0]
    return value


def encode_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def decode_json(payload: bytes | memoryview, what: str) -> Any:
    try:
        return json.loads(bytes(payload))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolViolation(f"{what} carries malformed JSON: {exc}") from None


def encode_named(name: str, value: Any) -> bytes:
    raw = name.encode()
    if not 0 < len(raw) <= 255:
        raise ValueError("method/topic name must be 1-255 bytes")
    return bytes((len(raw),)) + raw + encode_json(value)


def decode_named(payload: bytes, what: str) -> tuple[str, Any]:
    if not payload or len(payload) < 1 + payload[0] or payload[0] == 0:
        raise ProtocolViolation(f"{what} name truncated")
    end = 1 + payload[0]
    try:
        name = payload[1:end].decode()
    except UnicodeDecodeError:
        raise ProtocolViolation(f"{what} name is not UTF-8") from None
    return name, decode_json(memoryview(payload)[end:], what)


# -- the parser ---------------------------------------------------------------------------


class FrameParser:
    """Incremental parser: the preamble once, then frames; lengths checked before use."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._preamble_seen = False
        self.max_payload = HELLO_MAX
        self.peer_version: tuple[int, int] | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[Frame]:
        """Parse as many complete frames as ``data`` (plus earlier leftovers) holds.

        Frames are parsed in place; only a frame split across two chunks is assembled in
        a buffer, and only its own bytes are copied there (not the rest of the chunk)."""
        view = memoryview(data)
        pos = 0
        if self._buf:
            pos = yield from self._complete_pending(view)
            if self._buf:
                return  # the chunk ended inside the pending unit
        if not self._preamble_seen:
            pos += self._parse_preamble(view[pos:])
            if not self._preamble_seen:
                self._buf = bytearray(view[pos:])
                return
        end = len(view)
        while end - pos >= HEADER_LEN:
            length, ftype, flags, sid = HEADER.unpack_from(view, pos)
            self._check_length(length)
            stop = pos + HEADER_LEN + length
            if stop > end:
                break
            yield ftype, flags, sid, bytes(view[pos + HEADER_LEN : stop])
            pos = stop
        if pos < end:
            self._buf = bytearray(view[pos:])

    def _complete_pending(self, view: memoryview) -> Generator[Frame, None, int]:
        """Top up the pending unit (preamble or frame) from the head of ``view``; yield it
        when complete. Returns how many bytes of ``view`` were used."""
        buf, pos = self._buf, 0
        while True:
            target = self._unit_size(buf)
            if len(buf) < target:
                take = min(target - len(buf), len(view) - pos)
                buf += view[pos : pos + take]
                pos += take
                if len(buf) < target:
                    if not self._preamble_seen:
                        self._parse_preamble(memoryview(bytes(buf)))  # refuse non-peers early
                    return pos
                continue  # a completed header reveals the payload length
            self._buf = bytearray()
            if not self._preamble_seen:
                self._parse_preamble(memoryview(bytes(buf)))
                return pos
            _, ftype, flags, sid = HEADER.unpack_from(buf)
            yield ftype, flags, sid, bytes(buf[HEADER_LEN:])
            return pos

    def _unit_size(self, buf: bytearray) -> int:
        if not self._preamble_seen:
            return PREAMBLE.size
        if len(buf) < HEADER_LEN:
            return HEADER_LEN
        length: int = HEADER.unpack_from(buf)[0]
        self._check_length(length)
        return HEADER_LEN + length

    def _check_length(self, length: int) -> None:
        if length > self.max_payload:
            raise FrameSizeViolation(
                f"frame of {length} bytes exceeds the limit of {self.max_payload}"
            )

    def _parse_preamble(self, view: memoryview) -> int:
        have = min(len(view), len(MAGIC))
        if bytes(view[:have]) != MAGIC[:have]:
            raise ProtocolViolation(
                "peer is not speaking the tpengine tunnel protocol "
                f"(first bytes {bytes(view[:8])!r}); check the URL and port"
            )
        if len(view) < PREAMBLE.size:
            return 0
        _, major, minor = PREAMBLE.unpack_from(view)
        self.peer_version = (major, minor)
        self._preamble_seen = True
        if major != VERSION_MAJOR:
            raise VersionMismatch(
                f"incompatible tunnel protocol: this end speaks {VERSION_MAJOR}.{VERSION_MINOR}, "
                f"the peer speaks {major}.{minor}; run the same tpengine version on both ends"
            )
        return PREAMBLE.size
