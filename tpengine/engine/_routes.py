"""Which subnets the laptop sends to the engine.

The cluster's pod and service subnets, plus ``--also-proxy``, minus ``--never-proxy``
(Telepresence's flags). A never-proxied network inside a routed one splits it into the
smallest set of networks that covers the rest (``ipaddress.address_exclude``), so the
kernel's longest-prefix match never needs a second routing table.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class CidrError(ValueError):
    """A CIDR argument that does not parse; the message names it and shows the form."""


def parse_cidrs(values: Iterable[str], flag: str) -> list[Network]:
    networks = []
    for value in values:
        for text in value.split(","):
            text = text.strip()
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise CidrError(
                    f"{flag} {text!r} is not a CIDR (for example 10.0.0.0/16)"
                ) from None
    return networks


def routed_networks(
    cluster: Iterable[Network], also: Iterable[Network] = (), never: Iterable[Network] = ()
) -> list[Network]:
    """The networks to route to the TUN, collapsed, each family sorted."""
    wanted: list[Network] = [*cluster, *also]
    excluded = list(never)
    result: list[Network] = []
    for network in wanted:
        pieces = [network]
        for hole in excluded:
            if hole.version != network.version:
                continue
            next_pieces: list[Network] = []
            for piece in pieces:
                if piece.subnet_of(hole):  # type: ignore[arg-type]
                    continue
                if hole.subnet_of(piece):  # type: ignore[arg-type]
                    next_pieces.extend(piece.address_exclude(hole))  # type: ignore[arg-type]
                else:
                    next_pieces.append(piece)
            pieces = next_pieces
        result.extend(pieces)
    v4 = [n for n in result if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in result if isinstance(n, ipaddress.IPv6Network)]
    return [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]


@dataclass(frozen=True, kw_only=True)
class RoutingRules:
    """``--also-proxy``, ``--never-proxy`` and ``--allow-conflicting-subnets``, parsed."""

    also: tuple[Network, ...] = ()
    never: tuple[Network, ...] = ()
    allowed: tuple[Network, ...] = ()

    @classmethod
    def parse(
        cls, also: Iterable[str], never: Iterable[str], allowed: Iterable[str]
    ) -> RoutingRules:
        """Raises :class:`CidrError` naming the flag and the value."""
        return cls(
            also=tuple(parse_cidrs(also, "--also-proxy")),
            never=tuple(parse_cidrs(never, "--never-proxy")),
            allowed=tuple(parse_cidrs(allowed, "--allow-conflicting-subnets")),
        )

    def plan(
        self, cluster: Iterable[Network], laptop: Iterable[LaptopRoute]
    ) -> tuple[list[Network], list[SubnetConflict]]:
        """What to route for ``cluster``'s subnets on a laptop with routes ``laptop``,
        and the conflicts left out (see :func:`resolve_conflicts`)."""
        wanted = routed_networks(cluster, self.also, self.never)
        return resolve_conflicts(wanted, laptop, self.allowed)


@dataclass(frozen=True, kw_only=True)
class LaptopRoute:
    """A route the laptop had before us: its network and how ``ip route`` would show it."""

    network: Network
    text: str  # e.g. "10.0.0.0/8 dev wg0"


@dataclass(frozen=True, kw_only=True)
class SubnetConflict:
    network: Network  # what we would route to the cluster
    route: LaptopRoute  # what the laptop routes elsewhere in it

    def __str__(self) -> str:
        n = self.network
        return (
            f"the cluster's subnet {n} overlaps the route {self.route.text} on this machine "
            f"(a VPN, docker?): add --allow-conflicting-subnets {n} to send it to the cluster "
            f"anyway, or --never-proxy {self.route.network} to leave that route alone"
        )


def resolve_conflicts(
    wanted: Iterable[Network], existing: Iterable[LaptopRoute], allowed: Iterable[Network] = ()
) -> tuple[list[Network], list[SubnetConflict]]:
    """What to route given the laptop's own routes: (networks, conflicts refused).

    A network overlapping a route of the laptop's (other than its default route) is
    refused unless inside ``--allow-conflicting-subnets``, as Telepresence does: routing
    it would silently take addresses away from a VPN or a bridge. An allowed network
    must also win the kernel's longest-prefix match: where a laptop route lies inside
    it, that part is routed as the route's two halves (one bit more specific), the rest
    as the fewest networks around it. A laptop route wider than ours loses by itself.
    """
    allowed = list(allowed)
    routes = [r for r in existing if r.network.prefixlen > 0]  # default routes never conflict
    result: list[Network] = []
    conflicts: list[SubnetConflict] = []
    for network in wanted:
        clashing = [r for r in routes if _overlap(network, r.network)]
        if not clashing:
            result.append(network)
            continue
        if not any(network.subnet_of(a) for a in allowed if a.version == network.version):  # type: ignore[arg-type]
            conflicts.extend(SubnetConflict(network=network, route=r) for r in clashing)
            continue
        result.extend(_outrank(network, [r.network for r in clashing]))
    return result, conflicts


def _overlap(a: Network, b: Network) -> bool:
    return a.version == b.version and a.overlaps(b)


def _outrank(network: Network, inner_routes: list[Network]) -> list[Network]:
    """``network`` as pieces each more specific than any laptop route inside it."""
    pieces = [network]
    for route in sorted(inner_routes, key=lambda n: n.prefixlen):
        if not route.subnet_of(network) or route.prefixlen == route.max_prefixlen:  # type: ignore[arg-type]
            continue  # wider than ours (ours wins), or a host route nothing can outrank
        next_pieces: list[Network] = []
        for piece in pieces:
            if route.subnet_of(piece) and piece.prefixlen <= route.prefixlen:  # type: ignore[arg-type]
                next_pieces.extend(piece.address_exclude(route))  # type: ignore[arg-type]
                next_pieces.extend(route.subnets(prefixlen_diff=1))
            else:
                next_pieces.append(piece)
        pieces = next_pieces
    return sorted(pieces, key=lambda n: (n.network_address, n.prefixlen))
