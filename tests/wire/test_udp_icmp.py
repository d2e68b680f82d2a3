"""UDP and ICMP/ICMPv6 against scapy, and the errors a stack sends (RFC 792, RFC 4443)."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPerror6,
    IPv6,
)
from scapy.packet import Raw

from tpengine.wire import (
    IcmpHeader,
    IcmpType,
    UdpHeader,
    build_destination_unreachable,
    build_icmp_echo_reply,
    build_tcp_packet,
    build_udp_packet,
    parse_ip_packet,
    transport_checksum_ok,
)

u16 = st.integers(0, 0xFFFF)
v4addr = st.binary(min_size=4, max_size=4)
v6addr = st.binary(min_size=16, max_size=16)
address_pair = st.one_of(st.tuples(v4addr, v4addr), st.tuples(v6addr, v6addr))


def ip_of(address: bytes) -> str:
    return str(ipaddress.ip_address(address))


@settings(max_examples=100)
@given(addrs=address_pair, ports=st.tuples(u16, u16), payload=st.binary(max_size=1500))
def test_udp_what_we_build_scapy_reads(
    addrs: tuple[bytes, bytes], ports: tuple[int, int], payload: bytes
) -> None:
    src, dst = addrs
    packet = bytes(
        build_udp_packet(src=src, dst=dst, src_port=ports[0], dst_port=ports[1], payload=payload)
    )
    layer: Any = IP if len(src) == 4 else IPv6
    theirs = layer(packet)
    udp = theirs[UDP]
    assert (theirs.src, theirs.dst) == (ip_of(src), ip_of(dst))
    assert (udp.sport, udp.dport, udp.len, bytes(udp.payload)) == (
        *ports,
        8 + len(payload),
        payload,
    )
    assert udp.chksum != 0  # RFC 768: a computed zero goes out as 0xFFFF
    del udp.chksum
    if layer is IP:
        del theirs.chksum
    assert raw(layer(raw(theirs))) == packet


@settings(max_examples=100)
@given(addrs=address_pair, ports=st.tuples(u16, u16), payload=st.binary(max_size=1500))
def test_udp_what_scapy_builds_we_read(
    addrs: tuple[bytes, bytes], ports: tuple[int, int], payload: bytes
) -> None:
    src, dst = addrs
    layer: Any = IP if len(src) == 4 else IPv6
    packet = raw(
        layer(src=ip_of(src), dst=ip_of(dst)) / UDP(sport=ports[0], dport=ports[1]) / Raw(payload)
    )
    parsed = parse_ip_packet(packet)
    assert parsed.protocol == 17 and transport_checksum_ok(parsed)
    header = UdpHeader.parse(parsed.transport)
    reference = layer(packet)[UDP]
    assert header == UdpHeader(ports[0], ports[1], 8 + len(payload), reference.chksum)
    assert bytes(parsed.transport[8 : header.length]) == payload


def test_udp_zero_checksum_means_none_on_ipv4_only() -> None:
    v4 = bytearray(
        build_udp_packet(src=bytes(4), dst=bytes(4), src_port=1, dst_port=2, payload=b"x")
    )
    v4[26:28] = b"\0\0"
    assert transport_checksum_ok(parse_ip_packet(v4))  # RFC 768: zero = no checksum
    v6 = bytearray(
        build_udp_packet(src=bytes(16), dst=bytes(16), src_port=1, dst_port=2, payload=b"x")
    )
    v6[46:48] = b"\0\0"
    assert not transport_checksum_ok(parse_ip_packet(v6))  # RFC 8200 §8.1: mandatory


@settings(max_examples=60)
@given(ident=u16, seq=u16, data=st.binary(max_size=1000), v6=st.booleans())
def test_echo_reply_answers_scapy_request(ident: int, seq: int, data: bytes, v6: bool) -> None:
    if v6:
        request = raw(
            IPv6(src="fd00::1", dst="fd00::2") / ICMPv6EchoRequest(id=ident, seq=seq, data=data)
        )
    else:
        request = raw(
            IP(src="10.0.0.1", dst="10.77.0.2") / ICMP(type=8, id=ident, seq=seq) / Raw(data)
        )
    reply = bytes(build_icmp_echo_reply(request))
    theirs: Any
    if v6:
        theirs = IPv6(reply)
        echo = theirs[ICMPv6EchoReply]
        assert (theirs.src, theirs.dst) == ("fd00::2", "fd00::1")
        assert (echo.id, echo.seq, bytes(echo.data)) == (ident, seq, data)
        checksum = echo.cksum
        del echo.cksum
    else:
        theirs = IP(reply)
        echo = theirs[ICMP]
        assert (theirs.src, theirs.dst) == ("10.77.0.2", "10.0.0.1")
        assert (echo.type, echo.id, echo.seq, bytes(echo.payload)) == (0, ident, seq, data)
        checksum = echo.chksum
        del echo.chksum
    # scapy recomputes the same checksum, and so does our verifier
    assert raw(theirs.__class__(raw(theirs))) == reply
    assert checksum == IcmpHeader.parse(parse_ip_packet(reply).transport).checksum
    assert transport_checksum_ok(parse_ip_packet(reply))


@settings(max_examples=40)
@given(payload=st.binary(max_size=1400), udp=st.booleans())
def test_port_unreachable_v4_quotes_offending_packet(payload: bytes, udp: bool) -> None:
    src, dst = bytes([10, 0, 0, 1]), bytes([10, 77, 0, 9])
    if udp:
        offending = bytes(
            build_udp_packet(src=src, dst=dst, src_port=5353, dst_port=53, payload=payload)
        )
    else:
        offending = bytes(
            build_tcp_packet(
                src=src,
                dst=dst,
                src_port=40000,
                dst_port=81,
                seq=7,
                ack=0,
                flags=2,
                window=512,
                payload=payload,
            )
        )
    error = bytes(build_destination_unreachable(offending, code=IcmpType.V4_PORT_UNREACHABLE))
    theirs = IP(error)
    icmp = theirs[ICMP]
    assert (theirs.src, theirs.dst) == ("10.77.0.9", "10.0.0.1")
    assert (icmp.type, icmp.code) == (3, 3)
    # RFC 792: the internet header plus at least 64 bits of the original data;
    # RFC 1812 §4.3.2.3: as much as fits in 576 bytes.
    assert len(error) == min(576, 28 + len(offending))
    quoted = bytes(icmp.payload)
    assert quoted == offending[: len(quoted)] and len(quoted) >= 28
    inner = theirs[IPerror]
    assert (inner.src, inner.dst) == ("10.0.0.1", "10.77.0.9")
    assert (inner[UDPerror].dport if udp else inner[TCPerror].dport) == (53 if udp else 81)
    assert transport_checksum_ok(parse_ip_packet(error))
    del icmp.chksum
    assert raw(IP(raw(theirs))) == error


def test_host_unreachable_v4() -> None:
    offending = raw(IP(src="10.0.0.1", dst="10.77.3.3") / TCP(dport=80, flags="S"))
    error = IP(
        bytes(
            build_destination_unreachable(
                offending, code=IcmpType.V4_HOST_UNREACHABLE, src=bytes([10, 77, 0, 1])
            )
        )
    )
    assert (error.src, error[ICMP].type, error[ICMP].code) == ("10.77.0.1", 3, 1)


@settings(max_examples=40)
@given(
    payload=st.binary(max_size=1500),
    code=st.sampled_from(
        [IcmpType.V6_PORT_UNREACHABLE, IcmpType.V6_ADDR_UNREACHABLE, IcmpType.V6_ADMIN_PROHIBITED]
    ),
)
def test_destination_unreachable_v6(payload: bytes, code: int) -> None:
    offending = raw(IPv6(src="fd00::1", dst="fd77::9") / UDP(sport=5353, dport=53) / Raw(payload))
    error = bytes(build_destination_unreachable(offending, code=code))
    theirs = IPv6(error)
    unreach = theirs[ICMPv6DestUnreach]
    assert (theirs.src, theirs.dst, unreach.code) == ("fd77::9", "fd00::1", code)
    # RFC 4443 §3.1: as much of the invoking packet as fits in the minimum MTU (1280)
    assert len(error) == min(1280, 48 + len(offending))
    quoted = raw(theirs[IPerror6])
    assert quoted == offending[: len(quoted)]
    assert transport_checksum_ok(parse_ip_packet(error))
    del unreach.cksum
    assert raw(IPv6(raw(theirs))) == error
