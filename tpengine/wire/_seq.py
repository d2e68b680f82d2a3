"""TCP sequence numbers: 32-bit serial numbers (RFC 9293 §3.4, RFC 1982).

``SeqNum`` compares modulo 2**32: ``a < b`` when ``b`` is ahead of ``a`` by less than
2**31. Adding an int wraps; subtracting two ``SeqNum`` gives the signed distance as an
int (``b - a`` is how many bytes ``b`` is ahead of ``a``); subtracting an int wraps.
Comparisons of numbers exactly 2**31 apart are undefined in RFC 1982; here they compare
as "less than" from the one with the larger raw value's perspective (never raises).
"""

from __future__ import annotations

from typing import overload

__all__ = ["SeqNum"]

_MASK = 0xFFFFFFFF
_HALF = 0x80000000


class SeqNum:
    """An immutable sequence number modulo 2**32."""

    __slots__ = ("_v",)

    _v: int

    def __init__(self, value: int) -> None:
        self._v = value & _MASK

    @property
    def value(self) -> int:
        """The raw 32-bit value, as on the wire."""
        return self._v

    def __int__(self) -> int:
        return self._v

    def __index__(self) -> int:
        return self._v

    def __repr__(self) -> str:
        return f"SeqNum({self._v})"

    def __hash__(self) -> int:
        return hash(self._v)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SeqNum):
            return self._v == other._v
        return NotImplemented

    def __add__(self, n: int) -> SeqNum:
        return SeqNum(self._v + n)

    def __radd__(self, n: int) -> SeqNum:
        return SeqNum(self._v + n)

    @overload
    def __sub__(self, other: SeqNum) -> int: ...
    @overload
    def __sub__(self, other: int) -> SeqNum: ...
    def __sub__(self, other: SeqNum | int) -> int | SeqNum:
        if isinstance(other, SeqNum):
            # signed distance in [-2**31, 2**31)
            return ((self._v - other._v + _HALF) & _MASK) - _HALF
        return SeqNum(self._v - other)

    def _dist(self, other: SeqNum) -> int:
        return ((self._v - other._v + _HALF) & _MASK) - _HALF

    def __lt__(self, other: SeqNum) -> bool:
        return self._dist(other) < 0

    def __le__(self, other: SeqNum) -> bool:
        return self._dist(other) <= 0

    def __gt__(self, other: SeqNum) -> bool:
        return self._dist(other) > 0

    def __ge__(self, other: SeqNum) -> bool:
        return self._dist(other) >= 0

    def in_window(self, start: SeqNum, size: int) -> bool:
        """``start <= self < start + size`` modulo 2**32 (RFC 9293 §3.10.7.4 test)."""
        return ((self._v - start._v) & _MASK) < size
