"""``tp local-cluster down`` leaves nothing behind (runs last: it takes the cluster down)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.root, pytest.mark.e2e]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_down_leaves_nothing(cluster: Any) -> None:
    status = json.loads(
        cluster.tp("local-cluster", "status", "--name", cluster.name, "-o", "json").stdout
    )
    assert status["state"] == "running"
    pids = [status["daemon_pid"], status["laptop_pid"]]
    pids += [int(p) for f in (cluster.state_dir / "pids").iterdir() for p in f.read_text().split()]
    assert len(pids) > 2  # the earlier tests left pods running

    down = cluster.tp("local-cluster", "down", "--name", cluster.name)
    assert down.returncode == 0, down.stderr
    assert f"Removed network namespace {cluster.name}-node" in down.stdout

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
    assert not Path(f"/etc/netns/{cluster.name}-laptop").exists()
    after = json.loads(
        cluster.tp("local-cluster", "status", "--name", cluster.name, "-o", "json").stdout
    )
    assert after["state"] == "stopped"
