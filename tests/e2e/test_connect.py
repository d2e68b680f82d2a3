"""tp connect from the local cluster's laptop: names, IPs, UDP, refusals, status, quit,
cleanup after a crash, and bad input.

Runs inside the laptop namespace (``tp local-cluster exec``), never in the root one.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._support import laptop_state, tp

pytestmark = [pytest.mark.root, pytest.mark.e2e]


APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
      - name: echo
        image: ghcr.io/telepresenceio/echo-server:latest
        env: [{name: PORT, value: "8080"}]
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: default}
spec:
  selector: {app: hello}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: udpecho, namespace: default, labels: {app: udpecho}}
spec:
  containers:
  - name: echo
    image: python:3.11-slim
    command:
    - python3
    - -c
    - |
      import socket
      s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
      s.bind(("0.0.0.0", 9999))
      while True:
          data, peer = s.recvfrom(65535)
          s.sendto(b"echo:" + data, peer)
    ports: [{containerPort: 9999, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: udpecho, namespace: default}
spec:
  selector: {app: udpecho}
  ports: [{port: 5300, targetPort: 9999, protocol: UDP}]
"""

UDP_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(b"hi", (sys.argv[1], int(sys.argv[2])))
print(s.recvfrom(100)[0].decode())
"""


@pytest.fixture(scope="module")
def before(cluster: Any) -> tuple[str, str, str]:
    cluster.kubectl_ok("apply", "-f", "-", input=APP)
    cluster.kubectl_ok("rollout", "status", "deployment/hello", "--timeout=90s")
    cluster.kubectl_ok("wait", "--for=condition=Ready", "pod/udpecho", "--timeout=60s")
    return laptop_state(cluster)


@pytest.fixture(scope="module")
def connected(cluster: Any, before: tuple[str, str, str]) -> Any:
    connect = tp(cluster, "connect", "-n", "default")
    assert connect.returncode == 0, connect.stderr
    assert "Connected to context" in connect.stdout
    try:
        yield cluster
    finally:
        quit_ = tp(cluster, "quit")
        assert quit_.returncode == 0, quit_.stderr
        # tp quit leaves no TUN, route or resolv.conf change behind.
        assert laptop_state(cluster) == before


def curl(cluster: Any, url: str) -> str:
    result = cluster.laptop("curl", "-sS", "--max-time", "10", url)
    assert result.returncode == 0, f"curl {url}: {result.stderr}"
    return str(result.stdout)


def test_services_and_pods_answer_by_name_and_ip(connected: Any) -> None:
    service = json.loads(connected.kubectl_ok("get", "svc", "hello", "-o", "json"))
    pods = json.loads(connected.kubectl_ok("get", "pods", "-l", "app=hello", "-o", "json"))["items"]
    urls = [
        "http://hello/",
        "http://hello.default/",
        "http://hello.default.svc.cluster.local/",
        f"http://{service['spec']['clusterIP']}/",
        f"http://{pods[0]['status']['podIP']}:8080/",
    ]
    for url in urls:
        assert curl(connected, url).startswith("Request served by hello-")


def test_udp_service_by_name(connected: Any) -> None:
    result = connected.laptop("python3", "-c", UDP_CLIENT, "udpecho", "5300")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "echo:hi"


def test_names_outside_the_cluster_use_the_previous_resolver(connected: Any) -> None:
    result = connected.laptop("getent", "hosts", "laptop.test")
    assert result.returncode == 0 and "198.18.0.2" in result.stdout


def test_refused_port_is_refused_at_once(connected: Any) -> None:
    result = connected.laptop("curl", "-sS", "--max-time", "5", "http://hello.default:81/")
    assert result.returncode == 7  # couldn't connect (RST), not 28 (timed out)


def test_status_text_and_json(connected: Any) -> None:
    text = tp(connected, "status")
    assert text.returncode == 0
    assert "Status            : Connected" in text.stdout
    assert "- 10.96.0.0/12" in text.stdout
    data = json.loads(tp(connected, "status", "-o", "json").stdout)
    assert data["engine"]["namespace"] == "default"
    assert data["network"]["tun"]


def test_second_connect_is_a_no_op_that_says_so(connected: Any) -> None:
    again = tp(connected, "connect", "-n", "default")
    assert again.returncode == 0
    assert "Already connected" in again.stdout


def test_nothing_listens_on_a_wildcard_address(connected: Any) -> None:
    sockets = connected.laptop("ss", "-Hlntup").stdout
    for line in sockets.splitlines():
        local = line.split()[4]
        if "python" in line or "tp" in line:
            assert not local.startswith(("0.0.0.0:", "*:", "[::]:")), line


LONG_CONNECTION = """
import socket, sys, time
s = socket.create_connection(("hello", 80), timeout=30)
s.sendall(b"GET / HTTP/1.1\\r\\nHost: hello\\r\\n\\r\\n")
assert s.recv(12).startswith(b"HTTP/1.1 200")
print("open", flush=True)
sys.stdin.readline()  # the test deletes the manager pod meanwhile
try:
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: hello\\r\\n\\r\\n")
    print("answer" if s.recv(12) else "eof")
