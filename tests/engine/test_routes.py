from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpengine.engine._routes import (
    CidrError,
    LaptopRoute,
    parse_cidrs,
    resolve_conflicts,
    routed_networks,
)

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


# -- conflicts with the laptop's own routes --------------------------------------------


def route(text: str) -> LaptopRoute:
    return LaptopRoute(network=ipaddress.ip_network(text.split()[0]), text=text)


PODS = ipaddress.ip_network("10.244.0.0/16")


def test_unrelated_and_default_routes_are_no_conflict() -> None:
    laptop = [route("0.0.0.0/0 via 192.168.1.1 dev wlan0"), route("172.17.0.0/16 dev docker0")]
    assert resolve_conflicts([PODS], laptop) == ([PODS], [])


def test_a_vpn_route_around_the_cluster_subnet_is_refused() -> None:
    vpn = route("10.0.0.0/8 via 10.8.0.1 dev tun0")
    wanted, conflicts = resolve_conflicts([PODS], [vpn])
    assert wanted == []
    assert [(c.network, c.route) for c in conflicts] == [(PODS, vpn)]
    text = str(conflicts[0])
    assert "10.244.0.0/16 overlaps the route 10.0.0.0/8 via 10.8.0.1 dev tun0" in text
    assert "--allow-conflicting-subnets 10.244.0.0/16" in text
    assert "--never-proxy 10.0.0.0/8" in text


def test_allowed_wider_route_leaves_ours_as_it_is() -> None:
    vpn = route("10.0.0.0/8 dev tun0")
    assert resolve_conflicts([PODS], [vpn], [ipaddress.ip_network("10.0.0.0/8")]) == ([PODS], [])


def test_allowed_inner_route_is_outranked() -> None:
    bridge = route("10.244.1.0/24 dev br0")
    wanted, conflicts = resolve_conflicts([PODS], [bridge], [PODS])
    assert conflicts == []
    assert ipaddress.ip_network("10.244.1.0/25") in wanted
    assert ipaddress.ip_network("10.244.1.128/25") in wanted
    assert all(not n.overlaps(bridge.network) or n.prefixlen > 24 for n in wanted)


def test_allowed_equal_route_is_outranked_by_its_halves() -> None:
    same = route("10.244.0.0/16 dev br0")
    wanted, _ = resolve_conflicts([PODS], [same], [PODS])
    assert wanted == list(PODS.subnets(prefixlen_diff=1))


@given(
    inner=st.lists(
        st.tuples(st.integers(0, 2**16 - 1), st.integers(17, 31)).map(
            lambda t: ipaddress.ip_network((int(PODS.network_address) + t[0], t[1]), strict=False)
        ),
        max_size=4,
    )
)
def test_allowed_pieces_cover_exactly_and_win_every_lookup(
    inner: list[ipaddress.IPv4Network],
) -> None:
    laptop = [LaptopRoute(network=n, text=f"{n} dev x") for n in inner]
    wanted, conflicts = resolve_conflicts([PODS], laptop, [PODS])
    assert conflicts == []
    assert list(ipaddress.collapse_addresses(wanted)) == [PODS]  # the same addresses
    for n in wanted:  # no overlaps among the pieces
        assert sum(n.overlaps(m) for m in wanted) == 1
    for r in inner:  # longest-prefix match picks ours for every address of the route
        for piece in wanted:
            if piece.overlaps(r):
                assert piece.prefixlen > r.prefixlen
