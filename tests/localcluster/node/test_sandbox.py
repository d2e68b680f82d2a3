"""The node's namespaces and the launcher, for real (root): netns ``tpu-*``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.node import ClusterNames, create_cluster, existing_namespaces, remove_cluster
from localcluster.node._ns import call_in_netns, socket_in_netns
from localcluster.node._process import launcher_argv
from localcluster.node._topology import create_pod_network

pytestmark = pytest.mark.root
NAMES = ClusterNames(name="tpu")


@pytest.fixture
def pod_sandbox(tmp_path: Path) -> Iterator[tuple[int, str, Path]]:
    remove_cluster(NAMES)
    sandbox = None
    try:
        create_cluster(NAMES)
        netns, ip = call_in_netns(
            f"/run/netns/{NAMES.node_ns}", lambda: create_pod_network(NAMES, 1)
        )
        (tmp_path / "resolv.conf").write_text("nameserver 10.96.0.10\n")
        spec = {
            "netns": netns,
            "hostname": "unit-pod",
            "binds": [[str(tmp_path / "resolv.conf"), "/etc/resolv.conf"]],
        }
        sandbox = subprocess.Popen(
            launcher_argv("sandbox", spec), stdout=subprocess.PIPE, text=True
        )
        assert sandbox.stdout is not None
        pid1 = int(sandbox.stdout.readline())
        yield pid1, ip, tmp_path
    finally:
        if sandbox is not None:
            sandbox.send_signal(signal.SIGTERM)
            sandbox.wait(timeout=10)
        remove_cluster(NAMES)
    assert existing_namespaces(NAMES) == []


def run_in_pod(
    pid1: int, tmp_path: Path, script: str, **extra: object
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "vol").mkdir(exist_ok=True)
    (tmp_path / "vol" / "f").write_text("volume file")
    (tmp_path / "scratch").mkdir(exist_ok=True)
    spec = {
        "target_pid": pid1,
        "argv": ["sh", "-c", script],
        "env": {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "X": "from-env"},
        "workdir": "/tmp",
        "mounts": [{"src": str(tmp_path / "vol"), "dst": "/etc/unit-web", "ro": True}],
        "scratch": str(tmp_path / "scratch"),
        # The overlay that makes /etc/unit-web hides the sandbox's binds below /etc.
        "pod_binds": [[str(tmp_path / "resolv.conf"), "/etc/resolv.conf"]],
        **extra,
    }
    return subprocess.run(
        launcher_argv("container", spec), capture_output=True, text=True, timeout=30
    )


def test_container_sees_its_pod_namespaces_and_volumes(pod_sandbox: tuple[int, str, Path]) -> None:
    pid1, ip, tmp_path = pod_sandbox
    result = run_in_pod(
        pid1,
        tmp_path,
        "hostname; cat /etc/resolv.conf; echo $X; pwd; cat /etc/unit-web/f; echo; "
        "touch /etc/unit-web/g 2>/dev/null || echo read-only; cat /proc/1/cmdline | tr '\\0' ' '; echo; "
        "ip -o -4 addr show eth0; exit 3",
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 3
    assert lines[:6] == [
        "unit-pod",
        "nameserver 10.96.0.10",
        "from-env",
        "/tmp",
        "volume file",
        "read-only",
    ]
    assert "_launch.py sandbox" in lines[6]  # PID 1 of the pod's own PID namespace
    assert f"inet {ip}/32" in lines[7]
    assert not Path("/etc/unit-web").exists()  # the mount point lives only in the container


def test_non_root_user_gets_the_capabilities_asked_for(pod_sandbox: tuple[int, str, Path]) -> None:
    pid1, _, tmp_path = pod_sandbox
    script = "id -u; ip addr add 10.9.9.9/32 dev lo && echo added"
    with_cap = run_in_pod(pid1, tmp_path, script, uid=1000, gid=1000, caps=["NET_ADMIN"])
    assert with_cap.stdout.split() == ["1000", "added"], with_cap.stderr
    without = run_in_pod(pid1, tmp_path, script, uid=1000, gid=1000)
    assert without.stdout.split() == ["1000"]


def test_missing_command_exits_127(pod_sandbox: tuple[int, str, Path]) -> None:
    pid1, _, tmp_path = pod_sandbox
    spec = {
        "target_pid": pid1,
        "argv": ["no-such-command-here"],
        "env": {"PATH": "/bin"},
        "scratch": str(tmp_path),
    }
    result = subprocess.run(
        launcher_argv("container", spec), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 127
    assert "no-such-command-here" in result.stderr


def test_pod_reaches_the_node_over_its_routed_veth(pod_sandbox: tuple[int, str, Path]) -> None:
    pid1, ip, tmp_path = pod_sandbox
    listener = socket_in_netns(f"/run/netns/{NAMES.node_ns}", socket.AF_INET, socket.SOCK_STREAM)
    with listener:
        listener.bind(("198.18.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        peers: list[str] = []

        def accept() -> None:
            conn, peer = listener.accept()
            peers.append(peer[0])
            conn.sendall(b"hello pod")
            conn.close()

        thread = threading.Thread(target=accept)
        thread.start()
        code = f"import socket; print(socket.create_connection(('198.18.0.1', {port}), timeout=5).recv(100).decode())"
        result = run_in_pod(pid1, tmp_path, f'{sys.executable} -I -c "{code}"')
        thread.join(timeout=10)
    assert result.stdout.strip() == "hello pod", result.stderr
    assert peers == [ip]


def test_killing_pid1_ends_every_process_of_the_pod(pod_sandbox: tuple[int, str, Path]) -> None:
    pid1, _, tmp_path = pod_sandbox
    spec = {
        "target_pid": pid1,
        "argv": ["sleep", "300"],
        "env": {"PATH": "/bin:/usr/bin"},
        "scratch": str(tmp_path),
    }
    r, w = os.pipe()
    proc = subprocess.Popen(launcher_argv("container", {**spec, "pid_fd": w}), pass_fds=(w,))
    os.close(w)
    child = int(os.read(r, 32))
    os.close(r)
    os.kill(pid1, signal.SIGKILL)
    assert proc.wait(timeout=10) == 128 + signal.SIGKILL
    assert not Path(f"/proc/{child}").exists()


def test_the_pod_has_its_own_tmp(pod_sandbox: tuple[int, str, Path]) -> None:
    pid1, _, tmp_path = pod_sandbox
    (tmp_path / "podtmp").mkdir()
    result = run_in_pod(
        pid1,
        tmp_path,
        "echo hi > /tmp/unit-file; ls /tmp; cat /etc/unit-web/f",
        tmp=str(tmp_path / "podtmp"),
        mounts=[
            {"src": str(tmp_path / "vol"), "dst": "/etc/unit-web"},
            {"src": str(tmp_path / "vol"), "dst": "/tmp/sub/dir", "ro": True},
        ],
    )
    assert result.stdout.split() == ["sub", "unit-file", "volume", "file"], result.stderr
    assert (tmp_path / "podtmp" / "unit-file").read_text() == "hi\n"
    assert not Path("/tmp/unit-file").exists()
    # Paths the pod must keep seeing (a project checked out under /tmp) stay visible.
    kept = run_in_pod(
        pid1, tmp_path, f"ls {tmp_path}/vol", tmp=str(tmp_path / "podtmp"), keep=[str(tmp_path)]
    )
    assert kept.stdout.split() == ["f"], kept.stderr
    shm = run_in_pod(pid1, tmp_path, "touch /dev/shm/unit-shm && df -P /dev/shm | tail -1")
    assert "65536" in shm.stdout, shm.stderr
    assert not Path("/dev/shm/unit-shm").exists()


def test_a_missing_working_dir_is_made_in_the_container_only(
    pod_sandbox: tuple[int, str, Path],
) -> None:
    pid1, _, tmp_path = pod_sandbox
    result = run_in_pod(pid1, tmp_path, "pwd", workdir="/etc/unit-app/src")
    assert result.stdout == "/etc/unit-app/src\n", result.stderr
    assert not Path("/etc/unit-app").exists()
