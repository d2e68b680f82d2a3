"""The sans-IO multiplexer: bytes in, frames and events out, time passed in.

One :class:`MuxConnection` per transport. It never reads a clock or a socket: the driver
calls :meth:`receive_data` with what arrived, sends :meth:`data_to_send`, drains
:meth:`next_event`, and calls :meth:`handle_timer` when :meth:`get_timer` expires.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _frames as F
from ._config import MuxConfig, PeerSettings, Role
from ._control import ControlMixin
from ._errors import (
    ErrorCode,
    FlowControlViolation,
    LocalProtocolError,
    ProtocolViolation,
    RejectReason,
)
from ._events import (
    ConnectionTerminated,
    CreditAvailable,
    DatagramReceived,
    DataReceived,
    Destination,
    Event,
    GoAwayReceived,
    HandshakeCompleted,
    StreamAccepted,
    StreamDialed,
    StreamEnded,
    StreamRejected,
    StreamReset,
)
from ._flow import ReceiveWindow
from ._frames import FrameType as T
from ._state import Input, StreamState, transition

_LIVE_RECEIVE = (StreamState.OPEN, StreamState.LOCAL_CLOSED)
_MAX_WINDOW = 2**31 - 1


@dataclass(slots=True)
class _Stream:
    sid: int
    state: StreamState
    proto: F.Proto
    send_credit: int
    recv_remaining: int
    recv_unacked: int = 0  # consumed by the app, not yet returned in a WINDOW_UPDATE
    discard: bool = False  # the app closed it: incoming data is answered with RESET


class MuxConnection(ControlMixin):
    """One end of a tunnel. See the package docstring for the protocol."""

    def __init__(self, role: Role, config: MuxConfig | None = None, *, now: float) -> None:
        self.role = role
        self.config = config or MuxConfig()
        self.peer: PeerSettings | None = None
        self.peer_version: tuple[int, int] | None = None
        self.closed = False
        self.going_away = False  # we sent GOAWAY
        self.peer_going_away = False  # the peer sent GOAWAY
        self.rtt: float | None = None
        self._parser = F.FrameParser()
        self._out: list[bytes | memoryview] = [F.preamble()]
        self._out_bytes = F.PREAMBLE.size
        self._events: deque[Event] = deque()
        self._streams: dict[int, _Stream] = {}
        self._next_sid = 1 if role is Role.CLIENT else 2
        self._peer_max_sid = 0
        self._peer_open = 0
        self._conn_send_credit = 0
        self._recv_window = ReceiveWindow(self.config.connection_window, self.config.receive_budget)
        self._next_request = 1
        self._requests_out: set[int] = set()
        self._requests_in: set[int] = set()
        self._pings: dict[int, float] = {}
        self._next_ping = 1
        self._created = now
        self._last_rx = now
        self._last_ping = now
        self._emit(T.HELLO, 0, 0, F.encode_json(self.config.announce()))

    # -- transport side -------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Feed bytes from the transport, in any chunking."""
        if self.closed:
            return
        self._last_rx = now
        try:
            for ftype, flags, sid, payload in self._parser.feed(data):
                self._handle_frame(ftype, flags, sid, payload, now)
                if self.closed:
                    return
        except ProtocolViolation as exc:
            self._terminate(exc.code, exc.reason, by_peer=False, send_goaway=True)

    def receive_eof(self) -> None:
        """The transport ended. Clean only after a GOAWAY in either direction."""
        if self.closed:
            return
        if self.going_away or self.peer_going_away:
            self._terminate(ErrorCode.NO_ERROR, "connection closed", by_peer=True)
        else:
            self._terminate(
                ErrorCode.CONNECTION_LOST, "the peer's connection ended abruptly", by_peer=True
            )

    def data_to_send(self) -> bytes:
        """Everything queued for the transport, as one buffer (empty if nothing)."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        self._out_bytes = 0
        return out

    @property
    def pending_output(self) -> int:
        return self._out_bytes

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # -- time -----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        if self.closed:
            return None
        cfg = self.config
        deadlines = []
        if self.peer is None:
            deadlines.append(self._created + cfg.handshake_timeout)
        if cfg.keepalive_interval is not None:
            deadlines.append(self._last_rx + cfg.keepalive_timeout)
            if self.peer is not None:
                deadlines.append(self._last_ping + cfg.keepalive_interval)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        if self.closed:
            return
        cfg = self.config
        if self.peer is None and now >= self._created + cfg.handshake_timeout:
            self._terminate(
                ErrorCode.HANDSHAKE_TIMEOUT,
                f"no tunnel handshake from the peer within {cfg.handshake_timeout:g} s",
                by_peer=False,
                send_goaway=True,
            )
            return
        if cfg.keepalive_interval is None:
            return
        if now >= self._last_rx + cfg.keepalive_timeout:
            self._terminate(
                ErrorCode.KEEPALIVE_TIMEOUT,
                f"peer silent for {now - self._last_rx:.1f} s "
                f"(keepalive timeout {cfg.keepalive_timeout:g} s); presumed dead",
                by_peer=False,
            )
        elif self.peer is not None and now >= self._last_ping + cfg.keepalive_interval:
            self.send_ping(now)

    # -- streams --------------------------------------------------------------------------

    def open_stream(self, destination: Destination) -> int:
        self._require_open()
        if self.peer_going_away or self.going_away:
            raise LocalProtocolError("connection is going away; no new streams")
        sid = self._next_sid
        if sid > F.MAX_STREAM_ID:
            raise LocalProtocolError("stream ids exhausted; open a new connection")
        self._next_sid += 2
        payload = F.encode_dial(
            destination.host, destination.port, destination.proto, destination.tag
        )
        assert self.peer is not None
        self._streams[sid] = _Stream(
            sid,
            StreamState.DIALING,
            destination.proto,
            self.peer.stream_window,
            self.config.stream_window,
        )
        self._emit(T.DIAL, 0, sid, payload)
        return sid

    def accept_stream(self, sid: int) -> None:
        stream = self._local(sid, Input.SEND_ACCEPT)
        self._emit(T.ACCEPT, 0, sid)
        self._set_state(stream, Input.SEND_ACCEPT)

    def reject_stream(self, sid: int, reason: RejectReason, message: str = "") -> None:
        stream = self._local(sid, Input.SEND_REJECT)
        self._emit(T.REJECT, 0, sid, F.encode_coded(reason, message))
        self._set_state(stream, Input.SEND_REJECT)

    def reset_stream(self, sid: int, code: ErrorCode = ErrorCode.CANCEL, message: str = "") -> None:
        stream = self._streams.get(sid)
        if stream is None or self.closed:
            return  # already gone: a reset of a closed stream is a no-op, as in TCP
        self._emit(T.RESET, 0, sid, F.encode_coded(code, message))
        self._set_state(stream, Input.SEND_RESET)

    def send_credit(self, sid: int) -> int:
        stream = self._streams.get(sid)
        if stream is None:
            return 0
        return min(stream.send_credit, self._conn_send_credit)

    def send_data(self, sid: int, data: bytes | memoryview) -> int:
        """Queue as much of ``data`` as the stream and connection windows allow; return
        how many bytes were taken. Never queues beyond the credit: the caller waits for
        :class:`CreditAvailable` and offers the rest again."""
        stream = self._local(sid, Input.SEND_DATA)
        n = min(len(data), stream.send_credit, self._conn_send_credit)
        if n <= 0:
            return 0
        if isinstance(data, bytes) or (
            isinstance(data, memoryview) and isinstance(data.obj, bytes)
        ):
            view = memoryview(data)  # immutable: frames may point into it without a copy
        else:
            view = memoryview(bytes(data[:n]))
        assert self.peer is not None
        step = self.peer.max_frame_size
        header = F.HEADER.pack
        out = self._out
        for pos in range(0, n, step):
            chunk = view[pos : min(pos + step, n)]
            out.append(header(len(chunk), T.DATA, 0, sid))
            out.append(chunk)
        self._out_bytes += n + F.HEADER_LEN * ((n + step - 1) // step)
        stream.send_credit -= n
        self._conn_send_credit -= n
        return n

    def send_eof(self, sid: int) -> None:
        """Half-close our direction (a DATA frame with FIN and no payload)."""
        stream = self._local(sid, Input.SEND_FIN)
        self._emit(T.DATA, F.FLAG_FIN, sid)
        self._set_state(stream, Input.SEND_FIN)

    def close_stream(self, sid: int) -> None:
        """The application is done with the stream (trio ``aclose``), like close(2) on a
        socket: FIN if our side is still open; data the peer sends afterwards is answered
        with RESET, as a TCP stack answers data for a closed socket (RFC 9293 §3.10.7.4)."""
        stream = self._streams.get(sid)
        if stream is None or self.closed:
            return
        if stream.state is StreamState.DIALED:
            self.reject_stream(sid, RejectReason.REFUSED, "closed before accepting")
        elif stream.state is StreamState.DIALING:
            self.reset_stream(sid, ErrorCode.CANCEL, "dial cancelled")
        elif stream.state in (StreamState.OPEN, StreamState.REMOTE_CLOSED):
            self.send_eof(sid)
        if sid in self._streams:
            stream.discard = True

    def acknowledge_received(self, sid: int, n: int) -> None:
        """The application consumed ``n`` bytes of ``sid``; return credit in batches of
        half a window (as HTTP/2 implementations do) so updates stay rare."""
        if self.closed:
            return
        self._recv_window.consumed(sid, n)
        self._send_connection_update()
        stream = self._streams.get(sid)
        if stream is None or stream.state not in _LIVE_RECEIVE:
            return
        stream.recv_unacked += n
        if stream.recv_unacked >= self.config.stream_window // 2:
            self._emit(T.WINDOW_UPDATE, 0, sid, F.encode_u32(stream.recv_unacked))
            stream.recv_remaining += stream.recv_unacked
            stream.recv_unacked = 0

    def forget_received(self, sid: int) -> None:
        """The application dropped what it had not read of ``sid`` (reset, close)."""
        if not self.closed:
            self._recv_window.forget(sid)
            self._send_connection_update()

    @property
    def unread(self) -> int:
        """Bytes delivered to streams and not yet read, over all streams."""
        return self._recv_window.unread_total

    def stream_state(self, sid: int) -> StreamState:
        stream = self._streams.get(sid)
        return StreamState.CLOSED if stream is None else stream.state

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    # -- datagrams, pings, control messages -------------------------------------------------

    def send_datagram(self, sid: int, data: bytes) -> bool:
        """Send one UDP datagram on flow ``sid``; False if dropped (backlog full or too
        large), which is UDP's contract."""
        stream = self._streams.get(sid)
        if stream is None or stream.proto is not F.Proto.UDP or self.closed:
            raise LocalProtocolError(f"stream {sid} is not an open UDP flow")
        if stream.state not in (StreamState.OPEN, StreamState.REMOTE_CLOSED):
            raise LocalProtocolError(
                f"can't send a datagram on stream {sid} in state {stream.state.value}"
            )
        assert self.peer is not None
        if len(data) > self.peer.max_frame_size or self._out_bytes > self.config.datagram_backlog:
            return False
        self._emit(T.DATAGRAM, 0, sid, data)
        return True

    def close(self, code: ErrorCode = ErrorCode.NO_ERROR, message: str = "") -> None:
        """GOAWAY. NO_ERROR is graceful: open streams finish, new dials are refused; any
        other code ends the connection now."""
        if self.closed:
            return
        if code is ErrorCode.NO_ERROR:
            if not self.going_away:
                self.going_away = True
                self._emit(T.GOAWAY, 0, 0, F.encode_goaway(self._peer_max_sid, code, message))
        else:
            self._terminate(code, message, by_peer=False, send_goaway=True)

    # -- internals --------------------------------------------------------------------------

    def _emit(self, ftype: int, flags: int, sid: int, payload: bytes = b"") -> None:
        self._out.append(F.HEADER.pack(len(payload), ftype, flags, sid))
        if payload:
            self._out.append(payload)
        self._out_bytes += F.HEADER_LEN + len(payload)

    def _check_backlog(self) -> None:
        """Bound what a peer can make us queue by asking without reading (a PING or DIAL
        flood while it leaves our writes unread), cf. RFC 9113 §10.5."""
        assert self.peer is not None
        if self._out_bytes > self.peer.connection_window + self.config.control_backlog:
            raise ProtocolViolation(
                f"peer provokes replies but does not read them ({self._out_bytes} bytes queued)"
            )

    def _require_open(self) -> None:
        if self.closed:
            raise LocalProtocolError("connection is closed")
        if self.peer is None:
            raise LocalProtocolError("tunnel handshake not complete")

    def _local(self, sid: int, event: Input) -> _Stream:
        self._require_open()
        stream = self._streams.get(sid)
        if stream is None:
            raise LocalProtocolError(f"stream {sid} is closed")
        transition(stream.state, event, sid)  # raises LocalProtocolError if not allowed
        return stream

    def _set_state(self, stream: _Stream, event: Input) -> None:
        stream.state = transition(stream.state, event, stream.sid)
        if stream.state is StreamState.CLOSED:
            del self._streams[stream.sid]
            if not self._is_mine(stream.sid):
                self._peer_open -= 1

    def _is_mine(self, sid: int) -> bool:
        return sid % 2 == self._next_sid % 2

    def _terminate(
        self, code: ErrorCode, message: str, *, by_peer: bool, send_goaway: bool = False
    ) -> None:
        if send_goaway:
            self._emit(T.GOAWAY, 0, 0, F.encode_goaway(self._peer_max_sid, code, message))
        self.closed = True
        self._streams.clear()
        self._events.append(ConnectionTerminated(code=code, message=message, by_peer=by_peer))

    def _handle_frame(self, ftype: int, flags: int, sid: int, payload: bytes, now: float) -> None:
        if self.peer is None and ftype != T.HELLO:
            raise ProtocolViolation(f"expected HELLO first, got frame type {ftype}")
        if ftype == T.DATA:  # the hot path first
            self._on_data(flags, sid, payload)
            return
        handler = _HANDLERS.get(ftype)
        if handler is None:
            raise ProtocolViolation(f"unknown frame type {ftype}")
        handler(self, flags, sid, payload, now)

    def _known(self, sid: int) -> _Stream | None:
        """The live stream ``sid``, or None for one that existed and is closed (frames
        still in flight for it are ignored, RFC 9113 §5.1); never-opened ids are an error."""
        stream = self._streams.get(sid)
        if stream is not None:
            return stream
        used = sid < self._next_sid if self._is_mine(sid) else sid <= self._peer_max_sid
        if sid == 0 or not used:
            raise ProtocolViolation(f"frame for stream {sid}, which was never opened")
        return None

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        n = len(payload)
        stream = self._known(sid)
        deliver = stream is not None and n > 0 and not stream.discard
        self._recv_window.on_data(sid, n, delivered=deliver)
        self._send_connection_update()
        if stream is None:
            return  # in flight when the stream closed: dropped, credit returned
        if n:
            if n > stream.recv_remaining:
                raise FlowControlViolation(f"peer exceeded the window of stream {sid}")
            stream.recv_remaining -= n
            stream.state = transition(stream.state, Input.RECV_DATA, sid)
            if stream.discard:
                self.reset_stream(sid, ErrorCode.CANCEL, "stream closed by the receiver")
                return
            self._events.append(DataReceived(stream_id=sid, data=payload))
        if flags & F.FLAG_FIN:
            self._set_state(stream, Input.RECV_FIN)
            self._events.append(StreamEnded(stream_id=sid))

    def _send_connection_update(self) -> None:
        increment = self._recv_window.take_update()
        if increment:
            self._emit(T.WINDOW_UPDATE, 0, 0, F.encode_u32(increment))

    def _on_hello(self, flags: int, sid: int, payload: bytes, now: float) -> None:
        if self.peer is not None:
            raise ProtocolViolation("second HELLO")
        self.peer = PeerSettings.parse(F.decode_json(payload, "HELLO"))
        self.peer_version = self._parser.peer_version
        self._parser.max_payload = self.config.max_frame_size
        self._conn_send_credit = self.peer.connection_window
        self._last_ping = now
        assert self.peer_version is not None
        self._events.append(
            HandshakeCompleted(
                peer_version=self.peer_version, peer_settings=_settings_dict(self.peer)
            )
        )

    def _on_dial(self, flags: int, sid: int, payload: bytes, now: float) -> None:
        if self._is_mine(sid) or sid <= self._peer_max_sid:
            raise ProtocolViolation(f"DIAL reuses or misnumbers stream id {sid}")
        host, port, proto, tag = F.decode_dial(payload)
        self._peer_max_sid = sid
        assert self.peer is not None
        stream = _Stream(
            sid, StreamState.DIALED, proto, self.peer.stream_window, self.config.stream_window
        )
        self._check_backlog()
        self._streams[sid] = stream
        self._peer_open += 1
        if self.going_away:
            self.reject_stream(sid, RejectReason.GOING_AWAY, "connection is closing")
        elif self._peer_open > self.config.max_streams:
            self.reject_stream(sid, RejectReason.REFUSED, "too many open streams")
        else:
            dest = Destination(host=host, port=port, proto=proto, tag=tag)
            self._events.append(StreamDialed(stream_id=sid, destination=dest))

    def _on_accept(self, flags: int, sid: int, payload: bytes, now: float) -> None:
        stream = self._known(sid)
        if stream is not None:
            self._set_state(stream, Input.RECV_ACCEPT)
            self._events.append(StreamAccepted(stream_id=sid))

    def _on_reject(self, flags: int, sid: int, payload: bytes, now: float) -> None:
        stream = self._known(sid)
        code, message = F.decode_coded(payload, "REJECT")
        if stream is not None:
            self._set_state(stream, Input.RECV_REJECT)
            reason = RejectReason.parse(code)
            self._events.append(StreamRejected(stream_id=sid, reason=reason, message=message))

    def _on_reset(self, flags: int, sid: int, payload: bytes, now: float) -> None:
        stream = self._known(sid)
        code, message = F.decode_coded(payload, "RESET")
        if stream is not None:
            self._set_state(stream, Input.RECV_RESET)
            self._events.append(
                StreamReset(stream_id=sid, code=ErrorCode.parse(code), message=message)
            )

    def _on_window_update(self, flags: int, sid: int, payload: bytes, now: float) -> None:
        increment = F.decode_u32(payload, "WINDOW_UPDATE")
        if increment == 0:
            raise ProtocolViolation("WINDOW_UPDATE with a zero increment")  # RFC 9113 §6.9
        if sid == 0:
            self._conn_send_credit += increment
            if self._conn_send_credit > _MAX_WINDOW:
                raise FlowControlViolation("connection window grew beyond 2**31-1")
        else:
            stream = self._known(sid)
            if stream is None:
                return
            stream.send_credit += increment
            if stream.send_credit > _MAX_WINDOW:
                raise FlowControlViolation(f"window of stream {sid} grew beyond 2**31-1")
        self._events.append(CreditAvailable(stream_id=sid))

    def _on_datagram(self, flags: int, sid: int, payload: bytes, now: float) -> None:
        stream = self._known(sid)
        if stream is None or stream.state not in _LIVE_RECEIVE:
            return  # late datagram for a closed flow: dropped, as UDP would
        if stream.proto is not F.Proto.UDP:
            raise ProtocolViolation(f"DATAGRAM on TCP stream {sid}")
        self._events.append(DatagramReceived(stream_id=sid, data=payload))

    def _on_goaway(self, flags: int, sid: int, payload: bytes, now: float) -> None:
        last, code, message = F.decode_goaway(payload)
        if code != ErrorCode.NO_ERROR:
            reason = message or ErrorCode.parse(code).name
            self._terminate(
                ErrorCode.parse(code), f"peer closed the tunnel: {reason}", by_peer=True
            )
            return
        self.peer_going_away = True
        # Our dials the peer never saw (ids above ``last``) will not be answered.
        for stream in list(self._streams.values()):
            if (
                stream.state is StreamState.DIALING
                and stream.sid > last
                and self._is_mine(stream.sid)
            ):
                self._set_state(stream, Input.RECV_REJECT)
                self._events.append(
                    StreamRejected(
                        stream_id=stream.sid, reason=RejectReason.GOING_AWAY, message=message
                    )
                )
        self._events.append(GoAwayReceived(last_stream_id=last, message=message))


def _settings_dict(peer: PeerSettings) -> dict[str, Any]:
    return {name: getattr(peer, name) for name in PeerSettings.__slots__}


_Handler = Callable[[MuxConnection, int, int, bytes, float], None]
_HANDLERS: dict[int, _Handler] = {
    T.HELLO: MuxConnection._on_hello,
    T.DIAL: MuxConnection._on_dial,
    T.ACCEPT: MuxConnection._on_accept,
    T.REJECT: MuxConnection._on_reject,
    T.RESET: MuxConnection._on_reset,
    T.WINDOW_UPDATE: MuxConnection._on_window_update,
    T.DATAGRAM: MuxConnection._on_datagram,
    T.PING: MuxConnection._on_ping,
    T.GOAWAY: MuxConnection._on_goaway,
    T.REQUEST: MuxConnection._on_request,
    T.RESPONSE: MuxConnection._on_response,
    T.PUSH: MuxConnection._on_push,
}
