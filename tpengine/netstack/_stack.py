"""The trio driver: one task reads the TUN in batches and runs every connection.

Loop (STYLE.md habit 1): wait until the TUN is readable or the earliest timer is due,
drain a batch of packets, feed each to its endpoint, fire due timers, then flush every
connection the batch touched (so the ACKs of a batch coalesce). Application calls on a
stream feed its endpoint directly and flush at once. There is one timer heap for all
connections (lazy entries: an entry counts only if it still equals the connection's
deadline), not a task per timer. Nothing here knows about Kubernetes: the engine sees
``PendingConnection``s with a destination and decides; UDP arrives as ``UdpFlow``s.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from tpengine import wire

from ._config import TcpConfig
from ._device import Device
from ._events import Closed, ConnectionReset, Established, Readable
from ._fragments import FragmentReassembler
from ._packets import segment_from_view, write_segment
from ._segment import ACK, FIN, RST, SYN, TcpSegment, reset_for
from ._state import TcpState
from ._stream import TcpStream
from ._tcp import TcpEndpoint
from ._udp import FlowKey, UdpFlowTable
from ._udp_flow import UdpFlow

_log = logging.getLogger("tpengine.netstack")

_SWEEP_AT = 1024  # timer entries before stale ones are swept out (see Netstack._arm)


ConnKey = tuple[bytes, int, bytes, int]  # (app addr, app port, destination addr, port)


def _stale(entry: tuple[float, int, ConnKey], conns: dict[ConnKey, Connection]) -> bool:
    """A timer entry of a closed connection, or one whose timer moved since."""
    conn = conns.get(entry[2])
    return conn is None or conn.deadline != entry[0]


def _addr(raw: bytes) -> str:
    """The text form of a 4- or 16-byte address (inet_ntop: RFC 5952 for IPv6)."""
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


@dataclass(frozen=True, kw_only=True)
class NetstackConfig:
    """Settings of the whole stack; ``tcp`` is the template for every connection."""

    tcp: TcpConfig = field(default_factory=TcpConfig)
    #: MSS to announce; None derives it from the TUN's MTU (``tcp.mss`` is ignored).
    mss: int | None = None
    #: SYNs parked for the engine at most; more are dropped (the kernel retries them).
    backlog: int = 1024
    udp_idle_timeout: float = 60.0
    udp_queue: int = 256
    #: Answer ICMP echo for every routed address. Off by default: a ping would then
    #: "reach" addresses that exist nowhere in the cluster.
    answer_ping: bool = False


class Connection:
    """The driver's record of one TCP connection."""

    __slots__ = ("deadline", "endpoint", "key", "pending", "stack", "stream")

    def __init__(self, stack: Netstack, key: ConnKey, endpoint: TcpEndpoint) -> None:
        self.stack = stack
        self.key = key
        self.endpoint = endpoint
        self.stream: TcpStream | None = None
        self.pending: PendingConnection | None = None
        self.deadline: float | None = None

    @property
    def source(self) -> tuple[str, int]:
        return (_addr(self.key[0]), self.key[1])

    @property
    def destination(self) -> tuple[str, int]:
        return (_addr(self.key[2]), self.key[3])

    def flush(self) -> None:
        self.stack._flush(self, trio.current_time())


