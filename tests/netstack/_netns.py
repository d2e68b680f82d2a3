"""Test helpers: a TUN device inside a throwaway network namespace, commands and
threads inside that namespace, and a hand-driven userspace TCP peer on the TUN.

``open_test_tun()`` makes a namespace named ``tpn-<random>`` (no link to the root
namespace: its only devices are ``lo`` and the TUN), creates the TUN inside it with
virtio-net headers and offloads, gives it ``192.0.2.1/32`` and ``fd00:192::1/128`` and
routes the test CIDRs (``10.77.0.0/16``, ``fd77::/64``) to it, and yields
``(TunDevice, netns_name)``. Everything is removed on exit, also on failure.

Kernel sockets for the other end live in the namespace: ``run_in_netns`` runs a command
there (``ip netns exec``), ``in_netns`` switches a worker thread into it (sockets made
inside stay in it).

``RawTcpPeer`` plays the userspace side of one kernel TCP connection with nothing but
tpengine.wire: it answers the SYN, ACKs what arrives (in order only; no SACK, no
timestamps) and sends with GSO within the kernel's window. It is the baseline for the
netstack and its test oracle, not a TCP implementation.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import trio

from tpengine.netstack.tun import TunDevice, open_tun, setns_thread
from tpengine.wire import (
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_LEN,
    MalformedPacket,
    TcpFlags,
    TcpHeader,
    TcpOptions,
    VirtioNetHdr,
    build_tcp_packet,
    parse_ip_packet,
)

__all__ = [
    "TEST_CIDR",
    "TEST_CIDR6",
    "TUN_ADDRESS",
    "RawTcpPeer",
    "in_netns",
    "open_test_netns",
    "open_test_tun",
    "run_in_netns",
]

TEST_CIDR = "10.77.0.0/16"
TEST_CIDR6 = "fd77::/64"
TUN_ADDRESS = "192.0.2.1"  # TEST-NET-1: the kernel's source address towards the TUN
TUN_ADDRESS6 = "fd00:192::1"

in_netns = setns_thread  # ``with in_netns(name): socket.create_connection(...)`` in a thread


async def _ip(*argv: str) -> None:
    await trio.run_process(["ip", *argv], stdout=subprocess.DEVNULL, capture_stderr=True)


@contextlib.asynccontextmanager
async def open_test_netns(prefix: str = "tpn-") -> AsyncIterator[str]:
    """A fresh, empty network namespace with ``lo`` up; deleted on exit."""
    name = f"{prefix}{secrets.token_hex(4)}"
    await _ip("netns", "add", name)
    try:
        await _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        with trio.CancelScope(shield=True):
            await trio.run_process(["ip", "netns", "del", name], check=False)


@contextlib.asynccontextmanager
async def open_test_tun(
    *,
    name: str = "tpn0",
    mtu: int = 1500,
    routes: Sequence[str] = (TEST_CIDR, TEST_CIDR6),
    uso: bool = True,
    offload: bool = True,
    pcap: str | os.PathLike[str] | None = None,
) -> AsyncIterator[tuple[TunDevice, str]]:
    """A TUN device (virtio-net headers, offloads) in a fresh namespace, routed to."""
    async with (
        open_test_netns() as netns,
        open_tun(
            name,
            netns=netns,
            mtu=mtu,
            addresses=(f"{TUN_ADDRESS}/32", f"{TUN_ADDRESS6}/128"),
            routes=routes,
            uso=uso,
            offload=offload,
            pcap=pcap,
        ) as tun,
    ):
        yield tun, netns


async def run_in_netns(
    netns: str, argv: Sequence[str], **kwargs: object
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` inside the namespace (``ip netns exec``); trio.run_process kwargs."""
    return await trio.run_process(["ip", "netns", "exec", netns, *argv], **kwargs)  # type: ignore[arg-type]


@dataclass
class PeerStats:
    packets: int = 0
    batches: int = 0
    largest_packet: int = 0
    gso_types: set[int] = field(default_factory=set)


