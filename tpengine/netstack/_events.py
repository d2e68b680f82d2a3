"""Events a TCP endpoint reports to its driver: frozen, keyword-only dataclasses.

They are edge-triggered and drained with ``TcpEndpoint.next_event()``: the driver wakes
the tasks waiting on the connection, which then look at the endpoint's state.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class Established:
    """The three-way handshake completed (our SYN-ACK was acknowledged)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Readable:
    """In-order data arrived while the receive buffer was empty."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Writable:
    """Send-buffer space was freed after a ``send`` could not take everything."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RemoteClosed:
    """The peer's FIN arrived: after the buffered data, the byte stream ends."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectionReset:
    """The connection broke: an RST arrived, or retransmission/keepalive gave up."""

    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Closed:
    """The endpoint reached CLOSED; the driver may forget it."""


Event = Established | Readable | Writable | RemoteClosed | ConnectionReset | Closed
