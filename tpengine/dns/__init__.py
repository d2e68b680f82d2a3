"""The engine's DNS resolver: cluster names through the manager, the rest upstream.

``NamePolicy`` decides which names are the cluster's; ``Resolver`` answers one query with
injected lookups and clock; ``serve_dns`` and ``UdpUpstream`` are its trio drivers.
"""

from tpengine.dns._cache import TtlCache
from tpengine.dns._policy import Classification, NamePolicy, Route, reverse_pointer_address
from tpengine.dns._resolver import (
    CLUSTER_TYPES,
    ClusterAnswer,
    ClusterLookup,
    Resolver,
    Upstream,
    UpstreamError,
    format_error,
)
from tpengine.dns._server import MAX_INFLIGHT, UdpUpstream, serve_dns, serve_dns_on

__all__ = [
    "CLUSTER_TYPES",
    "MAX_INFLIGHT",
    "Classification",
    "ClusterAnswer",
    "ClusterLookup",
    "NamePolicy",
    "Resolver",
    "Route",
    "TtlCache",
    "UdpUpstream",
    "Upstream",
    "UpstreamError",
    "format_error",
    "reverse_pointer_address",
    "serve_dns",
    "serve_dns_on",
]
