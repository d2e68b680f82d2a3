"""Real kubectl from the laptop against the local cluster (``tp local-cluster exec``)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.root, pytest.mark.e2e]

NS = "e2e-app"

APP = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: web-config, namespace: {NS}}}
data:
  greeting: hello-from-configmap
  settings.ini: "[web]\\nport=8080\\n"
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: ghcr.io/telepresenceio/echo-server:latest
        ports: [{{containerPort: 8080, name: http}}]
        env:
        - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: web-config, key: greeting}}}}}}
        - {{name: MY_POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
        - {{name: MESSAGE, value: "$(GREETING) to $(MY_POD)"}}
        volumeMounts: [{{name: cfg, mountPath: /etc/web, readOnly: true}}]
        readinessProbe: {{httpGet: {{path: /, port: http}}, periodSeconds: 1}}
      volumes: [{{name: cfg, configMap: {{name: web-config}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: blob, namespace: {NS}}}
spec:
  containers:
  - name: echo
    image: busybox
    command:
    - python3
    - -c
    - |
      import socket, threading
      srv = socket.create_server(("127.0.0.1", 7000))
      print("tcp echo ready", flush=True)
      def serve(conn):
          with conn:
              while data := conn.recv(65536):
                  conn.sendall(data)
      while True:
          threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
    readinessProbe: {{exec: {{command: [sh, -c, "true"]}}, periodSeconds: 1}}
"""


@pytest.fixture(scope="module")
def app(cluster: Any) -> Any:
    cluster.kubectl_ok("apply", "-f", "-", input=APP)
    cluster.kubectl_ok("rollout", "status", "-n", NS, "deploy/web", "--timeout=60s")
    cluster.kubectl_ok("wait", "-n", NS, "--for=condition=Ready", "pod/blob", "--timeout=60s")
    return cluster


NAMESPACE_REF = """
apiVersion: v1
kind: Namespace
metadata: {name: e2e-ref}
"""

FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"


def _eventually_pods(cluster: Any, check: Any, timeout: float = 30) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        names = {p["metadata"]["name"] for p in _pods(cluster, "app=web")}
        if check(names) or time.monotonic() > deadline:
            return names
        time.sleep(0.2)


def _pods(cluster: Any, selector: str) -> list[dict]:
    out = cluster.kubectl_ok("get", "pods", "-n", NS, "-l", selector, "-o", "json")
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def test_version_and_get_pods_all_namespaces(cluster: Any) -> None:
    version = cluster.kubectl_ok("version")
    assert "Server Version: v1.32" in version
    listing = cluster.kubectl("get", "pods", "-A")
    assert listing.returncode == 0
    assert listing.stdout.startswith("NAMESPACE") or "No resources found" in listing.stderr


def test_kubeconfig_prints_the_path(cluster: Any) -> None:
    result = cluster.tp("local-cluster", "kubeconfig", "--name", cluster.name)
    assert result.stdout.strip() == str(cluster.state_dir / "kubeconfig")
    assert (cluster.state_dir / "kubeconfig").exists()


def test_up_again_says_already_up(cluster: Any) -> None:
    again = cluster.tp("local-cluster", "up", "--name", cluster.name)
    assert again.returncode == 0
    assert "already up" in again.stdout


