"""The virtio-net header and packets built for GSO/partial-checksum TUN writes."""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6

from tpengine.wire import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4,
    VIRTIO_NET_HDR_LEN,
    TcpFlags,
    VirtioNetHdr,
    build_tcp_packet,
    build_udp_packet,
    internet_checksum,
    pseudo_header_sum_v4,
    pseudo_header_sum_v6,
)

u16 = st.integers(0, 0xFFFF)


def test_layout_is_ten_bytes_host_order() -> None:
    # linux/virtio_net.h: flags u8, gso_type u8, then hdr_len, gso_size, csum_start,
    # csum_offset as __virtio16 (host order for a legacy TUN device).
    hdr = VirtioNetHdr(1, 1, 0x0102, 0x0304, 0x0506, 0x0708)
    buf = bytearray(VIRTIO_NET_HDR_LEN)
    assert hdr.emit(buf) == 10
    expected = b"\x01\x01" + b"".join(
        v.to_bytes(2, sys.byteorder) for v in (0x0102, 0x0304, 0x0506, 0x0708)
    )
    assert bytes(buf) == expected
    assert VirtioNetHdr.parse(expected + b"trailing packet") == hdr


@given(st.tuples(st.integers(0, 255), st.integers(0, 255), u16, u16, u16, u16))
def test_roundtrip(fields: tuple[int, int, int, int, int, int]) -> None:
    hdr = VirtioNetHdr(*fields)
    buf = bytearray(hdr.buffer_len())
    hdr.emit(buf)
    assert VirtioNetHdr.parse(buf) == hdr


def complete_checksum(packet: bytearray, hdr: VirtioNetHdr) -> bytes:
    """Do what the kernel does for NEEDS_CSUM: sum from csum_start to the end (the field
    holds the pseudo-header sum) and store the complement at csum_start + csum_offset."""
    at = hdr.csum_start + hdr.csum_offset
    csum = internet_checksum(packet[hdr.csum_start :])
    out = bytearray(packet)
    out[at : at + 2] = csum.to_bytes(2, "big")
    return bytes(out)


@settings(max_examples=60)
@given(
    v6=st.booleans(),
    payload=st.binary(max_size=3000),
    gso_size=st.sampled_from([0, 536, 1220, 1460]),
    udp=st.booleans(),
)
def test_partial_checksum_completes_to_the_real_one(
    v6: bool, payload: bytes, gso_size: int, udp: bool
) -> None:
    src, dst = (bytes(15) + b"\1", bytes(15) + b"\2") if v6 else (b"\x0a\0\0\1", b"\x0a\x4d\0\2")
    if udp:
        full = build_udp_packet(src=src, dst=dst, src_port=53, dst_port=5353, payload=payload)
        vnet = build_udp_packet(
            src=src,
            dst=dst,
            src_port=53,
            dst_port=5353,
            payload=payload,
            vnet=True,
            gso_size=gso_size,
        )
    else:
        args = dict(
            src=src,
            dst=dst,
            src_port=80,
            dst_port=40000,
            seq=9,
            ack=10,
            flags=TcpFlags.ACK,
            window=100,
            payload=payload,
        )
        full = build_tcp_packet(**args)  # type: ignore[arg-type]
        vnet = build_tcp_packet(**args, vnet=True, gso_size=gso_size)  # type: ignore[arg-type]
    hdr = VirtioNetHdr.parse(vnet)
    packet = vnet[VIRTIO_NET_HDR_LEN:]
    iphlen = 40 if v6 else 20
    l4hlen = 8 if udp else 20
    assert hdr.flags == VIRTIO_NET_HDR_F_NEEDS_CSUM
    assert (hdr.csum_start, hdr.csum_offset, hdr.hdr_len) == (
        iphlen,
        6 if udp else 16,
        iphlen + l4hlen,
    )
    if gso_size and len(payload) > gso_size:
        gso = (
            VIRTIO_NET_HDR_GSO_UDP_L4
            if udp
            else VIRTIO_NET_HDR_GSO_TCPV6
            if v6
            else VIRTIO_NET_HDR_GSO_TCPV4
        )
        assert (hdr.gso_type, hdr.gso_size) == (gso, gso_size)
    else:
        assert (hdr.gso_type, hdr.gso_size) == (VIRTIO_NET_HDR_GSO_NONE, 0)
    # the field holds the folded pseudo-header sum, not complemented
    field = int.from_bytes(packet[hdr.csum_start + hdr.csum_offset :][:2], "big")
    pseudo = pseudo_header_sum_v6 if v6 else pseudo_header_sum_v4
    assert field == pseudo(src, dst, 17 if udp else 6, len(packet) - iphlen)
    completed = complete_checksum(packet, hdr)
    if udp and completed[iphlen + 6 : iphlen + 8] == b"\0\0":
        completed = completed[: iphlen + 6] + b"\xff\xff" + completed[iphlen + 8 :]
    assert completed == bytes(full)
    theirs = (IPv6 if v6 else IP)(completed)
    assert raw(theirs) == completed
