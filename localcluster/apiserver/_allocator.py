"""ClusterIP and NodePort allocation (pkg/registry/core/service/ipallocator, portallocator)."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field
from typing import Any

from ._errors import Invalid

Obj = dict[str, Any]
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
NODE_PORTS = range(30000, 32768)


@dataclass(eq=False)
class ServiceAllocator:
    ips: set[str] = field(default_factory=set)
    node_ports: set[int] = field(default_factory=set)

    def allocate(self, svc: Obj) -> None:
        """Fill clusterIP(s), IP families and node ports of a new Service."""
        spec = svc["spec"]
        if spec.get("type") == "ExternalName":
            spec.pop("clusterIP", None)
        elif spec.get("clusterIP") == "None":
            spec["clusterIPs"] = ["None"]  # headless
        else:
            spec["clusterIP"] = self._allocate_ip(svc["metadata"]["name"], spec.get("clusterIP"))
            spec["clusterIPs"] = [spec["clusterIP"]]
        if spec.get("type") != "ExternalName":
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            for port in spec.get("ports") or []:
                if not port.get("nodePort"):
                    free = [p for p in NODE_PORTS if p not in self.node_ports]
                    port["nodePort"] = random.choice(free)
                self.node_ports.add(int(port["nodePort"]))

    def release(self, svc: Obj) -> None:
        spec = svc.get("spec") or {}
        self.ips.discard(str(spec.get("clusterIP", "")))
        for port in spec.get("ports") or []:
            self.node_ports.discard(port.get("nodePort"))

    def _allocate_ip(self, name: str, wanted: Any) -> str:
        if wanted:
            try:
                address = ipaddress.ip_address(str(wanted))
            except ValueError:
                address = None
            if address is None or address not in SERVICE_CIDR:
                raise Invalid(
                    f'Service "{name}" is invalid: spec.clusterIPs: Invalid value: '
                    f'["{wanted}"]: failed to allocate IP {wanted}: the provided IP ({wanted}) '
                    f"is not in the valid range. The range of valid IPs is {SERVICE_CIDR}"
                )
            if str(address) in self.ips:
                raise Invalid(
                    f'Service "{name}" is invalid: spec.clusterIPs: Invalid value: '
                    f'["{wanted}"]: failed to allocate IP {wanted}: provided IP is already allocated'
                )
            self.ips.add(str(address))
            return str(address)
        # The low /24 is kept for static addresses (10.96.0.1 kubernetes, 10.96.0.10 DNS),
        # as the real allocator keeps a static band at the start of the range.
        for _ in range(1000):
            candidate = str(SERVICE_CIDR[random.randrange(256, SERVICE_CIDR.num_addresses - 1)])
            if candidate not in self.ips:
                self.ips.add(candidate)
                return candidate
        raise Invalid(f'Service "{name}" is invalid: spec.clusterIPs: range is full')


def keep_cluster_ip(old: Obj, new: Obj) -> None:
    """An update keeps the allocated addresses; changing the ClusterIP is refused."""
    old_spec = old.get("spec") or {}
    spec = new["spec"] = new.get("spec") or {}
    for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
        if key in old_spec and not spec.get(key):
            spec[key] = old_spec[key]
    if spec.get("clusterIP") != old_spec.get("clusterIP"):
        name = new["metadata"]["name"]
        raise Invalid(
            f'Service "{name}" is invalid: spec.clusterIPs[0]: Invalid value: '
            f'["{spec.get("clusterIP")}"]: may not change once set'
        )
    for port in spec.get("ports") or []:
        match = next(
            (p for p in old_spec.get("ports") or [] if p.get("port") == port.get("port")), None
        )
        if match and match.get("nodePort") and not port.get("nodePort"):
            port["nodePort"] = match["nodePort"]
