"""The controller manager: bootstrap objects, watches feeding one work queue, resync.

Level-triggered like kube-controller-manager: events only say *which* object to look at;
each sync reads the current state and converges. A periodic resync covers anything a
watch could have missed, and a failed sync is retried on the next pass.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from ..apiserver._errors import AlreadyExists, NotFound, StoreError
from ..apiserver._store import Store, WatchEvent, now_rfc3339
from ._bootstrap import cluster_objects, node_object
from ._common import Obj, controller_of
from ._endpoints import sync_service_endpoints
from ._workloads import sync_deployment, sync_replicaset, sync_statefulset

log = logging.getLogger(__name__)

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
RESYNC_SECONDS = 5.0
Key = tuple[str, str, str]  # (kind, namespace, name)


class _Queue:
    """A de-duplicating work queue (client-go's workqueue): a key is handed to one worker
    at a time; a key added while a worker has it is handed out again once it is done."""

    def __init__(self) -> None:
        self._pending: dict[Key, None] = {}
        self._active: set[Key] = set()
        self._wakeup = trio.Event()

    def add(self, key: Key) -> None:
        self._pending[key] = None
        self._wakeup.set()

    async def take(self) -> Key:
        while True:
            key = next((k for k in self._pending if k not in self._active), None)
            if key is not None:
                del self._pending[key]
                self._active.add(key)
                return key
            self._wakeup = trio.Event()
            await self._wakeup.wait()

    def done(self, key: Key) -> None:
        self._active.discard(key)
        if key in self._pending:
            self._wakeup.set()


async def _ensure(store: Store, resource: str, ns: str | None, obj: Obj) -> None:
    try:
        await store.create(resource, ns, obj)
    except AlreadyExists:
        pass


async def bootstrap(
    store: Store,
    *,
    ca_cert_pem: bytes | None = None,
    api_host: str = "198.18.0.1",
    api_port: int = 6443,
) -> None:
    """Default namespaces and the ``kubernetes`` Service with its Endpoints(lices)."""
    for ns in DEFAULT_NAMESPACES:
        await _ensure(store, "namespaces", None, {"metadata": {"name": ns}})
        await _namespace_contents(store, ns, ca_cert_pem)
    await _ensure(store, "nodes", None, node_object(store.node_name, api_host))
    for resource, namespace, obj in cluster_objects(api_host, api_port):
        await _ensure(store, resource, namespace, obj)


async def _namespace_contents(store: Store, ns: str, ca_cert_pem: bytes | None) -> None:
    # The serviceaccount controller and root-ca-cert-publisher of a real cluster.
    try:
        if store.get("namespaces", None, ns)["metadata"].get("deletionTimestamp"):
            return
    except NotFound:
        return
    await _ensure(store, "serviceaccounts", ns, {"metadata": {"name": "default"}})
    if ca_cert_pem is not None:
        await _ensure(
            store,
            "configmaps",
            ns,
            {
                "metadata": {
                    "name": "kube-root-ca.crt",
                    "annotations": {
                        "kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."
                    },
                },
                "data": {"ca.crt": ca_cert_pem.decode()},
            },
        )


def _keys_for(resource: str, event: WatchEvent) -> list[Key]:
    meta = event.object.get("metadata", {})
    ns, name = meta.get("namespace", ""), meta.get("name", "")
    keys: list[Key] = [(resource, ns, name)]
    owner = controller_of(event.object)
    if owner is not None:
        kind = {
            "ReplicaSet": "replicasets",
            "Deployment": "deployments",
            "StatefulSet": "statefulsets",
        }.get(owner.get("kind", ""))
        if kind:
            keys.append((kind, ns, owner["name"]))
    if resource == "pods":
        keys.append(("endpoints-ns", ns, ""))
    return keys


async def run_controllers(
    store: Store,
    *,
    ca_cert_pem: bytes | None = None,
    api_host: str = "198.18.0.1",
    api_port: int = 6443,
    resync_seconds: float = RESYNC_SECONDS,
) -> None:
    """Run every controller until cancelled."""
    await bootstrap(store, ca_cert_pem=ca_cert_pem, api_host=api_host, api_port=api_port)
    queue = _Queue()
    syncs: dict[str, Callable[[str, str], Awaitable[None]]] = {
        "deployments": lambda ns, name: sync_deployment(store, ns, name),
        "replicasets": lambda ns, name: sync_replicaset(store, ns, name),
        "statefulsets": lambda ns, name: sync_statefulset(store, ns, name),
        "services": lambda ns, name: sync_service_endpoints(store, ns, name),
        "namespaces": lambda ns, name: _namespace_contents(store, name, ca_cert_pem),
        "endpoints-ns": lambda ns, name: _sync_namespace_services(store, ns),
    }

    async with trio.open_nursery() as nursery:
        for resource in (*SYNCED, "pods"):
            nursery.start_soon(_watch, store, queue, resource)
        nursery.start_soon(_resync, store, queue, resync_seconds)
        # Several workers, so one slow sync (a pod create waiting on a webhook) does not
        # hold up every other controller.
        for _ in range(WORKERS):
            nursery.start_soon(_worker, queue, syncs, nursery)


WORKERS = 4


async def _worker(
    queue: _Queue, syncs: dict[str, Callable[[str, str], Awaitable[None]]], nursery: trio.Nursery
) -> None:
    while True:
        key = await queue.take()
        kind, ns, name = key
        try:
            sync = syncs.get(kind)
            if sync is not None:
                await sync(ns, name)
        except StoreError as exc:
            log.debug("sync %s %s/%s: %s; retrying", kind, ns, name, exc)
            nursery.start_soon(_requeue_later, queue, key)
        except Exception:
            log.exception("sync %s %s/%s failed", kind, ns, name)
            nursery.start_soon(_requeue_later, queue, key)
        finally:
            queue.done(key)


SYNCED = ("deployments", "replicasets", "statefulsets", "services", "namespaces")


async def _watch(store: Store, queue: _Queue, resource: str) -> None:
    """Feed the queue with the keys each change of ``resource`` concerns."""
    while True:
        try:
            async with store.watch(resource) as events:
                async for event in events:
                    for key in _keys_for(resource, event):
                        queue.add(key)
        except StoreError:
            pass
        await trio.sleep(0.1)  # the store closed a lagging watcher: watch again


async def _resync(store: Store, queue: _Queue, seconds: float) -> None:
    """Periodically look at everything again (level-triggered), and expire old events."""
    while True:
        await trio.sleep(seconds)
        await _expire_events(store)
        for resource in SYNCED:
            for obj in store.list(resource)[0]:
                meta = obj["metadata"]
                queue.add((resource, meta.get("namespace", ""), meta["name"]))


EVENT_TTL_SECONDS = 3600  # kube-apiserver --event-ttl default


async def _expire_events(store: Store) -> None:
    cutoff = now_rfc3339(-EVENT_TTL_SECONDS)
    for event in store.list("events")[0]:
        stamp = event.get("lastTimestamp") or event["metadata"].get("creationTimestamp", "")
        if stamp and stamp < cutoff:  # RFC 3339 UTC stamps sort as text
            try:
                await store.delete(
                    "events", event["metadata"]["namespace"], event["metadata"]["name"]
                )
            except StoreError:
                continue


async def _requeue_later(queue: _Queue, key: Key) -> None:
    await trio.sleep(0.2)
    queue.add(key)


async def _sync_namespace_services(store: Store, ns: str) -> None:
    services, _ = store.list("services", ns)
    for svc in services:
        await sync_service_endpoints(store, ns, svc["metadata"]["name"])


__all__ = ["bootstrap", "run_controllers"]
