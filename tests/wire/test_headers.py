"""Header-level emit/parse for IPv6, UDP, ICMP and IPv6 extension-header walking,
against scapy."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import ICMP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
)
from scapy.packet import Raw

from tpengine.wire import (
    IcmpHeader,
    IPv6Header,
    UdpHeader,
    ipv6_upper_layer,
    parse_ip_packet,
    transport_checksum_ok,
)

u16 = st.integers(0, 0xFFFF)
v6addr = st.binary(min_size=16, max_size=16)


@given(
    st.builds(
        IPv6Header,
        traffic_class=st.integers(0, 255),
        flow_label=st.integers(0, 0xFFFFF),
        payload_length=st.integers(0, 300),
        next_header=st.integers(0, 255),
        hop_limit=st.integers(0, 255),
        src=v6addr,
        dst=v6addr,
    )
)
def test_ipv6_header_emit_parse_and_scapy(header: IPv6Header) -> None:
    buf = bytearray(40 + header.payload_length)
    assert header.emit(buf) == header.buffer_len() == 40
    assert IPv6Header.parse(buf) == header
    theirs = IPv6(bytes(buf[:40]))
    assert (theirs.tc, theirs.fl, theirs.plen, theirs.nh, theirs.hlim) == (
        header.traffic_class,
        header.flow_label,
        header.payload_length,
        header.next_header,
        header.hop_limit,
    )


@given(st.builds(UdpHeader, src_port=u16, dst_port=u16, length=st.integers(8, 100), checksum=u16))
def test_udp_header_emit_parse_and_scapy(header: UdpHeader) -> None:
    buf = bytearray(header.length)
    header.emit(buf)
    assert UdpHeader.parse(buf) == header
    theirs = UDP(bytes(buf))
    assert (theirs.sport, theirs.dport, theirs.len, theirs.chksum) == tuple(header)


@given(
    st.builds(
        IcmpHeader,
        type=st.integers(0, 255),
        code=st.integers(0, 255),
        checksum=u16,
        rest=st.integers(0, 2**32 - 1),
    )
)
def test_icmp_header_emit_parse(header: IcmpHeader) -> None:
    buf = bytearray(header.buffer_len())
    header.emit(buf)
    assert IcmpHeader.parse(buf) == header
    if header.type in (0, 8):  # scapy names the echo fields
        echo = ICMP(bytes(buf))
        assert (echo.id, echo.seq) == (header.ident, header.sequence)


extension = st.sampled_from(["hop", "dest", "routing"])


@settings(max_examples=60)
@given(st.lists(extension, max_size=4), st.integers(0, 40), st.binary(max_size=64))
def test_ipv6_extension_chains_like_scapy(chain: list[str], pad: int, payload: bytes) -> None:
    # RFC 8200 §4.1 order does not matter to a walker; lengths do (§4.3–4.6).
    layers: Any = IPv6(src="fd00::1", dst="fd77::2")
    for kind in chain:
        options = [PadN(optdata=b"\0" * pad)] if pad else []
        if kind == "hop":
            layers = layers / IPv6ExtHdrHopByHop(options=options)
        elif kind == "dest":
            layers = layers / IPv6ExtHdrDestOpt(options=options)
        else:
            layers = layers / IPv6ExtHdrRouting(addresses=[])
    packet = raw(layers / UDP(sport=1, dport=2) / Raw(payload))
    header = IPv6Header.parse(packet)
    proto, offset = ipv6_upper_layer(packet, header)
    assert proto == 17
    # the walker lands exactly on the UDP header: ports 1 → 2, length covers the rest
    assert len(packet) - offset == 8 + len(payload)
    assert UdpHeader.parse(packet[offset:])[:3] == (1, 2, 8 + len(payload))
    parsed = parse_ip_packet(packet)
    assert bytes(parsed.transport[8:]) == payload
    assert transport_checksum_ok(parsed)
