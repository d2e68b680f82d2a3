"""Deployment → ReplicaSet → Pod, and StatefulSet → ordered Pods.

Simplified from pkg/controller/deployment (rolling.go, sync.go), replicaset and
statefulset: the same objects, labels, annotations and status fields kubectl reads.
"""

from __future__ import annotations

import copy
from typing import Any

from ..apiserver._errors import NotFound, StoreError
from ..apiserver._selectors import labels_match, selector_from_object
from ..apiserver._store import Store, now_rfc3339
from ._common import (
    Obj,
    condition,
    controller_of,
    is_active,
    is_ready,
    owned_by,
    owner_ref,
    record_event,
    resolve_int_or_percent,
    short_hash,
)

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"


def _pods_of(store: Store, owner: Obj) -> list[Obj]:
    pods, _ = store.list("pods", owner["metadata"]["namespace"])
    return [p for p in pods if owned_by(p, owner)]


def _pod_from_template(
    owner: Obj, template: Obj, *, name: str | None, labels: dict[str, str]
) -> Obj:
    meta = copy.deepcopy(template.get("metadata") or {})
    meta.pop("creationTimestamp", None)
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    meta["ownerReferences"] = [owner_ref(owner)]
    if name:
        meta["name"] = name
    else:
        meta["generateName"] = owner["metadata"]["name"] + "-"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


# ---- ReplicaSet ------------------------------------------------------------------------


async def sync_replicaset(store: Store, ns: str, name: str) -> None:
    try:
        rs = store.get("replicasets", ns, name)
    except NotFound:
        return
    if rs["metadata"].get("deletionTimestamp"):
        return
    pods = [p for p in _pods_of(store, rs) if is_active(p)]
    want = int(rs["spec"].get("replicas", 1))
    if len(pods) < want:
        template = rs["spec"].get("template") or {}
        for _ in range(want - len(pods)):
            pod = _pod_from_template(rs, template, name=None, labels={})
            created = await store.create("pods", ns, pod)
            pods.append(created)
            await record_event(
                store,
                rs,
                "SuccessfulCreate",
                f"Created pod: {created['metadata']['name']}",
                "replicaset-controller",
            )
    elif len(pods) > want:
        # controller.ActivePods ordering: not-ready and younger pods go first.
        pods.sort(key=lambda p: (is_ready(p), p["metadata"]["creationTimestamp"]), reverse=False)
        surplus, pods = pods[: len(pods) - want], pods[len(pods) - want :]
        for pod in surplus:
            try:
                await store.delete("pods", ns, pod["metadata"]["name"])
                await record_event(
                    store,
                    rs,
                    "SuccessfulDelete",
                    f"Deleted pod: {pod['metadata']['name']}",
                    "replicaset-controller",
                )
            except NotFound:
                pass
    ready = sum(1 for p in pods if is_ready(p))
    selector = selector_from_object(rs["spec"].get("selector"))
    status = {
        "replicas": len(pods),
        "fullyLabeledReplicas": sum(
            1 for p in pods if labels_match(selector, p["metadata"].get("labels"))
        ),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": rs["metadata"].get("generation", 1),
    }
    status = {k: v for k, v in status.items() if v or k in ("replicas", "observedGeneration")}
    await store.update_status("replicasets", ns, name, status)


# ---- Deployment ------------------------------------------------------------------------


def template_hash(template: Obj) -> str:
    clean = copy.deepcopy(template)
    (clean.get("metadata") or {}).get("labels", {}).pop(HASH_LABEL, None)
    return short_hash(clean)


def _new_replicaset(dep: Obj, pod_hash: str, replicas: int, revision: int) -> Obj:
    template = copy.deepcopy(dep["spec"]["template"])
    tmeta = template.setdefault("metadata", {})
    tmeta["labels"] = {**(tmeta.get("labels") or {}), HASH_LABEL: pod_hash}
    selector = copy.deepcopy(dep["spec"]["selector"])
    selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{dep['metadata']['name']}-{pod_hash}",
            "namespace": dep["metadata"]["namespace"],
            "labels": dict(tmeta["labels"]),
            "annotations": {
                "deployment.kubernetes.io/desired-replicas": str(dep["spec"]["replicas"]),
                "deployment.kubernetes.io/max-replicas": str(dep["spec"]["replicas"]),
                REVISION: str(revision),
            },
            "ownerReferences": [owner_ref(dep)],
        },
        "spec": {"replicas": replicas, "selector": selector, "template": template},
    }


