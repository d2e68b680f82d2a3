"""tp intercept with an HTTP header filter, end to end in the local cluster: the agent is
injected by the manager's webhook, Susan's requests reach the laptop's handler (from the
laptop and from another pod, through the Service), everyone else's the cluster's copy."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e._support import curl, laptop_handler, listed_state, live_pods, rows, tp

pytestmark = [pytest.mark.root, pytest.mark.e2e]


APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: ghcr.io/telepresenceio/echo-server:latest
        env:
        - {name: GREETING, value: hello from the cluster}
        - {name: COLOUR, valueFrom: {configMapKeyRef: {name: web-config, key: colour}}}
        - {name: TOKEN, valueFrom: {secretKeyRef: {name: web-secret, key: token}}}
        - {name: MY_POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: BANNER, value: "$(GREETING) in $(COLOUR)"}
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config, namespace: default}
data: {colour: teal}
---
apiVersion: v1
kind: Secret
metadata: {name: web-secret, namespace: default}
stringData: {token: s3cr3t}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""

FROM_POD = """
import urllib.request
for user in ("susan", "bob"):
    request = urllib.request.Request("http://web.default/", headers={"x-user": user})
    print(user, urllib.request.urlopen(request, timeout=10).read().decode().splitlines()[0])
"""


def saw_request(handler: subprocess.Popen[str], wanted: str, timeout: float = 15) -> bool:
    """Whether the handler printed ``wanted`` within ``timeout`` (reads its stdout pipe)."""
    import os
    import select
    import time

    assert handler.stdout is not None
    fd = handler.stdout.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buffer += chunk
        if wanted.encode() in buffer.splitlines():
            return True
    return False


@pytest.fixture(scope="module")
def engaged(cluster: Any) -> Iterator[Any]:
    cluster.kubectl_ok("apply", "-f", "-", input=APP)
    try:
        cluster.kubectl_ok("rollout", "status", "deployment/web", "--timeout=90s")
        with laptop_handler(cluster, "laptop", "127.0.0.1:8080") as handler:
            connect = tp(cluster, "connect", "-n", "default")
            assert connect.returncode == 0, connect.stderr
            cluster.handler = handler
            try:
                yield cluster
            finally:
                tp(cluster, "quit")
    finally:
        cluster.kubectl("delete", "-f", "-", input=APP)


LAPTOP = "laptop 8080 GET / user="


def test_header_filtered_intercept(engaged: Any, tmp_path: Any) -> None:
    env_file = tmp_path / "web.env"
    result = tp(
        engaged,
        "intercept",
        "web",
        "--port",
        "8080:http",
        "--http-header",
        "x-user=susan",
        "--env-file",
        str(env_file),
        "--env-syntax",
        "sh",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Using Deployment web"
    assert ("Intercept name", "web") in rows("\n".join(lines))
    assert ("State", "ACTIVE") in rows("\n".join(lines))
    assert ("Intercepting", "HTTP requests with header 'x-user: susan'") in rows("\n".join(lines))
    assert "export GREETING='hello from the cluster'" in env_file.read_text()
    status = tp(engaged, "status").stdout
    assert re.search(r"^  Engagements +: 1 total$", status, re.M), status
    assert "    web: intercept in default" in status.splitlines()

    # From the laptop: Susan's requests reach the laptop, everyone else's the cluster.
    engaged.kubectl_ok("rollout", "status", "deployment/web", "--timeout=90s")
    assert curl(engaged, "-H", "x-user: susan", "http://web/") == LAPTOP + "susan body=0"
    assert curl(engaged, "http://web/").startswith("Request served by web-")
    assert curl(engaged, "-H", "x-user: bob", "http://web/").startswith("Request served by web-")

    # From inside the cluster, through the Service: the same split.
    pod = json.loads(engaged.kubectl_ok("get", "pods", "-l", "app=web", "-o", "json"))["items"][0]
    from_pod = engaged.kubectl_ok(
        "exec", pod["metadata"]["name"], "-c", "web", "--", "python3", "-c", FROM_POD
    )
    assert f"susan {LAPTOP}susan body=0" in from_pod
    assert "bob Request served by web-" in from_pod

    listed = tp(engaged, "list")
    assert listed_state(listed.stdout, "deployment web") == "intercepted"
    assert json.loads(tp(engaged, "list", "-o", "json").stdout)["engagements"][0]["name"] == "web"

    # An unfiltered intercept of the same port conflicts, and says who holds it.
    conflict = tp(engaged, "intercept", "web-all", "--workload", "web", "--port", "8081:http")
    assert conflict.returncode != 0
    assert "already intercepted by" in conflict.stderr

    # A refused replace changes nothing: the same pods keep their app container.
    pods_before = live_pods(engaged, "web")
    refused = tp(engaged, "replace", "web-r", "--workload", "web", "--port", "8081:http")
    assert refused.returncode != 0
    assert "intercept 'web' by" in refused.stderr, refused.stderr
    assert live_pods(engaged, "web") == pods_before
    # Another kind under an existing name is refused too (leave it first).
    renamed = tp(engaged, "wiretap", "web", "--port", "8081:http")
    assert renamed.returncode != 0
    assert "'web' is already a intercept of web; tp leave web first" in renamed.stderr

    assert tp(engaged, "leave", "web").returncode == 0
    assert curl(engaged, "-H", "x-user: susan", "http://web/").startswith("Request served by web-")
    after = tp(engaged, "list").stdout
    assert (
        listed_state(after, "deployment web") == "ready to engage (traffic-agent already installed)"
    )


def test_bad_engagements_are_one_clear_line(engaged: Any) -> None:
    for args, message in (
        (["intercept", "nosuch", "--port", "8080"], "no workload named 'nosuch'"),
        (["intercept", "web", "--port", "8080:metrics"], "has no port 'metrics'"),
        (["intercept", "web", "--http-header", "nonsense"], "expected NAME=VALUE"),
    ):
        result = tp(engaged, *args)
        assert result.returncode != 0, args
        assert message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) <= 2


def test_wiretap_copies_while_the_cluster_answers(engaged: Any) -> None:
    result = tp(engaged, "wiretap", "web", "--port", "8080:http")
    assert result.returncode == 0, result.stderr
    assert ("Wiretap name", "web") in rows(result.stdout)
    try:
        # The caller gets the cluster's answer…
        assert curl(engaged, "http://web/wiretapped").startswith("Request served by web-")
        # …and the laptop's handler saw a copy of the request.
        assert saw_request(engaged.handler, "got GET /wiretapped")
    finally:
        tp(engaged, "leave", "web")


def test_ingest_borrows_the_environment_and_moves_no_traffic(engaged: Any, tmp_path: Any) -> None:
    env_json = tmp_path / "web.json"
    result = tp(engaged, "ingest", "web", "--env-json", str(env_json))
    assert result.returncode == 0, result.stderr
    assert ("Ingest name", "web") in rows(result.stdout)
    try:
        env = json.loads(env_json.read_text())
        assert env["GREETING"] == "hello from the cluster"
        assert env["COLOUR"] == "teal" and env["TOKEN"] == "s3cr3t"
        assert env["BANNER"] == "hello from the cluster in teal"
        assert env["MY_POD"].startswith("web-")
        assert env["TELEPRESENCE_CONTAINER"] == "web"
        assert "PATH" not in env and "HOME" not in env and "HOSTNAME" not in env
        assert curl(engaged, "-H", "x-user: susan", "http://web/").startswith(
            "Request served by web-"
        )
    finally:
        tp(engaged, "leave", "web")


def test_replace_removes_the_container_until_leave(engaged: Any) -> None:
    result = tp(engaged, "replace", "web", "--port", "8080:http")
    assert result.returncode == 0, result.stderr
    assert ("Replace name", "web") in rows(result.stdout)
    try:
        assert sorted(live_pods(engaged, "web").values()) == [["traffic-agent"]]
        assert curl(engaged, "http://web/") == LAPTOP + "- body=0"
    finally:
        left = tp(engaged, "leave", "web")
    assert left.returncode == 0, left.stderr
    assert sorted(live_pods(engaged, "web").values()) == [["traffic-agent", "web"]]
    assert curl(engaged, "http://web/").startswith("Request served by web-")


SIDECAR_APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: side, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: side}}
  template:
    metadata: {labels: {app: side}}
    spec:
      containers:
      - name: app
        image: ghcr.io/telepresenceio/echo-server:latest
        ports: [{name: http, containerPort: 8080}]
      - name: sidecar
        image: python:3.11-slim
        command: [python3, -c, "import http.server as h; h.ThreadingHTTPServer(('127.0.0.1', 9100), type('H', (h.BaseHTTPRequestHandler,), {'do_GET': lambda s: (s.send_response(200), s.end_headers(), s.wfile.write(b'from the sidecar'))})).serve_forever()"]
      - name: udp-sidecar
        image: python:3.11-slim
        command: [python3, -c, "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', 9101)); [s.sendto(b'sidecar got ' + d, a) for d, a in iter(lambda: s.recvfrom(2048), None)]"]
---
apiVersion: v1
kind: Service
metadata: {name: side, namespace: default}
spec:
  selector: {app: side}
  ports: [{name: http, port: 80, targetPort: http}]
"""


