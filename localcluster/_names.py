"""Every kernel-visible name and address one local cluster uses, derived from its name.

Kept apart from ``localcluster.node`` (whose package imports the kubelet and pyroute2,
half a second) so that ``tp local-cluster exec`` and ``status`` — run for every laptop
command of every end-to-end test — read only the namespace directory.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

NODE_IP = "198.18.0.1"
LAPTOP_IP = "198.18.0.2"
LAPTOP_DNS_IP = "127.0.0.53"
MAX_LAPTOPS = 8  # 198.18.0.0/27: one /30 each
LINK_PREFIX = 30
NETNS_DIR = Path("/run/netns")


def laptop_link(index: int) -> tuple[str, str]:
    """(node address, laptop address) of laptop ``index``'s /30 (1-based): laptop 1 has
    the design's 198.18.0.1/.2; laptop k has 198.18.0.(4k-3)/.(4k-2). The node keeps
    198.18.0.1 (the API server's address) for every laptop: laptops past the first get
    a host route to it, never a default route (no cluster route until ``tp connect``)."""
    if not 1 <= index <= MAX_LAPTOPS:
        raise ValueError(f"laptop {index}: 1 to {MAX_LAPTOPS}")
    base = ipaddress.ip_address("198.18.0.0") + 4 * (index - 1)
    return str(base + 1), str(base + 2)


@dataclass(frozen=True, kw_only=True)
class ClusterNames:
    """Every kernel-visible name one cluster uses (all derived from its name)."""

    name: str

    @property
    def laptop_ns(self) -> str:
        return f"{self.name}-laptop"

    def laptop_ns_of(self, index: int) -> str:
        """Laptop 1 is ``<name>-laptop`` (the design's); laptop k is ``<name>-laptop<k>``."""
        return self.laptop_ns if index == 1 else f"{self.laptop_ns}{index}"

    def laptop_index(self, ns: str) -> int | None:
        """Which laptop a netns name is, or None."""
        if ns == self.laptop_ns:
            return 1
        rest = ns.removeprefix(self.laptop_ns)
        if rest != ns and rest.isdigit() and rest[0] != "0" and 2 <= int(rest) <= MAX_LAPTOPS:
            return int(rest)
        return None

    @property
    def node_ns(self) -> str:
        return f"{self.name}-node"

    @property
    def pod_ns_prefix(self) -> str:
        return f"{self.name}-pod-"

    def pod_ns(self, index: int) -> str:
        return f"{self.pod_ns_prefix}{index}"

    @property
    def nft_table(self) -> str:
        return f"tp-{self.name}"

    def etc_netns(self, ns: str) -> Path:
        return Path("/etc/netns") / ns


def named_namespaces() -> list[str]:
    """Every named network namespace (``ip netns`` keeps them as files in /run/netns)."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except OSError:
        return []


def existing_namespaces(names: ClusterNames) -> list[str]:
    """This cluster's named network namespaces that exist now."""
    return [
        ns
        for ns in named_namespaces()
        if ns == names.node_ns
        or names.laptop_index(ns) is not None
        or ns.startswith(names.pod_ns_prefix)
    ]


def existing_laptops(names: ClusterNames) -> list[int]:
    """Indexes of this cluster's laptop namespaces that exist now."""
    found = (names.laptop_index(ns) for ns in named_namespaces())
    return sorted(i for i in found if i is not None)
