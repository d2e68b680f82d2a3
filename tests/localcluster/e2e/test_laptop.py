"""The laptop: its own netns, one shared mount namespace, its resolver, no cluster route."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.root, pytest.mark.e2e]


def test_laptop_resolver_answers_test_names_only(cluster: Any) -> None:
    resolv = cluster.laptop("cat", "/etc/resolv.conf")
    assert resolv.stdout.startswith("nameserver 127.0.0.53")
    code = (
        "import socket\n"
        "print(socket.gethostbyname('laptop.test'))\n"
        "try:\n    socket.gethostbyname('example.com')\nexcept OSError:\n    print('nxdomain')\n"
    )
    result = cluster.laptop("python3", "-c", code)
    assert result.stdout.split() == ["198.18.0.2", "nxdomain"], result.stderr


def test_every_laptop_process_sees_the_same_mounts(cluster: Any, tmp_path: Path) -> None:
    target = tmp_path / "laptop-mount"
    target.mkdir()
    made = cluster.laptop("mount", "-t", "tmpfs", "tpt-e2e", str(target))
    assert made.returncode == 0, made.stderr
    try:
        seen = cluster.laptop("grep", "-c", str(target), "/proc/self/mountinfo")
        assert seen.stdout.strip() == "1"  # a second, separate `exec` sees it
        assert str(target) not in Path("/proc/self/mountinfo").read_text()  # the host does not
    finally:
        cluster.laptop("umount", str(target))


def test_the_laptop_has_no_route_into_the_cluster(cluster: Any) -> None:
    code = (
        "import socket\n"
        "for ip in ('10.96.0.1', '10.244.0.2'):\n"
        "    try:\n        socket.create_connection((ip, 443), timeout=2)\n"
        "    except OSError as exc:\n        print(exc.errno)\n"
    )
    result = cluster.laptop("python3", "-c", code)
    assert result.stdout.split() == ["101", "101"]  # ENETUNREACH until `tp connect`
    assert "Server Version" in cluster.kubectl_ok("version")  # the API server is reachable
