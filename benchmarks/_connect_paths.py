"""The three ways from the laptop into the cluster that the connect benchmark compares.

Each is a context manager that sets its path up in the laptop (and node) namespaces only,
yields the DNS server that answers cluster names on that path, and undoes everything:

- ``direct_route``: a route for the pod and service CIDRs via the node (the limit);
- ``sshuttle``: an ``sshd -f CONFIG`` in the node netns and sshuttle (nat method) on the
  laptop, as in shared/reference/measurements.md;
- ``tp_connect``: ``tp connect`` with the traffic-manager already installed.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks._connect_cluster import VENV_BIN, BenchError, Cluster

NODE_IP = "198.18.0.1"
CIDRS = ("10.244.0.0/16", "10.96.0.0/12")
CLUSTER_DNS = "10.96.0.10"
TP_DNS = "198.19.0.1"


@dataclass(frozen=True, kw_only=True)
class Way:
    name: str
    dns_server: str | None
    connect_seconds: float | None = None
    notes: tuple[str, ...] = ()


def _ip(cluster: Cluster, *args: str) -> None:
    subprocess.run(["ip", "-n", f"{cluster.name}-laptop", *args], check=True)


@contextlib.contextmanager
def _routes(cluster: Cluster, *how: str) -> Iterator[None]:
    added: list[str] = []
    try:
        for cidr in CIDRS:
            _ip(cluster, "route", "add", cidr, *how)
            added.append(cidr)
        yield
    finally:
        for cidr in added:
            _ip(cluster, "route", "del", cidr, *how)


@contextlib.contextmanager
def direct_route(cluster: Cluster) -> Iterator[Way]:
    """The kernel all the way: laptop veth → node (nftables DNAT for ClusterIPs) → pod."""
    with _routes(cluster, "via", NODE_IP):
        yield Way(name="direct", dns_server=CLUSTER_DNS)


def _stop(proc: subprocess.Popen[bytes], *, grace: float = 10) -> None:
    """End a process this benchmark started, by its pid: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _sshd_config(tmp: Path) -> Path:
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / key)], check=True
        )
    (tmp / "authorized_keys").write_bytes((tmp / "client_key.pub").read_bytes())
    config = tmp / "sshd_config"
    config.write_text(
        f"ListenAddress {NODE_IP}\nPort 22\nHostKey {tmp / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPidFile {tmp / 'sshd.pid'}\n"
        "StrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nUseDNS no\n"
    )
    return config


