"""Which names belong to the cluster, and under which fully qualified names to ask for them.

Kubernetes DNS (the "DNS for Services and Pods" specification) names a Service
``<svc>.<ns>.svc.<cluster-domain>`` and a pod of a headless Service
``<hostname>.<subdomain>.<ns>.svc.<cluster-domain>``. A pod's resolv.conf lets it use the
short forms ``svc``, ``svc.ns`` and ``svc.ns.svc`` through its search list; the laptop gets
the same forms here, with the connected namespace standing in for the pod's own.

A name is classified as:
- ``definite``: it can only be a cluster name (it ends in the cluster domain, or is a PTR
  query for a cluster address). The cluster's answer, NXDOMAIN included, is final.
- ``candidate``: it may be a cluster name (a single label, ``x.<known namespace>`` …). The
  cluster is asked first; on NXDOMAIN the query goes to the laptop's previous resolver, so
  names like ``localhost`` or ``printer`` keep working.
- ``upstream``: it is not a cluster name (``example.com``): the cluster is never asked.
  This is Telepresence's rule that names under public suffixes are not sent to the cluster,
  made exact: only names whose last label is a known namespace or the cluster domain are.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

_IPV4_REVERSE = "in-addr.arpa"
_IPV6_REVERSE = "ip6.arpa"


class Route(enum.Enum):
    DEFINITE = "definite"
    CANDIDATE = "candidate"
    UPSTREAM = "upstream"


@dataclass(frozen=True, kw_only=True)
class Classification:
    route: Route
    #: Fully qualified names (no trailing dot) to ask the cluster for, in order.
    cluster_names: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class NamePolicy:
    """The rules above, for one connection (namespace, cluster domain, known namespaces)."""

    namespace: str
    cluster_domain: str = "cluster.local"
    namespaces: frozenset[str] = field(default_factory=frozenset)
    cluster_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def with_namespaces(self, names: Iterable[str]) -> NamePolicy:
        return NamePolicy(
            namespace=self.namespace,
            cluster_domain=self.cluster_domain,
            namespaces=frozenset(names),
            cluster_networks=self.cluster_networks,
        )

    def classify(self, qname: str) -> Classification:
        name = qname.rstrip(".").lower()
        if not name:
            return Classification(route=Route.UPSTREAM)
        if name.endswith((_IPV4_REVERSE, _IPV6_REVERSE)):
            return self._classify_reverse(name)
        domain = self.cluster_domain
        if name == domain or name.endswith("." + domain):
            return Classification(route=Route.DEFINITE, cluster_names=(name,))
        labels = name.split(".")
        known = self.namespaces | {self.namespace}
        if len(labels) == 1:
            # svc → svc.<connected ns>.svc.<domain>, as the first search domain of a pod.
            return self._candidate(f"{name}.{self.namespace}.svc.{domain}")
        if labels[-1] == "svc" and len(labels) >= 3 and labels[-2] in known:
            # svc.ns.svc and host.subdomain.ns.svc: the pod's second search domain.
            return Classification(route=Route.DEFINITE, cluster_names=(f"{name}.{domain}",))
        if labels[-1] in known:
            # svc.ns, or host.subdomain.ns for a pod of a headless service.
            return self._candidate(f"{name}.svc.{domain}")
        if len(labels) == 2 and labels[-1] not in _COMMON_TLDS:
            # host.subdomain in the connected namespace (a StatefulSet pod by name).
            return self._candidate(f"{name}.{self.namespace}.svc.{domain}")
        return Classification(route=Route.UPSTREAM)

    def _candidate(self, *names: str) -> Classification:
        return Classification(route=Route.CANDIDATE, cluster_names=names)

    def _classify_reverse(self, name: str) -> Classification:
        address = reverse_pointer_address(name)
        if address is not None and any(address in net for net in self.cluster_networks):
            return Classification(route=Route.DEFINITE, cluster_names=(name,))
        return Classification(route=Route.UPSTREAM)


def reverse_pointer_address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a complete PTR name (RFC 1035 §3.5, RFC 3596 §2.5) stands for, else None."""
    name = name.rstrip(".").lower()
    try:
        if name.endswith("." + _IPV4_REVERSE):
            octets = name[: -len(_IPV4_REVERSE) - 1].split(".")
            if len(octets) != 4:
                return None
            return ipaddress.IPv4Address(".".join(reversed(octets)))
        if name.endswith("." + _IPV6_REVERSE):
            nibbles = name[: -len(_IPV6_REVERSE) - 1].split(".")
            if len(nibbles) != 32 or any(len(n) != 1 for n in nibbles):
                return None
            return ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16))
    except ValueError:
        return None
    return None


# Top-level domains that a two-label name is far more likely to be public under than to be
# "host.subdomain" of a headless service. Two-label names under them go upstream only.
_COMMON_TLDS = frozenset(
    [
        "com",
        "org",
        "net",
        "io",
        "dev",
        "app",
        "ai",
        "co",
        "edu",
        "gov",
        "mil",
        "int",
        "info",
        "biz",
        "me",
        "us",
        "uk",
        "de",
        "fr",
        "nl",
        "eu",
        "ca",
        "au",
        "jp",
        "cn",
        "ru",
        "br",
        "in",
        "ch",
        "se",
        "no",
        "es",
        "it",
        "pl",
        "be",
        "at",
        "dk",
        "fi",
        "cz",
        "local",
        "localdomain",
        "lan",
        "home",
        "internal",
        "test",
        "example",
        "invalid",
        "localhost",
        "arpa",
    ]
)
