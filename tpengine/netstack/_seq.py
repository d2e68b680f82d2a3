"""Sequence numbers inside the endpoint: unwrapped to unbounded integers.

On the wire a TCP sequence number is 32 bits and compares modulo 2**32 (RFC 9293 §3.4,
RFC 1982). Inside one connection the endpoint keeps every sequence number *unwrapped*:
an ordinary Python int counting bytes since the initial sequence number, so that all
comparisons are plain ``<`` and no arithmetic can wrap. A 32-bit value from a segment
is unwrapped to the int nearest a reference the endpoint already holds (``RCV.NXT``
for sequence numbers, ``SND.UNA`` for acknowledgments) — valid because every number a
correct peer sends lies within 2**31 of it (windows are at most 2**30, RFC 7323 §2.3).
QUIC unwraps packet numbers the same way (RFC 9000 §A.3).
"""

from __future__ import annotations

SEQ_MOD = 1 << 32
SEQ_MASK = SEQ_MOD - 1
_HALF = 1 << 31


def wrap(value: int) -> int:
    """The 32-bit wire value of an unwrapped sequence number."""
    return value & SEQ_MASK


def unwrap(wire: int, reference: int) -> int:
    """The unwrapped sequence number nearest ``reference`` whose low 32 bits are ``wire``."""
    delta = (wire - reference) & SEQ_MASK
    if delta >= _HALF:
        delta -= SEQ_MOD
    return reference + delta
