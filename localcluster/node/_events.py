"""Kubelet Events (``kubectl describe pod`` and ``kubectl get events`` show them).

Workers call ``Recorder.emit`` synchronously; a single task writes the Events to the
Store, so a slow write never holds up a pod and a burst is bounded (excess is dropped,
as the kubelet's event broadcaster drops under pressure).
"""

from __future__ import annotations

import datetime
import logging
import secrets
from typing import Any

import trio

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_event(
    pod: dict[str, Any],
    kind: str,
    reason: str,
    message: str,
    *,
    node: str,
    container: str | None = None,
) -> dict[str, Any]:
    meta = pod["metadata"]
    now = _now()
    involved: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": meta["name"],
        "namespace": meta.get("namespace", "default"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }
    if container:
        involved["fieldPath"] = f"spec.containers{{{container}}}"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{secrets.token_hex(8)}",
            "namespace": meta.get("namespace", "default"),
        },
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kubelet",
        "reportingInstance": node,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class Recorder:
    def __init__(self, store: Any, node: str) -> None:
        self.store = store
        self.node = node
        self._send, self._receive = trio.open_memory_channel[dict[str, Any]](1000)

    def emit(
        self,
        pod: dict[str, Any],
        kind: str,
        reason: str,
        message: str,
        container: str | None = None,
    ) -> None:
        event = make_event(pod, kind, reason, message, node=self.node, container=container)
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            log.debug("event dropped: %s %s", reason, message)

    async def run(self) -> None:
        async for event in self._receive:
            try:
                await self.store.create("events", event["metadata"]["namespace"], event)
            except Exception as exc:  # a namespace being deleted, …: events are best effort
                log.debug("event %s not recorded: %s", event["reason"], exc)
