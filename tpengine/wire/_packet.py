"""Whole packets in one call: the netstack's hot path.

Builders write IPv4/IPv6 + TCP/UDP (optionally behind a virtio-net header) with
precompiled Structs into one buffer. Checksums are summed from the field values, not
re-read from the buffer: in one's-complement arithmetic 0x10000 ≡ 1 (mod 0xFFFF), so a
32-bit field contributes its own value and a byte string its big-endian integer.

With ``vnet=True`` the transport checksum is left partial (NEEDS_CSUM, pseudo-header sum
in the field; virtio spec §5.1.6.2) — the kernel completes it or, for local delivery,
never needs it — and ``gso_size`` turns a payload larger than it into one GSO packet the
kernel segments (TSO4/TSO6 or USO must be enabled on the TUN).
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from ._checksum import Buffer, ones_complement_sum, word_sum
from ._errors import MalformedPacket
from ._ip import IPv4Header, IPv6Header, ipv6_upper_layer
from ._tcp import TcpHeader
from ._udp_icmp import IcmpType

__all__ = [
    "IpPacket",
    "build_destination_unreachable",
    "build_icmp_echo_reply",
    "build_icmp_packet",
    "build_tcp_packet",
    "build_udp_packet",
    "emit_tcp_packet",
    "emit_udp_packet",
    "parse_ip_packet",
    "tcp_packet_len",
    "transport_checksum_ok",
    "udp_packet_len",
]

PROTO_ICMP: Final = 1
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
PROTO_ICMPV6: Final = 58

_V4: Final = struct.Struct("!BBHHHBBH4s4s")
_V6: Final = struct.Struct("!IHBB16s16s")
_TCP: Final = struct.Struct("!HHIIBBHHH")
_UDP: Final = struct.Struct("!HHHH")
_ICMP: Final = struct.Struct("!BBHI")
_VNET: Final = struct.Struct("=BBHHHH")
_H: Final = struct.Struct("!H")

_V4X: Final = struct.Struct("!xBHHHBBH4s4s")  # IPv4 without the version/IHL byte
_unpack_v4x = _V4X.unpack_from
_from_bytes = int.from_bytes
_NO_OPTIONS: Final = (b"",)
_new = tuple.__new__

_DF: Final = 0x4000  # RFC 791 flags/offset word with Don't Fragment set

# RFC 1812 §4.3.2.3: an ICMPv4 error quotes as much as fits in 576 bytes;
# RFC 4443 §2.4(c): an ICMPv6 error as much as fits in the minimum MTU, 1280.
_V4_ERROR_MAX: Final = 576
_V6_ERROR_MAX: Final = 1280


def _fold(n: int) -> int:
    return (n - 1) % 0xFFFF + 1 if n else 0


def _ip_header(
    buf: bytearray | memoryview,
    o: int,
    src: bytes,
    dst: bytes,
    proto: int,
    l4len: int,
    ttl: int,
    addr_sum: int,
) -> int:
    """Write the IP header at ``o``; returns its length. ``addr_sum`` is the sum of
    both addresses as integers (shared with the pseudo-header). IPv4 gets DF and
    identification 0 (RFC 6864 §4.1: the ID of an atomic datagram has no meaning)."""
    if len(src) == 4:
        total = 20 + l4len
        if total > 0xFFFF:
            raise ValueError(f"IPv4 packet of {total} bytes is too large")
        # header checksum from the fields: 0x4500 + total + 0 + DF + ttl|proto + addresses
        s = 0x4500 + total + _DF + (ttl << 8) + proto + addr_sum
        _V4.pack_into(
            buf, o, 0x45, 0, total, 0, _DF, ttl, proto, 0xFFFE - (s - 1) % 0xFFFF, src, dst
        )
        return 20
    if l4len > 0xFFFF:
        raise ValueError(f"IPv6 payload of {l4len} bytes is too large")
    _V6.pack_into(buf, o, 0x60000000, l4len, proto, ttl, src, dst)
    return 40


def tcp_packet_len(src: bytes, options: Buffer, payload: Buffer, vnet: bool = False) -> int:
    """Bytes :func:`emit_tcp_packet` writes for these arguments."""
    return (10 if vnet else 0) + (20 if len(src) == 4 else 40) + 20 + len(options) + len(payload)


def udp_packet_len(src: bytes, payload: Buffer, vnet: bool = False) -> int:
    """Bytes :func:`emit_udp_packet` writes for these arguments."""
    return (10 if vnet else 0) + (20 if len(src) == 4 else 40) + 8 + len(payload)


def emit_tcp_packet(
    buf: bytearray | memoryview,
    offset: int,
    *,
    src: bytes,
    dst: bytes,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: bytes = b"",
    payload: Buffer = b"",
    ttl: int = 64,
    vnet: bool = False,
    gso_size: int = 0,
) -> int:
    """Write [virtio-net header +] IP + TCP + payload at ``buf[offset:]``; returns the
    number of bytes written. ``src``/``dst`` are 4- or 16-byte addresses; ``options``
    raw and padded to 4 bytes (``TcpOptions.to_bytes()``)."""
    return _emit_tcp(
        buf,
        offset,
        src,
        dst,
        src_port,
        dst_port,
        seq,
        ack,
        flags,
        window,
        options,
        payload,
        ttl,
        vnet,
        gso_size,
    )


def _emit_tcp(
    buf: bytearray | memoryview,
    offset: int,
    src: bytes,
    dst: bytes,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: bytes,
    payload: Buffer,
    ttl: int,
    vnet: bool,
    gso_size: int,
) -> int:
    # positional: keyword passing of 15 arguments costs ~0.3 µs per packet
    olen = len(options)
    if olen & 3 or olen > 40:
        raise ValueError(f"TCP options must be padded to 4 bytes, at most 40: {olen}")
    plen = len(payload)
    thlen = 20 + olen
    tcplen = thlen + plen
    o = offset + 10 if vnet else offset
    addr_sum = int.from_bytes(src, "big") + int.from_bytes(dst, "big")
    iphlen = _ip_header(buf, o, src, dst, PROTO_TCP, tcplen, ttl, addr_sum)
    t = o + iphlen
    pseudo = addr_sum + PROTO_TCP + tcplen
    if vnet:
        csum = (pseudo - 1) % 0xFFFF + 1  # partial: pseudo-header sum, folded, not complemented
        gso = 0
        if gso_size and plen > gso_size:
            gso = 1 if iphlen == 20 else 4  # VIRTIO_NET_HDR_GSO_TCPV4 / _TCPV6
        _VNET.pack_into(buf, offset, 1, gso, iphlen + thlen, gso_size if gso else 0, iphlen, 16)
    else:
        s = pseudo + src_port + dst_port + seq + ack + (thlen << 10) + flags + window
        if olen:
            s += int.from_bytes(options, "big")
        if plen:
            s += word_sum(payload)
        csum = 0xFFFE - (s - 1) % 0xFFFF  # s > 0: the protocol number is in it
    _TCP.pack_into(buf, t, src_port, dst_port, seq, ack, thlen << 2, flags, window, csum, 0)
    if olen:
        buf[t + 20 : t + thlen] = options
    if plen:
        buf[t + thlen : t + tcplen] = payload
    return t + tcplen - offset


def build_tcp_packet(
    *,
    src: bytes,
    dst: bytes,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: bytes = b"",
    payload: Buffer = b"",
    ttl: int = 64,
    vnet: bool = False,
    gso_size: int = 0,
) -> bytearray:
    """:func:`emit_tcp_packet` into a new buffer of exactly the right size."""
    size = (10 if vnet else 0) + (20 if len(src) == 4 else 40) + 20 + len(options) + len(payload)
    buf = bytearray(size)
    _emit_tcp(
        buf,
        0,
        src,
        dst,
        src_port,
        dst_port,
        seq,
        ack,
        flags,
        window,
        options,
        payload,
        ttl,
        vnet,
        gso_size,
    )
    return buf


def emit_udp_packet(
    buf: bytearray | memoryview,
    offset: int,
    *,
    src: bytes,
    dst: bytes,
    src_port: int,
    dst_port: int,
    payload: Buffer = b"",
    ttl: int = 64,
    vnet: bool = False,
    gso_size: int = 0,
) -> int:
    """Write [virtio-net header +] IP + UDP + payload; returns bytes written. With
    ``gso_size`` and ``vnet`` a larger payload becomes one USO packet (GSO_UDP_L4): the
    kernel cuts it into datagrams of ``gso_size`` bytes each."""
    plen = len(payload)
    ulen = 8 + plen
    o = offset + 10 if vnet else offset
    addr_sum = int.from_bytes(src, "big") + int.from_bytes(dst, "big")
    iphlen = _ip_header(buf, o, src, dst, PROTO_UDP, ulen, ttl, addr_sum)
    u = o + iphlen
    pseudo = addr_sum + PROTO_UDP + ulen
    if vnet:
        csum = _fold(pseudo)
        gso = 5 if gso_size and plen > gso_size else 0  # VIRTIO_NET_HDR_GSO_UDP_L4
        _VNET.pack_into(buf, offset, 1, gso, iphlen + 8, gso_size if gso else 0, iphlen, 6)
    else:
        s = pseudo + src_port + dst_port + ulen
        if plen:
            s += word_sum(payload)
        csum = 0xFFFF - _fold(s)
        if csum == 0:
            csum = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    _UDP.pack_into(buf, u, src_port, dst_port, ulen, csum)
    if plen:
        buf[u + 8 : u + ulen] = payload
    return u + ulen - offset


def build_udp_packet(
    *,
    src: bytes,
    dst: bytes,
    src_port: int,
    dst_port: int,
    payload: Buffer = b"",
    ttl: int = 64,
    vnet: bool = False,
    gso_size: int = 0,
) -> bytearray:
    """:func:`emit_udp_packet` into a new buffer of exactly the right size."""
    buf = bytearray(udp_packet_len(src, payload, vnet))
    emit_udp_packet(
        buf,
        0,
        src=src,
        dst=dst,
        src_port=src_port,
        dst_port=dst_port,
        payload=payload,
        ttl=ttl,
        vnet=vnet,
        gso_size=gso_size,
    )
    return buf


def build_icmp_packet(
    *,
    src: bytes,
    dst: bytes,
    type: int,
    code: int,
    rest: int = 0,
    body: Buffer = b"",
    ttl: int = 64,
) -> bytearray:
    """An IPv4+ICMP or IPv6+ICMPv6 packet (by address length) with checksums. ICMPv6's
    checksum covers the pseudo-header (RFC 4443 §2.3), ICMPv4's does not (RFC 792)."""
    v4 = len(src) == 4
    proto = PROTO_ICMP if v4 else PROTO_ICMPV6
    mlen = 8 + len(body)
    iphlen = 20 if v4 else 40
    buf = bytearray(iphlen + mlen)
    addr_sum = int.from_bytes(src, "big") + int.from_bytes(dst, "big")
    _ip_header(buf, 0, src, dst, proto, mlen, ttl, addr_sum)
    _ICMP.pack_into(buf, iphlen, type, code, 0, rest)
    buf[iphlen + 8 :] = body
    initial = 0
    if not v4:
        initial = addr_sum + proto + mlen
    _H.pack_into(buf, iphlen + 2, 0xFFFF - ones_complement_sum(buf[iphlen:], initial))
    return buf


