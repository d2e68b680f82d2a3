"""Engagements across restarts: how long Susan's intercepted requests are lost when the
traffic-manager pod or the engaged pod is deleted, next to how long Kubernetes itself
takes to bring that pod back Ready (the baseline, measured in the same run); and how
long a silent client's engagement outlives it, next to the manager's session timeout.

Brings up its own local cluster (``tpdr``, fresh HOME, one laptop), a workload ``rise``
and a ``caller`` pod, connects, sets the manager's ``TP_SESSION_TIMEOUT`` and intercepts
``rise`` with ``x-user: susan``. A poller in the caller pod asks as Susan every 50 ms
through the Service and notes each change of who answers (laptop, cluster, error) on
the host's monotonic clock (pods share it), while ``kubectl get pods -w`` notes when
the replacement pod turns Ready. For each restart (``ROUNDS`` each, median shown):

- pod Ready: from ``kubectl delete pod`` to the new pod Ready (what Kubernetes takes);
- Susan back: from the delete to her requests reaching the laptop again for good;
  the ratio of the two is the cost of re-establishing the engagement.

Silent client: the engine is stopped (SIGSTOP) and resumed after its engagement is
gone: time until Susan's requests reach the cluster (at most the session timeout: it
runs from the engine's last ``remain``, sent every 10 s, not from the stop) and, after
SIGCONT, until they reach the laptop again (a new session, the engagement re-sent).
Everything it made is taken down at the end, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from localcluster.node.testing import Cluster

NAME = "tpdr"
TP = (sys.executable, "-c", "from tpengine.cli import main; main()")
ROUNDS = 3
SESSION_TIMEOUT = 15
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
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: caller, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: caller}}
  template:
    metadata: {labels: {app: caller}}
    spec:
      containers:
      - name: caller
        image: ghcr.io/telepresenceio/echo-server:latest
"""
HANDLER = """
import http.server, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "7")
        self.end_headers()
        self.wfile.write(b"laptop\\n")
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 8080), H)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""
# Asks as Susan every 50 ms; prints "<monotonic> <L|C|E>" at every change; ends on stdin EOF.
POLLER = """
import select, sys, time, urllib.request
last = None
while not select.select([sys.stdin], [], [], 0.05)[0]:
    try:
        request = urllib.request.Request("http://rise.default/", headers={"x-user": "susan"})
        body = urllib.request.urlopen(request, timeout=2).read()
        now = "L" if body.startswith(b"laptop") else "C"
    except Exception:
        now = "E"
    if now != last:
        print(f"{time.monotonic():.3f} {now}", flush=True)
        last = now
"""


class Poller:
    """The poller in the caller pod, its transitions collected by a thread."""

    def __init__(self, cluster: Cluster) -> None:
        pid = cluster.pod_pid1("default", live_pod(cluster, "app=caller"))
        self.proc = subprocess.Popen(
            ["nsenter", "-t", str(pid), "-n", "-m", "-u", "-p", "--", "python3", "-c", POLLER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.changes: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            at, state = line.split()
            self.changes.append((float(at), state))

    def state(self) -> str:
        return self.changes[-1][1] if self.changes else "?"

    def wait_for(self, state: str, since: float, timeout: float) -> float:
        """When the answers became ``state`` for good after ``since`` (0 if never lost)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            after = [(t, s) for t, s in self.changes if t >= since]
            if after and after[-1][1] == state and time.monotonic() - after[-1][0] > 1.0:
                return after[-1][0] - since
            if not after and self.state() == state and time.monotonic() - since > 3.0:
                return 0.0
            time.sleep(0.05)
        raise RuntimeError(f"Susan's requests did not settle on {state} within {timeout} s")

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


