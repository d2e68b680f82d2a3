"""The few system changes the helper makes, each with its undo.

No shell and no subprocess: netlink through pyroute2, the TUN through its ioctls,
umount2(2) through libc.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket

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
    """MTU, a long transmit queue, addresses (IPv6 without DAD) and up: the TUN module's
    own link setup, so the engine's device is configured as the tested ones are."""
    from tpengine.netstack.tun import TunError
    from tpengine.netstack.tun import configure_link as configure_tun

    try:
        configure_tun(device, mtu=mtu, addresses=[str(a) for a in addresses], up=True)
    except TunError as exc:
        raise OSError(errno.EINVAL, str(exc)) from None


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


def bind_dns_sockets(address: str) -> list[int]:
    """A UDP and a listening TCP socket on ``address`` port 53 (a privileged port, so the
    unprivileged engine gets them from here); returns their descriptors."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    made: list[socket.socket] = []
    try:
        udp = socket.socket(family, socket.SOCK_DGRAM)
        made.append(udp)
        udp.bind((address, 53))
        tcp = socket.socket(family, socket.SOCK_STREAM)
        made.append(tcp)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((address, 53))
        tcp.listen(64)
    except OSError:
        for sock in made:
            sock.close()
        raise
    return [sock.detach() for sock in made]
