"""Per-stream routing of h2c: HTTP/2 with prior knowledge (RFC 9113 §3.3), with ``h2``.

The caller speaks HTTP/2 to the agent (we are its server); every request stream is
routed on its own, like HTTP/1 requests are: the filter looks at ``:path`` and the
headers, and the stream is re-created on one upstream HTTP/2 connection per route (we
are that upstream's client). Stream ids differ on each connection, so a :class:`_Link`
maps the caller's stream to the upstream's.

Flow control (RFC 9113 §5.2): data read from one side is acknowledged to that side only
once it was handed to the other side's connection within the other side's window. So a
slow reader at either end stalls only its own stream (and, past the connection windows,
its connection), and the agent buffers at most one window per stream.
RST_STREAM is passed on with its code (§6.4). A GOAWAY from an upstream (§6.8) refuses
the caller's streams it did not process with REFUSED_STREAM, which the caller may retry
(§8.7), and new requests open a new upstream connection. A GOAWAY or EOF from the caller
ends everything. An upstream that cannot be reached answers 502 on that stream only.

A limit of the h2 library (python-hyper/h2#1181): its connection state is CLOSED as soon
as a GOAWAY is sent or received, so the streams still in flight then cannot finish on
that connection, though §6.8 allows it. A caller's GOAWAY therefore ends its connection
at once, and the streams an upstream was still processing when it said GOAWAY end with a
502 (no response yet) or an INTERNAL_ERROR reset, never silently.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio

from ._http1 import Route

log = logging.getLogger(__name__)

READ_SIZE = 65536
#: The connection-level receive window we grant each peer (the stream windows stay at
#: the 64 KiB default): one slow stream must not exhaust the window of the others.
CONNECTION_WINDOW = 16 * 1024 * 1024
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, REFUSED_STREAM, CANCEL = 0, 1, 2, 7, 8

Choose = Callable[[bytes, Iterable[tuple[bytes, bytes]]], Route]


class StreamTap(Protocol):
    """Sees each request stream of the caller (wiretap copies); must not block."""

    def request(self, stream_id: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None: ...
    def data(self, stream_id: int, data: bytes) -> None: ...
    def end(self, stream_id: int) -> None: ...
    def reset(self, stream_id: int) -> None: ...


_H2Error = (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError)


@dataclass
class _Chunk:
    data: memoryview
    unacked: int  # flow-controlled bytes (data + padding) not yet acknowledged to the source
    source: _Side
    source_sid: int


@dataclass
class _Outbox:
    """What waits for the target side's send window on one stream."""

    chunks: deque[_Chunk] = field(default_factory=deque)
    end: bool = False
    trailers: list[tuple[bytes, bytes]] | None = None


class _Side:
    """One HTTP/2 connection and the task that writes what it queued."""

    def __init__(self, name: str, stream: trio.abc.Stream, client_side: bool) -> None:
        self.name = name
        self.stream = stream
        config = h2.config.H2Configuration(client_side=client_side, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        if client_side:  # we relay requests; server push has nowhere to go (§8.4)
            self.conn.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.ENABLE_PUSH: 0}
            )
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.outboxes: dict[int, _Outbox] = {}
        self.links: dict[int, _Link] = {}  # this side's stream id -> link
        self.dead = False
        self.going_away = False
        self._wake = trio.Event()

    def flush(self) -> None:
        self._wake.set()

    async def write_loop(self) -> None:
        while True:
            data = self.conn.data_to_send()
            if data:
                await self.stream.send_all(data)
            elif self.dead:
                return
            else:
                self._wake = trio.Event()
                await self._wake.wait()


@dataclass(eq=False)
class _Link:
    caller_sid: int
    upstream: _Side
    upstream_sid: int
    responded: bool = False
    request_ending: bool = False  # END_STREAM queued or sent towards the upstream
    response_ending: bool = False  # ... towards the caller
    request_done: bool = False
    response_done: bool = False


