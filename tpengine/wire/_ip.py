"""IPv4 (RFC 791) and IPv6 (RFC 8200) headers.

``parse`` checks every length before reading a field and raises only
:class:`MalformedPacket`; the parsed value is an immutable ``NamedTuple`` (measured ~5×
cheaper to construct than a frozen dataclass, which matters on the per-packet path).
Addresses are raw ``bytes`` (4 or 16), which hash and compare fast; convert with
``ipaddress.ip_address(b)`` where a readable form is wanted.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from ._checksum import Buffer, ones_complement_sum
from ._errors import MalformedPacket

__all__ = [
    "IPV4_DF",
    "IPV4_MF",
    "IPv4Header",
    "IPv6Header",
    "ipv6_upper_layer",
]

IPV4_DF: Final = 0x2  # flags field: Don't Fragment (RFC 791 §3.1)
IPV4_MF: Final = 0x1  # flags field: More Fragments

_V4: Final = struct.Struct("!BBHHHBBH4s4s")
_V4X: Final = struct.Struct("!xBHHHBBH4s4s")  # all but version/IHL
_NO_OPTIONS: Final = (b"",)
_new = tuple.__new__
_V6: Final = struct.Struct("!IHBB16s16s")

# RFC 8200 §4: extension headers a receiver walks to find the upper layer.
_V6_HOP_BY_HOP: Final = 0
_V6_ROUTING: Final = 43
_V6_FRAGMENT: Final = 44
_V6_DEST_OPTS: Final = 60


class IPv4Header(NamedTuple):
    """A parsed IPv4 header. ``flags_fragment`` is the 16-bit flags + fragment-offset
    word as on the wire (see the ``flags``/``fragment_offset`` properties); ``options``
    is raw and padded to 4 bytes."""

    tos: int
    total_length: int
    identification: int
    flags_fragment: int
    ttl: int
    protocol: int
    checksum: int
    src: bytes
    dst: bytes
    options: bytes = b""

    @property
    def header_len(self) -> int:
        return 20 + len(self.options)

    @property
    def payload_len(self) -> int:
        return self.total_length - 20 - len(self.options)

    @property
    def flags(self) -> int:
        """The 3 flag bits: ``IPV4_DF``, ``IPV4_MF``."""
        return self.flags_fragment >> 13

    @property
    def fragment_offset(self) -> int:
        """In 8-byte units, as on the wire."""
        return self.flags_fragment & 0x1FFF

    @property
    def is_fragment(self) -> bool:
        """True for any fragment, first or later (RFC 791: MF set or offset non-zero)."""
        return (self.flags_fragment & 0x3FFF) != 0

    @classmethod
    def parse(cls, data: Buffer, *, verify_checksum: bool = True) -> IPv4Header:
        """Parse the header at the start of ``data`` (a whole packet).

        Bytes after ``total_length`` (link padding) are ignored; a packet shorter than
        ``total_length`` is malformed (truncated). The header checksum is verified unless
        ``verify_checksum`` is false (it is always complete on packets from a TUN: only
        transport checksums are offloaded).
        """
        n = len(data)
        if n < 20:
            raise MalformedPacket(f"IPv4: {n} bytes, need at least 20")
        vihl = data[0]
        if vihl >> 4 != 4:
            raise MalformedPacket(f"IPv4: version {vihl >> 4}")
        hlen = (vihl & 0xF) << 2
        if hlen < 20:
            raise MalformedPacket(f"IPv4: header length {hlen} < 20")
        fields = _V4X.unpack_from(data, 0)
        total = fields[1]
        if total < hlen or total > n:
            raise MalformedPacket(f"IPv4: total length {total}, header {hlen}, have {n} bytes")
        # A correct header sums to 0xFFFF, i.e. its integer is ≡ 0 mod 0xFFFF (and is
        # never 0: the version nibble is set) — see _checksum.py.
        if verify_checksum and int.from_bytes(data[:hlen], "big") % 0xFFFF:
            raise MalformedPacket("IPv4: bad header checksum")
        if hlen == 20:
            return _new(cls, fields + _NO_OPTIONS)
        return _new(cls, (*fields, bytes(data[20:hlen])))

    def buffer_len(self) -> int:
        return 20 + len(self.options)

    def emit(
        self, buf: bytearray | memoryview, offset: int = 0, *, fill_checksum: bool = True
    ) -> int:
        """Write the header at ``buf[offset:]``; returns the header length.

        With ``fill_checksum`` the checksum is computed, else ``self.checksum`` is written.
        """
        olen = len(self.options)
        if olen % 4 or olen > 40:
            raise ValueError(f"IPv4 options must be padded to 4 bytes, at most 40: {olen}")
        hlen = 20 + olen
        _V4.pack_into(
            buf,
            offset,
            0x40 | (hlen >> 2),
            self.tos,
            self.total_length,
            self.identification,
            self.flags_fragment,
            self.ttl,
            self.protocol,
            0 if fill_checksum else self.checksum,
            self.src,
            self.dst,
        )
        if olen:
            buf[offset + 20 : offset + hlen] = self.options
        if fill_checksum:
            csum = 0xFFFF - ones_complement_sum(buf[offset : offset + hlen])
            struct.pack_into("!H", buf, offset + 10, csum)
        return hlen


class IPv6Header(NamedTuple):
    """A parsed fixed IPv6 header (40 bytes). Extension headers are part of the payload;
    walk them with :func:`ipv6_upper_layer`."""

    traffic_class: int
    flow_label: int
    payload_length: int
    next_header: int
    hop_limit: int
    src: bytes
    dst: bytes

    @property
    def header_len(self) -> int:
        return 40

    @property
    def total_length(self) -> int:
        return 40 + self.payload_length

    @classmethod
    def parse(cls, data: Buffer) -> IPv6Header:
        """Parse the fixed header; ``data`` must hold the whole payload (trailing bytes
        beyond ``payload_length`` are ignored). Jumbograms (RFC 2675) are refused."""
        if len(data) < 40:
            raise MalformedPacket(f"IPv6: {len(data)} bytes, need at least 40")
        vtf, plen, nh, hlim, src, dst = _V6.unpack_from(data, 0)
        if vtf >> 28 != 6:
            raise MalformedPacket(f"IPv6: version {vtf >> 28}")
        if 40 + plen > len(data):
            raise MalformedPacket(f"IPv6: payload length {plen}, have {len(data) - 40} bytes")
        return _new(cls, ((vtf >> 20) & 0xFF, vtf & 0xFFFFF, plen, nh, hlim, src, dst))

    def buffer_len(self) -> int:
        return 40

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        """Write the header at ``buf[offset:]``; returns 40."""
        _V6.pack_into(
            buf,
            offset,
            0x60000000 | (self.traffic_class << 20) | self.flow_label,
            self.payload_length,
            self.next_header,
            self.hop_limit,
            self.src,
            self.dst,
        )
        return 40


def ipv6_upper_layer(packet: Buffer, header: IPv6Header) -> tuple[int, int]:
    """Skip the extension headers (RFC 8200 §4) and return ``(protocol, offset)`` of the
    upper-layer header in ``packet``. A fragment header (a fragmented packet) or a
    header running past the payload is malformed for a stack that does not reassemble;
    "no next header" (59) returns ``(59, offset)``; a fragment header returns
    ``(44, offset)`` of the fragment header (this stack does not reassemble: drop it)."""
    end = 40 + header.payload_length
    nh = header.next_header
    off = 40
    while nh in (_V6_HOP_BY_HOP, _V6_ROUTING, _V6_DEST_OPTS, _V6_FRAGMENT):
        if off + 8 > end:
            raise MalformedPacket("IPv6: extension header truncated")
        if nh == _V6_FRAGMENT:
            return nh, off
        nxt = packet[off]
        off += (packet[off + 1] + 1) * 8  # RFC 8200 §4.3: Hdr Ext Len in 8-octet units
        nh = nxt
        if off > end:
            raise MalformedPacket("IPv6: extension header truncated")
    return nh, off
