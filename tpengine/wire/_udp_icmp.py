"""UDP (RFC 768), ICMP (RFC 792) and ICMPv6 (RFC 4443) headers."""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from ._checksum import Buffer
from ._errors import MalformedPacket

__all__ = ["IcmpHeader", "IcmpType", "UdpHeader"]

_UDP: Final = struct.Struct("!HHHH")
_ICMP: Final = struct.Struct("!BBHI")


class UdpHeader(NamedTuple):
    """A parsed UDP header; the payload is ``datagram[8:header.length]``."""

    src_port: int
    dst_port: int
    length: int
    checksum: int

    @classmethod
    def parse(cls, datagram: Buffer) -> UdpHeader:
        """Parse the header of a UDP datagram (the IP payload). ``length`` must cover the
        header and fit in ``datagram`` (bytes after it are ignored)."""
        if len(datagram) < 8:
            raise MalformedPacket(f"UDP: {len(datagram)} bytes, need 8")
        sport, dport, length, csum = _UDP.unpack_from(datagram, 0)
        if length < 8 or length > len(datagram):
            raise MalformedPacket(f"UDP: length {length}, have {len(datagram)} bytes")
        return cls(sport, dport, length, csum)

    @property
    def payload_len(self) -> int:
        return self.length - 8

    def buffer_len(self) -> int:
        return 8

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        _UDP.pack_into(buf, offset, self.src_port, self.dst_port, self.length, self.checksum)
        return 8


class IcmpType:
    """ICMP and ICMPv6 types and the destination-unreachable codes a stack sends."""

    V4_ECHO_REPLY: Final = 0
    V4_DEST_UNREACHABLE: Final = 3
    V4_ECHO_REQUEST: Final = 8
    V4_TIME_EXCEEDED: Final = 11
    # RFC 792 destination-unreachable codes
    V4_NET_UNREACHABLE: Final = 0
    V4_HOST_UNREACHABLE: Final = 1
    V4_PORT_UNREACHABLE: Final = 3
    V4_ADMIN_PROHIBITED: Final = 13  # RFC 1812 §5.2.7.1

    V6_DEST_UNREACHABLE: Final = 1
    V6_PACKET_TOO_BIG: Final = 2
    V6_TIME_EXCEEDED: Final = 3
    V6_ECHO_REQUEST: Final = 128
    V6_ECHO_REPLY: Final = 129
    # RFC 4443 §3.1 destination-unreachable codes
    V6_NO_ROUTE: Final = 0
    V6_ADMIN_PROHIBITED: Final = 1
    V6_ADDR_UNREACHABLE: Final = 3
    V6_PORT_UNREACHABLE: Final = 4

    V4_ERRORS: Final = frozenset({3, 4, 5, 11, 12})
    V6_ERRORS: Final = frozenset({1, 2, 3, 4})


class IcmpHeader(NamedTuple):
    """The 8-byte ICMP/ICMPv6 header; ``rest`` is the 32-bit rest-of-header (identifier
    and sequence for echo, unused/MTU/pointer for errors). The body follows at 8."""

    type: int
    code: int
    checksum: int
    rest: int = 0

    @property
    def ident(self) -> int:
        return self.rest >> 16

    @property
    def sequence(self) -> int:
        return self.rest & 0xFFFF

    @classmethod
    def parse(cls, message: Buffer) -> IcmpHeader:
        """Parse the header of an ICMP or ICMPv6 message (the IP payload)."""
        if len(message) < 8:
            raise MalformedPacket(f"ICMP: {len(message)} bytes, need 8")
        return cls(*_ICMP.unpack_from(message, 0))

    def buffer_len(self) -> int:
        return 8

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        _ICMP.pack_into(buf, offset, self.type, self.code, self.checksum, self.rest)
        return 8