except ConnectionResetError:
    print("reset")
"""


def test_manager_pod_deleted_reconnects_and_resets_old_connections(connected: Any) -> None:
    import subprocess

    old = subprocess.Popen(
        [
            *connected.tp_argv,
            "local-cluster",
            "exec",
            "--name",
            connected.name,
            "--",
            "python3",
            "-c",
            LONG_CONNECTION,
        ],
        env=connected.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert old.stdout is not None and old.stdout.readline().strip() == "open"
        connected.kubectl_ok(
            "delete",
            "pod",
            "-n",
            "tpengine",
            "-l",
            "app.kubernetes.io/name=traffic-manager",
            "--wait=false",
        )
        deadline = time.monotonic() + 10
        while True:
            result = connected.laptop("curl", "-s", "--max-time", "1", "http://hello/")
            if result.stdout.startswith("Request served by"):
                break
            assert time.monotonic() < deadline, (
                "no new connection within 10 s of the manager's deletion"
            )
            time.sleep(0.2)
        out, _ = old.communicate("\n", timeout=20)
        assert out.strip() == "reset"
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()


def test_a_killed_engine_leaves_nothing_within_5_seconds(
    connected: Any, before: tuple[str, str, str]
) -> None:
    status = json.loads(tp(connected, "status", "-o", "json").stdout)
    assert status["engine"]["status"] == "Connected"
    connected.laptop("kill", "-9", str(status["engine"]["pid"]))
    deadline = time.monotonic() + 5
    while laptop_state(connected) != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert laptop_state(connected) == before
    reconnect = tp(connected, "connect", "-n", "default")  # the module's other tests go on
    assert reconnect.returncode == 0, reconnect.stderr


STATEFUL = """
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: default}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: echo
        image: jmalloc/echo-server
        ports: [{name: http, containerPort: 8080}]
"""


def test_headless_statefulset_pods_by_name(connected: Any) -> None:
    connected.kubectl_ok("apply", "-f", "-", input=STATEFUL)
    connected.kubectl_ok("rollout", "status", "statefulset/db", "--timeout=90s")
    assert curl(connected, "http://db-1.db:8080/").startswith("Request served by db-1")
    assert curl(connected, "http://db-0.db.default.svc.cluster.local:8080/").startswith(
        "Request served by db-0"
    )


def test_loglevel_raises_the_engine_log_for_a_while(connected: Any) -> None:
    log = Path(connected.env["HOME"]) / ".cache" / "tpengine" / "logs" / "engine.log"
    raised = tp(connected, "loglevel", "debug", "-d", "1h")
    assert raised.returncode == 0, raised.stderr
    assert raised.stdout.strip() == "Engine log level set to debug for 1h"
    try:
        start = log.stat().st_size
        refused = connected.laptop("curl", "-sS", "--max-time", "5", "http://hello:81/")
        assert refused.returncode != 0
        with open(log) as f:
            f.seek(start)
            assert re.search(r" DEBUG dial [\d.]+:81 rejected", f.read())
    finally:
        back = tp(connected, "loglevel", "info", "-o", "json")
        assert json.loads(back.stdout)["level"] == "info"
    bad = tp(connected, "loglevel", "chatty")
    assert bad.returncode != 0
    assert "unknown log level 'chatty'" in bad.stderr
