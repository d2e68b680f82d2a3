"""The traffic-manager's RBAC is least privilege: every call it made (as the local
cluster's audit log records them, by service account) is allowed by its roles, and its
roles allow nothing it does not use."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e._support import TP
from tpengine.kube.manifests import manager_manifests

pytestmark = [pytest.mark.root, pytest.mark.e2e]

USER = "system:serviceaccount:tpengine:traffic-manager"


def _verb_and_resource(entry: dict[str, Any]) -> tuple[str, str]:
    resource = entry.get("resource") or ""
    if not resource:  # a resource the local cluster does not serve (nodes): from the path
        resource = entry["path"].split("?")[0].rstrip("/").split("/")[-1]
    verb = entry["verb"]
    if verb == "get" and not entry.get("name"):
        verb = "list"
    return verb, resource


def test_manager_uses_exactly_what_its_roles_allow(cluster: Any) -> None:
    connect = cluster.laptop(*TP, "connect", "-n", "default", timeout=120)
    assert connect.returncode == 0, connect.stderr
    cluster.laptop(*TP, "quit")
    calls = set()
    for line in (cluster.state_dir / "audit.log").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("user") == USER:
            verb, resource = _verb_and_resource(entry)
            scope = "cluster" if not entry.get("namespace") else entry["namespace"]
            calls.add((verb, resource, scope))
    assert calls, "the manager made no API call as its service account"
    allowed = set()
    for obj in manager_manifests():
        if obj["kind"] not in ("ClusterRole", "Role"):
            continue
        scope = "cluster" if obj["kind"] == "ClusterRole" else obj["metadata"]["namespace"]
        for rule in obj["rules"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    allowed.add((verb, resource, scope))
    for verb, resource, scope in calls:
        assert (verb, resource, scope) in allowed or (verb, resource, "cluster") in allowed, (
            f"the manager called {verb} {resource} in {scope} without a role allowing it"
        )
    unused = {rule for rule in allowed if rule not in calls}
    assert not unused, f"roles allow more than the manager uses: {sorted(unused)}"
