"""Remote volumes: reading an intercepted pod's files through the laptop's FUSE mount,
next to ``kubectl cp`` of the same data in the same run (the way to get a pod's files
without tpengine).

Brings up its own local cluster (``tpvb``, fresh HOME), deploys a pod with an emptyDir
volume holding a 100 MB file and 1,000 files of 1 KiB, engages it with ``tp intercept``
(which mounts its volumes), and measures from the laptop:

- sequential read MB/s of the 100 MB file through the mount (1 MiB reads), and the
  same file copied out with ``kubectl cp``;
- small-file reads/s: list the 1,000-file directory and read every file through the
  mount, and ``kubectl cp`` of that directory.

Each figure is the best of ``ROUNDS`` runs, each on files not read before (the kernel's
page cache would otherwise answer). Targets (issue #8): ≥ 5× kubectl cp, ≥ 100 MB/s.
It also prints the CPU each process on the data's way spends per MB of the sequential
read (agent, traffic-manager, the local API server's port-forward relay, engine, mount
process): on a machine of few cores their sum, not any one wait, bounds the rate.
Everything it made is taken down at the end, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks._connect_cluster import Cluster
from benchmarks._connect_cpu import CpuMeter, per_unit, tp_meter

NAME = "tpvb"
TP = (sys.executable, "-c", "from tpengine.cli import main; main()")
ROUNDS = 3
BIG = 100 * 1000 * 1000
SMALL_FILES = 1000
APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: tpvb, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: tpvb}}
  template:
    metadata: {labels: {app: tpvb}}
    spec:
      containers:
      - name: web
        image: ghcr.io/telepresenceio/echo-server:latest
        ports: [{name: http, containerPort: 8080}]
        volumeMounts: [{name: data, mountPath: /var/tpvb-data}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: tpvb, namespace: default}
spec:
  selector: {app: tpvb}
  ports: [{name: http, port: 80, targetPort: http}]
"""
# In the pod: per round, one big file and one directory of small files.
MAKE = f"""
import os
for r in range({ROUNDS}):
    for kind in ("mount", "cp"):
        with open(f"/var/tpvb-data/big-{{kind}}{{r}}.bin", "wb") as f:
            f.write(os.urandom({BIG}))
        os.mkdir(f"/var/tpvb-data/many-{{kind}}{{r}}")
        for i in range({SMALL_FILES}):
            with open(f"/var/tpvb-data/many-{{kind}}{{r}}/f{{i:04}}", "wb") as f:
                f.write(os.urandom(1024))
"""
# On the laptop: seconds for a sequential read, and for listing + reading small files.
READ_BIG = """
import sys, time
t = time.perf_counter()
with open(sys.argv[1], "rb", buffering=0) as f:
    while f.read(1 << 20):
        pass
print(time.perf_counter() - t)
"""
WRITE_BIG = """
import os, sys, time
data = open(sys.argv[2], "rb").read()
t = time.perf_counter()
with open(sys.argv[1], "wb", buffering=0) as f:
    for i in range(0, len(data), 1 << 20):
        f.write(data[i : i + (1 << 20)])
print(time.perf_counter() - t)
"""
READ_MANY = """
import os, sys, time
t = time.perf_counter()
n = 0
for name in os.listdir(sys.argv[1]):
    with open(os.path.join(sys.argv[1], name), "rb") as f:
        n += len(f.read())
print(time.perf_counter() - t)
"""


class BenchError(Exception):
    pass


