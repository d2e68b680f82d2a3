"""How long to wait before reconnecting a lost tunnel (the engine's and the agents').

Sans-IO: the caller says when the tunnel came up or was lost and asks for the next wait,
passing the time in. Waits start at ``first`` and double; during the first ``quick_for``
seconds of an outage they stay at or under ``quick_longest`` (a replaced manager pod is
back within seconds, and waiting longer than it takes only keeps the user waiting), then
grow to ``longest`` (an outage that lasts needs no retry every second).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(kw_only=True)
class ReconnectBackoff:
    first: float = 0.25
    longest: float = 5.0
    quick_longest: float = 1.0
    quick_for: float = 30.0
    _delay: float = field(default=0.0, init=False)
    _lost_at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._delay = self.first

    def connected(self) -> None:
        """The tunnel is up: the next outage starts from the shortest wait."""
        self._delay, self._lost_at = self.first, None

    def next_delay(self, now: float) -> float:
        """The wait before the next attempt (the outage started at the first call)."""
        if self._lost_at is None:
            self._lost_at = now
        delay = self._delay
        quick = now - self._lost_at < self.quick_for
        cap = min(self.quick_longest, self.longest) if quick else self.longest
        self._delay = min(delay * 2, cap)
        return delay
