"""Small kr8s helpers shared by the installer and the engine."""

from __future__ import annotations

from typing import Any

import kr8s


def status_code(exc: kr8s.ServerError) -> int | None:
    return exc.response.status_code if exc.response is not None else None


async def get_or_none(
    api: Any, version: str, namespace: str | None, url: str
) -> dict[str, Any] | None:
    """GET one object (``url`` as ``deployments/web``); None when the API server says 404."""
    try:
        async with api.call_api("GET", version=version, namespace=namespace, url=url) as response:
            found: dict[str, Any] = response.json()
            return found
    except kr8s.ServerError as exc:
        if status_code(exc) == 404:
            return None
        raise


def rolled_out(workload: dict[str, Any]) -> bool:
    """``kubectl rollout status``'s rule: the controller saw the current generation and
    every replica runs the current template and is available; StatefulSets compare their
    revisions. ``kind`` defaults to Deployment."""
    spec, status, meta = workload.get("spec", {}), workload.get("status", {}), workload["metadata"]
    want = spec.get("replicas", 1)
    if status.get("observedGeneration", 0) < meta.get("generation", 1):
        return False
    if workload.get("kind") == "StatefulSet":
        return bool(
            status.get("updateRevision") == status.get("currentRevision")
            and status.get("readyReplicas", 0) >= want
        )
    return bool(
        status.get("updatedReplicas", 0) >= want
        and status.get("availableReplicas", 0) >= want
        and status.get("replicas", 0) == status.get("updatedReplicas", 0)
    )
