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


#: The workload kinds tpengine engages, with their resource names (apps/v1).
WORKLOAD_PLURALS = {
    "Deployment": "deployments",
    "ReplicaSet": "replicasets",
    "StatefulSet": "statefulsets",
}


async def get_workload(api: Any, namespace: str, name: str) -> dict[str, Any] | None:
    """The workload called ``name`` (Deployments first, as Telepresence looks), its
    ``kind`` filled in; None when there is none."""
    for kind, plural in WORKLOAD_PLURALS.items():
        found = await get_or_none(api, "apps/v1", namespace, f"{plural}/{name}")
        if found is not None:
            found.setdefault("kind", kind)
            return found
    return None


async def list_workloads(api: Any, namespace: str | None) -> list[dict[str, Any]]:
    """Every workload of ``namespace`` (None: of all namespaces), ``kind`` filled in."""
    found = []
    for kind, plural in WORKLOAD_PLURALS.items():
        async with api.call_api(
            "GET", version="apps/v1", namespace=namespace, url=plural
        ) as response:
            items = response.json().get("items", [])
        for item in items:
            item.setdefault("kind", kind)
            found.append(item)
    return found
