"""The few system changes the helper makes, each with its undo.

No shell and no subprocess: netlink through pyroute2, the TUN through its ioctls,
umount2(2) through libc.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os

from pyroute2 import IPRoute

_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def link_index(ipr: IPRoute, device: str) -> int:
    found = ipr.link_lookup(ifname=device)
    if not found:
        raise OSError(errno.ENODEV, f"no device {device}")
    return int(found[0])


def add_route(device: str, cidr: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
    with IPRoute() as ipr:
        ipr.route("replace", dst=str(cidr), oif=link_index(ipr, device))


def remove_route(device: str, cidr: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
    with IPRoute() as ipr:
        try:
            ipr.route("del", dst=str(cidr), oif=link_index(ipr, device))
        except Exception as exc:  # pyroute2 raises NetlinkError(ESRCH) for a missing route
            if getattr(exc, "code", None) not in (errno.ESRCH, errno.ENODEV):
                raise


def configure_link(
    device: str, mtu: int, addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]
) -> None:
    with IPRoute() as ipr:
        index = link_index(ipr, device)
        ipr.link("set", index=index, mtu=mtu)
        for address in addresses:
            ipr.addr(
                "add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
            )
        ipr.link("set", index=index, state="up")


def delete_link(device: str) -> None:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=device)
        if found:
            ipr.link("del", index=found[0])


def unmount(path: str) -> None:
    """Lazy unmount (MNT_DETACH), so a busy or dead FUSE mount still goes away."""
    if _libc.umount2(os.fsencode(path), _MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):  # not mounted (any more)
            raise OSError(code, f"umount {path}: {os.strerror(code)}")
