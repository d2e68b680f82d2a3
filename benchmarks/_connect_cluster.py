"""The connect benchmark's local cluster: up with a fresh HOME, the servers it measures
against, commands on its laptop, and down (also after failures and Ctrl-C).

Every command of the benchmark runs on the laptop (its netns and mount namespace, as
``tp local-cluster exec`` does) or inside the node's netns; nothing talks to the root
namespace's network.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

NAME = "tpb"
VENV_BIN = Path(sys.executable).parent
TP = (sys.executable, "-c", "from tpengine.cli import main; main()")
PROBE = Path(__file__).with_name("_connect_probe.py")
PINGPONG_PORT = 7000  # and 7001: the probe's minimal HTTP server
IPERF_PORT = 5201


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


@dataclass(frozen=True, kw_only=True)
class Targets:
    iperf_ip: str
    pingpong_ip: str
    pingpong_cluster_ip: str  # port 7000 ping-pong, port 80 the minimal HTTP server
    hello_cluster_ip: str  # the echo-server
    dns_names: tuple[str, ...]


@dataclass
class Cluster:
    home: Path
    name: str = NAME

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "KUBECONFIG": str(self.state_dir / "kubeconfig"),
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        }

    @property
    def state_dir(self) -> Path:
        return self.home / ".config" / "tpengine" / "local-cluster" / self.name

    def tp_host(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The tp CLI itself (only ``local-cluster up/down``, which manage namespaces)."""
        return subprocess.run(
            [*TP, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def laptop_argv(self, *argv: str) -> list[str]:
        """``argv`` on the laptop: its netns and its mount namespace (its resolv.conf)."""
        holder = int((self.state_dir / "laptop.pid").read_text().split()[0])
        return [
            "nsenter",
            f"--net=/run/netns/{self.name}-laptop",
            f"--mount=/proc/{holder}/ns/mnt",
            "--",
            *argv,
        ]

    def laptop(
        self, *argv: str, timeout: float = 60, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.laptop_argv(*argv),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise BenchError(
                f"{' '.join(argv[:4])} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-600:]}"
            )
        return result

    def tp(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.laptop(str(VENV_BIN / "tp"), *args, timeout=timeout)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.laptop("kubectl", *args, input=input).stdout

    def node(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", f"{self.name}-node", *argv]


@contextlib.contextmanager
def local_cluster(name: str = NAME) -> Iterator[Cluster]:
    """``tp local-cluster up --name NAME`` under a fresh HOME; down and removed at the end
    (also on failure or Ctrl-C)."""
    cluster = Cluster(home=Path(tempfile.mkdtemp(prefix=f"{name}-bench-home-")), name=name)
    try:
        up = cluster.tp_host("local-cluster", "up", "--name", cluster.name)
        if up.returncode != 0:
            raise BenchError(f"tp local-cluster up failed: {(up.stdout + up.stderr).strip()}")
        yield cluster
    finally:
        with _no_interrupts():
            down = cluster.tp_host("local-cluster", "down", "--name", cluster.name)
            if down.returncode != 0:
                print(f"warning: tp local-cluster down: {down.stderr.strip()}", file=sys.stderr)
            shutil.rmtree(cluster.home, ignore_errors=True)


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """Cleanup must finish: a second Ctrl-C or SIGTERM waits until it has."""
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _manifests() -> str:
    python = sys.executable
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: hello}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: hello}}}}
  template:
    metadata: {{labels: {{app: hello}}}}
    spec:
      containers:
      - name: echo
        image: ghcr.io/telepresenceio/echo-server
        env: [{{name: PORT, value: "8080"}}]
        ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: hello}}
spec:
  selector: {{app: hello}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: iperf, labels: {{app: iperf}}}}
spec:
  containers:
  - name: iperf
    image: iperf3
    command: [iperf3, --server, --port, "{IPERF_PORT}"]
---
apiVersion: v1
kind: Pod
metadata: {{name: pingpong, labels: {{app: pingpong}}}}
spec:
  containers:
  - name: pingpong
    image: python
    command: ["{python}", "{PROBE}", serve, "{PINGPONG_PORT}"]
---
apiVersion: v1
kind: Service
metadata: {{name: pingpong}}
spec:
  selector: {{app: pingpong}}
  ports:
  - {{name: pingpong, port: {PINGPONG_PORT}, targetPort: {PINGPONG_PORT}}}
  - {{name: http, port: 80, targetPort: {PINGPONG_PORT + 1}}}
"""


def deploy(cluster: Cluster, *, timeout: float = 90) -> Targets:
    """The servers: iperf3, the probe (ping-pong + minimal HTTP), the echo-server."""
    if shutil.which("iperf3") is None or shutil.which("ab") is None:
        raise BenchError("iperf3 and ab (apache2-utils) are needed: run ./dev setup")
    cluster.kubectl("apply", "-f", "-", input=_manifests())
    deadline = time.monotonic() + timeout
    while True:
        pods = json.loads(cluster.kubectl("get", "pods", "-o", "json"))["items"]
        ips = {
            p["metadata"]["labels"].get("app"): p["status"].get("podIP") for p in pods if _ready(p)
        }
        if {"hello", "iperf", "pingpong"} <= ips.keys():
            break
        if time.monotonic() > deadline:
            raise BenchError(f"pods not ready after {timeout:.0f} s: {sorted(ips)} ready")
        time.sleep(0.5)
    _wait_listening(cluster, ips["iperf"], IPERF_PORT)
    _wait_listening(cluster, ips["pingpong"], PINGPONG_PORT)
    services = json.loads(cluster.kubectl("get", "services", "-o", "json"))["items"]
    cluster_ips = {s["metadata"]["name"]: s["spec"]["clusterIP"] for s in services}
    return Targets(
        iperf_ip=ips["iperf"],
        pingpong_ip=ips["pingpong"],
        pingpong_cluster_ip=cluster_ips["pingpong"],
        hello_cluster_ip=cluster_ips["hello"],
        dns_names=tuple(
            f"{svc}.default.svc.cluster.local." for svc in ("hello", "pingpong", "kubernetes")
        ),
    )


def _ready(pod: dict) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _wait_listening(cluster: Cluster, ip: str, port: int, timeout: float = 20) -> None:
    """The pod is Ready before its server listens (no readiness probe): ask from the node."""
    deadline = time.monotonic() + timeout
    probe = f"import socket; socket.create_connection(('{ip}', {port}), timeout=1).close()"
    while subprocess.run(cluster.node(sys.executable, "-c", probe), capture_output=True).returncode:
        if time.monotonic() > deadline:
            raise BenchError(f"nothing listens on {ip}:{port} after {timeout:.0f} s")
        time.sleep(0.2)