class PendingConnection:
    """A SYN waiting for the engine: ``accept``, ``refuse`` or ``unreachable``, once."""

    def __init__(self, conn: Connection, syn_packet: bytes) -> None:
        self._conn = conn
        self._syn_packet = syn_packet
        self._decided = False
        self._established = trio.Event()

    def __repr__(self) -> str:
        return f"<PendingConnection {self.source} -> {self.destination}>"

    @property
    def source(self) -> tuple[str, int]:
        return self._conn.source

    @property
    def destination(self) -> tuple[str, int]:
        """Where the application wanted to go: the original destination."""
        return self._conn.destination

    def _decide(self) -> TcpEndpoint:
        if self._decided:
            raise RuntimeError("this pending connection was already decided")
        self._decided = True
        return self._conn.endpoint

    def _take_syn_packet(self) -> bytes:
        packet, self._syn_packet = self._syn_packet, b""
        return packet

    async def accept(self) -> TcpStream:
        """Complete the handshake; returns the stream once the peer's ACK arrived.

        Raises ``trio.BrokenResourceError`` if the peer gave up or the handshake failed.
        """
        ep = self._decide()
        if ep.state is not TcpState.PENDING:
            await trio.lowlevel.checkpoint()
            raise trio.BrokenResourceError("the peer abandoned the connection")
        self._take_syn_packet()  # only an ICMP error would quote it
        stream = TcpStream(self._conn)
        self._conn.stream = stream
        ep.accept(trio.current_time())
        self._conn.flush()
        try:
            await self._established.wait()
        except BaseException:
            stream.abort()  # cancelled: nobody will own this connection, reset it
            raise
        if ep.state is TcpState.CLOSED:
            # Only a failure closes it this early: our FIN waits for the stream's owner.
            raise trio.BrokenResourceError(ep.reset_reason or "the netstack closed")
        return stream

    def refuse(self) -> None:
        """The application sees "connection refused" (an RST answers its SYN)."""
        ep = self._decide()
        if ep.state is TcpState.PENDING:
            ep.refuse()
            self._conn.flush()

    def unreachable(self, *, port: bool = False) -> None:
        """ICMP destination unreachable (host, or port with ``port=True``) answers the SYN."""
        ep = self._decide()
        if ep.state is TcpState.PENDING:
            ep.unreachable()
            self._conn.stack._send_unreachable(self._take_syn_packet(), port=port)
            self._conn.flush()