def _revision(rs: Obj) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


async def _scale(store: Store, rs: Obj, replicas: int, desired: int) -> Obj:
    if rs["spec"].get("replicas") == replicas:
        return rs
    before = rs["spec"].get("replicas", 0)
    rs = copy.deepcopy(rs)
    rs["spec"]["replicas"] = replicas
    rs["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/desired-replicas"] = str(
        desired
    )
    updated = await store.update("replicasets", rs["metadata"]["namespace"], rs)
    owner = _owner_deployment(store, rs)
    if owner is not None:
        direction = "up" if replicas > before else "down"
        await record_event(
            store,
            owner,
            "ScalingReplicaSet",
            f"Scaled {direction} replica set {rs['metadata']['name']} from {before} to {replicas}",
            "deployment-controller",
        )
    return updated


def _owner_deployment(store: Store, rs: Obj) -> Obj | None:
    ref = controller_of(rs)
    if ref is None or ref.get("kind") != "Deployment":
        return None
    try:
        return store.get("deployments", rs["metadata"]["namespace"], ref["name"])
    except NotFound:
        return None


async def sync_deployment(store: Store, ns: str, name: str) -> None:
    try:
        dep = store.get("deployments", ns, name)
    except NotFound:
        return
    if dep["metadata"].get("deletionTimestamp"):
        return
    spec = dep["spec"]
    desired = int(spec.get("replicas", 1))
    pod_hash = template_hash(spec["template"])
    all_rs = [rs for rs in store.list("replicasets", ns)[0] if owned_by(rs, dep)]
    new = next(
        (rs for rs in all_rs if rs["metadata"].get("labels", {}).get(HASH_LABEL) == pod_hash), None
    )
    olds = [rs for rs in all_rs if rs is not new]
    if spec.get("paused"):
        await _write_status(store, dep, new, all_rs, desired)
        return
    if new is None:
        revision = max((_revision(rs) for rs in all_rs), default=0) + 1
        start = desired if not any(rs["spec"].get("replicas") for rs in olds) else 0
        new = await store.create("replicasets", ns, _new_replicaset(dep, pod_hash, start, revision))
        if start:
            await record_event(
                store,
                dep,
                "ScalingReplicaSet",
                f"Scaled up replica set {new['metadata']['name']} from 0 to {start}",
                "deployment-controller",
            )
    elif _revision(new) < max((_revision(rs) for rs in olds), default=0):
        new = copy.deepcopy(new)
        new["metadata"]["annotations"][REVISION] = str(max(_revision(rs) for rs in olds) + 1)
        new = await store.update("replicasets", ns, new)
    if (spec.get("strategy") or {}).get("type") == "Recreate":
        new = await _recreate(store, new, olds, desired)
    else:
        new = await _rolling(store, dep, new, olds, desired)
    await _cleanup(store, dep, olds)
    dep = await _annotate_revision(store, dep, _revision(new))
    all_rs = [rs for rs in store.list("replicasets", ns)[0] if owned_by(rs, dep)]
    await _write_status(store, dep, new, all_rs, desired)


