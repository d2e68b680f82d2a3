"""The traffic-agent's mark on a workload: the pod-template annotation the manager's
webhook reads, and the restart that makes the pods pass the webhook again.

Kubernetes rolls a Deployment's or StatefulSet's pods when its pod template changes, so
changing our annotations is the restart (``kubectl rollout restart`` does the same with
its own ``kubectl.kubernetes.io/restartedAt``; ours keeps every change ours, so leaving
and uninstalling can give the user their spec back). A ReplicaSet never replaces running
pods: its pods are deleted and it creates them anew from the new template.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import trio

from tpengine.kube.objects import WORKLOAD_PLURALS, get_or_none, list_workloads, rolled_out

AGENT_ANNOTATION = "tpengine.io/agent"
RESTART_ANNOTATION = "tpengine.io/restartedAt"


class AgentRolloutError(Exception):
    """The workload did not roll out (in time), or went away meanwhile."""


async def mark_for_agent(api: Any, workload: dict[str, Any], config: dict[str, Any] | None) -> bool:
    """Put the agent's configuration on the pod template (``None``: take our annotations
    off, which removes the agent) and restart its pods when that changed; True when pods
    restart."""
    template = workload.get("spec", {}).get("template", {})
    annotations = template.get("metadata", {}).get("annotations") or {}
    current = annotations.get(AGENT_ANNOTATION)
    wanted = None if config is None else json.dumps(config, sort_keys=True)
    if current == wanted:
        return False
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # Strategic merge patch: null deletes a key (as in a JSON merge patch, RFC 7386).
    ours: dict[str, str | None] = (
        {AGENT_ANNOTATION: None, RESTART_ANNOTATION: None}
        if wanted is None
        else {AGENT_ANNOTATION: wanted, RESTART_ANNOTATION: now}
    )
    patch = {"spec": {"template": {"metadata": {"annotations": ours}}}}
    meta = workload["metadata"]
    async with api.call_api(
        "PATCH",
        version="apps/v1",
        namespace=meta["namespace"],
        url=f"{WORKLOAD_PLURALS[workload['kind']]}/{meta['name']}",
        content=json.dumps(patch),
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    ):
        pass
    if workload["kind"] == "ReplicaSet":
        # A ReplicaSet never replaces running pods when its template changes (only a
        # Deployment rolls): delete them, and the ReplicaSet creates them anew from the
        # new template, through the webhook (Telepresence does the same).
        for pod in await _replicaset_pods(api, workload):
            async with api.call_api(
                "DELETE",
                version="v1",
                namespace=meta["namespace"],
                url=f"pods/{pod['metadata']['name']}",
            ):
                pass
    return True


async def _replicaset_pods(api: Any, workload: dict[str, Any]) -> list[dict[str, Any]]:
    """The live pods the ReplicaSet owns (by owner reference, as its controller counts)."""
    meta = workload["metadata"]
    labels = workload.get("spec", {}).get("selector", {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    async with api.call_api(
        "GET",
        version="v1",
        namespace=meta["namespace"],
        url="pods",
        params={"labelSelector": selector},
    ) as response:
        pods = response.json().get("items", [])
    return [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(o.get("uid") == meta.get("uid") for o in p["metadata"].get("ownerReferences") or [])
    ]


def _replicaset_rolled_out(workload: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
    """Every wanted replica is a pod made from the current template and Ready."""
    wanted = (workload["spec"]["template"].get("metadata", {}).get("annotations") or {}).get(
        AGENT_ANNOTATION
    )
    fresh = [
        p
        for p in pods
        if (p["metadata"].get("annotations") or {}).get(AGENT_ANNOTATION) == wanted
        and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in p.get("status", {}).get("conditions") or []
        )
    ]
    return len(fresh) >= workload["spec"].get("replicas", 1) and len(fresh) == len(pods)


async def wait_rolled_out(api: Any, workload: dict[str, Any], timeout_s: float = 120) -> None:
    """After the restart that adds or removes the agent: wait until the new pods serve."""
    meta = workload["metadata"]
    url = f"{WORKLOAD_PLURALS[workload['kind']]}/{meta['name']}"
    with trio.move_on_after(timeout_s):
        while True:
            await trio.sleep(0.25)
            current = await get_or_none(api, "apps/v1", meta["namespace"], url)
            if current is None:
                raise AgentRolloutError(f"{workload['kind']} {meta['name']} was deleted")
            current.setdefault("kind", workload["kind"])
            if current["kind"] == "ReplicaSet":
                if _replicaset_rolled_out(current, await _replicaset_pods(api, current)):
                    return
            elif rolled_out(current):
                return
    raise AgentRolloutError(
        f"{workload['kind']} {meta['name']} did not roll out within {timeout_s:g} s"
    )


async def agent_workloads(api: Any, namespace: str | None) -> list[dict[str, Any]]:
    """The workloads that carry the agent's mark, in ``namespace`` or (None) everywhere."""
    return [
        w
        for w in await list_workloads(api, namespace)
        if AGENT_ANNOTATION in (w["spec"]["template"].get("metadata", {}).get("annotations") or {})
    ]
