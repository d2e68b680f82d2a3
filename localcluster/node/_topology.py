"""The local cluster's network namespaces and links (pyroute2).

::

    <name>-laptop ──veth 198.18.0.0/30── <name>-node ──routed /32 veth── <name>-pod-<i>
       eth0 .2                 laptop0 .1 │ pv<i> 10.244.0.1/32     eth0 10.244.x.y/32
    <name>-laptop2 ─veth 198.18.0.4/30───┤ laptop1 .5   (a second developer, ``--laptops``)
       eth0 .6, route 198.18.0.1/32 via .5

No namespace gets a link to the root namespace or an uplink. Pods use routed /32
veths (no bridge): the node holds 10.244.0.1/32 on every pod veth and a /32 route per
pod; each pod's default route is ``via 10.244.0.1 onlink``, so conntrack on the node
sees both directions of every flow (what the Service DNAT needs).

Never fork here: the daemon is multi-threaded, and a forked child can inherit a lock
held by another thread and hang forever (pyroute2's ``netns.create`` and ``NetNS``
fork). Namespaces are made with ``ip netns add`` (fork+exec is safe) and configured
with a plain ``IPRoute`` on a thread switched into the namespace with setns(2).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from pyroute2 import IPRoute, netns

from localcluster._names import (
    LAPTOP_DNS_IP,
    LAPTOP_IP,
    LINK_PREFIX,
    MAX_LAPTOPS,
    NODE_IP,
    ClusterNames,
    existing_laptops,
    existing_namespaces,
    laptop_link,
)
from localcluster.node._ns import call_in_netns

__all__ = [
    "CLUSTER_DNS_IP",
    "LAPTOP_DNS_IP",
    "LAPTOP_IP",
    "LINK_PREFIX",
    "MAX_LAPTOPS",
    "NODE_IP",
    "POD_CIDR",
    "POD_GATEWAY",
    "SERVICE_CIDR",
    "ClusterNames",
    "add_laptop",
    "create_cluster",
    "create_pod_network",
    "existing_laptops",
    "existing_namespaces",
    "laptop_link",
    "remove_cluster",
    "remove_pod_network",
    "write_netns_resolv",
]

POD_GATEWAY = "10.244.0.1"
POD_CIDR = ipaddress.ip_network("10.244.0.0/16")
SERVICE_CIDR = "10.96.0.0/12"
CLUSTER_DNS_IP = "10.96.0.10"
RTNH_F_ONLINK = 4


def pod_ip(index: int) -> str:
    """The pod address of slot ``index`` (1-based), skipping .0/.1/.255 of each /24."""
    per_block = 253  # .2 … .254
    block, offset = divmod(index - 1, per_block)
    return str(POD_CIDR.network_address + block * 256 + 2 + offset)


def pod_veth(index: int) -> str:
    name = f"pv{index}"
    assert len(name) <= 15  # IFNAMSIZ - 1
    return name


def _ifindex(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise OSError(f"no link {name}")
    return int(found[0])


def _add_netns(ns: str) -> None:
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)


def _in(ns: str, fn: Callable[[IPRoute], None]) -> None:
    """Run ``fn`` with an IPRoute socket made inside netns ``ns`` (setns on a thread)."""

    def configure() -> None:
        with IPRoute() as ipr:
            fn(ipr)

    call_in_netns(f"/run/netns/{ns}", configure)


def _write_sysctl_in(ns: str, key: str, value: str) -> None:
    def write() -> None:
        Path("/proc/sys", *key.split(".")).write_text(value)

    call_in_netns(f"/run/netns/{ns}", write)


def create_cluster(names: ClusterNames) -> None:
    """The node namespace (lo, forwarding, the Service route) and laptop 1 with its link."""
    _add_netns(names.node_ns)
    add_laptop(names, 1)  # first: the Service route's source is the node's 198.18.0.1

    def node(ipr: IPRoute) -> None:
        lo = _ifindex(ipr, "lo")
        ipr.link("set", index=lo, state="up")
        # Cluster DNS listens on 10.96.0.10 on the node's lo, so pods reach it through
        # their default route; node-originated ClusterIP traffic needs a route that the
        # nftables output hook can DNAT (kubernetes-api-notes: "Networking in namespaces").
        ipr.addr("add", index=lo, address=CLUSTER_DNS_IP, prefixlen=32)
        ipr.route("add", dst=SERVICE_CIDR, oif=lo, prefsrc=NODE_IP)

    _in(names.node_ns, node)
    _write_sysctl_in(names.node_ns, "net.ipv4.ip_forward", "1")


def add_laptop(names: ClusterNames, index: int) -> None:
    """Laptop ``index``: its netns, a veth ``laptop<index-1>`` on the node with its own
    /30, lo up, and (past the first) a host route to the API server's 198.18.0.1."""
    node_ip, laptop_ip = laptop_link(index)
    ns = names.laptop_ns_of(index)
    _add_netns(ns)
    laptop_fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:

        def node(ipr: IPRoute) -> None:
            veth = f"laptop{index - 1}"
            ipr.link(
                "add", ifname=veth, kind="veth", peer={"ifname": "eth0", "net_ns_fd": laptop_fd}
            )
            idx = _ifindex(ipr, veth)
            ipr.addr("add", index=idx, address=node_ip, prefixlen=LINK_PREFIX)
            ipr.link("set", index=idx, state="up")

        _in(names.node_ns, node)
    finally:
        os.close(laptop_fd)

    def laptop(ipr: IPRoute) -> None:
        idx = _ifindex(ipr, "eth0")
        ipr.addr("add", index=idx, address=laptop_ip, prefixlen=LINK_PREFIX)
        ipr.link("set", index=idx, state="up")
        ipr.link("set", index=_ifindex(ipr, "lo"), state="up")
        if node_ip != NODE_IP:
            # The node answers for 198.18.0.1 on every interface (a local address,
            # RFC 1122 §3.3.4.2 weak host model): one /32, so 10/8 stays unrouted.
            ipr.route("add", dst=f"{NODE_IP}/32", gateway=node_ip, oif=idx)

    _in(ns, laptop)


