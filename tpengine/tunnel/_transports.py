"""Carriers for the tunnel: a trio-websocket connection or any trio byte stream.

Frames are a byte stream, so websocket message boundaries need not match them: the
writer sends whatever the core queued as one binary message (split at the peer's
1 MiB default message limit), and the reader feeds each message as it comes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
import trio_websocket

from tpengine.fdstream import FdStream

from ._config import MuxConfig, Role
from ._driver import (
    DialHandler,
    MuxSession,
    RequestHandler,
    open_mux_session,
    unwrap_single_exception,
)
from ._frames import MAGIC

log = logging.getLogger(__name__)

#: trio-websocket's 4 KiB default makes the receiver the bottleneck (measurements.md).
WS_RECEIVE_BUFFER = 256 * 1024
#: Largest websocket message we send: trio-websocket's default receive limit (1 MiB).
WS_MAX_MESSAGE = 1024 * 1024
#: The limit we accept, with room for a peer that batches a little more.
WS_ACCEPT_MESSAGE = 4 * 1024 * 1024
#: The websocket subprotocol naming this tunnel protocol's major version.
SUBPROTOCOL = "tpmux.v1"


class WebSocketTransport:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws

    async def receive(self) -> bytes:
        try:
            message = await self.ws.get_message()
        except trio_websocket.ConnectionClosed:
            return b""
        return message.encode() if isinstance(message, str) else message

    async def send(self, data: bytes) -> None:
        try:
            if len(data) <= WS_MAX_MESSAGE:
                await self.ws.send_message(data)
                return
            view = memoryview(data)
            for pos in range(0, len(data), WS_MAX_MESSAGE):
                await self.ws.send_message(bytes(view[pos : pos + WS_MAX_MESSAGE]))
        except trio_websocket.ConnectionClosed as exc:
            raise trio.BrokenResourceError(f"websocket closed: {exc.reason}") from None

    async def aclose(self) -> None:
        await self.ws.aclose()


class StreamTransport:
    """Any trio byte stream (TCP, a Kubernetes port-forward, a unix socket)."""

    def __init__(self, stream: trio.abc.Stream, receive_size: int = 256 * 1024) -> None:
        self.stream = stream
        self.receive_size = receive_size
        #: What the stream takes of some bytes without waiting, for streams that can say
        #: (a descriptor's: FdStream; a port-forward's: TLS and websocket on one); the
        #: driver then writes from the task that queued.
        self.send_nowait: Callable[[bytes], int] | None = getattr(stream, "send_nowait", None)
        # A stream whose send_nowait may take bytes before they are on the wire (a TLS
        # record or websocket frame the socket took only part of) says so with
        # ``output_pending`` and sends them with ``flush()`` (None: a descriptor's stream
        # never holds any).
        self.flush: Callable[[], Awaitable[None]] | None = getattr(stream, "flush", None)

    @property
    def output_pending(self) -> bool:
        """Whether bytes that :attr:`send_nowait` took are still to be sent (by
        :attr:`flush`, or the next :meth:`send`)."""
        return self.flush is not None and bool(getattr(self.stream, "output_pending", False))

    async def receive(self) -> bytes:
        data = await self.stream.receive_some(self.receive_size)
        return data if isinstance(data, bytes) else bytes(data)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def aclose(self) -> None:
        await self.stream.aclose()


class ReplayStream(trio.abc.HalfCloseableStream):
    """A stream whose first bytes were already read (to sniff the protocol): they are
    handed out again before anything else."""

    def __init__(self, stream: trio.abc.Stream, head: bytes) -> None:
        self.stream = stream
        self._head = head

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._head:
            if max_bytes is None or max_bytes >= len(self._head):
                out, self._head = self._head, b""
            else:
                out, self._head = self._head[:max_bytes], self._head[max_bytes:]
            await trio.lowlevel.checkpoint()
            return out
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if isinstance(self.stream, trio.abc.HalfCloseableStream):
            await self.stream.send_eof()
        else:
            await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await self.stream.aclose()


async def sniff_raw_mux(stream: trio.abc.Stream) -> tuple[bool, ReplayStream]:
    """Tell a raw tunnel (its first bytes are the preamble's ``TPMUX``) from anything
    else (a websocket's ``GET``) on one listening port. Returns whether it is the raw
    tunnel, and the stream with the bytes read so far put back. Reads only until the
    answer is known; EOF before that counts as "not the tunnel"."""
    head = b""
    while len(head) < len(MAGIC) and MAGIC.startswith(head):
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        head += chunk
    return head.startswith(MAGIC), ReplayStream(stream, head)


@asynccontextmanager
async def open_mux_over_websocket(
    ws: trio_websocket.WebSocketConnection, **kwargs: Any
) -> AsyncIterator[MuxSession]:
    """A session over an open websocket; the client end of the websocket is the
    tunnel CLIENT (odd stream ids)."""
    role = Role.CLIENT if ws.is_client else Role.SERVER
    async with open_mux_session(WebSocketTransport(ws), role=role, **kwargs) as session:
        yield session


@asynccontextmanager
async def open_mux_over_stream(
    stream: trio.abc.Stream, *, role: Role, **kwargs: Any
) -> AsyncIterator[MuxSession]:
    async with open_mux_session(StreamTransport(stream), role=role, **kwargs) as session:
        yield session


@asynccontextmanager
async def open_mux_url(
    url: str,
    *,
    config: MuxConfig | None = None,
    dial_handler: DialHandler | None = None,
    request_handler: RequestHandler | None = None,
) -> AsyncIterator[MuxSession]:
    """Connect to a tunnel server and run a session as its client: ``tcp://host:port``
    for the raw tunnel straight over TCP (inside the cluster: no websocket framing and
    no masking per byte, the manager tells it from a websocket by its first bytes), or a
    ``ws://`` URL for a websocket."""
    parts = urlsplit(url)
    if parts.scheme != "tcp":
        async with open_mux_websocket_url(
            url, config=config, dial_handler=dial_handler, request_handler=request_handler
        ) as session:
            yield session
        return
    if not parts.hostname or not parts.port:
        raise ValueError(f"{url!r}: a raw tunnel URL is tcp://HOST:PORT")
    stream = FdStream(await trio.open_tcp_stream(parts.hostname, parts.port))
    async with (
        stream,
        open_mux_over_stream(
            stream,
            role=Role.CLIENT,
            config=config,
            dial_handler=dial_handler,
            request_handler=request_handler,
        ) as session,
    ):
        yield session


@asynccontextmanager
async def open_mux_websocket_url(
    url: str,
    *,
    config: MuxConfig | None = None,
    dial_handler: DialHandler | None = None,
    request_handler: RequestHandler | None = None,
    ssl_context: Any = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> AsyncIterator[MuxSession]:
    """Connect to a tunnel server at ``ws://host:port/path`` and run a session."""
    async with (
        trio_websocket.open_websocket_url(
            url,
            ssl_context,
            subprotocols=[SUBPROTOCOL],
            extra_headers=extra_headers,
            receive_buffer_size=WS_RECEIVE_BUFFER,
            max_message_size=WS_ACCEPT_MESSAGE,
            message_queue_size=4,
        ) as ws,
        open_mux_over_websocket(
            ws, config=config, dial_handler=dial_handler, request_handler=request_handler
        ) as session,
    ):
        yield session


@asynccontextmanager
async def wrap_mux_client_stream(
    stream: trio.abc.Stream,
    host: str,
    resource: str = "/",
    *,
    config: MuxConfig | None = None,
    dial_handler: DialHandler | None = None,
    request_handler: RequestHandler | None = None,
) -> AsyncIterator[MuxSession]:
    """The engine's path to the manager: a websocket opened over an existing byte
    stream (a Kubernetes port-forward), then the tunnel over that websocket."""
    with unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                stream,  # type: ignore[arg-type]  # any trio Stream works
                host,
                resource,
                subprotocols=[SUBPROTOCOL],
                receive_buffer_size=WS_RECEIVE_BUFFER,
                max_message_size=WS_ACCEPT_MESSAGE,
                message_queue_size=4,
            )
            try:
                async with open_mux_over_websocket(
                    ws, config=config, dial_handler=dial_handler, request_handler=request_handler
                ) as session:
                    yield session
            finally:
                with trio.move_on_after(2.0) as scope:
                    scope.shield = True
                    await ws.aclose()
                nursery.cancel_scope.cancel()


SessionHandler = Callable[[MuxSession, trio_websocket.WebSocketRequest], Awaitable[None]]


async def serve_mux_websocket(
    session_handler: SessionHandler,
    host: str | None,
    port: int,
    *,
    config: MuxConfig | None = None,
    dial_handler: DialHandler | None = None,
    request_handler: RequestHandler | None = None,
    ssl_context: Any = None,
    task_status: trio.TaskStatus[trio_websocket.WebSocketServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve tunnels: each accepted websocket runs ``session_handler(session, request)``
    until it returns or the tunnel ends. A closed websocket never escapes the handler
    (trio-websocket would take the whole server down)."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        try:
            peer = str(request.remote)
        except OSError:  # already disconnected
            return
        try:
            ws = await request.accept(
                subprotocol=SUBPROTOCOL if SUBPROTOCOL in request.proposed_subprotocols else None
            )
            async with open_mux_over_websocket(
                ws, config=config, dial_handler=dial_handler, request_handler=request_handler
            ) as session:
                await session_handler(session, request)
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError) as exc:
            log.info("tunnel from %s ended: %s", peer, exc)
        except Exception:
            # One session's failure must not take the server (and every other tunnel) down.
            log.exception("tunnel session from %s failed", peer)

    await trio_websocket.serve_websocket(
        handler,
        host,
        port,
        ssl_context,
        receive_buffer_size=WS_RECEIVE_BUFFER,
        max_message_size=WS_ACCEPT_MESSAGE,
        message_queue_size=4,
        task_status=task_status,
    )
