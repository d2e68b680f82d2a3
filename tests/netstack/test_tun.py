"""The TUN device against the real kernel, inside a throwaway network namespace."""

from __future__ import annotations

import os
import random
import socket
import sys
from pathlib import Path

import pytest
import trio
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import CookedLinux
from scapy.utils import rdpcap

from tests.netstack._netns import RawTcpPeer, in_netns, open_test_tun, run_in_netns
from tpengine.netstack.tun import TunDevice, TunError, create_tun, open_tun
from tpengine.wire import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4,
    VIRTIO_NET_HDR_LEN,
    TcpFlags,
    TcpHeader,
    VirtioNetHdr,
    build_udp_packet,
    parse_ip_packet,
)

pytestmark = pytest.mark.root

TIMEOUT = 20  # seconds: a hang fails the test instead of the suite


def pattern(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def kernel_send(netns: str, address: tuple[str, int], data: bytes) -> None:
    """A kernel TCP client inside the namespace that connects and sends ``data``."""
    with in_netns(netns):
        sock = socket.create_connection(address, timeout=TIMEOUT)
    with sock:
        sock.sendall(data)


def kernel_receive(netns: str, address: tuple[str, int], nbytes: int, out: list[bytes]) -> None:
    """A kernel TCP client inside the namespace that connects and reads ``nbytes``."""
    with in_netns(netns):
        sock = socket.create_connection(address, timeout=TIMEOUT)
    received = bytearray()
    with sock:
        while len(received) < nbytes:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += chunk
    out.append(bytes(received))


async def test_device_is_configured_with_offloads() -> None:
    async with open_test_tun(mtu=1500) as (tun, netns):
        assert tun.name == "tpn0" and tun.mtu == 1500
        assert tun.offloads.csum and tun.offloads.tso4 and tun.offloads.tso6
        link = await run_in_netns(netns, ["ip", "-o", "link", "show", "tpn0"], capture_stdout=True)
        assert b"mtu 1500" in link.stdout and b"UP" in link.stdout
        assert b"qlen 4096" in link.stdout  # 500 (the default) overflows under load
        route = await run_in_netns(netns, ["ip", "route", "get", "10.77.1.2"], capture_stdout=True)
        assert b"dev tpn0" in route.stdout and b"src 192.0.2.1" in route.stdout
        # the namespace has no other way out
        links = await run_in_netns(netns, ["ip", "-o", "link"], capture_stdout=True)
        assert sorted(line.split(b":")[1].strip() for line in links.stdout.splitlines()) == [
            b"lo",
            b"tpn0",
        ]
    assert not await trio.Path(f"/run/netns/{netns}").exists()


async def test_kernel_syn_is_read_with_virtio_header() -> None:
    async with open_test_tun() as (tun, netns):
        with in_netns(netns):  # socket() binds the namespace at creation
            client = socket.socket()
        client.setblocking(False)
        try:
            client.connect_ex(("10.77.0.2", 80))
            with trio.fail_after(TIMEOUT):
                while True:
                    for raw in await tun.read_batch():
                        vnet = VirtioNetHdr.parse(raw)
                        pkt = parse_ip_packet(memoryview(raw)[VIRTIO_NET_HDR_LEN:])
                        if pkt.protocol == 6:
                            break
                    else:
                        continue
                    break
        finally:
            client.close()
        syn = TcpHeader.parse(pkt.transport)
        assert (pkt.ip.src, pkt.ip.dst) == (bytes([192, 0, 2, 1]), bytes([10, 77, 0, 2]))
        assert syn.dst_port == 80 and syn.flags == TcpFlags.SYN
        # CSUM offload: the kernel left the checksum partial (virtio spec §5.1.6.2)
        assert (
            vnet.flags == VIRTIO_NET_HDR_F_NEEDS_CSUM and vnet.gso_type == VIRTIO_NET_HDR_GSO_NONE
        )
        assert (vnet.csum_start, vnet.csum_offset) == (20, 16)
        options = syn.parsed_options()
        assert options.mss == 1460 and options.sack_permitted and options.timestamps is not None
        assert options.window_scale is not None


async def test_tso_hands_over_segments_larger_than_the_mtu() -> None:
    data = pattern(1 << 20, seed=1)
    async with open_test_tun(mtu=1500) as (tun, netns), trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, kernel_send, netns, ("10.77.0.2", 5000), data)
        peer = RawTcpPeer(tun)
        received = bytearray()
        with trio.fail_after(TIMEOUT):
            await peer.accept()
            await peer.receive(len(data), received)
    assert received == data
    assert VIRTIO_NET_HDR_GSO_TCPV4 in peer.stats.gso_types
    assert peer.stats.largest_packet > 1500


