"""The scenarios of the engagements reference (``../shared/reference/engagements-cli.md``),
each with its own manifests, end to end in the local cluster: two ports by name,
re-intercepting with another port, ``--address``, two services selecting one workload
(``--service``), a headless StatefulSet with a numeric port, a service-less workload via
``telepresence.io/inject-container-ports``, per-request routing on one keep-alive
HTTP/1.1 connection (pipelined, chunked) and per-stream on one h2c connection, replace
stopping the app's background work, and the workload's spec restored afterwards."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e._support import DUAL_SERVER, curl, laptop_handler, listed_state, live_pods, rows, tp

pytestmark = [pytest.mark.root, pytest.mark.e2e]

# A workload image whose containers run the local cluster's Python (with h11 and h2).
IMAGE = "tpengine/tpengine:0.1.0"


def dual_app(
    name: str, *ports: tuple[str, int], extra: str = "", namespace: str = "default"
) -> str:
    """Deployment NAME running dual_server.py labelled ``cluster`` on the given named ports,
    and a Service NAME exposing each (port 80, 81, …)."""
    container_ports = ", ".join(f"{{name: {n}, containerPort: {p}}}" for n, p in ports)
    args = ", ".join(f'"{p}"' for _, p in ports)
    service_ports = ", ".join(
        f"{{name: {n}, port: {80 + i}, targetPort: {n}}}" for i, (n, _) in enumerate(ports)
    )
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: app
        image: {IMAGE}
        command: [python3, {DUAL_SERVER}, cluster, {args}]
        ports: [{container_ports}]
{extra}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{app: {name}}}
  ports: [{service_ports}]
"""


@pytest.fixture(scope="module")
def connected(cluster: Any) -> Iterator[Any]:
    result = tp(cluster, "connect", "-n", "default")
    assert result.returncode == 0, result.stderr
    try:
        yield cluster
    finally:
        tp(cluster, "quit")


@contextlib.contextmanager
def applied(cluster: Any, manifests: str, *rollouts: str) -> Iterator[None]:
    """The manifests applied and rolled out for the duration; deleted after."""
    cluster.kubectl_ok("apply", "-f", "-", input=manifests)
    try:
        for rollout in rollouts:
            cluster.kubectl_ok("rollout", "status", rollout, "--timeout=90s")
        yield
    finally:
        cluster.kubectl("delete", "--wait=false", "-f", "-", input=manifests)


