"""``TcpSegment``: the parsed value the TCP endpoint consumes and produces.

It is a plain value with the header fields and options the endpoint understands; the
driver converts it from and to wire bytes with ``tpengine.wire``. Sequence and
acknowledgment numbers (and SACK block edges) are the 32-bit wire values; the window
is the 16-bit field as sent (scaled by the receiver, RFC 7323 §2.3).
"""

from __future__ import annotations

from dataclasses import dataclass

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20

_FLAG_NAMES = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "."), (URG, "U"))


@dataclass(slots=True, kw_only=True)
class TcpSegment:
    """One TCP segment (treat as immutable once built)."""

    src_port: int
    dst_port: int
    seq: int
    ack: int = 0
    flags: int = 0
    window: int = 0
    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    timestamps: tuple[int, int] | None = None
    payload: bytes | memoryview = b""

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies: payload plus one each for SYN and FIN."""
        return len(self.payload) + (self.flags & SYN != 0) + (self.flags & FIN != 0)

    def flag_names(self) -> str:
        return "".join(name for bit, name in _FLAG_NAMES if self.flags & bit) or "none"

    def __repr__(self) -> str:
        return (
            f"<TcpSegment {self.src_port}->{self.dst_port} [{self.flag_names()}] "
            f"seq={self.seq} ack={self.ack} win={self.window} len={len(self.payload)}>"
        )


def reset_for(segment: TcpSegment) -> TcpSegment | None:
    """The RST answering a segment that belongs to no connection (RFC 9293 §3.10.7.1).

    An RST is never answered. If the offending segment has an ACK, the reset takes its
    sequence number from that ACK; otherwise it has sequence 0 and acknowledges
    everything the segment occupied.
    """
    if segment.flags & RST:
        return None
    if segment.flags & ACK:
        return TcpSegment(
            src_port=segment.dst_port, dst_port=segment.src_port, seq=segment.ack, flags=RST
        )
    return TcpSegment(
        src_port=segment.dst_port,
        dst_port=segment.src_port,
        seq=0,
        ack=(segment.seq + segment.seg_len) & 0xFFFFFFFF,
        flags=RST | ACK,
    )
