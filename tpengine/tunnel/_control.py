"""Control plane of the core: ping/pong with RTT, request/response, push.

A mixin of :class:`MuxConnection`, kept apart so each file stays small; it shares the
connection's output queue, event queue and settings.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from . import _frames as F
from ._config import MuxConfig, PeerSettings
from ._errors import LocalProtocolError, ProtocolViolation
from ._events import Event, PongReceived, PushReceived, RequestReceived, ResponseReceived
from ._frames import FrameType as T


class ControlMixin:
    config: MuxConfig
    peer: PeerSettings | None
    closed: bool
    rtt: float | None
    _events: deque[Event]
    _requests_out: set[int]
    _requests_in: set[int]
    _pings: dict[int, float]
    _next_ping: int
    _next_request: int
    _last_ping: float

    def _emit(self, ftype: int, flags: int, sid: int, payload: bytes = b"") -> None:
        raise NotImplementedError

    def _require_open(self) -> None:
        raise NotImplementedError

    def _check_backlog(self) -> None:
        raise NotImplementedError

    def send_ping(self, now: float) -> None:
        self._require_open()
        opaque = self._next_ping
        self._next_ping += 1
        self._pings[opaque] = now
        if len(self._pings) > 16:  # a peer that never answers must not grow this
            del self._pings[min(self._pings)]
        self._last_ping = now
        self._emit(T.PING, 0, 0, F.encode_ping(opaque))

    def send_request(self, method: str, payload: Any) -> int:
        self._require_open()
        assert self.peer is not None
        if len(self._requests_out) >= self.peer.max_requests:
            raise LocalProtocolError(f"peer allows {self.peer.max_requests} outstanding requests")
        rid = self._next_request
        self._next_request += 1
        self._emit(T.REQUEST, 0, rid, F.encode_named(method, payload))
        self._requests_out.add(rid)
        return rid

    def send_response(
        self, request_id: int, payload: Any = None, *, error: str | None = None
    ) -> None:
        if request_id not in self._requests_in:
            raise LocalProtocolError(f"no outstanding request {request_id} to answer")
        self._requests_in.discard(request_id)
        if self.closed:
            return
        if error is not None:
            self._emit(T.RESPONSE, F.FLAG_ERROR, request_id, F.encode_json(error))
        else:
            self._emit(T.RESPONSE, 0, request_id, F.encode_json(payload))

    def send_push(self, topic: str, payload: Any) -> None:
        self._require_open()
        self._emit(T.PUSH, 0, 0, F.encode_named(topic, payload))

    def _on_ping(self, flags: int, sid: int, payload: bytes, now: float) -> None:
        opaque = F.decode_ping(payload)
        if not flags & F.FLAG_ACK:
            self._check_backlog()
            self._emit(T.PING, F.FLAG_ACK, 0, payload)
            return
        sent = self._pings.pop(opaque, None)
        if sent is not None:
            self.rtt = now - sent
            self._events.append(PongReceived(rtt=self.rtt))

    def _on_request(self, flags: int, sid: int, payload: bytes, now: float) -> None:
        if sid in self._requests_in or len(self._requests_in) >= self.config.max_requests:
            raise ProtocolViolation("request id reused or too many outstanding requests")
        method, value = F.decode_named(payload, "REQUEST")
        self._requests_in.add(sid)
        self._events.append(RequestReceived(request_id=sid, method=method, payload=value))

    def _on_response(self, flags: int, sid: int, payload: bytes, now: float) -> None:
        if sid not in self._requests_out:
            raise ProtocolViolation(f"RESPONSE to unknown request {sid}")
        self._requests_out.discard(sid)
        value = F.decode_json(payload, "RESPONSE")
        if flags & F.FLAG_ERROR:
            self._events.append(ResponseReceived(request_id=sid, payload=None, error=str(value)))
        else:
            self._events.append(ResponseReceived(request_id=sid, payload=value, error=None))

    def _on_push(self, flags: int, sid: int, payload: bytes, now: float) -> None:
        topic, value = F.decode_named(payload, "PUSH")
        self._events.append(PushReceived(topic=topic, payload=value))
