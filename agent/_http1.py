"""Per-request routing of HTTP/1.1 connections (h11 on both sides).

The agent sits between a caller and two possible upstreams: the app container and an
engaged client's laptop. A filtered intercept must decide per request, not per
connection: one keep-alive connection may carry Susan's request to the laptop and the
next one to the app. So each request is parsed (h11 as a server), its route chosen, and
re-sent on a kept-alive upstream connection of that route (h11 as a client); the response
is relayed back. Framing (Content-Length or chunked, RFC 9112 §6) is redone by h11, so
pipelined requests are answered in order (RFC 9112 §9.3.2). An upgrade (WebSocket, RFC
9110 §7.8) that the upstream accepts with 101 turns the connection into a byte splice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11
import trio

from tpengine.splice import splice

log = logging.getLogger(__name__)

READ_SIZE = 65536
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
MAX_HEADERS = 64 * 1024


@dataclass(frozen=True)
class Route:
    """Where a request goes; ``connect`` opens a fresh upstream connection."""

    name: str
    connect: Callable[[], Awaitable[trio.abc.Stream]] = field(compare=False)


Choose = Callable[[h11.Request], Route]
#: Sees each request's events (Request, Data, EndOfMessage) as they are relayed; used for
#: wiretap copies. It must not block: it runs on the caller's path.
Observe = Callable[[h11.Event], None]


class _Upstream:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADERS)

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send_all(data)

    async def next_event(self) -> h11.Event:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(bytes(await self.stream.receive_some(READ_SIZE)))
                continue
            if event is h11.PAUSED or isinstance(event, type):
                return h11.ConnectionClosed()
            return event


class Http1Router:
    """Serves one caller connection until it closes."""

    def __init__(
        self,
        client: trio.abc.Stream,
        choose: Choose,
        first_bytes: bytes = b"",
        *,
        observe: Observe | None = None,
    ) -> None:
        self.client = client
        self.choose = choose
        self.observe = observe
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
        if first_bytes:
            self.conn.receive_data(first_bytes)
        self.upstreams: dict[Route, _Upstream] = {}
        self.requests = 0

    async def serve(self) -> None:
        try:
            while True:
                request = await self._next_client_event()
                if not isinstance(request, h11.Request):
                    return  # ConnectionClosed, or the caller sent something else
                self.requests += 1
                if not await self._relay(request):
                    return
                if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
                    return
                self.conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            await self._answer_error(exc.error_status_hint, str(exc))
        except h11.LocalProtocolError as exc:
            # Something an upstream sent cannot be relayed as HTTP/1.1: tell the caller.
            await self._answer_error(502, f"cannot relay the response: {exc}")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                for upstream in self.upstreams.values():
                    await upstream.stream.aclose()
                await self.client.aclose()

    async def _next_client_event(self) -> h11.Event:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(bytes(await self.client.receive_some(READ_SIZE)))
                continue
            if event is h11.PAUSED or isinstance(event, type):
                return h11.ConnectionClosed()
            return event

    async def _send_client(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self.client.send_all(data)

    async def _upstream(self, route: Route) -> _Upstream:
        upstream = self.upstreams.get(route)
        if upstream is not None and upstream.conn.our_state is h11.IDLE:
            return upstream
        if upstream is not None:
            del self.upstreams[route]
            await upstream.stream.aclose()
        upstream = _Upstream(await route.connect())
        self.upstreams[route] = upstream
        return upstream

    async def _reconnect(self, route: Route) -> _Upstream:
        stale = self.upstreams.pop(route, None)
        if stale is not None:
            await stale.stream.aclose()
        return await self._upstream(route)

    async def _relay(self, request: h11.Request) -> bool:
        """Forward one request and its response; False when the connection must end."""
        route = self.choose(request)
        if self.observe is not None:
            self.observe(request)
        cached = self.upstreams.get(route)
        reused = cached is not None and cached.conn.our_state is h11.IDLE
        # RFC 9110 §9.2.2: only an idempotent request without a body may be sent again
        # if a kept-alive upstream connection turns out to be closed (RFC 9112 §9.3.1);
        # any other request gets a fresh connection rather than risk a lost request.
        retryable = request.method in _IDEMPOTENT and not _has_body(request)
        try:
            upstream = await (self._upstream(route) if retryable else self._reconnect(route))
            reused = reused and retryable
        except OSError as exc:
            await self._answer_error(502, f"{route.name} is not reachable: {exc}")
            return False
        head = h11.Request(
            method=request.method,
            target=request.target,
            headers=list(request.headers.raw_items()),
            http_version=request.http_version,
        )
        try:
            await upstream.send(head)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if not reused:
                raise
            try:  # a kept-alive upstream that closed meanwhile: nothing was sent yet
                upstream = await self._reconnect(route)
            except OSError as exc:
                await self._answer_error(502, f"{route.name} is not reachable: {exc}")
                return False
            reused = False
            await upstream.send(head)
        while True:  # the request body
            event = await self._next_client_event()
            if self.observe is not None and isinstance(event, (h11.Data, h11.EndOfMessage)):
                self.observe(event)
            if isinstance(event, h11.Data):
                await upstream.send(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await upstream.send(h11.EndOfMessage(headers=list(event.headers.raw_items())))
                break
            else:
                return False  # the caller went away mid-request
        retry = head if reused else None
        return await self._relay_response(route, upstream, retry)

    async def _relay_response(
        self, route: Route, upstream: _Upstream, retry: h11.Request | None = None
    ) -> bool:
        while True:
            try:
                event = await upstream.next_event()
            except (h11.RemoteProtocolError, trio.BrokenResourceError) as exc:
                if retry is not None:
                    fresh, retry = await self._resend(route, retry), None
                    if fresh is None:
                        return False
                    upstream = fresh
                    continue
                await self._answer_error(502, f"{route.name} answered badly: {exc}")
                return False
            if isinstance(event, h11.ConnectionClosed) and retry is not None:
                fresh, retry = await self._resend(route, retry), None
                if fresh is None:
                    return False
                upstream = fresh
                continue
            retry = None  # the upstream answered: from here on, no second try
            if isinstance(event, h11.InformationalResponse):
                await self._send_client(
                    h11.InformationalResponse(
                        status_code=event.status_code,
                        headers=list(event.headers.raw_items()),
                        reason=event.reason,
                    )
                )
                if event.status_code == 101:
                    await self._switch_protocols(route, upstream)
                    return False
            elif isinstance(event, h11.Response):
                await self._send_client(
                    # Re-framed as HTTP/1.1 towards the caller (h11 speaks only 1.1; an
                    # HTTP/1.0 upstream's close-delimited body becomes chunked or is closed
                    # after, as RFC 9112 §6 allows).
                    h11.Response(
                        status_code=event.status_code,
                        headers=_hop_by_hop_removed(event.headers.raw_items(), event.http_version),
                        reason=event.reason,
                    )
                )
            elif isinstance(event, h11.Data):
                await self._send_client(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await self._send_client(h11.EndOfMessage(headers=list(event.headers.raw_items())))
                if upstream.conn.our_state is h11.DONE and upstream.conn.their_state is h11.DONE:
                    upstream.conn.start_next_cycle()
                return True
            else:  # upstream closed before the response ended
                await self._answer_error(502, f"{route.name} closed the connection")
                return False

    async def _resend(self, route: Route, head: h11.Request) -> _Upstream | None:
        try:
            upstream = await self._reconnect(route)
            await upstream.send(head)
            await upstream.send(h11.EndOfMessage())
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await self._answer_error(502, f"{route.name} is not reachable: {exc}")
            return None
        return upstream

    async def _switch_protocols(self, route: Route, upstream: _Upstream) -> None:
        """After 101: the bytes after the headers on each side belong to the new protocol."""
        del self.upstreams[route]
        client_rest, _ = self.conn.trailing_data
        upstream_rest, _ = upstream.conn.trailing_data
        if client_rest:
            await upstream.stream.send_all(client_rest)
        if upstream_rest:
            await self.client.send_all(upstream_rest)
        await splice(self.client, upstream.stream)

    async def _answer_error(self, status: int, message: str) -> None:
        log.info("answering %d: %s", status, message)
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # a response already started: all that is left is to close
        body = f"{message}\n".encode()
        try:
            await self._send_client(
                h11.Response(
                    status_code=status,
                    headers=[
                        ("content-type", "text/plain"),
                        ("content-length", str(len(body))),
                        ("connection", "close"),
                    ],
                )
            )
            await self._send_client(h11.Data(data=body))
            await self._send_client(h11.EndOfMessage())
        except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def _has_body(request: h11.Request) -> bool:
    """RFC 9112 §6.3: a request has a body only with Content-Length or Transfer-Encoding."""
    for name, value in request.headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _hop_by_hop_removed(
    headers: list[tuple[bytes, bytes]], version: bytes
) -> list[tuple[bytes, bytes]]:
    """An HTTP/1.0 response's ``Connection: keep-alive`` means nothing in 1.1 (RFC 9112
    §9.3); other headers pass as they are."""
    if version != b"1.0":
        return list(headers)
    return [
        (k, v)
        for k, v in headers
        if not (k.lower() == b"connection" and v.lower() == b"keep-alive")
    ]


def looks_like_http1(data: bytes) -> bool:
    """The first bytes of an HTTP/1.x request line (RFC 9112 §3: method SP target)."""
    method, space, _ = data.partition(b" ")
    return (
        bool(space)
        and 0 < len(method) <= 16
        and method.isupper()
        and method.isalpha()
        and not data.startswith(b"PRI * HTTP/2.0")
    )