def engage_ok(cluster: Any, *args: str) -> list[str]:
    result = tp(cluster, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def template_spec(cluster: Any, kind: str, name: str) -> dict[str, Any]:
    """The workload's spec without our annotations (what must come back unchanged)."""
    spec = json.loads(cluster.kubectl_ok("get", kind, name, "-o", "json"))["spec"]
    annotations = spec["template"]["metadata"].pop("annotations", {}) or {}
    kept = {k: v for k, v in annotations.items() if not k.startswith("tpengine.io/")}
    if kept:
        spec["template"]["metadata"]["annotations"] = kept
    return dict(spec)


def test_two_ports_by_name_reintercept_and_address(connected: Any) -> None:
    with (
        applied(connected, dual_app("multi", ("http", 8080), ("admin", 9090)), "deploy/multi"),
        laptop_handler(
            connected, "laptop", "127.0.0.1:18080", "127.0.0.1:18081", "127.0.0.1:19090"
        ),
        laptop_handler(connected, "laptop2", "127.0.0.2:18080"),
    ):
        before = template_spec(connected, "deploy", "multi")
        lines = engage_ok(
            connected, "intercept", "multi-http", "--workload", "multi",
            "--port", "18080:http", "--port", "19090:admin",
        )  # fmt: skip
        assert "Using Deployment multi" in lines
        assert "       18080 -> 8080 TCP" in lines and "       19090 -> 9090 TCP" in lines
        assert curl(connected, "http://multi/") == "laptop 18080 GET / user=- body=0"
        assert curl(connected, "http://multi:81/x") == "laptop 19090 GET /x user=- body=0"

        # The same intercept again with another port moves it there.
        engage_ok(
            connected, "intercept", "multi-http", "--workload", "multi", "--port", "18081:http"
        )
        assert curl(connected, "http://multi/") == "laptop 18081 GET / user=- body=0"
        assert curl(connected, "http://multi:81/").startswith("cluster 9090")
        assert tp(connected, "leave", "multi-http").returncode == 0

        # --address: the laptop's handler on another local address.
        lines = engage_ok(
            connected, "intercept", "multi-addr", "--workload", "multi",
            "--address", "127.0.0.2", "--port", "18080:http",
        )  # fmt: skip
        assert any(line.endswith("-> 127.0.0.2") for line in lines), lines
        assert curl(connected, "http://multi/") == "laptop2 18080 GET / user=- body=0"
        assert tp(connected, "leave", "multi-addr").returncode == 0
        assert curl(connected, "http://multi/").startswith("cluster 8080")
        assert template_spec(connected, "deploy", "multi") == before


TWO_SERVICES = """
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: echo-rollout, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo-rollout}}
  template:
    metadata: {labels: {app: echo-rollout}}
    spec:
      containers:
      - name: echo
        image: ghcr.io/telepresenceio/echo-server:latest
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-stable, namespace: default}
spec:
  selector: {app: echo-rollout}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-canary, namespace: default}
spec:
  selector: {app: echo-rollout}
  ports: [{port: 80, targetPort: http}]
"""


def test_two_services_select_one_replicaset(connected: Any) -> None:
    with (
        applied(connected, TWO_SERVICES),
        laptop_handler(connected, "laptop", "127.0.0.1:18080"),
    ):
        connected.kubectl_ok(
            "wait", "--for=condition=Ready", "pod", "-l", "app=echo-rollout", "--timeout=60s"
        )
        ambiguous = tp(connected, "intercept", "echo-rollout", "--port", "18080")
        assert ambiguous.returncode != 0
        assert "several services (echo-canary, echo-stable); choose one with --service" in (
            ambiguous.stderr
        )
        lines = engage_ok(
            connected, "intercept", "echo-rollout", "--port", "18080", "--service", "echo-stable"
        )
        assert lines[0] == "Using ReplicaSet echo-rollout"
        assert ("Workload kind", "ReplicaSet") in rows("\n".join(lines))
        assert curl(connected, "http://echo-stable/") == "laptop 18080 GET / user=- body=0"
        assert tp(connected, "leave", "echo-rollout").returncode == 0
        assert curl(connected, "http://echo-stable/").startswith("Request served by echo-rollout-")


HEADLESS = """
apiVersion: v1
kind: Service
metadata: {name: my-headless, namespace: default}
spec:
  clusterIP: None
  selector: {service: my-headless}
  ports: [{port: 8080, targetPort: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: my-headless, namespace: default, labels: {service: my-headless}}
spec:
  replicas: 1
  serviceName: my-headless
  selector: {matchLabels: {service: my-headless}}
  template:
    metadata: {labels: {service: my-headless}}
    spec:
      containers:
      - name: my-headless
        image: jmalloc/echo-server
        ports: [{containerPort: 8080}]
"""


def test_headless_statefulset_with_a_numeric_port(connected: Any) -> None:
    with (
        applied(connected, HEADLESS, "statefulset/my-headless"),
        laptop_handler(connected, "laptop", "127.0.0.1:18080"),
    ):
        before = template_spec(connected, "statefulset", "my-headless")
        lines = engage_ok(connected, "intercept", "my-headless", "--port", "18080")
        assert lines[0] == "Using StatefulSet my-headless"
        assert ("Workload kind", "StatefulSet") in rows("\n".join(lines))
        pod = connected.pod("default", "my-headless-0")
        # A numeric target port: the init container redirects the port to the agent.
        assert [c["name"] for c in pod["spec"].get("initContainers", [])] == ["tp-agent-init"]
        # The pod stays Ready while engaged (the agent answers its probes' port).
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
        url = "http://my-headless-0.my-headless:8080/"
        assert curl(connected, url) == "laptop 18080 GET / user=- body=0"
        assert tp(connected, "leave", "my-headless").returncode == 0
        assert curl(connected, url).startswith("Request served by my-headless-0")
        assert template_spec(connected, "statefulset", "my-headless") == before


NO_SERVICE = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo-no-svc, namespace: default, labels: {app: echo-no-svc}}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo-no-svc}}
  template:
    metadata:
      labels: {app: echo-no-svc}
      annotations: {telepresence.io/inject-container-ports: http}
    spec:
      automountServiceAccountToken: false
      containers:
      - name: echo-server
        image: ghcr.io/telepresenceio/echo-server:latest
        ports: [{name: http, containerPort: 8080}]
        env: [{name: PORT, value: "8080"}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: lonely, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: lonely}}
  template:
    metadata: {labels: {app: lonely}}
    spec:
      containers:
      - name: echo-server
        image: ghcr.io/telepresenceio/echo-server:latest
        ports: [{name: http, containerPort: 8080}]
