"""The engagements the manager pushes, and what they mean for one app port.

ENGAGEMENT (agent contract): ``{"id", "kind", "session_id", "client", "ports": [P...],
"filter": HttpFilter.to_json(), "targets": {"P": [ADDRESS, CLIENT_PORT]}}``. Malformed
entries are dropped with a log line, never trusted: the list comes over the network.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._filters import HttpFilter

log = logging.getLogger(__name__)

KINDS = ("intercept", "replace", "wiretap", "ingest")


@dataclass(frozen=True, kw_only=True)
class Engagement:
    id: str
    kind: str
    session_id: str
    client: str = ""
    ports: frozenset[int] = frozenset()
    filter: HttpFilter = field(default_factory=HttpFilter)
    targets: Mapping[int, tuple[str, int]] = field(default_factory=dict)

    def target(self, app_port: int) -> tuple[str, int]:
        """Where the engaging client wants traffic of ``app_port`` (default: same port
        on 127.0.0.1, as ``tp intercept`` without ``--address``/``--port`` does)."""
        return self.targets.get(app_port, ("127.0.0.1", app_port))


@dataclass(frozen=True, kw_only=True)
class PortPlan:
    """What happens to a connection arriving for one app port."""

    takeover: Engagement | None = None  # an unfiltered intercept or a replace
    filtered: tuple[Engagement, ...] = ()  # filtered intercepts, in the manager's order
    wiretaps: tuple[Engagement, ...] = ()

    @property
    def needs_sniff(self) -> bool:
        return bool(self.filtered or self.wiretaps)


def parse_engagements(data: Any, names: Mapping[str, int] | None = None) -> list[Engagement]:
    """The valid entries of ``data``; ``names`` maps container port names to numbers, so
    a port given by name (``"http"``) is understood too."""
    if not isinstance(data, list):
        log.warning("engagements: expected a list, got %s", type(data).__name__)
        return []
    parsed = []
    for entry in data:
        try:
            parsed.append(_parse_one(entry, names or {}))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            log.warning("engagements: dropping malformed entry %r: %s", entry, exc)
    return parsed


def _port(value: Any, names: Mapping[str, int]) -> int:
    if isinstance(value, str) and value in names:
        return names[value]
    number = int(value)
    if not 1 <= number <= 65535:
        raise ValueError(f"bad port {value!r}")
    return number


def _parse_one(entry: Any, names: Mapping[str, int]) -> Engagement:
    if not isinstance(entry, dict):
        raise TypeError("not an object")
    kind = entry["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    targets: dict[int, tuple[str, int]] = {}
    for port, target in (entry.get("targets") or {}).items():
        host, number = target
        if not isinstance(host, str) or type(number) is not int or not 1 <= number <= 65535:
            raise ValueError(f"bad target {target!r}")
        targets[_port(port, names)] = (host, number)
    ports = frozenset(_port(p, names) for p in entry.get("ports") or ())
    filter_data = entry.get("filter") or {}
    if not isinstance(filter_data, dict):
        raise TypeError("filter is not an object")
    http_filter = HttpFilter.from_json(filter_data)
    for _, pattern in http_filter.headers:  # compile now, not in the middle of a request
        _check(pattern)
    if http_filter.path_regex is not None:
        _check(http_filter.path_regex)
    return Engagement(
        id=str(entry["id"]),
        kind=kind,
        session_id=str(entry["session_id"]),
        client=str(entry.get("client", "")),
        ports=ports,
        filter=http_filter,
        targets=targets,
    )


def _check(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:  # not a ValueError subclass
        raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None


def plan_for(engagements: Iterable[Engagement], app_port: int) -> PortPlan:
    takeover: Engagement | None = None
    filtered: list[Engagement] = []
    wiretaps: list[Engagement] = []
    for eng in engagements:
        if app_port not in eng.ports:
            continue
        if eng.kind == "replace" or (eng.kind == "intercept" and eng.filter.empty):
            takeover = takeover or eng
        elif eng.kind == "intercept":
            filtered.append(eng)
        elif eng.kind == "wiretap":
            wiretaps.append(eng)
    return PortPlan(takeover=takeover, filtered=tuple(filtered), wiretaps=tuple(wiretaps))
