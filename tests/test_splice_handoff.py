"""splice's hand-off without a task (a tunnel stream or a netstack connection forwarding
straight into the other side): bytes arrive intact and in order whether they went on at
once or through the pump — small messages, bulk into a slow reader (the hand-off takes
part, the pump the rest), the end of the stream and a reset passed on as before.

The tunnel runs over a loopback TCP pair with the raw carrier production uses (FdStream);
the manager's side of a dial is :func:`splice_socket` with a bare socket, the engine's a
netstack connection of a real TUN whose peer is the kernel's TCP.
"""

from __future__ import annotations

import hashlib
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from tests._tcp import receive_all, receive_exactly, tcp_pair, trio_tcp_pair
from tpengine.fdstream import FdStream
from tpengine.splice import splice, splice_socket
from tpengine.tunnel import (
    IncomingDial,
    MuxConfig,
    MuxSession,
    MuxStream,
    Role,
    open_mux_over_stream,
)

Serve = Callable[[MuxStream], Awaitable[None]]

#: Small windows: the sender keeps waiting for credit, so new data keeps arriving while a
#: pump still holds bytes it could not write (then the hand-off must take nothing).
SMALL_WINDOWS = MuxConfig(
    stream_window=32 * 1024, connection_window=64 * 1024, max_frame_size=16 * 1024
)


@asynccontextmanager
async def tunnel(serve: Serve) -> AsyncIterator[MuxSession]:
    """A raw tunnel on loopback whose far end hands each dialed stream to ``serve``."""
    near, far = trio_tcp_pair()

    async def on_dial(dial: IncomingDial) -> None:
        await serve(await dial.accept_stream())

    async def server() -> None:
        async with open_mux_over_stream(
            FdStream(far), role=Role.SERVER, dial_handler=on_dial, config=SMALL_WINDOWS
        ) as session:
            await session.wait_closed()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        async with open_mux_over_stream(
            FdStream(near), role=Role.CLIENT, config=SMALL_WINDOWS
        ) as client:
            yield client
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def spliced_to_socket(
    pair: Callable[[], tuple[socket.socket, socket.socket]],
) -> AsyncIterator[tuple[MuxStream, socket.socket]]:
    """The manager's path: a dialed tunnel stream whose far end :func:`splice_socket`
    joins to the near end of ``pair()``; yields the dialer's stream and the far socket."""
    far_end: list[socket.socket] = []
    spliced = trio.Event()

    async def serve(stream: MuxStream) -> None:
        near, far = pair()
        far_end.append(far)
        spliced.set()
        await splice_socket(stream, near)

    async with tunnel(serve) as client:
        stream = await client.open_stream("app", 80)
        await spliced.wait()
        yield stream, far_end[0]


def _slow_socket_pair() -> tuple[socket.socket, socket.socket]:
    """A loopback pair with small buffers, so writes into the near end are often
    partial while the far end reads slowly."""
    near, far = tcp_pair()
    near.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    far.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    return near, far


async def _read_slowly(stream: trio.abc.ReceiveStream, rng: random.Random) -> bytes:
    out = bytearray()
    while chunk := await stream.receive_some(rng.choice((1, 100, 4096, 65536))):
        out += chunk
        if rng.random() < 0.05:
            await trio.sleep(0.001)
    return bytes(out)


async def test_tunnel_to_socket_small_messages_and_bulk_keep_their_order() -> None:
    """The manager's path: the tunnel's reader writes into the dialed socket itself."""
    rng = random.Random(11)
    messages = [rng.randbytes(rng.randrange(1, 1500)) for _ in range(200)]
    bulk = rng.randbytes(300_000)
    with trio.fail_after(30):
        async with spliced_to_socket(_slow_socket_pair) as (stream, far_socket):
            far = trio.SocketStream(trio.socket.from_stdlib_socket(far_socket))
            for message in messages:  # ping-pong: each one answered before the next
                await stream.send_all(message)
                assert await receive_exactly(far, len(message)) == message
                await far.send_all(message[::-1])
                assert await receive_exactly(stream, len(message)) == message[::-1]
            received: dict[str, bytes] = {}

            async def read_far() -> None:
                received["up"] = await _read_slowly(far, random.Random(3))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_far)
                await stream.send_all(bulk)
                await stream.send_eof()  # FIN after the last byte, not before
            assert hashlib.sha256(received["up"]).digest() == hashlib.sha256(bulk).digest()
            await far.send_all(b"bye")
            await far.aclose()
            assert await stream.receive_some() == b"bye"
            assert await stream.receive_some() == b""


async def test_reset_of_the_dialed_socket_resets_the_tunnel_stream() -> None:
    with trio.fail_after(10):
        async with spliced_to_socket(tcp_pair) as (stream, far):
            await stream.send_all(b"x" * 1000)
            await trio.lowlevel.wait_readable(far)
            far.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            far.close()  # RST
            with pytest.raises(trio.BrokenResourceError):
                while await stream.receive_some():
                    pass


@pytest.mark.root
async def test_netstack_to_tunnel_both_ways_intact() -> None:
    """The engine's path: a kernel client through a TUN, the netstack's connection spliced
    to a tunnel stream (each side forwards into the other), an echo at the far end that
    reads slowly so the hand-offs are partial and the pumps take the rest."""
    from tests.netstack.test_stack import serving  # a TUN in a namespace: root only

    rng = random.Random(5)
    messages = [rng.randbytes(rng.randrange(1, 5000)) for _ in range(300)]
    bulk = rng.randbytes(3_000_000)

    async def echo_slowly(stream: MuxStream) -> None:
        rng = random.Random(9)
        async with stream:
            while data := await stream.receive_some(rng.choice((7, 1000, 65536))):
                await stream.send_all(data)
                if rng.random() < 0.02:
                    await trio.sleep(0.001)
            await stream.send_eof()

    with trio.fail_after(60):
        async with tunnel(echo_slowly) as client, serving() as env:

            async def handler(local: object) -> None:
                remote = await client.open_stream("app", 80)
                await splice(local, remote)  # type: ignore[arg-type]

            env.handler = handler  # type: ignore[assignment]
            app = await env.connect()
            async with app:
                for message in messages:
                    await app.send_all(message)
                    assert await receive_exactly(app, len(message)) == message
                echoed: dict[str, bytes] = {}

                async def read_back() -> None:
                    echoed["all"] = await receive_all(app)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_back)
                    await app.send_all(bulk)
                    await app.send_eof()
                assert hashlib.sha256(echoed["all"]).digest() == hashlib.sha256(bulk).digest()
