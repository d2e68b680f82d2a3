"""Every parser, fed whole, truncated at every length, with trailing junk, and fuzzed:
only MalformedPacket ever escapes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop

from tpengine.wire import (
    IcmpHeader,
    IPv4Header,
    IPv6Header,
    MalformedPacket,
    TcpHeader,
    TcpOptions,
    UdpHeader,
    VirtioNetHdr,
    build_destination_unreachable,
    build_icmp_echo_reply,
    build_icmp_packet,
    build_tcp_packet,
    build_udp_packet,
    parse_ip_packet,
    parse_tcp_options,
    parse_tcp_packet,
    transport_checksum_ok,
)

V4 = (bytes([10, 0, 0, 1]), bytes([10, 77, 0, 2]))
V6 = (
    bytes.fromhex("fd000000000000000000000000000001"),
    bytes.fromhex("fd770000000000000000000000000002"),
)
OPTS = TcpOptions(mss=1460, window_scale=7, sack_permitted=True, timestamps=(1, 2)).to_bytes()


def samples() -> list[bytes]:
    out: list[bytes] = []
    for src, dst in (V4, V6):
        out.append(
            bytes(
                build_tcp_packet(
                    src=src,
                    dst=dst,
                    src_port=1,
                    dst_port=2,
                    seq=3,
                    ack=4,
                    flags=2,
                    window=5,
                    options=OPTS,
                    payload=b"hello",
                )
            )
        )
        out.append(
            bytes(build_udp_packet(src=src, dst=dst, src_port=1, dst_port=2, payload=b"datagram"))
        )
        out.append(
            bytes(
                build_icmp_packet(
                    src=src,
                    dst=dst,
                    type=8 if len(src) == 4 else 128,
                    code=0,
                    rest=0x10002,
                    body=b"ping",
                )
            )
        )
    return out


SAMPLES = samples()


def _check_ip(packet: bytes) -> object:
    parsed = parse_ip_packet(packet)
    transport_checksum_ok(parsed)
    if parsed.protocol == 6:
        return TcpHeader.parse(parsed.transport).parsed_options()
    if parsed.protocol == 17:
        return UdpHeader.parse(parsed.transport)
    return IcmpHeader.parse(parsed.transport)


@pytest.mark.parametrize("packet", SAMPLES, ids=lambda p: f"{len(p)}B")
def test_whole_truncated_and_trailing_junk(packet: bytes) -> None:
    whole = parse_ip_packet(packet)
    assert transport_checksum_ok(whole)
    expected = _check_ip(packet)
    # Truncated at every length: the IP length fields catch it.
    for cut in range(len(packet)):
        with pytest.raises(MalformedPacket):
            _check_ip(packet[:cut])
    # Trailing junk (link padding) is ignored: same headers, same transport bytes.
    for junk in (b"\0", b"\xff" * 7, bytes(range(64))):
        padded = parse_ip_packet(packet + junk)
        assert padded.ip == whole.ip and bytes(padded.transport) == bytes(whole.transport)
        assert _check_ip(packet + junk) == expected


@pytest.mark.parametrize(
    ("parse", "data"),
    [
        (TcpHeader.parse, SAMPLES[0][20:60]),  # 20 bytes + 20 bytes of options
        (UdpHeader.parse, SAMPLES[1][20:]),
        (IcmpHeader.parse, SAMPLES[2][20:28]),
        (VirtioNetHdr.parse, bytes(range(10))),
    ],
    ids=["tcp", "udp", "icmp", "virtio"],
)
def test_transport_headers_truncated(parse: Callable[[bytes], object], data: bytes) -> None:
    for cut in range(len(data)):
        with pytest.raises(MalformedPacket):
            parse(data[:cut])
    assert parse(data) == parse(data + b"junk")


def test_tcp_options_malformed_lengths() -> None:
    for bad in (
        b"\x02",
        b"\x02\x00",
        b"\x02\x05\x05\xb4\x00",
        b"\x03\x02",
        b"\x08\x0a\x00",
        b"\x05\x03\x00",
        b"\x63\x01",
        b"\x63\x09ab",
    ):
        with pytest.raises(MalformedPacket):
            parse_tcp_options(bad)
    # NOPs, EOL and unknown options are fine; anything after EOL is ignored
    assert parse_tcp_options(b"\x01\x01\x63\x04ab\x00\x02\x00") == TcpOptions()


def test_ipv6_extension_headers_are_walked() -> None:
    inner = TCP(sport=1, dport=2, flags="S")
    packet = raw(
        IPv6(src="fd00::1", dst="fd77::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / inner
    )
    parsed = parse_ip_packet(packet)
    assert parsed.protocol == 6 and TcpHeader.parse(parsed.transport).dst_port == 2
    assert transport_checksum_ok(parsed)
    fragment = raw(IPv6(src="fd00::1", dst="fd77::2") / IPv6ExtHdrFragment() / inner)
    assert parse_ip_packet(fragment).protocol == 44  # not reassembled: the stack drops it


def test_ipv4_rejects_bad_version_and_ihl() -> None:
    good = bytearray(SAMPLES[0])
    for first in (0x65, 0x44, 0x4F):
        bad = bytearray(good)
        bad[0] = first
        with pytest.raises(MalformedPacket):
            IPv4Header.parse(bad)
    with pytest.raises(MalformedPacket):
        IPv6Header.parse(good + bytes(40))
    assert IP(bytes(good)).version == 4


PARSERS: list[Callable[[bytes], object]] = [
    lambda b: IPv4Header.parse(b),
    lambda b: IPv4Header.parse(b, verify_checksum=False),
    IPv6Header.parse,
    TcpHeader.parse,
    parse_tcp_options,
    UdpHeader.parse,
    IcmpHeader.parse,
    VirtioNetHdr.parse,
    _check_ip,
    lambda b: _check_ip(bytes(parse_ip_packet(b, verify_checksum=False).transport)),
    parse_tcp_packet,
    build_icmp_echo_reply,
    lambda b: build_destination_unreachable(b, code=3),
]


def _only_malformed(data: bytes) -> None:
    for parse in PARSERS:
        try:
            parse(data)
        except MalformedPacket:
            pass


@settings(max_examples=400)
@given(st.binary(max_size=120))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _only_malformed(data)


@settings(max_examples=300)
@given(
    st.sampled_from(SAMPLES),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_fuzz_mutated_valid_packets(packet: bytes, flips: list[tuple[int, int]]) -> None:
    mutated = bytearray(packet)
    for at, value in flips:
        mutated[at % len(mutated)] = value
    _only_malformed(bytes(mutated))
    # with a bad IPv4 header checksum ignored, deeper parsers still see the mutation
    _only_malformed(bytes(mutated)[20:])


@pytest.mark.parametrize("packet", SAMPLES, ids=lambda p: f"{len(p)}B")
def test_one_call_tcp_parse_agrees_with_the_layered_parse(packet: bytes) -> None:
    layered = parse_ip_packet(packet)
    if layered.protocol != 6:
        with pytest.raises(MalformedPacket, match="not TCP"):
            parse_tcp_packet(packet)
        return
    ip, tcp, payload = parse_tcp_packet(packet)
    assert ip == layered.ip
    assert tcp == TcpHeader.parse(layered.transport)
    assert bytes(payload) == bytes(layered.transport[tcp.header_len :])
    for cut in range(len(packet)):
        with pytest.raises(MalformedPacket):
            parse_tcp_packet(packet[:cut])