class _Cluster:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}

    def tp(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TP, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def laptop(self, *argv: str, timeout: float = 300) -> str:
        """``argv`` on the laptop (``tp local-cluster exec``); its stdout, or BenchError."""
        result = self.tp("local-cluster", "exec", "--name", NAME, "--", *argv, timeout=timeout)
        if result.returncode != 0:
            raise BenchError(f"{' '.join(argv[:3])}…: {result.stderr.strip() or result.stdout}")
        return result.stdout


@contextlib.contextmanager
def _cluster() -> Iterator[_Cluster]:
    home = Path(tempfile.mkdtemp(prefix="tpengine-bench-volumes-"))
    cluster = _Cluster(home)
    try:
        up = cluster.tp("local-cluster", "up", "--name", NAME)
        if up.returncode != 0:
            raise BenchError(f"tp local-cluster up: {up.stderr.strip() or up.stdout}")
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.laptop(*TP, "quit", timeout=60)
        cluster.tp("local-cluster", "down", "--name", NAME)
        shutil.rmtree(home, ignore_errors=True)


def _serving_pod(cluster: _Cluster) -> str:
    """The pod whose agent serves the mount: the one not being deleted (the restart that
    injected the agent may still be taking the old one down)."""
    for _ in range(60):
        listing = cluster.laptop(
            "kubectl", "-n", "default", "get", "pods", "-l", "app=tpvb", "-o", "json"
        )
        live = [
            p["metadata"]["name"]
            for p in json.loads(listing)["items"]
            if not p["metadata"].get("deletionTimestamp")
        ]
        if len(live) == 1:
            return str(live[0])
        time.sleep(0.5)
    raise BenchError("the engaged workload has no single live pod")


def _read_meter(cluster: _Cluster, pod: str) -> CpuMeter:
    """The processes a sequential read through the mount passes, from the agent that
    reads the file to the engine's mount process that hands it to the kernel."""
    pids = dict(tp_meter(Cluster(home=cluster.home, name=NAME)).pids)
    engine = pids.get("engine")
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        if b"tpengine.fs" in argv and engine is not None and int(parent) == engine:
            pids["mount process"] = int(entry.name)
    agent = _agent_pid(cluster, pod)
    if agent is not None:
        pids["agent"] = agent
    return CpuMeter(pids)


def _agent_pid(cluster: _Cluster, pod: str) -> int | None:
    """The traffic-agent of ``pod``: the tp-agent process in its sandbox's netns."""
    listing = cluster.laptop("kubectl", "-n", "default", "get", "pod", pod, "-o", "json")
    uid = json.loads(listing)["metadata"]["uid"]
    state = cluster.home / ".config" / "tpengine" / "local-cluster" / NAME
    try:
        sandbox = (state / "pids" / uid).read_text().split()[0]
        netns = os.readlink(f"/proc/{sandbox}/ns/net")
    except (OSError, IndexError):
        return None
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if any(a.endswith(b"tp-agent") for a in argv[:2]) and (
                os.readlink(entry / "ns" / "net") == netns
            ):
                return int(entry.name)
        except OSError:
            continue
    return None


def _best(seconds: list[float]) -> float:
    return min(seconds)


def _measure(cluster: _Cluster) -> tuple[dict[str, float], dict[str, float]]:
    kubectl = ("kubectl", "-n", "default")
    manifest = cluster.home / "app.yaml"
    manifest.write_text(APP)
    cluster.laptop(*kubectl, "apply", "-f", str(manifest))
    cluster.laptop(*kubectl, "rollout", "status", "deployment/tpvb", "--timeout=120s")
    cluster.laptop(*TP, "connect", "-n", "default")
    engaged = cluster.laptop(*TP, "intercept", "tpvb", "--port", "8080:http")
    found = re.search(r"Volume Mount Point\s*: (\S+)", engaged)
    if not found:
        raise BenchError(f"tp intercept mounted nothing:\n{engaged}")
    root = found.group(1)
    pod = _serving_pod(cluster)
    cluster.laptop(*kubectl, "exec", pod, "-c", "web", "--", "python3", "-c", MAKE)
    out = cluster.home / "cp"
    times: dict[str, list[float]] = {
        key: [] for key in ("mount_big", "mount_many", "cp_big", "cp_many", "mount_up", "cp_up")
    }
    upload = cluster.home / "upload.bin"
    upload.write_bytes(os.urandom(BIG))
    meter = _read_meter(cluster, pod)
    cpu: list[dict[str, float]] = []  # per round: µs of CPU per MB read, by process
    for r in range(ROUNDS):
        up = cluster.laptop(
            "python3", "-c", WRITE_BIG, f"{root}/var/tpvb-data/up-mount{r}.bin", str(upload)
        )
        times["mount_up"].append(float(up))
        started = time.perf_counter()
        cluster.laptop(
            *kubectl, "cp", "-c", "web", str(upload), f"{pod}:/var/tpvb-data/up-cp{r}.bin"
        )
        times["cp_up"].append(time.perf_counter() - started)
        before = meter.sample()
        big = cluster.laptop("python3", "-c", READ_BIG, f"{root}/var/tpvb-data/big-mount{r}.bin")
        cpu.append(per_unit(before, meter.sample(), BIG / 1e6))
        times["mount_big"].append(float(big))
        many = cluster.laptop("python3", "-c", READ_MANY, f"{root}/var/tpvb-data/many-mount{r}")
        times["mount_many"].append(float(many))
        for kind, source in (("cp_big", f"big-cp{r}.bin"), ("cp_many", f"many-cp{r}")):
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            started = time.perf_counter()
            cluster.laptop(
                *kubectl, "cp", "-c", "web", f"{pod}:/var/tpvb-data/{source}", str(out / source)
            )
            times[kind].append(time.perf_counter() - started)
    shutil.rmtree(out, ignore_errors=True)
    fastest = times["mount_big"].index(min(times["mount_big"]))
    return {key: _best(values) for key, values in times.items()}, cpu[fastest]


def main() -> None:
    if os.geteuid() != 0:
        print("volumes: needs root (it brings up a local cluster); skipped")
        return
    try:
        with _cluster() as cluster:
            best, cpu = _measure(cluster)
    except (BenchError, subprocess.TimeoutExpired) as exc:
        print(f"volumes: failed: {exc}")
        raise SystemExit(1) from None
    mb = BIG / 1e6
    mount_mb_s, cp_mb_s = mb / best["mount_big"], mb / best["cp_big"]
    mount_files, cp_files = SMALL_FILES / best["mount_many"], SMALL_FILES / best["cp_many"]
    print(f"best of {ROUNDS}, {mb:.0f} MB file and {SMALL_FILES} files of 1 KiB, fresh each run")
    print(f"{'':34}{'mount':>10}{'kubectl cp':>12}{'ratio':>8}   target")
    print(
        f"{'sequential read, MB/s':34}{mount_mb_s:10.1f}{cp_mb_s:12.1f}"
        f"{mount_mb_s / cp_mb_s:7.1f}×   ≥ 5× and ≥ 100 MB/s"
    )
    print(
        f"{'small files (list + read), files/s':34}{mount_files:10.0f}{cp_files:12.0f}"
        f"{mount_files / cp_files:7.1f}×   ≥ 5×"
    )
    up_mb_s, cp_up_mb_s = mb / best["mount_up"], mb / best["cp_up"]
    print(
        f"{'sequential write, MB/s':34}{up_mb_s:10.1f}{cp_up_mb_s:12.1f}"
        f"{up_mb_s / cp_up_mb_s:7.1f}×   (no target)"
    )
    order = ["agent", "manager", "apiserver", "engine", "mount process"]
    shown = [f"{what} {cpu[what] / 1000:.1f}" for what in order if what in cpu]
    print(
        f"CPU per MB of the fastest sequential read, ms: {', '.join(shown)};"
        f" total {sum(cpu.values()) / 1000:.1f}"
    )
