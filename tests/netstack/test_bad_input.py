"""Bad input never crashes the loop and never corrupts another connection.

Packets are injected into the TUN from inside the namespace with a packet socket bound
to the device (full control of every byte, IP header included): truncated, oversized,
wrong checksums, out-of-window and forged segments aimed at a live connection, scapy
crafted oddities and hypothesis-random bytes. A real kernel connection runs across all
of it and must deliver its bytes intact. A sans-IO fuzz feeds arbitrary segments to an
endpoint in every state.
"""

from __future__ import annotations

import hashlib
import socket
import struct
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP  # type: ignore[import-untyped]

from tests.netstack._netns import TUN_ADDRESS, in_netns, open_test_tun
from tests.netstack.tcp_peer import endpoint_in
from tpengine import wire
from tpengine.netstack import TcpSegment, TcpState, TcpStream, open_netstack

ETH_P_IP = 0x0800


def _good_tcp(src_port: int, dst: str, dport: int, seq: int, ack: int, flags: int) -> bytes:
    return bytes(
        wire.build_tcp_packet(
            src=socket.inet_aton(TUN_ADDRESS),
            dst=socket.inet_aton(dst),
            src_port=src_port,
            dst_port=dport,
            seq=seq,
            ack=ack,
            flags=flags,
            window=1000,
            payload=b"forged!",
        )
    )


def _crafted(src_port: int, dst: str, dport: int) -> list[bytes]:
    """A catalogue of bad packets, several aimed at the live connection's 4-tuple."""
    good = _good_tcp(src_port, dst, dport, 12345, 0, wire.TcpFlags.ACK)
    bad_csum = bytearray(good)
    bad_csum[-1] ^= 0xFF  # payload changed: the TCP checksum no longer matches
    oversized = bytearray(good)
    struct.pack_into("!H", oversized, 2, 4000)  # IP total length beyond the packet
    src = TUN_ADDRESS
    return [
        b"",
        b"\x45",
        good[:10],  # truncated IP header
        good[:24],  # truncated TCP header
        bytes(oversized),
        bytes(bad_csum),
        b"\x60" + bytes(39),  # IPv6 header claiming nothing
        b"\x75" + good[1:],  # IP version 7
        # forged segments for the live connection: far out of window, RST and SYN in
        # the middle of its window, an ACK for data never sent
        _good_tcp(src_port, dst, dport, 0x7FFFFFFF, 0, wire.TcpFlags.ACK),
        _good_tcp(src_port, dst, dport, 0x7FFFFFFF, 0, wire.TcpFlags.RST),
        _good_tcp(src_port, dst, dport, 0x12345678, 0, wire.TcpFlags.SYN),
        _good_tcp(src_port, dst, dport, 0, 0xDEADBEEF, wire.TcpFlags.ACK),
        # scapy: bad option lengths, a zero data offset, all flags, a UDP runt
        bytes(IP(src=src, dst=dst) / TCP(sport=src_port, dport=dport, options=[(3, b"")])),
        bytes(IP(src=src, dst=dst) / TCP(sport=src_port, dport=dport, dataofs=0)),
        bytes(IP(src=src, dst=dst) / TCP(sport=1, dport=dport, flags="FSRPAUEC")),
        bytes(IP(src=src, dst=dst) / TCP(sport=2, dport=dport, dataofs=15) / (b"x" * 3)),
        bytes(IP(src=src, dst=dst, frag=5) / TCP(sport=3, dport=dport)),
        bytes(IP(src=src, dst=dst) / UDP(sport=5, dport=53, len=4)),
        bytes(IP(src=src, dst=dst, proto=99) / b"unknown protocol"),
    ]