class Netstack:
    """Use ``open_netstack``; this is what it yields."""

    def __init__(self, device: Device, config: NetstackConfig) -> None:
        self._dev = device
        self.config = config
        self.stats = device.stats
        self._conns: dict[ConnKey, Connection] = {}
        # (deadline, tie-breaker, key): an entry names its connection rather than
        # holding it, so a stale entry never keeps a closed connection alive.
        self._timers: list[tuple[float, int, ConnKey]] = []
        self._counter = itertools.count()
        self._dirty: dict[Connection, None] = {}
        self._wake_scope: trio.CancelScope | None = None
        self._pending_send, self._pending_recv = trio.open_memory_channel[PendingConnection](
            config.backlog
        )
        self._udp = UdpFlowTable(idle_timeout=config.udp_idle_timeout, max_queued=config.udp_queue)
        self._udp_send, self._udp_recv = trio.open_memory_channel[UdpFlow](config.backlog)
        self._udp_flows: dict[FlowKey, UdpFlow] = {}
        self._fragments = FragmentReassembler()
        tcp = config.tcp
        gso = device.tso and device.vnet_hdr
        # The MSS we announce follows the TUN's MTU (RFC 9293 §3.7.1: MTU minus the
        # fixed IP and TCP headers), unless the configuration asks for less.
        mss = config.mss
        self._tcp4 = replace(tcp, mss=min(mss or 0xFFFF, device.mtu - 40))
        self._tcp6 = replace(tcp, mss=min(mss or 0xFFFF, device.mtu - 60))
        if gso:
            payload = tcp.max_segment_payload or 65000
            self._tcp4 = replace(self._tcp4, max_segment_payload=payload)
            self._tcp6 = replace(self._tcp6, max_segment_payload=payload - 20)

    # ------------------------------------------------------------------ public surface

    def pending_connections(self) -> trio.MemoryReceiveChannel[PendingConnection]:
        """New TCP connections, each waiting for the engine's decision."""
        return self._pending_recv

    def udp_flows(self) -> trio.MemoryReceiveChannel[UdpFlow]:
        """New UDP conversations (5-tuples), each a datagram channel."""
        return self._udp_recv

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        dev = self._dev
        while True:
            deadline = self._next_deadline()
            with trio.CancelScope(deadline=deadline) as scope:
                self._wake_scope = scope
                await dev.wait_readable()
            self._wake_scope = None
            now = trio.current_time()
            for packet in dev.read_batch():
                self._input(packet, now)
            self._fire_timers(now)
            self._flush_dirty(now)

    def _next_deadline(self) -> float:
        timers, conns = self._timers, self._conns
        while timers and _stale(timers[0], conns):
            heapq.heappop(timers)
        deadline = timers[0][0] if timers else float("inf")
        udp = self._udp.get_timer()
        return min(deadline, udp) if udp is not None else deadline

    def _fire_timers(self, now: float) -> None:
        timers, conns = self._timers, self._conns
        while timers and timers[0][0] <= now:
            deadline, _, key = heapq.heappop(timers)
            conn = conns.get(key)
            if conn is None or conn.deadline != deadline:
                continue
            conn.deadline = None
            try:
                conn.endpoint.handle_timer(now)
            except Exception:
                self._internal_error(conn)
            self._dirty[conn] = None
        for flow in self._udp.expire(now):
            udp_flow = self._udp_flows.pop(flow.key, None)
            if udp_flow is not None:
                udp_flow._expired()

    def _flush_dirty(self, now: float) -> None:
        dirty = self._dirty
        self._dirty = {}
        for conn in dirty:
            try:
                self._flush(conn, now)
            except Exception:
                self._internal_error(conn)

    def _internal_error(self, conn: Connection) -> None:
        """A bug in one connection's processing: log it, reset that connection only."""
        self.stats.internal_errors += 1
        _log.exception("netstack: internal error on %s -> %s", conn.source, conn.destination)
        try:
            conn.endpoint.abort()
            self._flush(conn, trio.current_time())
        except Exception:
            self._forget(conn)
            if conn.stream is not None:
                conn.stream._wake()

    def _flush(self, conn: Connection, now: float) -> None:
        """Write what the endpoint has to send, dispatch its events, re-arm its timer."""
        ep = conn.endpoint
        self._write_segments(conn, now)
        if self._dispatch_events(conn, now):
            # Data went on at once: what the endpoint owes now (a window update) goes too.
            self._write_segments(conn, now)
        deadline = ep.get_timer()
        if deadline != conn.deadline:
            conn.deadline = deadline
            if deadline is not None:
                self._arm(conn, deadline)

    def _write_segments(self, conn: Connection, now: float) -> None:
        ep = conn.endpoint
        segments = ep.segments_to_send(now)
        if segments:
            src, dst = conn.key[2], conn.key[0]
            for seg in segments:
                write_segment(self._dev, seg, src, dst, ep.send_mss)
            self.stats.tcp_out += len(segments)

    def _arm(self, conn: Connection, deadline: float) -> None:
        """Queue ``conn``'s timer. A re-armed timer leaves its old entry in the heap
        (skipped when it comes up) and keepalive deadlines lie minutes ahead: when
        entries held their connection, every connection of the last ``keepalive_idle``
        seconds stayed in memory, closed or not (~4 KiB each, 400 MB after two minutes
        at 800 connections/s). Entries name the connection by key, and when stale ones
        outnumber live ones the heap is rebuilt from the live connections (amortised
        O(1) per arming), so it stays in proportion to the open connections."""
        timers = self._timers
        heapq.heappush(timers, (deadline, next(self._counter), conn.key))
        if len(timers) > _SWEEP_AT and len(timers) > 2 * len(self._conns):
            timers[:] = [
                (c.deadline, next(self._counter), c.key)
                for c in self._conns.values()
                if c.deadline is not None
            ]
            heapq.heapify(timers)
        scope = self._wake_scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline

    def _dispatch_events(self, conn: Connection, now: float) -> bool:
        """Hand the endpoint's events to its stream; returns whether data was handed on
        at once (``TcpStream.set_forward``)."""
        ep = conn.endpoint
        stream = conn.stream
        woke = readable = False
        while (event := ep.next_event()) is not None:
            if type(event) is Readable:
                readable = True
                continue
            woke = True
            if conn.pending is not None and isinstance(
                event, Established | Closed | ConnectionReset
            ):
                conn.pending._established.set()
                conn.pending = None
            if isinstance(event, ConnectionReset):
                _log.debug("tcp %s -> %s: %s", conn.source, conn.destination, event.reason)
            if isinstance(event, Closed) and self._conns.get(conn.key) is conn:
                del self._conns[conn.key]
                conn.deadline = None
        if stream is None:
            return False
        if woke:
            stream._wake()
        return readable and stream._hand_on(now)

    # ------------------------------------------------------------------ input

    def _input(self, packet: bytes, now: float) -> None:
        """One packet from the TUN. Bad input is counted and dropped, never raised."""
        self.stats.packets_in += 1
        try:
            base = 0
            partial = 0
            if self._dev.vnet_hdr:
                if len(packet) < wire.VIRTIO_NET_HDR_LEN:
                    raise wire.MalformedPacket("shorter than the virtio-net header")
                base = wire.VIRTIO_NET_HDR_LEN
                partial = packet[0] & wire.VIRTIO_NET_HDR_F_NEEDS_CSUM
            # The hot path: IPv4 TCP whose checksum is partial (the kernel's own TCP
            # through a vnet TUN), parsed flat in one call.
            if (
                partial
                and len(packet) > base + 9
                and packet[base] == 0x45  # IPv4 without IP options
                and packet[base + 9] == wire.PROTO_TCP
            ):
                view = wire.parse_tcp_view(packet, base)
                if not view.is_fragment:
                    self._input_tcp(view, packet, base, base + view.total_length, now)
                    return
            self._input_layered(memoryview(packet)[base:], partial, now)
        except wire.MalformedPacket:
            self.stats.malformed += 1
        except Exception:
            # A bug must not take every connection down with the loop: count it, log
            # it, drop the packet (tests assert the count stays zero).
            self.stats.internal_errors += 1
            _log.exception("netstack: internal error on an input packet")

    def _input_layered(self, raw: memoryview, partial: int, now: float) -> None:
        """Any IP packet: fragments reassembled, complete checksums verified."""
        ip = wire.parse_ip_packet(raw)
        if isinstance(ip.ip, wire.IPv4Header) and ip.ip.is_fragment:
            whole = self._reassemble(ip.ip, ip.transport, raw, now)
            if whole is None:
                return
            ip, raw = whole
        proto = ip.protocol
        # With NEEDS_CSUM the checksum field holds only the pseudo-header sum
        # (virtio spec §5.1.6.2): never verify it. Otherwise it is complete.
        if not partial and not wire.transport_checksum_ok(ip):
            self.stats.bad_checksum += 1
            return
        if proto == wire.PROTO_TCP:
            self._input_tcp(wire.tcp_view_of(ip), raw, 0, ip.ip.total_length, now)
        elif proto == wire.PROTO_UDP:
            self._input_udp(ip, raw, now)
        elif proto in (wire.PROTO_ICMP, wire.PROTO_ICMPV6):
            self._input_icmp(ip, raw)
        else:
            self.stats.dropped += 1

    def _reassemble(
        self, header: wire.IPv4Header, data: memoryview, raw: memoryview, now: float
    ) -> tuple[wire.IpPacket, memoryview] | None:
        """Feed an IPv4 fragment; the whole datagram (with its first fragment as the
        packet an ICMP error would quote) once complete (RFC 791 §3.2)."""
        key = (header.src, header.dst, header.protocol, header.identification)
        more = bool(header.flags & wire.IPV4_MF)
        offset = header.fragment_offset * 8
        packet = bytes(raw[: header.total_length]) if offset == 0 else b""
        done = self._fragments.add(key, offset, more, bytes(data), packet, now)
        if done is None:
            return None
        payload, first = done
        if not first:
            return None
        first_header = wire.IPv4Header.parse(first, verify_checksum=False)
        return wire.IpPacket(first_header, header.protocol, memoryview(payload)), memoryview(first)

    def _input_tcp(
        self, view: wire.TcpView, packet: bytes | memoryview, start: int, end: int, now: float
    ) -> None:
        """A TCP segment; ``packet[start:end]`` is its IP datagram (or first fragment),
        what an ICMP error about it quotes."""
        seg = segment_from_view(view)
        self.stats.tcp_in += 1
        key = (view.src, view.src_port, view.dst, view.dst_port)
        conn = self._conns.get(key)
        bare_syn = seg.flags & (SYN | ACK | RST | FIN) == SYN
        if conn is not None and bare_syn and conn.endpoint.state is TcpState.TIME_WAIT:
            # A new SYN may reuse a connection in TIME-WAIT (RFC 9293 §3.6.1, RFC 6191).
            self._forget(conn)
            conn = None
        if conn is None:
            if bare_syn:
                self._new_connection(key, seg, packet[start:end], now)
            else:
                self._answer_stray(seg, key)
            return
        try:
            conn.endpoint.receive(seg, now)
        except Exception:
            self._internal_error(conn)
        self._dirty[conn] = None

    def _new_connection(
        self, key: ConnKey, seg: TcpSegment, raw: bytes | memoryview, now: float
    ) -> None:
        if seg.dst_port == 0 or seg.src_port == 0:
            self.stats.dropped += 1
            return
        config = self._tcp4 if len(key[0]) == 4 else self._tcp6
        endpoint = TcpEndpoint(seg, iss=secrets.randbits(32), now=now, config=config)
        conn = Connection(self, key, endpoint)
        pending = PendingConnection(conn, bytes(raw))
        try:
            self._pending_send.send_nowait(pending)
        except trio.WouldBlock:
            self.stats.backlog_drops += 1  # like a full listen queue: the SYN is retried
            if self.stats.backlog_drops & 1023 == 1:
                _log.warning(
                    "netstack: %d pending connections, new SYNs dropped", self.config.backlog
                )
            return
        conn.pending = pending
        self._conns[key] = conn
        self._dirty[conn] = None  # arms its pending timeout

    def _answer_stray(self, seg: TcpSegment, key: ConnKey) -> None:
        """No such connection: RST (RFC 9293 §3.10.7.1), never to an RST."""
        rst = reset_for(seg)
        if rst is not None:
            write_segment(self._dev, rst, key[2], key[0], 0)
            self.stats.resets_out += 1

    def _forget(self, conn: Connection) -> None:
        if self._conns.get(conn.key) is conn:
            del self._conns[conn.key]
        conn.deadline = None

    def _send_unreachable(self, syn_packet: bytes, *, port: bool) -> None:
        """ICMP destination unreachable about ``syn_packet`` (an IP packet we received)."""
        v4 = syn_packet[0] >> 4 == 4
        if v4:
            code = wire.IcmpType.V4_PORT_UNREACHABLE if port else wire.IcmpType.V4_HOST_UNREACHABLE
        else:
            code = wire.IcmpType.V6_PORT_UNREACHABLE if port else wire.IcmpType.V6_ADDR_UNREACHABLE
        self._dev.write_ip(wire.build_destination_unreachable(syn_packet, code=code))

    def _input_udp(self, ip: wire.IpPacket, raw: memoryview, now: float) -> None:
        header = wire.UdpHeader.parse(ip.transport)
        payload = bytes(ip.transport[8 : header.length])
        key = (ip.ip.src, header.src_port, ip.ip.dst, header.dst_port)
        self.stats.udp_in += 1
        flow_state, new = self._udp.datagram_received(key, payload, now)
        flow_state.last_packet = bytes(raw[: ip.ip.total_length])
        if new:
            flow = UdpFlow(self, flow_state)
            try:
                self._udp_send.send_nowait(flow)
            except trio.WouldBlock:
                self._udp.remove(key)
                self.stats.dropped += 1
                return
            self._udp_flows[key] = flow
        else:
            existing = self._udp_flows.get(key)
            if existing is not None:
                existing._wake()

    def _input_icmp(self, ip: wire.IpPacket, raw: memoryview) -> None:
        # Answer pings to any routed address, as a real host on that network would.
        msg = ip.transport
        echo = wire.IcmpType.V4_ECHO_REQUEST if ip.protocol == wire.PROTO_ICMP else None
        if ip.protocol == wire.PROTO_ICMPV6:
            echo = wire.IcmpType.V6_ECHO_REQUEST
        if self.config.answer_ping and len(msg) >= 8 and msg[0] == echo:
            self._dev.write_ip(wire.build_icmp_echo_reply(raw[: ip.ip.total_length]))

    def _send_udp(self, key: FlowKey, payload: bytes) -> None:
        """A reply on a flow: from the flow's destination back to its source."""
        self._udp.touch(key, trio.current_time())
        self._dev.write_packet(
            wire.build_udp_packet(
                src=key[2],
                dst=key[0],
                src_port=key[3],
                dst_port=key[1],
                payload=payload,
                vnet=self._dev.vnet_hdr,
            )
        )

    def _shutdown(self) -> None:
        """Reset every connection still open so no application hangs on it."""
        now = trio.current_time()
        for conn in list(self._conns.values()):
            if conn.endpoint.state not in (TcpState.CLOSED, TcpState.TIME_WAIT):
                conn.endpoint.abort()
                try:
                    self._flush(conn, now)
                except OSError:
                    pass
            if conn.stream is not None:
                conn.stream._wake()
            if conn.pending is not None:
                conn.pending._established.set()
        self._conns.clear()
        for flow in self._udp_flows.values():
            flow._expired()
        self._pending_send.close()
        self._udp_send.close()


@asynccontextmanager
async def open_netstack(
    tun: Any, *, config: NetstackConfig | None = None, pcap: str | None = None
) -> AsyncIterator[Netstack]:
    """Run a netstack on ``tun`` (a ``TunDevice``) for the duration of the block.

    ``pcap`` names a file that records every packet through the TUN (debugging).
    """
    device = Device.wrap(tun, pcap=pcap)
    stack = Netstack(device, config or NetstackConfig())
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stack._run)
            try:
                yield stack
            finally:
                stack._shutdown()
                nursery.cancel_scope.cancel()
    finally:
        device.close()
