"""Per-request routing over real loopback connections: keep-alive, pipelining, chunked
bodies, upgrades, and a dead upstream."""

from __future__ import annotations

import functools

import h11
import pytest
import trio

from agent._filters import parse_filter
from agent._http1 import Http1Router, Route, looks_like_http1

SUSAN = parse_filter(["x-user=susan"])


async def upstream_server(nursery: trio.Nursery, name: str) -> int:
    """An HTTP/1.1 server answering '<name> <method> <target> <body length>'; on
    'Upgrade: echo' it switches to a raw echo."""

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = 0
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        return
                    continue
                if isinstance(event, h11.Request):
                    request, body = event, 0
                elif isinstance(event, h11.Data):
                    body += len(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    if dict(request.headers).get(b"upgrade") == b"echo":
                        await stream.send_all(
                            conn.send(
                                h11.InformationalResponse(
                                    status_code=101,
                                    headers=[("upgrade", "echo"), ("connection", "upgrade")],
                                )
                            )
                        )
                        async for chunk in stream:
                            await stream.send_all(chunk)
                        return
                    reply = f"{name} {request.method.decode()} {request.target.decode()} {body}".encode()
                    await stream.send_all(
                        conn.send(
                            h11.Response(
                                status_code=200, headers=[("content-length", str(len(reply)))]
                            )
                        )
                    )
                    await stream.send_all(conn.send(h11.Data(data=reply)))
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                else:
                    return

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def start_router(
    nursery: trio.Nursery, app_port: int, laptop_port: int
) -> tuple[int, list[Http1Router]]:
    app = Route("app", functools.partial(trio.open_tcp_stream, "127.0.0.1", app_port))
    laptop = Route("laptop", functools.partial(trio.open_tcp_stream, "127.0.0.1", laptop_port))
    routers: list[Http1Router] = []

    def choose(request: h11.Request) -> Route:
        return laptop if SUSAN.matches(request.target, request.headers.raw_items()) else app

    async def handle(stream: trio.SocketStream) -> None:
        router = Http1Router(stream, choose)
        routers.append(router)
        await router.serve()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1]), routers


async def read_responses(stream: trio.SocketStream, count: int) -> list[bytes]:
    conn = h11.Connection(h11.CLIENT)
    bodies: list[bytes] = []
    conn.send(
        h11.Request(method="GET", target="/", headers=[("host", "x")])
    )  # pretend we sent them
    conn.send(h11.EndOfMessage())
    body = b""
    while len(bodies) < count:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            bodies.append(body)
            body = b""
            conn.start_next_cycle()
            if len(bodies) < count:
                conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
                conn.send(h11.EndOfMessage())
    return bodies


@pytest.fixture
async def router_port(nursery: trio.Nursery) -> int:
    app = await upstream_server(nursery, "app")
    laptop = await upstream_server(nursery, "laptop")
    port, _ = await start_router(nursery, app, laptop)
    return port


async def test_alternating_users_pipelined_on_one_connection(router_port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", router_port)
    async with stream:
        requests = b""
        for i in range(6):
            user = b"susan" if i % 2 == 0 else b"bob"
            requests += b"GET /r%d HTTP/1.1\r\nHost: web\r\nX-User: %s\r\n\r\n" % (i, user)
        await stream.send_all(requests)  # all at once: pipelined
        bodies = await read_responses(stream, 6)
    assert bodies == [(b"laptop" if i % 2 == 0 else b"app") + b" GET /r%d 0" % i for i in range(6)]


async def test_chunked_bodies_keep_their_length(router_port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", router_port)
    async with stream:
        chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        await stream.send_all(
            b"POST /up HTTP/1.1\r\nHost: web\r\nX-User: susan\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked
            + b"POST /up HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked
        )
        assert await read_responses(stream, 2) == [b"laptop POST /up 11", b"app POST /up 11"]


async def test_upgrade_becomes_a_byte_stream(router_port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", router_port)
    async with stream:
        await stream.send_all(
            b"GET /ws HTTP/1.1\r\nHost: web\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(1000)
        assert head.startswith(b"HTTP/1.1 101")
        await stream.send_all(b"\x00\x01raw bytes")
        assert await stream.receive_some(100) == b"\x00\x01raw bytes"


async def test_dead_upstream_is_a_502(nursery: trio.Nursery) -> None:
    app = await upstream_server(nursery, "app")
    closed = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    dead_port = closed.socket.getsockname()[1]
    await closed.aclose()
    port, _ = await start_router(nursery, app, dead_port)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: web\r\nX-User: susan\r\n\r\n")
        data = b""
        while True:
            chunk = await stream.receive_some(1000)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 502")
    assert b"laptop is not reachable" in data


async def test_malformed_request_gets_400(router_port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", router_port)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n")
        data = await stream.receive_some(1000)
    assert data.startswith(b"HTTP/1.1 400")


def test_sniffing() -> None:
    assert looks_like_http1(b"GET / HTTP/1.1\r\n")
    assert looks_like_http1(b"DELETE /x")
    assert not looks_like_http1(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert not looks_like_http1(b"\x16\x03\x01\x02\x00")  # TLS ClientHello
    assert not looks_like_http1(b"SSH-2.0-OpenSSH")
