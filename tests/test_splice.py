"""splice: both directions copied, FIN passed on as FIN each way, a reset passed on as a
reset — for socket sides (read and written on their descriptors) and any other stream."""

from __future__ import annotations

import functools
import random
import socket
import struct

import pytest
import trio
import trio.testing

from tests._tcp import receive_all, tcp_pair, trio_tcp_pair
from tpengine.splice import splice, splice_socket


@pytest.mark.parametrize(
    "kinds", ["socket-socket", "socket-memory", "memory-memory", "memory-stdlib"]
)
async def test_each_direction_carries_its_bytes_and_its_fin(kinds: str) -> None:
    """A client half-closes after a big request; the server still answers, then closes."""

    def pair(kind: str) -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
        if kind == "socket":
            return trio_tcp_pair()
        return trio.testing.memory_stream_pair()

    left, right = kinds.split("-")
    client, a = pair(left)
    if right == "stdlib":  # splice_socket with a bare socket (the manager's dials)
        bare, far = tcp_pair()
        server: trio.abc.HalfCloseableStream = trio.SocketStream(
            trio.socket.from_stdlib_socket(far)
        )
        spliced = functools.partial(splice_socket, a, bare)
    else:
        b, server = pair(right)
        spliced = functools.partial(splice, a, b)
    rng = random.Random(7)
    request, answer = rng.randbytes(3_000_000), rng.randbytes(2_000_000)
    got: dict[str, bytes] = {}

    async def client_side() -> None:
        await client.send_all(request)
        await client.send_eof()  # FIN towards the server; the answer still comes back
        got["answer"] = await receive_all(client)
        await client.aclose()

    async def server_side() -> None:
        got["request"] = await receive_all(server)
        await server.send_all(answer)
        await server.aclose()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(spliced)
            nursery.start_soon(client_side)
            nursery.start_soon(server_side)
    assert got["request"] == request
    assert got["answer"] == answer


@pytest.mark.parametrize("bare", [False, True])
async def test_a_reset_on_one_side_resets_the_other(bare: bool) -> None:
    client, a = trio_tcp_pair()
    near, far = tcp_pair()
    server = trio.SocketStream(trio.socket.from_stdlib_socket(far))
    if bare:
        spliced = functools.partial(splice_socket, a, near)
    else:
        spliced = functools.partial(
            splice, a, trio.SocketStream(trio.socket.from_stdlib_socket(near))
        )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(spliced)
        await client.send_all(b"hello")
        assert await server.receive_some(5) == b"hello"
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await client.aclose()  # RST, not FIN
        with trio.fail_after(10), pytest.raises(trio.BrokenResourceError):
            # ECONNRESET: the reset came through (an orderly close would read b"").
            while True:
                await server.receive_some(1024)
                await trio.sleep(0.01)
    await server.aclose()
