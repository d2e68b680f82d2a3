"""tp loglevel: Telepresence's levels and durations, and the level coming back."""

from __future__ import annotations

import logging
import math

import pytest
import trio
import trio.testing

from tpengine.engine._loglevel import LogLevel, LogLevelError, parse_duration, parse_level


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800.0), ("1h30m", 5400.0), ("45s", 45.0), ("0", math.inf)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "5 m", "1d", "-1m"])
def test_bad_durations_say_what_would_do(text: str) -> None:
    with pytest.raises(LogLevelError, match="is not like 30m"):
        parse_duration(text)


def test_levels() -> None:
    assert parse_level("TRACE") == logging.DEBUG
    assert parse_level("warn") == logging.WARNING
    with pytest.raises(LogLevelError, match="unknown log level 'loud'"):
        parse_level("loud")


async def test_the_start_level_returns_when_the_time_is_up(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    logger = logging.getLogger("tpengine.test.loglevel")
    logger.setLevel(logging.INFO)
    level = LogLevel(logger)
    nursery.start_soon(level.run)
    level.set(logging.DEBUG, 60.0)
    await trio.sleep(59)
    assert level.current == "debug"
    level.set(logging.DEBUG, 120.0)  # set again: the new duration counts
    await trio.sleep(100)
    assert level.current == "debug"
    await trio.sleep(30)
    assert level.current == "info"