@contextlib.contextmanager
def _sshd(cluster: Cluster, tmp: Path) -> Iterator[None]:
    """sshd in the node netns. sshd needs /run/sshd (its privilege separation dir): it
    gets a private /run (tmpfs in its own mount namespace), so nothing is made on the
    host."""
    config = _sshd_config(tmp)
    script = (
        "mount -t tmpfs tmpfs /run && mkdir -m 755 /run/sshd && "
        f"exec /usr/sbin/sshd -D -e -f {config}"
    )
    log = (tmp / "sshd.log").open("wb")
    proc = subprocess.Popen(
        cluster.node("unshare", "--mount", "--propagation", "private", "sh", "-c", script),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while b"Server listening" not in (tmp / "sshd.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"sshd did not start: {(tmp / 'sshd.log').read_text()[-400:]}")
            time.sleep(0.05)
        yield
    finally:
        _stop(proc)
        log.close()


@contextlib.contextmanager
def sshuttle(cluster: Cluster) -> Iterator[Way]:
    """sshuttle 1.1.1 over ssh into the node netns; ``--dns`` sends the laptop
    resolver's queries to the cluster DNS from the node."""
    with tempfile.TemporaryDirectory(prefix=f"{cluster.name}-ssh-") as tmp_name:
        tmp = Path(tmp_name)
        ssh = (
            f"ssh -i {tmp / 'client_key'} -o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
        )
        # measurements.md: a route that goes nowhere by itself, so connect() has a route;
        # sshuttle's nat rules redirect the connections before it is used.
        with _sshd(cluster, tmp), _routes(cluster, "dev", "lo"):
            log = (tmp / "sshuttle.log").open("wb")
            argv = ["sshuttle", "--method", "nat", "--dns", "--to-ns", CLUSTER_DNS]
            proc = subprocess.Popen(
                cluster.laptop_argv(*argv, "-e", ssh, "-r", f"root@{NODE_IP}", *CIDRS),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                _wait_for(proc, tmp / "sshuttle.log", b"Connected to server.", "sshuttle")
                _wait_rules(cluster, present=True)
                resolv = cluster.laptop("cat", "/etc/resolv.conf").stdout
                nameserver = next(
                    line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver")
                )
                yield Way(name="sshuttle", dns_server=nameserver)
            finally:
                _stop(proc)
                log.close()
                _wait_rules(cluster, present=False)


def _wait_for(proc: subprocess.Popen[bytes], log: Path, text: bytes, what: str) -> None:
    deadline = time.monotonic() + 30
    while text not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"{what} did not start: {log.read_text()[-600:]}")
        time.sleep(0.05)


def _sshuttle_rules(cluster: Cluster) -> bool:
    return "sshuttle" in cluster.laptop("iptables-save", check=False).stdout


def _wait_rules(cluster: Cluster, *, present: bool, timeout: float = 15) -> None:
    """sshuttle's firewall process installs its rules just after "Connected to server."
    and removes them just after sshuttle exits: wait for both."""
    deadline = time.monotonic() + timeout
    while _sshuttle_rules(cluster) != present:
        if time.monotonic() > deadline:
            state = "installed no" if present else "left its"
            raise BenchError(f"sshuttle {state} iptables rules in {cluster.name}-laptop")
        time.sleep(0.1)


@contextlib.contextmanager
def tp_connect(cluster: Cluster) -> Iterator[Way]:
    """``tp install`` (not timed), then ``tp connect -n default`` (timed), ``tp quit``."""
    try:
        cluster.tp("install", timeout=60)
    except (BenchError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"tp install: {exc}; {_manager_state(cluster)}") from None
    deadline = time.monotonic() + 30
    while True:
        ready = cluster.kubectl(
            "get", "deployment", "-n", "tpengine", "traffic-manager",
            "-o", "jsonpath={.status.readyReplicas}",
        )  # fmt: skip
        if ready.strip() == "1":
            break
        if time.monotonic() > deadline:
            raise BenchError(f"the traffic-manager is not ready: {_manager_state(cluster)}")
        time.sleep(0.3)
    notes: list[str] = []
    try:
        seconds = _timed_connect(cluster, notes)
        yield Way(name="tp", dns_server=TP_DNS, connect_seconds=seconds, notes=tuple(notes))
    finally:
        cluster.laptop(str(VENV_BIN / "tp"), "quit", check=False)


def _timed_connect(cluster: Cluster, notes: list[str]) -> float:
    """``tp connect`` wall time. A failed first attempt is noted (with the engine log's
    last lines) and tried once more, so one flake does not void the tp figures."""
    for attempt in (1, 2):
        started = time.perf_counter()
        try:
            cluster.tp("connect", "-n", "default", timeout=90)
            return time.perf_counter() - started
        except (BenchError, subprocess.TimeoutExpired) as exc:
            if attempt == 2:
                raise
            log = cluster.home / ".cache" / "tpengine" / "logs" / "engine.log"
            tail = " | ".join(log.read_text().splitlines()[-3:]) if log.exists() else ""
            notes.append(f"tp connect attempt 1 failed: {exc} [engine.log: {tail}]")
            cluster.laptop(str(VENV_BIN / "tp"), "quit", check=False)
    raise AssertionError("unreachable")


def _manager_state(cluster: Cluster) -> str:
    """The traffic-manager pod's status and last log line, for a failure message."""
    pods = cluster.laptop("kubectl", "get", "pods", "-n", "tpengine", "--no-headers", check=False)
    logs = cluster.laptop(
        "kubectl", "logs", "-n", "tpengine", "deploy/traffic-manager", "--tail", "2", check=False
    )
    return f"pods: {pods.stdout.strip()!r}; log: {(logs.stdout or logs.stderr).strip()!r}"
