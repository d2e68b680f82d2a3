"""Retransmission timeout per RFC 6298, with Karn's rule left to the caller.

The caller only feeds samples that are unambiguous: from the timestamp echo (RFC 7323
§4.1, which names the transmission being acknowledged) or from a timed segment that was
never retransmitted (Karn, RFC 6298 §3).
"""

from __future__ import annotations


class RttEstimator:
    __slots__ = ("_base_rto", "backoffs", "granularity", "max_rto", "min_rto", "rttvar", "srtt")

    def __init__(
        self,
        *,
        initial_rto: float = 1.0,
        min_rto: float = 1.0,
        max_rto: float = 60.0,
        granularity: float = 0.001,
    ) -> None:
        self.min_rto = min_rto  # RFC 6298 (2.4) says 1 s; Linux uses 200 ms
        self.max_rto = max_rto  # (2.5): a maximum of at least 60 s
        self.granularity = granularity
        self.srtt: float | None = None
        self.rttvar = 0.0
        self._base_rto = initial_rto  # (2.1): 1 s before the first measurement
        self.backoffs = 0

    @property
    def rto(self) -> float:
        """The current timeout, exponentially backed off after expiries (RFC 6298 (5.5))."""
        return min(self._base_rto * (2**self.backoffs), self.max_rto)

    def sample(self, rtt: float) -> None:
        """Feed one round-trip measurement in seconds (RFC 6298 (2.2), (2.3))."""
        rtt = max(rtt, 0.0)
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            # alpha = 1/8, beta = 1/4; RTTVAR first, with the old SRTT (2.3)
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        rto = self.srtt + max(self.granularity, 4 * self.rttvar)
        self._base_rto = min(max(rto, self.min_rto), self.max_rto)  # (2.4), (2.5)
        self.backoffs = 0  # a new valid sample ends the backoff (5.7 / Karn)

    def back_off(self) -> None:
        """The retransmission timer expired: double the timeout (RFC 6298 (5.5))."""
        if self._base_rto * (2**self.backoffs) < self.max_rto:
            self.backoffs += 1
