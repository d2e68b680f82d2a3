"""Server-side printing: ``meta.k8s.io/v1 Table`` with the columns kubectl shows per kind.

Columns and cells follow pkg/printers/internalversion/printers.go (priority 1 = ``-o wide``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]
Row = list[Any]


def human_duration(seconds: float) -> str:
    """apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def age(obj: Obj) -> str:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    try:
        then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    return human_duration((datetime.now(UTC) - then).total_seconds())


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _selector_text(selector: Any) -> str:
    if not isinstance(selector, dict):
        return "<none>"
    labels = (
        selector.get("matchLabels", selector)
        if "matchLabels" in selector or "matchExpressions" in selector
        else selector
    )
    parts = [f"{k}={v}" for k, v in sorted((labels or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        parts.append(
            f"{expr.get('key')} {str(expr.get('operator', '')).lower()} ({','.join(expr.get('values') or [])})"
        )
    return ",".join(parts) or "<none>"


def _pod_row(pod: Obj) -> Row:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    total = len(spec.get("containers") or [])
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for c in statuses:
        state = c.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated", {}).get("reason"):
            reason = state["terminated"]["reason"]
    for c in status.get("initContainerStatuses") or []:
        state = c.get("state") or {}
        if "terminated" in state and state["terminated"].get("exitCode", 0) == 0:
            continue
        n = len(spec.get("initContainers") or [])
        reason = (state.get("waiting") or {}).get("reason") or f"Init:0/{n}"
        break
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    return [
        _name(pod),
        f"{ready}/{total}",
        reason,
        restarts,
        age(pod),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        "<none>",
        "<none>",
    ]


def _ports_text(ports: list[Obj]) -> str:
    out = []
    for p in ports or []:
        text = f"{p.get('port')}"
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        out.append(f"{text}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _service_row(svc: Obj) -> Row:
    spec = svc.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    external = (
        "<none>" if kind in ("ClusterIP", "NodePort") else spec.get("externalName", "<pending>")
    )
    return [
        _name(svc),
        kind,
        spec.get("clusterIP") or "<none>",
        external,
        _ports_text(spec.get("ports") or []),
        age(svc),
        _selector_text(spec.get("selector")),
    ]


def _containers(obj: Obj) -> tuple[str, str]:
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = spec.get("containers") or []
    return ",".join(c.get("name", "") for c in containers), ",".join(
        c.get("image", "") for c in containers
    )


def _deployment_row(dep: Obj) -> Row:
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    names, images = _containers(dep)
    return [
        _name(dep),
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        age(dep),
        names,
        images,
        _selector_text(spec.get("selector")),
    ]


def _replicaset_row(rs: Obj) -> Row:
    spec, status = rs.get("spec") or {}, rs.get("status") or {}
    names, images = _containers(rs)
    return [
        _name(rs),
        spec.get("replicas", 0),
        status.get("replicas", 0),
        status.get("readyReplicas", 0),
        age(rs),
        names,
        images,
        _selector_text(spec.get("selector")),
    ]


def _statefulset_row(sts: Obj) -> Row:
    spec, status = sts.get("spec") or {}, sts.get("status") or {}
    names, images = _containers(sts)
    return [
        _name(sts),
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        age(sts),
        names,
        images,
    ]


def _endpoints_text(ep: Obj) -> str:
    out = []
    for subset in ep.get("subsets") or []:
        for addr in subset.get("addresses") or []:
            for port in subset.get("ports") or [{}]:
                out.append(f"{addr.get('ip')}:{port.get('port')}" if port else addr.get("ip"))
    if not out:
        return "<none>"
    text = ",".join(out[:3])
    return text + (f" + {len(out) - 3} more..." if len(out) > 3 else "")


def _slice_row(es: Obj) -> Row:
    ports = ",".join(str(p.get("port")) for p in es.get("ports") or []) or "<unset>"
    addresses = [a for e in es.get("endpoints") or [] for a in e.get("addresses") or []]
    text = ",".join(addresses[:3]) or "<unset>"
    if len(addresses) > 3:
        text += f" + {len(addresses) - 3} more..."
    return [_name(es), es.get("addressType", ""), ports, text, age(es)]


def _event_row(ev: Obj) -> Row:
    involved = ev.get("involvedObject") or {}
    last = (
        ev.get("lastTimestamp")
        or ev.get("eventTime")
        or (ev.get("metadata") or {}).get("creationTimestamp")
    )
    return [
        age({"metadata": {"creationTimestamp": last}}) if last else "<unknown>",
        ev.get("type", ""),
        ev.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        ev.get("message", ""),
    ]


def _node_row(node: Obj) -> Row:
    status = node.get("status") or {}
    ready: Obj = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    labels = (node.get("metadata") or {}).get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    info = status.get("nodeInfo") or {}
    internal = [
        a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalIP"
    ]
    return [
        _name(node),
        "Ready" if ready.get("status") == "True" else "NotReady",
        ",".join(roles) or "<none>",
        age(node),
        info.get("kubeletVersion", ""),
        ",".join(internal) or "<none>",
        "<none>",
        info.get("osImage", ""),
        info.get("kernelVersion", ""),
        info.get("containerRuntimeVersion", ""),
    ]


def _col(name: str, kind: str = "string", priority: int = 0, fmt: str = "") -> Obj:
    col: Obj = {
        "name": name,
        "type": kind,
        "format": fmt,
        "description": name,
        "priority": priority,
    }
    return col


_NAME = _col("Name", fmt="name")
_AGE = _col("Age")

PRINTERS: dict[str, tuple[list[Obj], Callable[[Obj], Row]]] = {
    "pods": (
        [
            _NAME,
            _col("Ready"),
            _col("Status"),
            _col("Restarts", "string"),
            _AGE,
            _col("IP", priority=1),
            _col("Node", priority=1),
            _col("Nominated Node", priority=1),
            _col("Readiness Gates", priority=1),
        ],
        _pod_row,
    ),
    "services": (
        [
            _NAME,
            _col("Type"),
            _col("Cluster-IP"),
            _col("External-IP"),
            _col("Port(s)"),
            _AGE,
            _col("Selector", priority=1),
        ],
        _service_row,
    ),
    "deployments": (
        [
            _NAME,
            _col("Ready"),
            _col("Up-to-date", "integer"),
            _col("Available", "integer"),
            _AGE,
            _col("Containers", priority=1),
            _col("Images", priority=1),
            _col("Selector", priority=1),
        ],
        _deployment_row,
    ),
    "replicasets": (
        [
            _NAME,
            _col("Desired", "integer"),
            _col("Current", "integer"),
            _col("Ready", "integer"),
            _AGE,
            _col("Containers", priority=1),
            _col("Images", priority=1),
            _col("Selector", priority=1),
        ],
        _replicaset_row,
    ),
    "statefulsets": (
        [_NAME, _col("Ready"), _AGE, _col("Containers", priority=1), _col("Images", priority=1)],
        _statefulset_row,
    ),
    "nodes": (
        [
            _NAME,
            _col("Status"),
            _col("Roles"),
            _AGE,
            _col("Version"),
            _col("Internal-IP", priority=1),
            _col("External-IP", priority=1),
            _col("OS-Image", priority=1),
            _col("Kernel-Version", priority=1),
            _col("Container-Runtime", priority=1),
        ],
        _node_row,
    ),
    "namespaces": (
        [_NAME, _col("Status"), _AGE],
        lambda o: [_name(o), (o.get("status") or {}).get("phase", ""), age(o)],
    ),
    "configmaps": (
        [_NAME, _col("Data", "integer"), _AGE],
        lambda o: [_name(o), len(o.get("data") or {}) + len(o.get("binaryData") or {}), age(o)],
    ),
    "secrets": (
        [_NAME, _col("Type"), _col("Data", "integer"), _AGE],
        lambda o: [_name(o), o.get("type", ""), len(o.get("data") or {}), age(o)],
    ),
    "serviceaccounts": (
        [_NAME, _col("Secrets", "integer"), _AGE],
        lambda o: [_name(o), len(o.get("secrets") or []), age(o)],
    ),
    "endpoints": (
        [_NAME, _col("Endpoints"), _AGE],
        lambda o: [_name(o), _endpoints_text(o), age(o)],
    ),
    "endpointslices": (
        [_NAME, _col("AddressType"), _col("Ports"), _col("Endpoints"), _AGE],
        _slice_row,
    ),
    "events": (
        [_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")],
        _event_row,
    ),
    "mutatingwebhookconfigurations": (
        [_NAME, _col("Webhooks", "integer"), _AGE],
        lambda o: [_name(o), len(o.get("webhooks") or []), age(o)],
    ),
}


def _partial(obj: Obj) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def to_table(
    resource: str,
    objs: list[Obj],
    *,
    resource_version: str = "",
    include: str = "Metadata",
    with_columns: bool = True,
) -> Obj:
    columns, printer = PRINTERS.get(resource, ([_NAME, _AGE], lambda o: [_name(o), age(o)]))
    rows = []
    for obj in objs:
        row: Obj = {"cells": printer(obj)}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = _partial(obj)
        rows.append(row)
    table: Obj = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns if with_columns else [],
        "rows": rows,
    }
    return table