async def _annotate_revision(store: Store, dep: Obj, revision: int) -> Obj:
    """The Deployment carries its current revision, as the deployment controller writes it."""
    annotations = dep["metadata"].get("annotations") or {}
    if annotations.get(REVISION) == str(revision):
        return dep
    dep = copy.deepcopy(dep)
    dep["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
    return await store.update("deployments", dep["metadata"]["namespace"], dep)


async def _recreate(store: Store, new: Obj, olds: list[Obj], desired: int) -> Obj:
    for rs in olds:
        await _scale(store, rs, 0, desired)
    if any(_pods_of(store, rs) for rs in olds):
        return new
    return await _scale(store, new, desired, desired)


async def _rolling(store: Store, dep: Obj, new: Obj, olds: list[Obj], desired: int) -> Obj:
    rolling = (dep["spec"].get("strategy") or {}).get("rollingUpdate") or {}
    surge = resolve_int_or_percent(rolling.get("maxSurge", "25%"), desired, True)
    unavailable = resolve_int_or_percent(rolling.get("maxUnavailable", "25%"), desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    live_olds = [rs for rs in olds if rs["spec"].get("replicas")]
    if not live_olds:
        return await _scale(store, new, desired, desired)
    # Scale up the new ReplicaSet within maxSurge (rolling.go reconcileNewReplicaSet).
    total = new["spec"].get("replicas", 0) + sum(rs["spec"]["replicas"] for rs in live_olds)
    room = desired + surge - total
    if room > 0 and new["spec"].get("replicas", 0) < desired:
        new = await _scale(store, new, min(desired, new["spec"].get("replicas", 0) + room), desired)
    # Scale down old ones within maxUnavailable (reconcileOldReplicaSets), unhealthy first.
    # Availability is counted from the pods themselves: a ReplicaSet's status lags behind
    # the deletions its controller has just made, and trusting it would over-delete.
    ready = {rs["metadata"]["uid"]: _available(store, rs) for rs in [new, *live_olds]}
    can_remove = sum(ready.values()) - (desired - unavailable)
    for rs in live_olds:
        replicas = rs["spec"]["replicas"]
        unhealthy = replicas - ready[rs["metadata"]["uid"]]
        cut = min(replicas, max(unhealthy, 0) + max(can_remove, 0))
        if cut > 0:
            can_remove -= max(0, cut - max(unhealthy, 0))
            await _scale(store, rs, replicas - cut, desired)
    return new


def _available(store: Store, rs: Obj) -> int:
    """Ready pods that will stay: pods beyond spec.replicas are about to be deleted."""
    ready = sum(1 for p in _pods_of(store, rs) if is_active(p) and is_ready(p))
    return min(ready, int(rs["spec"].get("replicas", 0)))


async def _cleanup(store: Store, dep: Obj, olds: list[Obj]) -> None:
    limit = int(dep["spec"].get("revisionHistoryLimit", 10))
    idle = sorted(
        (
            rs
            for rs in olds
            if not rs["spec"].get("replicas") and not (rs.get("status") or {}).get("replicas")
        ),
        key=_revision,
    )
    for rs in idle[: max(0, len(idle) - limit)]:
        try:
            await store.delete("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"])
        except StoreError:
            pass


async def _write_status(
    store: Store, dep: Obj, new: Obj | None, all_rs: list[Obj], desired: int
) -> None:
    def total(key: str, items: list[Obj]) -> int:
        return sum(int((rs.get("status") or {}).get(key, 0)) for rs in items)

    replicas = total("replicas", all_rs)
    updated = total("replicas", [new]) if new else 0
    ready = total("readyReplicas", all_rs)
    available = total("availableReplicas", all_rs)
    rolling = (dep["spec"].get("strategy") or {}).get("rollingUpdate") or {}
    max_unavailable = resolve_int_or_percent(rolling.get("maxUnavailable", "25%"), desired, False)
    now = now_rfc3339()
    old_conditions = (dep.get("status") or {}).get("conditions") or []
    complete = updated == desired and replicas == desired and available >= desired
    rs_name = new["metadata"]["name"] if new else ""
    conditions = [
        condition(
            "Available",
            available >= desired - max_unavailable,
            "MinimumReplicasAvailable"
            if available >= desired - max_unavailable
            else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if available >= desired - max_unavailable
            else "Deployment does not have minimum availability.",
            now,
            old_conditions,
        ),
        condition(
            "Progressing",
            True,
            "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
            f'ReplicaSet "{rs_name}" has successfully progressed.'
            if complete
            else f'ReplicaSet "{rs_name}" is progressing.',
            now,
            old_conditions,
        ),
    ]
    status: dict[str, Any] = {
        "observedGeneration": dep["metadata"].get("generation", 1),
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": max(0, replicas - available)
        if replicas >= desired
        else desired - available,
        "conditions": conditions,
    }
    status = {
        k: v
        for k, v in status.items()
        if v or k in ("observedGeneration", "replicas", "conditions")
    }
    await store.update_status(
        "deployments", dep["metadata"]["namespace"], dep["metadata"]["name"], status
    )


# ---- StatefulSet -----------------------------------------------------------------------


async def sync_statefulset(store: Store, ns: str, name: str) -> None:
    try:
        sts = store.get("statefulsets", ns, name)
    except NotFound:
        return
    if sts["metadata"].get("deletionTimestamp"):
        return
    spec = sts["spec"]
    want = int(spec.get("replicas", 1))
    revision = f"{name}-{short_hash(spec.get('template'))}"
    ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
    pods = {p["metadata"]["name"]: p for p in _pods_of(store, sts)}
    await _sts_create_missing(store, sts, pods, want, revision, ordered)
    await _sts_remove(store, sts, pods, want, revision, ordered)
    await _sts_status(store, sts, revision, want)


async def _sts_create_missing(
    store: Store, sts: Obj, pods: dict[str, Obj], want: int, revision: str, ordered: bool
) -> None:
    """Pods 0..want-1; with OrderedReady one at a time, each once all before it are Ready."""
    ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
    for i in range(want):
        pod_name = f"{name}-{i}"
        if pod_name in pods:
            continue
        if ordered and not all(
            (p := pods.get(f"{name}-{j}")) is not None and is_ready(p) and is_active(p)
            for j in range(i)
        ):
            return
        pods[pod_name] = await store.create("pods", ns, _sts_pod(sts, i, revision))
        await record_event(
            store,
            sts,
            "SuccessfulCreate",
            f"create Pod {pod_name} in StatefulSet {name} successful",
            "statefulset-controller",
        )
        if ordered:
            return


async def _sts_remove(
    store: Store, sts: Obj, pods: dict[str, Obj], want: int, revision: str, ordered: bool
) -> None:
    """Scale down from the highest ordinal, then roll pods of an old revision (highest
    first, one at a time while all are Ready), and replace pods that finished."""
    ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]

    def highest_first(items: list[Obj]) -> list[Obj]:
        return sorted(items, key=lambda p: -_ordinal(p["metadata"]["name"], name))

    extra = highest_first([p for n, p in pods.items() if _ordinal(n, name) >= want])
    all_ready = all(is_ready(p) and is_active(p) for p in pods.values())
    for pod in extra[:1] if ordered else extra:
        if not ordered or all_ready:
            await _delete_quietly(store, ns, pod["metadata"]["name"])
    stale = highest_first(
        [
            p
            for n, p in pods.items()
            if _ordinal(n, name) < want
            and p["metadata"].get("labels", {}).get("controller-revision-hash") != revision
        ]
    )
    on_delete = (sts["spec"].get("updateStrategy") or {}).get("type") == "OnDelete"
    if stale and all_ready and not extra and not on_delete:
        await _delete_quietly(store, ns, stale[0]["metadata"]["name"])
    for pod in pods.values():
        finished = pod["status"].get("phase") in ("Failed", "Succeeded")
        if finished and not pod["metadata"].get("deletionTimestamp"):
            await _delete_quietly(store, ns, pod["metadata"]["name"])


