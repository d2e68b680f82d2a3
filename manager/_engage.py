"""Engagement requests from clients, and the injector's decision for new pods.

The engaging client resolves the workload, its service and ports with its own
credentials and marks the workload's pod template (``AGENT_ANNOTATION``: which container
and ports the agent takes) — then restarts it as ``kubectl rollout restart`` does. The
manager needs no right to change workloads: new pods carry the annotation, and the
webhook injects from it. Here the manager records the engagement (refusing conflicts),
tells the workload's agents, and reports when they are there.
"""

from __future__ import annotations

import json
from typing import Any

from manager._engagements import Engagement, Kind
from manager._inject import AgentSpec, InterceptedPort
from tpengine.httpfilter import HttpFilter
from tpengine.kube.agents import AGENT_ANNOTATION


def agent_config(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The agent configuration a pod's metadata carries (from its template's
    ``AGENT_ANNOTATION``); None for a pod without one, or with one we cannot read."""
    raw = (meta.get("annotations") or {}).get(AGENT_ANNOTATION)
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except ValueError:
        return None
    return config if isinstance(config, dict) and "workload" in config else None


def decide_injection(
    pod: dict[str, Any], namespace: str, *, image: str, manager_url: str
) -> AgentSpec | None:
    """The agent a new pod gets, from its template's annotation; None for other pods."""
    config = agent_config(pod.get("metadata") or {})
    if config is None:
        return None
    return AgentSpec(
        workload=str(config["workload"]),
        namespace=namespace,
        container=str(config["container"]),
        ports=tuple(
            InterceptedPort(
                container_port=int(p["container_port"]),
                name=str(p.get("name", "")),
                protocol=str(p.get("protocol", "TCP")),
                symbolic=bool(p.get("symbolic", False)),
            )
            for p in config.get("ports", [])
        ),
        image=image,
        manager_url=manager_url,
        replace=bool(config.get("replace", False)),
    )


def engagement_from_request(payload: dict[str, Any], *, session_id: str, client: str) -> Engagement:
    """Validate an ``engage`` request into an Engagement (ValueError names what is wrong)."""
    try:
        kind = Kind(payload["kind"])
        ports = [int(p) for p in payload.get("ports", [])]
        targets = {
            str(int(k)): [str(v[0]), int(v[1])] for k, v in (payload.get("targets") or {}).items()
        }
        return Engagement(
            id="",
            name=str(payload["name"]),
            kind=kind,
            session_id=session_id,
            client=client,
            namespace=str(payload["namespace"]),
            workload=str(payload["workload"]),
            container=str(payload["container"]),
            ports=tuple(str(p) for p in ports),
            filter=HttpFilter.from_json(payload.get("filter") or {}),
            details={
                "targets": targets,
                "workload_kind": str(payload.get("workload_kind", "")),
                # What the client shows about it (tp list): kept as the client sent it.
                **{
                    key: payload[key]
                    for key in ("address", "service", "local_ports")
                    if key in payload
                },
            },
        )
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"malformed engage request: {exc}") from None
