"""A tiny HTTP/1.1 + h2c (prior knowledge) server for the end-to-end tests: the cluster's
app and the laptop's handler both run it, so a test can tell who answered.

    python dual_server.py LABEL [HOST:]PORT [[HOST:]PORT…]

Every request is answered 200 with one line, ``LABEL PORT METHOD PATH user=X-USER
body=N`` (N: request body bytes received, so chunked uploads are checked too). HTTP/1.1
keeps connections alive and answers pipelined requests in order (h11); a connection whose
first bytes are the HTTP/2 preface (RFC 9113 §3.3) is served as h2c with the h2 library,
each stream answered when its request ends. Prints ``ready`` when listening, then one
``got METHOD PATH`` line per request it answers. Runs until killed, or until stdin closes when stdin is a pipe.
"""

from __future__ import annotations

import os
import stat
import sys

import h2.config
import h2.connection
import h2.events
import h11
import trio

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def answer(label: str, port: int, method: str, path: str, user: str, body: int) -> bytes:
    print(f"got {method} {path}", flush=True)
    return f"{label} {port} {method} {path} user={user} body={body}\n".encode()


async def serve_http1(stream: trio.SocketStream, first: bytes, label: str, port: int) -> None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(first)
    request: h11.Request | None = None
    body = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            if not data:
                return
        elif isinstance(event, h11.Request):
            request, body = event, 0
        elif isinstance(event, h11.Data):
            body += len(event.data)
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            text = answer(
                label,
                port,
                request.method.decode(),
                request.target.decode(),
                headers.get("x-user", "-"),
                body,
            )
            reply = h11.Response(
                status_code=200,
                headers=[("content-length", str(len(text))), ("x-served-by", label)],
            )
            await stream.send_all(conn.send(reply) + conn.send(h11.Data(data=text)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return


async def serve_h2c(stream: trio.SocketStream, first: bytes, label: str, port: int) -> None:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
    )
    conn.initiate_connection()
    requests: dict[int, dict[str, str]] = {}
    bodies: dict[int, int] = {}
    data = first
    while data:
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                requests[event.stream_id] = {str(k): str(v) for k, v in event.headers}
                bodies[event.stream_id] = 0
            elif isinstance(event, h2.events.DataReceived):
                bodies[event.stream_id] = bodies.get(event.stream_id, 0) + len(event.data)
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if isinstance(event, h2.events.StreamEnded):  # also follows END_STREAM on HEADERS
                headers = requests.pop(event.stream_id)
                text = answer(
                    label,
                    port,
                    headers[":method"],
                    headers[":path"],
                    headers.get("x-user", "-"),
                    bodies.pop(event.stream_id),
                )
                conn.send_headers(
                    event.stream_id, [(":status", "200"), ("content-length", str(len(text)))]
                )
                conn.send_data(event.stream_id, text, end_stream=True)
        await stream.send_all(conn.data_to_send())
        data = await stream.receive_some(65536)


async def handle(stream: trio.SocketStream, label: str, port: int) -> None:
    first = b""
    try:
        async with stream:
            while len(first) < len(PREFACE) and PREFACE.startswith(first):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                first += chunk
            if first.startswith(PREFACE):
                await serve_h2c(stream, first, label, port)
            else:
                await serve_http1(stream, first, label, port)
    except (trio.BrokenResourceError, h11.ProtocolError, h2.exceptions.ProtocolError):
        return


async def main(label: str, addresses: list[str]) -> None:
    async with trio.open_nursery() as nursery:
        for address in addresses:
            host, _, port = address.rpartition(":")
            listeners = await trio.open_tcp_listeners(int(port), host=host or None)
            nursery.start_soon(
                trio.serve_listeners, lambda s, p=int(port): handle(s, label, p), listeners
            )
        print("ready", flush=True)
        if stat.S_ISFIFO(os.fstat(0).st_mode):  # the test holds our stdin: end with it
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2:])
