"""IPv4/IPv6 + TCP against scapy as the oracle, both directions."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from tpengine.wire import (
    IPV4_DF,
    IPv4Header,
    IPv6Header,
    MalformedPacket,
    TcpFlags,
    TcpHeader,
    TcpOptions,
    build_tcp_packet,
    parse_ip_packet,
    parse_tcp_options,
    transport_checksum_ok,
)

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
v4addr = st.binary(min_size=4, max_size=4)
v6addr = st.binary(min_size=16, max_size=16)
address_pair = st.one_of(st.tuples(v4addr, v4addr), st.tuples(v6addr, v6addr))
payloads = st.binary(max_size=1600)

ours_options = st.builds(
    TcpOptions,
    mss=st.none() | u16,
    window_scale=st.none() | st.integers(0, 255),
    sack_permitted=st.booleans(),
    sack_blocks=st.lists(st.tuples(u32, u32), max_size=4).map(tuple),
    timestamps=st.none() | st.tuples(u32, u32),
).filter(lambda o: _fits(o))


def _fits(options: TcpOptions) -> bool:
    try:
        return options.buffer_len() <= 40
    except ValueError:
        return False


def ip_of(address: bytes) -> str:
    return str(ipaddress.ip_address(address))


def scapy_options_to_ours(options: list[tuple[Any, Any]]) -> TcpOptions:
    """What our parser must make of a scapy option list: the last of each kind wins,
    unknown kinds are skipped, EOL ends the list."""
    fields: dict[str, Any] = {}
    for name, value in options:
        if name == "EOL":
            break
        if name == "MSS":
            fields["mss"] = value
        elif name == "WScale":
            fields["window_scale"] = value
        elif name == "SAckOK":
            fields["sack_permitted"] = True
        elif name == "Timestamp":
            fields["timestamps"] = tuple(value)
        elif name == "SAck":
            fields["sack_blocks"] = tuple(zip(value[::2], value[1::2], strict=True))
    return TcpOptions(**fields)


def _option_len(option: tuple[Any, Any]) -> int:
    name, value = option
    return {
        "NOP": 1,
        "EOL": 1,
        "MSS": 4,
        "WScale": 3,
        "SAckOK": 2,
        "Timestamp": 10,
    }.get(
        name,
        2 + (len(value) * 4 if name == "SAck" else len(value) if isinstance(value, bytes) else 0),
    )


scapy_option = st.one_of(
    st.tuples(st.just("NOP"), st.none()),
    st.tuples(st.just("MSS"), u16),
    st.tuples(st.just("WScale"), st.integers(0, 255)),
    st.tuples(st.just("SAckOK"), st.just(b"")),
    st.tuples(st.just("Timestamp"), st.tuples(u32, u32)),
    st.lists(u32, min_size=2, max_size=6)
    .filter(lambda v: len(v) % 2 == 0)
    .map(lambda v: ("SAck", tuple(v))),
    st.tuples(st.integers(40, 250), st.binary(max_size=4)),  # unknown kinds: skipped
)
scapy_options = st.lists(scapy_option, max_size=8).filter(
    lambda opts: sum(_option_len(o) for o in opts) <= 39
) | st.lists(scapy_option, max_size=4).map(lambda o: [*o, ("EOL", None)]).filter(
    lambda opts: sum(_option_len(o) for o in opts) <= 40
)


@settings(max_examples=150)
@given(
    addrs=address_pair,
    ports=st.tuples(u16, u16),
    seq=u32,
    ack=u32,
    flags=st.integers(0, 0xFF),
    window=u16,
    options=ours_options,
    payload=payloads,
    ttl=st.integers(1, 255),
)
def test_what_we_build_scapy_reads(
    addrs: tuple[bytes, bytes],
    ports: tuple[int, int],
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: TcpOptions,
    payload: bytes,
    ttl: int,
) -> None:
    src, dst = addrs
    packet = bytes(
        build_tcp_packet(
            src=src,
            dst=dst,
            src_port=ports[0],
            dst_port=ports[1],
            seq=seq,
            ack=ack,
            flags=flags,
            window=window,
            options=options.to_bytes(),
            payload=payload,
            ttl=ttl,
        )
    )
    layer = IP if len(src) == 4 else IPv6
    theirs = layer(packet)
    if layer is IP:
        assert (theirs.src, theirs.dst, theirs.ttl, theirs.proto) == (
            ip_of(src),
            ip_of(dst),
            ttl,
            6,
        )
        assert int(theirs.flags) == IPV4_DF and theirs.len == len(packet)
    else:
        assert (theirs.src, theirs.dst, theirs.hlim, theirs.nh) == (ip_of(src), ip_of(dst), ttl, 6)
        assert theirs.plen == len(packet) - 40
    tcp = theirs[TCP]
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack) == (ports[0], ports[1], seq, ack)
    assert (int(tcp.flags), tcp.window, tcp.urgptr) == (flags, window, 0)
    assert scapy_options_to_ours(tcp.options) == options
    assert bytes(tcp.payload) == payload
    # scapy recomputes every checksum to the same bytes
    del theirs[TCP].chksum
    if layer is IP:
        del theirs.chksum
    assert raw(layer(raw(theirs))) == packet


@settings(max_examples=150)
@given(
    addrs=address_pair,
    ports=st.tuples(u16, u16),
    seq=u32,
    ack=u32,
    flags=st.integers(0, 0xFF),
    window=u16,
    urgent=u16,
    options=scapy_options,
    payload=payloads,
    tos=st.integers(0, 255),
    ident=u16,
)
def test_what_scapy_builds_we_read(
    addrs: tuple[bytes, bytes],
    ports: tuple[int, int],
    seq: int,
    ack: int,
    flags: int,
    window: int,
    urgent: int,
    options: list[tuple[Any, Any]],
    payload: bytes,
    tos: int,
    ident: int,
) -> None:
    src, dst = addrs
    tcp = TCP(
        sport=ports[0],
        dport=ports[1],
        seq=seq,
        ack=ack,
        flags=flags,
        window=window,
        urgptr=urgent,
        options=options,
    )
    if len(src) == 4:
        ip_layer: Any = IP(src=ip_of(src), dst=ip_of(dst), tos=tos, id=ident)
    else:
        ip_layer = IPv6(src=ip_of(src), dst=ip_of(dst), tc=tos)
    packet = raw(ip_layer / tcp / Raw(payload))
    reference = ip_layer.__class__(packet)
    parsed = parse_ip_packet(packet)
    assert parsed.protocol == 6
    assert transport_checksum_ok(parsed)
    ip = parsed.ip
    assert (ip.src, ip.dst) == (src, dst)
    if isinstance(ip, IPv4Header):
        assert (ip.tos, ip.identification, ip.ttl, ip.checksum) == (
            tos,
            ident,
            reference.ttl,
            reference.chksum,
        )
        assert ip.total_length == len(packet) and ip.options == b""
    else:
        assert isinstance(ip, IPv6Header)
        assert (ip.traffic_class, ip.hop_limit, ip.payload_length) == (
            tos,
            reference.hlim,
            len(packet) - 40,
        )
    header = TcpHeader.parse(parsed.transport)
    ref_tcp = reference[TCP]
    assert header == TcpHeader(
        src_port=ports[0],
        dst_port=ports[1],
        seq=seq,
        ack=ack,
        flags=flags,
        window=window,
        checksum=ref_tcp.chksum,
        urgent=urgent,
        options=bytes(parsed.transport[20 : ref_tcp.dataofs * 4]),
    )
    assert header.header_len == ref_tcp.dataofs * 4
    assert parse_tcp_options(header.options) == scapy_options_to_ours(options)
    assert bytes(parsed.transport[header.header_len :]) == payload


@given(st.binary(max_size=40).filter(lambda b: len(b) % 4 == 0))
def test_tcp_header_emit_parse_roundtrip(options: bytes) -> None:
    header = TcpHeader(1, 2, 3, 4, TcpFlags.SYN | TcpFlags.ACK, 5, 6, 7, options)
    buf = bytearray(header.buffer_len())
    assert header.emit(buf) == len(buf)
    assert TcpHeader.parse(buf) == header


@given(
    st.builds(
        IPv4Header,
        tos=st.integers(0, 255),
        total_length=st.integers(60, 200),
        identification=u16,
        flags_fragment=u16,
        ttl=st.integers(0, 255),
        protocol=st.integers(0, 255),
        checksum=st.just(0),
        src=v4addr,
        dst=v4addr,
        options=st.binary(max_size=40).filter(lambda b: len(b) % 4 == 0),
    )
)
def test_ipv4_header_emit_parse_and_scapy(header: IPv4Header) -> None:
    buf = bytearray(header.total_length)
    header.emit(buf)
    parsed = IPv4Header.parse(buf)
    assert parsed._replace(checksum=0) == header
    theirs = IP(bytes(buf))
    assert (theirs.ihl * 4, theirs.len, theirs.id, theirs.frag) == (
        header.header_len,
        header.total_length,
        header.identification,
        header.fragment_offset,
    )
    assert (int(theirs.flags), theirs.chksum, theirs.proto) == (
        header.flags,
        parsed.checksum,
        header.protocol,
    )


def test_ipv4_bad_checksum_is_malformed() -> None:
    packet = bytearray(
        build_tcp_packet(
            src=bytes(4), dst=bytes(4), src_port=1, dst_port=2, seq=0, ack=0, flags=0, window=0
        )
    )
    packet[10] ^= 1
    try:
        IPv4Header.parse(packet)
    except MalformedPacket:
        pass
    else:
        raise AssertionError("a corrupted IPv4 header checksum was accepted")
    assert IPv4Header.parse(packet, verify_checksum=False).total_length == 40


def test_tcp_option_layout_matches_linux_syn() -> None:
    # Linux lays out SYN options as tcpdump prints them: "mss 1460,sackOK,TS val 1
    # ecr 0,nop,wscale 7" — SACK-permitted takes the place of the two NOPs before TS.
    options = TcpOptions(mss=1460, window_scale=7, sack_permitted=True, timestamps=(1, 0))
    assert options.to_bytes().hex() == "020405b40402080a000000010000000001030307"
    assert parse_tcp_options(options.to_bytes()) == options
