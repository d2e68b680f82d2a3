"""What the manager knows about the cluster: subnets and namespaces, kept current.

Pod subnets and namespaces are re-read every ``interval`` seconds (a list is cheap and,
unlike a watch, cannot silently stall); clients get a push only when something changed.
A watch on namespaces cuts that wait short: a namespace created after ``tp connect``
resolves by name (``svc.newns``) as soon as the API server has it, not at the next
listing. The watch only wakes the refresh, so a stalled or broken watch costs nothing
but that speed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
import kr8s
import trio

from manager._cidrs import (
    Network,
    covering_networks,
    declares_pod_cidrs,
    pod_cidrs,
    service_cidrs_from_error,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ClusterInfo:
    pod_cidrs: tuple[Network, ...] = ()
    service_cidrs: tuple[Network, ...] = ()
    namespaces: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"

    def to_json(self) -> dict[str, Any]:
        return {
            "pod_cidrs": [str(n) for n in self.pod_cidrs],
            "service_cidrs": [str(n) for n in self.service_cidrs],
            "namespaces": list(self.namespaces),
            "cluster_domain": self.cluster_domain,
        }


@dataclass
class ClusterWatcher:
    api: Any  # kr8s.asyncio.Api
    namespace: str
    interval: float = 5.0
    info: ClusterInfo = field(default_factory=ClusterInfo)
    changed: trio.Event = field(default_factory=trio.Event)
    ready: trio.Event = field(default_factory=trio.Event)

    namespaces_version: str = ""  # the resourceVersion of the last namespace listing
    _poke: trio.Event = field(default_factory=trio.Event)

    async def run(self) -> None:
        service_cidrs = await self._service_cidrs()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_namespaces)
            while True:
                try:
                    await self._refresh(service_cidrs)
                except (kr8s.ServerError, OSError, ValueError) as exc:
                    log.warning("cannot read the cluster's state: %s", exc)
                with trio.move_on_after(self.interval):
                    await self._poke.wait()
                self._poke = trio.Event()

    async def _watch_namespaces(self) -> None:
        """Wake the refresh on every namespace event. A watch resumes from the last
        listing's resourceVersion; one the server ended (its timeout, 410 Gone for a
        version too old) or that broke is opened again after a pause."""
        await self.ready.wait()
        while True:
            try:
                await self._watch_once()
            except (kr8s.ServerError, httpx.HTTPError, OSError, ValueError) as exc:
                log.debug("namespace watch ended: %s", exc)
            except Exception as exc:  # only a speed-up: never worth the manager's life
                log.warning("namespace watch failed: %r", exc)
            await trio.sleep(1.0)

    async def _watch_once(self) -> None:
        # The server ends a watch after timeoutSeconds (Kubernetes API concepts,
        # "Efficient detection of changes"); no client-side read timeout meanwhile.
        params = {"watch": "1", "timeoutSeconds": "300"}
        if self.namespaces_version:
            params["resourceVersion"] = self.namespaces_version
        async with self.api.call_api(
            "GET", version="v1", url="namespaces", stream=True, params=params, timeout=None
        ) as response:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":  # e.g. 410 Gone: list again, then watch
                    self._poke.set()
                    return
                if event.get("type") in ("ADDED", "DELETED", "MODIFIED"):
                    self._poke.set()

    async def _refresh(self, service_cidrs: tuple[Network, ...]) -> None:
        nodes = await self._list("nodes")
        # Pods only when no node declares its podCIDR: on a big cluster, listing every
        # pod every few seconds is the manager's heaviest call by far.
        pods = [] if declares_pod_cidrs(nodes) else await self._list("pods")
        namespaces, self.namespaces_version = await self._list_at("namespaces")
        info = ClusterInfo(
            pod_cidrs=tuple(pod_cidrs(nodes, pods)),
            service_cidrs=service_cidrs,
            namespaces=tuple(sorted(n["metadata"]["name"] for n in namespaces)),
        )
        if info != self.info:
            self.info = info
            self.changed.set()
            self.changed = trio.Event()
            log.info("cluster: %s", json.dumps(info.to_json()))
        self.ready.set()

    async def _list(self, resource: str) -> list[dict[str, Any]]:
        items, _ = await self._list_at(resource)
        return items

    async def _list_at(self, resource: str) -> tuple[list[dict[str, Any]], str]:
        """The items of ``resource`` and the list's resourceVersion (where a watch of it
        resumes)."""
        try:
            async with self.api.call_api("GET", version="v1", url=resource) as response:
                body = response.json()
                items: list[dict[str, Any]] = body.get("items") or []
                return items, str((body.get("metadata") or {}).get("resourceVersion", ""))
        except kr8s.ServerError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if resource == "nodes" and status in (403, 404):
                return [], ""  # no nodes resource or no right to it: fall back to pod IPs
            raise

    async def _service_cidrs(self) -> tuple[Network, ...]:
        """Ask the API server for the service range by creating a Service it must refuse
        (a ClusterIP outside every range); the refusal names the range."""
        probe = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "tp-service-cidr-probe"},
            "spec": {"clusterIP": "1.1.1.1", "ports": [{"port": 443}]},
        }
        try:
            async with self.api.call_api(
                "POST",
                version="v1",
                namespace=self.namespace,
                url="services",
                params={"dryRun": "All"},
                content=json.dumps(probe),
            ):
                pass
        except kr8s.ServerError as exc:
            body = ""
            if exc.response is not None:
                try:
                    body = exc.response.json().get("message", "")
                except ValueError:
                    body = exc.response.text
            probed = service_cidrs_from_error(body or str(exc))
            if not probed:
                log.warning("service range probe: unexpected answer: %s", body or exc)
        else:
            probed = []
        # Existing ClusterIPs outside the probed range (a cluster with several service
        # ranges, or a refusal that did not name one) are covered too.
        services = await self._list("services")
        ips = [s.get("spec", {}).get("clusterIP", "") for s in services]
        return tuple(probed) + tuple(covering_networks(ip for ip in ips if _outside(ip, probed)))


def _outside(text: str, networks: list[Network]) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False  # "", "None" (headless) or garbage
    return not any(address in network for network in networks)