"""


def test_service_less_workload_via_the_annotation(connected: Any) -> None:
    with (
        applied(connected, NO_SERVICE, "deploy/echo-no-svc", "deploy/lonely"),
        laptop_handler(connected, "laptop", "127.0.0.1:18080"),
    ):
        listing = tp(connected, "list").stdout
        assert (
            listed_state(listing, "deployment echo-no-svc")
            == "ready to engage (traffic-agent not yet installed)"
        )
        assert listed_state(listing, "deployment lonely") == (
            "unable to engage (traffic-agent not installed): no service selects it and it has "
            "no telepresence.io/inject-container-ports annotation"
        )
        lonely = tp(connected, "intercept", "lonely", "--port", "18080")
        assert lonely.returncode != 0
        assert "no service selects lonely" in lonely.stderr
        assert len(lonely.stderr.strip().splitlines()) <= 2

        lines = engage_ok(connected, "intercept", "echo-no-svc", "--port", "18080")
        [address] = [line.split(": ", 1)[1] for line in lines if line.strip().startswith("Address")]
        pod_ip = json.loads(
            connected.kubectl_ok("get", "pods", "-l", "app=echo-no-svc", "-o", "json")
        )["items"][0]["status"]["podIP"]
        assert address == f"{pod_ip}:8080"
        assert curl(connected, f"http://{address}/") == "laptop 18080 GET / user=- body=0"
        assert tp(connected, "leave", "echo-no-svc").returncode == 0
        assert curl(connected, f"http://{address}/").startswith("Request served by echo-no-svc-")


# ``http1``: one keep-alive connection alternating Susan's and others' requests (one a
# chunked POST); ``pipelined``: three requests written at once (one chunked), answers read
# in order; ``h2c``: one connection, two concurrent streams of different users.
MIXED_CLIENT = r"""
import socket, sys
import h11, h2.connection, h2.config, h2.events

def http1(host):
    sock = socket.create_connection((host, 80), timeout=10)
    conn = h11.Connection(h11.CLIENT)
    def request(path, user=None, body=None):
        headers = [("host", host)] + ([("x-user", user)] if user else [])
        if body is None:
            return conn.send(h11.Request(method="GET", target=path, headers=headers)) + conn.send(h11.EndOfMessage())
        headers.append(("transfer-encoding", "chunked"))
        out = conn.send(h11.Request(method="POST", target=path, headers=headers))
        for piece in body:
            out += conn.send(h11.Data(data=piece))
        return out + conn.send(h11.EndOfMessage())
    def response():
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                conn.start_next_cycle()
                return body.decode().strip()
    sock.sendall(request("/a", "susan"))
    print(response())
    sock.sendall(request("/b"))
    print(response())
    sock.sendall(request("/c", "susan", [b"hello ", b"chunked ", b"world"]))
    print(response())
    sock.sendall(request("/d", "bob"))
    print(response())
    sock.sendall(request("/e", "susan"))
    print(response())

def pipelined(host):
    sock = socket.create_connection((host, 80), timeout=10)
    reqs = [
        b"GET /p1 HTTP/1.1\r\nHost: x\r\nx-user: susan\r\n\r\n",
        b"GET /p2 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /p3 HTTP/1.1\r\nHost: x\r\nx-user: susan\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    ]
    sock.sendall(b"".join(reqs))
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    for _ in reqs:
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        print(body.decode().strip())
        conn.start_next_cycle()
        conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())

def h2c(host):
    sock = socket.create_connection((host, 80), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    streams = {}
    for path, user in (("/h2-susan", "susan"), ("/h2-bob", "bob")):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":path", path), (":scheme", "http"),
                                (":authority", host), ("x-user", user)], end_stream=True)
        streams[sid] = b""
    sock.sendall(conn.data_to_send())
    done = set()
    while len(done) < len(streams):
        for event in conn.receive_data(sock.recv(65536)):
            if isinstance(event, h2.events.DataReceived):
                streams[event.stream_id] += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                done.add(event.stream_id)
        sock.sendall(conn.data_to_send())
    for sid in sorted(streams):
        print(streams[sid].decode().strip())

