"""Controllers against the store alone: rolling updates keep availability, GC, endpoints."""

from __future__ import annotations

import functools
from typing import Any

import trio

from localcluster.controllers import bootstrap, run_controllers
from localcluster.store import NotFound, Store
from tests.localcluster.api.fakenode import FakeKubelet


def _deployment(
    replicas: int, image: str, strategy: dict[str, Any] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "d"}},
        "template": {
            "metadata": {"labels": {"app": "d"}},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": image,
                        "ports": [{"name": "http", "containerPort": 8080}],
                    }
                ]
            },
        },
    }
    if strategy:
        spec["strategy"] = strategy
    return {"metadata": {"name": "d"}, "spec": spec}


def _ready_pods(store: Store) -> list[dict[str, Any]]:
    pods, _ = store.list("pods", "default", label_selector="app=d")
    return [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions") or []
        )
    ]


async def _settle(store: Store, kubelet: FakeKubelet, check: Any) -> int:
    """Make one pending pod ready at a time; return the fewest ready pods seen."""
    fewest = 10**6
    for _ in range(400):
        await trio.sleep(0.02)
        fewest = min(fewest, len(_ready_pods(store)))
        pods, _ = store.list("pods", "default")
        pending = [
            p
            for p in pods
            if p["status"].get("phase") == "Pending" and not p["metadata"].get("deletionTimestamp")
        ]
        if pending:
            await kubelet.mark_ready("default", pending[0]["metadata"]["name"])
        elif check():
            return fewest
    raise AssertionError("the rollout did not finish")


async def test_rolling_update_keeps_availability_and_cleans_up(nursery: trio.Nursery) -> None:
    store = Store(node_name="n")
    await bootstrap(store)
    kubelet = FakeKubelet(store, auto_ready=False)
    nursery.start_soon(kubelet.run)
    nursery.start_soon(functools.partial(run_controllers, store, resync_seconds=0.2))
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    await store.create("deployments", "default", _deployment(4, "img:1", strategy))

    def done() -> bool:
        dep = store.get("deployments", "default", "d")
        status = dep.get("status", {})
        return (
            status.get("observedGeneration") == dep["metadata"]["generation"]
            and status.get("updatedReplicas")
            == status.get("availableReplicas")
            == status.get("replicas")
            == 4
        )

    await _settle(store, kubelet, done)
    svc = {
        "metadata": {"name": "d"},
        "spec": {"selector": {"app": "d"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    await store.create("services", "default", svc)
    dep = store.get("deployments", "default", "d")
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "img:2"
    await store.update("deployments", "default", dep)
    fewest = await _settle(store, kubelet, done)
    assert fewest >= 3  # desired - maxUnavailable
    images = {p["spec"]["containers"][0]["image"] for p in _ready_pods(store)}
    assert images == {"img:2"}
    replicasets, _ = store.list("replicasets", "default")
    assert sorted(rs["spec"]["replicas"] for rs in replicasets) == [0, 4]
    new = next(rs for rs in replicasets if rs["spec"]["replicas"] == 4)
    assert new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    annotations = store.get("deployments", "default", "d")["metadata"]["annotations"]
    assert annotations["deployment.kubernetes.io/revision"] == "2"
    for _ in range(100):
        endpoints = store.get("endpoints", "default", "d")
        addresses = endpoints.get("subsets", [{}])[0].get("addresses", [])
        if len(addresses) == 4:
            break
        await trio.sleep(0.02)
    assert {a["ip"] for a in addresses} == {p["status"]["podIP"] for p in _ready_pods(store)}
    assert endpoints["subsets"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
    slices, _ = store.list(
        "endpointslices", "default", label_selector="kubernetes.io/service-name=d"
    )
    assert len(slices) == 1 and len(slices[0]["endpoints"]) == 4

    await store.delete("deployments", "default", "d")
    for _ in range(100):
        if not store.list("pods", "default")[0] and not store.list("replicasets", "default")[0]:
            break
        await trio.sleep(0.02)
    assert not store.list("replicasets", "default")[0]
    await store.delete("services", "default", "d")
    for _ in range(50):
        try:
            store.get("endpoints", "default", "d")
        except NotFound:
            break
        await trio.sleep(0.02)
    assert not store.list(
        "endpointslices", "default", label_selector="kubernetes.io/service-name=d"
    )[0]


async def test_recreate_strategy_stops_old_pods_first(nursery: trio.Nursery) -> None:
    store = Store(node_name="n")
    await bootstrap(store)
    kubelet = FakeKubelet(store, auto_ready=False)
    nursery.start_soon(kubelet.run)
    nursery.start_soon(functools.partial(run_controllers, store, resync_seconds=0.2))
    await store.create("deployments", "default", _deployment(2, "img:1", {"type": "Recreate"}))

    def images() -> set[str]:
        return {p["spec"]["containers"][0]["image"] for p in store.list("pods", "default")[0]}

    await _settle(store, kubelet, lambda: len(_ready_pods(store)) == 2)
    dep = store.get("deployments", "default", "d")
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "img:2"
    await store.update("deployments", "default", dep)
    for _ in range(200):
        assert images() != {"img:1", "img:2"}  # never both at once
        if images() == {"img:2"} and len(store.list("pods", "default")[0]) == 2:
            break
        await trio.sleep(0.02)
    assert images() == {"img:2"}
