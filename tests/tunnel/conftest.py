"""A connected pair of sans-IO tunnel ends that moves bytes directly, no sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from tpengine.tunnel import (
    DialHandler,
    Event,
    MuxConfig,
    MuxConnection,
    MuxSession,
    RequestHandler,
    Role,
    open_mux_websocket_url,
    serve_mux_websocket,
)


class Pair:
    def __init__(self, config: MuxConfig | None = None, *, now: float = 0.0) -> None:
        self.now = now
        self.client = MuxConnection(Role.CLIENT, config, now=now)
        self.server = MuxConnection(Role.SERVER, config, now=now)
        self.pump()
        assert self.client.peer is not None and self.server.peer is not None
        self.drain(self.client)
        self.drain(self.server)

    def pump(self) -> None:
        """Move bytes both ways until neither end has anything to send."""
        while True:
            moved = False
            for src, dst in ((self.client, self.server), (self.server, self.client)):
                data = src.data_to_send()
                if data:
                    dst.receive_data(data, self.now)
                    moved = True
            if not moved:
                return

    @staticmethod
    def drain(end: MuxConnection) -> list[Event]:
        events = []
        while (event := end.next_event()) is not None:
            events.append(event)
        return events


@pytest.fixture(scope="session")
def pair_cls() -> type[Pair]:
    return Pair


@asynccontextmanager
async def tunnel_pair(
    *,
    dial_handler: DialHandler | None = None,
    request_handler: RequestHandler | None = None,
    config: MuxConfig | None = None,
    client_config: MuxConfig | None = None,
    client_dial_handler: DialHandler | None = None,
) -> AsyncIterator[tuple[MuxSession, MuxSession]]:
    """A real tunnel over trio-websocket on loopback: (client session, server session)."""
    send, recv = trio.open_memory_channel[MuxSession](1)

    async def on_session(session: MuxSession, request: object) -> None:
        await send.send(session)
        await session.wait_closed()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                serve_mux_websocket,
                on_session,
                "127.0.0.1",
                0,
                config=config,
                dial_handler=dial_handler,
                request_handler=request_handler,
            )
        )
        url = f"ws://127.0.0.1:{server.port}/tunnel"
        async with open_mux_websocket_url(
            url, config=client_config or config, dial_handler=client_dial_handler
        ) as client:
            server_session = await recv.receive()
            yield client, server_session
        nursery.cancel_scope.cancel()


@pytest.fixture(scope="session")
def open_tunnel_pair():  # type: ignore[no-untyped-def]
    return tunnel_pair
