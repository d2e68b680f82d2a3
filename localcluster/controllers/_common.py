"""Helpers shared by the controllers: owner references, pod state, hashing."""

from __future__ import annotations

import hashlib
import json
from typing import Any

Obj = dict[str, Any]
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery/pkg/util/rand.SafeEncodeString


def short_hash(value: Any, length: int = 10) -> str:
    digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:length])


def owner_ref(owner: Obj) -> Obj:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_of(obj: Obj) -> Obj | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def owned_by(obj: Obj, owner: Obj) -> bool:
    ref = controller_of(obj)
    return ref is not None and ref.get("uid") == owner["metadata"]["uid"]


def is_active(pod: Obj) -> bool:
    """controller.FilterActivePods: not terminating, not Succeeded/Failed."""
    phase = pod.get("status", {}).get("phase")
    return not pod["metadata"].get("deletionTimestamp") and phase not in ("Succeeded", "Failed")


def is_ready(pod: Obj) -> bool:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def condition(kind: str, status: bool, reason: str, message: str, now: str, old: list[Obj]) -> Obj:
    """A condition keeping lastTransitionTime while its status does not change."""
    text = "True" if status else "False"
    previous = next((c for c in old if c.get("type") == kind), None)
    transition = now
    if previous and previous.get("status") == text:
        transition = previous.get("lastTransitionTime", now)
    update = now
    if previous and previous.get("status") == text and previous.get("reason") == reason:
        update = previous.get("lastUpdateTime", now)
    return {
        "type": kind,
        "status": text,
        "lastUpdateTime": update,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    }


def resolve_int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = str(value or "0")
    if text.endswith("%"):
        try:
            pct = int(text[:-1])
        except ValueError:
            return 0
        scaled = pct * total
        return -(-scaled // 100) if round_up else scaled // 100
    try:
        return int(text)
    except ValueError:
        return 0


async def record_event(
    store: Any, obj: Obj, reason: str, message: str, component: str, kind: str = "Normal"
) -> None:
    """An Event about ``obj``, as the controllers' event recorders write them."""
    from ..apiserver._errors import StoreError
    from ..apiserver._store import now_rfc3339

    meta = obj["metadata"]
    now = now_rfc3339()
    event = {
        "metadata": {"generateName": f"{meta['name']}."},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", ""),
            "kind": obj.get("kind", ""),
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        await store.create("events", meta.get("namespace") or "default", event)
    except StoreError:
        pass  # events are best effort, as in a real cluster
