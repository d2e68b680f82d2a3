"""The port-forward relay's lean websocket, driven by wsproto's client (a real RFC 6455
implementation) over an in-memory stream pair."""

from __future__ import annotations

import random

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, Pong, TextMessage

from localcluster.apiserver._fastws import FastWebSocket


async def _client_events(stream: trio.abc.Stream, client: Connection) -> list[object]:
    """What the server wrote so far, as wsproto events."""
    with trio.move_on_after(0.5):
        while True:
            client.receive_data(await stream.receive_some(1 << 20))
            events = list(client.events())
            if events:
                return events
    return []


async def test_fragments_pings_and_a_close_as_a_client_sends_them() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    client = Connection(ConnectionType.CLIENT)
    ws = FastWebSocket(ours)
    big = random.Random(1).randbytes(200_000)
    wire = client.send(BytesMessage(data=big[:70_000], message_finished=False))
    wire += client.send(Ping(payload=b"ping!"))
    wire += client.send(BytesMessage(data=big[70_000:], message_finished=True))
    wire += client.send(TextMessage(data="hé"))
    await theirs.send_all(wire)
    assert await ws.receive() == big
    assert await ws.receive() == "hé"
    [pong] = await _client_events(theirs, client)
    assert isinstance(pong, Pong) and pong.payload == b"ping!"
    await ws.send(b"\x00" + big)
    await ws.send("text")
    messages = []
    while len(messages) < 2:
        messages += [e for e in await _client_events(theirs, client) if isinstance(e, Message)]
    assert messages[0].data == b"\x00" + big and messages[1].data == "text"
    await theirs.send_all(client.send(CloseConnection(code=1000)))
    assert await ws.receive() is None
    [close] = await _client_events(theirs, client)
    assert isinstance(close, CloseConnection) and close.code == 1000


async def test_an_unmasked_client_frame_closes_with_protocol_error() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    client = Connection(ConnectionType.CLIENT)
    ws = FastWebSocket(ours)
    await theirs.send_all(b"\x82\x03abc")  # a server-style (unmasked) binary frame
    assert await ws.receive() is None
    [close] = await _client_events(theirs, client)
    assert isinstance(close, CloseConnection) and close.code == 1002


@given(st.binary(max_size=400))
def test_any_bytes_give_messages_or_a_close(data: bytes) -> None:
    async def main() -> None:
        ours, theirs = trio.testing.memory_stream_pair()
        ws = FastWebSocket(ours, trailing=data)
        await theirs.send_eof()
        for _ in range(len(data) + 2):
            message = await ws.receive()
            assert message is None or isinstance(message, bytes | str)
            if message is None:
                return

    trio.run(main)
