"""``parse_tcp_view`` (the netstack's one-call parse) against the layered parse and scapy;
the compiled-build guard; the checksum's byte loop against the big-integer sum."""

from __future__ import annotations

import struct
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt

from tpengine.wire import (
    IPv4Header,
    MalformedPacket,
    TcpOptions,
    TcpView,
    build_tcp_packet,
    parse_ip_packet,
    parse_tcp_packet,
    parse_tcp_view,
    tcp_view_of,
)
from tpengine.wire._checksum import sum_words, word_sum
from tpengine.wire._compiled import sources_digest

V4 = (bytes([10, 0, 0, 1]), bytes([10, 77, 0, 2]))
V6 = (
    bytes.fromhex("fd000000000000000000000000000001"),
    bytes.fromhex("fd770000000000000000000000000002"),
)
TS = TcpOptions(timestamps=(123456, 654321)).to_bytes()
SYN_OPTS = TcpOptions(mss=1460, window_scale=7, sack_permitted=True, timestamps=(1, 2)).to_bytes()


def _packet(addrs: tuple[bytes, bytes], options: bytes, payload: bytes) -> bytes:
    src, dst = addrs
    return bytes(
        build_tcp_packet(
            src=src,
            dst=dst,
            src_port=40000,
            dst_port=8080,
            seq=0xFFFFFFF0,
            ack=7,
            flags=0x18,
            window=512,
            options=options,
            payload=payload,
        )
    )


SAMPLES = [
    _packet(V4, b"", b""),
    _packet(V4, TS, bytes(range(200))),
    _packet(V4, SYN_OPTS, b"x"),
    _packet(V6, TS, b"hello"),
    raw(IP(src="10.0.0.1", dst="10.0.0.2", options=b"\x01\x01\x01\x00") / TCP() / b"ip opts"),
    raw(IPv6(src="fd00::1", dst="fd77::2") / IPv6ExtHdrDestOpt() / TCP(dport=9) / b"ext"),
]


def _expected(packet: bytes) -> tuple[object, ...]:
    """The view's fields as the layered parse sees them."""
    ip, tcp, payload = parse_tcp_packet(packet)
    v4 = isinstance(ip, IPv4Header)
    return (
        4 if v4 else 6,
        ip.src,
        ip.dst,
        ip.ttl if isinstance(ip, IPv4Header) else ip.hop_limit,
        ip.total_length,
        ip.flags_fragment if isinstance(ip, IPv4Header) else 0,
        *tcp[:8],
        tcp.options,
        bytes(payload),
    )


def _fields(view: TcpView) -> tuple[object, ...]:
    return (
        view.version,
        view.src,
        view.dst,
        view.ttl,
        view.total_length,
        view.flags_fragment,
        view.src_port,
        view.dst_port,
        view.seq,
        view.ack,
        view.flags,
        view.window,
        view.checksum,
        view.urgent,
        view.options,
        bytes(view.payload),
    )


@pytest.mark.parametrize("packet", SAMPLES, ids=lambda p: f"{len(p)}B")
def test_view_agrees_with_the_layered_parse(packet: bytes) -> None:
    want = _expected(packet)
    for form in (bytes, bytearray, memoryview):
        assert _fields(parse_tcp_view(form(packet))) == want
    # behind a prefix (a virtio-net header), with trailing junk (link padding)
    for prefix in (b"", bytes(10)):
        assert _fields(parse_tcp_view(prefix + packet + b"\xff" * 9, len(prefix))) == want
    assert parse_tcp_view(packet).parsed_options() == parse_tcp_packet(packet)[1].parsed_options()


@pytest.mark.parametrize("packet", SAMPLES, ids=lambda p: f"{len(p)}B")
def test_view_of_a_split_packet_is_the_same(packet: bytes) -> None:
    # the netstack's path for reassembled datagrams and complete checksums
    assert _fields(tcp_view_of(parse_ip_packet(packet))) == _fields(parse_tcp_view(packet))


def test_view_of_a_split_packet_refuses_other_protocols() -> None:
    udp = raw(IP(src="10.0.0.1", dst="10.0.0.2", proto=17) / b"12345678")
    with pytest.raises(MalformedPacket, match="not TCP"):
        tcp_view_of(parse_ip_packet(udp))


@pytest.mark.parametrize("packet", SAMPLES, ids=lambda p: f"{len(p)}B")
def test_view_truncated_at_every_length_is_malformed(packet: bytes) -> None:
    for cut in range(len(packet)):
        for data in (packet[:cut], bytes(10) + packet[:cut]):
            with pytest.raises(MalformedPacket):
                parse_tcp_view(data, len(data) - cut)


def test_view_checks_the_ipv4_header_checksum_and_the_protocol() -> None:
    bad = bytearray(SAMPLES[1])
    bad[8] ^= 1  # TTL changed, checksum not
    with pytest.raises(MalformedPacket, match="checksum"):
        parse_tcp_view(bytes(bad))
    assert parse_tcp_view(bytes(bad), verify_checksum=False).ttl == bad[8]
    udp = raw(IP(src="10.0.0.1", dst="10.0.0.2", proto=17) / b"12345678")
    with pytest.raises(MalformedPacket):
        parse_tcp_view(udp)


