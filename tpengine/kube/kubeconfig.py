"""Reading kubeconfig as kubectl does, with errors a user can act on.

kubectl's rules (``kubectl config --help``): ``--kubeconfig`` wins; else ``$KUBECONFIG``
(a list of files joined with ':', merged with the first file winning for each name);
else ``~/.kube/config``. ``--context`` picks a context, else ``current-context``. The
namespace is ``-n`` or the context's namespace or ``default``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class KubeconfigError(Exception):
    """The kubeconfig cannot be used; the message says why and what to do."""


@dataclass(frozen=True, kw_only=True)
class KubeTarget:
    """Where to connect: the files read, the context, its cluster's server, the namespace."""

    paths: tuple[Path, ...]
    context: str
    cluster: str
    server: str
    namespace: str
    user: str


def kubeconfig_paths(flag: str | None = None) -> list[Path]:
    if flag:
        return [Path(flag).expanduser()]
    env = os.environ.get("KUBECONFIG")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [Path.home() / ".kube" / "config"]


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise KubeconfigError(
            f"kubeconfig {path} does not exist; pass --kubeconfig or set KUBECONFIG"
        ) from None
    except OSError as exc:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"kubeconfig {path} is not valid YAML{yaml_where(exc)}") from None
    if not isinstance(data, dict):
        raise KubeconfigError(f"kubeconfig {path} is not a kubeconfig (expected a mapping)")
    return data


def _named(entries: Any, key: str, path: Path) -> dict[str, dict[str, Any]]:
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise KubeconfigError(f"kubeconfig {path}: '{key}' must be a list")
    named: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            named.setdefault(entry["name"], entry.get(key.rstrip("s")) or {})
    return named


def resolve_target(
    *, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
) -> KubeTarget:
    """The connection target, or :class:`KubeconfigError` naming what is wrong."""
    paths = kubeconfig_paths(kubeconfig)
    existing = [p for p in paths if p.exists()] if not kubeconfig else paths
    if not existing:
        raise KubeconfigError(
            f"no kubeconfig at {', '.join(map(str, paths))}; pass --kubeconfig or set KUBECONFIG"
        )
    contexts: dict[str, dict[str, Any]] = {}
    clusters: dict[str, dict[str, Any]] = {}
    current = None
    for path in existing:
        data = _load(path)
        for name, value in _named(data.get("contexts"), "contexts", path).items():
            contexts.setdefault(name, value)
        for name, value in _named(data.get("clusters"), "clusters", path).items():
            clusters.setdefault(name, value)
        current = current or data.get("current-context") or None
    chosen = context or current
    if not chosen:
        raise KubeconfigError("the kubeconfig has no current-context; pass --context NAME")
    if chosen not in contexts:
        known = ", ".join(sorted(contexts)) or "none"
        raise KubeconfigError(f"context {chosen!r} is not in the kubeconfig (contexts: {known})")
    ctx = contexts[chosen]
    cluster_name = ctx.get("cluster")
    if cluster_name not in clusters:
        raise KubeconfigError(
            f"context {chosen!r} names cluster {cluster_name!r}, which is not in the kubeconfig"
        )
    server = clusters[cluster_name].get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise KubeconfigError(f"cluster {cluster_name!r} has no usable server URL")
    return KubeTarget(
        paths=tuple(existing),
        context=chosen,
        cluster=str(cluster_name),
        server=server,
        namespace=namespace or ctx.get("namespace") or "default",
        user=str(ctx.get("user") or ""),
    )


def yaml_where(exc: yaml.YAMLError) -> str:
    """`` (line N)`` of a YAML error that knows where it is, else nothing."""
    mark = getattr(exc, "problem_mark", None)
    return f" (line {mark.line + 1})" if mark is not None else ""
