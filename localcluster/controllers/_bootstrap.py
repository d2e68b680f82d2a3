"""The objects every cluster starts with: its Node, the kubernetes and kube-dns Services."""

from __future__ import annotations

import platform
from typing import Any

from ..apiserver._allocator import DNS_SERVICE_IP, KUBERNETES_SERVICE_IP
from ..apiserver._store import now_rfc3339

Obj = dict[str, Any]
POD_CIDR = "10.244.0.0/16"


def cluster_objects(api_host: str, api_port: int) -> list[tuple[str, str | None, Obj]]:
    """(resource, namespace, object) for the API server's own Service and Endpoints."""
    objects: list[tuple[str, str | None, Obj]] = []
    labels = {"component": "apiserver", "provider": "kubernetes"}
    objects.append(
        (
            "services",
            "default",
            {
                "metadata": {"name": "kubernetes", "labels": labels},
                "spec": {
                    "clusterIP": KUBERNETES_SERVICE_IP,
                    "ports": [
                        {"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}
                    ],
                },
            },
        )
    )
    objects.append(
        (
            "endpoints",
            "default",
            {
                "metadata": {
                    "name": "kubernetes",
                    "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
                },
                "subsets": [
                    {
                        "addresses": [{"ip": api_host}],
                        "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}],
                    }
                ],
            },
        )
    )
    objects.append(
        (
            "endpointslices",
            "default",
            {
                "metadata": {
                    "name": "kubernetes",
                    "labels": {"kubernetes.io/service-name": "kubernetes"},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [api_host], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}],
            },
        )
    )

    objects.append(kube_dns_service())
    return objects


def kube_dns_service() -> tuple[str, str | None, Obj]:
    """kube-dns at 10.96.0.10, as kubeadm creates it, so tools that look the DNS address up
    find it. No selector and no Endpoints: the node serves that address itself."""
    return (
        "services",
        "kube-system",
        {
            "metadata": {
                "name": "kube-dns",
                "labels": {
                    "k8s-app": "kube-dns",
                    "kubernetes.io/cluster-service": "true",
                    "kubernetes.io/name": "CoreDNS",
                },
            },
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
    )


def node_object(name: str, address: str) -> Obj:
    """The one Node: Ready, the node netns address, the pod CIDR (kubelet's registration)."""
    now = now_rfc3339()
    uname = platform.uname()
    return {
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64" if uname.machine == "x86_64" else uname.machine,
                "node-role.kubernetes.io/control-plane": "",
            },
        },
        "spec": {"podCIDR": POD_CIDR, "podCIDRs": [POD_CIDR]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.32.0",
                "kubeProxyVersion": "v1.32.0",
                "operatingSystem": "linux",
                "architecture": "amd64" if uname.machine == "x86_64" else uname.machine,
                "osImage": "tpengine local cluster",
                "kernelVersion": uname.release,
                "containerRuntimeVersion": "tpengine://0.1.0",
            },
        },
    }
