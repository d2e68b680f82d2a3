"""kubeconfig resolution and its error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from tpengine.kube.kubeconfig import KubeconfigError, resolve_target

CONFIG = """
apiVersion: v1
kind: Config
current-context: tp
clusters:
- name: tp
  cluster: {server: "https://198.18.0.1:6443"}
contexts:
- name: tp
  context: {cluster: tp, user: admin}
- name: shop
  context: {cluster: tp, user: admin, namespace: shop}
- name: dangling
  context: {cluster: nowhere, user: admin}
users:
- name: admin
  user: {token: abc}
"""


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    path.write_text(CONFIG)
    return path


def test_current_context_and_namespaces(kubeconfig: Path) -> None:
    target = resolve_target(kubeconfig=str(kubeconfig))
    assert (target.context, target.server, target.namespace) == (
        "tp",
        "https://198.18.0.1:6443",
        "default",
    )
    assert resolve_target(kubeconfig=str(kubeconfig), context="shop").namespace == "shop"
    assert (
        resolve_target(kubeconfig=str(kubeconfig), context="shop", namespace="x").namespace == "x"
    )


def test_kubeconfig_env_list(
    kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{kubeconfig}")
    assert resolve_target().context == "tp"


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (None, {}, "does not exist"),
        ("clusters: [", {}, "not valid YAML"),
        ("- a list", {}, "not a kubeconfig"),
        (CONFIG, {"context": "nope"}, "context 'nope' is not in the kubeconfig"),
        (CONFIG, {"context": "dangling"}, "names cluster 'nowhere'"),
        (CONFIG.replace("current-context: tp", ""), {}, "no current-context"),
    ],
)
def test_errors_say_what_to_do(
    tmp_path: Path, content: str | None, kwargs: dict[str, str], message: str
) -> None:
    path = tmp_path / "config"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KubeconfigError, match=message):
        resolve_target(kubeconfig=str(path), **kwargs)
