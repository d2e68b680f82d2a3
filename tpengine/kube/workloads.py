"""Finding what an engagement acts on: the workload, its services, and which container
port each intercepted port reaches (pure functions over API objects).

Kubernetes rules applied here:
- a Service selects a workload when every key of ``spec.selector`` is in the pod
  template's labels (Services use equality-based selectors only);
- a service port's ``targetPort`` names a container port (``name``) or is a number;
  without it, it equals ``port`` (the Service API defaulting);
- ``--port LOCAL[:SVCPORT]``: SVCPORT is a service port name or number; without it the
  service's only port is taken (several ports: the user must choose).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WORKLOAD_KINDS = ("Deployment", "ReplicaSet", "StatefulSet")


class ResolveError(ValueError):
    """The engagement's target cannot be determined; the message says what to pass."""


@dataclass(frozen=True, kw_only=True)
class PortSpec:
    local: int
    service_port: str | None  # name or number as given, or None


@dataclass(frozen=True, kw_only=True)
class ResolvedPort:
    local: int
    service: str | None  # None: service-less (annotation)
    service_port: int | None
    service_port_name: str
    container: str
    container_port: int
    container_port_name: str  # "" when the target port is numeric
    protocol: str
    symbolic: bool  # the service targets the port by name (no iptables needed)


def parse_port(spec: str) -> PortSpec:
    local, _, service_port = spec.partition(":")
    try:
        number = int(local)
    except ValueError:
        raise ResolveError(
            f"--port {spec!r}: LOCAL must be a port number (as in 8080 or 8080:http)"
        ) from None
    if not 0 < number < 65536:
        raise ResolveError(f"--port {spec!r}: {number} is not a port number")
    return PortSpec(local=number, service_port=service_port or None)


def template_of(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(workload.get("spec", {}).get("template") or {})


def selects(service: dict[str, Any], workload: dict[str, Any]) -> bool:
    selector = service.get("spec", {}).get("selector") or {}
    labels = template_of(workload).get("metadata", {}).get("labels") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pick_service(
    services: list[dict[str, Any]], workload: dict[str, Any], wanted: str | None
) -> dict[str, Any] | None:
    """The service to intercept through; None when no service selects the workload."""
    matching = [s for s in services if selects(s, workload)]
    if wanted is not None:
        for service in matching:
            if service["metadata"]["name"] == wanted:
                return service
        names = ", ".join(s["metadata"]["name"] for s in matching) or "none"
        raise ResolveError(
            f"service {wanted!r} does not select {workload['metadata']['name']} (services that do: {names})"
        )
    if len(matching) > 1:
        names = ", ".join(sorted(s["metadata"]["name"] for s in matching))
        raise ResolveError(
            f"{workload['metadata']['name']} is selected by several services ({names}); choose one with --service"
        )
    return matching[0] if matching else None


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(template_of(workload).get("spec", {}).get("containers") or [])


def _find_container_port(
    workload: dict[str, Any], target: int | str, container: str | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    candidates = [c for c in _containers(workload) if container is None or c["name"] == container]
    if container is not None and not candidates:
        names = ", ".join(c["name"] for c in _containers(workload))
        raise ResolveError(
            f"{workload['metadata']['name']} has no container {container!r} (containers: {names})"
        )
    for c in candidates:
        for port in c.get("ports") or []:
            if (isinstance(target, str) and port.get("name") == target) or port.get(
                "containerPort"
            ) == target:
                return c, port
    if isinstance(target, str):
        raise ResolveError(
            f"no container of {workload['metadata']['name']} has a port named {target!r}"
        )
    # A numeric targetPort need not be declared (Kubernetes does not require it): the
    # first container (or the chosen one) gets it.
    return candidates[0], None


def resolve_ports(
    workload: dict[str, Any],
    service: dict[str, Any] | None,
    specs: list[PortSpec],
    container: str | None,
) -> list[ResolvedPort]:
    if service is None:
        return _resolve_annotated(workload, specs, container)
    ports = service.get("spec", {}).get("ports") or []
    name = service["metadata"]["name"]
    resolved = []
    for spec in specs:
        if spec.service_port is None:
            if len(ports) != 1:
                choices = ", ".join(p.get("name") or str(p["port"]) for p in ports)
                raise ResolveError(
                    f"service {name} has several ports ({choices}); use --port {spec.local}:PORT"
                )
            port = ports[0]
        else:
            matches = [
                p
                for p in ports
                if p.get("name") == spec.service_port or str(p.get("port")) == spec.service_port
            ]
            if not matches:
                choices = ", ".join(p.get("name") or str(p["port"]) for p in ports)
                raise ResolveError(
                    f"service {name} has no port {spec.service_port!r} (ports: {choices})"
                )
            port = matches[0]
        target = port.get("targetPort", port["port"])
        c, cport = _find_container_port(workload, target, container)
        resolved.append(
            ResolvedPort(
                local=spec.local,
                service=name,
                service_port=int(port["port"]),
                service_port_name=port.get("name", ""),
                container=c["name"],
                container_port=int(cport["containerPort"]) if cport else int(target),
                container_port_name=(cport or {}).get("name", ""),
                protocol=port.get("protocol", "TCP"),
                symbolic=isinstance(target, str),
            )
        )
    return resolved


ANNOTATION = "telepresence.io/inject-container-ports"


def _resolve_annotated(
    workload: dict[str, Any], specs: list[PortSpec], container: str | None
) -> list[ResolvedPort]:
    """A service-less workload: only ports listed in the pod template's annotation."""
    annotations = template_of(workload).get("metadata", {}).get("annotations") or {}
    listed = [p.strip() for p in annotations.get(ANNOTATION, "").split(",") if p.strip()]
    if not listed:
        raise ResolveError(
            f"no service selects {workload['metadata']['name']} and its pod template has no "
            f"{ANNOTATION} annotation; add a service or the annotation"
        )
    resolved = []
    for spec in specs:
        entry = spec.service_port or listed[0]
        if spec.service_port is None and len(listed) > 1:
            raise ResolveError(
                f"{ANNOTATION} lists several ports ({', '.join(listed)}); use --port {spec.local}:PORT"
            )
        name, _, proto = entry.partition("/")
        target: int | str = int(name) if name.isdigit() else name
        listed_entry = next((item for item in listed if item.partition("/")[0] == name), None)
        if listed_entry is None:
            raise ResolveError(f"port {entry!r} is not in {ANNOTATION} ({', '.join(listed)})")
        proto = proto or listed_entry.partition("/")[2]
        c, cport = _find_container_port(workload, target, container)
        resolved.append(
            ResolvedPort(
                local=spec.local,
                service=None,
                service_port=None,
                service_port_name="",
                container=c["name"],
                container_port=int(cport["containerPort"]) if cport else int(target),
                container_port_name=(cport or {}).get("name", ""),
                protocol=(proto or (cport or {}).get("protocol") or "TCP").upper(),
                symbolic=False,
            )
        )
    return resolved
