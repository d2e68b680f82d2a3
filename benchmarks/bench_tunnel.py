"""Tunnel throughput and round trips on loopback, next to raw trio TCP and bare
trio-websocket measured in the same run.

Throughput: the engine-side driver (websocket client) sends through 1 and 16 mux
streams to the manager-side driver (websocket server), which reads and counts.
Round trips: 100-byte request/response ping-pong, one at a time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial

import trio
import trio_websocket

from tpengine.tunnel import IncomingDial, MuxSession, open_mux_websocket_url, serve_mux_websocket

MB = 1024 * 1024
TOTAL = 192 * MB
CHUNK = 64 * 1024
SMALL = b"x" * 100
ROUND_TRIPS = 3000


def _run(fn: Callable[[], Awaitable[float]]) -> float:
    return trio.run(fn)


# -- raw TCP ---------------------------------------------------------------------------------


async def tcp_throughput() -> float:
    done = trio.Event()
    elapsed = 0.0

    async def sink(stream: trio.SocketStream) -> None:
        nonlocal elapsed
        got, start = 0, time.perf_counter()
        while got < TOTAL:
            got += len(await stream.receive_some(256 * 1024))
        elapsed = time.perf_counter() - start
        done.set()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, sink, 0, host="127.0.0.1"))
        stream = await trio.open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
        data = b"t" * CHUNK
        for _ in range(TOTAL // CHUNK):
            await stream.send_all(data)
        await done.wait()
        nursery.cancel_scope.cancel()
    return TOTAL / MB / elapsed


async def tcp_round_trips() -> float:
    async def echo(stream: trio.SocketStream) -> None:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
        stream = await trio.open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
        start = time.perf_counter()
        for _ in range(ROUND_TRIPS):
            await stream.send_all(SMALL)
            got = 0
            while got < len(SMALL):
                got += len(await stream.receive_some(65536))
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return ROUND_TRIPS / elapsed


# -- bare trio-websocket ---------------------------------------------------------------------


async def ws_throughput(senders: int) -> float:
    done = trio.Event()
    elapsed = 0.0

    async def sink(request: trio_websocket.WebSocketRequest) -> None:
        nonlocal elapsed
        ws = await request.accept()
        got, start = 0, time.perf_counter()
        while got < TOTAL:
            got += len(await ws.get_message())
        elapsed = time.perf_counter() - start
        done.set()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                trio_websocket.serve_websocket,
                sink,
                "127.0.0.1",
                0,
                None,
                receive_buffer_size=65536,
            )
        )
        async with trio_websocket.open_websocket(
            "127.0.0.1", server.port, "/", use_ssl=False, receive_buffer_size=65536
        ) as ws:
            data = b"w" * CHUNK

            async def send(n: int) -> None:
                for _ in range(n):
                    await ws.send_message(data)

            async with trio.open_nursery() as senders_nursery:
                for _ in range(senders):
                    senders_nursery.start_soon(send, TOTAL // CHUNK // senders)
            await done.wait()
        nursery.cancel_scope.cancel()
    return TOTAL / MB / elapsed


async def ws_round_trips() -> float:
    async def echo(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except trio_websocket.ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                trio_websocket.serve_websocket,
                echo,
                "127.0.0.1",
                0,
                None,
                receive_buffer_size=65536,
            )
        )
        async with trio_websocket.open_websocket(
            "127.0.0.1", server.port, "/", use_ssl=False, receive_buffer_size=65536
        ) as ws:
            start = time.perf_counter()
            for _ in range(ROUND_TRIPS):
                await ws.send_message(SMALL)
                await ws.get_message()
            elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return ROUND_TRIPS / elapsed


# -- the tunnel ------------------------------------------------------------------------------


async def _with_tunnel(
    dial_handler: Callable[[IncomingDial], Awaitable[None]],
    client_fn: Callable[[MuxSession], Awaitable[float]],
) -> float:
    async def on_session(session: MuxSession, request: object) -> None:
        await session.wait_closed()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve_mux_websocket, on_session, "127.0.0.1", 0, dial_handler=dial_handler)
        )
        async with open_mux_websocket_url(f"ws://127.0.0.1:{server.port}/") as client:
            result = await client_fn(client)
        nursery.cancel_scope.cancel()
    return result


async def mux_throughput(streams: int) -> float:
    per_stream = TOTAL // streams
    remaining = streams
    done = trio.Event()
    timing: list[float] = []

    async def sink(dial: IncomingDial) -> None:
        nonlocal remaining
        stream = await dial.accept_stream()
        got = 0
        while got < per_stream:
            got += len(await stream.receive_some())
        remaining -= 1
        if not remaining:
            timing.append(time.perf_counter())
            done.set()

    async def client(session: MuxSession) -> float:
        data = b"m" * CHUNK
        opened = [await session.open_stream("10.0.0.1", 9) for _ in range(streams)]
        start = time.perf_counter()

        async def send(stream: trio.abc.SendStream) -> None:
            for _ in range(per_stream // CHUNK):
                await stream.send_all(data)

        async with trio.open_nursery() as nursery:
            for stream in opened:
                nursery.start_soon(send, stream)
        await done.wait()
        return TOTAL / MB / (timing[0] - start)

    return await _with_tunnel(sink, client)


async def mux_round_trips() -> float:
    async def echo(dial: IncomingDial) -> None:
        stream = await dial.accept_stream()
        while data := await stream.receive_some():
            await stream.send_all(data)

    async def client(session: MuxSession) -> float:
        stream = await session.open_stream("10.0.0.1", 7)
        start = time.perf_counter()
        for _ in range(ROUND_TRIPS):
            await stream.send_all(SMALL)
            got = 0
            while got < len(SMALL):
                got += len(await stream.receive_some())
        return ROUND_TRIPS / (time.perf_counter() - start)

    return await _with_tunnel(echo, client)


def main() -> None:
    tcp = _run(tcp_throughput)
    ws1 = _run(partial(ws_throughput, 1))
    ws16 = _run(partial(ws_throughput, 16))
    mux1 = _run(partial(mux_throughput, 1))
    mux16 = _run(partial(mux_throughput, 16))
    print(f"bulk, {TOTAL // MB} MiB engine-side → manager-side over loopback:")
    print(f"  raw trio TCP                         {tcp:8.0f} MB/s")
    print(f"  bare trio-websocket (64 KiB buffers) {ws1:8.0f} MB/s   (16 sender tasks: {ws16:.0f})")
    print(
        f"  tunnel, 1 stream                     {mux1:8.0f} MB/s   {mux1 / ws1:5.0%} of bare websocket"
    )
    print(
        f"  tunnel, 16 streams                   {mux16:8.0f} MB/s   {mux16 / ws1:5.0%} of bare websocket"
    )
    tcp_rt = _run(tcp_round_trips)
    ws_rt = _run(ws_round_trips)
    mux_rt = _run(mux_round_trips)
    print(f"round trips, {len(SMALL)}-byte messages one at a time:")
    print(f"  raw trio TCP          {tcp_rt:8.0f} /s")
    print(f"  bare trio-websocket   {ws_rt:8.0f} /s")
    print(f"  tunnel stream         {mux_rt:8.0f} /s   {mux_rt / ws_rt:5.0%} of bare websocket")


if __name__ == "__main__":
    main()
