"""H2Router against a scripted HTTP/2 upstream: resets and GOAWAY are passed on as RFC
9113 says (§6.4 RST_STREAM with its code; §6.8 streams above last-stream-id refused)."""

from __future__ import annotations

import functools

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agent._h2c import H2Router
from agent._http1 import Route

REFUSED_STREAM, CANCEL = 7, 8


class ScriptedUpstream:
    """/ok → 200; /reset → RST_STREAM(REFUSED_STREAM); /goaway → GOAWAY(last stream 0);
    anything else waits. Records the resets it receives and counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.resets: list[tuple[bytes, int]] = []
        self.got_reset = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        conn.initiate_connection()
        paths: dict[int, bytes] = {}
        async with stream:
            while data := await stream.receive_some(65536):
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    return
                for event in events:
                    self._on(conn, event, paths)
                await stream.send_all(conn.data_to_send())

    def _on(self, conn: h2.connection.H2Connection, event: object, paths: dict[int, bytes]) -> None:
        if isinstance(event, h2.events.RequestReceived):
            path = dict(event.headers)[b":path"]
            paths[event.stream_id] = path
            if path == b"/ok":
                conn.send_headers(event.stream_id, [(b":status", b"200")], end_stream=True)
            elif path == b"/reset":
                conn.reset_stream(event.stream_id, REFUSED_STREAM)
            elif path == b"/goaway":
                conn.close_connection(last_stream_id=0)
        elif isinstance(event, h2.events.DataReceived):
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.resets.append((paths.get(event.stream_id, b"?"), event.error_code))
            self.got_reset.set()


class Client:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.initiate_connection()
        self.done: dict[int, tuple[str, int]] = {}

    async def request(self, path: bytes, end: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [(b":method", b"POST"), (b":path", path), (b":scheme", b"http")]
        self.conn.send_headers(sid, [*headers, (b":authority", b"web")], end_stream=end)
        await self.stream.send_all(self.conn.data_to_send())
        return sid

    async def outcome(self, sid: int) -> tuple[str, int]:
        """('status', code) or ('reset', error code)."""
        with trio.fail_after(5):
            while sid not in self.done:
                data = await self.stream.receive_some(65536)
                assert data, "the router closed the connection"
                for event in self.conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        self.done[event.stream_id] = (
                            "status",
                            int(dict(event.headers)[b":status"]),
                        )
                    elif isinstance(event, h2.events.StreamReset):
                        self.done[event.stream_id] = ("reset", event.error_code)
                await self.stream.send_all(self.conn.data_to_send())
        return self.done[sid]


async def start(nursery: trio.Nursery, upstream: ScriptedUpstream) -> Client:
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, upstream.handle, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    route = Route("upstream", functools.partial(trio.open_tcp_stream, "127.0.0.1", port))

    async def serve(stream: trio.SocketStream) -> None:
        await H2Router(stream, lambda path, headers: route).serve()

    router = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
    stream = await trio.open_tcp_stream("127.0.0.1", router[0].socket.getsockname()[1])
    return Client(stream)  # h2 sends the preface (RFC 9113 §3.4) with the first request


async def test_upstream_reset_reaches_the_caller_with_its_code(nursery: trio.Nursery) -> None:
    client = await start(nursery, ScriptedUpstream())
    reset, ok = await client.request(b"/reset"), await client.request(b"/ok")
    assert await client.outcome(reset) == ("reset", REFUSED_STREAM)
    assert await client.outcome(ok) == ("status", 200)  # the connection lives on


async def test_caller_reset_reaches_the_upstream(nursery: trio.Nursery) -> None:
    upstream = ScriptedUpstream()
    client = await start(nursery, upstream)
    waiting = await client.request(b"/wait", end=False)
    assert await client.outcome(await client.request(b"/ok")) == ("status", 200)
    client.conn.reset_stream(waiting, CANCEL)
    await client.stream.send_all(client.conn.data_to_send())
    with trio.fail_after(5):
        await upstream.got_reset.wait()
    assert upstream.resets == [(b"/wait", CANCEL)]


async def test_upstream_goaway_refuses_unprocessed_streams_and_reconnects(
    nursery: trio.Nursery,
) -> None:
    upstream = ScriptedUpstream()
    client = await start(nursery, upstream)
    gone = await client.request(b"/goaway")
    assert await client.outcome(gone) == ("reset", REFUSED_STREAM)  # safe to retry (§8.7)
    assert await client.outcome(await client.request(b"/ok")) == ("status", 200)
    assert upstream.connections == 2


FRAMES = st.lists(
    st.tuples(
        st.integers(0, 10),  # type: DATA .. CONTINUATION and one unknown
        st.integers(0, 255),  # flags
        st.sampled_from([0, 1, 2, 3, 5, 2**31 - 1]),  # stream id
        st.binary(max_size=40),
    ),
    max_size=8,
)


@settings(max_examples=150)
@given(FRAMES, st.booleans())
def test_garbage_frames_end_the_connection_never_the_router(
    frames: list[tuple[int, int, int, bytes]], settings_first: bool
) -> None:
    """Whatever frames follow the preface, serve() returns (GOAWAY or EOF), and no
    exception escapes it: a misbehaving caller never takes the agent down."""
    data = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + (
        b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" if settings_first else b""
    )
    for kind, flags, sid, payload in frames:
        data += (
            len(payload).to_bytes(3, "big")
            + bytes([kind, flags])
            + sid.to_bytes(4, "big")
            + payload
        )

    async def unreachable() -> trio.abc.Stream:
        raise OSError("no upstream in this test")

    async def main() -> None:
        caller, agent_side = trio.testing.memory_stream_pair()
        router = H2Router(agent_side, lambda path, headers: Route("nowhere", unreachable), data)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(router.serve)
                await caller.send_eof()
                while await caller.receive_some(65536):
                    pass

    trio.run(main)
