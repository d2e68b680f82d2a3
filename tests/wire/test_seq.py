"""SeqNum: serial-number arithmetic modulo 2**32 (RFC 9293 §3.4, RFC 1982)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tpengine.wire import SeqNum

u32 = st.integers(min_value=0, max_value=2**32 - 1)
step = st.integers(min_value=-(2**31) + 1, max_value=2**31 - 1)


def test_wraps_on_add_and_subtract() -> None:
    assert SeqNum(2**32 - 1) + 1 == SeqNum(0)
    assert SeqNum(5) - 10 == SeqNum(2**32 - 5)
    assert (SeqNum(3) - SeqNum(2**32 - 2)) == 5
    assert (SeqNum(2**32 - 2) - SeqNum(3)) == -5
    assert int(SeqNum(2**32 + 7)) == 7


def test_compares_across_the_wrap() -> None:
    assert SeqNum(2**32 - 10) < SeqNum(5)
    assert SeqNum(5) > SeqNum(2**32 - 10)
    assert SeqNum(7) <= SeqNum(7) and SeqNum(7) >= SeqNum(7)
    assert SeqNum(0) < SeqNum(2**31 - 1)
    assert not SeqNum(0) < SeqNum(0)


def test_in_window() -> None:
    start = SeqNum(2**32 - 3)
    assert SeqNum(2**32 - 3).in_window(start, 10)
    assert SeqNum(6).in_window(start, 10)
    assert not SeqNum(7).in_window(start, 10)
    assert not SeqNum(2**32 - 4).in_window(start, 10)
    assert not SeqNum(0).in_window(SeqNum(0), 0)


@given(u32, step)
def test_distance_and_order_match_model(a: int, d: int) -> None:
    x, y = SeqNum(a), SeqNum(a + d)
    assert y - x == d
    assert x - y == -d
    assert (x < y) == (d > 0)
    assert (x > y) == (d < 0)
    assert (x == y) == (d == 0)
    assert x + d == y
    assert y - d == x
    assert hash(x + d) == hash(y)
