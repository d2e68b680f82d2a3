"""``tp loglevel``: the engine's log level raised (or lowered) for a while, then back.

Telepresence's levels are accepted (``trace`` is Python's DEBUG, ``warn`` WARNING); the
level returns to what the engine started with when the duration is over, so a session
left in debug over a weekend does not fill the disk.
"""

from __future__ import annotations

import logging
import math
import re

import trio

from tpengine.config import LEVELS

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


class LogLevelError(ValueError):
    """A level or duration that does not parse; the message says what would."""


def parse_level(text: str) -> int:
    try:
        return LEVELS[text.lower()]
    except KeyError:
        raise LogLevelError(f"unknown log level {text!r} (one of {', '.join(LEVELS)})") from None


def parse_duration(text: str) -> float:
    """Go's duration form as Telepresence takes it (``30m``, ``1h30m``, ``45s``); ``0``
    for until the engine stops."""
    if text == "0":
        return math.inf
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise LogLevelError(f"duration {text!r} is not like 30m, 1h30m or 45s (0: no end)")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600.0 + minutes * 60.0 + seconds


class LogLevel:
    """The root logger's level, set for a time; ``run`` puts the start level back."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger()
        self.default = self._logger.level
        self._until = math.inf
        self._changed = trio.Event()

    def set(self, level: int, duration: float) -> None:
        self._logger.setLevel(level)
        self._until = trio.current_time() + duration if level != self.default else math.inf
        self._changed.set()

    @property
    def current(self) -> str:
        return logging.getLevelName(self._logger.level).lower()

    async def run(self) -> None:
        while True:
            with trio.move_on_at(self._until):
                await self._changed.wait()
                self._changed = trio.Event()
                continue
            self._logger.setLevel(self.default)
            self._until = math.inf
