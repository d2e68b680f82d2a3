"""A small world for the agent's tests: a fake manager, the app and the laptop.

- the app and the "laptop" are real HTTP servers on loopback that speak HTTP/1.1 and h2c
  (prior knowledge) and answer ``<name> <method> <path> <body length>``; each records the
  requests it saw;
- the fake manager is a tunnel server (``tpengine.tunnel.serve_mux_websocket``) that
  answers ``agent_arrive`` with its engagements, pushes ``engagements`` when the test
  changes them, and relays the agent's ``session:`` dials to the laptop (rejecting them
  truthfully when nothing listens there);
- the agent under test runs in the test's trio run, listening on loopback.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h11
import pytest
import trio

from agent._agent import Agent
from agent._config import AgentConfig, PortSpec
from tpengine.splice import splice
from tpengine.tunnel import IncomingDial, MuxSession, Proto, RejectReason, serve_mux_websocket

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpServer:
    name: str
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    def record(self, seen: Seen) -> None:
        self.seen.append(seen)
        self.changed.set()
        self.changed = trio.Event()

    def answer(self, seen: Seen) -> bytes:
        """``<name> <method> <path> <body length>``, padded with dots to the size asked
        for in ``x-reply-size`` (to move large answers through the agent)."""
        self.record(seen)
        reply = f"{self.name} {seen.method} {seen.path} {len(seen.body)}".encode()
        size = int(seen.headers.get("x-reply-size", "0"))
        return reply + b"." * max(0, size - len(reply))

    async def handle(self, stream: trio.SocketStream) -> None:
        first = b""
        try:
            while len(first) < len(PREFACE) and PREFACE.startswith(first):
                chunk = await stream.receive_some(len(PREFACE) - len(first))
                if not chunk:
                    return
                first += chunk
            if first == PREFACE:
                await self._serve_h2(stream, first)
            else:
                await self._serve_h1(stream, first)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except (h11.RemoteProtocolError, h2.exceptions.ProtocolError):
            pass  # a caller that does not speak HTTP: hang up, as a real server does

    async def _serve_h1(self, stream: trio.SocketStream, first: bytes) -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(first)
        body = b""
        request: h11.Request | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Request):
                request, body = event, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                headers = {k.decode(): v.decode() for k, v in request.headers}
                reply = self.answer(
                    Seen(request.method.decode(), request.target.decode(), headers, body)
                )
                length = str(len(reply))
                data = conn.send(
                    h11.Response(status_code=200, headers=[("content-length", length)])
                )
                await stream.send_all(
                    data + conn.send(h11.Data(data=reply)) + conn.send(h11.EndOfMessage())
                )
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
            else:
                return

    async def _serve_h2(self, stream: trio.SocketStream, first: bytes) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        conn = h2.connection.H2Connection(config=config)
        conn.initiate_connection()
        requests: dict[int, tuple[dict[bytes, bytes], bytearray]] = {}
        outgoing: dict[int, bytes] = {}
        data = first
        while True:
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    requests[event.stream_id] = (dict(event.headers), bytearray())
                elif isinstance(event, h2.events.DataReceived):
                    requests[event.stream_id][1].extend(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    head, body = requests.pop(event.stream_id)
                    headers = {k.decode(): v.decode() for k, v in head.items()}
                    reply = self.answer(
                        Seen(headers[":method"], headers[":path"], headers, bytes(body))
                    )
                    conn.send_headers(
                        event.stream_id,
                        [(b":status", b"200"), (b"content-length", str(len(reply)).encode())],
                    )
                    outgoing[event.stream_id] = reply
            send_within_windows(conn, outgoing)
            await stream.send_all(conn.data_to_send())
            data = await stream.receive_some(65536)
            if not data:
                return


def send_within_windows(conn: h2.connection.H2Connection, outgoing: dict[int, bytes]) -> None:
    """Send what each stream's flow-control window allows (RFC 9113 §5.2); END_STREAM
    once a stream's data is all out."""
    for sid in list(outgoing):
        rest = outgoing[sid]
        while rest:
            room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if room <= 0:
                break
            conn.send_data(sid, rest[:room])
            rest = rest[room:]
        if rest:
            outgoing[sid] = rest
        else:
            conn.end_stream(sid)
            del outgoing[sid]


async def start_server(nursery: trio.Nursery, server: HttpServer) -> HttpServer:
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
    )
    server.port = int(listeners[0].socket.getsockname()[1])
    return server