def build_icmp_echo_reply(request: Buffer, *, ttl: int = 64) -> bytearray:
    """The echo reply to an IPv4 echo request (RFC 792) or ICMPv6 echo request (RFC 4443
    §4.2): same identifier, sequence and data, addresses swapped."""
    pkt = parse_ip_packet(request)
    msg = pkt.transport
    if len(msg) < 8:
        raise MalformedPacket("ICMP: message shorter than its header")
    v4 = isinstance(pkt.ip, IPv4Header)
    want = (
        (PROTO_ICMP, IcmpType.V4_ECHO_REQUEST) if v4 else (PROTO_ICMPV6, IcmpType.V6_ECHO_REQUEST)
    )
    if (pkt.protocol, msg[0]) != want:
        raise MalformedPacket("not an ICMP echo request")
    rest = int.from_bytes(msg[4:8], "big")
    return build_icmp_packet(
        src=pkt.ip.dst,
        dst=pkt.ip.src,
        type=IcmpType.V4_ECHO_REPLY if v4 else IcmpType.V6_ECHO_REPLY,
        code=0,
        rest=rest,
        body=msg[8:],
        ttl=ttl,
    )


def build_destination_unreachable(
    offending: Buffer, *, code: int, src: bytes | None = None, ttl: int = 64
) -> bytearray:
    """ICMP destination unreachable (type 3, RFC 792) or ICMPv6 destination unreachable
    (type 1, RFC 4443 §3.1) about ``offending`` (a whole IP packet we received), sent to
    its source from ``src`` (default: the address it was sent to). The body quotes the
    offending packet: as much as keeps the error within 576 bytes (IPv4, RFC 1812
    §4.3.2.3, at least the header + 8 bytes RFC 792 asks for) or 1280 (IPv6)."""
    v4 = len(offending) >= 1 and offending[0] >> 4 == 4
    ip: IPv4Header | IPv6Header
    ip = IPv4Header.parse(offending) if v4 else IPv6Header.parse(offending)
    limit = (_V4_ERROR_MAX - 28) if v4 else (_V6_ERROR_MAX - 48)
    quote = offending[: min(ip.total_length, limit)]
    return build_icmp_packet(
        src=ip.dst if src is None else src,
        dst=ip.src,
        type=IcmpType.V4_DEST_UNREACHABLE if v4 else IcmpType.V6_DEST_UNREACHABLE,
        code=code,
        body=quote,
        ttl=ttl,
    )


