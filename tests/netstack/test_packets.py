"""The driver's packet conversion: header-only builds match wire's whole-packet builder."""

from __future__ import annotations

import pytest

from tpengine import wire
from tpengine.netstack import ACK, PSH, TcpSegment
from tpengine.netstack._packets import options_bytes, segment_from_view, tcp_headers

V4 = (bytes([10, 77, 0, 1]), bytes([192, 0, 2, 1]))
V6 = (bytes.fromhex("fd77" + "00" * 13 + "05"), bytes.fromhex("fd000192" + "00" * 11 + "01"))


@pytest.mark.parametrize("addrs", [V4, V6])
@pytest.mark.parametrize("size,gso", [(3000, 1448), (65000, 1448), (1000, 0)])
def test_vectored_headers_equal_whole_packet(
    addrs: tuple[bytes, bytes], size: int, gso: int
) -> None:
    src, dst = addrs
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    seg = TcpSegment(
        src_port=80,
        dst_port=40000,
        seq=0xFFFFFF00,
        ack=12345,
        flags=ACK | PSH,
        window=512,
        timestamps=(1, 2),
        payload=payload,
    )
    whole = wire.build_tcp_packet(
        src=src,
        dst=dst,
        src_port=80,
        dst_port=40000,
        seq=seg.seq,
        ack=seg.ack,
        flags=seg.flags,
        window=seg.window,
        options=options_bytes(seg),
        payload=payload,
        vnet=True,
        gso_size=gso,
    )
    assert tcp_headers(seg, src, dst, size, gso) + payload == whole


def test_segment_round_trip_through_wire() -> None:
    seg = TcpSegment(
        src_port=1,
        dst_port=2,
        seq=3,
        ack=4,
        flags=ACK,
        window=5,
        mss=1460,
        wscale=7,
        sack_permitted=True,
        sack_blocks=((10, 20),),
        timestamps=(6, 7),
        payload=b"data",
    )
    packet = wire.build_tcp_packet(
        src=V4[0],
        dst=V4[1],
        src_port=1,
        dst_port=2,
        seq=3,
        ack=4,
        flags=ACK,
        window=5,
        options=options_bytes(seg),
        payload=b"data",
    )
    back = segment_from_view(wire.parse_tcp_view(bytes(packet)))
    assert back.mss == 1460 and back.wscale == 7 and back.sack_permitted
    assert back.sack_blocks == ((10, 20),) and back.timestamps == (6, 7)
    assert bytes(back.payload) == b"data"
