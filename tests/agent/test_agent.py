"""The traffic-agent against a fake manager, a real app and a real "laptop" on loopback:
what a caller in the cluster and a developer on the laptop would each see."""

from __future__ import annotations

import functools
import socket
from dataclasses import replace

import h2.config
import h2.connection
import h2.events
import h11
import pytest
import trio

from agent._agent import Agent
from agent._config import PortSpec
from tests.agent.conftest import (
    World,
    engagement,
    read_response,
    send_within_windows,
    start_manager,
    stop_manager,
)
from tpengine.tunnel import DialRejected, RejectReason

SUSAN = [["x-user", "susan"]]


async def http1(port: int, requests: list[bytes]) -> list[tuple[int, bytes]]:
    """Send the raw requests at once (pipelined) on one connection; read the answers."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"".join(requests))
        conn = h11.Connection(h11.CLIENT)
        answers = []
        for _ in requests:
            conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
            conn.send(h11.EndOfMessage())
            answers.append(await read_response(stream, conn))
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                break
            conn.start_next_cycle()
        return answers


def get(path: str = "/", user: str | None = None) -> bytes:
    header = f"x-user: {user}\r\n" if user else ""
    return f"GET {path} HTTP/1.1\r\nhost: web\r\n{header}\r\n".encode()


def chunked_post(path: str, user: str | None, body: bytes) -> bytes:
    header = f"x-user: {user}\r\n" if user else ""
    half = len(body) // 2
    chunks = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:half], body[half:]))
    return (
        f"POST {path} HTTP/1.1\r\nhost: web\r\n{header}transfer-encoding: chunked\r\n\r\n".encode()
        + chunks
        + b"0\r\n\r\n"
    )


async def h2c(
    port: int, requests: list[tuple[str, str]], *, body: int = 0, reply: int = 0
) -> dict[str, tuple[int, bytes]]:
    """Open one stream per (path, user) on one HTTP/2 connection, all before reading any
    answer (each with ``body`` bytes to send, asking for ``reply`` bytes back); return
    each path's status and body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    config = h2.config.H2Configuration(client_side=True, header_encoding=None)
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    paths: dict[int, str] = {}
    outgoing: dict[int, bytes] = {}
    for path, user in requests:
        sid = conn.get_next_available_stream_id()
        paths[sid] = path
        headers = [(b":method", b"POST" if body else b"GET"), (b":path", path.encode())]
        headers += [(b":scheme", b"http"), (b":authority", b"web"), (b"x-user", user.encode())]
        headers += [(b"x-reply-size", str(reply).encode())]
        conn.send_headers(sid, headers, end_stream=not body)
        if body:
            outgoing[sid] = bytes([sid % 251]) * body
    answers: dict[str, tuple[int, bytes]] = {}
    bodies: dict[int, bytes] = {}
    status: dict[int, int] = {}
    async with stream:
        send_within_windows(conn, outgoing)
        await stream.send_all(conn.data_to_send())
        while len(answers) < len(requests):
            data = await stream.receive_some(65536)
            assert data, "the agent closed the h2c connection"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status[event.stream_id] = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    sid = event.stream_id
                    answers[paths[sid]] = (status[sid], bodies.get(sid, b""))
            send_within_windows(conn, outgoing)
            await stream.send_all(conn.data_to_send())
    return answers


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_without_engagements_everything_reaches_the_app(world: World) -> None:
    assert await http1(world.agent_port, [get("/a"), get("/b", "susan")]) == [
        (200, b"app GET /a 0"),
        (200, b"app GET /b 0"),
    ]
    arrival = world.manager.arrivals[0]
    assert (arrival["workload"], arrival["pod"], arrival["pod_ip"]) == (
        "web",
        "web-1",
        "10.244.0.7",
    )
    assert arrival["env"] == {"GREETING": "hi", "TELEPRESENCE_CONTAINER": "web"}  # no HOME
    assert arrival["ports"][0]["app_port"] == world.app.port


async def test_unfiltered_intercept_goes_to_the_laptop_until_it_ends(world: World) -> None:
    await world.engage(engagement("1", "intercept", world.app.port, world.laptop.port))
    assert await http1(world.agent_port, [get("/x")]) == [(200, b"laptop GET /x 0")]
    assert world.manager.dials == [("127.0.0.1", world.laptop.port, b"session:1-abc")]
    await world.engage()
    assert await http1(world.agent_port, [get("/x")]) == [(200, b"app GET /x 0")]