def test_view_fragment_flag() -> None:
    first = raw(IP(src="10.0.0.1", dst="10.0.0.2", flags="MF") / TCP() / b"x")
    assert parse_tcp_view(first).is_fragment
    assert not parse_tcp_view(SAMPLES[0]).is_fragment


@settings(max_examples=300)
@given(st.binary(max_size=100), st.integers(0, 12))
def test_view_fuzz_only_malformed(data: bytes, offset: int) -> None:
    for form in (bytes, bytearray):
        try:
            parse_tcp_view(form(data), min(offset, len(data)))
        except MalformedPacket:
            pass


@settings(max_examples=200)
@given(
    st.sampled_from(SAMPLES),
    st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_view_fuzz_mutated_matches_layered(packet: bytes, flips: list[tuple[int, int]]) -> None:
    mutated = bytearray(packet)
    for at, value in flips:
        mutated[at % len(mutated)] = value
    data = bytes(mutated)
    try:
        want: tuple[object, ...] | None = _expected(data)
    except MalformedPacket:
        want = None
    try:
        got: tuple[object, ...] | None = _fields(parse_tcp_view(data))
    except MalformedPacket:
        got = None
    assert got == want


@settings(max_examples=150)
@given(
    sport=st.integers(0, 0xFFFF),
    dport=st.integers(0, 0xFFFF),
    seq=st.integers(0, 0xFFFFFFFF),
    ack=st.integers(0, 0xFFFFFFFF),
    flags=st.integers(0, 0xFF),
    window=st.integers(0, 0xFFFF),
    ttl=st.integers(1, 255),
    payload=st.binary(max_size=64),
    tsval=st.integers(0, 0xFFFFFFFF),
)
def test_what_scapy_builds_the_view_reads(
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    ttl: int,
    payload: bytes,
    tsval: int,
) -> None:
    built = IP(src="10.1.2.3", dst="10.77.0.9", ttl=ttl) / TCP(
        sport=sport,
        dport=dport,
        seq=seq,
        ack=ack,
        flags=flags,
        window=window,
        options=[("NOP", None), ("NOP", None), ("Timestamp", (tsval, 5))],
    )
    packet = raw(built / payload)
    view = parse_tcp_view(packet)
    again = IP(packet)
    assert (view.src, view.dst) == (bytes([10, 1, 2, 3]), bytes([10, 77, 0, 9]))
    assert (view.ttl, view.total_length) == (ttl, again.len)
    assert (view.src_port, view.dst_port, view.seq, view.ack) == (sport, dport, seq, ack)
    assert (view.flags, view.window, view.checksum) == (flags, window, again[TCP].chksum)
    assert view.parsed_options().timestamps == (tsval, 5)
    assert bytes(view.payload) == payload


@settings(max_examples=200)
@given(st.binary(max_size=3000), st.integers(0, 40), st.integers(0, 40))
def test_byte_loop_sum_matches_the_big_integer_sum(data: bytes, head: int, tail: int) -> None:
    # sum_words is the compiled build's loop; here it may run interpreted: same result.
    start = min(head, len(data))
    end = max(start, len(data) - tail)
    piece = data[start:end]
    model = int.from_bytes(piece, "big") << (8 if len(piece) & 1 else 0)
    assert sum_words(data, start, end) % 0xFFFF == model % 0xFFFF
    assert word_sum(piece) % 0xFFFF == model % 0xFFFF
    words = struct.unpack(f"!{len(piece) // 2}H", piece[: len(piece) // 2 * 2])
    assert sum_words(data, start, end) == sum(words) + (piece[-1] << 8 if len(piece) & 1 else 0)


def test_a_stale_build_is_never_imported(tmp_path: Path) -> None:
    """A package whose sources changed after its build runs the sources; a current
    build is chosen. The "build" here is a file that cannot load: importing it fails."""
    wire = Path(__file__).resolve().parents[2] / "tpengine" / "wire" / "_compiled.py"
    pkg = tmp_path / "tpwpkg"
    pkg.mkdir()
    (pkg / "_compiled.py").write_bytes(wire.read_bytes())
    (pkg / "__init__.py").write_text(
        "from ._compiled import select_build\n"
        "COMPILED = select_build(__name__, __path__[0])\n"
        "from ._mod import VALUE\n"
    )
    (pkg / "_mod.py").write_text("VALUE = 'source'\n")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    (pkg / f"_native__mypyc{suffix}").write_bytes(b"not a library")
    (pkg / f"_mod{suffix}").write_bytes(b"not a library")
    probe = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("error")
        try:
            import tpwpkg
            print(tpwpkg.COMPILED, tpwpkg.VALUE)
        except (ImportError, Warning) as e:
            print(type(e).__name__)
        """
    )

    def run() -> str:
        argv = [sys.executable, "-c", probe]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    (pkg / ".mypyc-stamp").write_text("0123 python=x mypy=y\n")  # an older build
    assert run() == "False source"  # silently: no warning either
    (pkg / ".mypyc-stamp").write_text(sources_digest("tpwpkg", pkg) + " python=x mypy=y\n")
    assert run() == "ImportError"  # current: the build is what gets imported
