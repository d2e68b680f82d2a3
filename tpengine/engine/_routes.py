"""Which subnets the laptop sends to the engine.

The cluster's pod and service subnets, plus ``--also-proxy``, minus ``--never-proxy``
(Telepresence's flags). A never-proxied network inside a routed one splits it into the
smallest set of networks that covers the rest (``ipaddress.address_exclude``), so the
kernel's longest-prefix match never needs a second routing table.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

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
