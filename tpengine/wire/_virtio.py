"""The virtio-net header a TUN device with IFF_VNET_HDR prepends to every packet.

Layout (virtio spec 1.x §5.1.6, ``struct virtio_net_hdr`` in linux/virtio_net.h): 10
bytes, flags u8, gso_type u8, hdr_len u16, gso_size u16, csum_start u16, csum_offset
u16. Legacy virtio (what TUN speaks unless TUNSETVNETLE/BE is set) uses the host's byte
order, hence ``=`` (native order, no padding).

With ``NEEDS_CSUM`` the transport checksum field holds only the folded pseudo-header sum
(not complemented): the full checksum is computed from ``csum_start`` and stored at
``csum_start + csum_offset`` by whoever segments or delivers — never verify it.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from ._checksum import Buffer
from ._errors import MalformedPacket

__all__ = [
    "VIRTIO_NET_HDR_F_DATA_VALID",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VIRTIO_NET_HDR_GSO_ECN",
    "VIRTIO_NET_HDR_GSO_NONE",
    "VIRTIO_NET_HDR_GSO_TCPV4",
    "VIRTIO_NET_HDR_GSO_TCPV6",
    "VIRTIO_NET_HDR_GSO_UDP",
    "VIRTIO_NET_HDR_GSO_UDP_L4",
    "VIRTIO_NET_HDR_LEN",
    "VirtioNetHdr",
]

VIRTIO_NET_HDR_LEN: Final = 10
VIRTIO_NET_HDR_F_NEEDS_CSUM: Final = 1
VIRTIO_NET_HDR_F_DATA_VALID: Final = 2
VIRTIO_NET_HDR_GSO_NONE: Final = 0
VIRTIO_NET_HDR_GSO_TCPV4: Final = 1
VIRTIO_NET_HDR_GSO_UDP: Final = 3  # UFO (legacy)
VIRTIO_NET_HDR_GSO_TCPV6: Final = 4
VIRTIO_NET_HDR_GSO_UDP_L4: Final = 5  # USO
VIRTIO_NET_HDR_GSO_ECN: Final = 0x80
_VNET: Final = struct.Struct("=BBHHHH")


class VirtioNetHdr(NamedTuple):
    """A parsed ``virtio_net_hdr`` (constants: ``VIRTIO_NET_HDR_*``, Linux's names)."""

    flags: int = 0
    gso_type: int = 0
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @classmethod
    def parse(cls, data: Buffer) -> VirtioNetHdr:
        """Parse the 10-byte header at the start of ``data``; the packet follows at 10."""
        if len(data) < VIRTIO_NET_HDR_LEN:
            raise MalformedPacket(f"virtio-net header: {len(data)} bytes, need 10")
        return cls(*_VNET.unpack_from(data, 0))

    @property
    def needs_csum(self) -> bool:
        return bool(self.flags & 1)

    @property
    def is_gso(self) -> bool:
        return (self.gso_type & 0x7F) != 0

    def buffer_len(self) -> int:
        return VIRTIO_NET_HDR_LEN

    def emit(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        _VNET.pack_into(
            buf,
            offset,
            self.flags,
            self.gso_type,
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        )
        return VIRTIO_NET_HDR_LEN
