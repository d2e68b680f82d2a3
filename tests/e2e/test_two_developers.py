"""Two developers, two laptops, one workload: Susan and Bob each intercept ``duo`` with
their own header at the same time. Each laptop is its own network namespace with its
own engine (the control socket is per netns) and its own local handler on 127.0.0.1:8080.
Susan's requests reach laptop 1, Bob's laptop 2, everyone else's the cluster — from a
pod through the Service and from either laptop; one leaves, the other keeps working."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e._support import laptop_handler, rows

pytestmark = [pytest.mark.root, pytest.mark.e2e]

TP = (sys.executable, "-c", "from tpengine.cli import main; main()")

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: duo, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: duo}}
  template:
    metadata: {labels: {app: duo}}
    spec:
      containers:
      - name: duo
        image: ghcr.io/telepresenceio/echo-server:latest
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: duo, namespace: default}
spec:
  selector: {app: duo}
  ports: [{name: http, port: 80, targetPort: http}]
"""

# Who answers each user, from wherever it runs (a pod, a laptop): one line per user.
ASK = """
import sys, urllib.request
for user in ("susan", "bob", "carol"):
    request = urllib.request.Request(sys.argv[1], headers={"x-user": user})
    print(user, urllib.request.urlopen(request, timeout=10).read().decode().splitlines()[0])
"""

# The first words of each laptop's answers (tests/e2e/dual_server.py, labelled).
SUSAN, BOB = "susans-laptop 8080 GET / user=susan", "bobs-laptop 8080 GET / user=bob"


def tp(cluster: Any, laptop: int, *args: str) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = cluster.laptop(*TP, *args, laptop=laptop)
    return result


def answers(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())


def on_laptop(cluster: Any, laptop: int) -> dict[str, str]:
    return answers(cluster.laptop("python3", "-c", ASK, "http://duo/", laptop=laptop))


def from_pod(cluster: Any) -> dict[str, str]:
    pods = json.loads(cluster.kubectl_ok("get", "pods", "-l", "app=duo", "-o", "json"))["items"]
    pod = next(p for p in pods if not p["metadata"].get("deletionTimestamp"))
    argv = ["python3", "-c", ASK, "http://duo.default/"]
    return answers(cluster.kubectl("exec", pod["metadata"]["name"], "-c", "duo", "--", *argv))


@pytest.fixture(scope="module")
def two_laptops(cluster: Any) -> Iterator[Any]:
    cluster.kubectl_ok("apply", "-f", "-", input=APP)
    try:
        cluster.kubectl_ok("rollout", "status", "deployment/duo", "--timeout=90s")
        with (
            laptop_handler(cluster, "susans-laptop", "127.0.0.1:8080", laptop=1),
            laptop_handler(cluster, "bobs-laptop", "127.0.0.1:8080", laptop=2),
        ):
            try:
                for laptop in (1, 2):
                    connected = tp(cluster, laptop, "connect", "-n", "default")
                    assert connected.returncode == 0, connected.stderr
                yield cluster
            finally:
                for laptop in (1, 2):
                    tp(cluster, laptop, "quit")
    finally:
        cluster.kubectl("delete", "-f", "-", input=APP)


def test_each_laptop_is_its_own_machine(two_laptops: Any) -> None:
    status = json.loads(
        two_laptops.tp("local-cluster", "status", "--name", two_laptops.name, "-o", "json").stdout
    )
    assert [(lt["index"], lt["address"]) for lt in status["laptops"]] == [
        (1, "198.18.0.2"),
        (2, "198.18.0.6"),
    ]
    assert all(lt["pid"] for lt in status["laptops"])
    # Laptop 2's own resolver (laptop 1's is tests/localcluster/e2e/test_laptop.py's).
    named = two_laptops.laptop("getent", "hosts", "laptop.test", laptop=2)
    assert named.stdout.split()[0] == "198.18.0.6"
    # One engine each (the control socket belongs to the netns): two sessions.
    sessions = {
        json.loads(tp(two_laptops, laptop, "status", "-o", "json").stdout)["engine"]["session_id"]
        for laptop in (1, 2)
    }
    assert len(sessions) == 2 and None not in sessions
    # …each with its own logs, as on two machines.
    assert (two_laptops.state_dir / "laptop2-cache" / "tpengine" / "logs" / "engine.log").exists()


def test_two_developers_with_different_headers_share_a_workload(two_laptops: Any) -> None:
    cluster = two_laptops
    susan = tp(
        cluster, 1, "intercept", "duo", "--port", "8080:http", "--http-header", "x-user=susan"
    )
    assert susan.returncode == 0, susan.stderr
    bob = tp(cluster, 2, "intercept", "duo", "--port", "8080:http", "--http-header", "x-user=bob")
    assert bob.returncode == 0, bob.stderr
    assert ("State", "ACTIVE") in rows(bob.stdout)
    # Bob cannot take Susan's requests; the refusal names her machine (each laptop has
    # its own host name).
    taken = tp(
        cluster,
        2,
        "intercept",
        "duo-2",
        "--workload",
        "duo",
        "--port",
        "8080:http",
        "--http-header",
        "x-user=susan",
    )
    assert taken.returncode != 0
    assert f"already intercepted by root@{cluster.name}-laptop ('duo'" in taken.stderr, taken.stderr
    try:
        # From inside the cluster, through the Service, and from each laptop.
        for answered in (from_pod(cluster), on_laptop(cluster, 1), on_laptop(cluster, 2)):
            assert answered["susan"].startswith(SUSAN) and answered["bob"].startswith(BOB)
            assert answered["carol"].startswith("Request served by duo-")

        # Each developer's tp list shows their own engagement (with their filter).
        for laptop, user in ((1, "susan"), (2, "bob")):
            listed = json.loads(tp(cluster, laptop, "list", "-o", "json").stdout)
            [mine] = listed["engagements"]
            assert mine["name"] == "duo" and mine["state"] == "ACTIVE"
            assert mine["filter"]["headers"] == [["x-user", user]]

        # Susan leaves; Bob keeps working, and Susan's requests go to the cluster again.
        assert tp(cluster, 1, "leave", "duo").returncode == 0
        for answered in (from_pod(cluster), on_laptop(cluster, 1)):
            assert answered["bob"].startswith(BOB)
            assert answered["susan"].startswith("Request served by duo-")
        assert json.loads(tp(cluster, 1, "list", "-o", "json").stdout)["engagements"] == []
    finally:
        tp(cluster, 1, "leave", "duo")
        tp(cluster, 2, "leave", "duo")
    assert on_laptop(cluster, 2)["bob"].startswith("Request served by duo-")
