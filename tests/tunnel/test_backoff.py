"""Reconnect waits: quick for the first half minute of an outage, then longer."""

from __future__ import annotations

from tpengine.tunnel import ReconnectBackoff


def waits(backoff: ReconnectBackoff, start: float, count: int) -> list[float]:
    now, out = start, []
    for _ in range(count):
        delay = backoff.next_delay(now)
        out.append(delay)
        now += delay
    return out


def test_quick_then_long_and_reset_when_connected() -> None:
    backoff = ReconnectBackoff()
    assert waits(backoff, 100.0, 6) == [0.25, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert backoff.next_delay(131.0) == 1.0  # 31 s into the outage: growing again
    assert waits(backoff, 132.0, 3) == [2.0, 4.0, 5.0]
    backoff.connected()
    assert waits(backoff, 500.0, 3) == [0.25, 0.5, 1.0]


def test_a_shorter_longest_wait_caps_the_quick_phase_too() -> None:
    assert waits(ReconnectBackoff(longest=0.2), 0.0, 3) == [0.25, 0.2, 0.2]