# An IP packet split at its upper layer: ``transport`` is the TCP/UDP/ICMP message (header
# and payload, without link padding), ``protocol`` its IP protocol number. The functional
# form because mypyc (2.x) compiles a class-syntax NamedTuple with a ``memoryview`` field
# into a module that fails at import ("KeyError: 'memoryview'").
IpPacket = NamedTuple(  # noqa: UP014
    "IpPacket", [("ip", IPv4Header | IPv6Header), ("protocol", int), ("transport", memoryview)]
)


def parse_ip_packet(packet: Buffer, *, verify_checksum: bool = True) -> IpPacket:
    """Parse the IPv4 or IPv6 header (by version nibble) and locate the upper layer.
    IPv6 extension headers are skipped. ``verify_checksum`` checks the IPv4 header
    checksum (transport checksums: :func:`transport_checksum_ok`)."""
    mv = packet if type(packet) is memoryview else memoryview(packet)
    n = len(mv)
    if n >= 20 and mv[0] == 0x45:
        # The hot path, IPv4 without options, inlined from IPv4Header.parse.
        fields = _unpack_v4x(mv, 0)
        total = fields[1]
        if total < 20 or total > n:
            raise MalformedPacket(f"IPv4: total length {total}, have {n} bytes")
        if verify_checksum and _from_bytes(packet[:20], "big") % 0xFFFF:
            raise MalformedPacket("IPv4: bad header checksum")
        return _new(IpPacket, (_new(IPv4Header, fields + _NO_OPTIONS), fields[5], mv[20:total]))
    if n < 1:
        raise MalformedPacket("empty packet")
    version = mv[0] >> 4
    if version == 4:
        h4 = IPv4Header.parse(mv, verify_checksum=verify_checksum)
        return IpPacket(h4, h4.protocol, mv[h4.header_len : h4.total_length])
    if version == 6:
        h6 = IPv6Header.parse(mv)
        proto, off = ipv6_upper_layer(mv, h6)
        return IpPacket(h6, proto, mv[off : 40 + h6.payload_length])
    raise MalformedPacket(f"IP version {version}")