async def test_gso_write_of_64000_bytes_reaches_a_kernel_socket() -> None:
    data = pattern(64000, seed=2)
    out: list[bytes] = []
    async with open_test_tun() as (tun, netns), trio.open_nursery() as nursery:
        nursery.start_soon(
            trio.to_thread.run_sync, kernel_receive, netns, ("10.77.0.3", 6000), len(data), out
        )
        peer = RawTcpPeer(tun)
        with trio.fail_after(TIMEOUT):
            await peer.accept()
            # one segment: the kernel's initial receive window (64240) takes it whole
            assert peer.peer_window >= len(data)
            await peer.send(data, segment=len(data))
    assert out == [data]


async def test_pcap_trace_is_readable_by_scapy(tmp_path: Path) -> None:
    trace = tmp_path / "tun.pcap"
    data = pattern(100_000, seed=3)
    async with open_test_tun(pcap=trace) as (tun, netns), trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, kernel_send, netns, ("10.77.0.4", 7000), data)
        peer = RawTcpPeer(tun)
        with trio.fail_after(TIMEOUT):
            await peer.accept()
            await peer.receive(len(data))
    packets = [p for p in rdpcap(str(trace)) if TCP in p]
    assert packets, "no TCP packets traced"
    first, second = packets[0], packets[1]
    assert isinstance(first, CookedLinux) and first.pkttype == 4  # the kernel's SYN: outgoing
    assert first[TCP].flags == "S" and first[IP].dst == "10.77.0.4"
    assert second.pkttype == 0 and second[TCP].flags == "SA"  # our SYN-ACK: to the host
    # the kernel's bytes, reassembled by sequence number: the big GSO packets are whole
    isn = first[TCP].seq
    by_offset = {
        p[TCP].seq - isn - 1: bytes(p[TCP].payload)
        for p in packets
        if p.pkttype == 4 and p[TCP].payload
    }
    stream = bytearray()
    for offset in sorted(by_offset):
        if offset <= len(stream):
            stream[offset:] = by_offset[offset]
    assert bytes(stream[: len(data)]) == data


async def test_errors_are_mapped() -> None:
    with pytest.raises(TunError, match="longer than 15"):
        create_tun("x" * 16)
    async with open_test_tun() as (tun, _):
        await tun.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await tun.read_batch()
        with pytest.raises(trio.ClosedResourceError):
            await tun.write(b"\0" * 30)


async def test_malformed_write_is_dropped_and_the_device_keeps_working() -> None:
    data = pattern(10_000, seed=4)
    async with open_test_tun() as (tun, netns), trio.open_nursery() as nursery:
        # a virtio header claiming GSO for a packet that is no TCP segment: EINVAL
        bogus = bytearray(VIRTIO_NET_HDR_LEN + 20)
        VirtioNetHdr(1, VIRTIO_NET_HDR_GSO_TCPV4, 40, 100, 20, 16).emit(bogus)
        await tun.write_batch([bogus, b"\0" * 5])
        await tun.write(bogus)
        assert tun.dropped_writes == 3
        nursery.start_soon(trio.to_thread.run_sync, kernel_send, netns, ("10.77.0.5", 8000), data)
        peer = RawTcpPeer(tun)
        received = bytearray()
        with trio.fail_after(TIMEOUT):
            await peer.accept()
            await peer.receive(len(data), received)
    assert received == data


