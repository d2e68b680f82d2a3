"""Choose between a package's mypyc build and its Python sources, at import.

``./dev`` compiles the hot packages with mypyc (``_build.py``): each module gets a
``.so`` next to its ``.py``, which the import system prefers. A build is used only while
it matches the sources byte for byte (the hash its stamp records); after any edit the
whole group falls back to the sources (all or nothing: compiled modules of one group call
each other directly, a half-stale group would mix old and new code). Never compiled
itself: it must run before any module of the group is imported.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

#: What ``_build.py`` compiles: per package, the modules left as Python — the package
#: ``__init__`` (it chooses the build), the build and this guard; for the netstack also
#: its trio driver (``_stack``, ``_stream``, ``_device``, ``_udp_flow``, ``tun``,
#: ``pcap``): only the sans-IO core is compiled (~20% less CPU per connection).
GROUPS: dict[str, frozenset[str]] = {
    "tpengine.wire": frozenset({"__init__.py", "_build.py", "_compiled.py"}),
    "tpengine.netstack": frozenset(
        {
            "__init__.py",
            "_device.py",
            "_stack.py",
            "_stream.py",
            "_udp_flow.py",
            "pcap.py",
            "tun.py",
        }
    ),
}
_STAMP = ".mypyc-stamp"
_SO_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Import the listed modules from their ``.py`` even where a ``.so`` sits beside."""

    def __init__(self, modules: dict[str, Path]) -> None:
        self._modules = modules

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self._modules.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def compiled_sources(package: str, directory: Path) -> list[Path]:
    """The modules of ``package`` (in ``directory``) that ``_build.py`` compiles."""
    skip = GROUPS.get(package, GROUPS["tpengine.wire"])
    return sorted(p for p in directory.glob("*.py") if p.name not in skip)


def sources_digest(package: str, directory: Path) -> str:
    """The hash of a group's sources, as ``_build.py`` records it in the stamp."""
    h = hashlib.sha256()
    for path in compiled_sources(package, directory):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def select_build(package: str, directory: str) -> bool:
    """True when ``package``'s compiled modules are current and will be imported; else
    make its modules import from their sources."""
    d = Path(directory)
    if not (d / f"_native__mypyc{_SO_SUFFIX}").exists():
        return False
    try:
        recorded = (d / _STAMP).read_text().split()[0]
    except (OSError, IndexError):
        recorded = ""
    if recorded == sources_digest(package, d):
        return True
    modules = {f"{package}.{p.stem}": p for p in compiled_sources(package, d)}
    sys.meta_path.insert(0, _SourceFinder(modules))
    # No warning: a stale build is the normal state between an edit and the next
    # ``./dev`` run, and CLI output must not change with it. ``COMPILED`` and the
    # benchmarks say which build runs.
    return False
