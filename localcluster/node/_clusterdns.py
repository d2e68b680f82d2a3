"""Cluster DNS answers (Kubernetes DNS-Based Service Discovery spec, "cluster.local").

Records (https://github.com/kubernetes/dns/blob/master/docs/specification.md):
- ``<svc>.<ns>.svc.cluster.local`` A: the ClusterIP; for a headless Service the ready
  endpoint addresses (§2.4.1).
- ``<hostname>.<svc>.<ns>.svc.cluster.local`` A: pods with ``spec.hostname`` and
  ``spec.subdomain`` = a headless Service (StatefulSet pods) (§2.4.1).
- ``<a-b-c-d>.<ns>.pod.cluster.local`` A.
- ``_<port>._<proto>.<svc>.<ns>.svc.cluster.local`` SRV for named ports (§2.3.2, 2.4.2).
- PTR for Service ClusterIPs and pod IPs (§2.3.3, 2.4.3).
Anything else in or out of the zone: NXDOMAIN (an existing name with no record of the
asked type: NOERROR with no answer). Nothing is forwarded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import trio

from localcluster.node._dnsserver import serve_dns

ZONE = "cluster.local"
TTL = 5


@dataclass
class Records:
    """All names of the cluster at one moment: name (lowercase, no trailing dot) → data."""

    a: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    srv: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    ptr: dict[str, str] = field(default_factory=dict)

    def names(self) -> set[str]:
        return set(self.a) | set(self.srv)


def _is_ready(pod: dict) -> bool:
    for cond in pod.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _reverse(ip: str) -> str:
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa"


def _endpoint_addresses(endpoints: dict | None) -> list[dict]:
    out: list[dict] = []
    for subset in (endpoints or {}).get("subsets", []) or []:
        out.extend(subset.get("addresses", []) or [])
    return out


def build_records(
    services: Iterable[dict], endpoints: Iterable[dict], pods: Iterable[dict]
) -> Records:
    """The cluster's DNS records from Services, Endpoints and Pods (plain dicts)."""
    rec = Records()
    eps = {(e["metadata"].get("namespace"), e["metadata"]["name"]): e for e in endpoints}
    pods = list(pods)
    for pod in pods:
        ip = pod.get("status", {}).get("podIP")
        ns = pod["metadata"].get("namespace", "default")
        if not ip or pod.get("spec", {}).get("hostNetwork"):
            continue
        name = f"{ip.replace('.', '-')}.{ns}.pod.{ZONE}"
        rec.a[name].append(ip)
        rec.ptr.setdefault(_reverse(ip), name)
    for svc in services:
        ns = svc["metadata"].get("namespace", "default")
        base = f"{svc['metadata']['name']}.{ns}.svc.{ZONE}"
        spec = svc.get("spec", {})
        cluster_ip = spec.get("clusterIP")
        ports = spec.get("ports", []) or []
        if cluster_ip and cluster_ip != "None":
            rec.a[base].append(cluster_ip)
            rec.ptr[_reverse(cluster_ip)] = base
            for p in ports:
                if p.get("name"):
                    proto = p.get("protocol", "TCP").lower()
                    rec.srv[f"_{p['name']}._{proto}.{base}"].append((p["port"], base))
            continue
        # Headless (§2.4): the ready endpoints, and per-pod hostnames under the Service.
        publish_all = spec.get("publishNotReadyAddresses", False)
        targets: list[tuple[str, str]] = []
        for addr in _endpoint_addresses(eps.get((ns, svc["metadata"]["name"]))):
            host = addr.get("hostname") or addr["ip"].replace(".", "-")
            targets.append((host, addr["ip"]))
        for pod in pods:
            pspec = pod.get("spec", {})
            ip = pod.get("status", {}).get("podIP")
            if (
                pod["metadata"].get("namespace", "default") != ns
                or not ip
                or pspec.get("subdomain") != svc["metadata"]["name"]
                or not pspec.get("hostname")
            ):
                continue
            if publish_all or _is_ready(pod):
                targets.append((pspec["hostname"], ip))
        seen: set[tuple[str, str]] = set()
        for host, ip in targets:
            if (host, ip) in seen:
                continue
            seen.add((host, ip))
            if ip not in rec.a[base]:
                rec.a[base].append(ip)
            fqdn = f"{host}.{base}"
            rec.a[fqdn].append(ip)
            rec.ptr[_reverse(ip)] = fqdn
            for p in ports:
                if p.get("name"):
                    proto = p.get("protocol", "TCP").lower()
                    rec.srv[f"_{p['name']}._{proto}.{base}"].append((p["port"], fqdn))
        rec.a.setdefault(base, [])
    return rec


def make_answerer(
    snapshot: Callable[[], Records],
) -> Callable[[dns.message.Message], dns.message.Message]:
    """An answer function over the records ``snapshot()`` returns at query time."""

    def answer(query: dns.message.Message) -> dns.message.Message:
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        reply.flags &= ~dns.flags.RA
        if len(query.question) != 1:
            reply.set_rcode(dns.rcode.FORMERR)
            return reply
        q = query.question[0]
        qname = q.name.to_text(omit_final_dot=True).lower()
        rec = snapshot()
        found = False
        if qname in rec.a or qname in rec.srv:
            found = True
            if q.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY) and rec.a.get(qname):
                reply.answer.append(dns.rrset.from_text_list(q.name, TTL, "IN", "A", rec.a[qname]))
            if q.rdtype in (dns.rdatatype.SRV, dns.rdatatype.ANY) and rec.srv.get(qname):
                rdatas = [
                    f"0 {100 // len(rec.srv[qname])} {port} {target}."
                    for port, target in rec.srv[qname]
                ]
                reply.answer.append(dns.rrset.from_text_list(q.name, TTL, "IN", "SRV", rdatas))
        elif qname in rec.ptr:
            found = True
            if q.rdtype in (dns.rdatatype.PTR, dns.rdatatype.ANY):
                reply.answer.append(
                    dns.rrset.from_text(q.name, TTL, "IN", "PTR", rec.ptr[qname] + ".")
                )
        elif any(n.endswith("." + qname) for n in rec.names()):
            found = True  # an empty non-terminal (e.g. "svc.cluster.local"): NODATA
        if not found:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        return reply

    return answer


async def run_cluster_dns(
    store: Any,
    host: str,
    port: int = 53,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve cluster DNS from the Store's current objects (read at each query)."""

    def snapshot() -> Records:
        services, _ = store.list("services")
        endpoints, _ = store.list("endpoints")
        pods, _ = store.list("pods")
        return build_records(services, endpoints, pods)

    await serve_dns(host, port, make_answerer(snapshot), task_status=task_status)