async def test_uso_write_is_split_into_datagrams_for_a_kernel_socket() -> None:
    async with open_test_tun() as (tun, netns):
        if not tun.offloads.uso4:
            pytest.skip("this kernel has no USO (Linux < 6.2)")  # detected, not assumed
        with in_netns(netns):
            server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with server:
            server.bind(("192.0.2.1", 9999))
            server.setblocking(False)
            datagrams = [pattern(1000, seed=10 + i) for i in range(10)]
            packet = build_udp_packet(
                src=bytes([10, 77, 0, 9]),
                dst=bytes([192, 0, 2, 1]),
                src_port=53,
                dst_port=9999,
                payload=b"".join(datagrams),
                vnet=True,
                gso_size=1000,
            )
            assert VirtioNetHdr.parse(packet).gso_type == VIRTIO_NET_HDR_GSO_UDP_L4
            await tun.write(packet)
            received = []
            with trio.fail_after(TIMEOUT):
                while len(received) < len(datagrams):
                    await trio.lowlevel.wait_readable(server)
                    data, sender = server.recvfrom(65536)
                    assert sender == ("10.77.0.9", 53)
                    received.append(data)
    assert received == datagrams
    assert tun.dropped_writes == 0


async def test_ipv6_syn_and_tso6() -> None:
    data = pattern(300_000, seed=5)
    async with open_test_tun() as (tun, netns), trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, kernel_send, netns, ("fd77::2", 5000), data)
        peer = RawTcpPeer(tun)
        received = bytearray()
        with trio.fail_after(TIMEOUT):
            await peer.accept()
            await peer.receive(len(data), received)
    assert peer.kernel[0] == socket.inet_pton(socket.AF_INET6, "fd00:192::1")
    assert received == data
    assert VIRTIO_NET_HDR_GSO_TCPV6 in peer.stats.gso_types


async def test_wrapping_an_existing_fd() -> None:
    # what the engine does with the fd the privileged helper passes it
    async with open_test_tun() as (tun, _):
        dup = os.dup(tun.fd)
        other = TunDevice.from_fd(dup, offloads=tun.offloads)
        try:
            assert other.name == tun.name and other.offloads == tun.offloads
        finally:
            await other.aclose()
        # closing the duplicate leaves the original working
        assert isinstance(tun.read_batch_nowait(), list)
    with pytest.raises(TunError, match="not a TUN device"):
        TunDevice.from_fd(0, offloads=tun.offloads)


async def test_missing_dev_net_tun_is_explained() -> None:
    # a private mount namespace where /dev/net is an empty tmpfs: no /dev/net/tun
    script = (
        "from tpengine.netstack.tun import TunError, create_tun\n"
        "try:\n    create_tun('tpnx')\nexcept TunError as exc:\n    print(exc)\n"
    )
    result = await trio.run_process(
        ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs none /dev/net && exec "$0" -c "$1"']
        + [sys.executable, script],
        capture_stdout=True,
    )
    assert result.stdout.decode().strip() == (
        "cannot open /dev/net/tun: /dev/net/tun is missing: load the tun module (modprobe tun)"
    )


async def test_unknown_namespace_is_explained() -> None:
    with pytest.raises(TunError, match="network namespace 'tpn-missing' not found"):
        async with open_tun("tpnx", netns="tpn-missing"):
            pass  # pragma: no cover


async def test_everything_is_removed_also_on_failure() -> None:
    seen: list[str] = []
    with pytest.raises(RuntimeError, match="boom"):
        async with open_test_tun() as (tun, netns):
            seen.append(netns)
            raise RuntimeError("boom")
    assert not await trio.Path(f"/run/netns/{seen[0]}").exists()
    with pytest.raises(trio.ClosedResourceError):
        tun.read_batch_nowait()
