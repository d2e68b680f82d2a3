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
