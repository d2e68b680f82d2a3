"""The registry of engagements and its conflict rules (sans-IO).

Telepresence's rules, as the reference states them:
- two unfiltered intercepts of one port conflict, and an unfiltered intercept conflicts
  with any filtered one on that port (it takes every request);
- filtered intercepts coexist when no request can match both: different values of one
  header. A filter whose conditions are a subset of another's conflicts with it (every
  request the stricter one matches, the looser one matches too);
- wiretaps never conflict (they copy, they do not take);
- several ingests of one container are allowed;
- a replace takes the whole container: it conflicts with any intercept or replace of it.
A refusal names who holds the port.

Lifecycle. The registry lives in the manager's memory only. An engagement is ACTIVE while
an agent of its workload is connected and WAITING otherwise (first injection, its pod
restarting: the successor's ``agent_arrive`` hands it over). It ends with ``leave``, or
with its client's session: ``depart`` (``tp quit``) or silence past the session timeout
(``TP_SESSION_TIMEOUT``). A restarted manager knows none: each client arrives anew and
re-sends its own (``tpengine.engine._reengage``), which passes the same conflict rules.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Any

from tpengine.httpfilter import HttpFilter


class Kind(enum.Enum):
    INTERCEPT = "intercept"
    REPLACE = "replace"
    WIRETAP = "wiretap"
    INGEST = "ingest"


WAITING_FOR_AGENT = "waiting for the traffic-agent to arrive"


class EngagementConflict(Exception):
    """Refused: the message names the holder."""


@dataclass(kw_only=True)
class Engagement:
    id: str
    name: str
    kind: Kind
    session_id: str
    client: str  # "user@host", for messages
    namespace: str
    workload: str
    container: str
    ports: tuple[str, ...] = ()  # service/container ports taken, by name or number
    filter: HttpFilter = field(default_factory=HttpFilter)
    state: str = "WAITING"
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def refresh_state(self, *, agents_present: bool) -> None:
        """ACTIVE while an agent of the workload is connected, else WAITING (first
        injection, an agent pod's restart, a manager restart until agents return)."""
        if agents_present:
            if self.state == "WAITING":
                self.state, self.message = "ACTIVE", ""
        else:
            self.state, self.message = "WAITING", WAITING_FOR_AGENT

    @property
    def takes_traffic(self) -> bool:
        return self.kind in (Kind.INTERCEPT, Kind.REPLACE)

    def to_agent_json(self) -> dict[str, Any]:
        """What the agents of the workload are told (the agent contract's ENGAGEMENT)."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "session_id": self.session_id,
            "client": self.client,
            "ports": [int(p) for p in self.ports if p.isdigit()],
            "filter": self.filter.to_json(),
            "targets": self.details.get("targets", {}),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind.value,
            "session_id": self.session_id,
            "client": self.client,
            "namespace": self.namespace,
            "workload": self.workload,
            "container": self.container,
            "ports": list(self.ports),
            "filter": self.filter.to_json(),
            "state": self.state,
            "message": self.message,
            **self.details,
        }


def filters_overlap(a: HttpFilter, b: HttpFilter) -> bool:
    """Can one request match both? Unknown (regex vs regex) counts as yes unless the two
    demand literally different values of one header."""
    if a.empty or b.empty:
        return True
    first, second = dict(a.headers), dict(b.headers)
    for name in first.keys() & second.keys():
        if first[name] != second[name] and _literal(first[name]) and _literal(second[name]):
            return False  # x-user=susan and x-user=bob never match one request
    paths = [(f.path_equal, f.path_prefix) for f in (a, b)]
    (eq_a, pre_a), (eq_b, pre_b) = paths
    if eq_a is not None and eq_b is not None and eq_a != eq_b:
        return False
    if pre_a is None or pre_b is None:
        return True
    return pre_a.startswith(pre_b) or pre_b.startswith(pre_a)


def _literal(pattern: str) -> bool:
    return not any(ch in pattern for ch in ".^$*+?{}[]\\|()")


class EngagementRegistry:
    def __init__(self) -> None:
        self._engagements: dict[str, Engagement] = {}
        self._ids = itertools.count(1)

    def all(self) -> list[Engagement]:
        return list(self._engagements.values())

    def get(self, engagement_id: str) -> Engagement | None:
        return self._engagements.get(engagement_id)

    def find(self, session_id: str, name: str) -> Engagement | None:
        for engagement in self._engagements.values():
            if engagement.session_id == session_id and engagement.name == name:
                return engagement
        return None

    def of_workload(self, namespace: str, workload: str) -> list[Engagement]:
        return [
            e
            for e in self._engagements.values()
            if (e.namespace, e.workload) == (namespace, workload)
        ]

    def check(self, new: Engagement) -> None:
        """Raise EngagementConflict when ``new`` cannot coexist with what is registered."""
        mine = self.find(new.session_id, new.name)
        if mine is not None and mine.kind != new.kind:
            # Telepresence refuses a second engagement by an existing name, whatever kind;
            # the same kind again moves it (another port), as `intercept` documents.
            raise EngagementConflict(
                f"{new.name!r} is already a {mine.kind.value} of {mine.workload}; "
                f"tp leave {new.name} first, or give this {new.kind.value} another name"
            )
        for held in self.of_workload(new.namespace, new.workload):
            if held.session_id == new.session_id and held.name == new.name:
                continue  # the same engagement again (e.g. another port): replaced below
            if held.container != new.container or not (held.takes_traffic and new.takes_traffic):
                continue
            if Kind.REPLACE in (held.kind, new.kind):
                raise EngagementConflict(
                    f"{held.kind.value} {held.name!r} by {held.client} holds container {held.container} of {held.workload}"
                )
            shared = set(held.ports) & set(new.ports)
            if shared and filters_overlap(held.filter, new.filter):
                ports = ", ".join(sorted(shared))
                raise EngagementConflict(
                    f"port {ports} of {held.workload} is already intercepted by {held.client} ({held.name!r}"
                    + (f", {'; '.join(held.filter.describe())})" if not held.filter.empty else ")")
                )

    def add(self, new: Engagement) -> Engagement:
        self.check(new)
        existing = self.find(new.session_id, new.name)
        if existing is not None:
            new.id = existing.id
        else:
            new.id = str(next(self._ids))
        self._engagements[new.id] = new
        return new

    def remove(self, engagement_id: str) -> Engagement | None:
        return self._engagements.pop(engagement_id, None)

    def remove_session(self, session_id: str) -> list[Engagement]:
        gone = [e for e in self._engagements.values() if e.session_id == session_id]
        for engagement in gone:
            del self._engagements[engagement.id]
        return gone