def test_up_and_down_from_another_state_dir_leave_the_cluster_alone(
    cluster: Any, tmp_path: Path
) -> None:
    env = {**cluster.env, "XDG_CONFIG_HOME": str(tmp_path)}
    for verb in ("up", "down"):
        result = subprocess.run(
            [*cluster.tp_argv, "local-cluster", verb, "--name", cluster.name],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert "running from another state dir" in result.stderr
    assert "Server Version" in cluster.kubectl_ok("version")


def test_apply_runs_pods_with_env_and_volumes(app: Any) -> None:
    pods = _pods(app, "app=web")
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert pod["status"]["podIP"].startswith("10.244.")
    name = pods[0]["metadata"]["name"]
    environ = app.kubectl_ok("exec", "-n", NS, name, "--", "env")
    assert "GREETING=hello-from-configmap" in environ
    assert f"MESSAGE=hello-from-configmap to {name}" in environ
    assert f"HOSTNAME={name}" in environ
    settings = app.kubectl_ok("exec", "-n", NS, name, "--", "cat", "/etc/web/settings.ini")
    assert settings == "[web]\nport=8080\n"
    token = app.kubectl_ok(
        "exec",
        "-n",
        NS,
        name,
        "--",
        "cat",
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
    )
    assert token == NS
    readonly = app.kubectl("exec", "-n", NS, name, "--", "touch", "/etc/web/x")
    assert readonly.returncode != 0
    assert "Read-only file system" in readonly.stderr
    # The container's mounts are its own: the host's /etc has no /etc/web.
    assert not Path("/etc/web").exists()
    # The pod has its own /tmp, shared by its containers (and exec), not the host's.
    app.kubectl_ok("exec", "-n", NS, name, "--", "sh", "-c", "echo x > /tmp/e2e-pod-file")
    assert app.kubectl_ok("exec", "-n", NS, name, "--", "cat", "/tmp/e2e-pod-file") == "x\n"
    assert not Path("/tmp/e2e-pod-file").exists()


def test_get_pods_all_namespaces_lists_the_app(app: Any) -> None:
    listing = app.kubectl_ok("get", "pods", "-A")
    assert listing.startswith("NAMESPACE")
    assert (
        sum(1 for line in listing.splitlines() if line.startswith(f"{NS} ") and "Running" in line)
        == 3
    )


def test_logs(app: Any) -> None:
    name = _pods(app, "app=web")[0]["metadata"]["name"]
    logs = app.kubectl_ok("logs", "-n", NS, name)
    assert "Echo server listening on port 8080." in logs
    tail = app.kubectl_ok("logs", "-n", NS, name, "--tail=1")
    assert len(tail.splitlines()) == 1


def test_exec_stdin_stdout_and_exit_code(app: Any) -> None:
    name = _pods(app, "app=web")[0]["metadata"]["name"]
    echoed = app.kubectl(
        "exec", "-i", "-n", NS, name, "--", "sh", "-c", "cat; echo $GREETING", input="from stdin\n"
    )
    assert echoed.returncode == 0, echoed.stderr
    assert echoed.stdout == "from stdin\nhello-from-configmap\n"
    failed = app.kubectl("exec", "-n", NS, name, "--", "sh", "-c", "echo oops >&2; exit 7")
    assert failed.returncode == 7
    assert "oops" in failed.stderr


CLIENT = """
import hashlib, random, socket, sys, threading, time
port = int(sys.argv[1])
data = random.Random(7).randbytes(20 * 1024 * 1024)
for _ in range(100):
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        break
    except OSError:
        time.sleep(0.1)
def send():
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
threading.Thread(target=send, daemon=True).start()
got = hashlib.sha256()
n = 0
while chunk := sock.recv(1 << 20):
    got.update(chunk)
    n += len(chunk)
print(n, got.hexdigest() == hashlib.sha256(data).hexdigest())
"""


def test_port_forward_moves_20_mb_intact(app: Any) -> None:
    forward = subprocess.Popen(
        [
            *app.tp_argv,
            "local-cluster",
            "exec",
            "--name",
            app.name,
            "--",
            "kubectl",
            "port-forward",
            "-n",
            NS,
            "pod/blob",
            "17000:7000",
        ],
        env=app.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert forward.stdout is not None
        assert "Forwarding from" in forward.stdout.readline()
        result = app.laptop("python3", "-c", CLIENT, "17000", timeout=120)
        assert result.stdout.split() == [str(20 * 1024 * 1024), "True"], result.stderr
    finally:
        forward.kill()
        forward.wait()


# The YAML of ../shared/reference/engagements-cli.md, unchanged (copied: CI has no ../shared).
ENGAGEMENTS_HEADLESS = """\
---
apiVersion: v1
kind: Service
metadata:
  name: my-headless
spec:
  type: ClusterIP
  clusterIP: None
  selector:
    service: my-headless
  ports:
    - port: 8080
      targetPort: 8080
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: my-headless
  labels:
    service: my-headless
spec:
  replicas: 1
  serviceName: my-headless
  selector:
    matchLabels:
      service: my-headless
  template:
    metadata:
      labels:
        service: my-headless
    spec:
      containers:
        - name: my-headless
          image: jmalloc/echo-server
          ports:
            - containerPort: 8080
          resources: {}
"""

ENGAGEMENTS_NO_SVC = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo-no-svc
  labels:
    app: echo-no-svc
spec:
  replicas: 1
  selector:
    matchLabels:
      app: echo-no-svc
  template:
    metadata:
      labels:
        app: echo-no-svc
      annotations:
        telepresence.io/inject-container-ports: http
    spec:
      automountServiceAccountToken: false
      containers:
        - name: echo-server
          image: ghcr.io/telepresenceio/echo-server:latest
          ports:
            - name: http
              containerPort: 8080
          env:
            - name: PORT
              value: "8080"
          resources:
            limits:
              cpu: 50m
              memory: 8Mi
"""


def test_engagements_yaml_applies_server_side_and_runs(cluster: Any) -> None:
    cluster.kubectl_ok("apply", "-f", "-", input=NAMESPACE_REF)
    for manifest in (ENGAGEMENTS_HEADLESS, ENGAGEMENTS_NO_SVC):
        applied = cluster.kubectl(
            "apply", "--server-side", "-n", "e2e-ref", "-f", "-", input=manifest
        )
        assert applied.returncode == 0, applied.stderr
    cluster.kubectl_ok(
        "rollout", "status", "-n", "e2e-ref", "statefulset/my-headless", "--timeout=60s"
    )
    cluster.kubectl_ok("rollout", "status", "-n", "e2e-ref", "deploy/echo-no-svc", "--timeout=60s")
    pod = cluster.pod("e2e-ref", "my-headless-0")
    reply = cluster.in_pod(
        "e2e-ref", "my-headless-0", ["python3", "-c", FETCH, "http://my-headless:8080/"]
    )
    assert reply.stdout.startswith("Request served by my-headless-0"), reply.stderr
    assert pod["status"]["podIP"].startswith("10.244.")


def test_rollout_restart_replaces_the_pods(app: Any) -> None:
    before = {p["metadata"]["name"] for p in _pods(app, "app=web")}
    app.kubectl_ok("rollout", "restart", "-n", NS, "deploy/web")
    app.kubectl_ok("rollout", "status", "-n", NS, "deploy/web", "--timeout=60s")
    after = _eventually_pods(app, lambda names: names and not names & before)
    assert after and not after & before
    assert "web" in app.kubectl_ok("get", "svc", "-n", NS)


def test_scale_and_delete(app: Any) -> None:
    app.kubectl_ok("scale", "-n", NS, "deploy/web", "--replicas=3")
    app.kubectl_ok("rollout", "status", "-n", NS, "deploy/web", "--timeout=60s")
    assert len(_pods(app, "app=web")) == 3
    app.kubectl_ok("scale", "-n", NS, "deploy/web", "--replicas=1")
    app.kubectl_ok("rollout", "status", "-n", NS, "deploy/web", "--timeout=60s")
    deadline = time.monotonic() + 30
    while len(_pods(app, "app=web")) != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(_pods(app, "app=web")) == 1
    app.kubectl_ok("delete", "-n", NS, "pod/blob", "--timeout=60s")
    gone = app.kubectl("get", "-n", NS, "pod/blob")
    assert gone.returncode != 0 and "NotFound" in gone.stderr
