"""Pods as processes: init order, restarts, refusals, unknown images, hostNetwork, grace."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

pytestmark = [pytest.mark.root, pytest.mark.e2e]

NS = "e2e-life"

PODS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: init, namespace: {NS}}}
spec:
  initContainers:
  - {{name: one, image: busybox, command: [sh, -c, "echo one > /work/order"], volumeMounts: [{{name: w, mountPath: /work}}]}}
  - {{name: two, image: busybox, command: [sh, -c, "echo two >> /work/order"], volumeMounts: [{{name: w, mountPath: /work}}]}}
  containers:
  - {{name: main, image: busybox, command: [sh, -c, "cat /work/order; exec sleep 3600"], volumeMounts: [{{name: w, mountPath: /work}}]}}
  volumes: [{{name: w, emptyDir: {{}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: crash, namespace: {NS}}}
spec:
  containers:
  - {{name: c, image: busybox, command: [sh, -c, "echo run $$; exit 3"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: hostpath, namespace: {NS}}}
spec:
  containers: [{{name: c, image: busybox, command: [sleep, "10"]}}]
  volumes: [{{name: h, hostPath: {{path: /etc}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: privileged, namespace: {NS}}}
spec:
  containers: [{{name: c, image: busybox, command: [sleep, "10"], securityContext: {{privileged: true}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: nginx, namespace: {NS}}}
spec:
  containers: [{{name: c, image: "nginx:1.27"}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: hostnet, namespace: {NS}}}
spec:
  hostNetwork: true
  containers: [{{name: c, image: busybox, command: [sleep, "3600"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: graceful, namespace: {NS}}}
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - name: c
    image: busybox
    command: [sh, -c, "trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.1; done"]
---
apiVersion: v1
kind: Pod
metadata: {{name: slow, namespace: {NS}}}
spec:
  containers:
  - name: c
    image: busybox
    command: [sh, -c, "sleep 2; touch /tmp/started; exec sleep 3600"]
    startupProbe: {{exec: {{command: [test, -f, /tmp/started]}}, periodSeconds: 1, failureThreshold: 10}}
---
apiVersion: v1
kind: Pod
metadata: {{name: done, namespace: {NS}}}
spec:
  restartPolicy: Never
  containers: [{{name: c, image: busybox, command: [sh, -c, "echo finished; exit 0"]}}]
"""


@pytest.fixture(scope="module")
def life(cluster: Any) -> Any:
    cluster.kubectl_ok("apply", "-f", "-", input=PODS)
    cluster.kubectl_ok(
        "wait",
        "-n",
        NS,
        "--for=condition=Ready",
        "pod/init",
        "pod/hostnet",
        "pod/graceful",
        "--timeout=60s",
    )
    return cluster


def _status(cluster: Any, name: str) -> dict:
    return json.loads(cluster.kubectl_ok("get", "pod", "-n", NS, name, "-o", "json"))["status"]


def _eventually(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_init_containers_run_in_order_before_the_containers(life: Any) -> None:
    assert life.kubectl_ok("logs", "-n", NS, "init", "-c", "main") == "one\ntwo\n"
    status = _status(life, "init")
    assert [s["state"]["terminated"]["reason"] for s in status["initContainerStatuses"]] == [
        "Completed",
        "Completed",
    ]


def test_a_failing_container_is_restarted_with_back_off(life: Any) -> None:
    status = _eventually(
        lambda: (s := _status(life, "crash"))["containerStatuses"][0]["restartCount"] >= 2 and s
    )
    container = status["containerStatuses"][0]
    assert container["lastState"]["terminated"]["exitCode"] == 3
    previous = life.kubectl_ok("logs", "-n", NS, "crash", "--previous")
    assert previous.startswith("run ")


@pytest.mark.parametrize(
    ("pod", "reason", "words"),
    [
        ("hostpath", "HostPathNotSupported", "hostPath"),
        ("privileged", "PrivilegedNotSupported", "privileged"),
    ],
)
def test_refused_pods_say_why(life: Any, pod: str, reason: str, words: str) -> None:
    status = _eventually(lambda: (s := _status(life, pod)).get("phase") == "Failed" and s)
    assert status["reason"] == reason
    assert words in status["message"] and "not supported" in status["message"]


def test_an_image_without_a_command_fails_with_a_reason(life: Any) -> None:
    status = _eventually(lambda: (s := _status(life, "nginx")).get("phase") == "Failed" and s)
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ErrImagePull"
    assert "nginx:1.27" in waiting["message"]


def test_host_network_pods_use_the_node_namespace(life: Any) -> None:
    assert _status(life, "hostnet")["podIP"] == "198.18.0.1"
    addrs = life.kubectl_ok("exec", "-n", NS, "hostnet", "--", "ip", "-o", "-4", "addr")
    assert "198.18.0.1/30" in addrs


def test_a_completed_pod_succeeds(life: Any) -> None:
    status = _eventually(lambda: (s := _status(life, "done")).get("phase") == "Succeeded" and s)
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert life.kubectl_ok("logs", "-n", NS, "done") == "finished\n"


def test_delete_sends_sigterm_and_honours_the_grace_period(life: Any) -> None:
    pid1 = life.pod_pid1(NS, "graceful")
    started = time.monotonic()
    life.kubectl_ok("delete", "-n", NS, "pod/graceful", "--timeout=60s")
    # The container exits on SIGTERM, well before the 20 s grace period would force it.
    assert time.monotonic() - started < 15
    gone = life.kubectl("get", "-n", NS, "pod/graceful")
    assert "NotFound" in gone.stderr
    assert _eventually(lambda: not __import__("os").path.exists(f"/proc/{pid1}"), 10)


def test_kubelet_events_explain_what_happened(life: Any) -> None:
    events = json.loads(life.kubectl_ok("get", "events", "-n", NS, "-o", "json"))["items"]
    seen = {(e["involvedObject"]["name"], e["reason"]) for e in events}
    assert {("init", "Scheduled"), ("init", "Started"), ("crash", "BackOff")} <= seen
    assert ("hostpath", "HostPathNotSupported") in seen
    assert ("nginx", "Failed") in seen


def test_a_startup_probe_holds_started_and_ready_back(life: Any) -> None:
    life.kubectl_ok("wait", "-n", NS, "--for=condition=Ready", "pod/slow", "--timeout=60s")
    container = _status(life, "slow")["containerStatuses"][0]
    assert container["started"] is True and container["ready"] is True
    started = [
        e
        for e in json.loads(life.kubectl_ok("get", "events", "-n", NS, "-o", "json"))["items"]
        if e["involvedObject"]["name"] == "slow" and e["reason"] == "Started"
    ]
    assert started  # and it was not killed: a single run
    assert container["restartCount"] == 0
