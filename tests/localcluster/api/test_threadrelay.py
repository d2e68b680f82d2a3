"""The port-forward relay thread, between a real TLS websocket client (wsproto over trio's
SSLStream) and a pod socket on loopback: data both ways, pings, both ways to end, a
client that breaks the framing, and cancellation."""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong

from localcluster.apiserver import _portforward, _threadrelay
from localcluster.apiserver._fastws import FastWebSocket
from localcluster.pki import Pki
from tests.localcluster.api.test_fdio import _tls_pair

PodHandler = Callable[[trio.SocketStream], Awaitable[None]]


class Client:
    """The websocket client end: wsproto over TLS."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = Connection(ConnectionType.CLIENT)
        self.events: list[object] = []

    async def send(self, event: object) -> None:
        await self.stream.send_all(self.ws.send(event))  # type: ignore[arg-type]

    async def next_event(self) -> object:
        while not self.events:
            data = await self.stream.receive_some(1 << 20)
            self.ws.receive_data(data or None)
            self.events += list(self.ws.events())
        return self.events.pop(0)

    async def data(self, size: int) -> bytes:
        """``size`` bytes of channel 0 (the port's data), message by message."""
        got, message = bytearray(), bytearray()
        while len(got) < size:
            event = await self.next_event()
            assert isinstance(event, BytesMessage), event
            message += event.data  # wsproto hands out big messages in parts
            if event.message_finished:
                assert message[0] == 0
                got += message[1:]
                message.clear()
        return bytes(got)


async def _setup(
    pki: Pki, pod: PodHandler, nursery: trio.Nursery
) -> tuple[Client, Callable[[], Awaitable[None]]]:
    """The client, and the relay to start (serve_websocket, as the API server runs it)."""
    listeners = await nursery.start(functools.partial(trio.serve_tcp, pod, 0, host="127.0.0.1"))
    pod_port = listeners[0].socket.getsockname()[1]

    async def open_port(port: int) -> trio.abc.Stream:
        return await trio.open_tcp_stream("127.0.0.1", pod_port)

    client_tls, server = await _tls_pair(pki)
    ws = FastWebSocket(server)
    assert ws.lean is not None  # the case the thread takes

    async def serve() -> None:
        await _portforward.serve_websocket(ws, open_port, [8080], "ns", "pod")

    return Client(client_tls), serve


async def _relay(pki: Pki, pod: PodHandler, nursery: trio.Nursery) -> AsyncIterator[Client]:
    client, serve = await _setup(pki, pod, nursery)
    done = trio.Event()

    async def serve_then_note() -> None:
        await serve()
        done.set()

    nursery.start_soon(serve_then_note)
    await _prefixes(client)
    yield client
    with trio.fail_after(10):
        await done.wait()
    await trio.aclose_forcefully(client.stream)


async def _prefixes(client: Client) -> None:
    prefix = struct.pack("<H", 8080)
    first = {(await client.next_event()).data, (await client.next_event()).data}  # type: ignore[attr-defined]
    assert first == {b"\x00" + prefix, b"\x01" + prefix}


async def _echo(stream: trio.SocketStream) -> None:
    async with stream:
        try:
            async for chunk in stream:
                await stream.send_all(chunk)
        except trio.BrokenResourceError:
            pass


async def test_data_both_ways_a_ping_and_the_clients_close(
    pki: Pki, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = []
    real = _threadrelay.relay

    async def counted(*args: object) -> _threadrelay.Ending:
        threads.append(1)
        return await real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_threadrelay, "relay", counted)
    payload = random.Random(9).randbytes(3_000_000)

    async def send(client: Client) -> None:
        for i in range(0, len(payload), 50_000):
            await client.send(BytesMessage(data=b"\x00" + payload[i : i + 50_000]))
        await client.send(BytesMessage(data=b"\x01ignored: the error channel"))

    async for client in _relay(pki, _echo, nursery):
        with trio.fail_after(20):
            async with trio.open_nursery() as inner:
                inner.start_soon(send, client)
                assert await client.data(len(payload)) == payload
            await client.send(Ping(payload=b"hi"))
            assert await client.next_event() == Pong(payload=b"hi")
            await client.send(CloseConnection(code=4000))
            event = await client.next_event()
            assert isinstance(event, CloseConnection) and event.code == 4000
    assert threads == [1]


async def test_a_burst_of_small_messages_arrives_whole_and_in_order(
    pki: Pki, nursery: trio.Nursery
) -> None:
    """Thousands of messages in one TLS write: the relay takes each in turn."""
    parts = [b"%05d" % n for n in range(3000)]
    async for client in _relay(pki, _echo, nursery):
        burst = b"".join(client.ws.send(BytesMessage(data=b"\x00" + part)) for part in parts)
        await client.stream.send_all(burst)
        with trio.fail_after(10):
            assert await client.data(len(parts) * 5) == b"".join(parts)
        await client.send(CloseConnection(code=1000))


async def test_a_pod_that_closes_ends_the_websocket(pki: Pki, nursery: trio.Nursery) -> None:
    async def says_bye(stream: trio.SocketStream) -> None:
        await stream.send_all(b"bye")
        await stream.aclose()

    async for client in _relay(pki, says_bye, nursery):
        with trio.fail_after(10):
            assert await client.data(3) == b"bye"
            event = await client.next_event()
            assert isinstance(event, CloseConnection) and event.code == 1000


async def test_a_client_frame_without_mask_closes_with_1002(
    pki: Pki, nursery: trio.Nursery
) -> None:
    async for client in _relay(pki, _echo, nursery):
        with trio.fail_after(10):
            await client.stream.send_all(b"\x82\x02\x00x")  # unmasked: servers' frames only
            event = await client.next_event()
            assert isinstance(event, CloseConnection) and event.code == 1002


async def test_cancelling_the_relay_stops_its_thread(pki: Pki, nursery: trio.Nursery) -> None:
    client, serve = await _setup(pki, _echo, nursery)
    with trio.fail_after(10):
        async with trio.open_nursery() as inner:
            inner.start_soon(serve)
            await _prefixes(client)
            await client.send(BytesMessage(data=b"\x00ping"))
            assert await client.data(4) == b"ping"
            inner.cancel_scope.cancel()  # as the API server stopping: the thread lets go
    assert inner.cancel_scope.cancelled_caught
    with trio.fail_after(10):  # and the websocket is closed properly all the same
        event = await client.next_event()
    assert isinstance(event, CloseConnection) and event.code == 1000
    await trio.aclose_forcefully(client.stream)
