"""The volume file protocol's codec: every op round-trips; malformed input is a
ProtocolViolation, never another exception (hypothesis)."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpengine.fs._protocol import (
    BIG_FRAME,
    MAX_FRAME,
    SCHEMAS,
    Attr,
    BadPath,
    FrameDecoder,
    Op,
    ProtocolViolation,
    Reply,
    Request,
    StatFs,
    encode_reply,
    encode_request,
    read_reply_header,
    split_path,
    write_request_header,
)

ATTR = Attr(
    mode=0o100644,
    nlink=1,
    uid=7777,
    gid=7777,
    size=5,
    blocks=8,
    atime_ns=1,
    mtime_ns=-2,
    ctime_ns=3,
)
STATFS = StatFs(
    bsize=4096, frsize=4096, blocks=10, bfree=5, bavail=4, files=100, ffree=50, namemax=255
)
SAMPLES = {"I": 7, "Q": 2**40, "q": -1, "b": b"etc/web/x", "d": b"data", "A": ATTR, "V": STATFS}


def sample(kind: str) -> object:
    if kind == "E":
        return [(b"a", ATTR), (b"b\xff", ATTR)]
    if kind == "D":
        return [(0, b"inline"), (1, b"")]
    return SAMPLES[kind]


def decode_all(data: bytes) -> list[Request | Reply]:
    decoder = FrameDecoder()
    decoder.feed(data)
    return list(decoder.frames())


@pytest.mark.parametrize("op", list(Op))
def test_every_op_round_trips_whole_and_byte_by_byte(op: Op) -> None:
    request_fields, reply_fields = SCHEMAS[op]
    args = tuple(sample(k) for k in request_fields)
    values = tuple(sample(k) for k in reply_fields)
    data = encode_request(9, op, *args) + encode_reply(9, op, 0, *values)
    data += encode_reply(10, op, 13)  # EACCES carries no fields
    expected = [
        Request(id=9, op=op, args=args),
        Reply(id=9, op=op, errno=0, values=values),
        Reply(id=10, op=op, errno=13),
    ]
    assert decode_all(data) == expected
    decoder = FrameDecoder()
    got: list[Request | Reply] = []
    for i in range(len(data)):
        decoder.feed(data[i : i + 1])
        got += decoder.frames()
    assert got == expected


def test_large_frames_decode_in_pieces_of_any_size_among_small_ones() -> None:
    rng = random.Random(8)
    big = rng.randbytes(BIG_FRAME * 3 + 17)
    data = (
        encode_request(1, Op.UNLINK, b"x")
        + read_reply_header(2, len(big))
        + big
        + encode_reply(3, Op.READ, 0, b"tail")
        + encode_request(4, Op.WRITE, 7, 0, big)
        + encode_reply(5, Op.WRITE, 0, len(big))
    )
    expected = [
        Request(id=1, op=Op.UNLINK, args=(b"x",)),
        Reply(id=2, op=Op.READ, errno=0, values=(big,)),
        Reply(id=3, op=Op.READ, errno=0, values=(b"tail",)),
        Request(id=4, op=Op.WRITE, args=(7, 0, big)),
        Reply(id=5, op=Op.WRITE, errno=0, values=(len(big),)),
    ]
    assert read_reply_header(2, len(big)) + big == encode_reply(2, Op.READ, 0, big)
    assert write_request_header(4, 7, 9, len(big)) + big == encode_request(4, Op.WRITE, 7, 9, big)
    for _ in range(20):
        decoder = FrameDecoder()
        got: list[Request | Reply] = []
        pos = 0
        while pos < len(data):
            step = rng.choice([1, 9, 1000, BIG_FRAME, 5 * BIG_FRAME])
            space = decoder.space()
            if space is not None and rng.random() < 0.5:  # as recv_into would
                step = min(step, len(space))
                space[:step] = data[pos : pos + step]
                decoder.filled(step)
            else:
                decoder.feed(data[pos : pos + step])
            got += decoder.frames()
            pos += step
        assert got == expected


def test_trailing_bytes_in_a_frame_are_a_violation() -> None:
    frame = bytearray(encode_request(1, Op.UNLINK, b"x"))
    frame += b"junk"
    struct.pack_into(">I", frame, 0, len(frame) - 4)
    with pytest.raises(ProtocolViolation, match="after the fields"):
        decode_all(bytes(frame))
    big = bytearray(encode_reply(2, Op.READ, 0, bytes(BIG_FRAME)))
    struct.pack_into(">I", big, 11, BIG_FRAME - 1)  # the data field one byte short
    with pytest.raises(ProtocolViolation, match="after the fields"):
        decode_all(bytes(big))


def test_oversized_and_unknown_frames_are_violations() -> None:
    with pytest.raises(ProtocolViolation, match="length"):
        decode_all(struct.pack(">IBI", MAX_FRAME + 1, 1, 1))
    with pytest.raises(ProtocolViolation, match="unknown op"):
        decode_all(struct.pack(">IBI", 5, 99, 1))


def test_paths_with_dot_dot_or_empty_parts_are_refused() -> None:
    assert split_path(b"") == ()
    assert split_path(b"etc/web") == (b"etc", b"web")
    for bad in (b"..", b"etc/../x", b"/etc", b"etc//x", b"./x", b"a\0b"):
        with pytest.raises(BadPath):
            split_path(bad)


@given(st.binary(max_size=300))
def test_fuzz_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(data)
    try:
        list(decoder.frames())
    except ProtocolViolation:
        pass


@given(st.binary(max_size=300), st.integers(BIG_FRAME, MAX_FRAME))
def test_fuzz_a_large_frame_with_random_body(body: bytes, length: int) -> None:
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">IBI", length, Op.READ | 0x80, 3) + body)
    decoder.feed(body)
    assert list(decoder.frames()) == []  # not complete: the length is more than was fed


@given(st.sampled_from(list(Op)), st.binary(max_size=120), st.booleans())
def test_fuzz_valid_header_with_random_body(op: Op, body: bytes, reply: bool) -> None:
    data = struct.pack(">IBI", len(body) + 5, op | (0x80 if reply else 0), 3) + body
    try:
        decode_all(data)
    except ProtocolViolation:
        pass
