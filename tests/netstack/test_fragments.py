"""IPv4 fragment reassembly: any order, duplicates, holes, bounds, timeouts."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from tpengine.netstack._fragments import FragmentReassembler

KEY = (b"\xc0\x00\x02\x01", b"\x0a\x4d\x00\x35", 17, 4242)


def fragments(payload: bytes, size: int) -> list[tuple[int, bool, bytes]]:
    return [
        (off, off + size < len(payload), payload[off : off + size])
        for off in range(0, len(payload), size)
    ]


@given(st.binary(min_size=1, max_size=5000), st.integers(1, 200), st.randoms())
def test_any_order_with_duplicates_reassembles(
    payload: bytes, units: int, rng: random.Random
) -> None:
    frags = fragments(payload, units * 8)
    frags += rng.sample(frags, k=min(3, len(frags)))  # duplicates
    rng.shuffle(frags)
    r = FragmentReassembler()
    results = [
        r.add(KEY, off, more, data, b"first" if off == 0 else b"", 0.0) for off, more, data in frags
    ]
    done = [x for x in results if x is not None]
    # a duplicate after completion may start (and, if it is all there, finish) a copy:
    # UDP may deliver duplicates; what matters is that every result is the datagram
    assert done and all(x == (payload, b"first") for x in done)


def test_a_hole_waits_then_times_out() -> None:
    r = FragmentReassembler(timeout=30.0)
    payload = bytes(range(256)) * 10
    frags = fragments(payload, 800)
    for off, more, data in frags[:1] + frags[2:]:
        assert r.add(KEY, off, more, data, b"", 0.0) is None
    assert len(r) == 1
    r.add((b"x", b"y", 17, 1), 0, True, b"12345678", b"", 31.0)  # time passes
    assert len(r) == 1 and r.dropped == 1  # the incomplete one expired


def test_in_progress_datagrams_are_bounded() -> None:
    r = FragmentReassembler(max_datagrams=4)
    for ident in range(10):
        r.add((b"a", b"b", 17, ident), 0, True, b"12345678", b"", 0.0)
    assert len(r) == 4 and r.dropped == 6


def test_impossible_geometry_is_dropped() -> None:
    r = FragmentReassembler()
    assert r.add(KEY, 16, False, b"12345678", b"", 0.0) is None  # total = 24
    assert r.add(KEY, 32, True, b"12345678", b"", 0.0) is None  # beyond the end
    assert len(r) == 0 and r.dropped == 1
    assert r.add(KEY, 65528, False, b"12345678", b"", 0.0) is None  # past 64 KiB