class H2Router:
    """Serves one caller connection that began with the HTTP/2 preface."""

    def __init__(
        self,
        client: trio.abc.Stream,
        choose: Choose,
        first_bytes: bytes = b"",
        *,
        tap: StreamTap | None = None,
    ) -> None:
        self.caller = _Side("caller", client, client_side=False)
        self.choose = choose
        self.tap = tap
        self.first_bytes = first_bytes
        self.upstreams: dict[str, _Side] = {}
        self.local: set[int] = set()  # caller streams we answered ourselves (502)
        self.streams = 0
        self._nursery: trio.Nursery | None = None

    async def serve(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write, self.caller)
                await self._read_caller()
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await self._close_all()

    # -- the caller ----------------------------------------------------------------------

    async def _read_caller(self) -> None:
        data = self.first_bytes
        while True:
            if not data:
                data = bytes(await self.caller.stream.receive_some(READ_SIZE))
                if not data:
                    return  # EOF
            try:
                events = self.caller.conn.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                log.info("h2c caller broke the protocol: %s", exc)
                self.caller.flush()  # h2 queued the GOAWAY saying why
                await self._drain(self.caller)
                return
            data = b""
            for event in events:
                if isinstance(event, h2.events.ConnectionTerminated):
                    return  # the caller is done (§6.8); open streams are cut
                await self._on_caller_event(event)
            self._flush_all()

    async def _on_caller_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            await self._open(event)
        elif isinstance(event, h2.events.DataReceived):
            if self.tap is not None:
                self.tap.data(event.stream_id, event.data or b"")
            link = self.caller.links.get(event.stream_id)
            if link is None or link.upstream.dead:
                _ack(self.caller, event.flow_controlled_length, event.stream_id)
            else:
                self._enqueue(link.upstream, link.upstream_sid, event, self.caller)
        elif isinstance(event, h2.events.TrailersReceived):
            if self.tap is not None:
                self.tap.end(event.stream_id)
            self._end_outbound(self.caller, event.stream_id, list(event.headers))
        elif isinstance(event, h2.events.StreamEnded):
            if self.tap is not None:  # (after trailers: the copy is already complete)
                self.tap.end(event.stream_id)
            self._end_outbound(self.caller, event.stream_id, None)
        elif isinstance(event, h2.events.StreamReset):
            if self.tap is not None:
                self.tap.reset(event.stream_id)
            link = self.caller.links.get(event.stream_id)
            if link is not None:
                _reset(link.upstream, link.upstream_sid, event.error_code)
                self._unlink(link)
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self._pump_all(self.caller)

    async def _open(self, event: h2.events.RequestReceived) -> None:
        self.streams += 1
        sid = event.stream_id
        headers = [(bytes(k), bytes(v)) for k, v in event.headers]
        pseudo = dict(h for h in headers if h[0].startswith(b":"))
        plain = [h for h in headers if not h[0].startswith(b":")]
        if b":authority" in pseudo and not any(k == b"host" for k, _ in plain):
            plain.append((b"host", pseudo[b":authority"]))  # RFC 9113 §8.3.1
        route = self.choose(pseudo.get(b":path", b"/"), plain)
        if self.tap is not None:
            self.tap.request(sid, headers, event.stream_ended is not None)
        upstream = self.upstreams.get(route.name)
        if upstream is None or upstream.dead or upstream.going_away:
            try:
                upstream = await self._connect(route)
            except OSError as exc:
                self._answer_502(sid, f"{route.name} is not reachable: {exc}", event)
                return
        try:
            up_sid = upstream.conn.get_next_available_stream_id()
            upstream.conn.send_headers(up_sid, headers, end_stream=event.stream_ended is not None)
        except h2.exceptions.TooManyStreamsError:
            _reset(self.caller, sid, REFUSED_STREAM)  # §8.7: safe for the caller to retry
            return
        except _H2Error as exc:
            self._answer_502(sid, f"{route.name} refused the stream: {exc}", event)
            return
        link = _Link(caller_sid=sid, upstream=upstream, upstream_sid=up_sid)
        link.request_ending = link.request_done = event.stream_ended is not None
        self.caller.links[sid] = link
        upstream.links[up_sid] = link
        upstream.flush()

    async def _connect(self, route: Route) -> _Side:
        stream = await route.connect()
        side = _Side(route.name, stream, client_side=True)
        self.upstreams[route.name] = side
        assert self._nursery is not None
        self._nursery.start_soon(self._write, side)
        self._nursery.start_soon(self._read_upstream, side)
        return side

    def _answer_502(self, sid: int, message: str, event: h2.events.RequestReceived) -> None:
        log.info("h2c stream %d: answering 502: %s", sid, message)
        body = f"{message}\n".encode()
        self.local.add(sid)
        conn = self.caller.conn
        try:
            conn.send_headers(
                sid,
                [
                    (b":status", b"502"),
                    (b"content-type", b"text/plain"),
                    (b"content-length", str(len(body)).encode()),
                ],
            )
            conn.send_data(sid, body[: conn.local_flow_control_window(sid)], end_stream=True)
            if event.stream_ended is None:
                conn.reset_stream(sid, NO_ERROR)  # §8.1: the rest of the request is not needed
        except _H2Error:
            pass
        self.caller.flush()

    # -- upstreams ------------------------------------------------------------------------

    async def _read_upstream(self, side: _Side) -> None:
        try:
            while not side.dead:
                data = await side.stream.receive_some(READ_SIZE)
                if not data:
                    break
                for event in side.conn.receive_data(bytes(data)):
                    self._on_upstream_event(side, event)
                self._flush_all()
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            h2.exceptions.ProtocolError,
        ) as exc:
            log.info("h2c upstream %s failed: %s", side.name, exc)
        self._lost(side)

    def _on_upstream_event(self, side: _Side, event: h2.events.Event) -> None:
        link = side.links.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, (h2.events.ResponseReceived, h2.events.InformationalResponseReceived)):
            if link is not None:
                ended = getattr(event, "stream_ended", None) is not None
                try:
                    self.caller.conn.send_headers(
                        link.caller_sid, list(event.headers), end_stream=ended
                    )
                    link.responded = True
                    link.response_ending = link.response_done = ended
                except _H2Error:
                    _reset(side, link.upstream_sid, CANCEL)
                    self._unlink(link)
        elif isinstance(event, h2.events.DataReceived):
            if link is None:
                _ack(side, event.flow_controlled_length, event.stream_id)
            else:
                self._enqueue(self.caller, link.caller_sid, event, side)
        elif isinstance(event, h2.events.TrailersReceived):
            self._end_outbound(side, event.stream_id, list(event.headers))
        elif isinstance(event, h2.events.StreamEnded):
            self._end_outbound(side, event.stream_id, None)
        elif isinstance(event, h2.events.StreamReset):
            if link is not None:
                _reset(self.caller, link.caller_sid, event.error_code)
                self._unlink(link)
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self._pump_all(side)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._going_away(side, event.last_stream_id)

    def _going_away(self, side: _Side, last_stream_id: int | None) -> None:
        """GOAWAY (§6.8): streams above ``last_stream_id`` were never processed."""
        side.going_away = True
        for up_sid, link in list(side.links.items()):
            if last_stream_id is not None and up_sid > last_stream_id:
                _reset(self.caller, link.caller_sid, REFUSED_STREAM)
                self._unlink(link)

    def _lost(self, side: _Side) -> None:
        """The upstream connection ended: its unanswered streams get 502, the rest a reset."""
        side.dead = True
        side.flush()
        if self.upstreams.get(side.name) is side:
            del self.upstreams[side.name]
        for link in list(side.links.values()):
            if link.responded:
                _reset(self.caller, link.caller_sid, INTERNAL_ERROR)
            else:
                self.local.add(link.caller_sid)
                body = f"{side.name} closed the connection\n".encode()
                try:
                    self.caller.conn.send_headers(
                        link.caller_sid,
                        [(b":status", b"502"), (b"content-length", str(len(body)).encode())],
                    )
                    self.caller.conn.send_data(link.caller_sid, body, end_stream=True)
                except _H2Error:
                    pass
            self._unlink(link)
        self.caller.flush()

    # -- moving data within the windows ----------------------------------------------------

    def _enqueue(
        self, target: _Side, sid: int, event: h2.events.DataReceived, source: _Side
    ) -> None:
        box = target.outboxes.setdefault(sid, _Outbox())
        data = memoryview(event.data or b"")
        box.chunks.append(_Chunk(data, event.flow_controlled_length or 0, source, event.stream_id))
        self._pump(target, sid)

    def _end_outbound(
        self, source: _Side, sid: int, trailers: list[tuple[bytes, bytes]] | None
    ) -> None:
        link = source.links.get(sid)
        if link is None:
            return
        if source is self.caller:
            if link.request_ending:
                return  # END_STREAM rode on the HEADERS, already passed on
            link.request_ending = True
            target, target_sid = link.upstream, link.upstream_sid
        else:
            if link.response_ending:
                if link.request_done:
                    self._unlink(link)
                return
            link.response_ending = True
            target, target_sid = self.caller, link.caller_sid
        box = target.outboxes.setdefault(target_sid, _Outbox())
        box.end = True
        if trailers is not None:
            box.trailers = trailers
        self._pump(target, target_sid)

    def _pump_all(self, target: _Side) -> None:
        for sid in list(target.outboxes):
            self._pump(target, sid)

    def _pump(self, target: _Side, sid: int) -> None:
        box = target.outboxes.get(sid)
        if box is None:
            return
        conn = target.conn
        try:
            while box.chunks:
                chunk = box.chunks[0]
                room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if chunk.data and room <= 0:
                    break
                part = chunk.data[:room]
                if part:
                    conn.send_data(sid, part.tobytes())
                chunk.data = chunk.data[len(part) :]
                done = min(len(part), chunk.unacked) if chunk.data else chunk.unacked
                chunk.unacked -= done
                _ack(chunk.source, done, chunk.source_sid)
                if not chunk.data:
                    box.chunks.popleft()
            if box.chunks or not box.end:
                return
            if box.trailers is not None:
                conn.send_headers(sid, box.trailers, end_stream=True)
            else:
                conn.end_stream(sid)
        except _H2Error as exc:
            log.debug("h2c stream %d on %s closed under us: %s", sid, target.name, exc)
            for chunk in box.chunks:
                _ack(chunk.source, chunk.unacked, chunk.source_sid)
        del target.outboxes[sid]
        link = target.links.get(sid)
        if link is not None:
            if target is self.caller:
                link.response_done = True
            else:
                link.request_done = True
            if link.response_done and link.request_done:
                self._unlink(link)

    def _unlink(self, link: _Link) -> None:
        self.caller.links.pop(link.caller_sid, None)
        link.upstream.links.pop(link.upstream_sid, None)
        for side, sid in ((self.caller, link.caller_sid), (link.upstream, link.upstream_sid)):
            box = side.outboxes.pop(sid, None)
            for chunk in box.chunks if box else ():
                _ack(chunk.source, chunk.unacked, chunk.source_sid)

    def _flush_all(self) -> None:
        self.caller.flush()
        for side in self.upstreams.values():
            side.flush()

    # -- writing and closing ----------------------------------------------------------------

    async def _write(self, side: _Side) -> None:
        try:
            await side.write_loop()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if side is self.caller:
                assert self._nursery is not None
                self._nursery.cancel_scope.cancel()
            else:
                log.info("h2c upstream %s: write failed: %s", side.name, exc)
                self._lost(side)

    async def _drain(self, side: _Side) -> None:
        with trio.move_on_after(1.0):
            data = side.conn.data_to_send()
            if data:
                await side.stream.send_all(data)

    async def _close_all(self) -> None:
        sides = [*self.upstreams.values(), self.caller]
        for side in sides:
            try:
                side.conn.close_connection()  # GOAWAY NO_ERROR (§6.8)
            except _H2Error:
                pass
            try:
                await self._drain(side)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            await side.stream.aclose()


def _ack(side: _Side, size: int, sid: int) -> None:
    """Return flow-control credit to ``side`` for bytes it sent us (§6.9)."""
    if size <= 0:
        return
    try:
        side.conn.acknowledge_received_data(size, sid)
    except _H2Error:
        return
    side.flush()


def _reset(side: _Side, sid: int, code: int) -> None:
    try:
        side.conn.reset_stream(sid, code)
    except _H2Error:
        return
    side.flush()