async def test_header_filter_routes_each_request_of_one_keepalive_connection(world: World) -> None:
    await world.engage(
        engagement("1", "intercept", world.app.port, world.laptop.port, headers=SUSAN)
    )
    answers = await http1(
        world.agent_port,
        [
            get("/1", "susan"),
            chunked_post("/2", "bob", b"x" * 1000),
            chunked_post("/3", "susan", b"y" * 70000),
            get("/4"),
            get("/5", "Susan"),  # the value is a regular expression matched in full
        ],
    )
    assert answers == [
        (200, b"laptop GET /1 0"),
        (200, b"app POST /2 1000"),
        (200, b"laptop POST /3 70000"),
        (200, b"app GET /4 0"),
        (200, b"app GET /5 0"),
    ]


async def test_h2c_streams_of_different_users_reach_different_upstreams(world: World) -> None:
    await world.engage(
        engagement("1", "intercept", world.app.port, world.laptop.port, headers=SUSAN)
    )
    answers = await h2c(world.agent_port, [("/s", "susan"), ("/b", "bob"), ("/s2", "susan")])
    assert answers == {
        "/s": (200, b"laptop GET /s 0"),
        "/b": (200, b"app GET /b 0"),
        "/s2": (200, b"laptop GET /s2 0"),
    }
    # One upstream connection per route: both of Susan's streams went through one dial.
    assert len(world.manager.dials) == 1


async def test_wiretap_caller_gets_the_app_answer_and_the_laptop_a_copy(world: World) -> None:
    await world.engage(engagement("1", "wiretap", world.app.port, world.laptop.port))
    request = b"POST /tap HTTP/1.1\r\nhost: web\r\ncontent-length: 5\r\n\r\nhello"
    assert await http1(world.agent_port, [request, get("/tap2")]) == [
        (200, b"app POST /tap 5"),
        (200, b"app GET /tap2 0"),
    ]
    with trio.fail_after(5):
        while len(world.laptop.seen) < 2:
            await world.laptop.changed.wait()
    assert [(s.method, s.path, s.body) for s in world.laptop.seen] == [
        ("POST", "/tap", b"hello"),
        ("GET", "/tap2", b""),
    ]
    assert [s.path for s in world.app.seen] == ["/tap", "/tap2"]
    assert world.agent.copy_stats.dropped == 0


async def test_filtered_wiretap_copies_only_matching_requests(world: World) -> None:
    await world.engage(engagement("1", "wiretap", world.app.port, world.laptop.port, headers=SUSAN))
    answers = await http1(world.agent_port, [get("/bob", "bob"), get("/susan", "susan")])
    assert answers == [(200, b"app GET /bob 0"), (200, b"app GET /susan 0")]
    with trio.fail_after(5):
        while not world.laptop.seen:
            await world.laptop.changed.wait()
    assert [s.path for s in world.laptop.seen] == ["/susan"]


async def test_a_dead_wiretap_client_never_blocks_the_caller(world: World) -> None:
    await world.engage(engagement("1", "wiretap", world.app.port, closed_port()))
    assert await http1(world.agent_port, [get("/a"), get("/b")]) == [
        (200, b"app GET /a 0"),
        (200, b"app GET /b 0"),
    ]


@pytest.mark.parametrize("headers", [None, SUSAN])
async def test_laptop_not_listening_gives_502(
    world: World, headers: list[list[str]] | None
) -> None:
    await world.engage(engagement("1", "intercept", world.app.port, closed_port(), headers=headers))
    async with world.manager.sessions[0].subscribe("engagement_error") as errors:
        [(status, body)] = await http1(world.agent_port, [get("/", "susan")])
        assert status == 502
        assert b"refused" in body
        with trio.fail_after(5):
            report = await errors.receive()  # the manager learns why, for `tp list`
    assert report["id"] == "1" and "refused" in report["message"]
    # Other users are not affected by Susan's dead laptop.
    if headers:
        assert await http1(world.agent_port, [get("/", "bob")]) == [(200, b"app GET / 0")]


async def test_h2c_laptop_not_listening_gives_502_on_that_stream_only(world: World) -> None:
    await world.engage(engagement("1", "intercept", world.app.port, closed_port(), headers=SUSAN))
    answers = await h2c(world.agent_port, [("/s", "susan"), ("/b", "bob")])
    assert answers["/s"][0] == 502
    assert answers["/b"] == (200, b"app GET /b 0")


async def test_non_http_traffic_on_a_filtered_port_goes_to_the_app(world: World) -> None:
    await world.engage(
        engagement("1", "intercept", world.app.port, world.laptop.port, headers=SUSAN)
    )
    stream = await trio.open_tcp_stream("127.0.0.1", world.agent_port)
    async with stream:
        await stream.send_all(b"\x16\x03\x01 not http at all")
        await stream.send_eof()
        # The app (an HTTP server) got bytes it cannot parse and closed: no laptop dial.
        with trio.fail_after(5):
            while await stream.receive_some(65536):
                pass
    assert world.manager.dials == []


