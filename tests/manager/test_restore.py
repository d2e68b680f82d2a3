"""Which replaced pods the manager gives their app container back (manager._restore)."""

from __future__ import annotations

import json
from typing import Any

from manager._restore import orphaned


def pod(name: str, namespace: str, workload: str | None, *, terminating: bool = False) -> Any:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "annotations": {}}
    if workload is not None:
        meta["annotations"]["tpengine.io/agent"] = json.dumps({"workload": workload})
    if terminating:
        meta["deletionTimestamp"] = "2026-11-26T00:00:00Z"
    return {"metadata": meta}


def test_only_pods_whose_workload_nobody_replaces() -> None:
    pods = [
        pod("web-1", "default", "web"),  # Susan still replaces web
        pod("api-1", "default", "api"),  # nobody replaces api any more
        pod("api-2", "default", "api", terminating=True),  # on its way out already
        pod("api-1", "other", "api"),  # another namespace's api, still replaced
        pod("odd-1", "default", None),  # labelled but not an agent's pod: not ours
    ]
    pods.append({"metadata": {"name": "broken", "annotations": {"tpengine.io/agent": "{"}}})
    held = {("default", "web"), ("other", "api")}
    found = orphaned(pods, lambda ns, workload: (ns, workload) in held)
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in found] == [
        ("default", "api-1")
    ]
