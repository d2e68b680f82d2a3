"""The trio drivers over real websockets on loopback."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from tests._tcp import receive_all
from tpengine.tunnel import (
    DialRejected,
    IncomingDial,
    MuxConfig,
    MuxStream,
    RejectReason,
    RemoteError,
)


async def echo(dial: IncomingDial) -> None:
    stream = await dial.accept_stream()
    while chunk := await stream.receive_some():
        await stream.send_all(chunk)
    await stream.send_eof()


async def test_thousand_concurrent_streams_carry_random_data_intact(open_tunnel_pair) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(5)
    payloads = [rng.randbytes(rng.randint(1, 12_000)) for _ in range(1000)]
    results: dict[int, bytes] = {}

    async def one(i: int, client) -> None:  # type: ignore[no-untyped-def]
        stream = await client.open_stream("10.96.0.1", 7, tag=f"s{i}".encode())
        async with stream, trio.open_nursery() as nursery:

            async def writer() -> None:
                await stream.send_all(payloads[i])
                await stream.send_eof()

            nursery.start_soon(writer)
            results[i] = await receive_all(stream)

    async with open_tunnel_pair(dial_handler=echo) as (client, server):
        async with trio.open_nursery() as nursery:
            for i in range(1000):
                nursery.start_soon(one, i, client)
        assert server._conn.open_streams == 0
    assert len(results) == 1000
    assert all(results[i] == payloads[i] for i in range(1000))


async def test_stalled_reader_holds_only_its_window_while_others_flow(open_tunnel_pair) -> None:  # type: ignore[no-untyped-def]
    window = 64 * 1024
    cfg = MuxConfig(stream_window=window, connection_window=256 * 1024, max_frame_size=16 * 1024)
    stalled: list[MuxStream] = []
    stalled_ready = trio.Event()

    async def handler(dial: IncomingDial) -> None:
        stream = await dial.accept_stream()
        if dial.destination.tag == b"stall":
            stalled.append(stream)
            stalled_ready.set()
            await trio.sleep_forever()  # accepts, never reads
        total = len(await receive_all(stream))
        await stream.send_all(str(total).encode())

    async with open_tunnel_pair(dial_handler=handler, config=cfg) as (client, _):
        slow = await client.open_stream("10.0.0.9", 80, tag=b"stall")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow.send_all, b"s" * (4 * window))
            await stalled_ready.wait()

            async def bulk(i: int) -> None:
                stream = await client.open_stream("10.0.0.1", 80, tag=b"bulk")
                await stream.send_all(bytes([i]) * (2 * 1024 * 1024))
                await stream.send_eof()
                assert await receive_all(stream) == b"2097152"
                await stream.aclose()

            async with trio.open_nursery() as others:
                for i in range(8):
                    others.start_soon(bulk, i)
            # The eight others moved 16 MiB past the stall; the stalled stream holds
            # exactly its window at the receiver and the sender handed over no more.
            await trio.testing.wait_all_tasks_blocked()
            assert stalled[0].buffered == window
            assert slow.sent == window
            assert client._conn.send_credit(slow.stream_id) == 0
            nursery.cancel_scope.cancel()


async def test_half_close_propagates_both_ways(open_tunnel_pair) -> None:  # type: ignore[no-untyped-def]
    seen: list[bytes] = []

    async def handler(dial: IncomingDial) -> None:
        stream = await dial.accept_stream()
        seen.append(await receive_all(stream))  # ends when the client half-closes
        await stream.send_all(b"reply after your EOF")
        await stream.send_eof()

    async with open_tunnel_pair(dial_handler=handler) as (client, _):
        stream = await client.open_stream("10.0.0.1", 80)
        await stream.send_all(b"request")
        await stream.send_eof()
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"more")
        assert await receive_all(stream) == b"reply after your EOF"
        assert seen == [b"request"]
        await stream.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()


async def test_reset_propagates(open_tunnel_pair) -> None:  # type: ignore[no-untyped-def]
    outcome: list[str] = []
    got_data = trio.Event()
    done = trio.Event()

    async def handler(dial: IncomingDial) -> None:
        stream = await dial.accept_stream()
        await stream.receive_some()
        got_data.set()
        try:
            await stream.receive_some()
        except trio.BrokenResourceError as exc:
            outcome.append(str(exc))
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(b"x")
        done.set()

    async with open_tunnel_pair(dial_handler=handler) as (client, _):
        stream = await client.open_stream("10.0.0.1", 80)
        await stream.send_all(b"hello")
        await got_data.wait()
        await stream.reset("app sent RST")
        with trio.fail_after(5):
            await done.wait()
    assert "reset by the peer" in outcome[0] and "app sent RST" in outcome[0]


async def test_rejections_carry_the_reason(open_tunnel_pair) -> None:  # type: ignore[no-untyped-def]
    async def handler(dial: IncomingDial) -> None:
        if dial.destination.port == 1:
            await dial.reject(RejectReason.UNREACHABLE, "no route to host 10.1.2.3")
        elif dial.destination.port == 2:
            raise RuntimeError("handler bug")
        # port 3: the handler returns without deciding

    async with open_tunnel_pair(dial_handler=handler) as (client, server):
        with pytest.raises(DialRejected) as info:
            await client.open_stream("10.1.2.3", 1)
        assert info.value.reason is RejectReason.UNREACHABLE
        assert "no route to host" in str(info.value)
        for port in (2, 3):
            with pytest.raises(DialRejected) as info:
                await client.open_stream("10.1.2.3", port)
            assert info.value.reason is RejectReason.REFUSED
        # The tunnel survived the failing handler; the server side may dial us too.
        with pytest.raises(DialRejected, match="accepts no dials"):
            await server.open_stream("127.0.0.1", 8080)


async def test_requests_pushes_ping_and_datagrams(open_tunnel_pair) -> None:  # type: ignore[no-untyped-def]
    async def on_request(method: str, payload: object) -> object:
        if method == "fail":
            raise ValueError("no such workload")
        return {"method": method, "echo": payload}

    async def handler(dial: IncomingDial) -> None:
        flow = await dial.accept_flow()
        async for datagram in flow.receive_channel:
            flow.send_nowait(b"answer:" + datagram)

    async with open_tunnel_pair(dial_handler=handler, request_handler=on_request) as (
        client,
        server,
    ):
        assert await client.request("list", [1, 2]) == {"method": "list", "echo": [1, 2]}
        with pytest.raises(RemoteError, match="ValueError: no such workload"):
            await client.request("fail", None)
        async with client.subscribe("agents") as updates:
            await server.push("agents", {"n": 1})
            await server.push("other", {"n": 0})
            await server.push("agents", {"n": 2})
            assert [await updates.receive(), await updates.receive()] == [{"n": 1}, {"n": 2}]
        rtt = await client.ping()
        assert rtt > 0 and client.rtt == rtt
        assert client.stats()["rtt_ms"] == round(rtt * 1000, 3)
        assert server.stats()["peer_version"] == "1.0"
        flow = await client.open_stream("10.96.0.10", 53, "udp")
        for i in range(5):
            assert flow.send_nowait(b"q%d" % i)
        assert [await flow.receive() for _ in range(5)] == [b"answer:q%d" % i for i in range(5)]
        await flow.aclose()


async def test_mux_stream_is_a_proper_half_closeable_stream(open_tunnel_pair) -> None:  # type: ignore[no-untyped-def]
    accepted: trio.MemorySendChannel[MuxStream]
    accepted, incoming = trio.open_memory_channel[MuxStream](1)

    async def handler(dial: IncomingDial) -> None:
        await accepted.send(await dial.accept_stream())
        await trio.sleep_forever()  # the checker owns and closes the stream

    async with open_tunnel_pair(dial_handler=handler) as (client, _):

        async def maker() -> tuple[MuxStream, MuxStream]:
            mine = await client.open_stream("10.0.0.1", 80)
            return mine, await incoming.receive()

        await trio.testing.check_half_closeable_stream(maker, None)


async def test_the_server_end_dials_the_client_for_an_intercept(open_tunnel_pair) -> None:  # type: ignore[no-untyped-def]
    """Manager → engine: the side that accepted the websocket opens streams too."""
    seen: list[tuple[str, int, bytes]] = []

    async def engine_side(dial: IncomingDial) -> None:
        d = dial.destination
        seen.append((d.host, d.port, d.tag))
        stream = await dial.accept_stream()
        request = await receive_all(stream)
        await stream.send_all(b"local handler saw " + request)
        await stream.send_eof()

    async with open_tunnel_pair(dial_handler=echo, client_dial_handler=engine_side) as (
        client,
        server,
    ):
        stream = await server.open_stream("127.0.0.1", 8080, tag=b"intercept:web/susan")
        assert stream.stream_id % 2 == 0
        await stream.send_all(b"GET /")
        await stream.send_eof()
        assert await receive_all(stream) == b"local handler saw GET /"
        await stream.aclose()
        # ... while the client's own dials keep working on the same tunnel.
        mine = await client.open_stream("10.0.0.1", 80)
        await mine.send_all(b"x")
        await mine.send_eof()
        assert await receive_all(mine) == b"x"
    assert seen == [("127.0.0.1", 8080, b"intercept:web/susan")]
