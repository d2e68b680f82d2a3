"""Installing and removing the traffic-manager with kr8s (``tp install``/``tp uninstall``,
and ``tp connect`` when the manager is missing or its version differs).

Objects are applied one by one: created when missing, replaced when they differ from what
this version renders, left alone otherwise. The rollout is then awaited with progress, and
a manager that does not become ready is explained (the pod's waiting reason and message),
not reported as a bare timeout.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable
from typing import Any

import kr8s
import trio

from tpengine.kube.injector import TLS_SECRET, WebhookTls, generate_tls, tls_from_secret
from tpengine.kube.manifests import MANAGER, VERSION_ANNOTATION, Manifest, manager_manifests
from tpengine.kube.objects import get_or_none, rolled_out, status_code

Progress = Callable[[str], Awaitable[None]]

#: kind → (apiVersion, plural, namespaced)
_RESOURCES = {
    "Namespace": ("v1", "namespaces", False),
    "ServiceAccount": ("v1", "serviceaccounts", True),
    "Service": ("v1", "services", True),
    "Deployment": ("apps/v1", "deployments", True),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings", True),
    "Secret": ("v1", "secrets", True),
    "MutatingWebhookConfiguration": (
        "admissionregistration.k8s.io/v1",
        "mutatingwebhookconfigurations",
        False,
    ),
}


class InstallError(Exception):
    """Installing or removing the manager failed; the message says why."""


class Outcome(enum.Enum):
    INSTALLED = "installed"
    UPGRADED = "upgraded"
    UNCHANGED = "unchanged"


async def _noop(text: str) -> None:
    await trio.lowlevel.checkpoint()


def _location(obj: Manifest) -> tuple[str, str | None, str]:
    version, plural, namespaced = _RESOURCES[obj["kind"]]
    namespace = obj["metadata"].get("namespace") if namespaced else None
    return version, namespace, plural


async def _get(api: Any, obj: Manifest) -> Manifest | None:
    version, namespace, plural = _location(obj)
    return await get_or_none(api, version, namespace, f"{plural}/{obj['metadata']['name']}")


def _differs(current: Manifest, wanted: Manifest) -> bool:
    """True when a field we render is not what the cluster holds (server-added fields
    such as defaults, status and managed metadata are ignored)."""

    def covers(have: Any, want: Any) -> bool:
        if isinstance(want, dict):
            return isinstance(have, dict) and all(covers(have.get(k), v) for k, v in want.items())
        if isinstance(want, list):
            return (
                isinstance(have, list)
                and len(have) == len(want)
                and all(covers(h, w) for h, w in zip(have, want, strict=True))
            )
        return bool(have == want)

    return not covers(current, wanted)


async def apply(api: Any, obj: Manifest) -> str:
    """Create or replace one object; returns "created", "configured" or "unchanged"."""
    version, namespace, plural = _location(obj)
    current = await _get(api, obj)
    if current is None:
        async with api.call_api(
            "POST", version=version, namespace=namespace, url=plural, content=json.dumps(obj)
        ):
            return "created"
    if not _differs(current, obj):
        return "unchanged"
    replacement = json.loads(json.dumps(obj))
    replacement["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
    async with api.call_api(
        "PUT",
        version=version,
        namespace=namespace,
        url=f"{plural}/{obj['metadata']['name']}",
        content=json.dumps(replacement),
    ):
        return "configured"


async def installed_version(api: Any, namespace: str) -> str | None:
    """The version annotation of the installed manager, or None when there is none."""
    probe = {"kind": "Deployment", "metadata": {"name": MANAGER, "namespace": namespace}}
    current = await _get(api, probe)
    if current is None:
        return None
    return str((current["metadata"].get("annotations") or {}).get(VERSION_ANNOTATION, "unknown"))


async def install_manager(
    api: Any, *, namespace: str, image: str, progress: Progress = _noop, ready_timeout: float = 120
) -> Outcome:
    before = await installed_version(api, namespace)
    tls = await _injector_tls(api, namespace)
    results = []
    for obj in manager_manifests(namespace, image, tls):
        try:
            result = await apply(api, obj)
        except kr8s.ServerError as exc:
            raise InstallError(
                f"cannot apply {obj['kind']} {obj['metadata']['name']}: {exc}"
            ) from None
        results.append(result)
        if result != "unchanged":
            await progress(f"{obj['kind'].lower()}/{obj['metadata']['name']} {result}")
    await wait_for_manager(api, namespace=namespace, progress=progress, ready_timeout=ready_timeout)
    if before is None:
        return Outcome.INSTALLED
    return Outcome.UNCHANGED if set(results) == {"unchanged"} else Outcome.UPGRADED


async def _injector_tls(api: Any, namespace: str) -> WebhookTls:
    """The agent-injector's certificate: the one installed before (so the webhook's
    caBundle stays put across upgrades), else a new one."""
    existing = await _get(
        api, {"kind": "Secret", "metadata": {"name": TLS_SECRET, "namespace": namespace}}
    )
    found = tls_from_secret(existing) if existing is not None else None
    return found or generate_tls(namespace)


async def wait_for_manager(
    api: Any, *, namespace: str, progress: Progress = _noop, ready_timeout: float = 120
) -> None:
    """Wait until the manager Deployment's rollout is complete (as ``kubectl rollout
    status`` decides: observedGeneration ≥ generation and every replica updated and
    available), or explain why it is not."""
    await progress("waiting for the traffic-manager to be ready")
    with trio.move_on_after(ready_timeout):
        while True:
            deployment = await _get(
                api, {"kind": "Deployment", "metadata": {"name": MANAGER, "namespace": namespace}}
            )
            if deployment is not None and rolled_out(deployment):
                return
            await trio.sleep(0.5)
    raise InstallError(
        f"the traffic-manager is not ready after {ready_timeout:g} s: {await _why_not_ready(api, namespace)}"
    )


async def _why_not_ready(api: Any, namespace: str) -> str:
    try:
        async with api.call_api(
            "GET",
            version="v1",
            namespace=namespace,
            url="pods",
            params={"labelSelector": f"app.kubernetes.io/name={MANAGER}"},
        ) as r:
            pods = r.json().get("items", [])
    except kr8s.ServerError as exc:
        return f"cannot read its pods: {exc}"
    if not pods:
        return "no traffic-manager pod was created"
    for pod in pods:
        for cs in pod.get("status", {}).get("containerStatuses", []) or []:
            waiting = (cs.get("state") or {}).get("waiting")
            if waiting:
                return f"pod {pod['metadata']['name']}: {waiting.get('reason', '')} {waiting.get('message', '')}".strip()
            terminated = (cs.get("lastState") or {}).get("terminated")
            if terminated:
                return f"pod {pod['metadata']['name']}: exited with {terminated.get('exitCode')} ({terminated.get('reason', '')})"
        phase = pod.get("status", {}).get("phase", "Unknown")
        return f"pod {pod['metadata']['name']} is {phase}, not ready"
    return "unknown"


async def uninstall_manager(api: Any, *, namespace: str, progress: Progress = _noop) -> list[str]:
    """Delete every object ``install_manager`` made (the namespace last); returns what went."""
    removed = []
    placeholder = WebhookTls(ca_pem=b"", cert_pem=b"", key_pem=b"")  # only names matter here
    for obj in reversed(manager_manifests(namespace, tls=placeholder)):
        version, ns, plural = _location(obj)
        name = obj["metadata"]["name"]
        try:
            async with api.call_api(
                "DELETE", version=version, namespace=ns, url=f"{plural}/{name}"
            ):
                pass
        except kr8s.ServerError as exc:
            if status_code(exc) == 404:
                continue
            raise InstallError(f"cannot delete {obj['kind']} {name}: {exc}") from None
        removed.append(f"{obj['kind'].lower()}/{name}")
        await progress(f"{obj['kind'].lower()}/{name} deleted")
    return removed
