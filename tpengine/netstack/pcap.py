"""A debug tracer: what passes the TUN, both directions, into a pcap file.

The file uses LINKTYPE_LINUX_SLL (113), the "cooked" header tcpdump writes for ``-i
any``, because it records the direction: packets the kernel sends into the TUN (our
reads) are ``OUTGOING`` (4), packets we write to it are ``HOST`` (0) — as tcpdump on the
TUN interface would show them. The virtio-net header is stripped; GSO packets appear as
the one large packet that crossed the TUN (its transport checksum is the partial sum
when the virtio header said NEEDS_CSUM — Wireshark flags it, like tcpdump on a real NIC
with offloads). Timestamps come from ``time.time()``: this is I/O, not protocol logic.

Switch it on with ``TunDevice.trace_to(path)`` or ``open_tun(..., pcap=path)``.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterable
from typing import BinaryIO, Final

__all__ = ["PcapTracer"]

_LINKTYPE_LINUX_SLL: Final = 113
_SNAPLEN: Final = 262144
_GLOBAL: Final = struct.Struct("=IHHiIII")  # pcap header, writer's byte order
_RECORD: Final = struct.Struct("=IIII")
_SLL: Final = struct.Struct("!HHH8sH")  # packet type, ARPHRD, addr len, addr, protocol
_ARPHRD_NONE: Final = 0xFFFE  # what a TUN device reports
_PACKET_HOST: Final = 0
_PACKET_OUTGOING: Final = 4
_VNET_HDR_LEN: Final = 10


class PcapTracer:
    """Append each packet crossing the TUN to a pcap file; ``close()`` when done."""

    def __init__(self, path: str | os.PathLike[str], *, vnet_hdr: bool = True) -> None:
        self.path = os.fspath(path)
        self._skip = _VNET_HDR_LEN if vnet_hdr else 0
        self._file: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._file.write(_GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, _SNAPLEN, _LINKTYPE_LINUX_SLL))
        self.packets = 0

    def _record(self, packets: Iterable[bytes | bytearray | memoryview], direction: int) -> None:
        if self._file is None:
            return
        now = time.time()
        sec, usec = int(now), int((now % 1) * 1_000_000)
        write = self._file.write
        for packet in packets:
            ip = memoryview(packet)[self._skip :]
            if not len(ip):
                continue
            proto = 0x86DD if ip[0] >> 4 == 6 else 0x0800
            length = len(ip) + _SLL.size
            write(_RECORD.pack(sec, usec, min(length, _SNAPLEN), length))
            write(_SLL.pack(direction, _ARPHRD_NONE, 0, b"", proto))
            write(ip[: _SNAPLEN - _SLL.size])
            self.packets += 1

    def read_from_tun(self, packets: Iterable[bytes | bytearray | memoryview]) -> None:
        """Packets the kernel sent (we read them)."""
        self._record(packets, _PACKET_OUTGOING)

    def written_to_tun(self, packets: Iterable[bytes | bytearray | memoryview]) -> None:
        """Packets we sent to the kernel."""
        self._record(packets, _PACKET_HOST)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
