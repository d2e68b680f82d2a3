"""A connected pair of sans-IO tunnel ends that moves bytes directly, no sockets."""

from __future__ import annotations

import pytest

from tpengine.tunnel import Event, MuxConfig, MuxConnection, Role


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
