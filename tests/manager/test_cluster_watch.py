"""The manager learns about a namespace made after clients connected from its watch, not
at the next periodic listing (which, here, would be an hour away)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import kr8s
import trio

from manager._cluster import ClusterWatcher


class _Watch:
    def __init__(self, lines: trio.MemoryReceiveChannel[str]) -> None:
        self._lines = lines

    async def aiter_lines(self) -> AsyncIterator[str]:
        async for line in self._lines:
            yield line


class _List:
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def json(self) -> dict[str, Any]:
        return self._data


class NamespaceApi:
    """Lists ``namespaces`` as they are now; a watch sends what ``events`` is fed."""

    def __init__(self) -> None:
        self.namespaces = ["default"]
        self.version = 1
        self.watched_from: list[str] = []
        self.listed: list[str] = []
        self.events, self._lines = trio.open_memory_channel[str](10)

    @contextlib.asynccontextmanager
    async def call_api(self, method: str, *, url: str, **kwargs: Any) -> AsyncIterator[Any]:
        await trio.lowlevel.checkpoint()
        if method == "POST":
            body = {"message": "The range of valid IPs is 10.96.0.0/12"}
            raise kr8s.ServerError(body["message"], response=httpx.Response(422, json=body))
        if kwargs.get("stream"):
            self.watched_from.append(kwargs["params"].get("resourceVersion", ""))
            yield _Watch(self._lines)
            return
        self.listed.append(url)
        if url == "nodes":
            yield _List({"items": [{"spec": {"podCIDR": "10.244.0.0/24"}}]})
            return
        if url == "namespaces":
            items = [{"metadata": {"name": n}} for n in self.namespaces]
            yield _List({"metadata": {"resourceVersion": str(self.version)}, "items": items})
            return
        yield _List({"items": []})


async def test_a_new_namespace_is_known_at_once(nursery: trio.Nursery) -> None:
    api = NamespaceApi()
    watcher = ClusterWatcher(api=api, namespace="tpengine", interval=3600)
    nursery.start_soon(watcher.run)
    await watcher.ready.wait()
    assert watcher.info.namespaces == ("default",)

    changed = watcher.changed
    api.namespaces.append("team")
    api.version = 2
    added = {"type": "ADDED", "object": {"metadata": {"name": "team"}}}
    await api.events.send(json.dumps(added))
    with trio.fail_after(5):
        await changed.wait()
    assert watcher.info.namespaces == ("default", "team")
    assert api.watched_from == ["1"]  # from the listing's resourceVersion


async def test_pods_are_not_listed_when_the_nodes_declare_their_subnets(
    nursery: trio.Nursery,
) -> None:
    api = NamespaceApi()
    watcher = ClusterWatcher(api=api, namespace="tpengine", interval=3600)
    nursery.start_soon(watcher.run)
    await watcher.ready.wait()
    assert [str(n) for n in watcher.info.pod_cidrs] == ["10.244.0.0/24"]
    assert "pods" not in api.listed  # the heaviest list of a big cluster
