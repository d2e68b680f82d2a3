"""Container probes: tcpSocket, httpGet and exec (Kubernetes "Container probes").

tcpSocket and httpGet connect from the node to the pod's IP inside the pod's netns
(the kubelet probes from outside the container, but in the pod network); exec runs the
command in the container, success = exit 0. grpc probes are not supported and count as
success (stated, not silent: the kubelet logs it once).
"""

from __future__ import annotations

import http.client
import logging
import socket
from collections.abc import Awaitable, Callable

import trio

from localcluster.node._ns import call_in_netns

log = logging.getLogger(__name__)

ExecProbe = Callable[[list[str], float], Awaitable[int]]


def resolve_port(port: int | str, container: dict) -> int:
    """A probe's port: a number or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"port {port!r} not found in the container's ports")


def _tcp(netns: str | None, host: str, port: int, timeout: float) -> bool:
    def attempt() -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False

    return call_in_netns(netns, attempt) if netns else attempt()


def _http(netns: str | None, host: str, port: int, get: dict, timeout: float) -> bool:
    def attempt() -> bool:
        cls = (
            http.client.HTTPSConnection
            if get.get("scheme") == "HTTPS"
            else http.client.HTTPConnection
        )
        kwargs: dict = {"timeout": timeout}
        if cls is http.client.HTTPSConnection:
            import ssl

            kwargs["context"] = (
                ssl._create_unverified_context()
            )  # the kubelet skips verification too
        conn = cls(get.get("host") or host, port, **kwargs)
        try:
            headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
            headers.setdefault("User-Agent", "kube-probe/1.32")
            headers.setdefault("Connection", "close")
            conn.request("GET", get.get("path") or "/", headers=headers)
            response = conn.getresponse()
            response.read(10240)  # the kubelet reads (and caps) the body
            status = response.status
            return 200 <= status < 400  # "any code >= 200 and < 400 indicates success"
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    return call_in_netns(netns, attempt) if netns else attempt()


async def probe_once(
    probe: dict, *, netns: str | None, pod_ip: str, container: dict, exec_probe: ExecProbe
) -> bool:
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "tcpSocket" in probe:
            port = resolve_port(probe["tcpSocket"]["port"], container)
            host = probe["tcpSocket"].get("host") or pod_ip
            return await trio.to_thread.run_sync(
                _tcp, netns, host, port, timeout, abandon_on_cancel=True
            )
        if "httpGet" in probe:
            port = resolve_port(probe["httpGet"]["port"], container)
            return await trio.to_thread.run_sync(
                _http, netns, pod_ip, port, probe["httpGet"], timeout, abandon_on_cancel=True
            )
        if "exec" in probe:
            command = probe["exec"].get("command") or []
            return await exec_probe(list(command), timeout) == 0
    except ValueError:
        return False
    return True


async def run_probe_loop(
    probe: dict,
    on_result: Callable[[bool], None],
    **kwargs: object,
) -> None:
    """Probe every periodSeconds and report after success/failure thresholds are met."""
    delay = float(probe.get("initialDelaySeconds", 0))
    period = max(float(probe.get("periodSeconds", 10)), 0.2)
    success_threshold = int(probe.get("successThreshold", 1))
    failure_threshold = int(probe.get("failureThreshold", 3))
    await trio.sleep(delay)
    successes = failures = 0
    while True:
        ok = await probe_once(probe, **kwargs)  # type: ignore[arg-type]
        if ok:
            successes, failures = successes + 1, 0
            if successes >= success_threshold:
                on_result(True)
        else:
            successes, failures = 0, failures + 1
            if failures >= failure_threshold:
                on_result(False)
        await trio.sleep(period)
