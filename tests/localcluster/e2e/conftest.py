"""One local cluster (``tpt``) shared by every end-to-end test of the session.

It is brought up with the real CLI (``tp local-cluster up --name tpt``) under a fresh
HOME (so kubectl's discovery cache and the cluster's state dir are the session's own)
and always taken down at the end, also when tests fail.

Helpers:
- ``cluster.kubectl(*args)``: real kubectl from the laptop (``tp local-cluster exec``).
- ``cluster.in_pod(ns, pod, argv)``: run a host command inside a pod's network, PID,
  mount and UTS namespaces (nsenter on the pod's PID 1, recorded by the kubelet in
  ``<state dir>/pids/<pod uid>``, first line) — the way to test "from a pod".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

NAME = "tpt"
TP = [sys.executable, "-c", "from tpengine.cli import main; main()"]


@dataclass
class Cluster:
    env: dict[str, str]
    state_dir: Path
    name: str = NAME
    tp_argv: tuple[str, ...] = tuple(TP)

    def tp(
        self, *args: str, timeout: float = 120, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TP, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kw,  # type: ignore[call-overload]
        )

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        return self.tp(
            "local-cluster",
            "exec",
            "--name",
            NAME,
            "--",
            "kubectl",
            *args,
            input=input,
            timeout=timeout,
        )

    def kubectl_ok(self, *args: str, input: str | None = None, timeout: float = 90) -> str:
        result = self.kubectl(*args, input=input, timeout=timeout)
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def laptop(
        self, *argv: str, input: str | None = None, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        return self.tp(
            "local-cluster", "exec", "--name", NAME, "--", *argv, input=input, timeout=timeout
        )

    def pod(self, namespace: str, name: str) -> dict:
        return json.loads(self.kubectl_ok("get", "pod", "-n", namespace, name, "-o", "json"))

    def pod_pid1(self, namespace: str, name: str) -> int:
        uid = self.pod(namespace, name)["metadata"]["uid"]
        return int((self.state_dir / "pids" / uid).read_text().split()[0])

    def in_pod(
        self, namespace: str, name: str, argv: list[str], *, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        pid = self.pod_pid1(namespace, name)
        return subprocess.run(
            ["nsenter", "-t", str(pid), "-n", "-m", "-u", "-p", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("needs root and network namespaces")
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    c = Cluster(env=env, state_dir=home / ".config" / "tpengine" / "local-cluster" / NAME)
    try:
        up = c.tp("local-cluster", "up", "--name", NAME)
        assert up.returncode == 0, f"up failed: {up.stdout}{up.stderr}"
        yield c
    finally:
        c.tp("local-cluster", "down", "--name", NAME)
