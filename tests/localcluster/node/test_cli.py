"""``tp local-cluster``: what a user sees before any namespace is made."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from localcluster import cli


def tp(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    return subprocess.run(
        [sys.executable, "-c", "from tpengine.cli import main; main()", "local-cluster", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize("name", ["TP", "toolong7", "a-b", ""])
def test_invalid_names_are_refused_clearly(name: str, tmp_path: Path) -> None:
    result = tp("up", "--name", name, home=tmp_path)
    assert result.returncode == 1
    assert "invalid cluster name" in result.stderr and "1 to 6 lowercase" in result.stderr


def test_kubeconfig_prints_one_path(tmp_path: Path) -> None:
    result = tp("kubeconfig", "--name", "abc", home=tmp_path)
    assert result.stdout == f"{tmp_path}/.config/tpengine/local-cluster/abc/kubeconfig\n"


def test_status_of_a_cluster_that_is_not_up(tmp_path: Path) -> None:
    result = tp("status", "--name", "zq9", "-o", "json", home=tmp_path)
    assert result.returncode == 0
    assert '"state": "stopped"' in result.stdout


def test_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(cli.CliError, match="needs root"):
        cli.up("tp", echo=lambda _line: None)
    with pytest.raises(cli.CliError, match="needs root"):
        cli.exec_argv("tp", ["true"])


@pytest.mark.root
def test_exec_needs_a_running_cluster(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    result = tp("exec", "--name", "zq9", "--", "true", home=tmp_path)
    assert result.returncode == 1
    assert "not up" in result.stderr and "tp local-cluster up --name zq9" in result.stderr