def remove_cluster(names: ClusterNames) -> list[str]:
    """Delete every namespace of this cluster (their links go with them); say which."""
    removed = []
    for ns in existing_namespaces(names):
        try:
            netns.remove(ns)
        except OSError:
            continue
        removed.append(f"network namespace {ns}")
    etc_root = Path("/etc/netns")
    laptops = [
        d.name
        for d in (etc_root.iterdir() if etc_root.is_dir() else ())
        if names.laptop_index(d.name)
    ]
    for ns in sorted({names.laptop_ns, *laptops, names.node_ns}):
        etc = names.etc_netns(ns)
        if etc.exists():
            shutil.rmtree(etc, ignore_errors=True)
            removed.append(f"directory {etc}")
    return removed


def create_pod_network(names: ClusterNames, index: int) -> tuple[str, str]:
    """A pod netns with a routed /32 veth; returns (netns path, pod IP).

    Runs in the node netns (the daemon's own), blocking: call it from a worker thread.
    """
    ns = names.pod_ns(index)
    ip = pod_ip(index)
    veth = pod_veth(index)
    if ns in netns.listnetns():
        netns.remove(ns)
    _add_netns(ns)
    pod_fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        with IPRoute() as node:
            for stale in node.link_lookup(ifname=veth):
                node.link("del", index=stale)
            node.link("add", ifname=veth, kind="veth", peer={"ifname": "eth0", "net_ns_fd": pod_fd})
            idx = _ifindex(node, veth)
            node.addr("add", index=idx, address=POD_GATEWAY, prefixlen=32)
            node.link("set", index=idx, state="up")
            node.route("add", dst=f"{ip}/32", oif=idx)
    finally:
        os.close(pod_fd)

    def pod(ipr: IPRoute) -> None:
        ipr.link("set", index=_ifindex(ipr, "lo"), state="up")
        idx = _ifindex(ipr, "eth0")
        ipr.addr("add", index=idx, address=ip, prefixlen=32)
        ipr.link("set", index=idx, state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=POD_GATEWAY, oif=idx, flags=RTNH_F_ONLINK)

    _in(ns, pod)
    return f"/run/netns/{ns}", ip


def remove_pod_network(names: ClusterNames, index: int) -> None:
    """Delete a pod's netns (its veth goes with it, and with the veth the /32 route)."""
    ns = names.pod_ns(index)
    if ns in netns.listnetns():
        netns.remove(ns)
    etc = names.etc_netns(ns)
    if etc.exists():
        shutil.rmtree(etc, ignore_errors=True)


def write_netns_resolv(names: ClusterNames, ns: str, text: str) -> Path:
    """/etc/netns/<ns>/resolv.conf, which `ip netns exec` and our launchers bind-mount."""
    path = names.etc_netns(ns) / "resolv.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
