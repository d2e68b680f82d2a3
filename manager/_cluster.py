"""What the manager knows about the cluster: subnets and namespaces, kept current.

Pod subnets and namespaces are re-read every ``interval`` seconds (a list is cheap and,
unlike a watch, cannot silently stall); clients get a push only when something changed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import kr8s
import trio

from manager._cidrs import Network, covering_networks, pod_cidrs, service_cidrs_from_error

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

    async def run(self) -> None:
        service_cidrs = await self._service_cidrs()
        while True:
            try:
                await self._refresh(service_cidrs)
            except (kr8s.ServerError, OSError, ValueError) as exc:
                log.warning("cannot read the cluster's state: %s", exc)
            await trio.sleep(self.interval)

    async def _refresh(self, service_cidrs: tuple[Network, ...]) -> None:
        pods = await self._list("pods")
        nodes = await self._list("nodes")
        namespaces = await self._list("namespaces")
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
        try:
            async with self.api.call_api("GET", version="v1", url=resource) as response:
                items: list[dict[str, Any]] = response.json().get("items") or []
                return items
        except kr8s.ServerError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if resource == "nodes" and status in (403, 404):
                return []  # no nodes resource or no right to it: fall back to pod IPs
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
