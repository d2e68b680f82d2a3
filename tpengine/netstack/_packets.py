"""Conversion between wire bytes (``tpengine.wire``) and ``TcpSegment``."""

from __future__ import annotations

import struct
from typing import Final

from tpengine import wire

from ._device import Device
from ._segment import TcpSegment

_TS_ONLY: Final = struct.Struct("!4sII")
_TS_PREFIX: Final = b"\x01\x01\x08\x0a"  # NOP NOP TIMESTAMPS(10), Linux's data layout


def segment_from_header(header: wire.TcpHeader, transport: memoryview) -> TcpSegment:
    """The ``TcpSegment`` of a parsed header; the payload is a view into the packet."""
    seg = TcpSegment(
        src_port=header.src_port,
        dst_port=header.dst_port,
        seq=header.seq,
        ack=header.ack,
        flags=header.flags,
        window=header.window,
        payload=transport[header.header_len :],
    )
    if header.options:
        opts = wire.parse_tcp_options(header.options)
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


def write_segment(dev: Device, seg: TcpSegment, src: bytes, dst: bytes, mss: int) -> None:
    """Build the packet for ``seg`` (GSO when it is larger than one MSS) and write it."""
    payload = seg.payload
    gso = mss if dev.tso and len(payload) > mss else 0
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
