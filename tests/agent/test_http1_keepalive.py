"""An upstream that drops a kept-alive connection between requests (an idle timeout)
must not cost the caller a request: idempotent requests without a body are sent again
on a fresh connection (RFC 9110 §9.2.2); other requests always get a fresh connection."""

from __future__ import annotations

import functools

import h11
import trio

from agent._http1 import Http1Router, Route
from tests.agent.conftest import read_response


async def closing_upstream(nursery: trio.Nursery, connections: list[int]) -> int:
    """Answers one request per connection, then closes without saying so."""

    async def handle(stream: trio.SocketStream) -> None:
        connections.append(1)
        data = b""
        async with stream:
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
            body = f"answer {len(connections)}".encode()
            head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            await stream.send_all(head + body)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def exchange(
    stream: trio.SocketStream, conn: h11.Connection, request: bytes
) -> tuple[int, bytes]:
    await stream.send_all(request)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    answer = await read_response(stream, conn)
    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
        conn.start_next_cycle()
    return answer


async def test_stale_upstream_connections_are_replaced(nursery: trio.Nursery) -> None:
    connections: list[int] = []
    port = await closing_upstream(nursery, connections)
    app = Route("app", functools.partial(trio.open_tcp_stream, "127.0.0.1", port))

    async def serve(stream: trio.SocketStream) -> None:
        await Http1Router(stream, lambda request: app).serve()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
    caller = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
    conn = h11.Connection(h11.CLIENT)
    async with caller:
        for n in (1, 2, 3):
            answer = await exchange(caller, conn, b"GET / HTTP/1.1\r\nhost: web\r\n\r\n")
            assert answer == (200, f"answer {n}".encode())
        post = b"POST / HTTP/1.1\r\nhost: web\r\ncontent-length: 2\r\n\r\nhi"
        # A request with a body is never sent on a connection that may be stale.
        assert await exchange(caller, conn, post) == (200, b"answer 4")
    assert len(connections) == 4
