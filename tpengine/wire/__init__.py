"""tpengine.wire — sans-IO packet codecs.

IPv4, IPv6, TCP (with options), UDP, ICMP/ICMPv6, the Internet checksum and the
virtio-net header of an IFF_VNET_HDR TUN device. Every ``parse`` checks lengths before
reading a field and raises only :class:`MalformedPacket`; ``emit(buf, offset)`` writes
into a caller-supplied buffer of ``buffer_len()`` bytes; ``build_*_packet`` make a whole
packet with its checksums (or partial checksum and GSO) in one call.

Parsed values are immutable ``NamedTuple``s, not dataclasses: constructing one costs
~0.2 µs against ~3 µs for a frozen keyword-only dataclass, and the netstack parses every
packet. Addresses are raw ``bytes``; sequence numbers on the wire are ints, ``SeqNum``
does their modulo-2**32 arithmetic. Speed versus scapy: ``python -m benchmarks wire``.

``./dev`` compiles these modules with mypyc (``_build.py``); ``COMPILED`` says whether
this process runs that build (it is set aside when older than the sources).
"""

from ._compiled import select_build

COMPILED: bool = select_build(__name__, __path__[0])

# ruff: noqa: E402  (the build is chosen before any module of the package is imported)

from ._checksum import (
    internet_checksum,
    ones_complement_sum,
    pseudo_header_sum_v4,
    pseudo_header_sum_v6,
)
from ._errors import MalformedPacket
from ._ip import IPV4_DF, IPV4_MF, IPv4Header, IPv6Header, ipv6_upper_layer
from ._packet import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    IpPacket,
    build_destination_unreachable,
    build_icmp_echo_reply,
    build_icmp_packet,
    build_tcp_packet,
    build_udp_packet,
    emit_tcp_packet,
    emit_udp_packet,
    parse_ip_packet,
    parse_tcp_packet,
    tcp_packet_len,
    transport_checksum_ok,
    udp_packet_len,
)
from ._seq import SeqNum
from ._tcp import TcpFlags, TcpHeader, TcpOptions, parse_tcp_options
from ._udp_icmp import IcmpHeader, IcmpType, UdpHeader
from ._view import TcpView, parse_tcp_view, tcp_view_of
from ._virtio import (
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP,
    VIRTIO_NET_HDR_GSO_UDP_L4,
    VIRTIO_NET_HDR_LEN,
    VirtioNetHdr,
)

__all__ = [
    "COMPILED",
    "IPV4_DF",
    "IPV4_MF",
    "PROTO_ICMP",
    "PROTO_ICMPV6",
    "PROTO_TCP",
    "PROTO_UDP",
    "VIRTIO_NET_HDR_F_DATA_VALID",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VIRTIO_NET_HDR_GSO_ECN",
    "VIRTIO_NET_HDR_GSO_NONE",
    "VIRTIO_NET_HDR_GSO_TCPV4",
    "VIRTIO_NET_HDR_GSO_TCPV6",
    "VIRTIO_NET_HDR_GSO_UDP",
    "VIRTIO_NET_HDR_GSO_UDP_L4",
    "VIRTIO_NET_HDR_LEN",
    "IPv4Header",
    "IPv6Header",
    "IcmpHeader",
    "IcmpType",
    "IpPacket",
    "MalformedPacket",
    "SeqNum",
    "TcpFlags",
    "TcpHeader",
    "TcpOptions",
    "TcpView",
    "UdpHeader",
    "VirtioNetHdr",
    "build_destination_unreachable",
    "build_icmp_echo_reply",
    "build_icmp_packet",
    "build_tcp_packet",
    "build_udp_packet",
    "emit_tcp_packet",
    "emit_udp_packet",
    "internet_checksum",
    "ipv6_upper_layer",
    "ones_complement_sum",
    "parse_ip_packet",
    "parse_tcp_packet",
    "parse_tcp_view",
    "parse_tcp_options",
    "pseudo_header_sum_v4",
    "pseudo_header_sum_v6",
    "tcp_packet_len",
    "tcp_view_of",
    "transport_checksum_ok",
    "udp_packet_len",
]
