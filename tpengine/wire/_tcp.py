"""TCP header and options (RFC 9293 §3.1, RFC 7323, RFC 2018).

``TcpHeader.parse(segment)`` reads the fixed header and keeps the options raw;
``parse_tcp_options`` decodes them (with a fast path for the Linux data-segment layout
NOP NOP TIMESTAMPS). Unknown options are skipped by their length; an option whose length
is impossible is malformed (RFC 9293 §3.1: "MUST be prepared to handle an illegal option
length ... without crashing" — the segment is dropped).
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from ._checksum import NATIVE, Buffer
from ._errors import MalformedPacket

__all__ = ["TcpFlags", "TcpHeader", "TcpOptions", "parse_tcp_options"]

_TCP: Final = struct.Struct("!HHIIBBHHH")
_TCPX: Final = struct.Struct("!HHIIxBHHH")  # all but the data offset byte
_unpack_tcpx = _TCPX.unpack_from
_EMPTY: Final = (b"",)
_new = tuple.__new__
_TS: Final = struct.Struct("!II")

OPT_EOL: Final = 0
OPT_NOP: Final = 1
OPT_MSS: Final = 2
OPT_WSCALE: Final = 3
OPT_SACK_PERMITTED: Final = 4
OPT_SACK: Final = 5
OPT_TIMESTAMPS: Final = 8


class TcpFlags:
    """TCP control bits (RFC 9293 §3.1, RFC 3168) as plain ints (``IntFlag`` arithmetic
    costs ~1 µs per operation on the per-segment path)."""

    FIN: Final = 0x01
    SYN: Final = 0x02
    RST: Final = 0x04
    PSH: Final = 0x08
    ACK: Final = 0x10
    URG: Final = 0x20
    ECE: Final = 0x40
    CWR: Final = 0x80


class TcpOptions(NamedTuple):
    """Decoded TCP options. ``window_scale`` is kept as sent: RFC 7323 §2.3 says a
    receiver uses 14 for larger values — that clamp is the stack's decision."""

    mss: int | None = None
    window_scale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    timestamps: tuple[int, int] | None = None  # (TSval, TSecr)

    def buffer_len(self) -> int:
        """Encoded length, padded to a multiple of 4 (at most 40)."""
        n = 0
        if self.mss is not None:
            n += 4
        if self.timestamps is not None:
            n += 12  # (SACK-permitted or NOP NOP) + TIMESTAMPS
        elif self.sack_permitted:
            n += 4  # NOP NOP SACK-permitted
        if self.window_scale is not None:
            n += 4  # NOP WSCALE
        if self.sack_blocks:
            n += 4 + 8 * len(self.sack_blocks)  # NOP NOP SACK
        if n > 40:
            raise ValueError(f"TCP options need {n} bytes, the limit is 40")
        return n

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        """Write the options (Linux's layout, 4-byte aligned); returns bytes written."""
        n = self.buffer_len()
        o = offset
        if self.mss is not None:
            struct.pack_into("!BBH", buf, o, OPT_MSS, 4, self.mss)
            o += 4
        if self.timestamps is not None:
            if self.sack_permitted:
                buf[o : o + 2] = b"\x04\x02"
            else:
                buf[o : o + 2] = b"\x01\x01"
            struct.pack_into("!BBII", buf, o + 2, OPT_TIMESTAMPS, 10, *self.timestamps)
            o += 12
        elif self.sack_permitted:
            buf[o : o + 4] = b"\x01\x01\x04\x02"
            o += 4
        if self.window_scale is not None:
            struct.pack_into("!BBBB", buf, o, OPT_NOP, OPT_WSCALE, 3, self.window_scale)
            o += 4
        if self.sack_blocks:
            blocks = self.sack_blocks
            struct.pack_into("!BBBB", buf, o, OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(blocks))
            o += 4
            for left, right in blocks:
                _TS.pack_into(buf, o, left, right)
                o += 8
        return n

    def to_bytes(self) -> bytes:
        out = bytearray(self.buffer_len())
        self.emit(out)
        return bytes(out)


_NO_OPTIONS: Final = TcpOptions()


def _linux_timestamps(raw: bytes) -> tuple[int, int] | None:
    """(TSval, TSecr) of exactly NOP NOP TIMESTAMPS, read byte by byte (compiled)."""
    if raw[0] != 1 or raw[1] != 1 or raw[2] != 8 or raw[3] != 10:
        return None
    tsval = raw[4] << 24 | raw[5] << 16 | raw[6] << 8 | raw[7]
    return tsval, raw[8] << 24 | raw[9] << 16 | raw[10] << 8 | raw[11]


