"""The Service proxy: one nftables table in the node netns, kept in sync with the Store.

Like kube-proxy's nftables mode, reduced: for each ClusterIP Service port with ready
endpoints, ``ip daddr <clusterIP> <proto> dport <port>`` DNATs to a random endpoint
(``numgen random mod N map``) in both prerouting (pods) and output (the node itself,
e.g. the API server calling a webhook). Hairpin traffic (a pod reaching itself through
its Service) is masqueraded per endpoint, so the reply comes back through the node.
A ClusterIP with no endpoints is rejected (TCP reset / ICMP port unreachable), as
kube-proxy does, instead of timing out. Headless Services get no rules. The whole table
is replaced in one nft transaction each time, so there is never a half-applied state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import trio

from localcluster.node._topology import CLUSTER_DNS_IP, SERVICE_CIDR

log = logging.getLogger(__name__)


def _endpoint_targets(svc_port: dict, endpoints: dict | None) -> list[tuple[str, int]]:
    """(ip, port) of the ready endpoints serving one Service port."""
    out: list[tuple[str, int]] = []
    name = svc_port.get("name") or ""
    proto = svc_port.get("protocol", "TCP")
    for subset in (endpoints or {}).get("subsets") or []:
        ports = [p for p in subset.get("ports") or [] if p.get("protocol", "TCP") == proto]
        match = [p for p in ports if (p.get("name") or "") == name]
        if not match and len(ports) == 1 and not name:
            match = ports
        if not match:
            continue
        for addr in subset.get("addresses") or []:
            out.append((addr["ip"], int(match[0]["port"])))
    return sorted(set(out))


def render_ruleset(table: str, services: Iterable[dict], endpoints: Iterable[dict]) -> str:
    """The nft script that replaces ``table`` with rules for these Services."""
    eps = {(e["metadata"].get("namespace"), e["metadata"]["name"]): e for e in endpoints}
    rules: list[str] = []
    hairpin: set[str] = set()
    for svc in sorted(
        services, key=lambda s: (s["metadata"].get("namespace", ""), s["metadata"]["name"])
    ):
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None" or spec.get("type") == "ExternalName":
            continue
        key = (svc["metadata"].get("namespace"), svc["metadata"]["name"])
        for port in spec.get("ports") or []:
            proto = str(port.get("protocol", "TCP")).lower()
            if proto not in ("tcp", "udp"):
                continue
            targets = _endpoint_targets(port, eps.get(key))
            if not targets:
                continue
            mapping = ", ".join(f"{i} : {tip} . {tport}" for i, (tip, tport) in enumerate(targets))
            rules.append(
                f"    ip daddr {ip} {proto} dport {int(port['port'])} "
                f"dnat ip to numgen random mod {len(targets)} map {{ {mapping} }}"
            )
            hairpin.update(tip for tip, _ in targets)
    lines = [
        f"table ip {table} {{}}",
        f"delete table ip {table}",
        f"table ip {table} {{",
        "  chain services {",
        *rules,
        "  }",
        "  chain nat_prerouting { type nat hook prerouting priority -100; policy accept; jump services; }",
        "  chain nat_output { type nat hook output priority -100; policy accept; jump services; }",
        "  chain nat_postrouting {",
        "    type nat hook postrouting priority 100; policy accept;",
        *(f"    ip saddr {h} ip daddr {h} masquerade" for h in sorted(hairpin)),
        "  }",
        # Whatever still goes to a ClusterIP after DNAT has no endpoint: refuse it.
        "  chain no_endpoints_forward {",
        "    type filter hook forward priority 0; policy accept;",
        f"    ip daddr {SERVICE_CIDR} meta l4proto tcp reject with tcp reset",
        f"    ip daddr {SERVICE_CIDR} reject",
        "  }",
        "  chain no_endpoints_output {",
        "    type filter hook output priority 0; policy accept;",
        f"    ip daddr {CLUSTER_DNS_IP} accept",
        f"    ip daddr {SERVICE_CIDR} meta l4proto tcp reject with tcp reset",
        f"    ip daddr {SERVICE_CIDR} reject",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


async def apply_ruleset(script: str) -> None:
    result = await trio.run_process(
        ["nft", "-f", "-"],
        stdin=script.encode(),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if result.returncode != 0:
        log.error("nft failed: %s\n%s", result.stderr.decode(errors="replace"), script)


async def remove_table(table: str) -> None:
    await trio.run_process(
        ["nft", "delete", "table", "ip", table], check=False, capture_stderr=True
    )


async def run_proxy(
    store: Any, table: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Keep the table in sync with Services and Endpoints until cancelled."""
    dirty = trio.Event()
    dirty.set()

    async def watch(resource: str) -> None:
        while True:
            try:
                async with store.watch(resource) as events:
                    async for _ in events:
                        dirty.set()
            except Exception:
                log.exception("watching %s", resource)
                await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, "services")
        nursery.start_soon(watch, "endpoints")
        started = False
        try:
            while True:
                await dirty.wait()
                dirty = trio.Event()
                await trio.sleep(0.02)  # coalesce a burst of changes into one transaction
                services, _ = store.list("services")
                endpoints, _ = store.list("endpoints")
                await apply_ruleset(render_ruleset(table, services, endpoints))
                if not started:
                    task_status.started()
                    started = True
        finally:
            with trio.CancelScope(shield=True):
                await remove_table(table)