_V4TCPX: Final = struct.Struct("!xBHHHBBH4s4sHHIIxBHHH")  # IPv4 + TCP, no offset bytes
_unpack_v4tcpx = _V4TCPX.unpack_from


def parse_tcp_packet(
    packet: Buffer, *, verify_checksum: bool = True
) -> tuple[IPv4Header | IPv6Header, TcpHeader, memoryview]:
    """The IP header, TCP header and TCP payload of a TCP packet in one call — the
    netstack's hot path. IPv4 without IP options (nearly every packet) is parsed with a
    single unpack; anything else goes through :func:`parse_ip_packet`. Raises
    MalformedPacket for a packet that is not well-formed TCP."""
    mv = packet if type(packet) is memoryview else memoryview(packet)
    n = len(mv)
    if n >= 40 and mv[0] == 0x45 and mv[9] == PROTO_TCP:
        f = _unpack_v4tcpx(mv, 0)
        total = f[1]
        hlen = (mv[32] >> 4) << 2
        if total > n or total < 20 + hlen or hlen < 20:
            raise MalformedPacket(
                f"IPv4/TCP: total length {total}, TCP header {hlen}, have {n} bytes"
            )
        if verify_checksum and _from_bytes(packet[:20], "big") % 0xFFFF:
            raise MalformedPacket("IPv4: bad header checksum")
        options = _NO_OPTIONS if hlen == 20 else (bytes(mv[40 : 20 + hlen]),)
        return (
            _new(IPv4Header, f[:9] + _NO_OPTIONS),
            _new(TcpHeader, f[9:] + options),
            mv[20 + hlen : total],
        )
    ip, protocol, transport = parse_ip_packet(mv, verify_checksum=verify_checksum)
    if protocol != PROTO_TCP:
        raise MalformedPacket(f"not TCP: IP protocol {protocol}")
    tcp = TcpHeader.parse(transport)
    return ip, tcp, transport[tcp.header_len :]


def transport_checksum_ok(packet: IpPacket) -> bool:
    """Whether the TCP/UDP/ICMP checksum of a packet with a *complete* checksum is right
    (do not call for packets read with NEEDS_CSUM). A zero UDP checksum over IPv4 means
    "none" (RFC 768) and passes; over IPv6 it is invalid (RFC 8200 §8.1)."""
    ip, proto, msg = packet
    if proto == PROTO_ICMP:
        return ones_complement_sum(msg) == 0xFFFF
    if proto == PROTO_UDP and len(msg) >= 8 and msg[6] == 0 and msg[7] == 0:
        return isinstance(ip, IPv4Header)
    pseudo = int.from_bytes(ip.src, "big") + int.from_bytes(ip.dst, "big") + proto + len(msg)
    return ones_complement_sum(msg, pseudo) == 0xFFFF