{"http1": http1, "pipelined": pipelined, "h2c": h2c}[sys.argv[1]](sys.argv[2])
"""


def test_http_filters_per_request_and_per_stream(connected: Any) -> None:
    with (
        applied(connected, dual_app("dual", ("http", 8080)), "deploy/dual"),
        laptop_handler(connected, "laptop", "127.0.0.1:18080"),
    ):
        engage_ok(
            connected, "intercept", "dual", "--port", "18080:http", "--http-header", "x-user=susan"
        )
        try:

            def run(mode: str) -> list[str]:
                result = connected.laptop(sys.executable, "-c", MIXED_CLIENT, mode, "dual")
                assert result.returncode == 0, result.stderr
                return [
                    " ".join(line.split()[0:1] + line.split()[2:4])
                    for line in result.stdout.splitlines()
                ]

            assert run("http1") == [
                "laptop GET /a",
                "cluster GET /b",
                "laptop POST /c",
                "cluster GET /d",
                "laptop GET /e",
            ]
            assert run("pipelined") == ["laptop GET /p1", "cluster GET /p2", "laptop POST /p3"]
            assert run("h2c") == ["laptop GET /h2-susan", "cluster GET /h2-bob"]
        finally:
            assert tp(connected, "leave", "dual").returncode == 0


WORKER = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: worker, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: worker}}}}
  template:
    metadata: {{labels: {{app: worker}}}}
    spec:
      volumes: [{{name: beats, emptyDir: {{}}}}]
      containers:
      - name: app
        image: {IMAGE}
        command:
        - python3
        - -c
        - |
          import os, subprocess, sys, time
          subprocess.Popen([sys.executable, "{DUAL_SERVER}", "cluster", "8080"])
          n = 0
          while True:
              n += 1
              open("/beats/.count", "w").write(str(n))
              os.replace("/beats/.count", "/beats/count")  # never read half-written
              time.sleep(0.2)
        ports: [{{name: http, containerPort: 8080}}]
        volumeMounts: [{{name: beats, mountPath: /beats}}]
      - name: watcher
        image: {IMAGE}
        command: [python3, -c, "import time; time.sleep(10**6)"]
        volumeMounts: [{{name: beats, mountPath: /beats}}]
---
apiVersion: v1
kind: Service
metadata: {{name: worker, namespace: default}}
spec:
  selector: {{app: worker}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""


def beats(cluster: Any) -> int:
    """The app's background heartbeat count (0: it never beat in this pod), read by the
    watcher container, which shares the emptyDir."""
    [pod] = live_pods(cluster, "worker")
    read = "import os; p = '/beats/count'; print(open(p).read() if os.path.exists(p) else 0)"
    return int(cluster.kubectl_ok("exec", pod, "-c", "watcher", "--", "python3", "-c", read))


def test_replace_stops_the_apps_background_work_and_leave_restores_the_spec(
    connected: Any,
) -> None:
    with (
        applied(connected, WORKER, "deploy/worker"),
        laptop_handler(connected, "laptop", "127.0.0.1:18080"),
    ):
        before = template_spec(connected, "deploy", "worker")
        engage_ok(connected, "replace", "worker", "--port", "18080:http")
        try:
            assert curl(connected, "http://worker/") == "laptop 18080 GET / user=- body=0"
            # Nothing of the app runs while replaced: its worker never beats in this pod.
            assert beats(connected) == 0
            time.sleep(1.0)
            assert beats(connected) == 0
        finally:
            assert tp(connected, "leave", "worker").returncode == 0
        assert curl(connected, "http://worker/").startswith("cluster 8080")
        first = beats(connected)
        time.sleep(1.0)
        assert beats(connected) > first
        assert template_spec(connected, "deploy", "worker") == before

        # Replaced when the developer quits: the app container comes back before the
        # engine goes (nobody else may change the workload after it).
        engage_ok(connected, "replace", "worker", "--port", "18080:http")
        assert tp(connected, "quit").returncode == 0
        assert list(live_pods(connected, "worker").values()) == [
            ["app", "traffic-agent", "watcher"]
        ]
        assert template_spec(connected, "deploy", "worker") == before
        assert tp(connected, "connect", "-n", "default").returncode == 0
        assert curl(connected, "http://worker/").startswith("cluster 8080")

        # Uninstalling the agent gives the spec back exactly, annotations included.
        removed = tp(connected, "uninstall", "--agent", "worker", "-n", "default")
        assert removed.returncode == 0, removed.stderr
        assert removed.stdout.strip() == "Traffic-agent removed from worker"
        spec = json.loads(connected.kubectl_ok("get", "deploy", "worker", "-o", "json"))["spec"]
        assert "annotations" not in spec["template"]["metadata"]
        assert list(live_pods(connected, "worker").values()) == [["app", "watcher"]]
        again = tp(connected, "uninstall", "--agent", "worker", "-n", "default")
        assert again.returncode != 0
        assert "Deployment worker in namespace default has no traffic-agent" in again.stderr


def test_a_workload_in_another_namespace(connected: Any) -> None:
    """``-n`` engages a workload outside the connected namespace (Telepresence 2.28)."""
    manifests = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\n" + dual_app(
        "away", ("http", 8080), namespace="team"
    )
    with (
        applied(connected, manifests),
        laptop_handler(connected, "laptop", "127.0.0.1:18080"),
    ):
        connected.kubectl_ok("rollout", "status", "-n", "team", "deploy/away", "--timeout=90s")
        missing = tp(connected, "intercept", "away", "--port", "18080:http")
        assert missing.returncode != 0
        assert "no workload named 'away' in namespace 'default'" in missing.stderr
        engage_ok(connected, "intercept", "away", "-n", "team", "--port", "18080:http")
        # By name, though the namespace was made after `tp connect`: the manager's
        # namespace watch has told the engine's DNS about it.
        assert curl(connected, "http://away.team/") == "laptop 18080 GET / user=- body=0"
        assert tp(connected, "leave", "away").returncode == 0
        assert curl(connected, "http://away.team/").startswith("cluster 8080")
