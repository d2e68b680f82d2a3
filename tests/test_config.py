"""~/.config/tpengine/config.yml: read, checked, shown by ``tp config view``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tpengine.config import Config, ConfigError, load_config

FULL = """
cluster:
  defaultManagerNamespace: tp-system
  mappedNamespaces: [default, shop]
routing:
  alsoProxySubnets: [192.0.2.0/24]
  neverProxySubnets: 10.96.0.0/24
  allowConflictingSubnets: [10.0.0.0/8]
images:
  image: registry.example/tpengine:1.2.3
logLevels:
  engine: Debug
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_no_file_means_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TP_IMAGE", raising=False)
    config = load_config(tmp_path / "absent.yml")
    assert config == Config()
    assert config.manager_namespace == "tpengine"


def test_every_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TP_IMAGE", raising=False)
    config = load_config(write(tmp_path, FULL))
    assert config.manager_namespace == "tp-system"
    assert config.mapped_namespaces == ("default", "shop")
    assert config.also_proxy == ("192.0.2.0/24",)
    assert config.never_proxy == ("10.96.0.0/24",)  # one string is a list of one
    assert config.allow_conflicting_subnets == ("10.0.0.0/8",)
    assert config.image == "registry.example/tpengine:1.2.3"
    assert config.engine_log_level == "debug"


def test_the_environment_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TP_IMAGE", "local/tpengine:dev")
    assert load_config(write(tmp_path, FULL)).image == "local/tpengine:dev"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cluster: [oops", "not valid YAML (line 1)"),
        ("- a\n- b\n", "expected a mapping of sections"),
        ("routes: {}", "unknown section 'routes'"),
        ("routing: {alsoProxy: [10.0.0.0/8]}", "unknown key routing.alsoProxy (known: "),
        ("routing: {alsoProxySubnets: [10.0.0.0/33]}", "'10.0.0.0/33' is not a CIDR"),
        ("routing: {neverProxySubnets: {a: b}}", "must be a list of strings"),
        ("cluster: {mappedNamespaces: [Shop]}", "'Shop' is not a namespace name"),
        ("cluster: {mappedNamespaces: [-shop]}", "'-shop' is not a namespace name"),
        ("cluster: {defaultManagerNamespace: [a]}", "must be a namespace name"),
        ("logLevels: {engine: loud}", "'loud' is not one of"),
        ("images: {image: ''}", "must be an image reference"),
    ],
)
def test_mistakes_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def tp(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TP_IMAGE"}
    env["XDG_CONFIG_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-c", "from tpengine.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_config_view_shows_what_is_in_effect(tmp_path: Path) -> None:
    empty = tp(tmp_path, "config", "view")
    assert empty.returncode == 0, empty.stderr
    assert "(not present: defaults)" in empty.stdout
    assert "defaultManagerNamespace: tpengine" in empty.stdout
    (tmp_path / "tpengine").mkdir()
    (tmp_path / "tpengine" / "config.yml").write_text(FULL)
    shown = json.loads(tp(tmp_path, "config", "view", "-o", "json").stdout)
    assert shown["cluster"]["mappedNamespaces"] == ["default", "shop"]
    assert shown["logLevels"] == {"engine": "debug"}


def test_a_broken_file_stops_connect_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "tpengine").mkdir()
    path = tmp_path / "tpengine" / "config.yml"
    path.write_text("routing: {alsoProxySubnets: [nonsense]}\n")
    # The bad kubeconfig is a second guard: nothing may ever connect from this namespace.
    result = tp(tmp_path, "connect", "--kubeconfig", str(tmp_path / "no-kubeconfig"))
    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"tp: {path}: routing.alsoProxySubnets: 'nonsense' is not a CIDR (for example 10.0.0.0/16)"
    )
