"""The laptop's own routes, read from the kernel (rtnetlink, no privilege needed), so
that ``tp connect`` sees a VPN's or a bridge's subnet before routing over it."""

from __future__ import annotations

import ipaddress
import socket

import trio

from tpengine.engine._routes import LaptopRoute

_MAIN_TABLE = 254  # rtnetlink(7): RT_TABLE_MAIN, what `ip route` shows
_UNICAST = 1  # RTN_UNICAST: local, broadcast and unreachable routes are no destination


async def laptop_routes(*, skip_link: str | None = None) -> list[LaptopRoute]:
    """Unicast routes of the main table with a destination, except those of
    ``skip_link`` (our TUN, whose routes are ours)."""
    return await trio.to_thread.run_sync(_read, skip_link)


def _read(skip_link: str | None) -> list[LaptopRoute]:
    from pyroute2 import IPRoute  # heavy import, only where routes are read

    found: list[LaptopRoute] = []
    with IPRoute() as ipr:
        links = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in ipr.get_routes(family=family, table=_MAIN_TABLE):
                if msg["type"] != _UNICAST or not msg["dst_len"]:
                    continue
                dst = msg.get_attr("RTA_DST")
                link = links.get(msg.get_attr("RTA_OIF"), "?")
                if dst is None or link == skip_link:
                    continue
                network = ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False)
                gateway = msg.get_attr("RTA_GATEWAY")
                text = f"{network}{f' via {gateway}' if gateway else ''} dev {link}"
                found.append(LaptopRoute(network=network, text=text))
    return found
