"""Defaults a real API server fills in (pkg/apis/*/v1/defaults.go and admission plugins).

Applied on create and update, before validation and admission, so webhooks and clients see
the same defaulted objects a real cluster shows them.
"""

from __future__ import annotations

import base64
import random
from typing import Any

Obj = dict[str, Any]

_PROBE_DEFAULTS = {
    "timeoutSeconds": 1,
    "periodSeconds": 10,
    "successThreshold": 1,
    "failureThreshold": 3,
}


def child(parent: Obj, key: str) -> Obj:
    """parent[key] as a dict; null or missing becomes {} (a Go decoder's zero value)."""
    value = parent.get(key)
    if not isinstance(value, dict):
        value = parent[key] = {}
    return value


def _image_pull_policy(image: str) -> str:
    # core/v1 defaults.go SetDefaults_Container: ":latest" or no tag pulls Always.
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def _default_probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    for key, value in _PROBE_DEFAULTS.items():
        probe.setdefault(key, value)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("path", "/")
        probe["httpGet"].setdefault("scheme", "HTTP")


def _default_container(container: Any) -> None:
    if not isinstance(container, dict):
        return
    container.setdefault("imagePullPolicy", _image_pull_policy(str(container.get("image", ""))))
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(container.get(key))
    for env in container.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("fieldRef") if isinstance(env, dict) else None
        if isinstance(ref, dict):
            ref.setdefault("apiVersion", "v1")


def default_pod_spec(spec: Obj) -> None:
    """SetDefaults_PodSpec and the container defaults (also used for pod templates)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            _default_container(container)
    for volume in spec.get("volumes") or []:
        if not isinstance(volume, dict):
            continue
        for kind in ("configMap", "secret"):
            if isinstance(volume.get(kind), dict):
                volume[kind].setdefault("defaultMode", 0o644)
        if not any(k != "name" for k in volume):
            volume["emptyDir"] = {}


def default_pod(pod: Obj, *, node_name: str) -> None:
    """A new pod: spec defaults, ServiceAccount admission, DefaultTolerationSeconds."""
    spec = child(pod, "spec")
    default_pod_spec(spec)
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = sa
    spec["serviceAccount"] = sa  # the deprecated alias the API server keeps in sync
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    spec.setdefault("nodeName", node_name)
    tolerations = spec.setdefault("tolerations", [])
    keys = {t.get("key") for t in tolerations if isinstance(t, dict)}
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if key not in keys:
            tolerations.append(
                {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            )
    _add_service_account_volume(spec)


def _add_service_account_volume(spec: Obj) -> None:
    # plugin/pkg/admission/serviceaccount: the projected kube-api-access-<5> volume mounted
    # read-only at /var/run/secrets/kubernetes.io/serviceaccount in every container.
    if spec.get("automountServiceAccountToken") is False:
        return
    mount_path = "/var/run/secrets/kubernetes.io/serviceaccount"
    containers = [c for k in ("initContainers", "containers") for c in spec.get(k) or []]
    if any(
        m.get("mountPath") == mount_path for c in containers for m in c.get("volumeMounts") or []
    ):
        return
    name = "kube-api-access-" + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
    spec.setdefault("volumes", []).append(
        {
            "name": name,
            "projected": {
                "defaultMode": 0o644,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {
                                        "apiVersion": "v1",
                                        "fieldPath": "metadata.namespace",
                                    },
                                }
                            ]
                        }
                    },
                ],
            },
        }
    )
    for container in containers:
        container.setdefault("volumeMounts", []).append(
            {"name": name, "readOnly": True, "mountPath": mount_path}
        )


def default_pod_template(template: Any) -> None:
    if isinstance(template, dict):
        child(template, "metadata")
        default_pod_spec(child(template, "spec"))


def default_service(svc: Obj) -> None:
    spec = child(svc, "spec")
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "port" in port:
                port.setdefault("targetPort", port["port"])
    svc.setdefault("status", {"loadBalancer": {}})


def default_deployment(dep: Obj) -> None:
    spec = child(dep, "spec")
    spec.setdefault("replicas", 1)
    strategy = child(spec, "strategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = child(strategy, "rollingUpdate")
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    default_pod_template(spec.get("template"))


def default_replicaset(rs: Obj) -> None:
    spec = child(rs, "spec")
    spec.setdefault("replicas", 1)
    default_pod_template(spec.get("template"))


def default_statefulset(sts: Obj) -> None:
    spec = child(sts, "spec")
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if strategy.get("type") == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {"partition": 0})
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault(
        "persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"}
    )
    default_pod_template(spec.get("template"))


def default_namespace(ns: Obj) -> None:
    name = ns.get("metadata", {}).get("name", "")
    child(ns["metadata"], "labels")["kubernetes.io/metadata.name"] = name
    child(ns, "spec").setdefault("finalizers", ["kubernetes"])
    child(ns, "status").setdefault("phase", "Active")


def default_secret(secret: Obj) -> None:
    secret.setdefault("type", "Opaque")
    string_data = secret.pop("stringData", None)
    if isinstance(string_data, dict):
        data = child(secret, "data")
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def default_webhooks(mwc: Obj) -> None:
    for hook in mwc.get("webhooks") or []:
        if not isinstance(hook, dict):
            continue
        hook.setdefault("failurePolicy", "Fail")
        hook.setdefault("matchPolicy", "Equivalent")
        hook.setdefault("namespaceSelector", {})
        hook.setdefault("objectSelector", {})
        hook.setdefault("timeoutSeconds", 10)
        hook.setdefault("reinvocationPolicy", "Never")
        for rule in hook.get("rules") or []:
            if isinstance(rule, dict):
                rule.setdefault("scope", "*")
        svc = (hook.get("clientConfig") or {}).get("service")
        if isinstance(svc, dict):
            svc.setdefault("port", 443)


DEFAULTERS = {
    "services": default_service,
    "deployments": default_deployment,
    "replicasets": default_replicaset,
    "statefulsets": default_statefulset,
    "namespaces": default_namespace,
    "secrets": default_secret,
    "mutatingwebhookconfigurations": default_webhooks,
}


def omit_empty_maps(obj: Obj) -> None:
    """ObjectMeta's labels and annotations are ``omitempty`` maps in the API's Go types: an
    empty map (say, after a patch deleted every key) is not stored or returned at all."""
    metas = [obj.get("metadata")]
    template = obj.get("spec", {}).get("template") if isinstance(obj.get("spec"), dict) else None
    if isinstance(template, dict):
        metas.append(template.get("metadata"))
    for meta in metas:
        if isinstance(meta, dict):
            for key in ("labels", "annotations"):
                if meta.get(key) == {}:
                    del meta[key]


def apply_defaults(resource: str, obj: Obj, *, node_name: str, creating: bool) -> None:
    omit_empty_maps(obj)
    if resource == "pods":
        if creating:
            default_pod(obj, node_name=node_name)
        else:
            default_pod_spec(child(obj, "spec"))
        return
    defaulter = DEFAULTERS.get(resource)
    if defaulter is not None:
        defaulter(obj)
