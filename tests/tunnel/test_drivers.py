"""The trio driver over plain byte streams, and the server's robustness."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing
import trio_websocket

from tpengine.tunnel import (
    SUBPROTOCOL,
    DialRejected,
    ErrorCode,
    IncomingDial,
    MuxConfig,
    MuxConnection,
    MuxDatagramFlow,
    MuxSession,
    RejectReason,
    Role,
    TunnelClosed,
    open_mux_over_stream,
    open_mux_websocket_url,
    serve_mux_websocket,
)


async def _echo(dial: IncomingDial) -> None:
    stream = await dial.accept_stream()
    while data := await stream.receive_some():
        await stream.send_all(data)
    await stream.send_eof()


async def _roundtrip(session: MuxSession, payload: bytes) -> bytes:
    stream = await session.open_stream("10.0.0.1", 7)
    async with stream, trio.open_nursery() as nursery:

        async def write() -> None:
            await stream.send_all(payload)
            await stream.send_eof()

        nursery.start_soon(write)
        got = bytearray()
        while chunk := await stream.receive_some():
            got += chunk
    return bytes(got)


async def test_tunnel_over_a_plain_tcp_stream() -> None:
    async def serve(stream: trio.SocketStream) -> None:
        async with open_mux_over_stream(stream, role=Role.SERVER, dial_handler=_echo) as session:
            await session.wait_closed()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        tcp = await trio.open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
        async with open_mux_over_stream(tcp, role=Role.CLIENT) as client:
            payload = bytes(range(256)) * 4000
            assert await _roundtrip(client, payload) == payload
        nursery.cancel_scope.cancel()


async def _serve(nursery: trio.Nursery) -> int:
    async def on_session(session: MuxSession, request: object) -> None:
        await session.wait_closed()

    server = await nursery.start(
        partial(serve_mux_websocket, on_session, "127.0.0.1", 0, dial_handler=_echo)
    )
    return int(server.port)


async def test_server_refuses_incompatible_and_broken_clients_and_keeps_serving() -> None:
    async with trio.open_nursery() as nursery:
        port = await _serve(nursery)
        # A peer from the future: refused with a message naming both versions.
        async with trio_websocket.open_websocket(
            "127.0.0.1", port, "/", use_ssl=False, subprotocols=[SUBPROTOCOL]
        ) as ws:
            await ws.send_message(b"TPMUX\x02\x00")
            received = b""
            with pytest.raises(trio_websocket.ConnectionClosed):
                while True:
                    received += await ws.get_message()  # type: ignore[operator]
        assert b"this end speaks 1.0, the peer speaks 2.0" in received
        # Not a tunnel peer at all, and a client that vanishes mid-handshake.
        async with trio_websocket.open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
            await ws.send_message("GET / HTTP/1.1")
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        await tcp.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        await tcp.aclose()
        # Still serving.
        async with open_mux_websocket_url(f"ws://127.0.0.1:{port}/") as client:
            assert await _roundtrip(client, b"still here") == b"still here"
        nursery.cancel_scope.cancel()


async def test_incompatible_server_is_reported_to_the_client() -> None:
    async def future_server(stream: trio.SocketStream) -> None:
        await stream.send_all(b"TPMUX\x07\x01")
        await stream.receive_some()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(
            partial(trio.serve_tcp, future_server, 0, host="127.0.0.1")
        )
        tcp = await trio.open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
        with pytest.raises(TunnelClosed, match="the peer speaks 7.1") as info:
            async with open_mux_over_stream(tcp, role=Role.CLIENT):
                pass
        assert info.value.code is ErrorCode.VERSION_MISMATCH
        nursery.cancel_scope.cancel()


async def test_graceful_close_by_the_server_reaches_the_client() -> None:
    a, b = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            async with open_mux_over_stream(b, role=Role.SERVER, dial_handler=_echo):
                pass  # leaving the block is the graceful close

        nursery.start_soon(server)
        async with open_mux_over_stream(a, role=Role.CLIENT) as client:
            termination = await client.wait_closed()
            assert termination.code is ErrorCode.NO_ERROR and termination.by_peer
            with pytest.raises(TunnelClosed):
                await client.open_stream("10.0.0.1", 80)


async def test_silent_peer_declared_dead_at_the_keepalive_deadline(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    a, b = trio.testing.memory_stream_pair()
    silent = MuxConnection(Role.SERVER, now=0.0)
    await b.send_all(silent.data_to_send())  # handshakes, then never says anything again
    cfg = MuxConfig(keepalive_interval=5.0, keepalive_timeout=15.0)
    async with open_mux_over_stream(a, role=Role.CLIENT, config=cfg) as client:
        start = trio.current_time()
        termination = await client.wait_closed()
        assert termination.code is ErrorCode.KEEPALIVE_TIMEOUT
        assert trio.current_time() - start == pytest.approx(15.0, abs=0.01)


async def test_errors_from_the_block_are_not_wrapped_in_exception_groups() -> None:
    a, b = trio.testing.memory_stream_pair()

    async def refuse(dial: IncomingDial) -> None:
        await dial.reject(RejectReason.FORBIDDEN, "namespace not mapped")

    async with trio.open_nursery() as nursery:

        async def server() -> None:
            async with open_mux_over_stream(b, role=Role.SERVER, dial_handler=refuse) as s:
                await s.wait_closed()

        nursery.start_soon(server)
        with pytest.raises(DialRejected, match="forbidden"):
            async with open_mux_over_stream(a, role=Role.CLIENT) as client:
                await client.open_stream("10.0.0.1", 80)


async def test_datagram_flow_drops_when_the_reader_falls_behind_and_ends_on_reset() -> None:
    a, b = trio.testing.memory_stream_pair()
    flows: list[MuxDatagramFlow] = []
    accepted = trio.Event()

    async def keep(dial: IncomingDial) -> None:
        flow = await dial.accept()
        assert isinstance(flow, MuxDatagramFlow)
        flows.append(flow)
        accepted.set()
        await trio.sleep_forever()

    async def answer(method: str, payload: object) -> object:
        return payload

    async with trio.open_nursery() as nursery:

        async def server() -> None:
            async with open_mux_over_stream(
                b, role=Role.SERVER, dial_handler=keep, request_handler=answer, datagram_queue=8
            ) as s:
                await s.wait_closed()

        nursery.start_soon(server)
        async with open_mux_over_stream(a, role=Role.CLIENT) as client:
            flow = await client.open_stream("10.96.0.10", 53, "udp")
            await accepted.wait()
            for i in range(20):
                assert flow.send_nowait(b"q%d" % i)
            await client.request("sync", None)  # in order after the datagrams
            remote = flows[0]
            assert remote.dropped == 12  # a full queue drops, as UDP does
            assert [await remote.receive() for _ in range(8)] == [b"q%d" % i for i in range(8)]
            await flow.aclose()
            await client.request("sync", None)
            with pytest.raises(trio.EndOfChannel):
                await remote.receive()
            with pytest.raises(trio.BrokenResourceError):
                remote.send_nowait(b"late")


async def test_draining_close_lets_open_streams_finish_and_refuses_new_ones() -> None:
    a, b = trio.testing.memory_stream_pair()
    release = trio.Event()

    async def slow_reply(dial: IncomingDial) -> None:
        stream = await dial.accept_stream()
        await release.wait()
        await stream.send_all(b"late but complete")
        await stream.send_eof()
        assert await stream.receive_some() == b""

    async with trio.open_nursery() as nursery:

        async def server() -> None:
            async with open_mux_over_stream(b, role=Role.SERVER, dial_handler=slow_reply) as s:
                await s.wait_closed()

        nursery.start_soon(server)
        async with open_mux_over_stream(a, role=Role.CLIENT) as client:
            stream = await client.open_stream("10.0.0.1", 80)
            async with trio.open_nursery() as inner:
                inner.start_soon(partial(client.aclose, drain=30.0))
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(TunnelClosed, match="going away"):
                    await client.open_stream("10.0.0.2", 80)
                release.set()
                got = b""
                while chunk := await stream.receive_some():
                    got += chunk
                await stream.aclose()
            assert got == b"late but complete"
            assert (await client.wait_closed()).code is ErrorCode.NO_ERROR


async def test_concurrent_pings_all_get_an_rtt() -> None:
    a, b = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            async with open_mux_over_stream(b, role=Role.SERVER) as s:
                await s.wait_closed()

        nursery.start_soon(server)
        async with open_mux_over_stream(a, role=Role.CLIENT) as client:
            rtts: list[float] = []

            async def one() -> None:
                rtts.append(await client.ping())

            async with trio.open_nursery() as pings:
                for _ in range(5):
                    pings.start_soon(one)
            assert len(rtts) == 5 and all(r >= 0 for r in rtts)


async def test_small_reads_of_large_frames_are_intact() -> None:
    a, b = trio.testing.memory_stream_pair()
    payload = bytes(range(251)) * 1000
    async with trio.open_nursery() as nursery:

        async def server() -> None:
            async with open_mux_over_stream(b, role=Role.SERVER, dial_handler=_echo) as s:
                await s.wait_closed()

        nursery.start_soon(server)
        async with open_mux_over_stream(a, role=Role.CLIENT) as client:
            stream = await client.open_stream("10.0.0.1", 7)
            await stream.send_all(payload)
            await stream.send_eof()
            got = bytearray()
            while chunk := await stream.receive_some(333):
                assert len(chunk) <= 333
                got += chunk
            assert bytes(got) == payload


async def test_a_cancelled_dial_is_withdrawn(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    a, b = trio.testing.memory_stream_pair()
    withdrawn = trio.Event()

    async def slow_connect(dial: IncomingDial) -> None:
        await trio.sleep(10)  # a connect timeout on the far side, say
        with pytest.raises(trio.BrokenResourceError):
            await dial.accept_stream()  # the dialer gave up meanwhile
        withdrawn.set()

    async with trio.open_nursery() as nursery:

        async def server() -> None:
            async with open_mux_over_stream(b, role=Role.SERVER, dial_handler=slow_connect) as s:
                await s.wait_closed()

        nursery.start_soon(server)
        async with open_mux_over_stream(a, role=Role.CLIENT) as client:
            with trio.move_on_after(1):
                await client.open_stream("10.0.0.1", 80)
            await withdrawn.wait()
            assert client.stats()["open_streams"] == 0
