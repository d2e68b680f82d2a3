"""Suite-wide test policy.

Tests marked ``root`` need root and network namespaces. They skip when not run as root,
except under ``CI=true``, where a skip would hide a missing feature: there they fail.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("default")

IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is None or os.geteuid() == 0:
        return
    if IN_CI:
        pytest.fail("needs root and network namespaces; under CI=true this fails, not skips")
    pytest.skip("needs root and network namespaces")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that take the shared local cluster down run after every other test, so the
    cluster is brought up once per session."""
    last = [item for item in items if item.path.name == "test_zz_down.py"]
    if last:
        items[:] = [item for item in items if item.path.name != "test_zz_down.py"] + last