class FakeManager:
    """The manager's side of the agent contract, and nothing more."""

    def __init__(self) -> None:
        self.engagements: list[dict[str, Any]] = []
        self.arrivals: list[dict[str, Any]] = []
        self.sessions: list[MuxSession] = []
        self.dials: list[tuple[str, int, bytes]] = []
        self.port = 0
        self.scope: trio.CancelScope | None = None

    async def on_request(self, method: str, payload: Any) -> Any:
        assert method == "agent_arrive"
        self.arrivals.append(payload)
        return {"engagements": self.engagements}

    async def on_session(self, session: MuxSession, request: object) -> None:
        self.sessions.append(session)
        await session.wait_closed()

    async def on_dial(self, dial: IncomingDial) -> None:
        dest = dial.destination
        self.dials.append((dest.host, dest.port, dest.tag))
        if not dest.tag.startswith(b"session:"):
            await dial.reject(RejectReason.FORBIDDEN, "not a session dial")
            return
        if dest.proto is Proto.UDP:
            await self._relay_udp(dial)
            return
        try:  # the "client" connects to --address:--port on the laptop
            laptop = await trio.open_tcp_stream(dest.host, dest.port)
        except OSError as exc:
            await dial.reject(RejectReason.REFUSED, f"connection refused: {exc}")
            return
        await splice(await dial.accept_stream(), laptop)

    async def _relay_udp(self, dial: IncomingDial) -> None:
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.connect((dial.destination.host, dial.destination.port))
            flow = await dial.accept_flow()
            try:
                async with trio.open_nursery() as nursery:

                    async def answers() -> None:
                        while True:
                            flow.send_nowait(await sock.recv(65536))

                    nursery.start_soon(answers)
                    async for datagram in flow:
                        await sock.send(datagram)
                    nursery.cancel_scope.cancel()
            finally:
                await flow.aclose()

    async def set_engagements(self, engagements: list[dict[str, Any]]) -> None:
        self.engagements = engagements
        for session in self.sessions:
            if not session.closed:
                await session.push("engagements", engagements)


def engagement(
    id: str,
    kind: str,
    app_port: int,
    laptop_port: int,
    *,
    headers: list[list[str]] | None = None,
    session: str = "1-abc",
) -> dict[str, Any]:
    return {
        "id": id,
        "kind": kind,
        "session_id": session,
        "client": f"user{id}@laptop",
        "ports": [app_port],
        "filter": {
            "headers": headers or [],
            "path_equal": None,
            "path_prefix": None,
            "path_regex": None,
        },
        "targets": {str(app_port): ["127.0.0.1", laptop_port]},
    }


@dataclass
class World:
    nursery: trio.Nursery
    app: HttpServer
    laptop: HttpServer
    manager: FakeManager
    agent: Agent
    agent_port: int
    extra_agents: list[Agent] = field(default_factory=list)

    async def engage(self, *engagements: dict[str, Any]) -> None:
        """Push engagements and wait until the agent has them."""
        await self.manager.set_engagements(list(engagements))
        wanted = sorted(e["id"] for e in engagements)
        with trio.fail_after(5):
            await self.agent.wait_until(lambda a: sorted(e.id for e in a.engagements) == wanted)


@pytest.fixture
async def world(nursery: trio.Nursery) -> AsyncIterator[World]:
    app = await start_server(nursery, HttpServer("app"))
    laptop = await start_server(nursery, HttpServer("laptop"))
    manager = FakeManager()
    await start_manager(nursery, manager)
    config = AgentConfig(
        workload="web",
        namespace="default",
        container="web",
        manager_url=f"ws://127.0.0.1:{manager.port}/",
        ports=(PortSpec(agent_port=0, app_port=app.port, name="http"),),
        pod="web-1",
        pod_ip="10.244.0.7",
        app_env={"GREETING": "hi", "HOME": "/root"},
    )
    agent = Agent(config, listen_host="127.0.0.1", max_backoff=0.2)
    bound = await nursery.start(agent.run)
    with trio.fail_after(5):
        await agent.wait_until(lambda a: a.mux is not None)
    yield World(nursery, app, laptop, manager, agent, bound[(app.port, "TCP")])


async def start_manager(nursery: trio.Nursery, manager: FakeManager) -> None:
    """Serve the fake manager in its own cancel scope (a test may kill it and restart it
    on the same port)."""

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as manager.scope:
            async with trio.open_nursery() as inner:
                server = await inner.start(
                    functools.partial(
                        serve_mux_websocket,
                        manager.on_session,
                        "127.0.0.1",
                        manager.port,
                        dial_handler=manager.on_dial,
                        request_handler=manager.on_request,
                    )
                )
                manager.port = server.port
                task_status.started()

    await nursery.start(run)


def stop_manager(manager: FakeManager) -> None:
    assert manager.scope is not None
    manager.scope.cancel()
    manager.sessions.clear()


async def read_response(stream: trio.abc.ReceiveStream, conn: h11.Connection) -> tuple[int, bytes]:
    """One HTTP/1.1 response from ``stream`` for the request ``conn`` was told it sent:
    (status, body). The caller decides about the next cycle."""
    status, body = 0, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, body
        else:
            raise AssertionError(f"unexpected {event!r}")