def parse_tcp_options(raw: Buffer) -> TcpOptions:
    """Decode TCP options; unknown kinds are skipped, EOL ends the list."""
    n = len(raw)
    if n == 0:
        return _NO_OPTIONS
    if n == 12:  # Linux data segments: NOP NOP TIMESTAMPS (RFC 7323 Appendix A)
        if NATIVE and type(raw) is bytes:
            ts = _linux_timestamps(raw)
            if ts is not None:
                return _new(TcpOptions, (None, None, False, (), ts))
        elif raw[0] == 1 and raw[1] == 1 and raw[2] == 8 and raw[3] == 10:
            return _new(TcpOptions, (None, None, False, (), _TS.unpack_from(raw, 4)))
    mss = wscale = ts = None
    sack_ok = False
    blocks: tuple[tuple[int, int], ...] = ()
    i = 0
    while i < n:
        kind = raw[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise MalformedPacket(f"TCP option {kind}: length byte missing")
        olen = raw[i + 1]
        if olen < 2 or i + olen > n:
            raise MalformedPacket(f"TCP option {kind}: bad length {olen}")
        if kind == OPT_MSS:
            if olen != 4:
                raise MalformedPacket(f"TCP MSS option length {olen}")
            mss = (raw[i + 2] << 8) | raw[i + 3]
        elif kind == OPT_WSCALE:
            if olen != 3:
                raise MalformedPacket(f"TCP window scale option length {olen}")
            wscale = raw[i + 2]
        elif kind == OPT_SACK_PERMITTED:
            if olen != 2:
                raise MalformedPacket(f"TCP SACK-permitted option length {olen}")
            sack_ok = True
        elif kind == OPT_TIMESTAMPS:
            if olen != 10:
                raise MalformedPacket(f"TCP timestamps option length {olen}")
            ts = _TS.unpack_from(raw, i + 2)
        elif kind == OPT_SACK:
            if (olen - 2) % 8 or olen == 2:
                raise MalformedPacket(f"TCP SACK option length {olen}")
            blocks = tuple(_TS.iter_unpack(bytes(raw[i + 2 : i + olen])))
        i += olen
    return _new(TcpOptions, (mss, wscale, sack_ok, blocks, ts))


class TcpHeader(NamedTuple):
    """A parsed TCP header. ``flags`` holds the 8 control bits (the 4 reserved bits
    are ignored on receipt and sent as zero, RFC 9293 §3.1); ``options`` is raw (decode
    with :meth:`parsed_options`). ``seq``/``ack`` are raw ints; wrap in ``SeqNum`` for
    arithmetic."""

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    checksum: int
    urgent: int
    options: bytes = b""

    @property
    def header_len(self) -> int:
        return 20 + len(self.options)

    @classmethod
    def parse(cls, segment: Buffer) -> TcpHeader:
        """Parse the header of a TCP segment (the IP payload). The payload is
        ``segment[header.header_len:]``. The checksum is not checked here (it may be a
        partial sum under virtio NEEDS_CSUM); use :func:`tcp_checksum_ok` when complete."""
        n = len(segment)
        if n < 20:
            raise MalformedPacket(f"TCP: {n} bytes, need at least 20")
        hlen = (segment[12] >> 4) << 2
        if hlen < 20 or hlen > n:
            raise MalformedPacket(f"TCP: data offset {hlen}, have {n} bytes")
        if hlen == 20:
            return _new(cls, _unpack_tcpx(segment, 0) + _EMPTY)
        return _new(cls, (*_unpack_tcpx(segment, 0), bytes(segment[20:hlen])))

    def parsed_options(self) -> TcpOptions:
        return parse_tcp_options(self.options)

    def buffer_len(self) -> int:
        return 20 + len(self.options)

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        """Write the header (with ``self.checksum`` as is); returns the header length.
        Fill the checksum afterwards over the whole segment (see ``tpengine.wire``'s
        packet builders, which do all of it in one call)."""
        olen = len(self.options)
        if olen % 4 or olen > 40:
            raise ValueError(f"TCP options must be padded to 4 bytes, at most 40: {olen}")
        hlen = 20 + olen
        _TCP.pack_into(
            buf,
            offset,
            self.src_port,
            self.dst_port,
            self.seq,
            self.ack,
            hlen << 2,
            self.flags,
            self.window,
            self.checksum,
            self.urgent,
        )
        if olen:
            buf[offset + 20 : offset + hlen] = self.options
        return hlen
