"""What the end-to-end tests share: running ``tp`` in the laptop and its network state."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TP = [sys.executable, "-c", "from tpengine.cli import main; main()"]


def tp(cluster: Any, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``tp ARGS`` in the local cluster's laptop."""
    result: subprocess.CompletedProcess[str] = cluster.laptop(*TP, *args, timeout=timeout)
    return result


def laptop_state(cluster: Any) -> tuple[str, str, str]:
    """Links, routes and resolv.conf of the laptop: what tp must leave as it found them."""
    links = cluster.laptop("ip", "-o", "link").stdout
    routes = cluster.laptop("ip", "route").stdout
    resolv = cluster.laptop("cat", "/etc/resolv.conf").stdout
    return links, routes, resolv


DUAL_SERVER = str(Path(__file__).with_name("dual_server.py"))


@contextlib.contextmanager
def laptop_handler(
    cluster: Any, label: str, *addresses: str, laptop: int = 1
) -> Iterator[subprocess.Popen[str]]:
    """The developer's local handler: ``dual_server.py LABEL ADDRESS…`` in the laptop,
    answering ``LABEL PORT METHOD PATH …``; stopped (its stdin closed) on exit."""
    handler = subprocess.Popen(
        cluster.laptop_argv(sys.executable, DUAL_SERVER, label, *addresses, laptop=laptop),
        env=cluster.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert handler.stdout is not None and handler.stdout.readline().strip() == "ready"
        yield handler
    finally:
        try:
            handler.communicate("", timeout=20)
        except subprocess.TimeoutExpired:
            handler.kill()
            handler.communicate()


def curl(cluster: Any, *args: str) -> str:
    """The first line curl prints in the laptop (fails the test when curl fails)."""
    result = cluster.laptop("curl", "-sS", "--max-time", "10", *args)
    assert result.returncode == 0, result.stderr
    return str(result.stdout).splitlines()[0]


def listed_state(listing: str, workload: str) -> str:
    """The state ``tp list`` gives a workload (keys are padded to the longest name)."""
    for line in listing.splitlines():
        head, _, state = line.partition(":")
        if head.strip() == workload:
            return state.strip()
    raise AssertionError(f"{workload} not in tp list:\n{listing}")


def rows(output: str) -> list[tuple[str, str]]:
    """The ``key : value`` rows of an engagement block, padding removed (the padding rule
    itself is unit-tested with the renderer)."""
    found = []
    for line in output.splitlines():
        key, sep, value = line.partition(": ")
        if sep and line.startswith("   ") and key.strip():
            found.append((key.strip(), value.strip()))
    return found


def manager_env(cluster: Any, *setting: str) -> None:
    """``kubectl set env`` on the traffic-manager (``NAME=VALUE`` or ``NAME-``), rolled out."""
    cluster.kubectl_ok("set", "env", "-n", "tpengine", "deployment/traffic-manager", *setting)
    cluster.kubectl_ok(
        "rollout", "status", "-n", "tpengine", "deployment/traffic-manager", "--timeout=90s"
    )


def live_pods(cluster: Any, app: str, namespace: str = "default") -> dict[str, list[str]]:
    """The pods labelled ``app=APP`` that are not terminating, with their containers."""
    listed = cluster.kubectl_ok("get", "pods", "-n", namespace, "-l", f"app={app}", "-o", "json")
    return {
        p["metadata"]["name"]: sorted(c["name"] for c in p["spec"]["containers"])
        for p in json.loads(listed)["items"]
        if not p["metadata"].get("deletionTimestamp")
    }
