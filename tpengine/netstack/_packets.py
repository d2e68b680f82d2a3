"""Conversion between wire bytes (``tpengine.wire``) and ``TcpSegment``."""

from __future__ import annotations

import struct
from typing import Final

from tpengine import wire

from ._device import Device
from ._segment import TcpSegment

_TS_ONLY: Final = struct.Struct("!4sII")
_TS_PREFIX: Final = b"\x01\x01\x08\x0a"  # NOP NOP TIMESTAMPS(10), Linux's data layout
_VECTORED: Final = 2048  # payloads at least this large skip the copy into a packet


def segment_from_view(view: wire.TcpView) -> TcpSegment:
    """The ``TcpSegment`` of a parsed packet; the payload is a view into the packet."""
    seg = TcpSegment(
        src_port=view.src_port,
        dst_port=view.dst_port,
        seq=view.seq,
        ack=view.ack,
        flags=view.flags,
        window=view.window,
        payload=view.payload,
    )
    if view.options:
        opts = wire.parse_tcp_options(view.options)
        seg.mss = opts.mss
        seg.wscale = opts.window_scale
        seg.sack_permitted = opts.sack_permitted
        seg.sack_blocks = opts.sack_blocks
        seg.timestamps = opts.timestamps
    return seg


def options_bytes(seg: TcpSegment) -> bytes:
    ts = seg.timestamps
    if seg.mss is None and seg.wscale is None and not seg.sack_permitted and not seg.sack_blocks:
        if ts is None:
            return b""
        return _TS_ONLY.pack(_TS_PREFIX, ts[0], ts[1])  # the common case, no allocation
    return wire.TcpOptions(
        mss=seg.mss,
        window_scale=seg.wscale,
        sack_permitted=seg.sack_permitted,
        sack_blocks=seg.sack_blocks,
        timestamps=ts,
    ).to_bytes()


def tcp_headers(
    seg: TcpSegment, src: bytes, dst: bytes, payload_len: int, gso_size: int
) -> bytearray:
    """virtio-net + IP + TCP headers for a segment whose payload is written separately.

    The transport checksum is partial (NEEDS_CSUM: the pseudo-header sum only, virtio
    spec §5.1.6.2), so it does not depend on the payload; built with ``tpengine.wire``'s
    header emitters, byte for byte what ``wire.build_tcp_packet(vnet=True)`` makes.
    """
    options = options_bytes(seg)
    thlen = 20 + len(options)
    tcplen = thlen + payload_len
    v4 = len(src) == 4
    iphlen = 20 if v4 else 40
    buf = bytearray(wire.VIRTIO_NET_HDR_LEN + iphlen + thlen)
    gso_type = 0
    if gso_size and payload_len > gso_size:
        gso_type = wire.VIRTIO_NET_HDR_GSO_TCPV4 if v4 else wire.VIRTIO_NET_HDR_GSO_TCPV6
    wire.VirtioNetHdr(
        flags=wire.VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type=gso_type,
        hdr_len=iphlen + thlen,
        gso_size=gso_size if gso_type else 0,
        csum_start=iphlen,
        csum_offset=16,
    ).emit(buf, 0)
    o = wire.VIRTIO_NET_HDR_LEN
    if v4:
        wire.IPv4Header(0, iphlen + tcplen, 0, 0x4000, 64, wire.PROTO_TCP, 0, src, dst).emit(buf, o)
        partial = wire.pseudo_header_sum_v4(src, dst, wire.PROTO_TCP, tcplen)
    else:
        wire.IPv6Header(0, 0, tcplen, wire.PROTO_TCP, 64, src, dst).emit(buf, o)
        partial = wire.pseudo_header_sum_v6(src, dst, wire.PROTO_TCP, tcplen)
    wire.TcpHeader(
        seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window, partial, 0, options
    ).emit(buf, o + iphlen)
    return buf


def write_segment(dev: Device, seg: TcpSegment, src: bytes, dst: bytes, mss: int) -> None:
    """Build the packet for ``seg`` (GSO when it is larger than one MSS) and write it."""
    payload = seg.payload
    gso = mss if dev.tso and len(payload) > mss else 0
    if dev.vnet_hdr and len(payload) >= _VECTORED:
        # Large payloads are not copied into a packet buffer: headers and the send
        # buffer's view go to the TUN in one writev(2).
        dev.write_vectored(tcp_headers(seg, src, dst, len(payload), gso), payload)
        return
    packet = wire.build_tcp_packet(
        src=src,
        dst=dst,
        src_port=seg.src_port,
        dst_port=seg.dst_port,
        seq=seg.seq,
        ack=seg.ack,
        flags=seg.flags,
        window=seg.window,
        options=options_bytes(seg),
        payload=payload,
        vnet=dev.vnet_hdr,
        gso_size=gso,
    )
    dev.write_packet(packet)
