"""Every frame type fed whole, byte by byte and followed by junk; fuzzed input."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpengine.tunnel import (
    ConnectionTerminated,
    Destination,
    ErrorCode,
    MuxConfig,
    MuxConnection,
    Proto,
    Role,
)
from tpengine.tunnel._frames import HEADER, FrameType

CFG = MuxConfig(stream_window=8192)
TCP = Destination(host="web.default.svc.cluster.local", port=80, tag=b"t")
UDP = Destination(host="10.96.0.10", port=53, proto=Proto.UDP)


def _drain(end: MuxConnection) -> list[object]:
    out = []
    while (event := end.next_event()) is not None:
        out.append(event)
    return out


def _stream(pair, dest=TCP):  # type: ignore[no-untyped-def]
    sid = pair.client.open_stream(dest)
    pair.pump()
    pair.server.accept_stream(sid)
    pair.pump()
    pair.drain(pair.client)
    pair.drain(pair.server)
    return sid


def _window_update(pair) -> None:  # type: ignore[no-untyped-def]
    sid = _stream(pair)
    pair.client.send_data(sid, b"x" * 4096)
    pair.pump()
    pair.drain(pair.server)
    pair.server.acknowledge_received(sid, 4096)


def _pong(pair) -> None:  # type: ignore[no-untyped-def]
    pair.client.send_ping(0.0)
    pair.server.receive_data(pair.client.data_to_send(), 0.0)


def _response(pair) -> None:  # type: ignore[no-untyped-def]
    rid = pair.client.send_request("m", {"a": 1})
    pair.pump()
    pair.drain(pair.server)
    pair.server.send_response(rid, [1, "two", None])


def _accept(pair) -> None:  # type: ignore[no-untyped-def]
    sid = pair.client.open_stream(TCP)
    pair.pump()
    pair.drain(pair.server)
    pair.server.accept_stream(sid)


def _reject(pair) -> None:  # type: ignore[no-untyped-def]
    sid = pair.client.open_stream(TCP)
    pair.pump()
    pair.drain(pair.server)
    pair.server.reject_stream(sid, 2, "no route to 10.96.12.7")


SCENARIOS: dict[str, Callable[..., None]] = {
    "DIAL": lambda p: p.server.open_stream(TCP),
    "ACCEPT": _accept,
    "REJECT": _reject,
    "DATA": lambda p: p.server.send_data(_stream(p), b"payload" * 300),
    "DATA+FIN": lambda p: p.server.send_eof(_stream(p)),
    "WINDOW_UPDATE": _window_update,
    "RESET": lambda p: p.server.reset_stream(_stream(p), ErrorCode.CANCEL, "bye"),
    "DATAGRAM": lambda p: p.server.send_datagram(_stream(p, UDP), b"\x12\x34answer"),
    "PING": lambda p: p.server.send_ping(0.0),
    "PONG": _pong,
    "GOAWAY": lambda p: p.server.close(ErrorCode.NO_ERROR, "draining"),
    "GOAWAY(error)": lambda p: p.server.close(ErrorCode.INTERNAL_ERROR, "boom"),
    "REQUEST": lambda p: p.server.send_request("dns.lookup", {"name": "web"}),
    "RESPONSE": _response,
    "PUSH": lambda p: p.server.send_push("intercepts", {"web": "active"}),
}


def _build(pair_cls, name):  # type: ignore[no-untyped-def]
    pair = pair_cls(CFG)
    SCENARIOS[name](pair)
    data = pair.server.data_to_send()
    assert data, name
    return pair.client, data


def test_scenarios_cover_every_frame_type(pair_cls) -> None:  # type: ignore[no-untyped-def]
    seen = set()
    for name in SCENARIOS:
        _, data = _build(pair_cls, name)
        pos = 0
        while pos < len(data):
            length, ftype, _, _ = HEADER.unpack_from(data, pos)
            seen.add(FrameType(ftype))
            pos += HEADER.size + length
    seen.add(FrameType.HELLO)  # covered by test_hello_fed_byte_by_byte
    assert seen == set(FrameType)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_frame_whole_bytewise_and_with_trailing_junk(pair_cls, name) -> None:  # type: ignore[no-untyped-def]
    client, data = _build(pair_cls, name)
    client.receive_data(data, 0.0)
    whole, answer = _drain(client), client.data_to_send()
    assert whole or answer, f"{name} produced neither an event nor an answer"

    client, data = _build(pair_cls, name)
    for i in range(len(data)):
        client.receive_data(data[i : i + 1], 0.0)
    assert (_drain(client), client.data_to_send()) == (whole, answer)

    client, data = _build(pair_cls, name)
    client.receive_data(data + b"\xff" * 16, 0.0)
    events, out = _drain(client), client.data_to_send()
    assert out.startswith(answer)
    if whole and isinstance(whole[-1], ConnectionTerminated):
        assert events == whole  # after an error close further input is ignored
    else:
        assert events[:-1] == whole
        assert isinstance(events[-1], ConnectionTerminated)
        assert events[-1].code is ErrorCode.FRAME_SIZE_ERROR and not events[-1].by_peer


def test_hello_fed_byte_by_byte() -> None:
    server = MuxConnection(Role.SERVER, now=0.0)
    data = server.data_to_send()
    whole = MuxConnection(Role.CLIENT, now=0.0)
    whole.receive_data(data, 0.0)
    bytewise = MuxConnection(Role.CLIENT, now=0.0)
    for i in range(len(data)):
        bytewise.receive_data(data[i : i + 1], 0.0)
    assert _drain(whole) == _drain(bytewise) != []


def _established(pair_cls) -> MuxConnection:  # type: ignore[no-untyped-def]
    pair = pair_cls()
    _stream(pair)
    return pair.client


def _assert_clean_outcome(end: MuxConnection) -> None:
    events = _drain(end)
    terminated = [e for e in events if isinstance(e, ConnectionTerminated)]
    assert len(terminated) <= 1
    if terminated:
        assert events[-1] is terminated[0]
        assert terminated[0].code is not ErrorCode.NO_ERROR or terminated[0].by_peer
        assert end.closed and end.get_timer() is None
        out = end.data_to_send()
        # An error close we detected is announced with a GOAWAY as the last frame.
        if not terminated[0].by_peer:
            assert _frame_types(out)[-1] == FrameType.GOAWAY


def _frame_types(data: bytes) -> list[int]:
    types, pos = [], 7 if data.startswith(b"TPMUX") else 0
    while pos < len(data):
        length, ftype, _, _ = HEADER.unpack_from(data, pos)
        types.append(ftype)
        pos += HEADER.size + length
    assert pos == len(data)
    return types


@given(st.binary(max_size=512))
def test_fuzz_random_bytes_after_handshake(pair_cls, junk: bytes) -> None:  # type: ignore[no-untyped-def]
    end = _established(pair_cls)
    end.receive_data(junk, 1.0)
    _assert_clean_outcome(end)
    if end.closed:
        end.receive_data(junk, 2.0)  # more input after a close is ignored
        assert end.next_event() is None and end.data_to_send() == b""


@given(st.binary(max_size=256))
def test_fuzz_random_bytes_as_first_contact(junk: bytes) -> None:
    end = MuxConnection(Role.SERVER, now=0.0)
    end.receive_data(b"TPMUX\x01\x00" + junk, 0.0)
    _assert_clean_outcome(end)


frames = st.lists(
    st.tuples(st.integers(0, 14), st.integers(0, 3), st.integers(0, 6), st.binary(max_size=40)),
    max_size=12,
)


@given(frames)
def test_fuzz_well_framed_garbage(pair_cls, items) -> None:  # type: ignore[no-untyped-def]
    end = _established(pair_cls)
    data = b"".join(struct.pack("!IBBI", len(p), t, f, s) + p for t, f, s, p in items)
    end.receive_data(data, 1.0)
    _assert_clean_outcome(end)


def _conversation(pair_cls):  # type: ignore[no-untyped-def]
    """A client and the bytes its server sends after the handshake: many frame types,
    payloads from 0 bytes to several frames' worth."""
    pair = pair_cls(CFG)
    sid = _stream(pair)
    udp = _stream(pair, UDP)
    server = pair.server
    server.send_data(sid, bytes(range(256)) * 20)
    server.send_datagram(udp, b"dgram")
    server.send_push("t", {"k": [1, 2, 3]})
    server.send_ping(0.0)
    server.send_data(sid, b"")
    server.send_eof(sid)
    server.open_stream(TCP)
    return pair.client, server.data_to_send()


@given(st.lists(st.integers(0, 6000), max_size=12))
def test_any_chunking_gives_the_same_events(pair_cls, cuts) -> None:  # type: ignore[no-untyped-def]
    client, data = _conversation(pair_cls)
    client.receive_data(data, 0.0)
    whole = (_drain(client), client.data_to_send())
    client, data = _conversation(pair_cls)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in zip(points, points[1:], strict=False):
        client.receive_data(data[a:b], 0.0)
    assert (_drain(client), client.data_to_send()) == whole
