"""The one local cluster (``tpt``) that every end-to-end test of a pytest session shares.

Several conftest files may each define a session fixture; they must still share one
cluster (there is one ``tpt-laptop`` on the machine). ``shared_cluster()`` keeps a
process-wide instance with a reference count: the first user brings it up with the real
CLI (``tp local-cluster up --name tpt``, under a fresh HOME so kubectl's cache and the
state dir are the session's own), the last one takes it down — also after failures::

    @pytest.fixture(scope="session")
    def cluster() -> Iterator[Cluster]:
        with shared_cluster() as c:
            yield c

The shared cluster has ``LAPTOPS`` (2) laptops, one per developer: ``cluster.laptop(...)``
runs any command on laptop 1 (``laptop=2`` on the second: its own netns, mount namespace,
resolver, and so its own engine), ``cluster.laptop_argv(...)`` is the same as an argv for
``subprocess.Popen``, ``cluster.kubectl(...)`` runs real kubectl on laptop 1, ``cluster.in_pod(ns, pod, argv)`` a host command inside a pod's network,
PID, mount and UTS namespaces (nsenter on the pod's PID 1, whose pid the kubelet records
in ``<state dir>/pids/<pod uid>``, first line).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAME = os.environ.get("TPENGINE_E2E_CLUSTER", "tpt")
LAPTOPS = 2  # two developers (tests/e2e/test_two_developers.py)
TP = (sys.executable, "-c", "from tpengine.cli import main; main()")


@dataclass
class Cluster:
    env: dict[str, str]
    state_dir: Path
    name: str = NAME
    tp_argv: tuple[str, ...] = TP
    _users: int = field(default=0, repr=False)

    def tp(
        self, *args: str, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.tp_argv, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )

    def laptop_argv(self, *argv: str, laptop: int = 1) -> list[str]:
        """``argv`` run on laptop ``laptop`` (for Popen; env: ``self.env``)."""
        where = ["--laptop", str(laptop)] if laptop != 1 else []
        return [*self.tp_argv, "local-cluster", "exec", "--name", self.name, *where, "--", *argv]

    def laptop(
        self, *argv: str, input: str | None = None, timeout: float = 90, laptop: int = 1
    ) -> subprocess.CompletedProcess[str]:
        """Any command on a laptop (its netns and mount namespace), KUBECONFIG set."""
        return subprocess.run(
            self.laptop_argv(*argv, laptop=laptop),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        return self.laptop("kubectl", *args, input=input, timeout=timeout)

    def kubectl_ok(self, *args: str, input: str | None = None, timeout: float = 90) -> str:
        result = self.kubectl(*args, input=input, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
        return result.stdout

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl_ok("get", "pod", "-n", namespace, name, "-o", "json")))

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


_shared: Cluster | None = None


def _wait_until_free(name: str, timeout: float = 300) -> None:
    """Another pytest session on this machine may be using the cluster: wait for it.

    ``up`` tears down leftovers it finds, which would pull a live cluster from under
    that other session; leftovers of a crash have no process in the node netns.
    """
    import time

    deadline = time.monotonic() + timeout
    from localcluster.cli import processes_in_netns

    while processes_in_netns(f"/run/netns/{name}-node"):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"local cluster {name} is in use by another test session; "
                "set TPENGINE_E2E_CLUSTER to another name to run side by side"
            )
        time.sleep(1)


@contextlib.contextmanager
def shared_cluster() -> Iterator[Cluster]:
    """The session's cluster: up on first use, down when the last user is done."""
    global _shared
    if _shared is None:
        _wait_until_free(NAME)
        home = Path(tempfile.mkdtemp(prefix="tpengine-e2e-home-"))
        env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
        cluster = Cluster(env=env, state_dir=home / ".config" / "tpengine" / "local-cluster" / NAME)
        _shared = cluster
        up = cluster.tp("local-cluster", "up", "--name", NAME, "--laptops", str(LAPTOPS))
        if up.returncode != 0:
            cluster.tp("local-cluster", "down", "--name", NAME)
            _shared = None
            shutil.rmtree(home, ignore_errors=True)
            raise RuntimeError(f"tp local-cluster up failed: {up.stdout}{up.stderr}")
    cluster = _shared
    cluster._users += 1
    try:
        yield cluster
    finally:
        cluster._users -= 1
        if cluster._users == 0:
            _shared = None
            cluster.tp("local-cluster", "down", "--name", NAME)
            shutil.rmtree(cluster.env["HOME"], ignore_errors=True)
