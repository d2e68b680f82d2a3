"""The engine's way into the cluster: kubeconfig, API server checks, the manager, the
port-forward carrier."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import kr8s
import kr8s.asyncio
import trio

from tpengine import __version__
from tpengine.engine._session import Connector, SessionError
from tpengine.kube.install import InstallError, install_manager, installed_version
from tpengine.kube.kubeconfig import KubeconfigError, KubeTarget, resolve_target
from tpengine.kube.manifests import DEFAULT_IMAGE, MANAGER, TUNNEL_PORT
from tpengine.tunnel import DialHandler, MuxSession, Role, open_mux_over_stream

log = logging.getLogger(__name__)

Progress = Callable[[str], Awaitable[None]]


async def open_api(
    *,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    reach_timeout: float = 10.0,
) -> tuple[Any, KubeTarget]:
    """kr8s's API for the chosen context, after checking the server answers and the
    namespace exists. Raises SessionError with a one-line reason."""
    try:
        target = resolve_target(kubeconfig=kubeconfig, context=context, namespace=namespace)
    except KubeconfigError as exc:
        raise SessionError(str(exc)) from None
    try:
        with trio.fail_after(reach_timeout):
            api = await kr8s.asyncio.api(
                kubeconfig=str(target.paths[0]) if kubeconfig else None, context=target.context
            )
            await api.version()
    except trio.TooSlowError:
        raise SessionError(
            f"the API server at {target.server} did not answer within {reach_timeout:g} s"
        ) from None
    except (httpx.HTTPError, OSError, kr8s.ServerError, ValueError) as exc:
        raise SessionError(f"cannot reach the API server at {target.server}: {exc}") from None
    try:
        async with api.call_api("GET", version="v1", url=f"namespaces/{target.namespace}"):
            pass
    except kr8s.ServerError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            raise SessionError(
                f"namespace {target.namespace!r} does not exist in context {target.context!r}"
            ) from None
        raise SessionError(f"cannot read namespace {target.namespace!r}: {exc}") from None
    return api, target


async def ensure_manager(api: Any, *, namespace: str, image: str | None, progress: Progress) -> str:
    """Install the manager when missing or of another version; say what was done."""
    try:
        found = await installed_version(api, namespace)
        if found == __version__:
            return f"traffic-manager {found} found in namespace {namespace}"
        await progress(
            f"Installing the traffic-manager {__version__} in namespace {namespace}"
            if found is None
            else f"Upgrading the traffic-manager from {found} to {__version__}"
        )
        outcome = await install_manager(
            api, namespace=namespace, image=image or DEFAULT_IMAGE, progress=progress
        )
    except InstallError as exc:
        raise SessionError(str(exc)) from None
    except kr8s.ServerError as exc:
        raise SessionError(f"cannot install the traffic-manager: {exc}") from None
    return f"traffic-manager {outcome.value} in namespace {namespace}"


async def ready_manager_pod(api: Any, namespace: str) -> str:
    async with api.call_api(
        "GET",
        version="v1",
        namespace=namespace,
        url="pods",
        params={"labelSelector": f"app.kubernetes.io/name={MANAGER}"},
    ) as response:
        pods = response.json().get("items", [])
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        conditions = pod.get("status", {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            return str(pod["metadata"]["name"])
    raise SessionError(f"no ready traffic-manager pod in namespace {namespace}")


def port_forward_connector(
    api: Any, namespace: str, dial_handler: DialHandler | None = None
) -> Connector:
    """Tunnels to the manager through a Kubernetes port-forward to a ready pod;
    ``dial_handler`` answers the manager's dials (intercepted connections)."""
    from tpengine.kube.portforward import open_port_forward

    @asynccontextmanager
    async def connect() -> AsyncIterator[MuxSession]:
        pod = await ready_manager_pod(api, namespace)
        async with (
            open_port_forward(api, namespace, pod, TUNNEL_PORT) as stream,
            # The raw tunnel: the port-forward is already a websocket; the manager tells
            # the tunnel's preamble from a websocket GET on its one port.
            open_mux_over_stream(stream, role=Role.CLIENT, dial_handler=dial_handler) as mux,
        ):
            yield mux

    return connect