def _ordinal(pod_name: str, sts_name: str) -> int:
    try:
        return int(pod_name[len(sts_name) + 1 :])
    except ValueError:
        return -1


async def _delete_quietly(store: Store, ns: str, name: str) -> None:
    try:
        await store.delete("pods", ns, name)
    except StoreError:
        pass


def _sts_pod(sts: Obj, index: int, revision: str) -> Obj:
    name = f"{sts['metadata']['name']}-{index}"
    labels = {
        "controller-revision-hash": revision,
        "statefulset.kubernetes.io/pod-name": name,
        "apps.kubernetes.io/pod-index": str(index),
    }
    pod = _pod_from_template(sts, sts["spec"].get("template") or {}, name=name, labels=labels)
    pod["spec"]["hostname"] = name
    if sts["spec"].get("serviceName"):
        pod["spec"]["subdomain"] = sts["spec"]["serviceName"]
    return pod


async def _sts_status(store: Store, sts: Obj, revision: str, want: int) -> None:
    pods = [p for p in _pods_of(store, sts) if is_active(p)]
    updated = [
        p
        for p in pods
        if p["metadata"].get("labels", {}).get("controller-revision-hash") == revision
    ]
    ready = sum(1 for p in pods if is_ready(p))
    old = sts.get("status") or {}
    current_revision = old.get("currentRevision") or revision
    if len(updated) == want and all(is_ready(p) for p in updated):
        current_revision = revision
    status = {
        "observedGeneration": sts["metadata"].get("generation", 1),
        "replicas": len(pods),
        "readyReplicas": ready,
        "currentReplicas": len(updated)
        if current_revision == revision
        else len(pods) - len(updated),
        "updatedReplicas": len(updated),
        "availableReplicas": ready,
        "currentRevision": current_revision,
        "updateRevision": revision,
        "collisionCount": 0,
    }
    await store.update_status(
        "statefulsets", sts["metadata"]["namespace"], sts["metadata"]["name"], status
    )
