from __future__ import annotations

import ipaddress

import pytest

from tpengine.engine._routes import CidrError, parse_cidrs, routed_networks

n = ipaddress.ip_network


def test_cluster_plus_also_minus_never() -> None:
    routed = routed_networks(
        [n("10.96.0.0/12"), n("10.244.0.0/16")],
        also=[n("192.0.2.0/24")],
        never=[n("10.244.128.0/17")],
    )
    assert routed == [n("10.96.0.0/12"), n("10.244.0.0/17"), n("192.0.2.0/24")]


def test_never_covering_a_whole_network_removes_it() -> None:
    assert routed_networks([n("10.244.0.0/16")], never=[n("10.0.0.0/8")]) == []


def test_address_space_is_preserved_exactly() -> None:
    routed = routed_networks([n("10.96.0.0/12")], never=[n("10.100.1.0/24")])
    covered = sum(net.num_addresses for net in routed)
    assert covered == n("10.96.0.0/12").num_addresses - 256
    assert not any(net.overlaps(n("10.100.1.0/24")) for net in routed)


def test_parse_cidrs_accepts_lists_and_names_bad_ones() -> None:
    assert parse_cidrs(["10.0.0.0/8,fd00::/64"], "--also-proxy") == [
        n("10.0.0.0/8"),
        n("fd00::/64"),
    ]
    with pytest.raises(CidrError, match="--never-proxy '10.0.0.0/33' is not a CIDR"):
        parse_cidrs(["10.0.0.0/33"], "--never-proxy")
