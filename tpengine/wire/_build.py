"""Compile tpengine's hot modules with mypyc, in place (``./dev`` runs this).

Run as a script, never imported by the package: ``python tpengine/wire/_build.py``.
The pure-Python sources stay the source of truth; the compiled modules are a cache of
them. Each package of ``_compiled.GROUPS`` is built on its own (one mypyc run each, so
one group calls another through Python and each may fall back to its sources alone): a
shared library ``<package>/_native__mypyc.*.so`` plus one small ``<module>.*.so`` per
source module, which Python's import system prefers over the ``.py`` next to it.
``_compiled.py`` (imported first by each package's ``__init__``) ignores them all when
any source of the group changed after the build, so a stale build never runs.

Up to date (the stamp holds the hash of every source, Python's and mypy's versions):
nothing is done. Otherwise the group is built in a temporary directory and each
artifact moved into place with ``os.replace``: a process that has the old library
mapped keeps it intact (overwriting a mapped ``.so`` in place would crash it).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
STAMP = ".mypyc-stamp"
SO_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"


def sources(package: str) -> list[Path]:
    found: list[Path] = _compiled().compiled_sources(package, _directory(package))
    return found


def _directory(package: str) -> Path:
    return ROOT.joinpath(*package.split("."))


def stamp_text(package: str) -> str:
    """What a build of ``package`` depends on: the digest of its sources (first: the
    import-time check of ``_compiled.py`` reads only that), Python's and mypy's versions."""
    import mypy.version

    toolchain = f"python={sys.version.split()[0]} mypy={mypy.version.__version__}"
    return f"{_compiled().sources_digest(package, _directory(package))} {toolchain}\n"


@functools.cache
def _compiled() -> ModuleType:
    """``_compiled.py`` loaded by path: importing the package would load its build."""
    spec = importlib.util.spec_from_file_location(
        "_tpw_compiled", Path(__file__).with_name("_compiled.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def artifacts(package: str) -> list[Path]:
    d = _directory(package)
    return [d / f"_native__mypyc{SO_SUFFIX}"] + [d / (p.stem + SO_SUFFIX) for p in sources(package)]


def up_to_date(package: str) -> bool:
    stamp = _directory(package) / STAMP
    try:
        recorded = stamp.read_text()
    except FileNotFoundError:
        return False
    return recorded == stamp_text(package) and all(p.exists() for p in artifacts(package))


def build(package: str) -> None:
    from mypyc.build import mypycify
    from setuptools import setup

    group = package + "._native"
    paths = [str(p) for p in sources(package)]
    stamp = stamp_text(package)  # before compiling: an edit meanwhile leaves it stale
    (ROOT / "build").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tpw-mypyc-", dir=ROOT / "build") as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # no pyproject.toml here: setuptools must not read the project's
        try:
            # mypy finds no config file here: the module names come from the paths.
            extensions = mypycify(
                ["--follow-imports=silent", "--ignore-missing-imports", *paths],
                opt_level="3",
                separate=[(paths, group)],
                target_dir=str(Path(tmp) / "c"),
            )
            setup(
                name="tpengine-native",
                ext_modules=extensions,
                script_args=["-q", "build_ext", "--build-lib", "lib", "--build-temp", "obj"],
            )
        finally:
            os.chdir(cwd)
        built = Path(tmp) / "lib"
        for target in artifacts(package):
            made = built / target.relative_to(ROOT)
            staged = target.with_name(target.name + ".tmp")
            shutil.copyfile(made, staged)
            os.replace(staged, target)  # atomic: a mapped old library stays valid
    (_directory(package) / STAMP).write_text(stamp)


def clean(package: str) -> None:
    for path in [*artifacts(package), _directory(package) / STAMP]:
        path.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    groups = list(_compiled().GROUPS)
    if argv == ["--clean"]:
        for package in groups:
            clean(package)
        return 0
    for package in argv or groups:
        if up_to_date(package):
            continue
        started = time.monotonic()
        print(f"==> mypyc: compiling {package}", file=sys.stderr, flush=True)
        build(package)
        print(
            f"==> mypyc: {package} compiled in {time.monotonic() - started:.0f} s",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
