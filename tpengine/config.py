"""The client configuration: ``~/.config/tpengine/config.yml`` (``$XDG_CONFIG_HOME``).

Settings a developer would otherwise repeat on every command, in Telepresence's
``config.yml`` shape::

    cluster:
      defaultManagerNamespace: tpengine
      mappedNamespaces: [default, shop]
    routing:
      alsoProxySubnets: [192.0.2.0/24]
      neverProxySubnets: [10.96.0.0/24]
      allowConflictingSubnets: [10.0.0.0/8]
    images:
      image: registry.example/tpengine:0.1.0
    logLevels:
      engine: debug

Precedence (the design's): flags > environment (``TP_IMAGE``) > this file > defaults; a
flag given replaces the file's value, lists included. A file that does not parse, an
unknown key or a value of the wrong kind is refused with the file and key named, so a
typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tpengine.engine._paths import config_dir
from tpengine.engine._routes import CidrError, parse_cidrs
from tpengine.kube.kubeconfig import yaml_where

#: Log levels by Telepresence's names (``trace`` is Python's DEBUG), for the file's
#: ``logLevels`` and for ``tp loglevel``.
LEVELS = {
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # an RFC 1123 label


def is_namespace_name(name: str) -> bool:
    """Whether ``name`` can name a Kubernetes namespace (an RFC 1123 DNS label)."""
    return _NAMESPACE.fullmatch(name) is not None


class ConfigError(ValueError):
    """The configuration file is not usable; the message names the file and the key."""


@dataclass(frozen=True, kw_only=True)
class Config:
    manager_namespace: str = "tpengine"
    mapped_namespaces: tuple[str, ...] = ()
    also_proxy: tuple[str, ...] = ()
    never_proxy: tuple[str, ...] = ()
    allow_conflicting_subnets: tuple[str, ...] = ()
    image: str | None = None
    engine_log_level: str = "info"
    path: Path | None = field(default=None, compare=False)  # the file read, if any

    def to_yaml_shape(self) -> dict[str, Any]:
        """The effective settings, in the file's shape (what ``tp config view`` shows)."""
        return {
            "cluster": {
                "defaultManagerNamespace": self.manager_namespace,
                "mappedNamespaces": list(self.mapped_namespaces),
            },
            "routing": {
                "alsoProxySubnets": list(self.also_proxy),
                "neverProxySubnets": list(self.never_proxy),
                "allowConflictingSubnets": list(self.allow_conflicting_subnets),
            },
            "images": {"image": self.image},
            "logLevels": {"engine": self.engine_log_level},
        }


def config_path() -> Path:
    return config_dir() / "config.yml"


def load_config(path: Path | None = None) -> Config:
    """The file's settings over the defaults, ``TP_IMAGE`` over both; defaults alone
    when there is no file. Raises :class:`ConfigError`."""
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        data: Any = {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    else:
        import yaml  # only when there is a file

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML{yaml_where(exc)}") from None
    config = _from_data(data, path)
    image = os.environ.get("TP_IMAGE")
    return dataclasses.replace(config, image=image) if image else config


_SHAPE: dict[str, set[str]] = {
    "cluster": {"defaultManagerNamespace", "mappedNamespaces"},
    "routing": {"alsoProxySubnets", "neverProxySubnets", "allowConflictingSubnets"},
    "images": {"image"},
    "logLevels": {"engine"},
}


def _from_data(data: Any, path: Path) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(_SHAPE)})")
    for section, body in data.items():
        if section not in _SHAPE:
            raise ConfigError(f"{path}: unknown section {section!r} (known: {', '.join(_SHAPE)})")
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: {section} must be a mapping")
        for key in body:
            if key not in _SHAPE[section]:
                known = ", ".join(sorted(_SHAPE[section]))
                raise ConfigError(f"{path}: unknown key {section}.{key} (known: {known})")

    def get(section: str, key: str) -> Any:
        return (data.get(section) or {}).get(key)

    def names(key: str, value: Any) -> tuple[str, ...]:
        listed = _list(value, f"cluster.{key}", path)
        for name in listed:
            if not is_namespace_name(name):
                raise ConfigError(f"{path}: cluster.{key}: {name!r} is not a namespace name")
        return listed

    def cidrs(key: str) -> tuple[str, ...]:
        value = _list(get("routing", key), f"routing.{key}", path)
        try:
            parse_cidrs(value, f"{path}: routing.{key}:")  # the flags' own rule
        except CidrError as exc:
            raise ConfigError(str(exc)) from None
        return value

    manager_namespace = get("cluster", "defaultManagerNamespace") or "tpengine"
    if not isinstance(manager_namespace, str):
        raise ConfigError(f"{path}: cluster.defaultManagerNamespace must be a namespace name")
    names("defaultManagerNamespace", manager_namespace)
    level = get("logLevels", "engine") or "info"
    if not isinstance(level, str) or level.lower() not in LEVELS:
        raise ConfigError(f"{path}: logLevels.engine: {level!r} is not one of {', '.join(LEVELS)}")
    image = get("images", "image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise ConfigError(f"{path}: images.image must be an image reference")
    return Config(
        manager_namespace=manager_namespace,
        mapped_namespaces=names("mappedNamespaces", get("cluster", "mappedNamespaces")),
        also_proxy=cidrs("alsoProxySubnets"),
        never_proxy=cidrs("neverProxySubnets"),
        allow_conflicting_subnets=cidrs("allowConflictingSubnets"),
        image=image,
        engine_log_level=level.lower(),
        path=path if data else None,
    )


def _list(value: Any, key: str, path: Path) -> tuple[str, ...]:
    """A list of strings; one string counts as a list of one (YAML's ``key: a``)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: {key} must be a list of strings")
    return tuple(value)
