"""send_nowait down the port-forward's chain (port-forward → websocket → TLS → socket)
against trio's TLS server on a loopback TCP pair: bytes in order whatever mix of
send_nowait and send_all wrote them, ciphertext or a frame's rest that a full socket did
not take kept and sent first, nothing taken from a closed or broken stream."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from tests._tcp import receive_all, receive_exactly, trio_tcp_pair
from tests.kube._tls_pair import small_buffers, tls_pair
from tpengine.fdstream import FdStream
from tpengine.kube._tls import TlsClientStream
from tpengine.kube._websocket import BINARY, CLOSE, PING, PONG, FrameReader, WebSocketClient
from tpengine.kube.portforward import (
    SEND_CHUNK,
    PortForwardStream,
    _HttpxCarrier,
    _ThinCarrier,
)


async def _read_all(stream: trio.abc.ReceiveStream, into: bytearray, size: int) -> None:
    into += await receive_exactly(stream, size)


async def _wire_while(far: trio.abc.ReceiveStream, act: Callable[[], Awaitable[None]]) -> bytes:
    """What ``far`` receives until its end while ``act`` runs (and closes the other end)."""
    got: dict[str, bytes] = {}

    async def read() -> None:
        got["wire"] = await receive_all(far)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await act()
    return got["wire"]


def _fill(send_nowait: object, piece: bytes, pending: object) -> list[bytes]:
    """Call send_nowait(piece) until the stream holds output; the pieces it took."""
    taken = []
    for _ in range(2000):
        n = send_nowait(piece)  # type: ignore[operator]
        assert n in (0, len(piece))
        if n:
            taken.append(piece)
        if pending():  # type: ignore[operator]
            return taken
    raise AssertionError("the socket never filled")


async def test_tls_bytes_keep_their_order_across_send_nowait_and_send_all() -> None:
    rng = random.Random(11)
    pieces = [rng.randbytes(rng.choice((1, 64, 1500, 20_000, 70_000))) for _ in range(300)]
    expected = b"".join(pieces)
    got = bytearray()
    took = held = 0
    async with (
        tls_pair(small=False) as (client, server, _),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_read_all, server, got, len(expected))
        for piece in pieces:
            # As the tunnel's driver does: what send_nowait did not take goes by send_all.
            if rng.random() < 0.7 and client.send_nowait(piece) == len(piece):
                took += 1
                held += client.output_pending
            else:
                await client.send_all(piece)
            if rng.random() < 0.1:
                await trio.lowlevel.checkpoint()  # let the reader drain now and then
        await client.flush()
        assert not client.output_pending
    assert bytes(got) == expected
    assert took > 0
    assert held > 0  # some records waited for the socket (70 kB pieces > its buffer)


async def test_tls_full_socket_keeps_the_ciphertext_for_flush() -> None:
    piece = random.Random(3).randbytes(16_384)
    async with tls_pair() as (client, server, _):
        taken = _fill(client.send_nowait, piece, lambda: client.output_pending)
        assert taken, "the socket took nothing at all"
        # Ciphertext is waiting: nothing more is taken until it is out.
        assert client.send_nowait(b"more") == 0
        got = bytearray()
        tail = b"tail after the flush"
        expected = b"".join(taken) + tail
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_all, server, got, len(expected))
            await client.flush()
            assert not client.output_pending
            await client.send_all(tail)
        assert bytes(got) == expected


async def test_tls_kept_ciphertext_goes_before_the_next_send_all() -> None:
    piece = random.Random(4).randbytes(10_000)
    async with tls_pair() as (client, server, _):
        taken = _fill(client.send_nowait, piece, lambda: client.output_pending)
        after = b"sent by send_all behind the kept ciphertext"
        expected = b"".join(taken) + after
        got = bytearray()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_all, server, got, len(expected))
            await client.send_all(after)
        assert not client.output_pending
        assert bytes(got) == expected


async def test_tls_takes_nothing_once_closed_or_broken() -> None:
    async with tls_pair() as (client, _, far):
        assert client.send_nowait(b"fine") == 4
        # The peer resets the connection (SO_LINGER 0 on close: RFC 793 RST).
        far.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        far.socket.close()
        for _ in range(200):
            if client.send_nowait(b"x" * 1000) == 0:
                break
            await trio.sleep(0.01)
        assert client.send_nowait(b"x") == 0
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"x")
    async with tls_pair() as (client, _, _):
        await client.aclose()
        assert client.send_nowait(b"x") == 0
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"x")


def _websocket_over_small_buffers() -> tuple[WebSocketClient, trio.SocketStream]:
    """A websocket client straight on TCP (no TLS) whose socket fills fast; and the far
    end of that socket."""
    near, far = trio_tcp_pair()
    small_buffers(near, far)
    return WebSocketClient(FdStream(near), None, b""), far


def _frames(wire: bytes) -> list[tuple[int, bytes]]:
    reader = FrameReader(expect_masked=True)  # client frames are masked (RFC 6455 §5.1)
    reader.feed(wire)
    out = []
    while (message := reader.next_message()) is not None:
        out.append(message)
    return out


async def test_websocket_rest_of_a_frame_goes_before_a_pong_and_the_close() -> None:
    """Plain TCP under the websocket: the socket takes part of a frame; the pong that
    the reading task owes and the closing frame follow it whole, never inside it."""
    ws, far = _websocket_over_small_buffers()
    payload = random.Random(5).randbytes(5000)
    try:
        taken = _fill(ws.send_nowait, payload, lambda: ws.output_pending)
        assert ws.send_nowait(payload) == 0  # the frame's rest first
        await far.send_all(bytes((0x80 | PING, 4)) + b"ping")  # a server frame: unmasked

        async def answer_pings() -> None:
            with contextlib.suppress(trio.ClosedResourceError):  # by the aclose below
                await ws.receive_message()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_pings)  # answers the ping, behind the frame's rest
            await trio.testing.wait_all_tasks_blocked()
            wire = bytearray()
            nursery.start_soon(ws.aclose)
            while data := await far.receive_some(65536):
                wire += data
            nursery.cancel_scope.cancel()
        frames = _frames(bytes(wire))
        assert frames[: len(taken)] == [(BINARY, p) for p in taken]
        assert frames[len(taken) :] == [(PONG, b"ping"), (CLOSE, struct.pack("!H", 1000))]
    finally:
        await trio.aclose_forcefully(ws.stream)
        await trio.aclose_forcefully(far)


async def test_websocket_flush_sends_the_rest_then_nothing_is_pending() -> None:
    ws, far = _websocket_over_small_buffers()
    payload = random.Random(6).randbytes(3000)
    try:
        taken = _fill(ws.send_nowait, payload, lambda: ws.output_pending)

        async def finish() -> None:
            await ws.flush()
            assert not ws.output_pending
            await ws.send_message(b"last")
            await ws.aclose()

        assert _frames(await _wire_while(far, finish)) == [(BINARY, p) for p in taken] + [
            (BINARY, b"last"),
            (CLOSE, struct.pack("!H", 1000)),
        ]
    finally:
        await trio.aclose_forcefully(far)


async def test_websocket_frames_stay_whole_under_a_random_mix_of_sends() -> None:
    """send_nowait, send_message, flush and pongs (answered by the reading task) in a
    seeded random order against a slow reader: every frame parses, data in order."""
    rng = random.Random(9)
    ws, far = _websocket_over_small_buffers()
    sent: list[bytes] = []
    pings = 0
    wire = bytearray()

    async def slow_reader() -> None:
        while data := await far.receive_some(rng.choice((512, 4096, 65536))):
            wire.extend(data)
            for _ in range(rng.randrange(3)):
                await trio.lowlevel.checkpoint()

    async def answer_pings() -> None:
        with contextlib.suppress(trio.ClosedResourceError):
            await ws.receive_message()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_reader)
            nursery.start_soon(answer_pings)
            for i in range(400):
                payload = rng.randbytes(rng.choice((10, 700, 5000, 40_000)))
                roll = rng.random()
                if roll < 0.6:
                    if ws.send_nowait(payload) == len(payload):
                        sent.append(payload)
                        continue
                    await ws.send_message(payload)
                    sent.append(payload)
                elif roll < 0.9:
                    await ws.send_message(payload)
                    sent.append(payload)
                elif roll < 0.95:
                    await ws.flush()
                else:
                    pings += 1
                    await far.send_all(bytes((0x80 | PING, 2)) + b"%02d" % (i % 100))
            # Every ping read and answered before closing (unread bytes would make the
            # close a reset, RFC 1122 §4.2.2.13).
            await trio.testing.wait_all_tasks_blocked()
            await ws.aclose()
        frames = _frames(bytes(wire))
        assert [p for op, p in frames if op == BINARY] == sent
        assert sum(op == PONG for op, _ in frames) == pings
        assert frames[-1] == (CLOSE, struct.pack("!H", 1000))
    finally:
        await trio.aclose_forcefully(far)


def _port_forward(client: TlsClientStream, *, text: bool = False) -> PortForwardStream:
    return PortForwardStream(_ThinCarrier(WebSocketClient(client, None, b"")), "test", text=text)


def _channel_data(wire: bytes) -> bytes:
    """The data channel's bytes from the client's frames (channel byte 0, then data)."""
    out = bytearray()
    for opcode, payload in _frames(wire):
        if opcode == BINARY:
            assert payload[:1] == b"\x00"
            out += payload[1:]
    return bytes(out)


async def test_port_forward_over_tls_keeps_order_and_flushes() -> None:
    rng = random.Random(8)
    async with tls_pair() as (client, server, _):
        pf = _port_forward(client)
        big = rng.randbytes(SEND_CHUNK + 1000)
        assert pf.send_nowait(big) == SEND_CHUNK  # one message per call at most
        sent = [big[:SEND_CHUNK]]
        while not pf.output_pending:
            piece = rng.randbytes(rng.choice((100, 9000)))
            n = pf.send_nowait(piece)
            assert n == len(piece)
            sent.append(piece)
        assert pf.send_nowait(b"held back") == 0
        sent.append(b"by send_all")

        async def finish() -> None:
            await pf.send_all(b"by send_all")
            assert not pf.output_pending
            await pf.flush()  # nothing left: a checkpoint
            await pf.aclose()

        assert _channel_data(await _wire_while(server, finish)) == b"".join(sent)
        assert pf.send_nowait(b"x") == 0


async def test_port_forward_takes_nothing_in_base64_or_proxied_mode_after_eof_or_empty() -> None:
    async with tls_pair() as (client, _, _):
        assert _port_forward(client, text=True).send_nowait(b"data") == 0
        proxied = PortForwardStream(_HttpxCarrier(None), "test")  # kr8s's httpx-ws
        assert proxied.send_nowait(b"data") == 0
        assert not proxied.output_pending
        pf = _port_forward(client)
        assert pf.send_nowait(b"") == 0
        assert pf.send_nowait(b"data") == 4
        await pf.send_eof()
        assert pf.send_nowait(b"data") == 0
        with pytest.raises(trio.ClosedResourceError):
            await pf.send_all(b"data")
