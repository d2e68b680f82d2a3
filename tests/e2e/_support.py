"""What the end-to-end tests share: running ``tp`` in the laptop and its network state."""

from __future__ import annotations

import subprocess
import sys
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
