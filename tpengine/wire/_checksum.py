"""The Internet checksum (RFC 1071) and the TCP/UDP/ICMPv6 pseudo-header sums.

Theory: the 16-bit one's-complement sum of a byte string equals the big-endian integer of
those bytes modulo 0xFFFF (because 0x10000 ≡ 1 mod 0xFFFF), except that one's-complement
arithmetic never yields 0 from a non-zero input — it yields 0xFFFF ("negative zero").
``(n - 1) % 0xFFFF + 1`` maps every n ≥ 1 into 1..0xFFFF with the right residue; n == 0
(all-zero input) stays 0. An odd length is padded with one zero byte (RFC 1071 §4.1),
i.e. the integer is shifted left by 8 bits. This is the fastest pure-Python form measured
(see reference/measurements.md): ~5 µs for 1.5 KB, ~220 µs for 64 KB — and
``word_sum`` below cuts the division cost further.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # only in annotations: mypyc makes it a native 64-bit int
    from mypy_extensions import i64

__all__ = [
    "internet_checksum",
    "ones_complement_sum",
    "pseudo_header_sum_v4",
    "pseudo_header_sum_v6",
]

Buffer = bytes | bytearray | memoryview

_CHUNK = 2048  # bytes per piece above 8 KB (even: pieces keep 16-bit alignment)


def _probe() -> None:
    pass


#: True when this module runs as mypyc-compiled code (``_build.py``): compiled functions
#: are not Python function objects. Picks the byte loops below, which are ~4× faster
#: than ``int.from_bytes`` compiled and ~50× slower interpreted.
NATIVE: Final = not isinstance(_probe, types.FunctionType)


def sum_words(data: bytes, start: int, end: int) -> int:
    """The sum of the 16-bit big-endian words of ``data[start:end]`` (odd length padded
    with a zero byte), unfolded: a plain loop, for the compiled build only."""
    s: i64 = 0
    i: i64 = start
    last: i64 = end - 1
    while i < last:
        s += (data[i] << 8) | data[i + 1]
        i += 2
    if i == last:
        s += data[i] << 8
    return s


def word_sum(data: Buffer) -> int:
    """An int congruent modulo 0xFFFF to the sum of ``data``'s 16-bit big-endian words
    (odd length padded with a zero byte), unfolded.

    ``n % 0xFFFF`` costs one hardware division per 30-bit digit of ``n`` — more than
    building ``n``. Cutting ``data`` into even-length pieces and adding their integers
    first (each piece's words keep their alignment, and 0x10000 ≡ 1 drops their
    positions) leaves a sum the size of one piece to divide: 1.3× faster at 1.5 KB,
    2.5× at 64 KB (measured; see benchmarks/bench_wire.py).
    """
    n = len(data)
    if NATIVE and type(data) is bytes:
        return sum_words(data, 0, n)
    fb = int.from_bytes
    if n <= 512:
        total = fb(data, "big")
        return total << 8 if n & 1 else total
    if n <= 8192:
        q = (n >> 3) << 1  # a quarter, even
        tail = fb(data[3 * q :], "big")
        return (
            fb(data[:q], "big")
            + fb(data[q : 2 * q], "big")
            + fb(data[2 * q : 3 * q], "big")
            + (tail << 8 if n & 1 else tail)
        )
    total = 0
    i = 0
    while i + _CHUNK < n:
        total += fb(data[i : i + _CHUNK], "big")
        i += _CHUNK
    tail = fb(data[i:], "big")
    return total + (tail << 8 if n & 1 else tail)


def ones_complement_sum(data: Buffer, initial: int = 0) -> int:
    """Folded 16-bit one's-complement sum of ``data`` plus ``initial`` (not complemented).

    ``initial`` is any non-negative int (typically a pseudo-header sum). The result is in
    0..0xFFFF and is 0 only when both ``data`` and ``initial`` are all zero.
    """
    n = word_sum(data) + initial
    if n == 0:
        return 0
    return (n - 1) % 0xFFFF + 1


def internet_checksum(data: Buffer, initial: int = 0) -> int:
    """The RFC 1071 checksum: one's complement of the one's-complement sum.

    A packet whose checksum field is correct sums (with its pseudo-header as ``initial``)
    to 0xFFFF, so ``internet_checksum(packet, pseudo) == 0`` verifies it.
    """
    return 0xFFFF - ones_complement_sum(data, initial)


def pseudo_header_sum_v4(src: bytes, dst: bytes, protocol: int, length: int) -> int:
    """One's-complement sum of the IPv4 pseudo-header (RFC 9293 §3.1, RFC 768).

    Returned folded (1..0xFFFF) and *not* complemented: that is also exactly the value a
    sender puts in the checksum field for a virtio-net NEEDS_CSUM (partial) checksum.
    """
    n = int.from_bytes(src, "big") + int.from_bytes(dst, "big") + protocol + length
    return (n - 1) % 0xFFFF + 1 if n else 0


def pseudo_header_sum_v6(src: bytes, dst: bytes, next_header: int, length: int) -> int:
    """One's-complement sum of the IPv6 pseudo-header (RFC 8200 §8.1), folded."""
    n = int.from_bytes(src, "big") + int.from_bytes(dst, "big") + next_header + length
    return (n - 1) % 0xFFFF + 1 if n else 0
