"""``TcpView``: an IPv4/IPv6 TCP packet parsed flat, in one call — the netstack's
per-packet parse.

The layered parse (``parse_tcp_packet``: an ``IPv4Header``, a ``TcpHeader`` and the
payload) builds three objects per packet; the stack reads a dozen fields of them. A
``TcpView`` holds exactly those fields in one slotted object (a native class when
compiled with mypyc, see ``_build.py``), the options raw (decode them with
``parsed_options()`` only when there are any) and the payload as a view into the packet.

Like every parser here it checks each length before reading a field and raises only
``MalformedPacket`` (RFC 9293 §3.1, RFC 791 §3.1 for the lengths checked). Two ways to
the same result: compiled, a ``bytes`` IPv4 packet without IP options (nearly every
packet) is read byte by byte — ~0.4 µs, no intermediate tuples; anything else (and every
packet when running the Python sources) goes through one ``struct`` unpack or the
layered parse. ``tests/wire/test_view.py`` holds both to the layered parse.
"""

from __future__ import annotations

import struct
from typing import Final

from ._checksum import NATIVE, Buffer, sum_words
from ._errors import MalformedPacket
from ._ip import IPv4Header
from ._packet import PROTO_TCP, IpPacket, parse_tcp_packet
from ._tcp import TcpHeader, TcpOptions, parse_tcp_options

__all__ = ["TcpView", "parse_tcp_view", "tcp_view_of"]

_V4TCPX: Final = struct.Struct("!xBHHHBBH4s4sHHIIxBHHH")  # IPv4 + TCP, no offset bytes
_unpack_v4tcpx = _V4TCPX.unpack_from


class TcpView:
    """One parsed TCP packet. ``total_length`` is the IP packet's (headers included:
    ``packet[offset : offset + total_length]`` is the whole datagram without link
    padding); ``flags_fragment`` the IPv4 flags/fragment-offset word (0 for IPv6);
    ``ttl`` the IPv4 TTL or IPv6 hop limit; ``seq``/``ack`` raw 32-bit ints."""

    __slots__ = (
        "ack",
        "checksum",
        "dst",
        "dst_port",
        "flags",
        "flags_fragment",
        "options",
        "payload",
        "seq",
        "src",
        "src_port",
        "total_length",
        "ttl",
        "urgent",
        "version",
        "window",
    )

    def __init__(
        self,
        version: int,
        src: bytes,
        dst: bytes,
        ttl: int,
        total_length: int,
        flags_fragment: int,
        src_port: int,
        dst_port: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        checksum: int,
        urgent: int,
        options: bytes,
        payload: memoryview,
    ) -> None:
        self.version = version
        self.src = src
        self.dst = dst
        self.ttl = ttl
        self.total_length = total_length
        self.flags_fragment = flags_fragment
        self.src_port = src_port
        self.dst_port = dst_port
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.checksum = checksum
        self.urgent = urgent
        self.options = options
        self.payload = payload

    @property
    def is_fragment(self) -> bool:
        """An IPv4 fragment, first or later (RFC 791: MF set or offset non-zero)."""
        return (self.flags_fragment & 0x3FFF) != 0

    def parsed_options(self) -> TcpOptions:
        return parse_tcp_options(self.options)

    def __repr__(self) -> str:
        return (
            f"<TcpView v{self.version} {self.src.hex()}:{self.src_port} -> "
            f"{self.dst.hex()}:{self.dst_port} flags={self.flags:#04x} seq={self.seq} "
            f"ack={self.ack} win={self.window} options={len(self.options)} B "
            f"payload={len(self.payload)} B>"
        )


def parse_tcp_view(packet: Buffer, offset: int = 0, *, verify_checksum: bool = True) -> TcpView:
    """Parse the TCP packet at ``packet[offset:]`` (``offset``: e.g. a virtio-net
    header before it). ``verify_checksum`` checks the IPv4 header checksum; transport
    checksums are not checked here (they may be partial under virtio NEEDS_CSUM)."""
    if NATIVE and type(packet) is bytes:
        return _parse_v4_bytes(packet, offset, verify_checksum)
    return _parse_any(packet, offset, verify_checksum)


