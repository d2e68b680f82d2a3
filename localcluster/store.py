"""The cluster's in-memory object store (see ``localcluster.apiserver._store``)."""

from __future__ import annotations

from localcluster.apiserver._allocator import DNS_SERVICE_IP, KUBERNETES_SERVICE_IP
from localcluster.apiserver._errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    StoreError,
)
from localcluster.apiserver._store import Store, WatchEvent

__all__ = [
    "DNS_SERVICE_IP",
    "KUBERNETES_SERVICE_IP",
    "AlreadyExists",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "Gone",
    "Invalid",
    "NotFound",
    "Store",
    "StoreError",
    "WatchEvent",
]