async def test_dead_manager_traffic_still_reaches_the_app_and_the_agent_comes_back(
    world: World,
) -> None:
    await world.engage(engagement("1", "intercept", world.app.port, world.laptop.port))
    stop_manager(world.manager)
    with trio.fail_after(5):
        await world.agent.wait_until(lambda a: a.mux is None)
    assert world.agent.engagements == []
    assert await http1(world.agent_port, [get("/down")]) == [(200, b"app GET /down 0")]
    await start_manager(world.nursery, world.manager)  # same port, same engagements
    with trio.fail_after(5):
        await world.agent.wait_until(lambda a: a.arrivals == 2 and bool(a.engagements))
    assert await http1(world.agent_port, [get("/up")]) == [(200, b"laptop GET /up 0")]


async def test_to_pod_dials_reach_the_pods_localhost(world: World) -> None:
    session = world.manager.sessions[0]
    stream = await session.open_stream("127.0.0.1", world.app.port, "tcp")
    async with stream:
        await stream.send_all(get("/via-to-pod"))
        data = b""
        while b"app GET /via-to-pod 0" not in data:
            chunk = await stream.receive_some(65536)
            assert chunk
            data += chunk

    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as udp:
        await udp.bind(("127.0.0.1", 0))
        flow = await session.open_stream("127.0.0.1", udp.getsockname()[1], "udp")
        try:
            flow.send_nowait(b"ping")
            datagram, source = await udp.recvfrom(100)
            assert datagram == b"ping"
            await udp.sendto(b"pong", source)
            with trio.fail_after(5):
                assert await flow.receive() == b"pong"
        finally:
            await flow.aclose()

    with pytest.raises(DialRejected) as refused:
        await session.open_stream("127.0.0.1", closed_port(), "tcp")
    assert refused.value.reason is RejectReason.REFUSED
    with pytest.raises(DialRejected) as forbidden:
        await session.open_stream("10.1.2.3", 80, "tcp")
    assert forbidden.value.reason is RejectReason.FORBIDDEN


async def test_a_misbehaving_caller_does_not_take_the_agent_down(world: World) -> None:
    await world.engage(
        engagement("1", "intercept", world.app.port, world.laptop.port, headers=SUSAN)
    )
    data_on_stream_0 = b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x"  # RFC 9113 §6.1: an error
    for junk in (
        b"GET / HTTP/1.1\r\n\x00\x01bad header\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + data_on_stream_0,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00",  # then EOF mid-frame
    ):
        stream = await trio.open_tcp_stream("127.0.0.1", world.agent_port)
        async with stream:
            await stream.send_all(junk)
            await stream.send_eof()
            with trio.fail_after(5):
                while await stream.receive_some(65536):
                    pass
    assert await http1(world.agent_port, [get("/ok", "susan")]) == [(200, b"laptop GET /ok 0")]


async def test_h2c_wiretap_copies_each_matching_stream(world: World) -> None:
    await world.engage(engagement("1", "wiretap", world.app.port, world.laptop.port, headers=SUSAN))
    answers = await h2c(world.agent_port, [("/s", "susan"), ("/b", "bob")])
    assert answers == {"/s": (200, b"app GET /s 0"), "/b": (200, b"app GET /b 0")}
    with trio.fail_after(5):
        while not world.laptop.seen:
            await world.laptop.changed.wait()
    [copy] = world.laptop.seen
    assert (copy.method, copy.path, copy.headers["x-user"], copy.headers["host"]) == (
        "GET",
        "/s",
        "susan",
        "web",
    )


async def _sink(nursery: trio.Nursery, received: list[bytes], done: trio.Event) -> int:
    """A raw TCP 'laptop' that records what it is sent."""

    async def handle(stream: trio.SocketStream) -> None:
        async for chunk in stream:
            received.append(chunk)
        done.set()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def _echo(nursery: trio.Nursery) -> int:
    async def handle(stream: trio.SocketStream) -> None:
        async for chunk in stream:
            await stream.send_all(chunk)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def _second_agent(world: World, app_port: int, protocol: str = "TCP") -> int:
    config = replace(
        world.agent.config,
        ports=(PortSpec(agent_port=0, app_port=app_port, protocol=protocol),),
    )
    agent = Agent(config, listen_host="127.0.0.1", max_backoff=0.2)
    bound = await world.nursery.start(agent.run)
    with trio.fail_after(5):
        await agent.wait_until(lambda a: a.mux is not None)
    world.extra_agents.append(agent)
    return int(bound[(app_port, protocol)])


