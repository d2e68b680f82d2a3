"""Engagements that outlive the manager's memory of them.

The traffic-manager keeps engagements in memory. When it restarts, or when it expired
this client's session (the laptop slept), the engine arrives again and gets a new
session: the manager knows nothing of what this client had engaged. The engine does:
it remembers every engagement as it asked for it, and re-sends each one on every new
session (Telepresence's user daemon likewise re-creates its intercepts after the
traffic-manager comes back). Meanwhile ``tp list`` shows them as WAITING, with why.

The workload needs nothing new: it is still marked for the agent, its agents reconnect
by themselves (``agent_arrive`` hands them the current engagements).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import trio

from tpengine.engine._session import Session, SessionError, State
from tpengine.tunnel import TunnelError

log = logging.getLogger(__name__)

#: The keys of an ``engage`` request, as the manager echoes them in its reply.
_REQUEST_KEYS = (
    "kind",
    "name",
    "namespace",
    "workload",
    "workload_kind",
    "container",
    "filter",
    "targets",
    "address",
    "service",
    "local_ports",
)
WAITING_FOR_MANAGER = "waiting for the traffic-manager (reconnecting)"
REENGAGING = "re-engaging with the traffic-manager's new session"


def request_from_result(result: dict[str, Any]) -> dict[str, Any]:
    """The ``engage`` request that made ``result`` (the manager's reply), to send again."""
    request = {key: result[key] for key in _REQUEST_KEYS if key in result}
    request["ports"] = [int(p) for p in result.get("ports") or [] if str(p).isdigit()]
    return request


@dataclass
class EngagementMemory:
    """This client's engagements by name, as it asked for them; and, per name, why
    re-engaging failed (another client took the port meanwhile…)."""

    requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def remember(self, result: dict[str, Any]) -> None:
        self.requests[str(result["name"])] = request_from_result(result)
        self.problems.pop(str(result["name"]), None)

    def forget(self, name: str) -> dict[str, Any] | None:
        self.problems.pop(name, None)
        request = self.requests.pop(name, None)
        return None if request is None else self.local_view(name, "left")

    def summary(self) -> list[dict[str, Any]]:
        """This client's engagements for ``tp status``: name, kind, namespace, and why
        re-engaging failed if it did."""
        return [
            {
                "name": name,
                "kind": request.get("kind", ""),
                "namespace": request.get("namespace", ""),
                **({"problem": self.problems[name]} if name in self.problems else {}),
            }
            for name, request in sorted(self.requests.items())
        ]

    def local_view(self, name: str, message: str) -> dict[str, Any]:
        """What ``tp list`` shows of an engagement the manager does not have (now)."""
        request = self.requests.get(name, {"name": name})
        failed = name in self.problems
        return {
            **request,
            "ports": [str(p) for p in request.get("ports") or []],
            "state": "FAILED" if failed else "WAITING",
            "message": self.problems.get(name, message),
            "pods": [],
        }

    def merge_listing(
        self, listed: list[dict[str, Any]] | None, *, message: str = REENGAGING
    ) -> list[dict[str, Any]]:
        """The manager's list (None: unreachable) plus what it lacks of ours, as waiting."""
        have = {str(e.get("name")) for e in listed or []}
        missing = [self.local_view(n, message) for n in self.requests if n not in have]
        return [*(listed or []), *missing]


async def keep_engaged(session: Session, memory: EngagementMemory) -> None:
    """Re-send every remembered engagement whenever the session id changes (each arrive
    announces itself as a cluster-info change). Runs for the session's lifetime."""
    last = session.info.session_id
    async with trio.open_nursery() as nursery:
        while True:
            await session.wait_cluster_changed()
            current = session.info.session_id
            if current == last or session.info.state is not State.CONNECTED:
                continue
            log.info("new session %s (was %s): re-engaging %d", current, last, len(memory.requests))
            last = current
            for name, request in list(memory.requests.items()):
                nursery.start_soon(_reengage, session, memory, name, request)


async def _reengage(
    session: Session, memory: EngagementMemory, name: str, request: dict[str, Any]
) -> None:
    try:
        mux = await session._current_mux()
        result = await mux.request("engage", request)
    except (TunnelError, SessionError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        # The tunnel dropped again: the next session re-sends it.
        log.info("re-engaging %s: %s", name, exc)
        return
    if memory.requests.get(name) is not request:
        return  # left (or engaged anew) meanwhile
    if isinstance(result, dict) and "error" in result:
        memory.problems[name] = f"could not re-engage after a new session: {result['error']}"
        log.warning("re-engaging %s refused: %s", name, result["error"])
        return
    memory.problems.pop(name, None)
    log.info("re-engaged %s", name)