@pytest.mark.root
async def test_bad_packets_never_hurt_a_live_connection() -> None:
    size = 4 << 20
    upload = hashlib.sha256(b"seed").digest() * (size // 32)
    async with open_test_tun() as (tun, netns), open_netstack(tun) as stack:
        got: list[bytes] = []

        async def handle(stream: TcpStream) -> None:
            data = bytearray()
            async with stream:
                while chunk := await stream.receive_some():
                    data += chunk
                got.append(bytes(data))
                await stream.send_all(hashlib.sha256(data).digest())

        async def serve() -> None:
            async with trio.open_nursery() as nursery:
                async for pending in stack.pending_connections():
                    nursery.start_soon(_accept, pending, handle)

        def make(family: int, kind: int, proto: int = 0) -> socket.socket:
            with in_netns(netns):
                return socket.socket(family, kind, proto)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            client_sock = trio.socket.from_stdlib_socket(
                await trio.to_thread.run_sync(make, socket.AF_INET, socket.SOCK_STREAM)
            )
            await client_sock.connect(("10.77.4.4", 443))
            client = trio.SocketStream(client_sock)
            sport = client_sock.getsockname()[1]
            raw = await trio.to_thread.run_sync(
                make, socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP)
            )
            with raw:
                await client.send_all(upload[: size // 2])
                for packet in _crafted(sport, "10.77.4.4", 443) * 3:
                    if packet:
                        raw.sendto(packet, (tun.name, ETH_P_IP))
                    await trio.lowlevel.checkpoint()
                await client.send_all(upload[size // 2 :])
                await client.send_eof()
                digest = await client.receive_some(100)
            await client.aclose()
            nursery.cancel_scope.cancel()
    assert got == [upload]
    assert digest == hashlib.sha256(upload).digest()
    assert stack.stats.malformed > 0 and stack.stats.bad_checksum > 0
    assert stack.stats.internal_errors == 0


def _valid_ip_around(blob: bytes) -> bytes:
    """An IPv4 packet with correct IP and TCP/UDP checksums around random transport bytes,
    so the parser goes past the checksums into headers, options and the endpoints."""
    proto = (wire.PROTO_TCP, wire.PROTO_UDP, wire.PROTO_ICMP)[blob[0] % 3]
    body = bytearray(blob[1:])
    src, dst = socket.inet_aton(TUN_ADDRESS), bytes([10, 77, blob[0] % 4, 1])
    offset = {wire.PROTO_TCP: 16, wire.PROTO_UDP: 6, wire.PROTO_ICMP: 2}[proto]
    if len(body) >= offset + 2:
        body[offset : offset + 2] = b"\0\0"
        pseudo = wire.pseudo_header_sum_v4(src, dst, proto, len(body))
        if proto == wire.PROTO_ICMP:
            pseudo = 0
        struct.pack_into("!H", body, offset, wire.internet_checksum(body, pseudo))
    header = bytearray(20)
    wire.IPv4Header(0, 20 + len(body), 0, 0x4000, 64, proto, 0, src, dst).emit(header)
    return bytes(header) + bytes(body)


@pytest.mark.root
@settings(max_examples=3)
@given(st.lists(st.binary(min_size=1, max_size=120), min_size=50, max_size=150))
async def test_random_packets_never_crash_the_loop(packets: list[bytes]) -> None:
    async with open_test_tun() as (tun, netns), open_netstack(tun) as stack:

        def make() -> socket.socket:
            with in_netns(netns):
                return socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))

        async def echo(stream: TcpStream) -> None:
            async with stream:
                while data := await stream.receive_some():
                    await stream.send_all(data)

        async def serve() -> None:
            async with trio.open_nursery() as nursery:
                async for pending in stack.pending_connections():
                    nursery.start_soon(_accept, pending, echo)

        raw = await trio.to_thread.run_sync(make)
        before = stack.stats.packets_in
        deeper_before = stack.stats.tcp_in + stack.stats.udp_in
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            with raw:
                for packet in packets:
                    raw.sendto(_valid_ip_around(packet), (tun.name, ETH_P_IP))

            # the loop is alive and serves a new connection
            def make_tcp() -> socket.socket:
                with in_netns(netns):
                    return socket.socket()

            sock = trio.socket.from_stdlib_socket(await trio.to_thread.run_sync(make_tcp))
            await sock.connect(("10.77.0.1", 7))
            async with trio.SocketStream(sock) as stream:
                await stream.send_all(b"still alive")
                assert await stream.receive_some(100) == b"still alive"
            nursery.cancel_scope.cancel()
        assert stack.stats.packets_in - before >= len(packets)
        # the fuzz reaches past the checksums into the TCP and UDP handlers
        assert stack.stats.tcp_in + stack.stats.udp_in - deeper_before > 3
        assert stack.stats.internal_errors == 0


async def _accept(pending: Any, handler: Any) -> None:
    try:
        stream = await pending.accept()
    except trio.BrokenResourceError:
        return
    try:
        await handler(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


_segments = st.builds(
    TcpSegment,
    src_port=st.just(40000),
    dst_port=st.just(80),
    seq=st.integers(0, 2**32 - 1),
    ack=st.integers(0, 2**32 - 1),
    flags=st.integers(0, 0xFF),
    window=st.integers(0, 0xFFFF),
    sack_blocks=st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=4
    ).map(tuple),
    timestamps=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    payload=st.binary(max_size=64),
)


@settings(max_examples=150)
@given(
    st.sampled_from([s for s in TcpState if s is not TcpState.LISTEN]),
    st.lists(_segments, max_size=8),
)
def test_arbitrary_segments_in_any_state_only_ever_reset(
    state: TcpState, segments: list[TcpSegment]
) -> None:
    """Whatever arrives, the endpoint raises nothing and keeps its invariants."""
    ep, _ = endpoint_in(state)
    now = 1.0
    for seg in segments:
        ep.receive(seg, now)
        out = ep.segments_to_send(now)
        assert all(0 <= s.seq < 2**32 and 0 <= s.window <= 0xFFFF for s in out)
        timer = ep.get_timer()
        if timer is not None:
            now = max(now, timer)
            ep.handle_timer(now)
            ep.segments_to_send(now)
        assert ep.snd_una <= ep.snd_max
        assert ep.receive_buffered <= ep.config.receive_buffer