class RawTcpPeer:
    """The userspace end of one TCP connection the kernel opens into the TUN."""

    WSCALE = 7
    WINDOW = 0xFFFF  # << WSCALE: an 8 MB receive window

    def __init__(self, tun: TunDevice, *, iss: int = 0x10000000, mss: int = 1460) -> None:
        self.tun = tun
        self.iss = iss
        self.mss = mss
        self.stats = PeerStats()
        self.kernel: tuple[bytes, int] = (b"", 0)
        self.us: tuple[bytes, int] = (b"", 0)
        self.rcv_nxt = 0
        self.snd_nxt = iss  # the SYN-ACK carries the ISS; data starts at ISS + 1
        self.snd_una = iss
        self.peer_window = 0
        self.peer_wscale = 0
        self.peer_mss = 536
        self.fin_received = False
        self._pending: list[tuple[VirtioNetHdr, TcpHeader, memoryview]] = []

    # -- plumbing --------------------------------------------------------------------

    def _segments(self, batch: list[bytes]) -> list[tuple[VirtioNetHdr, TcpHeader, memoryview]]:
        """Parse a batch, keeping TCP segments of our connection (or any SYN before it)."""
        out = []
        for raw in batch:
            self.stats.packets += 1
            self.stats.largest_packet = max(
                self.stats.largest_packet, len(raw) - VIRTIO_NET_HDR_LEN
            )
            try:
                vnet = VirtioNetHdr.parse(raw)
                pkt = parse_ip_packet(memoryview(raw)[VIRTIO_NET_HDR_LEN:])
                if pkt.protocol != 6:
                    continue  # IPv6 router solicitations, MLD reports…
                tcp = TcpHeader.parse(pkt.transport)
            except MalformedPacket:
                continue
            self.stats.gso_types.add(vnet.gso_type)
            if self.kernel[0]:
                if (pkt.ip.src, tcp.src_port) != self.kernel:
                    continue  # another connection (an earlier one still closing)
            elif tcp.flags & (TcpFlags.SYN | TcpFlags.ACK) == TcpFlags.SYN:
                # bind to the first SYN seen, not to leftovers of an earlier connection
                self.kernel, self.us = (pkt.ip.src, tcp.src_port), (pkt.ip.dst, tcp.dst_port)
            else:
                continue
            out.append((vnet, tcp, pkt.transport[tcp.header_len :]))
        return out

    def _packet(
        self, flags: int, payload: bytes | memoryview = b"", options: bytes = b""
    ) -> bytearray:
        return build_tcp_packet(
            src=self.us[0],
            dst=self.kernel[0],
            src_port=self.us[1],
            dst_port=self.kernel[1],
            seq=self.snd_nxt,
            ack=self.rcv_nxt,
            flags=flags,
            window=self.WINDOW,
            options=options,
            payload=payload,
            vnet=True,
            gso_size=self.peer_mss,
        )

    def _note_ack(self, tcp: TcpHeader) -> None:
        if tcp.flags & TcpFlags.ACK and ((tcp.ack - self.snd_una) & 0xFFFFFFFF) < 0x80000000:
            self.snd_una = tcp.ack
            # after a go-back, a late ACK may cover more than we now count as sent
            if ((self.snd_una - self.snd_nxt) & 0xFFFFFFFF) < 0x80000000:
                self.snd_nxt = self.snd_una
        self.peer_window = tcp.window << self.peer_wscale

    # -- the connection --------------------------------------------------------------

    async def accept(
        self, *, on_syn: Callable[[VirtioNetHdr, TcpHeader], None] | None = None
    ) -> None:
        """Wait for the kernel's SYN, answer SYN-ACK (MSS, window scale 7), and wait for
        the handshake's ACK."""
        syn: TcpHeader | None = None
        while syn is None:
            for vnet, tcp, _ in self._segments(await self.tun.read_batch()):
                if tcp.flags & (TcpFlags.SYN | TcpFlags.ACK) == TcpFlags.SYN:
                    syn = tcp
                    if on_syn is not None:
                        on_syn(vnet, tcp)
                    break
        options = syn.parsed_options()
        self.peer_mss = options.mss or 536
        self.peer_wscale = options.window_scale or 0
        self.rcv_nxt = (syn.seq + 1) & 0xFFFFFFFF
        ours = TcpOptions(mss=self.mss, window_scale=self.WSCALE).to_bytes()
        await self.tun.write(self._packet(TcpFlags.SYN | TcpFlags.ACK, options=ours))
        self.snd_nxt = (self.iss + 1) & 0xFFFFFFFF
        while self.snd_una != self.snd_nxt:
            segments = await self._next_segments()
            for i, (_, tcp, _) in enumerate(segments):
                if tcp.flags & TcpFlags.ACK and tcp.ack == self.snd_nxt:
                    self.snd_una = tcp.ack
                    self.peer_window = tcp.window << self.peer_wscale
                    # data may follow the handshake's ACK in the same batch
                    self._pending = segments[i + 1 :]
                    break

    async def _next_segments(
        self, max_packets: int = 256
    ) -> list[tuple[VirtioNetHdr, TcpHeader, memoryview]]:
        if self._pending:
            pending, self._pending = self._pending, []
            return pending
        return self._segments(await self.tun.read_batch(max_packets))

    async def receive(self, nbytes: int, sink: bytearray | None = None) -> int:
        """Take ``nbytes`` (or until FIN), one cumulative ACK per batch; segments after
        a hole (the TUN queue overflowed) wait until it is filled. Bytes go to ``sink``
        when given. Returns the count received."""
        got = 0
        ahead: dict[int, memoryview] = {}  # seq -> payload, beyond rcv_nxt
        while got < nbytes and not self.fin_received:
            segments = await self._next_segments()
            self.stats.batches += 1
            before = self.rcv_nxt
            for _, tcp, payload in segments:
                self._note_ack(tcp)
                if ((tcp.seq - self.rcv_nxt) & 0xFFFFFFFF) < 0x80000000 and tcp.seq != self.rcv_nxt:
                    if payload:
                        ahead[tcp.seq] = payload
                    continue
                got += self._take(tcp.seq, payload, sink)
                if (
                    tcp.flags & TcpFlags.FIN
                    and (tcp.seq + len(payload)) & 0xFFFFFFFF == self.rcv_nxt
                ):
                    self.rcv_nxt = (self.rcv_nxt + 1) & 0xFFFFFFFF
                    self.fin_received = True
            while ahead and self.rcv_nxt != before:
                before = self.rcv_nxt
                for seq in list(ahead):
                    if ((self.rcv_nxt - seq) & 0xFFFFFFFF) < 0x80000000:  # reached
                        got += self._take(seq, ahead.pop(seq), sink)
            if segments:
                await self.tun.write(self._packet(TcpFlags.ACK))
        return got

    def _take(self, seq: int, payload: memoryview, sink: bytearray | None) -> int:
        """Accept the part of ``payload`` (starting at ``seq`` <= rcv_nxt) that is new."""
        skip = (self.rcv_nxt - seq) & 0xFFFFFFFF
        if skip >= len(payload):
            return 0
        fresh = payload[skip:]
        self.rcv_nxt = (self.rcv_nxt + len(fresh)) & 0xFFFFFFFF
        if sink is not None:
            sink += fresh
        return len(fresh)

    async def send(
        self, data: bytes | memoryview, *, segment: int = 64000, total: int | None = None
    ) -> None:
        """Send ``data`` (repeated cyclically up to ``total`` bytes when given) in GSO
        segments of up to ``segment`` bytes within the kernel's advertised window;
        returns when all of it is acknowledged. Without progress for 200 ms it goes
        back to the first unacknowledged byte (go-back-N)."""
        view = memoryview(data)
        size = len(view) if total is None else total
        start = self.snd_nxt
        end = (start + size) & 0xFFFFFFFF
        while self.snd_una != end:
            sent = (self.snd_nxt - start) & 0xFFFFFFFF
            packets = []
            while sent < size:
                at = sent % len(view)
                in_flight = (self.snd_nxt - self.snd_una) & 0xFFFFFFFF
                usable = self.peer_window - in_flight
                if usable < min(self.peer_mss, size - sent):
                    break  # no silly windows (RFC 9293 §3.8.6.2.1)
                room = min(segment, usable, size - sent, len(view) - at)
                packets.append(self._packet(TcpFlags.ACK | TcpFlags.PSH, view[at : at + room]))
                self.snd_nxt = (self.snd_nxt + room) & 0xFFFFFFFF
                sent += room
            if packets:
                await self.tun.write_batch(packets)
            with trio.move_on_after(0.2) as idle:
                for _, tcp, _ in await self._next_segments():
                    self._note_ack(tcp)
            if idle.cancelled_caught:
                self.snd_nxt = self.snd_una
                # probe: a segment below the window makes the kernel answer with an ACK
                # carrying its current window (RFC 9293 §3.10.7.4), should an update
                # have been missed while the window was closed
                self.snd_nxt = (self.snd_una - 1) & 0xFFFFFFFF
                probe = self._packet(TcpFlags.ACK)
                self.snd_nxt = self.snd_una
                await self.tun.write(probe)

    def gso_seen(self) -> bool:
        return bool(self.stats.gso_types - {VIRTIO_NET_HDR_GSO_NONE})
