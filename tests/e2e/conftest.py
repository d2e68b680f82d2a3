"""End-to-end tests of the product (connect, the library) in the local cluster shared by
the whole test session (see ``localcluster.node.testing.shared_cluster``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from localcluster.node.testing import Cluster, shared_cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("end-to-end tests need root; under CI=true this fails, not skips")
        pytest.skip("needs root and network namespaces")
    with shared_cluster() as c:
        yield c
