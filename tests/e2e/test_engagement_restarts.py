"""Engagements outlive the pods that carry them, and die with the client that made them.

Susan intercepts ``rise`` with her header. The manager pod is deleted: the engine arrives
at the new manager with a new session and re-sends her engagement; the agents reconnect;
her requests reach the laptop again. The engaged pod is deleted: its successor's agent
arrives and gets the engagement. A client that goes silent (its engine stopped) loses
its engagements when the manager's session timeout passes (``TP_SESSION_TIMEOUT``, set
short on the manager's Deployment here), and gets them back when it wakes up; a client
that quits takes them with it. Every check is made from a pod, through the Service.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e._support import laptop_handler, manager_env

pytestmark = [pytest.mark.root, pytest.mark.e2e]

TP = (sys.executable, "-c", "from tpengine.cli import main; main()")
SESSION_TIMEOUT = 15  # the engine says `remain` every 10 s: a live client never expires
LAPTOP = "laptop 8081 GET / user=susan"  # tests/e2e/dual_server.py on the laptop
CLUSTER = "Request served by rise-"

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: rise, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: rise}}
  template:
    metadata: {labels: {app: rise}}
    spec:
      containers:
      - name: rise
        image: ghcr.io/telepresenceio/echo-server:latest
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: rise, namespace: default}
spec:
  selector: {app: rise}
  ports: [{name: http, port: 80, targetPort: http}]
"""

# Run inside a pod: ask as Susan until the answer starts with argv[1]; print how long it
# took (or the last answer, exit 1, after argv[2] seconds).
UNTIL = """
import sys, time, urllib.request
wanted, limit = sys.argv[1], float(sys.argv[2])
start = time.monotonic()
last = ""
while time.monotonic() - start < limit:
    try:
        request = urllib.request.Request("http://rise.default/", headers={"x-user": "susan"})
        last = urllib.request.urlopen(request, timeout=3).read().decode().splitlines()[0]
    except Exception as exc:
        last = repr(exc)
    if last.startswith(wanted):
        print(f"{time.monotonic() - start:.1f}")
        sys.exit(0)
    time.sleep(0.2)
print(last)
sys.exit(1)
"""


def tp(cluster: Any, *args: str) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = cluster.laptop(*TP, *args)
    return result