UDP_ASK = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
for _ in range(3):  # UDP: the first datagram may race the flow's setup; ask again
    s.sendto(b"ping", ("127.0.0.1", 9101))
    try:
        print(s.recv(2048).decode())
        break
    except TimeoutError:
        pass
"""


def test_to_pod_reaches_sidecars_on_the_pods_localhost_tcp_and_udp(engaged: Any) -> None:
    engaged.kubectl_ok("apply", "-f", "-", input=SIDECAR_APP)
    try:
        engaged.kubectl_ok("rollout", "status", "deployment/side", "--timeout=90s")
        result = tp(
            engaged, "intercept", "side", "--port", "8080:http",
            "--to-pod", "9100", "--to-pod", "9101/UDP",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        try:
            assert curl(engaged, "http://127.0.0.1:9100/") == "from the sidecar"
            udp = engaged.laptop("python3", "-c", UDP_ASK)
            assert udp.stdout.strip() == "sidecar got ping", udp.stderr
        finally:
            assert tp(engaged, "leave", "side").returncode == 0
        refused = engaged.laptop("curl", "-sS", "--max-time", "5", "http://127.0.0.1:9100/")
        assert refused.returncode == 7  # the forward ends with the engagement
    finally:
        engaged.kubectl("delete", "-f", "-", input=SIDECAR_APP)


def test_a_local_port_nothing_listens_on_is_a_502_and_tp_list_says_why(engaged: Any) -> None:
    result = tp(engaged, "intercept", "web", "--port", "8099:http")
    assert result.returncode == 0, result.stderr
    try:
        answer = engaged.laptop(
            "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "http://web/"
        )
        assert answer.stdout.strip() == "502"
        listed = tp(engaged, "list").stdout
        assert "Message" in listed and "8099" in listed, listed
    finally:
        tp(engaged, "leave", "web")
