"""The traffic-manager's RBAC is least privilege: every call it made (as the local
cluster's audit log records them, by service account) is allowed by its roles, and its
roles allow nothing it does not use."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from tests.e2e._support import TP, live_pods, manager_env, tp
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


STILL = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: still, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: still}}
  template:
    metadata: {labels: {app: still}}
    spec:
      containers:
      - name: still
        image: ghcr.io/telepresenceio/echo-server:latest
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: still, namespace: default}
spec:
  selector: {app: still}
  ports: [{name: http, port: 80, targetPort: http}]
"""
SESSION_TIMEOUT = 12  # the engine says `remain` every 10 s: a live client never expires


def containers_of_still(cluster: Any) -> list[list[str]]:
    return list(live_pods(cluster, "still").values())


def test_a_silent_clients_replaced_pods_get_their_app_back(cluster: Any) -> None:
    """The developer's laptop goes silent while replacing: once the manager ends its
    session, the pods get their app container back (the manager deletes them; the
    webhook, with no replace live, keeps the app). This is the manager's one write."""
    cluster.kubectl_ok("apply", "-f", "-", input=STILL)
    try:
        cluster.kubectl_ok("rollout", "status", "deployment/still", "--timeout=90s")
        assert tp(cluster, "connect", "-n", "default").returncode == 0  # installs the manager
        manager_env(cluster, f"TP_SESSION_TIMEOUT={SESSION_TIMEOUT}")  # the engine reconnects
        replaced = tp(cluster, "replace", "still", "--port", "18085:http", "--mount", "false")
        assert replaced.returncode == 0, replaced.stderr
        assert containers_of_still(cluster) == [["traffic-agent"]]
        engine = int(json.loads(tp(cluster, "status", "-o", "json").stdout)["engine"]["pid"])
        os.kill(engine, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + SESSION_TIMEOUT + 30
            while containers_of_still(cluster) != [["still", "traffic-agent"]]:
                assert time.monotonic() < deadline, containers_of_still(cluster)
                time.sleep(0.5)
        finally:
            os.kill(engine, signal.SIGCONT)
        # Awake again, the engine re-sends its replace; the manager takes the app out again.
        deadline = time.monotonic() + 30
        while containers_of_still(cluster) != [["traffic-agent"]]:
            assert time.monotonic() < deadline, containers_of_still(cluster)
            time.sleep(0.5)
    finally:
        tp(cluster, "quit")
        cluster.kubectl("delete", "-f", "-", input=STILL)
        cluster.kubectl(
            "set", "env", "-n", "tpengine", "deploy/traffic-manager", "TP_SESSION_TIMEOUT-"
        )


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
    # A cluster-wide rule is used by a call in any namespace.
    used = calls | {(verb, resource, "cluster") for verb, resource, _ in calls}
    unused = {rule for rule in allowed if rule not in used}
    assert not unused, f"roles allow more than the manager uses: {sorted(unused)}"