def live_pod(cluster: Cluster, selector: str, namespace: str = "default") -> str:
    pods = json.loads(
        cluster.kubectl_ok("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
    )["items"]
    return str(
        next(p for p in pods if not p["metadata"].get("deletionTimestamp"))["metadata"]["name"]
    )


def ready_again(cluster: Cluster, namespace: str, selector: str, old: str) -> float:
    """Delete pod ``old``; seconds until a replacement is Ready (kubectl get -w)."""
    template = '{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\\n"}'
    watch = subprocess.Popen(
        cluster.laptop_argv(
            "kubectl",
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            selector,
            "-w",
            "-o",
            f"jsonpath={template}",
        ),
        env=cluster.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # the watch is established (it first lists what is there)
        started = time.monotonic()
        cluster.kubectl_ok("delete", "pod", "-n", namespace, old, "--wait=false")
        assert watch.stdout is not None
        for line in watch.stdout:
            name, _, ready = line.strip().partition(" ")
            if name != old and ready == "True":
                return time.monotonic() - started
        raise RuntimeError("the watch ended before a new pod was Ready")
    finally:
        watch.kill()
        watch.wait()


def restart_round(
    cluster: Cluster, poller: Poller, namespace: str, app_label: str
) -> tuple[float, float]:
    old = live_pod(cluster, app_label, namespace)
    since = time.monotonic()
    ready = ready_again(cluster, namespace, app_label, old)
    back = poller.wait_for("L", since + 1.0, timeout=60)  # the watch's 1 s head start
    return ready, back


def report(what: str, rounds: list[tuple[float, float]]) -> None:
    ready = statistics.median(r for r, _ in rounds)
    back = statistics.median(b for _, b in rounds)
    print(
        f"{what:<24} pod Ready {ready:5.2f} s   Susan back {back:5.2f} s   "
        f"ratio {back / ready:4.2f}   (median of {len(rounds)}; rounds "
        + ", ".join(f"{r:.2f}/{b:.2f}" for r, b in rounds)
        + ")"
    )


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="tpengine-bench-restarts-"))
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    cluster = Cluster(env=env, state_dir=home / ".config/tpengine/local-cluster" / NAME, name=NAME)
    handler = poller = None
    try:
        up = cluster.tp("local-cluster", "up", "--name", NAME)
        if up.returncode != 0:
            raise RuntimeError(f"local cluster: {up.stdout}{up.stderr}")
        cluster.kubectl_ok("apply", "-f", "-", input=APP)
        for app in ("rise", "caller"):
            cluster.kubectl_ok("rollout", "status", f"deployment/{app}", "--timeout=90s")
        handler = subprocess.Popen(
            cluster.laptop_argv("python3", "-c", HANDLER),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # callers cut off by a restart reset their connections
            text=True,
        )
        assert handler.stdout is not None and handler.stdout.readline().strip() == "ready"
        for step in (
            ("connect", "-n", "default"),
            ("intercept", "rise", "--port", "8080:http", "--http-header", "x-user=susan"),
        ):
            done = cluster.laptop(*TP, *step)
            if done.returncode != 0:
                raise RuntimeError(f"tp {step[0]}: {done.stderr}")
            if step[0] == "connect":
                cluster.kubectl_ok(
                    "set",
                    "env",
                    "-n",
                    "tpengine",
                    "deployment/traffic-manager",
                    f"TP_SESSION_TIMEOUT={SESSION_TIMEOUT}",
                )
                cluster.kubectl_ok(
                    "rollout",
                    "status",
                    "-n",
                    "tpengine",
                    "deployment/traffic-manager",
                    "--timeout=90s",
                )
        cluster.kubectl_ok("rollout", "status", "deployment/rise", "--timeout=90s")
        poller = Poller(cluster)
        poller.wait_for("L", time.monotonic(), timeout=30)
        selector = "app.kubernetes.io/name=traffic-manager"
        report(
            "manager pod deleted",
            [restart_round(cluster, poller, "tpengine", selector) for _ in range(ROUNDS)],
        )
        report(
            "engaged pod deleted",
            [restart_round(cluster, poller, "default", "app=rise") for _ in range(ROUNDS)],
        )

        engine = int(
            json.loads(cluster.laptop(*TP, "status", "-o", "json").stdout)["engine"]["pid"]
        )
        stopped = time.monotonic()
        os.kill(engine, signal.SIGSTOP)
        try:
            gone = poller.wait_for("C", stopped, timeout=SESSION_TIMEOUT + 30)
        finally:
            resumed = time.monotonic()
            os.kill(engine, signal.SIGCONT)
        back = poller.wait_for("L", resumed, timeout=30)
        print(
            f"{'silent client':<24} engagement removed after {gone:5.2f} s "
            f"(session timeout {SESSION_TIMEOUT} s, ratio {gone / SESSION_TIMEOUT:4.2f}); "
            f"re-engaged {back:4.2f} s after it woke"
        )
    finally:
        if poller is not None:
            poller.close()
        cluster.laptop(*TP, "quit")
        if handler is not None:
            handler.communicate("", timeout=20)
        cluster.tp("local-cluster", "down", "--name", NAME)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
