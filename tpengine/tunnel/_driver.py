"""The trio driver: one MuxConnection, one transport, three small tasks.

* reader: transport → ``receive_data`` → dispatch events (never blocks on a stream: every
  stream buffer is bounded by its window, datagram and push queues drop when full);
* writer: ``data_to_send`` → transport, woken whenever the core queued something;
* timer: sleeps until ``get_timer()`` and calls ``handle_timer`` (keepalive, dead peer).

Handlers for the peer's dials and requests run in the session's nursery, one task each.
Leaving ``open_mux_session`` sends GOAWAY, closes the transport and cancels them all.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal, Protocol, overload

import trio

from ._api_errors import DialRejected, RemoteError, TunnelClosed
from ._config import MuxConfig, Role
from ._errors import ErrorCode, LocalProtocolError, RejectReason
from ._events import (
    ConnectionTerminated,
    CreditAvailable,
    DatagramReceived,
    DataReceived,
    Destination,
    Event,
    GoAwayReceived,
    HandshakeCompleted,
    PongReceived,
    PushReceived,
    RequestReceived,
    ResponseReceived,
    StreamAccepted,
    StreamDialed,
    StreamEnded,
    StreamRejected,
    StreamReset,
)
from ._frames import Proto
from ._mux import MuxConnection
from ._state import StreamState
from ._streams import IncomingDial, MuxDatagramFlow, MuxStream

log = logging.getLogger(__name__)

DialHandler = Callable[[IncomingDial], Awaitable[None]]
RequestHandler = Callable[[str, Any], Awaitable[Any]]


class Transport(Protocol):
    """What the driver needs from a carrier: ordered, reliable chunks of bytes."""

    async def receive(self) -> bytes:
        """The next chunk; ``b""`` at the end. May raise trio.BrokenResourceError."""
        ...

    async def send(self, data: bytes) -> None: ...

    async def aclose(self) -> None: ...


class _Pending:
    __slots__ = ("dest", "done", "error", "value")

    def __init__(self, dest: Destination | None = None) -> None:
        self.done = trio.Event()
        self.dest = dest
        self.value: Any = None
        self.error: Exception | None = None


class MuxSession:
    """A live tunnel. Obtain one with :func:`open_mux_session` (or the websocket and
    byte-stream helpers); all methods are for use inside that ``async with``."""

    def __init__(
        self,
        conn: MuxConnection,
        transport: Transport,
        nursery: trio.Nursery,
        *,
        dial_handler: DialHandler | None,
        request_handler: RequestHandler | None,
        datagram_queue: int,
    ) -> None:
        self._conn = conn
        self._transport = transport
        self._nursery = nursery
        self._dial_handler = dial_handler
        self._request_handler = request_handler
        self._datagram_queue = datagram_queue
        self._streams: dict[int, MuxStream | MuxDatagramFlow] = {}
        self._dials: dict[int, _Pending] = {}
        self._requests: dict[int, _Pending] = {}
        self._subscribers: dict[str, list[trio.MemorySendChannel[Any]]] = {}
        self._credit_waiters: set[MuxStream] = set()
        self._output = trio.Event()
        self._drained = trio.Event()
        self._pong = trio.Event()
        self._handshake = trio.Event()
        self._closed = trio.Event()
        self._request_slots: trio.Semaphore | None = None
        self._activity: trio.Event | None = None  # set on any progress, while draining
        self._rearm = trio.Event()
        self._done = trio.Event()
        # Output the kicking task wrote itself when the writer was idle and the transport
        # took it at once (a wake-up of the writer saved per message); what the
        # transport did not take waits here for the writer, ahead of anything newer.
        self._send_nowait = getattr(transport, "send_nowait", None)
        # A transport whose send_nowait may hold bytes it took (TLS ciphertext the socket
        # took only part of) offers ``output_pending`` and ``flush()``: the writer flushes.
        self._flush: Callable[[], Awaitable[None]] | None = getattr(transport, "flush", None)
        self._writer_idle = False
        self._leftover = b""
        self.termination: ConnectionTerminated | None = None
        self.peer_going_away = False

    # -- public API -----------------------------------------------------------------------

    @property
    def rtt(self) -> float | None:
        """The round-trip time measured by the last ping, in seconds."""
        return self._conn.rtt

    def stats(self) -> dict[str, Any]:
        """A snapshot for status displays and debugging."""
        conn = self._conn
        return {
            "role": conn.role.value,
            "peer_version": ".".join(map(str, conn.peer_version or ())),
            "open_streams": conn.open_streams,
            "unread_bytes": conn.unread,
            "pending_output_bytes": conn.pending_output,
            "rtt_ms": None if conn.rtt is None else round(conn.rtt * 1000, 3),
            "going_away": conn.going_away or conn.peer_going_away,
            "closed": self.closed,
        }

    @property
    def role(self) -> Role:
        return self._conn.role

    @property
    def closed(self) -> bool:
        return self.termination is not None

    @overload
    async def open_stream(
        self, host: str, port: int, proto: Literal["tcp"] = "tcp", tag: bytes = b""
    ) -> MuxStream: ...
    @overload
    async def open_stream(
        self, host: str, port: int, proto: Literal["udp"], tag: bytes = b""
    ) -> MuxDatagramFlow: ...
    async def open_stream(
        self, host: str, port: int, proto: Literal["tcp", "udp"] = "tcp", tag: bytes = b""
    ) -> MuxStream | MuxDatagramFlow:
        """Ask the peer to connect to ``host:port``; return the stream once accepted.
        Raises :class:`DialRejected` with the peer's reason, or :class:`TunnelClosed`."""
        dest = Destination(
            host=host, port=port, proto=Proto.UDP if proto == "udp" else Proto.TCP, tag=tag
        )
        self._check_open()
        try:
            sid = self._conn.open_stream(dest)
        except LocalProtocolError as exc:
            raise TunnelClosed(ErrorCode.NO_ERROR, str(exc)) from None
        self._kick()
        pending = self._dials[sid] = _Pending(dest)
        try:
            await pending.done.wait()
        except BaseException:
            # Cancelled while waiting: withdraw the dial, or drop a stream that was
            # accepted at the same moment (nobody will ever own it).
            self._conn.reset_stream(sid, ErrorCode.CANCEL, "dial cancelled")
            self._forget(sid)
            self._kick()
            raise
        finally:
            self._dials.pop(sid, None)
        if pending.error is not None:
            raise pending.error
        stream: MuxStream | MuxDatagramFlow = pending.value
        return stream

    async def request(self, method: str, payload: Any = None) -> Any:
        """Call ``method`` on the peer with a JSON payload; return its JSON answer.
        Raises :class:`RemoteError` if the peer's handler failed."""
        self._check_open()
        assert self._request_slots is not None
        async with self._request_slots:
            self._check_open()
            rid = self._conn.send_request(method, payload)
            self._kick()
            pending = self._requests[rid] = _Pending()
            try:
                await pending.done.wait()
            finally:
                self._requests.pop(rid, None)
        if pending.error is not None:
            raise pending.error
        return pending.value

    async def push(self, topic: str, payload: Any = None) -> None:
        """Send a one-way message to the peer's subscribers of ``topic``."""
        self._check_open()
        await self._wait_output_room()
        self._check_open()
        self._conn.send_push(topic, payload)
        self._kick()

    @asynccontextmanager
    async def subscribe(
        self, topic: str, *, max_buffer: int = 64
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Any]]:
        """Receive the peer's pushes on ``topic``. A subscriber that falls more than
        ``max_buffer`` messages behind is cut off (its channel ends) rather than letting
        the queue grow: it must resubscribe and resynchronise."""
        send, recv = trio.open_memory_channel[Any](max_buffer)
        self._subscribers.setdefault(topic, []).append(send)
        if self.closed:
            send.close()
        try:
            async with recv:
                yield recv
        finally:
            subs = self._subscribers.get(topic, [])
            if send in subs:
                subs.remove(send)
            send.close()

    async def ping(self) -> float:
        """Measure the round-trip time now."""
        self._check_open()
        if self._pong.is_set():
            self._pong = trio.Event()
        pong = self._pong  # every waiter wakes at the next pong (or when the tunnel ends)
        self._conn.send_ping(trio.current_time())
        self._kick()
        await pong.wait()
        self._check_open()
        assert self._conn.rtt is not None
        return self._conn.rtt

    async def wait_closed(self) -> ConnectionTerminated:
        """Wait until the tunnel ends; return why."""
        await self._closed.wait()
        assert self.termination is not None
        return self.termination

    async def aclose(
        self, code: ErrorCode = ErrorCode.NO_ERROR, message: str = "", *, drain: float = 0.0
    ) -> None:
        """Close the tunnel: GOAWAY, flush, close the transport. With NO_ERROR and a
        ``drain`` time, open streams get that long to finish first (new dials are refused
        meanwhile); whatever is still open then is cut."""
        if not self._conn.closed:
            self._conn.close(code, message or "closed by the application")
            self._kick()
        if drain > 0 and code is ErrorCode.NO_ERROR:
            with trio.move_on_after(drain):
                while self._conn.open_streams and not self.closed:
                    self._activity = trio.Event()
                    await self._activity.wait()
            self._activity = None
        if not self.closed:
            self._finish(
                ConnectionTerminated(code=code, message=message or "closed locally", by_peer=False)
            )
        await self._closed.wait()

    # -- tasks ----------------------------------------------------------------------------

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as io:
                io.start_soon(self._reader)
                io.start_soon(self._timer)
                self._writer_scope = trio.CancelScope()
                io.start_soon(self._writer)
                task_status.started()
                await self._closed.wait()
                await self._shutdown()
                io.cancel_scope.cancel()
        finally:
            self._done.set()

    async def _reader(self) -> None:
        conn = self._conn
        while not conn.closed:
            try:
                data = await self._transport.receive()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if data:
                conn.receive_data(data, trio.current_time())
            else:
                conn.receive_eof()
            self._dispatch()

    async def _writer(self) -> None:
        try:
            await self._write_loop()
        finally:
            self._drained.set()

    async def _write_loop(self) -> None:
        conn = self._conn
        with self._writer_scope:
            while True:
                try:
                    if self._leftover:
                        data, self._leftover = self._leftover, b""
                    elif conn.pending_output:
                        data = conn.data_to_send()
                    elif self._flush is not None and self._holds_output():
                        await self._flush()  # what send_nowait took; sends put it first
                        continue
                    else:
                        self._drained.set()
                        self._output = trio.Event()
                        self._writer_idle = True
                        try:
                            await self._output.wait()
                        finally:
                            self._writer_idle = False
                        continue
                    await self._transport.send(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    conn.receive_eof()
                    self._dispatch()
                    return

    async def _timer(self) -> None:
        conn = self._conn
        while not conn.closed:
            deadline = conn.get_timer()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._rearm.wait()  # set when the timer may have moved earlier
                self._rearm = trio.Event()
                continue
            conn.handle_timer(trio.current_time())
            self._dispatch()
            self._kick()

    async def _shutdown(self) -> None:
        # Flush what is queued (the GOAWAY), unless the writer is stuck on a peer that
        # stopped reading; then close the transport, bounded in time either way.
        with trio.move_on_after(1.0):
            await self._drained.wait()
        self._writer_scope.cancel()
        with trio.move_on_after(1.0) as scope:
            scope.shield = True
            await self._transport.aclose()

    # -- event dispatch -------------------------------------------------------------------

    def _kick(self) -> None:
        if self._activity is not None:
            self._activity.set()
        if not self._conn.pending_output:
            return
        if self._writer_idle and self._send_nowait is not None:
            data = self._conn.data_to_send()
            try:
                sent = self._send_nowait(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                sent = 0  # the writer meets the same error and ends the session
            if sent < len(data):
                self._leftover = data[sent:]
            elif self._flush is None or not self._holds_output():
                return  # all of it on the wire
            self._writer_idle = False  # the writer sends the rest (or flushes)
        self._drained = trio.Event() if self._drained.is_set() else self._drained
        self._output.set()

    def _holds_output(self) -> bool:
        """Whether the transport holds bytes its send_nowait took (see ``_flush``)."""
        return bool(getattr(self._transport, "output_pending", False))

    async def _wait_output_room(self) -> None:
        while self._conn.pending_output > self._conn.config.connection_window:
            await self._drained.wait()
        await trio.lowlevel.checkpoint()

    def _check_open(self) -> None:
        if self.termination is not None:
            raise TunnelClosed(self.termination.code, self.termination.message)

    def _dispatch(self) -> None:
        conn = self._conn
        streams = self._streams
        while (event := conn.next_event()) is not None:
            if type(event) is DataReceived:
                target = streams.get(event.stream_id)
                if isinstance(target, MuxStream):
                    target._on_data(event.data)
                else:  # nobody will read it
                    conn.forget_received(event.stream_id)
            elif type(event) is CreditAvailable:
                self._on_credit(event.stream_id)
            else:
                self._dispatch_other(event)
        self._kick()

    def _on_credit(self, sid: int) -> None:
        if sid == 0:
            for waiter in list(self._credit_waiters):
                waiter._credit.set()
        else:
            target = self._streams.get(sid)
            if isinstance(target, MuxStream):
                target._credit.set()

    def _dispatch_other(self, event: Event) -> None:
        if isinstance(event, StreamEnded):
            target = self._streams.get(event.stream_id)
            if isinstance(target, MuxStream):
                target._on_eof()
        elif isinstance(event, StreamReset):
            target = self._streams.get(event.stream_id)
            if target is not None:
                target._on_broken(f"stream reset by the peer ({event.code.name}): {event.message}")
        elif isinstance(event, DatagramReceived):
            target = self._streams.get(event.stream_id)
            if isinstance(target, MuxDatagramFlow):
                target._on_datagram(event.data)
        elif isinstance(event, StreamDialed):
            self._on_dialed(event)
        elif isinstance(event, (StreamAccepted, StreamRejected)):
            self._on_dial_answer(event)
        elif isinstance(event, (RequestReceived, ResponseReceived, PushReceived)):
            self._on_control(event)
        elif isinstance(event, PongReceived):
            self._pong.set()
        elif isinstance(event, HandshakeCompleted):
            assert self._conn.peer is not None
            self._request_slots = trio.Semaphore(self._conn.peer.max_requests)
            self._handshake.set()
            self._rearm.set()
        elif isinstance(event, GoAwayReceived):
            self.peer_going_away = True
        elif isinstance(event, ConnectionTerminated):
            self._finish(event)

    def _on_dialed(self, event: StreamDialed) -> None:
        dial = IncomingDial(self, event.stream_id, event.destination)
        if self._dial_handler is None:
            self._conn.reject_stream(
                event.stream_id, RejectReason.REFUSED, "this end accepts no dials"
            )
        else:
            self._nursery.start_soon(self._run_dial_handler, dial)

    async def _run_dial_handler(self, dial: IncomingDial) -> None:
        assert self._dial_handler is not None
        try:
            await self._dial_handler(dial)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # The stream was reset or the tunnel closed under the handler: expected.
            log.debug("dial handler for %s ended: %s", dial.destination, exc)
        except Exception:
            # One failing handler must not take every other stream down with it.
            log.exception("dial handler failed for %s", dial.destination)
        if (
            not dial.decided
            and not self._conn.closed
            and self._conn.stream_state(dial.stream_id) is StreamState.DIALED
        ):
            self._conn.reject_stream(dial.stream_id, RejectReason.REFUSED, "not accepted")
            self._kick()
        target = self._streams.get(dial.stream_id)
        if target is not None:  # the handler owned the stream; like trio.serve_tcp, close it
            await target.aclose()

    def _on_dial_answer(self, event: StreamAccepted | StreamRejected) -> None:
        pending = self._dials.get(event.stream_id)
        if isinstance(event, StreamAccepted):
            if pending is None:  # the dialer was cancelled meanwhile
                self._conn.reset_stream(event.stream_id, ErrorCode.CANCEL, "dial cancelled")
                return
            assert pending.dest is not None
            pending.value = self._attach(event.stream_id, pending.dest)
        elif pending is not None:
            pending.error = DialRejected(event.reason, event.message)
        if pending is not None:
            pending.done.set()

    def _attach(self, sid: int, dest: Destination) -> MuxStream | MuxDatagramFlow:
        target: MuxStream | MuxDatagramFlow
        if dest.proto is Proto.UDP:
            target = MuxDatagramFlow(self, sid, dest, self._datagram_queue)
        else:
            target = MuxStream(self, sid, dest)
        self._streams[sid] = target
        return target

    def _forget(self, sid: int) -> None:
        self._streams.pop(sid, None)

    def _on_control(self, event: RequestReceived | ResponseReceived | PushReceived) -> None:
        if isinstance(event, RequestReceived):
            self._nursery.start_soon(self._run_request_handler, event)
        elif isinstance(event, ResponseReceived):
            pending = self._requests.get(event.request_id)
            if pending is not None:
                if event.error is not None:
                    pending.error = RemoteError(event.error)
                pending.value = event.payload
                pending.done.set()
        else:
            for send in list(self._subscribers.get(event.topic, [])):
                try:
                    send.send_nowait(event.payload)
                except trio.WouldBlock:
                    send.close()  # too far behind: cut off rather than buffer without bound
                    self._subscribers[event.topic].remove(send)
                except trio.BrokenResourceError:
                    self._subscribers[event.topic].remove(send)

    async def _run_request_handler(self, event: RequestReceived) -> None:
        error: str | None = None
        result: Any = None
        if self._request_handler is None:
            error = f"no request handler for {event.method!r}"
        else:
            try:
                result = await self._request_handler(event.method, event.payload)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
        if not self._conn.closed:
            self._conn.send_response(event.request_id, result, error=error)
            self._kick()

    def _finish(self, event: ConnectionTerminated) -> None:
        if self.termination is not None:
            return
        self.termination = event
        why = f"tunnel closed ({event.code.name}): {event.message}"
        for target in list(self._streams.values()):
            target._on_broken(why)
        for pending in list(self._dials.values()) + list(self._requests.values()):
            pending.error = TunnelClosed(event.code, event.message)
            pending.done.set()
        for subs in self._subscribers.values():
            for send in subs:
                send.close()
        self._pong.set()
        self._handshake.set()
        self._closed.set()


@asynccontextmanager
async def open_mux_session(
    transport: Transport,
    *,
    role: Role,
    config: MuxConfig | None = None,
    dial_handler: DialHandler | None = None,
    request_handler: RequestHandler | None = None,
    datagram_queue: int = 256,
) -> AsyncIterator[MuxSession]:
    """Run the tunnel protocol over ``transport`` for the duration of the block.

    The handshake completes before the block starts (raises :class:`TunnelClosed` if
    the peer is incompatible or silent). ``dial_handler(dial)`` runs in its own task for
    each stream the peer opens; ``request_handler(method, payload)`` for each request.
    """
    failed = False
    with unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            conn = MuxConnection(role, config, now=trio.current_time())
            session = MuxSession(
                conn,
                transport,
                nursery,
                dial_handler=dial_handler,
                request_handler=request_handler,
                datagram_queue=datagram_queue,
            )
            await nursery.start(session._run)
            session._kick()
            await session._handshake.wait()
            if session.closed:  # refused or failed: let the GOAWAY saying why go out first
                failed = True
                with trio.CancelScope(shield=True), trio.move_on_after(3.0):
                    await session._done.wait()
                nursery.cancel_scope.cancel()
            else:
                try:
                    yield session
                finally:
                    with trio.CancelScope(shield=True):
                        await session.aclose()
                        with trio.move_on_after(3.0):
                            await session._done.wait()
                    nursery.cancel_scope.cancel()
    if failed:
        session._check_open()


@contextmanager
def unwrap_single_exception() -> Iterator[None]:
    """Re-raise the one exception a nursery wrapped (trio's strict exception groups), so
    ``except DialRejected`` around ``async with open_mux_session(...)`` works."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, BaseExceptionGroup):
            raise
        raise leaf from None
