"""tp connect refuses bad input with one clear line and leaves nothing behind."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._support import TP, laptop_state

pytestmark = [pytest.mark.root, pytest.mark.e2e]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--context", "nope"], "context 'nope' is not in the kubeconfig"),
        (["--kubeconfig", "/nonexistent"], "does not exist"),
        (["-n", "no-such-namespace"], "namespace 'no-such-namespace' does not exist"),
        (["--also-proxy", "10.0.0.0/33"], "is not a CIDR"),
        (["--mapped-namespaces", "default,Team_A"], "'Team_A' is not a namespace name"),
    ],
)
def test_bad_input_is_one_clear_line(cluster: Any, args: list[str], message: str) -> None:
    before = laptop_state(cluster)
    result = cluster.laptop(*TP, "connect", *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr
    assert laptop_state(cluster) == before


def test_connect_runs_a_command_then_quits(cluster: Any) -> None:
    before = laptop_state(cluster)
    # The API server's own Service: there in every cluster, whatever ran before.
    result = cluster.laptop(
        *TP, "connect", "-n", "default", "--",
        "curl", "-sSk", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
        "https://kubernetes/version",
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(("200", "401", "403")), result.stdout
    failing = cluster.laptop(
        *TP, "connect", "-n", "default", "--", "sh", "-c", "exit 3", timeout=120
    )
    assert failing.returncode == 3  # the command's exit code becomes tp's
    assert laptop_state(cluster) == before
    assert "Not running" in cluster.laptop(*TP, "status").stdout


def test_gather_logs_zips_the_engine_log(cluster: Any, tmp_path: Any) -> None:
    import zipfile

    target = tmp_path / "logs.zip"
    result = cluster.laptop(*TP, "gather-logs", "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert "engine.log" in zipfile.ZipFile(target).namelist()


def test_unreachable_api_server_fails_within_a_timeout(cluster: Any, tmp_path: Any) -> None:
    import time

    source = cluster.tp("local-cluster", "kubeconfig", "--name", cluster.name).stdout.strip()
    broken = tmp_path / "kubeconfig"
    with open(source) as f:
        broken.write_text(f.read().replace("https://198.18.0.1:6443", "https://198.18.0.1:1"))
    before = laptop_state(cluster)
    started = time.monotonic()
    result = cluster.laptop(*TP, "connect", "--kubeconfig", str(broken), timeout=60)
    assert result.returncode != 0
    assert "cannot reach the API server at https://198.18.0.1:1" in result.stderr
    assert time.monotonic() - started < 30
    assert laptop_state(cluster) == before


def test_no_permission_to_start_the_helper(cluster: Any, tmp_path: Any) -> None:
    import os
    import shutil

    source = cluster.tp("local-cluster", "kubeconfig", "--name", cluster.name).stdout.strip()
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(source, home / "kubeconfig")
    os.chmod(tmp_path, 0o755)
    os.chmod(home, 0o777)
    os.chmod(home / "kubeconfig", 0o644)
    before = laptop_state(cluster)
    result = cluster.laptop(
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        # Only so the uid can read a .venv under a private directory such as /root
        # (CI may clone there); it grants no network privilege.
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
        "env",
        f"HOME={home}",
        f"KUBECONFIG={home / 'kubeconfig'}",
        *TP,
        "connect",
        timeout=60,
    )
    assert result.returncode != 0
    assert "privileged helper" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr
    assert laptop_state(cluster) == before


def test_a_subnet_the_laptop_already_routes_is_refused_unless_allowed(cluster: Any) -> None:
    """A VPN or bridge route inside the cluster's service subnet: tp connect refuses to
    take it over (and leaves nothing behind) unless --allow-conflicting-subnets says so;
    then the cluster wins every lookup in it and the laptop's route stays."""
    added = cluster.laptop("ip", "route", "add", "10.96.0.0/16", "dev", "lo")
    assert added.returncode == 0, added.stderr
    try:
        before = laptop_state(cluster)
        refused = cluster.laptop(*TP, "connect", "-n", "default", timeout=120)
        assert refused.returncode != 0
        error = refused.stderr.strip().splitlines()[-1]  # after the progress lines
        assert error.startswith("tp: the cluster's subnet 10.96.0.0/12 overlaps the route")
        assert "10.96.0.0/16 dev lo" in error
        assert "--allow-conflicting-subnets 10.96.0.0/12" in error
        assert laptop_state(cluster) == before

        allowed = cluster.laptop(
            *TP, "connect", "-n", "default", "--allow-conflicting-subnets", "10.96.0.0/12",
            timeout=120,
        )  # fmt: skip
        try:
            assert allowed.returncode == 0, allowed.stderr
            tun = json.loads(cluster.laptop(*TP, "status", "-o", "json").stdout)["network"]["tun"]
            assert f"dev {tun}" in cluster.laptop("ip", "route", "get", "10.96.0.1").stdout
            reached = cluster.laptop(
                "curl", "-sk", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
                "https://10.96.0.1/version",
            )  # fmt: skip
            assert reached.stdout in {"200", "401", "403"}  # the API server answered
        finally:
            assert cluster.laptop(*TP, "quit").returncode == 0
        assert laptop_state(cluster) == before  # the laptop's own route is still there
    finally:
        cluster.laptop("ip", "route", "del", "10.96.0.0/16", "dev", "lo")


def test_mapped_namespaces_limit_what_resolves_through_the_cluster(cluster: Any) -> None:
    before = laptop_state(cluster)
    connected = cluster.laptop(
        *TP, "connect", "-n", "default", "--mapped-namespaces", "default", timeout=120
    )
    try:
        assert connected.returncode == 0, connected.stderr
        status = cluster.laptop(*TP, "status").stdout
        assert re.search(r"^  Mapped namespaces +: default$", status, re.M), status
        assert cluster.laptop("getent", "hosts", "kubernetes.default").returncode == 0
        # kube-system is not mapped: its names are not the cluster's to answer.
        assert cluster.laptop("getent", "hosts", "kube-dns.kube-system").returncode != 0
    finally:
        assert cluster.laptop(*TP, "quit").returncode == 0
    assert laptop_state(cluster) == before


def test_the_config_file_sets_what_flags_do_not(cluster: Any) -> None:
    config = Path(cluster.env["XDG_CONFIG_HOME"]) / "tpengine" / "config.yml"
    config.write_text(
        "routing: {neverProxySubnets: [10.244.0.0/16]}\ncluster: {mappedNamespaces: [default]}\n"
    )
    try:
        assert cluster.laptop(*TP, "connect", "-n", "default", timeout=120).returncode == 0
        try:
            status = json.loads(cluster.laptop(*TP, "status", "-o", "json").stdout)
            assert status["network"]["subnets"] == ["10.96.0.0/12"]  # pods never proxied
            assert status["engine"]["mapped_namespaces"] == ["default"]
        finally:
            assert cluster.laptop(*TP, "quit").returncode == 0
        # A flag replaces the file's list.
        connected = cluster.laptop(
            *TP, "connect", "-n", "default", "--never-proxy", "10.96.0.0/12", timeout=120
        )
        assert connected.returncode == 0, connected.stderr
        try:
            status = json.loads(cluster.laptop(*TP, "status", "-o", "json").stdout)
            assert status["network"]["subnets"] == ["10.244.0.0/16"]
        finally:
            assert cluster.laptop(*TP, "quit").returncode == 0
    finally:
        config.unlink()
