"""Endpoints and EndpointSlices from a Service's selected pods (pkg/controller/endpoint*)."""

from __future__ import annotations

from typing import Any

from ..apiserver._errors import AlreadyExists, NotFound, StoreError
from ..apiserver._selectors import labels_match, selector_from_object
from ..apiserver._store import Store
from ._common import Obj, is_ready, owner_ref, short_hash

MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"
SERVICE_NAME = "kubernetes.io/service-name"


def _target_port(port: Obj, pod: Obj) -> int | None:
    """A Service port's targetPort on one pod: a number, or a container port's name."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = port.get("protocol", "TCP")
    for container in pod.get("spec", {}).get("containers") or []:
        for cport in container.get("ports") or []:
            if cport.get("name") == target and cport.get("protocol", "TCP") == protocol:
                return int(cport["containerPort"])
    return None


def _address(pod: Obj, svc: Obj) -> Obj:
    meta = pod["metadata"]
    address: dict[str, Any] = {
        "ip": pod["status"]["podIP"],
        "nodeName": pod["spec"].get("nodeName"),
        "targetRef": {
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
        },
    }
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == svc["metadata"]["name"]:
        address["hostname"] = spec["hostname"]
    return address


def _groups(
    svc: Obj, pods: list[Obj]
) -> dict[tuple[tuple[str, int, str], ...], list[tuple[Obj, bool]]]:
    """Pods grouped by their resolved port set: {ports: [(pod, ready)]}."""
    publish = bool(svc["spec"].get("publishNotReadyAddresses"))
    groups: dict[tuple[tuple[str, int, str], ...], list[tuple[Obj, bool]]] = {}
    for pod in pods:
        ports = []
        for port in svc["spec"].get("ports") or []:
            number = _target_port(port, pod)
            if number is not None:
                ports.append((str(port.get("name", "")), number, str(port.get("protocol", "TCP"))))
        if svc["spec"].get("ports") and not ports:
            continue
        groups.setdefault(tuple(ports), []).append((pod, publish or is_ready(pod)))
    return groups


def _selected_pods(store: Store, svc: Obj, *, terminating: bool = False) -> list[Obj]:
    """Pods with an IP the Service selects; terminating ones only when asked (slices
    list them as terminating, Endpoints leave them out)."""
    selector = selector_from_object({"matchLabels": svc["spec"].get("selector") or {}})
    pods, _ = store.list("pods", svc["metadata"]["namespace"])
    return [
        p
        for p in pods
        if labels_match(selector, p["metadata"].get("labels"))
        and (p.get("status") or {}).get("podIP")
        and (terminating or not p["metadata"].get("deletionTimestamp"))
        and p["status"].get("phase") not in ("Succeeded", "Failed")
    ]


async def _put(store: Store, resource: str, ns: str, obj: Obj) -> None:
    try:
        current = store.get(resource, ns, obj["metadata"]["name"])
    except NotFound:
        try:
            await store.create(resource, ns, obj)
        except AlreadyExists:
            pass
        return
    merged = {**current, **{k: v for k, v in obj.items() if k != "metadata"}}
    merged["metadata"] = {**current["metadata"], "labels": obj["metadata"].get("labels", {})}
    if "ownerReferences" in obj["metadata"]:
        merged["metadata"]["ownerReferences"] = obj["metadata"]["ownerReferences"]
    for key in ("subsets", "endpoints", "ports"):
        if key in current and key not in obj:
            merged.pop(key)
    await store.update(resource, ns, merged)


async def sync_service_endpoints(store: Store, ns: str, name: str) -> None:
    try:
        svc = store.get("services", ns, name)
    except NotFound:
        await _delete(store, "endpoints", ns, name)
        return
    if not svc["spec"].get("selector"):
        return  # endpoints of selector-less services belong to their users
    groups = _groups(svc, _selected_pods(store, svc))
    subsets = []
    for ports, members in sorted(groups.items()):
        subset: dict[str, Any] = {}
        ready = [_address(p, svc) for p, ok in members if ok]
        not_ready = [_address(p, svc) for p, ok in members if not ok]
        if ready:
            subset["addresses"] = sorted(ready, key=lambda a: a["ip"])
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: a["ip"])
        subset["ports"] = [
            {"name": n, "port": p, "protocol": proto} if n else {"port": p, "protocol": proto}
            for n, p, proto in ports
        ]
        subsets.append(subset)
    labels = dict(svc["metadata"].get("labels") or {})
    endpoints: Obj = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "labels": labels},
    }
    if subsets:
        endpoints["subsets"] = subsets
    await _put(store, "endpoints", ns, endpoints)
    await _sync_slices(store, svc, _groups(svc, _selected_pods(store, svc, terminating=True)))


async def _sync_slices(
    store: Store, svc: Obj, groups: dict[tuple[tuple[str, int, str], ...], list[tuple[Obj, bool]]]
) -> None:
    ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
    if not groups:
        groups = {(): []}
    wanted: dict[str, Obj] = {}
    for ports, members in groups.items():
        slice_name = f"{name}-{short_hash([name, list(ports)], 5)}"
        endpoints = []
        for pod, ok in sorted(members, key=lambda m: m[0]["status"]["podIP"]):
            address = _address(pod, svc)
            # discovery/v1 EndpointConditions: a terminating pod is not ready, but may
            # still be serving (its readiness) until it is gone.
            ending = bool(pod["metadata"].get("deletionTimestamp"))
            entry: dict[str, Any] = {
                "addresses": [address["ip"]],
                "conditions": {"ready": ok and not ending, "serving": ok, "terminating": ending},
                "nodeName": address["nodeName"],
                "targetRef": address["targetRef"],
            }
            if "hostname" in address:
                entry["hostname"] = address["hostname"]
            endpoints.append(entry)
        wanted[slice_name] = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": slice_name,
                "labels": {
                    **(svc["metadata"].get("labels") or {}),
                    SERVICE_NAME: name,
                    MANAGED_BY: SLICE_CONTROLLER,
                },
                "ownerReferences": [owner_ref(svc)],
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
        }
    existing, _ = store.list(
        "endpointslices",
        ns,
        label_selector=f"{SERVICE_NAME}={name},{MANAGED_BY}={SLICE_CONTROLLER}",
    )
    for obj in existing:
        if obj["metadata"]["name"] not in wanted:
            await _delete(store, "endpointslices", ns, obj["metadata"]["name"])
    for obj in wanted.values():
        await _put(store, "endpointslices", ns, obj)


async def _delete(store: Store, resource: str, ns: str, name: str) -> None:
    try:
        await store.delete(resource, ns, name)
    except StoreError:
        pass