def _parse_v4_bytes(p: bytes, o: int, verify_checksum: bool) -> TcpView:
    """The compiled hot path: IPv4 without options read byte by byte."""
    n = len(p) - o
    if n < 40 or o < 0 or p[o] != 0x45 or p[o + 9] != 6:
        return _parse_any(p, o, verify_checksum)
    total = p[o + 2] << 8 | p[o + 3]
    hlen = (p[o + 32] >> 4) << 2  # RFC 9293 §3.1: data offset in 32-bit words
    if total > n or hlen < 20 or total < 20 + hlen:
        raise MalformedPacket(f"IPv4/TCP: total length {total}, TCP header {hlen}, have {n} B")
    # RFC 1071: a correct header's words sum to 0xFFFF (≡ 0 mod 0xFFFF, never 0 here)
    if verify_checksum and sum_words(p, o, o + 20) % 0xFFFF:
        raise MalformedPacket("IPv4: bad header checksum")
    t = o + 20
    return TcpView(
        4,
        p[o + 12 : o + 16],
        p[o + 16 : t],
        p[o + 8],
        total,
        p[o + 6] << 8 | p[o + 7],
        p[t] << 8 | p[t + 1],
        p[t + 2] << 8 | p[t + 3],
        p[t + 4] << 24 | p[t + 5] << 16 | p[t + 6] << 8 | p[t + 7],
        p[t + 8] << 24 | p[t + 9] << 16 | p[t + 10] << 8 | p[t + 11],
        p[t + 13],
        p[t + 14] << 8 | p[t + 15],
        p[t + 16] << 8 | p[t + 17],
        p[t + 18] << 8 | p[t + 19],
        b"" if hlen == 20 else p[t + 20 : t + hlen],
        memoryview(p)[t + hlen : o + total],
    )


def _parse_any(packet: Buffer, offset: int, verify_checksum: bool) -> TcpView:
    """Any buffer, IPv4 with options and IPv6 too: one unpack for plain IPv4, else the
    layered parse."""
    mv = packet if type(packet) is memoryview else memoryview(packet)
    if offset:
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        mv = mv[offset:]
    n = len(mv)
    if n >= 40 and mv[0] == 0x45 and mv[9] == 6:
        f = _unpack_v4tcpx(mv, 0)
        total = f[1]
        hlen = (mv[32] >> 4) << 2
        if total > n or hlen < 20 or total < 20 + hlen:
            raise MalformedPacket(f"IPv4/TCP: total length {total}, TCP header {hlen}, have {n} B")
        if verify_checksum and int.from_bytes(mv[:20], "big") % 0xFFFF:
            raise MalformedPacket("IPv4: bad header checksum")
        options = b"" if hlen == 20 else bytes(mv[40 : 20 + hlen])
        return TcpView(
            4, f[7], f[8], f[4], total, f[3], f[9], f[10], f[11], f[12], f[13], f[14], f[15],
            f[16], options, mv[20 + hlen : total],
        )  # fmt: skip
    ip, tcp, payload = parse_tcp_packet(mv, verify_checksum=verify_checksum)
    if isinstance(ip, IPv4Header):
        version, ttl, fragment = 4, ip.ttl, ip.flags_fragment
    else:
        version, ttl, fragment = 6, ip.hop_limit, 0
    return TcpView(
        version, ip.src, ip.dst, ttl, ip.total_length, fragment, tcp.src_port, tcp.dst_port,
        tcp.seq, tcp.ack, tcp.flags, tcp.window, tcp.checksum, tcp.urgent, tcp.options, payload,
    )  # fmt: skip


def tcp_view_of(packet: IpPacket) -> TcpView:
    """The view of an IP packet already split at its upper layer (a reassembled
    datagram, say: its transport is the whole segment). ``total_length`` is the IP
    header's as parsed."""
    ip, protocol, transport = packet
    if protocol != PROTO_TCP:
        raise MalformedPacket(f"not TCP: IP protocol {protocol}")
    tcp = TcpHeader.parse(transport)
    if isinstance(ip, IPv4Header):
        version, ttl, fragment = 4, ip.ttl, ip.flags_fragment
    else:
        version, ttl, fragment = 6, ip.hop_limit, 0
    return TcpView(
        version, ip.src, ip.dst, ttl, ip.total_length, fragment, tcp.src_port, tcp.dst_port,
        tcp.seq, tcp.ack, tcp.flags, tcp.window, tcp.checksum, tcp.urgent, tcp.options,
        transport[tcp.header_len :],
    )  # fmt: skip
