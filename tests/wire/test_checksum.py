"""The Internet checksum against RFC 1071's example and a naive word-by-word model."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpengine.wire import (
    internet_checksum,
    ones_complement_sum,
    pseudo_header_sum_v4,
    pseudo_header_sum_v6,
)


def naive_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 §4.1, literally: add 16-bit words, fold carries back in."""
    if len(data) % 2:
        data += b"\0"
    total = initial
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_rfc1071_example() -> None:
    # RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2; the checksum is 0x220d.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_complement_sum(data) == 0xDDF2
    assert internet_checksum(data) == 0x220D


def test_rfc1071_checksum_over_checked_data_is_zero() -> None:
    data = bytes.fromhex("0001f203f4f5f6f7") + bytes.fromhex("220d")
    assert ones_complement_sum(data) == 0xFFFF
    assert internet_checksum(data) == 0


def test_zero_and_negative_zero() -> None:
    # All-zero data sums to +0, so its checksum is 0xFFFF; a word 0xFFFF sums to -0.
    assert ones_complement_sum(b"") == 0
    assert ones_complement_sum(bytes(8)) == 0
    assert internet_checksum(bytes(8)) == 0xFFFF
    assert ones_complement_sum(b"\xff\xff") == 0xFFFF
    assert internet_checksum(b"\xff\xff") == 0
    assert ones_complement_sum(b"\xff\xff\x00\x01") == 0x0001


def test_odd_length_pads_with_zero() -> None:
    assert ones_complement_sum(b"\x12") == 0x1200
    assert ones_complement_sum(b"\x00\x01\x02") == 0x0201


def test_known_ipv4_header() -> None:
    # A widely quoted example header (Wikipedia "IPv4 header checksum"): checksum 0xb861.
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert internet_checksum(header) == 0xB861


@given(st.binary(max_size=3000), st.integers(min_value=0, max_value=0x3FFFF))
def test_matches_naive_model(data: bytes, initial: int) -> None:
    assert ones_complement_sum(data, initial) == naive_sum(data, initial)
    assert internet_checksum(data, initial) == 0xFFFF - naive_sum(data, initial)


@given(
    st.binary(min_size=4, max_size=4),
    st.binary(min_size=4, max_size=4),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
)
def test_pseudo_header_v4(src: bytes, dst: bytes, proto: int, length: int) -> None:
    pseudo = src + dst + bytes([0, proto]) + length.to_bytes(2, "big")
    assert pseudo_header_sum_v4(src, dst, proto, length) == naive_sum(pseudo)


@given(
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=16, max_size=16),
    st.integers(0, 255),
    st.integers(0, 0xFFFFFFFF),
)
def test_pseudo_header_v6(src: bytes, dst: bytes, nh: int, length: int) -> None:
    # RFC 8200 §8.1: src, dst, 32-bit upper-layer length, 3 zero bytes, next header.
    pseudo = src + dst + length.to_bytes(4, "big") + bytes(3) + bytes([nh])
    assert pseudo_header_sum_v6(src, dst, nh, length) == naive_sum(pseudo)


@pytest.mark.parametrize(
    "size",
    [511, 512, 513, 514, 8191, 8192, 8193, 8194, 10241, 2048 * 5, 2048 * 5 + 1, 65535, 65536],
)
def test_piecewise_sum_at_its_boundaries(size: int) -> None:
    # word_sum cuts long inputs into pieces; every cut must keep 16-bit alignment
    data = random.Random(size).randbytes(size)
    assert ones_complement_sum(data) == naive_sum(data)
    assert ones_complement_sum(memoryview(data)) == naive_sum(data)
    ones = b"\xff" * size
    assert ones_complement_sum(ones) == naive_sum(ones)
    assert ones_complement_sum(bytes(size)) == 0
