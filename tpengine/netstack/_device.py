"""The driver's view of the TUN device: batched reads, non-blocking writes, an optional
pcap tracer, and counters. Wraps ``tun.TunDevice`` (the other side of the fd)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import trio

from .pcap import PcapTracer

_BATCH = 256
_NO_VNET = bytes(10)  # flags 0, GSO_NONE: a plain packet with complete checksums


@dataclass
class NetstackStats:
    """Counters a test or a benchmark can read (and ``tp status`` could show)."""

    packets_in: int = 0
    tcp_in: int = 0
    tcp_out: int = 0
    udp_in: int = 0
    malformed: int = 0
    bad_checksum: int = 0
    dropped: int = 0
    backlog_drops: int = 0
    resets_out: int = 0
    write_drops: int = 0
    internal_errors: int = 0


class Device:
    """Adapter from the stack to a TUN device (``fd``, ``vnet_hdr``, ``offloads``,
    ``mtu``, ``read_batch_nowait``, ``write_nowait``)."""

    def __init__(self, tun: Any, tracer: PcapTracer | None = None) -> None:
        self.tun = tun
        self.fd: int = tun.fd
        self.vnet_hdr: bool = bool(tun.vnet_hdr)
        offloads = getattr(tun, "offloads", None)
        # GSO writes need both families' TSO; partial checksums need only the vnet header.
        self.tso = bool(self.vnet_hdr and offloads is not None and offloads.tso4 and offloads.tso6)
        self.mtu: int = int(getattr(tun, "mtu", 1500))
        self.tracer = tracer
        self.stats = NetstackStats()
        self.closed = False

    @classmethod
    def wrap(cls, tun: Any, *, pcap: str | None = None) -> Device:
        tracer = None
        if pcap is not None:
            tracer = PcapTracer(pcap, vnet_hdr=bool(tun.vnet_hdr))
        return cls(tun, tracer)

    async def wait_readable(self) -> None:
        await trio.lowlevel.wait_readable(self.fd)

    def read_batch(self) -> list[bytes]:
        batch: list[bytes] = self.tun.read_batch_nowait(_BATCH)
        if self.tracer is not None:
            self.tracer.read_from_tun(batch)
        return batch

    def write_packet(self, packet: bytes | bytearray | memoryview) -> None:
        """Write one packet now. A full queue drops it: TCP retransmits, UDP may lose."""
        if self.tracer is not None:
            self.tracer.written_to_tun((packet,))
        try:
            if not self.tun.write_nowait(packet):
                self.stats.write_drops += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.stats.write_drops += 1  # refused (EINVAL) or the device is gone: never crash

    def write_vectored(self, header: bytearray, payload: bytes | memoryview) -> None:
        """Write one packet given as header and payload (writev, no joining copy)."""
        if self.closed:
            self.stats.write_drops += 1  # never write to an fd number that may be reused
            return
        if self.tracer is not None:
            self.tracer.written_to_tun((bytes(header) + bytes(payload),))
        try:
            os.writev(self.fd, (header, payload))
        except OSError:  # EAGAIN (full queue) or EINVAL (refused): drop and count
            self.stats.write_drops += 1

    def write_ip(self, packet: bytes | bytearray) -> None:
        """Write a whole IP packet built without a virtio-net header (ICMP and such)."""
        self.write_packet(_NO_VNET + packet if self.vnet_hdr else packet)

    def close(self) -> None:
        self.closed = True
        if self.tracer is not None:
            self.tracer.close()
