"""Which replaced pods the manager gives their app container back (manager._restore)."""

from __future__ import annotations

import json
from typing import Any

from manager._restore import orphaned, unreplaced


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


def test_pods_still_running_the_app_under_a_live_replace() -> None:
    def made(name: str, config: dict[str, Any], *, labelled: bool = False) -> Any:
        meta: dict[str, Any] = {
            "name": name,
            "annotations": {"tpengine.io/agent": json.dumps(config)},
        }
        if labelled:
            meta["labels"] = {"tpengine.io/replaced": "true"}
        return {"metadata": meta}

    pods = [
        made("api-1", {"workload": "api", "replace": True}),  # runs the app: out with it
        made("api-2", {"workload": "api", "replace": True}, labelled=True),  # replaced already
        made("api-3", {"workload": "api"}),  # made before the replace was asked for
        made("web-1", {"workload": "web", "replace": True}),  # another workload
        {"metadata": {"name": "plain"}},
    ]
    assert [p["metadata"]["name"] for p in unreplaced(pods, "api")] == ["api-1"]
