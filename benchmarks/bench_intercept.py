"""Traffic through an intercept, next to tp's own laptop → pod path, in one run.

``python -m benchmarks intercept`` (as root): brings up local cluster ``tpi`` under a fresh
HOME, deploys ``ibench`` (iperf3 server + the probe's 64-byte ping-pong, behind a
Service with named ports) and a ``client`` pod, connects the laptop, then measures:

- laptop → pod: ``iperf3 -c POD_IP`` (Mbit/s) and ping-pong RTT from the laptop, through
  ``tp connect`` (the path the intercept is compared with);
- in-cluster client → agent → laptop: the client pod's ``iperf3 -c ibench`` and ping-pong
  RTT to the Service while ``ibench`` is intercepted to an iperf3 server and a ping-pong
  server on the laptop; and the same client to the cluster's copy before intercepting;
- ``tp intercept`` wall time to ACTIVE: the first time (the webhook injects the agent,
  the pods restart) and again after ``leave`` (agent installed; median of 3).

Targets (issue #7): intercept throughput ≥ 50% of laptop → pod; ≤ 5 s first, ≤ 1 s after.
The cluster goes down at the end, also on failure or Ctrl-C. Not part of ``./dev test``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

from benchmarks._connect_cluster import PROBE, BenchError, Cluster, local_cluster

NAME = "tpi"
IPERF, PINGPONG = 5201, 7000
LOCAL_IPERF, LOCAL_PINGPONG = 15201, 17000
SECONDS = 3


def manifests() -> str:
    python = sys.executable
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: ibench}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: ibench}}}}
  template:
    metadata: {{labels: {{app: ibench}}}}
    spec:
      containers:
      - name: app
        image: python
        command: [sh, -c, 'iperf3 --server --port {IPERF} & exec "{python}" "{PROBE}" serve {PINGPONG}']
        ports: [{{name: iperf, containerPort: {IPERF}}}, {{name: pingpong, containerPort: {PINGPONG}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: ibench}}
spec:
  selector: {{app: ibench}}
  ports:
  - {{name: iperf, port: {IPERF}, targetPort: iperf}}
  - {{name: pingpong, port: {PINGPONG}, targetPort: pingpong}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  containers:
  - name: client
    image: python
    command: ["{python}", -c, "import time; time.sleep(10**6)"]
"""


def wait_ready(cluster: Cluster, timeout: float = 90) -> str:
    """The ibench pod's IP once it and the client pod are Ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = json.loads(cluster.kubectl("get", "pods", "-o", "json"))["items"]
        ready = {
            p["metadata"].get("labels", {}).get("app", p["metadata"]["name"]): p
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in p.get("status", {}).get("conditions") or []
            )
        }
        if {"ibench", "client"} <= ready.keys():
            return str(ready["ibench"]["status"]["podIP"])
        time.sleep(0.5)
    raise BenchError(f"pods not ready after {timeout:.0f} s")


def in_client(cluster: Cluster, *argv: str) -> str:
    return cluster.kubectl("exec", "client", "--", *argv)


def iperf_mbps(output: str) -> float:
    report = json.loads(output)
    return float(report["end"]["sum_received"]["bits_per_second"]) / 1e6


def measure(run: Callable[..., str], what: str) -> tuple[float, dict[str, float]]:
    """(iperf3 Mbit/s, ping-pong RTT figures) with ``run(*argv)`` running a client;
    ``what`` is HOST:IPERF_PORT:PINGPONG_PORT."""
    target = what.split(":")
    mbps = iperf_mbps(run("iperf3", "-c", target[0], "-p", target[1], "-t", str(SECONDS), "-J"))
    rtt = json.loads(run(sys.executable, str(PROBE), "rtt", target[0], target[2], "2"))
    return mbps, rtt


def timed_intercept(cluster: Cluster) -> float:
    started = time.perf_counter()
    result = cluster.tp(
        "intercept", "ibench",
        "--port", f"{LOCAL_IPERF}:iperf", "--port", f"{LOCAL_PINGPONG}:pingpong",
        timeout=120,
    )  # fmt: skip
    took = time.perf_counter() - started
    print(result.stdout.strip(), file=sys.stderr)
    if "State" not in result.stdout or "ACTIVE" not in result.stdout:
        raise BenchError(f"tp intercept did not become ACTIVE: {result.stdout}{result.stderr}")
    return took


@contextlib.contextmanager
def laptop_servers(cluster: Cluster) -> Iterator[None]:
    """The developer's side: an iperf3 server and a ping-pong server on the laptop."""
    procs = [
        subprocess.Popen(
            cluster.laptop_argv(
                "iperf3", "--server", "--bind", "127.0.0.1", "-p", str(LOCAL_IPERF)
            ),
            env=cluster.env,
            stdout=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            cluster.laptop_argv(sys.executable, str(PROBE), "serve", str(LOCAL_PINGPONG)),
            env=cluster.env,
            stdout=subprocess.DEVNULL,
        ),
    ]
    try:
        time.sleep(1.0)
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def row(name: str, mbps: float, rtt: dict[str, float], base: float) -> str:
    return (
        f"{name:<44} {mbps:>9,.0f} Mbit/s ({mbps / base:5.0%})"
        f"   RTT p50 {rtt['p50_us']:>7,.0f} µs  p99 {rtt['p99_us']:>7,.0f} µs"
    )


def main() -> None:
    if os.geteuid() != 0:
        print("intercept benchmark: needs root (it builds a local cluster); skipped")
        return
    if shutil.which("iperf3") is None:
        raise BenchError("iperf3 is needed: run ./dev setup")
    with local_cluster(NAME) as cluster:
        cluster.kubectl("apply", "-f", "-", input=manifests())
        pod_ip = wait_ready(cluster)
        time.sleep(1.0)  # the servers listen a moment after Ready (no readiness probe)
        cluster.tp("connect", "-n", "default", timeout=120)
        try:
            direct = measure(lambda *a: in_client(cluster, *a), f"ibench:{IPERF}:{PINGPONG}")
            laptop = measure(lambda *a: cluster.laptop(*a).stdout, f"{pod_ip}:{IPERF}:{PINGPONG}")
            with laptop_servers(cluster):
                first = timed_intercept(cluster)
                intercepted = measure(
                    lambda *a: in_client(cluster, *a), f"ibench:{IPERF}:{PINGPONG}"
                )
                again = []
                for _ in range(3):
                    cluster.tp("leave", "ibench")
                    again.append(timed_intercept(cluster))
                cluster.tp("leave", "ibench")
        finally:
            cluster.tp("quit", timeout=60)
    base = laptop[0]
    print(row("laptop → pod (tp connect)", *laptop, base))
    print(row("in-cluster client → pod (the cluster's copy)", *direct, base))
    print(row("in-cluster client → agent → laptop (intercept)", *intercepted, base))
    print(
        f"intercept/laptop→pod throughput: {intercepted[0] / base:.0%} (target ≥ 50%)\n"
        f"tp intercept → ACTIVE: first {first:.2f} s (target ≤ 5 s), "
        f"after {statistics.median(again):.2f} s (median of {', '.join(f'{t:.2f}' for t in again)};"
        " target ≤ 1 s)"
    )
