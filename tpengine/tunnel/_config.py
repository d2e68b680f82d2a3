"""Settings of one end, announced to the peer in HELLO."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ._errors import ProtocolViolation


class Role(enum.Enum):
    """The end that opened the transport is the CLIENT: it numbers its streams odd,
    the SERVER even (as HTTP/2, RFC 9113 §5.1.1), so both can open streams at once."""

    CLIENT = "client"
    SERVER = "server"


@dataclass(frozen=True, kw_only=True, slots=True)
class MuxConfig:
    #: Bytes the peer may send on one stream before we grant more (our receive buffer).
    #: Credit comes back one tunnel round trip later (through the port-forward and the
    #: API server: milliseconds on a busy machine), so a bulk stream moves at most a
    #: window per round trip: 4 MiB keeps that well above 100 MB/s.
    stream_window: int = 4 * 1024 * 1024
    #: Bytes the peer may have in flight on the whole connection.
    connection_window: int = 16 * 1024 * 1024
    #: Bytes delivered to streams but not yet read, over all streams, beyond which
    #: connection credit waits for the application (see ``_flow.py``).
    receive_budget: int = 64 * 1024 * 1024
    #: Largest frame payload we accept.
    max_frame_size: int = 256 * 1024
    #: Streams the peer may have open towards us; more dials are rejected REFUSED.
    max_streams: int = 8192
    #: Requests the peer may have outstanding towards us.
    max_requests: int = 256
    #: Seconds between keepalive pings (None disables keepalive and dead-peer detection).
    keepalive_interval: float | None = 10.0
    #: Seconds without any frame from the peer before it is declared dead.
    keepalive_timeout: float = 30.0
    #: Seconds to wait for the peer's HELLO.
    handshake_timeout: float = 10.0
    #: Datagrams are dropped (UDP semantics) when this many bytes already wait to be sent.
    datagram_backlog: int = 1024 * 1024
    #: Replies the peer provokes (pongs, rejects) may queue this far beyond its connection
    #: window; a peer that keeps asking without reading is closed, not buffered for.
    control_backlog: int = 1024 * 1024

    def __post_init__(self) -> None:
        if not 1024 <= self.max_frame_size <= 16 * 1024 * 1024:
            raise ValueError("max_frame_size must be within 1 KiB .. 16 MiB")
        if self.receive_budget < 0:
            raise ValueError("receive_budget must not be negative")
        if self.stream_window < 1 or self.connection_window < self.max_frame_size:
            raise ValueError("windows must be positive and hold at least one frame")
        if self.keepalive_interval is not None and (
            self.keepalive_interval <= 0 or self.keepalive_timeout <= self.keepalive_interval
        ):
            raise ValueError("need 0 < keepalive_interval < keepalive_timeout")

    def announce(self) -> dict[str, Any]:
        return {
            "stream_window": self.stream_window,
            "connection_window": self.connection_window,
            "max_frame_size": self.max_frame_size,
            "max_streams": self.max_streams,
            "max_requests": self.max_requests,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerSettings:
    stream_window: int
    connection_window: int
    max_frame_size: int
    max_streams: int
    max_requests: int

    @classmethod
    def parse(cls, raw: Any) -> PeerSettings:
        if not isinstance(raw, dict):
            raise ProtocolViolation("HELLO settings must be a JSON object")
        values = {}
        for name, low in (
            ("stream_window", 1),
            ("connection_window", 1024),
            ("max_frame_size", 1024),
            ("max_streams", 1),
            ("max_requests", 1),
        ):
            value = raw.get(name)
            # Unknown keys are ignored so a newer minor version can add settings.
            if type(value) is not int or not low <= value < 2**31:
                raise ProtocolViolation(f"HELLO setting {name} missing or out of range")
            values[name] = value
        return cls(**values)
