"""The agent's configuration: ``TP_AGENT_CONFIG`` and the env the webhook gives it.

``manager/_inject.py`` writes it: a JSON object naming the workload, the namespace, the
app container, the manager's tunnel URL and the ports (agent port, app port, name,
protocol); the downward API adds ``TP_POD_NAME``, ``TP_NAMESPACE``, ``TP_POD_IP``; the
app container's env arrives under the ``TP_APP_ENV_`` prefix (Kubernetes already resolved
``valueFrom`` and ``$(VAR)`` for it). Bad input is refused with one line naming the field.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "TP_APP_ENV_"
#: Never exported to the engaging client (Telepresence drops them: they describe the
#: container, not the app's configuration).
DROPPED_ENV = frozenset({"HOME", "PATH", "HOSTNAME"})


class ConfigError(ValueError):
    """A configuration that cannot be used; the message is one line for the user."""


@dataclass(frozen=True, kw_only=True)
class PortSpec:
    agent_port: int
    app_port: int
    name: str = ""
    protocol: str = "TCP"  # "TCP" or "UDP"


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    workload: str
    namespace: str
    container: str
    manager_url: str
    ports: tuple[PortSpec, ...]
    pod: str = ""
    pod_ip: str = ""
    app_env: Mapping[str, str] = field(default_factory=dict)
    #: the app container's mountPaths and whether each is read-only (served as volumes)
    mounts: tuple[tuple[str, bool], ...] = ()
    mounts_root: str = ""  # where the webhook mounted them in this container ("": default)

    def arrive_payload(self) -> dict[str, Any]:
        """The ``agent_arrive`` request of the contract."""
        env = {k: v for k, v in self.app_env.items() if k not in DROPPED_ENV}
        env["TELEPRESENCE_CONTAINER"] = self.container
        return {
            "namespace": self.namespace,
            "workload": self.workload,
            "pod": self.pod,
            "pod_ip": self.pod_ip,
            "container": self.container,
            "ports": [
                {
                    "agent_port": p.agent_port,
                    "app_port": p.app_port,
                    "name": p.name,
                    "protocol": p.protocol,
                }
                for p in self.ports
            ],
            "env": env,
        }


def load_config(environ: Mapping[str, str]) -> AgentConfig:
    """Parse the environment of the ``traffic-agent`` container; ConfigError on bad input."""
    raw = environ.get("TP_AGENT_CONFIG")
    if not raw:
        raise ConfigError("TP_AGENT_CONFIG is not set (the agent-injector webhook sets it)")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"TP_AGENT_CONFIG is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("TP_AGENT_CONFIG must be a JSON object")
    strings = {name: _string(data, name) for name in ("workload", "namespace", "container")}
    url = _string(data, "manager_url")
    parts = urlsplit(url)
    if parts.scheme not in ("tcp", "ws", "wss") or not parts.hostname:
        raise ConfigError(
            f"TP_AGENT_CONFIG manager_url {url!r} must be tcp://HOST:PORT (the raw tunnel), "
            "ws://HOST:PORT or wss://"
        )
    ports = data.get("ports")
    if not isinstance(ports, list):
        raise ConfigError("TP_AGENT_CONFIG ports must be a list")
    specs = tuple(_port(i, entry) for i, entry in enumerate(ports))
    seen: set[tuple[int, str]] = set()
    for spec in specs:
        key = (spec.agent_port, spec.protocol)
        if key in seen:
            raise ConfigError(f"TP_AGENT_CONFIG ports: agent_port {spec.agent_port} twice")
        seen.add(key)
    mounts = _mounts(data.get("mounts", []))
    mounts_root = data.get("mounts_root", "")
    if not isinstance(mounts_root, str) or (mounts_root and not mounts_root.startswith("/")):
        raise ConfigError("TP_AGENT_CONFIG mounts_root must be an absolute path")
    app_env = {
        name[len(ENV_PREFIX) :]: value
        for name, value in environ.items()
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX)
    }
    return AgentConfig(
        **strings,
        manager_url=url,
        ports=specs,
        # The downward API names the pod; a pod's hostname is its name too (Kubernetes
        # sets it so unless spec.hostname overrides it).
        pod=environ.get("TP_POD_NAME") or environ.get("HOSTNAME") or socket.gethostname(),
        pod_ip=environ.get("TP_POD_IP", ""),
        app_env=app_env,
        mounts=mounts,
        mounts_root=mounts_root,
    )


def _mounts(entries: Any) -> tuple[tuple[str, bool], ...]:
    if not isinstance(entries, list):
        raise ConfigError("TP_AGENT_CONFIG mounts must be a list")
    mounts = []
    for i, entry in enumerate(entries):
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise ConfigError(f"TP_AGENT_CONFIG mounts[{i}].path must be an absolute path")
        mounts.append((path, bool(entry.get("ro", False))))
    return tuple(mounts)


def _string(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"TP_AGENT_CONFIG {name} must be a non-empty string")
    return value


def _port(index: int, entry: Any) -> PortSpec:
    where = f"TP_AGENT_CONFIG ports[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object")
    numbers = {}
    for name in ("agent_port", "app_port"):
        value = entry.get(name)
        if type(value) is not int or not 1 <= value <= 65535:
            raise ConfigError(f"{where} {name} must be a port number 1-65535, not {value!r}")
        numbers[name] = value
    protocol = entry.get("protocol", "TCP")
    if protocol not in ("TCP", "UDP"):
        raise ConfigError(f"{where} protocol must be TCP or UDP, not {protocol!r}")
    name = entry.get("name", "")
    if not isinstance(name, str):
        raise ConfigError(f"{where} name must be a string")
    return PortSpec(**numbers, name=name, protocol=protocol)
