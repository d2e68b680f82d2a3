"""Events the sans-IO core emits, drained with ``MuxConnection.next_event()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._errors import ErrorCode, RejectReason
from ._frames import Proto


@dataclass(frozen=True, kw_only=True, slots=True)
class Destination:
    """Where a dial goes: a host name or IP literal, a port, tcp|udp and a routing tag
    the tunnel never interprets (the manager uses it to pick an agent or a client)."""

    host: str
    port: int
    proto: Proto = Proto.TCP
    tag: bytes = b""


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    pass


@dataclass(frozen=True, kw_only=True, slots=True)
class HandshakeCompleted(Event):
    peer_version: tuple[int, int]
    peer_settings: dict[str, Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamDialed(Event):
    """The peer asks us to open ``destination``; answer with accept or reject."""

    stream_id: int
    destination: Destination


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamAccepted(Event):
    stream_id: int


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamRejected(Event):
    stream_id: int
    reason: RejectReason
    message: str


@dataclass(frozen=True, kw_only=True, slots=True)
class DataReceived(Event):
    stream_id: int
    data: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamEnded(Event):
    """The peer half-closed its sending direction (FIN)."""

    stream_id: int


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamReset(Event):
    stream_id: int
    code: ErrorCode
    message: str


@dataclass(frozen=True, kw_only=True, slots=True)
class CreditAvailable(Event):
    """Send credit grew; ``stream_id`` 0 means the connection-level window."""

    stream_id: int


@dataclass(frozen=True, kw_only=True, slots=True)
class DatagramReceived(Event):
    stream_id: int
    data: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class PongReceived(Event):
    rtt: float


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestReceived(Event):
    request_id: int
    method: str
    payload: Any


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseReceived(Event):
    request_id: int
    payload: Any
    error: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class PushReceived(Event):
    topic: str
    payload: Any


@dataclass(frozen=True, kw_only=True, slots=True)
class GoAwayReceived(Event):
    """Graceful close by the peer: no new streams; open ones may finish."""

    last_stream_id: int
    message: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectionTerminated(Event):
    """The connection is over. ``code`` NO_ERROR is a clean close."""

    code: ErrorCode
    message: str
    by_peer: bool
