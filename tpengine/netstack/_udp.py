"""UDP flows keyed by 5-tuple, with idle expiry (sans-IO).

UDP has no connection, but a reply must go back with the addresses swapped, and the
engine wants one channel per conversation (like a NAT's mapping, RFC 4787 §4.3: a
mapping lives while traffic flows and expires after an idle timeout — at least two
minutes there; DNS-sized exchanges are fine with less, so it is configurable).

``UdpFlowTable`` only tracks flows and deadlines; the driver owns the datagram queues.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

FlowKey = tuple[bytes, int, bytes, int]  # (source addr, source port, destination addr, port)


@dataclass(eq=False, kw_only=True)
class UdpFlowState:
    """One conversation: datagrams from the app wait in ``inbound`` (bounded)."""

    key: FlowKey
    last_active: float
    max_queued: int
    inbound: deque[bytes] = field(default_factory=deque)
    dropped: int = 0
    closed: bool = False
    #: The latest datagram as an IP packet, for an ICMP error quoting it (RFC 1122
    #: §3.2.2.1: port unreachable carries the offending header).
    last_packet: bytes = b""

    def push(self, payload: bytes) -> bool:
        """Queue a datagram from the app; drop it when the queue is full (UDP may)."""
        if len(self.inbound) >= self.max_queued:
            self.dropped += 1
            return False
        self.inbound.append(payload)
        return True


class UdpFlowTable:
    def __init__(self, *, idle_timeout: float = 60.0, max_queued: int = 256) -> None:
        self.idle_timeout = idle_timeout
        self.max_queued = max_queued
        self._flows: dict[FlowKey, UdpFlowState] = {}
        self._deadlines: list[tuple[float, int, FlowKey]] = []
        self._counter = 0

    def __len__(self) -> int:
        return len(self._flows)

    def get(self, key: FlowKey) -> UdpFlowState | None:
        return self._flows.get(key)

    def datagram_received(
        self, key: FlowKey, payload: bytes, now: float
    ) -> tuple[UdpFlowState, bool]:
        """A datagram from the app: returns its flow and whether the flow is new."""
        flow = self._flows.get(key)
        new = flow is None
        if flow is None:
            flow = UdpFlowState(key=key, last_active=now, max_queued=self.max_queued)
            self._flows[key] = flow
            self._schedule(flow)
        flow.last_active = now
        flow.push(payload)
        return flow, new

    def touch(self, key: FlowKey, now: float) -> None:
        """Traffic the other way (a reply) also keeps the flow alive."""
        flow = self._flows.get(key)
        if flow is not None:
            flow.last_active = now

    def remove(self, key: FlowKey) -> None:
        flow = self._flows.pop(key, None)
        if flow is not None:
            flow.closed = True

    def _schedule(self, flow: UdpFlowState) -> None:
        self._counter += 1
        deadline = flow.last_active + self.idle_timeout
        heapq.heappush(self._deadlines, (deadline, self._counter, flow.key))

    def get_timer(self) -> float | None:
        return self._deadlines[0][0] if self._deadlines else None

    def expire(self, now: float) -> list[UdpFlowState]:
        """Remove and return the flows idle for ``idle_timeout``."""
        expired: list[UdpFlowState] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, key = heapq.heappop(self._deadlines)
            flow = self._flows.get(key)
            if flow is None:
                continue
            if flow.last_active + self.idle_timeout > now:
                self._schedule(flow)  # active since: look again later
                continue
            del self._flows[key]
            flow.closed = True
            expired.append(flow)
        return expired
