"""HTTP/1.1 over a trio stream with h11: requests in, responses (whole, streamed, upgrade) out.

One task per connection; requests on a connection are served in turn (keep-alive). A
streamed response (watch, log follow) ends when its iterator ends or the client goes away
(a concurrent read sees EOF). An upgrade response (101) hands the raw stream and the bytes
h11 already read to a handler (websocket, SPDY).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import trio

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024
MAX_HEADERS = 64 * 1024
IDLE_TIMEOUT = 1800.0  # idle keep-alive connections (clients reconnect after)


@dataclass(frozen=True, kw_only=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lowercase names; repeated headers joined with ", "
    body: bytes
    peer: str = ""

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def args(self, name: str) -> list[str]:
        return self.query.get(name, [])

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


UpgradeHandler = Callable[[trio.abc.Stream, bytes], Awaitable[None]]


@dataclass(kw_only=True)
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None  # chunked body
    upgrade: UpgradeHandler | None = None  # with status 101
    code_for_audit: int | None = None


Handler = Callable[[Request], Awaitable[Response]]


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await stream.receive_some(65536)
        conn.receive_data(bytes(data))  # b"" is EOF


async def read_request(conn: h11.Connection, stream: trio.abc.Stream, peer: str) -> Request | None:
    """The next request, or None when the client closed the connection cleanly."""
    with trio.move_on_after(IDLE_TIMEOUT) as scope:
        event = await _next_event(conn, stream)
    if scope.cancelled_caught:
        return None
    if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
        return None
    if not isinstance(event, h11.Request):
        raise h11.RemoteProtocolError("expected a request", error_status_hint=400)
    chunks: list[bytes] = []
    size = 0
    while True:
        part = await _next_event(conn, stream)
        if isinstance(part, h11.Data):
            size += len(part.data)
            if size > MAX_BODY:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
            chunks.append(bytes(part.data))
        elif isinstance(part, h11.EndOfMessage) or part is h11.PAUSED:
            break
        else:
            raise h11.RemoteProtocolError("unexpected event in request body", error_status_hint=400)
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    target = event.target.decode("latin-1")
    parts = urlsplit(target)
    return Request(
        method=event.method.decode("latin-1").upper(),
        path=unquote(parts.path) or "/",
        query=parse_qs(parts.query, keep_blank_values=True),
        headers=headers,
        body=b"".join(chunks),
        peer=peer,
    )


async def _send(conn: h11.Connection, stream: trio.abc.Stream, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


async def _stream_body(
    conn: h11.Connection, stream: trio.abc.Stream, body: AsyncIterator[bytes]
) -> bool:
    """Send a chunked body; False when the client went away first."""
    client_gone = False
    async with trio.open_nursery() as nursery:

        async def watch_for_eof() -> None:
            nonlocal client_gone
            try:
                while await stream.receive_some(65536):
                    pass  # a client never sends while a streamed reply runs
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            client_gone = True
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_for_eof)
        try:
            async for chunk in body:
                if chunk:
                    await _send(conn, stream, h11.Data(data=chunk))
            await _send(conn, stream, h11.EndOfMessage())
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    await aclose()
        nursery.cancel_scope.cancel()
    return not client_gone


async def serve_connection(stream: trio.abc.Stream, handler: Handler, *, peer: str = "") -> None:
    """Serve requests on one connection until it closes; never raises on bad input."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
    try:
        while True:
            try:
                request = await read_request(conn, stream, peer)
            except h11.RemoteProtocolError as exc:
                await _send_error(conn, stream, exc.error_status_hint)
                return
            if request is None:
                return
            response = await handler(request)
            if response.upgrade is not None and response.status == 101:
                await _send(
                    conn,
                    stream,
                    h11.InformationalResponse(status_code=101, headers=response.headers),
                )
                trailing, _ = conn.trailing_data
                await response.upgrade(stream, bytes(trailing))
                return
            if not await _send_response(conn, stream, response):
                return
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        return
    except h11.RemoteProtocolError:
        return
    finally:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


async def _send_response(conn: h11.Connection, stream: trio.abc.Stream, response: Response) -> bool:
    headers = list(response.headers)
    if response.stream is None:
        headers.append(("Content-Length", str(len(response.body))))
    if conn.their_state is h11.MIGHT_SWITCH_PROTOCOL or conn.their_state is h11.SWITCHED_PROTOCOL:
        headers.append(("Connection", "close"))
    await _send(conn, stream, h11.Response(status_code=response.status, headers=headers))
    if response.stream is not None:
        return await _stream_body(conn, stream, response.stream)
    if response.body:
        await _send(conn, stream, h11.Data(data=response.body))
    await _send(conn, stream, h11.EndOfMessage())
    return True


async def _send_error(conn: h11.Connection, stream: trio.abc.Stream, status: int) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"malformed HTTP request","reason":"BadRequest","code":%d}' % status
    )
    try:
        await _send(
            conn,
            stream,
            h11.Response(
                status_code=status,
                headers=[
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    ("Connection", "close"),
                ],
            ),
        )
        await _send(conn, stream, h11.Data(data=body))
        await _send(conn, stream, h11.EndOfMessage())
    except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