def rise_pod(cluster: Any) -> str:
    pods = json.loads(cluster.kubectl_ok("get", "pods", "-l", "app=rise", "-o", "json"))["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return str(live[0]["metadata"]["name"])


def start_asking(cluster: Any, wanted: str, *, within: float) -> subprocess.Popen[str]:
    """Start asking as Susan, from the engaged workload's pod, until ``wanted`` answers."""
    pid = cluster.pod_pid1("default", rise_pod(cluster))
    argv = ["python3", "-c", UNTIL, wanted, str(within)]
    return subprocess.Popen(
        ["nsenter", "-t", str(pid), "-n", "-m", "-u", "-p", "--", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def answered(asking: subprocess.Popen[str], wanted: str, within: float) -> float:
    """Seconds until ``wanted`` answered (fails the test if it never did)."""
    out, _ = asking.communicate(timeout=within + 30)
    assert asking.returncode == 0, f"not {wanted!r} within {within} s: {out}"
    took = float(out.strip())
    print(f"Susan reached {wanted!r} after {took} s")  # shown with -s: the figures
    return took


def susan_reaches(cluster: Any, wanted: str, *, within: float) -> float:
    return answered(start_asking(cluster, wanted, within=within), wanted, within)


def to_pod_answers(cluster: Any) -> str:
    """Who answers the laptop's localhost:8080 (``--to-pod 8080``): the pod's own app."""
    result = cluster.laptop("curl", "-sS", "--max-time", "10", "http://127.0.0.1:8080/")
    assert result.returncode == 0, result.stderr
    return str(result.stdout).splitlines()[0]


def listed(cluster: Any) -> list[dict[str, Any]]:
    result = tp(cluster, "list", "-o", "json")
    assert result.returncode == 0, result.stderr
    engagements = list(json.loads(result.stdout)["engagements"])
    print("tp list:", [(e["name"], e["state"], e.get("message")) for e in engagements])
    return engagements


@pytest.fixture(scope="module")
def susan(cluster: Any) -> Iterator[Any]:
    cluster.kubectl_ok("apply", "-f", "-", input=APP)
    timeout_set = False
    with contextlib.ExitStack() as stack:  # undone in reverse: quit, handler, app, setting
        stack.callback(lambda: timeout_set and manager_env(cluster, "TP_SESSION_TIMEOUT-"))
        stack.callback(cluster.kubectl, "delete", "-f", "-", input=APP)
        stack.enter_context(laptop_handler(cluster, "laptop", "127.0.0.1:8081"))
        stack.callback(tp, cluster, "quit")
        cluster.kubectl_ok("rollout", "status", "deployment/rise", "--timeout=90s")
        connected = tp(cluster, "connect", "-n", "default")  # installs the manager if needed
        assert connected.returncode == 0, connected.stderr
        manager_env(cluster, f"TP_SESSION_TIMEOUT={SESSION_TIMEOUT}")
        timeout_set = True
        engaged = tp(
            cluster,
            "intercept",
            "rise",
            "--port",
            "8081:http",
            "--http-header",
            "x-user=susan",
            "--to-pod",
            "8080",  # the laptop's localhost:8080 reaches the engaged pod's app
        )
        assert engaged.returncode == 0, engaged.stderr
        cluster.kubectl_ok("rollout", "status", "deployment/rise", "--timeout=90s")
        susan_reaches(cluster, LAPTOP, within=10)
        yield cluster


def test_engagement_survives_a_manager_restart(susan: Any) -> None:
    susan.kubectl_ok(
        "delete", "pod", "-n", "tpengine", "-l", "app.kubernetes.io/name=traffic-manager"
    )
    # From the deletion on: a new manager pod starts, agents and the engine reconnect,
    # the engine re-sends Susan's engagement; within 10 s her requests reach her again.
    asking = start_asking(susan, LAPTOP, within=10)
    # Meanwhile tp list still shows it (WAITING until the new manager has it again).
    [engagement] = listed(susan)
    assert engagement["name"] == "rise" and engagement["state"] in ("WAITING", "ACTIVE")
    answered(asking, LAPTOP, 10)
    [engagement] = listed(susan)
    assert engagement["state"] == "ACTIVE", engagement
    assert to_pod_answers(susan) == f"Request served by {rise_pod(susan)}"


def test_engagement_survives_its_pods_restart(susan: Any) -> None:
    old = rise_pod(susan)
    susan.kubectl_ok("delete", "pod", old, "--wait=false")
    susan.kubectl_ok("wait", "--for=delete", f"pod/{old}", "--timeout=60s")
    susan.kubectl_ok("rollout", "status", "deployment/rise", "--timeout=60s")
    new = rise_pod(susan)
    assert new != old
    susan_reaches(susan, LAPTOP, within=10)
    # --to-pod follows the engagement to the new pod.
    assert to_pod_answers(susan) == f"Request served by {new}"


def test_tp_list_shows_the_engagement_waiting_while_no_pod_carries_it(susan: Any) -> None:
    susan.kubectl_ok("scale", "deployment/rise", "--replicas=0")
    try:
        susan.kubectl_ok("wait", "--for=delete", "pod", "-l", "app=rise", "--timeout=60s")
        [engagement] = listed(susan)
        assert (engagement["name"], engagement["state"]) == ("rise", "WAITING")
        assert engagement["message"] == "waiting for the traffic-agent to arrive"
    finally:
        susan.kubectl_ok("scale", "deployment/rise", "--replicas=1")
    susan.kubectl_ok("rollout", "status", "deployment/rise", "--timeout=60s")
    susan_reaches(susan, LAPTOP, within=10)
    [engagement] = listed(susan)
    assert engagement["state"] == "ACTIVE", engagement


def test_a_silent_clients_engagements_are_removed(susan: Any) -> None:
    status = json.loads(tp(susan, "status", "-o", "json").stdout)
    engine = int(status["engine"]["pid"])
    os.kill(engine, signal.SIGSTOP)
    try:
        # The manager hears nothing for its session timeout, ends the session and its
        # engagement: the agent sends Susan to the app again.
        susan_reaches(susan, CLUSTER, within=SESSION_TIMEOUT + 20)
    finally:
        os.kill(engine, signal.SIGCONT)
    # Awake again, the engine arrives anew and re-sends what it had engaged.
    susan_reaches(susan, LAPTOP, within=SESSION_TIMEOUT + 10)


def test_a_client_that_quits_takes_its_engagements_along(susan: Any) -> None:
    assert tp(susan, "quit").returncode == 0
    susan_reaches(susan, CLUSTER, within=10)
