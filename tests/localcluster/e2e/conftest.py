"""One local cluster (``tpt``) shared by every end-to-end test of the session.

See ``localcluster.node.testing``: another directory's conftest that defines its own
``cluster`` fixture with ``shared_cluster()`` gets this same cluster, not a second one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from localcluster.node.testing import Cluster, shared_cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("needs root and network namespaces")
    with shared_cluster() as c:
        yield c
