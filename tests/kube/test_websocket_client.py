"""The thin websocket client under the port-forward: its sans-IO frame reader, masking,
and a live connection to trio-websocket's server (pings, fragments, close codes)."""

from __future__ import annotations

import os
import random
import struct
from functools import partial
from types import SimpleNamespace

import pytest
import trio
import trio_websocket
from hypothesis import given
from hypothesis import strategies as st

from tpengine.kube import _websocket
from tpengine.kube._websocket import (
    BINARY,
    CONTINUATION,
    PING,
    TEXT,
    FrameReader,
    WebSocketError,
    encode_frame,
    mask,
    mask_python,
)


def _server_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    frame = encode_frame(opcode, payload, masked=False)
    return frame if fin else bytes([frame[0] & 0x7F]) + frame[1:]


def _drain(reader: FrameReader) -> list[tuple[int, bytes]]:
    out = []
    while (message := reader.next_message()) is not None:
        out.append(message)
    return out


@pytest.mark.parametrize("size", [0, 1, 3, 125, 126, 2047, 2048, 65535, 65536, 300_001])
def test_masking_is_its_own_inverse_and_matches_the_pure_python_one(size: int) -> None:
    data = random.Random(size).randbytes(size)
    key = b"\x01\x80\xfe\x37"
    assert mask(key, data) == mask_python(key, data)
    assert bytes(mask(key, mask(key, data))) == data
    if size:
        assert mask(key, data)[:4] == bytes(a ^ b for a, b in zip(data[:4], key, strict=False))


@given(
    messages=st.lists(st.binary(max_size=70_000), max_size=5),
    cuts=st.lists(st.integers(min_value=1, max_value=9000), min_size=1, max_size=20),
)
def test_messages_come_out_whole_however_the_bytes_are_cut(messages, cuts) -> None:  # type: ignore[no-untyped-def]
    """Each message in two fragments with a ping between them; fed in arbitrary chunks."""
    wire = b""
    for m in messages:
        half = len(m) // 2
        wire += _server_frame(BINARY, m[:half], fin=False)
        wire += _server_frame(PING, b"hi")
        wire += _server_frame(CONTINUATION, m[half:])
    reader = FrameReader()
    got: list[tuple[int, bytes]] = []
    pos, i = 0, 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        reader.feed(wire[pos : pos + step])
        pos, i = pos + step, i + 1
        got += _drain(reader)
    assert [p for op, p in got if op == BINARY] == messages
    assert [p for op, p in got if op == PING] == [b"hi"] * len(messages)


@given(st.binary(max_size=300))
def test_any_bytes_give_messages_or_a_websocket_error(data: bytes) -> None:
    reader = FrameReader(max_message=1000)
    reader.feed(data)
    try:
        _drain(reader)
    except WebSocketError:
        pass


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (_server_frame(CONTINUATION, b"x"), "continuation"),
        (bytes([0x80 | 0x40 | BINARY, 0]), "reserved"),
        (bytes([0x80 | BINARY, 0x80 | 1]) + b"\x00\x00\x00\x00x", "masking"),
        (_server_frame(PING, b"p", fin=False), "control"),
        (_server_frame(TEXT, b"a", fin=False) + _server_frame(BINARY, b"b"), "inside"),
        (bytes([0x80 | 0x3, 0]), "opcode"),
        (struct.pack("!BBQ", 0x80 | BINARY, 127, 2**40), "too big"),
    ],
)
def test_protocol_errors_are_named(wire: bytes, why: str) -> None:
    reader = FrameReader()
    reader.feed(wire)
    with pytest.raises(WebSocketError, match=why):
        _drain(reader)


def _api(server: str) -> SimpleNamespace:
    """What the client takes from a kr8s Api: ``auth.server`` and credentials."""

    async def reauthenticate() -> None:
        await trio.lowlevel.checkpoint()

    auth = SimpleNamespace(
        server=server,
        token="secret-token",
        proxy=None,
        tls_server_name=None,
        reauthenticate=reauthenticate,
    )
    return SimpleNamespace(auth=auth)


async def test_a_live_server_pings_fragments_and_closes_with_a_code() -> None:
    seen: dict[str, object] = {}

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        seen["path"] = request.path
        seen["auth"] = dict(request.headers).get(b"authorization")
        ws = await request.accept(subprotocol="v4.channel.k8s.io")
        with trio.fail_after(5):
            await ws.ping(b"are you there")  # returns once our client answered the pong
        await ws.send_message(b"\x00" + os.urandom(100_000))
        got = await ws.get_message()
        await ws.send_message(got)
        await ws.aclose(code=1011, reason="pod gone")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
        )
        api = _api(f"http://127.0.0.1:{server.port}/prefix")
        assert _websocket.usable_for(api)
        params = {"ports": "8081"}
        async with _websocket.open_api_websocket(
            api, "/api/v1/x", params, ["v4.channel.k8s.io", "channel.k8s.io"]
        ) as ws:
            assert ws.subprotocol == "v4.channel.k8s.io"
            first = await ws.receive_message()
            assert first is not None and first[0] == BINARY and len(first[1]) == 100_001
            await ws.send_message(b"echo me " * 5000)
            assert await ws.receive_message() == (BINARY, b"echo me " * 5000)
            assert await ws.receive_message() is None
            assert (ws.close_code, ws.close_reason) == (1011, "pod gone")
        nursery.cancel_scope.cancel()
    assert seen == {"path": "/prefix/api/v1/x?ports=8081", "auth": b"Bearer secret-token"}


async def test_a_refused_upgrade_carries_status_and_body() -> None:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        await request.reject(403, body=b'{"kind":"Status","message":"forbidden: no"}')

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
        )
        api = _api(f"http://127.0.0.1:{server.port}")
        with pytest.raises(_websocket.UpgradeRefused) as info:
            async with _websocket.open_api_websocket(api, "/x", {}, ["p"]):
                pass
        assert info.value.status == 403 and b"forbidden: no" in info.value.body
        nursery.cancel_scope.cancel()


def test_a_proxy_leaves_the_connection_to_kr8s(monkeypatch: pytest.MonkeyPatch) -> None:
    api = _api("https://10.0.0.1:6443")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert not _websocket.usable_for(api)
    monkeypatch.setenv("NO_PROXY", "10.0.0.1")
    assert _websocket.usable_for(api)
