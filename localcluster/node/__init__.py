"""The node of the local cluster: network topology, pods as processes, Services, DNS.

The public surface: the topology (``ClusterNames``, ``create_cluster``,
``remove_cluster``), the ``Kubelet`` (which is also the API server's ``NodeRuntime``),
the Service proxy (``run_proxy``) and cluster DNS (``run_cluster_dns``).
"""

from localcluster.node._clusterdns import build_records, make_answerer, run_cluster_dns
from localcluster.node._kubelet import Kubelet
from localcluster.node._proxy import render_ruleset, run_proxy
from localcluster.node._topology import (
    CLUSTER_DNS_IP,
    LAPTOP_DNS_IP,
    LAPTOP_IP,
    NODE_IP,
    ClusterNames,
    create_cluster,
    existing_namespaces,
    remove_cluster,
)

__all__ = [
    "CLUSTER_DNS_IP",
    "LAPTOP_DNS_IP",
    "LAPTOP_IP",
    "NODE_IP",
    "ClusterNames",
    "Kubelet",
    "build_records",
    "create_cluster",
    "existing_namespaces",
    "make_answerer",
    "remove_cluster",
    "render_ruleset",
    "run_cluster_dns",
    "run_proxy",
]
