"""What the agent-injector webhook adds to a pod of an engaged workload (JSONPatch).

Telepresence's injection, as the reference describes it:
- a ``traffic-agent`` sidecar running ``tp-agent`` from the product's image, told what to
  route by ``TP_AGENT_CONFIG``, given its pod's identity through the downward API, and
  the app container's environment copied under the ``TP_APP_ENV_`` prefix (``valueFrom``
  kept, so the kubelet resolves configMap/secret/fieldRef for it; ``$(VAR)`` references
  renamed to the prefixed names, which Kubernetes expands in order);
- a service port that targets a *named* container port: the app's port is renamed
  ``tm-<name>`` (15 characters at most, RFC 6335 §5.1), its probes follow the rename, and
  the agent's own container port takes the original name — the Service now reaches the
  agent without any packet rewriting;
- a *numeric* target port (or a headless or service-less workload): an init container
  ``tp-agent-init`` with NET_ADMIN installs REDIRECT rules from the app port to the
  agent's, exempting the agent's own uid so its connections to the app are not looped.
- the app container's volumeMounts, mounted again in the agent under ``MOUNTS_ROOT``
  (``/tmp/tel_app_mounts/<mountPath>``; Telepresence uses ``/tel_app_mounts``, but a new
  top-level directory is one that runtimes without images, like the local cluster,
  must make on the host; read-only where the app's is, subPath kept) and listed in the
  config (``mounts``, ``mounts_root``), so the agent can serve them to the engaging
  client (``tp intercept --mount``).
The pod template itself is never patched with the agent: only pods, at admission.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

AGENT_CONTAINER = "traffic-agent"
INIT_CONTAINER = "tp-agent-init"
ENV_PREFIX = "TP_APP_ENV_"
AGENT_UID = 7777
FIRST_AGENT_PORT = 9900
MOUNTS_ROOT = "/tmp/tel_app_mounts"
_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


@dataclass(frozen=True, kw_only=True)
class InterceptedPort:
    container_port: int
    name: str  # the container port's name, "" when numeric
    protocol: str = "TCP"
    symbolic: bool = True


@dataclass(frozen=True, kw_only=True)
class AgentSpec:
    workload: str
    namespace: str
    container: str  # the app container whose traffic, env and volumes the agent takes
    ports: tuple[InterceptedPort, ...]
    image: str
    manager_url: str
    replace: bool = False  # tp replace: the app container is left out of the pod


def _escape(path_part: str) -> str:
    return path_part.replace("~", "~0").replace("/", "~1")  # RFC 6901 §3


def _renamed(name: str) -> str:
    return f"tm-{name}"[:15]


def _prefixed_env(container: dict[str, Any]) -> list[dict[str, Any]]:
    env = []
    for entry in container.get("env") or []:
        copied = json.loads(json.dumps(entry))
        copied["name"] = ENV_PREFIX + entry["name"]
        if "value" in copied:
            copied["value"] = _REF.sub(lambda m: f"$({ENV_PREFIX}{m.group(1)})", copied["value"])
        env.append(copied)
    return env


def _prefixed_env_from(container: dict[str, Any]) -> list[dict[str, Any]]:
    sources = []
    for source in container.get("envFrom") or []:
        copied = json.loads(json.dumps(source))
        copied["prefix"] = ENV_PREFIX + source.get("prefix", "")
        sources.append(copied)
    return sources


def app_mounts(app: dict[str, Any]) -> list[dict[str, Any]]:
    """The app's volumeMounts again under MOUNTS_ROOT, for the agent container.

    Same volume, subPath and read-only flag (a volume may be mounted by several
    containers of a pod, Kubernetes "Volumes"); mount propagation is left out (the
    agent only reads and writes files)."""
    mounts = []
    for vm in app.get("volumeMounts") or []:
        path = vm.get("mountPath")
        if not isinstance(path, str) or not path.startswith("/") or not vm.get("name"):
            continue
        copied = {
            "name": vm["name"],
            "mountPath": MOUNTS_ROOT + "/" + path.strip("/"),
            "readOnly": bool(vm.get("readOnly")),
        }
        for key in ("subPath", "subPathExpr"):
            if vm.get(key):
                copied[key] = vm[key]
        mounts.append(copied)
    return mounts


def agent_ports(spec: AgentSpec) -> list[tuple[InterceptedPort, int]]:
    return [(port, FIRST_AGENT_PORT + i) for i, port in enumerate(spec.ports)]


def agent_container(spec: AgentSpec, app: dict[str, Any]) -> dict[str, Any]:
    config = {
        "workload": spec.workload,
        "namespace": spec.namespace,
        "container": spec.container,
        "manager_url": spec.manager_url,
        "ports": [
            {
                "agent_port": agent_port,
                "app_port": port.container_port,
                "name": port.name,
                "protocol": port.protocol,
            }
            for port, agent_port in agent_ports(spec)
        ],
    }
    mounts = app_mounts(app)
    if mounts:
        config["mounts"] = [
            {"path": m["mountPath"].removeprefix(MOUNTS_ROOT), "ro": m["readOnly"]} for m in mounts
        ]
        config["mounts_root"] = MOUNTS_ROOT
    field_env = [
        {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
        for name, path in (
            ("TP_POD_NAME", "metadata.name"),
            ("TP_NAMESPACE", "metadata.namespace"),
            ("TP_POD_IP", "status.podIP"),
        )
    ]
    ports = [
        {
            **({"name": port.name} if port.symbolic and port.name else {}),
            "containerPort": agent_port,
            "protocol": port.protocol,
        }
        for port, agent_port in agent_ports(spec)
    ]
    return {
        "name": AGENT_CONTAINER,
        "image": spec.image,
        "command": ["tp-agent"],
        "env": [
            *_prefixed_env(app),
            {"name": "TP_AGENT_CONFIG", "value": json.dumps(config, sort_keys=True)},
            *field_env,
        ],
        "envFrom": _prefixed_env_from(app),
        "ports": ports,
        "volumeMounts": mounts or None,
        "securityContext": {"runAsUser": AGENT_UID, "runAsGroup": AGENT_UID, "runAsNonRoot": True},
        "readinessProbe": {"tcpSocket": {"port": FIRST_AGENT_PORT}, "periodSeconds": 2}
        if spec.ports
        else None,
    }


def init_container(spec: AgentSpec) -> dict[str, Any]:
    redirects = [
        f"{p.protocol.lower()}:{p.container_port}:{agent_port}"
        for p, agent_port in agent_ports(spec)
        if not p.symbolic
    ]
    return {
        "name": INIT_CONTAINER,
        "image": spec.image,
        "command": ["tp-agent", "init", "--exempt-uid", str(AGENT_UID), *redirects],
        "securityContext": {
            "capabilities": {"add": ["NET_ADMIN"]},
            "runAsUser": 0,
            "runAsNonRoot": False,
        },
    }


def _rename_probe_port(probe: dict[str, Any] | None, renames: dict[str, str]) -> bool:
    if not probe:
        return False
    for kind in ("httpGet", "tcpSocket", "grpc"):
        action = probe.get(kind)
        if isinstance(action, dict) and action.get("port") in renames:
            action["port"] = renames[action["port"]]
            return True
    return False


#: On pods that the webhook started without their app container (tp replace).
REPLACED_LABEL = "tpengine.io/replaced"


def agent_patch(pod: dict[str, Any], spec: AgentSpec) -> list[dict[str, Any]]:
    """JSONPatch operations (RFC 6902) that inject the agent into ``pod``; [] when the
    pod already has one (a webhook may be called again: reinvocationPolicy)."""
    containers = pod.get("spec", {}).get("containers") or []
    if any(c.get("name") == AGENT_CONTAINER for c in containers):
        return []
    index = next((i for i, c in enumerate(containers) if c.get("name") == spec.container), None)
    if index is None:
        raise ValueError(f"pod has no container {spec.container!r}")
    app = json.loads(json.dumps(containers[index]))
    ops: list[dict[str, Any]] = []
    renames = {p.name: _renamed(p.name) for p in spec.ports if p.symbolic and p.name}
    if spec.replace:
        # tp replace: the app container is not started at all (its ports, and any
        # background work in it, are gone); the agent keeps its env and takes its ports.
        ops.append({"op": "remove", "path": f"/spec/containers/{index}"})
    elif renames:
        for port in app.get("ports") or []:
            if port.get("name") in renames:
                port["name"] = renames[port["name"]]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            _rename_probe_port(app.get(probe), renames)
        ops.append({"op": "replace", "path": f"/spec/containers/{index}", "value": app})
    container = {k: v for k, v in agent_container(spec, containers[index]).items() if v is not None}
    ops.append({"op": "add", "path": "/spec/containers/-", "value": container})
    if any(not p.symbolic for p in spec.ports):
        if pod.get("spec", {}).get("initContainers") is None:
            ops.append({"op": "add", "path": "/spec/initContainers", "value": []})
        ops.append({"op": "add", "path": "/spec/initContainers/-", "value": init_container(spec)})
    annotations = pod.get("metadata", {}).get("annotations")
    if annotations is None:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    ops.append(
        {
            "op": "add",
            "path": f"/metadata/annotations/{_escape('tpengine.io/agent-injected')}",
            "value": "true",
        }
    )
    if spec.replace:
        # Marks the pods to give their app container back once no replace holds them
        # (manager._restore finds them by this label).
        if pod.get("metadata", {}).get("labels") is None:
            ops.append({"op": "add", "path": "/metadata/labels", "value": {}})
        ops.append(
            {"op": "add", "path": f"/metadata/labels/{_escape(REPLACED_LABEL)}", "value": "true"}
        )
    return ops
