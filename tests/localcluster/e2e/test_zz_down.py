"""``tp local-cluster down`` leaves nothing behind (runs last: it takes the cluster down)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.root, pytest.mark.e2e]


TOP_DIR = "/tpt-e2e-data"
LEFTOVER = f"""
apiVersion: v1
kind: Pod
metadata: {{name: leftover}}
spec:
  containers:
  - name: c
    image: busybox
    command: [sleep, "3600"]
    volumeMounts: [{{name: d, mountPath: {TOP_DIR}/a}}, {{name: d, mountPath: {TOP_DIR}/b}}]
  volumes: [{{name: d, emptyDir: {{}}}}]
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_up_recovers_from_a_crashed_daemon(cluster: Any) -> None:
    status = json.loads(
        cluster.tp("local-cluster", "status", "--name", cluster.name, "-o", "json").stdout
    )
    os.kill(status["daemon_pid"], 9)
    broken = json.loads(
        cluster.tp("local-cluster", "status", "--name", cluster.name, "-o", "json").stdout
    )
    assert broken["state"] == "broken"
    up = cluster.tp("local-cluster", "up", "--name", cluster.name)
    assert up.returncode == 0, up.stderr
    assert "Cleaning up" in up.stdout
    assert "Server Version" in cluster.kubectl_ok("version")
    assert not [p for p in os.listdir("/run/netns") if p.startswith(f"{cluster.name}-pod-")]


def test_down_leaves_nothing(cluster: Any) -> None:
    status = json.loads(
        cluster.tp("local-cluster", "status", "--name", cluster.name, "-o", "json").stdout
    )
    assert status["state"] == "running"
    # A pod whose mount point does not exist on the host: the directory is made (directly
    # under / no overlay is possible) and must be gone after `down`.
    cluster.kubectl_ok("apply", "-f", "-", input=LEFTOVER)
    cluster.kubectl_ok("wait", "--for=condition=Ready", "pod/leftover", "--timeout=60s")
    assert Path(TOP_DIR).is_dir()
    pids = [status["daemon_pid"], status["laptop_pid"]]
    pids += [int(p) for f in (cluster.state_dir / "pids").iterdir() for p in f.read_text().split()]
    assert len(pids) > 2  # the earlier tests left pods running
    # A process in a pod's namespace that the cluster has no record of (a pod started
    # while the cluster went down): `down` must not leave it running, orphaned.
    pod_ns = sorted(p for p in os.listdir("/run/netns") if p.startswith(f"{cluster.name}-pod-"))
    stray = subprocess.Popen(
        ["ip", "netns", "exec", pod_ns[0], "sleep", "3600"], start_new_session=True
    )
    try:
        down = cluster.tp("local-cluster", "down", "--name", cluster.name)
        assert down.returncode == 0, down.stderr
        assert f"Removed network namespace {cluster.name}-node" in down.stdout
        assert stray.wait(timeout=10) == -9
        assert f"Removed stray process (pid {stray.pid}) in {pod_ns[0]}" in down.stdout
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait()

    assert not [p for p in pids if _alive(p)]
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert not [ns for ns in netns if ns.startswith(f"{cluster.name}-")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "pv" not in links and "laptop0" not in links
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert f"tp-{cluster.name}" not in tables
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f"/run/netns/{cluster.name}-" not in mounts and str(cluster.state_dir) not in mounts
    assert not cluster.state_dir.exists()
    assert not Path(TOP_DIR).exists()
    assert not Path(f"/etc/netns/{cluster.name}-laptop").exists()
    after = json.loads(
        cluster.tp("local-cluster", "status", "--name", cluster.name, "-o", "json").stdout
    )
    assert after["state"] == "stopped"
