"""Engagements from the laptop's side: resolve the workload with the user's credentials,
mark it for the agent, ask the manager, and answer the intercepted connections.

The user must be allowed to change the workload they engage (as ``kubectl rollout
restart`` needs); the manager is given no right to change workloads at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import trio

from tpengine.engine._session import Session, SessionError
from tpengine.kube.agents import (
    AGENT_ANNOTATION,
    AgentRolloutError,
    mark_for_agent,
    wait_rolled_out,
)
from tpengine.kube.objects import get_workload, list_workloads
from tpengine.kube.workloads import (
    ANNOTATION,
    ResolvedPort,
    ResolveError,
    parse_port,
    pick_service,
    resolve_ports,
    selects,
)
from tpengine.splice import splice
from tpengine.tunnel import IncomingDial, RejectReason, TunnelError

log = logging.getLogger(__name__)

#: How long an engagement waits for its workload's agent after the rollout.
AGENT_WAIT = 15.0

#: How long undoing a failed engagement may take (it may restore a replaced container).
UNDO_TIMEOUT = 90.0


@dataclass
class LocalTargets:
    """(address, port) pairs the manager may dial on this laptop: active engagements only."""

    allowed: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    #: replace engagements: the workload and the agent configuration to restore on leave
    replaced: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)

    def allows(self, host: str, port: int) -> bool:
        return any((host, port) in pairs for pairs in self.allowed.values())

    async def handle_dial(self, dial: IncomingDial) -> None:
        dest = dial.destination
        if not self.allows(dest.host, dest.port):
            await dial.reject(
                RejectReason.FORBIDDEN, f"{dest.host}:{dest.port} is not an engaged local address"
            )
            return
        try:
            local = await trio.open_tcp_stream(dest.host, dest.port)
        except OSError as exc:
            await dial.reject(
                RejectReason.REFUSED,
                f"nothing answers on {dest.host}:{dest.port} on the laptop: {exc.strerror}",
            )
            return
        try:
            stream = await dial.accept_stream()
        except BaseException:
            await local.aclose()
            raise
        await splice(stream, local)


async def find_workload(api: Any, namespace: str, name: str) -> dict[str, Any]:
    found = await get_workload(api, namespace, name)
    if found is None:
        raise SessionError(
            f"no workload named {name!r} in namespace {namespace!r} (Deployments, ReplicaSets, StatefulSets)"
        )
    return found


def _agent_ports(
    workload: dict[str, Any], services: list[dict[str, Any]], container: str
) -> list[dict[str, Any]]:
    """Every port the agent takes for ``container``: those of all services selecting the
    workload (so a later intercept of another port needs no restart)."""

    ports: dict[int, dict[str, Any]] = {}
    for service in services:
        if not selects(service, workload):
            continue
        for spec_port in service.get("spec", {}).get("ports") or []:
            try:
                [resolved] = resolve_ports(
                    workload,
                    service,
                    [parse_port(f"1:{spec_port.get('name') or spec_port['port']}")],
                    container,
                )
            except ResolveError:
                continue
            if resolved.container == container:
                ports[resolved.container_port] = {
                    "container_port": resolved.container_port,
                    "name": resolved.container_port_name,
                    "protocol": resolved.protocol,
                    "symbolic": resolved.symbolic,
                }
    return sorted(ports.values(), key=lambda p: int(p["container_port"]))


async def engage(
    api: Any, session: Session, targets: LocalTargets, params: dict[str, Any]
) -> dict[str, Any]:
    """The ``engage`` control call: resolve, mark, ask the manager; the result for printing."""
    kind = params["kind"]
    name = params["name"]
    namespace = params.get("namespace") or session.info.namespace
    workload = await find_workload(api, namespace, params.get("workload") or name)
    async with api.call_api("GET", version="v1", namespace=namespace, url="services") as response:
        services = response.json().get("items", [])
    try:
        service = pick_service(services, workload, params.get("service"))
        specs = [parse_port(p) for p in params.get("ports") or ["8080"]]
        container = params.get("container")
        resolved: list[ResolvedPort] = (
            [] if kind == "ingest" else resolve_ports(workload, service, specs, container)
        )
    except ResolveError as exc:
        raise SessionError(str(exc)) from None
    containers = workload["spec"]["template"]["spec"]["containers"]
    container = resolved[0].container if resolved else (container or containers[0]["name"])
    agent_ports = _agent_ports(workload, services, container) or [
        {
            "container_port": p.container_port,
            "name": p.container_port_name,
            "protocol": p.protocol,
            "symbolic": p.symbolic,
        }
        for p in resolved
    ]
    agent_config: dict[str, Any] = {
        "workload": workload["metadata"]["name"],
        "container": container,
        "ports": agent_ports,
    }
    if kind == "replace":
        agent_config["replace"] = True  # the webhook leaves the app container out
    address = params.get("address") or "127.0.0.1"
    request = {
        "kind": kind,
        "name": name,
        "namespace": namespace,
        "workload": workload["metadata"]["name"],
        "workload_kind": workload["kind"],
        "container": container,
        "ports": [p.container_port for p in resolved],
        "filter": params.get("filter") or {},
        "targets": {str(p.container_port): [address, p.local] for p in resolved},
        "address": address,
        "service": service["metadata"]["name"] if service else None,
        "local_ports": [
            {
                "local": p.local,
                "container_port": p.container_port,
                "protocol": p.protocol,
                "service_port": p.service_port,
            }
            for p in resolved
        ],
    }
    # The manager first (it refuses conflicts), the workload after: a refused engagement
    # leaves the workload as it was; a workload that fails to roll out is given back.
    mux = await session._current_mux()
    result: dict[str, Any] = await mux.request("engage", {**request, "wait": False})
    if "error" in result:
        raise SessionError(result["error"])
    targets.allowed[name] = {(address, p.local) for p in resolved}
    if kind == "replace":
        targets.replaced[name] = (
            workload,
            {k: v for k, v in agent_config.items() if k != "replace"},
        )
    try:
        restarted = await _mark_and_roll(api, workload, agent_config)
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(UNDO_TIMEOUT):
            try:
                await leave(api, session, targets, name)
            except (SessionError, TunnelError, trio.BrokenResourceError) as exc:
                log.warning("could not undo engagement %s: %s", name, exc)
        raise
    result = await _settled(session, name, result)
    result["restarted"] = restarted
    return result


async def _settled(session: Session, name: str, result: dict[str, Any]) -> dict[str, Any]:
    """The engagement as the manager sees it once an agent of the workload is there (the
    restarted pods' agents arrive a moment after the rollout), or as it is (WAITING, with
    the reason) after ``AGENT_WAIT`` seconds; the manager does the waiting."""
    mux = await session._current_mux()
    settled: dict[str, Any] = await mux.request(
        "wait_active", {"name": name, "timeout": AGENT_WAIT}
    )
    return result if "error" in settled else settled


async def leave(api: Any, session: Session, targets: LocalTargets, name: str) -> dict[str, Any]:
    mux = await session._current_mux()
    result: dict[str, Any] = await mux.request("leave", {"name": name})
    if "error" in result:
        raise SessionError(result["error"])
    targets.allowed.pop(name, None)
    replaced = targets.replaced.pop(name, None)
    if replaced is not None:
        # Bring the app container back: the same agent configuration without the
        # replace, and a restart (the agent stays, as after any engagement).
        workload, config = replaced
        current = await find_workload(
            api, workload["metadata"]["namespace"], workload["metadata"]["name"]
        )
        await _mark_and_roll(api, current, config)
    return result


async def _mark_and_roll(api: Any, workload: dict[str, Any], config: dict[str, Any]) -> bool:
    """Mark the workload for the agent; when that restarts its pods, wait for them."""
    try:
        if await mark_for_agent(api, workload, config):
            await wait_rolled_out(api, workload)
            return True
    except AgentRolloutError as exc:
        raise SessionError(str(exc)) from None
    return False


async def engageable_workloads(api: Any, namespace: str) -> list[dict[str, Any]]:
    """The namespace's workloads as ``tp list`` shows them: Deployments, StatefulSets and
    the ReplicaSets no Deployment owns, each with whether the agent is installed and, when
    it cannot be engaged, why (no service selects it and it has no port annotation)."""
    async with api.call_api("GET", version="v1", namespace=namespace, url="services") as response:
        services = response.json().get("items", [])
    found = []
    for item in await list_workloads(api, namespace):
        kind = item["kind"]
        owners = item["metadata"].get("ownerReferences") or []
        if kind == "ReplicaSet" and any(o.get("kind") == "Deployment" for o in owners):
            continue
        annotations = (
            item.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}
        )
        found.append(
            {
                "kind": kind,
                "name": item["metadata"]["name"],
                "namespace": namespace,
                "agent_installed": AGENT_ANNOTATION in annotations,
                "unable": None
                if ANNOTATION in annotations or any(selects(v, item) for v in services)
                else f"no service selects it and it has no {ANNOTATION} annotation",
            }
        )
    return sorted(found, key=lambda w: (w["kind"], w["name"]))


async def mount_volumes(
    volumes: Any, session: Session, engagement: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    """``--mount``: the engaged container's volumes on the laptop (``tpengine.fs``).
    Read-only for wiretap and ingest (they only observe) and for ``PATH:ro``. A mount
    that cannot be made does not undo the engagement: the result says why instead."""
    wanted = params.get("mount")
    if not isinstance(wanted, dict):
        return {}  # --mount false
    from tpengine.fs import MountError
    from tpengine.fs._mount import agent_connector

    if not engagement.get("pods"):
        return {"mount_error": "no traffic-agent pod is serving this engagement yet"}
    read_only = bool(wanted.get("read_only")) or engagement.get("kind") in ("wiretap", "ingest")
    connect = agent_connector(session._current_mux, engagement["namespace"], engagement["name"])
    try:
        mounted: dict[str, Any] = await volumes.mount(
            engagement["name"], connect, path=wanted.get("path"), read_only=read_only
        )
    except MountError as exc:
        return {"mount_error": str(exc)}
    return mounted