async def test_raw_tcp_wiretap_copies_the_callers_bytes(world: World) -> None:
    echo = await _echo(world.nursery)
    received: list[bytes] = []
    done = trio.Event()
    sink = await _sink(world.nursery, received, done)
    agent_port = await _second_agent(world, echo)
    await world.engage(engagement("9", "wiretap", echo, sink))
    for agent in world.extra_agents:
        with trio.fail_after(5):
            await agent.wait_until(lambda a: bool(a.engagements))
    stream = await trio.open_tcp_stream("127.0.0.1", agent_port)
    async with stream:
        await stream.send_all(b"\x00binary hello")
        assert await stream.receive_some(100) == b"\x00binary hello"  # the app answers
        await stream.send_all(b" and more")
        assert await stream.receive_some(100) == b" and more"
    with trio.fail_after(5):
        await done.wait()
    assert b"".join(received) == b"\x00binary hello and more"


async def test_udp_port_passes_datagrams_to_the_app(world: World) -> None:
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as app:
        await app.bind(("127.0.0.1", 0))
        agent_port = await _second_agent(world, app.getsockname()[1], "UDP")
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as caller:
            await caller.connect(("127.0.0.1", agent_port))
            await caller.send(b"query")
            with trio.fail_after(5):
                datagram, source = await app.recvfrom(100)
            assert datagram == b"query"
            await app.sendto(b"answer", source)
            with trio.fail_after(5):
                assert await caller.recv(100) == b"answer"


async def test_h2c_large_bodies_both_ways_within_flow_control(world: World) -> None:
    await world.engage(
        engagement("1", "intercept", world.app.port, world.laptop.port, headers=SUSAN)
    )
    size = 300_000  # several 64 KiB stream windows each way
    answers = await h2c(world.agent_port, [("/s", "susan"), ("/b", "bob")], body=size, reply=size)
    assert answers["/s"][1].startswith(b"laptop POST /s 300000.")
    assert answers["/b"][1].startswith(b"app POST /b 300000.")
    assert {len(body) for _, body in answers.values()} == {size}
    assert [len(s.body) for s in world.laptop.seen] == [size]


async def test_a_slow_wiretap_client_costs_copies_not_the_callers_time(world: World) -> None:
    stalled = trio.Event()

    async def never_reads(stream: trio.SocketStream) -> None:
        await stalled.wait()  # accepts, then reads nothing: its windows fill up

    listeners = await world.nursery.start(
        functools.partial(trio.serve_tcp, never_reads, 0, host="127.0.0.1")
    )
    await world.engage(
        engagement("1", "wiretap", world.app.port, listeners[0].socket.getsockname()[1])
    )
    body = b"z" * 200_000
    request = b"POST /big HTTP/1.1\r\nhost: web\r\ncontent-length: 200000\r\n\r\n" + body
    answers = await http1(world.agent_port, [request] * 40)  # 8 MB of copies
    assert answers == [(200, b"app POST /big 200000")] * 40
    assert world.agent.copy_stats.dropped > 0
    stalled.set()


async def test_replace_also_answers_on_the_apps_own_port(world: World) -> None:
    app_port = closed_port()  # the app container is gone: its port is free
    agent_port = await _second_agent(world, app_port)
    await world.engage(engagement("7", "replace", app_port, world.laptop.port))
    with trio.fail_after(5):
        while True:  # the agent binds the app's port once it learns of the replace
            try:
                answers = await http1(app_port, [get("/local")])
                break
            except OSError:
                await trio.sleep(0.01)
    assert answers == [(200, b"laptop GET /local 0")]
    assert await http1(agent_port, [get("/svc")]) == [(200, b"laptop GET /svc 0")]
    await world.engage()
    with trio.fail_after(5):
        while True:  # ... and lets it go when the replace ends
            try:
                await (await trio.open_tcp_stream("127.0.0.1", app_port)).aclose()
                await trio.sleep(0.01)
            except OSError:
                break


async def test_udp_port_intercepted_reaches_the_laptop(world: World) -> None:
    with (
        trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as app,
        trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as laptop,
    ):
        await app.bind(("127.0.0.1", 0))
        await laptop.bind(("127.0.0.1", 0))
        app_port, laptop_port = app.getsockname()[1], laptop.getsockname()[1]
        agent_port = await _second_agent(world, app_port, "UDP")
        await world.engage(engagement("5", "intercept", app_port, laptop_port))
        for agent in world.extra_agents:
            with trio.fail_after(5):
                await agent.wait_until(lambda a: bool(a.engagements))
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as caller:
            await caller.connect(("127.0.0.1", agent_port))
            await caller.send(b"query")
            with trio.fail_after(5):
                datagram, source = await laptop.recvfrom(100)
            assert datagram == b"query"
            await laptop.sendto(b"laptop answer", source)
            with trio.fail_after(5):
                assert await caller.recv(100) == b"laptop answer"
