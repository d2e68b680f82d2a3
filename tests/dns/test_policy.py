"""Which names go to the cluster, under which FQDN (Kubernetes DNS naming)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpengine.dns import NamePolicy, Route, reverse_pointer_address

POLICY = NamePolicy(
    namespace="default",
    namespaces=frozenset({"default", "tpengine", "shop"}),
    cluster_networks=(
        ipaddress.ip_network("10.96.0.0/12"),
        ipaddress.ip_network("10.244.0.0/16"),
    ),
)


@pytest.mark.parametrize(
    ("qname", "route", "names"),
    [
        ("web", Route.CANDIDATE, ("web.default.svc.cluster.local",)),
        ("web.", Route.CANDIDATE, ("web.default.svc.cluster.local",)),
        ("WEB.Shop", Route.CANDIDATE, ("web.shop.svc.cluster.local",)),
        ("web.shop.svc", Route.DEFINITE, ("web.shop.svc.cluster.local",)),
        ("web.shop.svc.cluster.local.", Route.DEFINITE, ("web.shop.svc.cluster.local",)),
        ("db-0.db.shop", Route.CANDIDATE, ("db-0.db.shop.svc.cluster.local",)),
        ("db-0.db", Route.CANDIDATE, ("db-0.db.default.svc.cluster.local",)),
        ("example.com", Route.UPSTREAM, ()),
        ("www.example.com", Route.UPSTREAM, ()),
        ("web.nosuchns.svc", Route.UPSTREAM, ()),
        ("7.0.96.10.in-addr.arpa", Route.DEFINITE, ("7.0.96.10.in-addr.arpa",)),
        ("1.0.0.127.in-addr.arpa", Route.UPSTREAM, ()),
        ("", Route.UPSTREAM, ()),
    ],
)
def test_classify(qname: str, route: Route, names: tuple[str, ...]) -> None:
    verdict = POLICY.classify(qname)
    assert verdict.route is route
    assert verdict.cluster_names == names


def test_connected_namespace_counts_as_known_before_the_manager_lists_namespaces() -> None:
    policy = NamePolicy(namespace="shop")
    assert policy.classify("web.shop").route is Route.CANDIDATE


def test_reverse_pointer_address_v6() -> None:
    address = ipaddress.IPv6Address("fd00::1")
    assert reverse_pointer_address(address.reverse_pointer) == address
    assert reverse_pointer_address("1.ip6.arpa") is None
    assert reverse_pointer_address("300.1.1.1.in-addr.arpa") is None


@given(st.text(max_size=300))
def test_any_name_classifies(qname: str) -> None:
    verdict = POLICY.classify(qname)
    assert verdict.route in Route
    if verdict.route is Route.UPSTREAM:
        assert verdict.cluster_names == ()
