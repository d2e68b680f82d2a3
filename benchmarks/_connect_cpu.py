"""CPU time of tp's processes per unit of work (per MB, round trip, connection, query).

On a 2-core machine the latency of a chain of Python processes is about the sum of their
CPU per message, so these figures say where tp's time goes: the engine (laptop), the
traffic-manager (cluster) and the local cluster's API server, which relays the
port-forward between them (a Go kube-apiserver in a real cluster; sshuttle's path does
not pass through it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from benchmarks._connect_cluster import VENV_BIN, Cluster

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuMeter:
    pids: dict[str, int]  # what → pid

    def sample(self) -> dict[str, float]:
        """CPU seconds (user + system) so far of each process; absent ones are left out."""
        out: dict[str, float] = {}
        for what, pid in self.pids.items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[what] = (int(fields[11]) + int(fields[12])) / TICKS
        return out


def per_unit(before: dict[str, float], after: dict[str, float], units: float) -> dict[str, float]:
    """µs of CPU per unit for each process sampled both times."""
    if units <= 0:
        return {}
    return {k: (after[k] - before[k]) * 1e6 / units for k in before.keys() & after.keys()}


def tp_meter(cluster: Cluster) -> CpuMeter:
    """The engine (from ``tp status``), the traffic-manager process (found below its pod's
    sandbox, whose pid the kubelet records) and the local cluster's daemon."""
    pids: dict[str, int] = {}
    status = cluster.laptop(str(VENV_BIN / "tp"), "status", "-o", "json", check=False)
    try:
        pids["engine"] = int(json.loads(status.stdout)["engine"]["pid"])
    except (ValueError, KeyError, TypeError):
        pass
    manager = _manager_pid(cluster)
    if manager is not None:
        pids["manager"] = manager
    try:
        pids["apiserver"] = int((cluster.state_dir / "server.pid").read_text().split()[0])
    except (OSError, ValueError):
        pass
    return CpuMeter(pids)


def _manager_pid(cluster: Cluster) -> int | None:
    selector = "app.kubernetes.io/name=traffic-manager"
    pods = json.loads(
        cluster.kubectl("get", "pods", "-n", "tpengine", "-l", selector, "-o", "json")
    )["items"]
    if not pods:
        return None
    try:
        sandbox = (cluster.state_dir / "pids" / pods[0]["metadata"]["uid"]).read_text().split()[0]
        netns = os.readlink(f"/proc/{sandbox}/ns/net")
    except (OSError, IndexError):
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if any(arg.endswith(b"tp-manager") for arg in argv[:2]) and (
                os.readlink(entry / "ns" / "net") == netns
            ):
                return int(entry.name)
        except OSError:
            continue
    return None
