"""The cluster's subnets: which CIDRs the laptop routes to the engine.

Pod subnets are the nodes' ``spec.podCIDRs`` when the cluster sets them; otherwise the
smallest networks covering the pod IPs seen (Telepresence does the same). The service
subnet is not published by Kubernetes; the API server names it in the error for a Service
created with a ClusterIP outside it ("… The range of valid IPs is 10.96.0.0/12").
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_VALID_RANGE = re.compile(r"range of valid IPs is ([0-9a-fA-F.:/]+(?:,[0-9a-fA-F.:/]+)*)")

#: Pod IPs are grouped into networks of at least this size (a /24 per node is the usual
#: podCIDR; a /16 keeps the route table small while pods come and go).
_COVER_PREFIX = {4: 16, 6: 64}


def service_cidrs_from_error(message: str) -> list[Network]:
    """The service CIDRs named in the API server's invalid-ClusterIP error, or []."""
    found = _VALID_RANGE.search(message)
    if not found:
        return []
    networks = []
    for text in found.group(1).split(","):
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            continue
    return networks


def covering_networks(addresses: Iterable[str]) -> list[Network]:
    """Networks (/16 for IPv4, /64 for IPv6) covering every address, collapsed."""
    networks: list[Network] = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        networks.append(
            ipaddress.ip_network(f"{address}/{_COVER_PREFIX[address.version]}", strict=False)
        )
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    return [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]


def _declared(nodes: Iterable[dict]) -> list[str]:
    declared: list[str] = []
    for node in nodes:
        spec = node.get("spec") or {}
        declared += spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    return declared


def declares_pod_cidrs(nodes: Iterable[dict]) -> bool:
    """Whether a node's spec names its pod subnet (then the pods need not be listed)."""
    return bool(_declared(nodes))


def pod_cidrs(nodes: Iterable[dict], pods: Iterable[dict]) -> list[Network]:
    """Nodes' podCIDRs when any node has them, else networks covering the pod IPs."""
    declared = _declared(nodes)
    if declared:
        networks = []
        for text in declared:
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                continue
        return networks
    ips = []
    for pod in pods:
        status = pod.get("status") or {}
        if (pod.get("spec") or {}).get("hostNetwork"):
            continue  # host-network pods have node IPs, which are not pod subnet members
        ips += [entry.get("ip", "") for entry in status.get("podIPs") or []] or [
            status.get("podIP", "")
        ]
    return covering_networks(ip for ip in ips if ip)
