"""nox sessions, run inside the project's .venv by ./dev (nox --no-venv)."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "none"
nox.options.error_on_missing_interpreters = False

LINT_PATHS = ["tpengine", "agent", "manager", "localcluster", "tests", "benchmarks", "noxfile.py"]


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """ruff: style and the ASYNC rules."""
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)


@nox.session(python=False)
def typecheck(session: nox.Session) -> None:
    """mypy: strict on tpengine.wire, checked everywhere else."""
    session.run("mypy")


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The whole suite: unit, property, root/netns and end-to-end tests."""
    session.run("pytest", "-q", *session.posargs)


@nox.session(python=False)
def e2e(session: nox.Session) -> None:
    """Only the end-to-end tests against the local cluster."""
    session.run("pytest", "-q", "-m", "e2e", *session.posargs)


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """Benchmarks: ratios against baselines measured in the same run."""
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=False)
def demo(session: nox.Session) -> None:
    """The main job against the built-in local cluster."""
    session.run("python", "-m", "tpengine.demo", *session.posargs)
