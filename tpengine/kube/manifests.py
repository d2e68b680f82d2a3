"""The cluster side's objects, rendered for a namespace and image.

``deploy/`` holds the same objects as kustomize manifests for users who apply them with
their own tools; a test keeps the two identical for the default namespace and image.
"""

from __future__ import annotations

from typing import Any

from tpengine import __version__
from tpengine.kube.injector import (
    SERVICE,
    TLS_ENV,
    TLS_SECRET,
    WEBHOOK_PORT,
    WebhookTls,
    tls_secret,
    webhook_configuration,
)

MANAGER = "traffic-manager"
DEFAULT_NAMESPACE = "tpengine"
DEFAULT_IMAGE = f"tpengine/tpengine:{__version__}"
TUNNEL_PORT = 8081
HEALTH_PORT = 8082
VERSION_ANNOTATION = "tpengine.io/version"

Manifest = dict[str, Any]


def _labels(name: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/part-of": "tpengine"}
    if name:
        labels = {"app.kubernetes.io/name": name, **labels}
    return labels


def _meta(
    name: str, namespace: str | None = None, *, component: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = _labels(component)
    return meta


def manager_manifests(
    namespace: str = DEFAULT_NAMESPACE, image: str = DEFAULT_IMAGE, tls: WebhookTls | None = None
) -> list[Manifest]:
    """Namespace, least-privilege RBAC, Deployment and Services of the traffic-manager;
    with ``tls`` also the agent-injector's certificate Secret and webhook configuration
    (``tp install`` makes them; the static ``deploy/`` files leave them out)."""
    cluster_role = f"{MANAGER}-{namespace}"
    subject = [{"kind": "ServiceAccount", "name": MANAGER, "namespace": namespace}]
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": _labels()},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(MANAGER, namespace, component=MANAGER),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(cluster_role),
            # Exactly what the manager lists, cluster-wide: pod IPs and node podCIDRs for
            # the pod subnets, ClusterIPs for the service subnets, namespaces for DNS. An
            # end-to-end test checks this against the API server's audit log.
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods", "namespaces", "nodes", "services"],
                    "verbs": ["list"],
                },
                # New namespaces reach the clients' DNS at once (manager/_cluster.py).
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["watch"]},
                # A replaced pod whose replace ended without its client (crashed, gone
                # silent) is deleted so its controller brings the app container back;
                # the manager changes no workload (manager/_restore.py).
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(cluster_role),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_role,
            },
            "subjects": subject,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(MANAGER, namespace),
            # The service-subnet probe: a Service with an invalid ClusterIP, refused by the
            # API server with the valid range in its message.
            "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["create"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(MANAGER, namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": MANAGER},
            "subjects": subject,
        },
        # The certificate Secret before the Deployment, so its first pod starts with it.
        *([tls_secret(namespace, tls)] if tls else []),
        _deployment(namespace, image),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(MANAGER, namespace, component=MANAGER),
            "spec": {
                "selector": {"app.kubernetes.io/name": MANAGER},
                "ports": [{"name": "tunnel", "port": TUNNEL_PORT, "targetPort": "tunnel"}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(SERVICE, namespace, component=MANAGER),
            "spec": {
                "selector": {"app.kubernetes.io/name": MANAGER},
                "ports": [{"name": "https", "port": 443, "targetPort": "webhook"}],
            },
        },
        *(
            [tls_secret(namespace, tls), webhook_configuration(namespace, tls.ca_pem)]
            if tls
            else []
        ),
    ]


def _deployment(namespace: str, image: str) -> Manifest:
    container = {
        "name": MANAGER,
        "image": image,
        "command": ["tp-manager"],
        "env": [
            {
                "name": "TP_MANAGER_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "TP_AGENT_IMAGE", "value": image},  # the agent is the same image
            # The injector's certificate, from the Secret tp install makes (optional: no
            # Secret, no webhook). Environment rather than a volume: nothing to mount.
            *(
                {
                    "name": env,
                    "valueFrom": {
                        "secretKeyRef": {"name": TLS_SECRET, "key": key, "optional": True}
                    },
                }
                for env, key in TLS_ENV.items()
            ),
        ],
        "ports": [
            {"name": "tunnel", "containerPort": TUNNEL_PORT},
            {"name": "health", "containerPort": HEALTH_PORT},
            {"name": "webhook", "containerPort": WEBHOOK_PORT},
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "health"}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "health"}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        # The image runs as uid 1000 (its USER); no capability or escalation is needed.
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            **_meta(MANAGER, namespace, component=MANAGER),
            "annotations": {VERSION_ANNOTATION: __version__},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": MANAGER}},
            "template": {
                "metadata": {"labels": _labels(MANAGER)},
                "spec": {
                    "serviceAccountName": MANAGER,
                    "containers": [container],
                },
            },
        },
    }


_FILES = {"Namespace": "namespace.yaml", "Deployment": "deployment.yaml", "Service": "service.yaml"}
_HEADER = (
    "# Generated by `python -m tpengine.kube.manifests deploy/manager`; a test keeps it current.\n"
)


def write_deploy_directory(directory: str) -> list[str]:
    """Write the default manifests as ``deploy/manager/*.yaml`` (RBAC in rbac.yaml)."""
    import os

    import yaml

    by_file: dict[str, list[Manifest]] = {}
    for obj in manager_manifests():
        by_file.setdefault(_FILES.get(obj["kind"], "rbac.yaml"), []).append(obj)
    written = []
    for name, objects in sorted(by_file.items()):
        path = os.path.join(directory, name)
        with open(path, "w") as handle:
            handle.write(_HEADER + yaml.safe_dump_all(objects, sort_keys=False))
        written.append(path)
    return written


if __name__ == "__main__":
    import sys

    for written_path in write_deploy_directory(
        sys.argv[1] if len(sys.argv) > 1 else "deploy/manager"
    ):
        print(written_path)
