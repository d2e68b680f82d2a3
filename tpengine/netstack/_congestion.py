"""Congestion control: RFC 5681 slow start and congestion avoidance with byte counting.

Loss recovery itself (which bytes to retransmit, the ``pipe`` estimate of RFC 6675) lives
in the endpoint; this object holds only ``cwnd`` and ``ssthresh`` and how they move.
"""

from __future__ import annotations


class CongestionControl:
    __slots__ = ("cwnd", "mss", "ssthresh")

    def __init__(self, mss: int, *, initial_window: int | None = None) -> None:
        self.mss = mss
        # RFC 6928: an initial window of ten segments
        self.cwnd = initial_window if initial_window is not None else 10 * mss
        self.ssthresh = 1 << 62  # (RFC 5681 §3.1: "arbitrarily high")

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def on_ack(self, acked: int) -> None:
        """New data was acknowledged outside loss recovery."""
        if acked <= 0:
            return
        if self.cwnd < self.ssthresh:
            # Slow start with appropriate byte counting (RFC 3465). The RFC caps the
            # growth per ACK at L*SMSS to tame bursts on real paths; behind a TUN the
            # kernel acknowledges whole 64 KB GSO segments, so we count every byte.
            self.cwnd += acked
        else:
            # Congestion avoidance: about one SMSS per RTT (RFC 5681 (3)), byte counted.
            self.cwnd += max(1, self.mss * min(acked, self.cwnd) // self.cwnd)

    def on_fast_loss(self, flight_size: int) -> None:
        """Entering fast recovery (RFC 5681 (4)/RFC 6675 §5 step 4.2)."""
        self.ssthresh = max(flight_size // 2, 2 * self.mss)
        self.cwnd = self.ssthresh

    def on_timeout(self, flight_size: int) -> None:
        """The retransmission timer expired: back to one segment (RFC 5681 (4), (5))."""
        self.ssthresh = max(flight_size // 2, 2 * self.mss)
        self.cwnd = self.mss

    def on_recovery_exit(self) -> None:
        """A full acknowledgment ends fast recovery (RFC 6582 §3.2 step 3)."""
        self.cwnd = self.ssthresh
