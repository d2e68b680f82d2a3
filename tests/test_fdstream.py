"""tpengine.fdstream (the manager's raw tunnel carrier, the engine's port-forward): the
sniffed bytes first, then the socket; FIN, EOF and use after close as SocketStream's."""

from __future__ import annotations

import random
import socket

import pytest
import trio

from tests._tcp import trio_tcp_pair
from tpengine.fdstream import FdStream


async def test_head_then_the_socket_both_ways_and_half_close() -> None:
    near, far = trio_tcp_pair()
    stream = FdStream(far, b"TPMUX")
    big = random.Random(5).randbytes(5_000_000)
    got: dict[str, bytes] = {}

    async def peer() -> None:
        await near.send_all(b"-after")
        await near.send_eof()
        data = bytearray()
        while chunk := await near.receive_some(1 << 20):
            data += chunk
        got["peer"] = bytes(data)

    async def ours() -> None:
        data = bytearray()
        while chunk := await stream.receive_some(3):
            data += chunk
        got["ours"] = bytes(data)
        await stream.send_all(big)  # more than the socket buffer: it waits, in order
        await stream.send_eof()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            nursery.start_soon(ours)
    assert got["ours"] == b"TPMUX-after"
    assert got["peer"] == big
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_all(b"after send_eof")
    await stream.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await stream.receive_some()
    await near.aclose()


async def test_a_reset_is_a_broken_resource() -> None:
    near, far = trio_tcp_pair()
    stream = FdStream(far)
    near.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    await near.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await stream.receive_some()
    await stream.aclose()


async def test_send_nowait_takes_what_the_socket_takes() -> None:
    near, far = trio_tcp_pair()
    stream = FdStream(far)
    async with near, stream:
        taken = 0
        while (n := stream.send_nowait(b"z" * 65536)) > 0:
            taken += n
        assert taken > 0  # until the socket's buffers were full, then 0: no waiting
        got = 0
        while got < taken:
            got += len(await near.receive_some(1 << 20))
        assert got == taken
        assert stream.send_nowait(b"again") == 5


async def test_a_tunnel_on_descriptors_keeps_every_byte_in_order() -> None:
    """The driver writes from the task that queued output when the socket takes it and
    leaves the rest to its writer: many streams at once, sockets full most of the time."""
    from tpengine.tunnel import IncomingDial, Role, open_mux_over_stream

    async def echo(dial: IncomingDial) -> None:
        s = await dial.accept_stream()
        async with s:
            while data := await s.receive_some():
                await s.send_all(data)

    near, far = trio_tcp_pair()
    for side in (near, far):  # tiny buffers: most sends are taken in part
        side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    payloads = [random.Random(i).randbytes(100_000 + i) for i in range(8)]
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            async with open_mux_over_stream(FdStream(far), role=Role.SERVER, dial_handler=echo):
                await trio.sleep_forever()

        nursery.start_soon(server)
        async with open_mux_over_stream(FdStream(near), role=Role.CLIENT) as client:

            async def one(payload: bytes) -> None:
                stream = await client.open_stream("10.0.0.1", 7)
                async with stream:
                    got = bytearray()

                    async def send() -> None:
                        for i in range(0, len(payload), 1000):
                            await stream.send_all(payload[i : i + 1000])
                        await stream.send_eof()

                    async with trio.open_nursery() as inner:
                        inner.start_soon(send)
                        while data := await stream.receive_some():
                            got += data
                    assert bytes(got) == payload

            with trio.fail_after(30):  # a lost or reordered byte would hang a reader
                async with trio.open_nursery() as clients:
                    for payload in payloads:
                        clients.start_soon(one, payload)
        nursery.cancel_scope.cancel()
