"""kr8s (asyncio flavour, under trio) against the API server."""

from __future__ import annotations

import kr8s
import kr8s.asyncio
import trio
from kr8s.asyncio.objects import ConfigMap, Deployment, Pod

from tests.localcluster.api.conftest import Cluster

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "tool", "namespace": "default", "labels": {"app": "tool"}},
    "spec": {
        "containers": [{"name": "tool", "image": "busybox:1.36", "command": ["sleep", "inf"]}]
    },
}


async def test_kr8s_get_watch_create_patch_delete_exec(cluster: Cluster) -> None:
    api = await kr8s.asyncio.api(kubeconfig=str(cluster.kubeconfig))
    assert (await api.version())["minor"] == "32"
    assert await api.whoami() == "admin"  # a SelfSubjectReview
    seen: list[tuple[str, str]] = []
    watching = trio.Event()

    async def watch() -> None:
        async for event, obj in api.watch("configmaps", namespace="default"):
            seen.append((event, obj.name))
            watching.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await watching.wait()  # kube-root-ca.crt arrives first as ADDED
        cm = await ConfigMap(
            {"metadata": {"name": "cfg", "namespace": "default"}, "data": {"a": "1"}}, api=api
        )
        await cm.create()
        await cm.patch({"data": {"a": "2"}})
        assert cm.data == {"a": "2"}
        await cm.delete()
        await cluster.wait_for(lambda: ("DELETED", "cfg") in seen)
        nursery.cancel_scope.cancel()
    assert [e for e in seen if e[1] == "cfg"] == [
        ("ADDED", "cfg"),
        ("MODIFIED", "cfg"),
        ("DELETED", "cfg"),
    ]

    pod = await Pod(POD, api=api)
    await pod.create()
    await pod.wait("condition=Ready", timeout=10)
    pods = [p async for p in api.get("pods", namespace=kr8s.ALL, label_selector={"app": "tool"})]
    assert [p.name for p in pods] == ["tool"]
    assert pods[0].spec.serviceAccountName == "default"
    by_field = [
        p
        async for p in api.get(
            "pods", namespace="default", field_selector="metadata.name=tool,metadata.name=tool"
        )
    ]
    assert len(by_field) == 1
    result = await pod.exec(["echo", "from", "kr8s"])
    assert result.stdout == b"from kr8s\n"
    await pod.patch({"metadata": {"labels": {"patched": "yes"}}})
    assert cluster.store.get("pods", "default", "tool")["metadata"]["labels"]["patched"] == "yes"
    await pod.delete()
    await cluster.wait_for(lambda: not cluster.store.list("pods", "default")[0])


async def test_kr8s_scale_deployment(cluster: Cluster) -> None:
    api = await kr8s.asyncio.api(kubeconfig=str(cluster.kubeconfig))
    dep = await Deployment(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "d"}},
                "template": {
                    "metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "d", "image": "jmalloc/echo-server"}]},
                },
            },
        },
        api=api,
    )
    await dep.create()
    await dep.scale(3)
    await cluster.wait_for(
        lambda: len(cluster.store.list("pods", "default", label_selector="app=d")[0]) == 3
    )
    await dep.delete()
    await cluster.wait_for(lambda: not cluster.store.list("pods", "default")[0])
