"""Giving replaced pods their app container back when nobody replaces them any more.

``tp replace`` starts a workload's pods without the app container (the webhook leaves it
out and labels the pod ``tpengine.io/replaced``). The engaging client restores the
workload itself on ``tp leave`` and ``tp quit``; this covers the client that cannot: its
laptop crashed or went to sleep, and its session expired here — or this manager
restarted and the client never came back. A labelled pod whose workload has no live
replace engagement is deleted; its controller makes a new one, and the webhook, seeing
no replace, lets the app container in (the template's annotation may still say
"replace": the webhook believes the registry, not the annotation).

After a manager restart the registry is empty until clients re-engage, so nothing is
restored during the first ``grace`` seconds (the session timeout: a live client has
re-engaged by then).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kr8s
import trio

from manager._engage import agent_config
from manager._inject import REPLACED_LABEL
from tpengine.kube.objects import status_code

log = logging.getLogger(__name__)

#: (namespace, workload) -> whether a replace engagement holds it now.
IsReplaced = Callable[[str, str], bool]


def orphaned(pods: list[dict[str, Any]], is_replaced: IsReplaced) -> list[dict[str, Any]]:
    """The replaced pods no live replace engagement holds (terminating ones excluded)."""
    found = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        config = agent_config(meta)
        if config is None:
            continue  # not an agent's pod after all: not ours to delete
        if not is_replaced(str(meta.get("namespace", "")), str(config["workload"])):
            found.append(pod)
    return found


async def restore_replaced(
    api: Any,
    is_replaced: IsReplaced,
    wake: Callable[[], trio.Event],
    *,
    grace: float,
    interval: float = 30.0,
) -> None:
    """Until cancelled: after ``grace`` seconds, and then whenever ``wake()``'s event is
    set (an engagement ended) or every ``interval`` seconds, delete orphaned replaced pods."""
    await trio.sleep(grace)
    while True:
        try:
            await _restore_once(api, is_replaced)
        except (kr8s.ServerError, OSError) as exc:
            log.warning("cannot restore replaced pods now: %s", exc)
        with trio.move_on_after(interval):
            await wake().wait()


def unreplaced(pods: list[dict[str, Any]], workload: str) -> list[dict[str, Any]]:
    """Pods of ``workload`` whose template asks for a replace but that still run the app
    (made while no replace was live: restored above, or during a manager restart)."""
    found = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp") or REPLACED_LABEL in (meta.get("labels") or {}):
            continue
        config = agent_config(meta)
        if config is not None and config["workload"] == workload and config.get("replace"):
            found.append(pod)
    return found


async def enforce_replace(api: Any, namespace: str, workload: str) -> None:
    """A replace engagement is live (again): pods of the workload that still run the app
    container are deleted, so their successors come without it. Errors are logged: the
    engagement stands either way."""
    try:
        async with api.call_api("GET", version="v1", namespace=namespace, url="pods") as response:
            pods = response.json().get("items", [])
        for pod in unreplaced(pods, workload):
            log.info(
                "replace of %s/%s is live: deleting pod %s that still runs the app",
                namespace,
                workload,
                pod["metadata"]["name"],
            )
            await _delete(api, namespace, pod["metadata"]["name"])
    except (kr8s.ServerError, OSError) as exc:
        log.warning("cannot take the app out of %s/%s now: %s", namespace, workload, exc)


async def _delete(api: Any, namespace: str, name: str) -> None:
    try:
        async with api.call_api("DELETE", version="v1", namespace=namespace, url=f"pods/{name}"):
            pass
    except kr8s.ServerError as exc:
        if status_code(exc) != 404:  # gone already: what we wanted
            raise


async def _restore_once(api: Any, is_replaced: IsReplaced) -> None:
    async with api.call_api(
        "GET", version="v1", url="pods", params={"labelSelector": REPLACED_LABEL}
    ) as response:
        pods = response.json().get("items", [])
    for pod in orphaned(pods, is_replaced):
        meta = pod["metadata"]
        log.info(
            "no replace holds pod %s/%s any more: deleting it for one with its app container",
            meta["namespace"],
            meta["name"],
        )
        await _delete(api, meta["namespace"], meta["name"])
