"""The few system changes the helper makes, each with its undo.

No shell and no subprocess: netlink through pyroute2, the TUN through its ioctls,
umount2(2) through libc.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import re
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


def fuse_owner(path: str, mountinfo: str | None = None) -> int | None:
    """The ``user_id`` of the FUSE file system mounted on ``path`` (the topmost mount
    there, proc(5) /proc/self/mountinfo), or None when the topmost is not FUSE or there
    is no mount on it."""
    found = fuse_mount(path, mountinfo)
    return None if found is None else found[0]


def fuse_mount(path: str, mountinfo: str | None = None) -> tuple[int, str] | None:
    """``(user_id, "major:minor")`` of the FUSE file system mounted on ``path`` (the
    topmost mount there), or None when the topmost is not FUSE or nothing is mounted."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    owner: tuple[int, str] | None = None
    found = False
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        parts, tail = fields.split(), rest.split()
        if len(parts) < 5 or len(tail) < 3:
            continue
        # Mount points are octal-escaped: a space is \040 (proc(5)).
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
        if point != path:
            continue
        found = True
        owner = None  # a later line is a mount on top: it decides
        if tail[0] == "fuse" or tail[0].startswith("fuse."):
            options = dict(o.partition("=")[::2] for o in tail[2].split(","))
            if options.get("user_id", "").isdigit():
                owner = (int(options["user_id"]), parts[2])
    return owner if found else None


def set_read_ahead(path: str, kb: int, *, uid: int | None = None) -> None:
    """The kernel read-ahead of the FUSE mount on ``path`` (its backing device's
    ``/sys/class/bdi/<major:minor>/read_ahead_kb``); only a FUSE mount, and with ``uid``
    only that user's."""
    found = fuse_mount(path)
    if found is None:
        raise OSError(errno.EPERM, f"read-ahead of {path}: not a FUSE mount")
    owner, device = found
    if uid is not None and owner != uid:
        raise OSError(errno.EPERM, f"read-ahead of {path}: a FUSE mount of uid {owner}")
    if not re.fullmatch(r"\d+:\d+", device):
        raise OSError(errno.EINVAL, f"read-ahead of {path}: odd device {device!r}")
    with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w") as f:
        f.write(str(kb))


def unmount(path: str, *, uid: int | None = None) -> None:
    """Lazy unmount (MNT_DETACH) of a FUSE mount, so a busy or dead one still goes away;
    only FUSE (never whatever else is mounted on a path the engine named: EPERM) and,
    with ``uid``, only one that user made (the engine's own)."""
    owner = fuse_owner(path)
    if owner is None:
        if os.path.ismount(path):
            raise OSError(errno.EPERM, f"umount {path}: not a FUSE mount")
        return  # not mounted (any more)
    if uid is not None and owner != uid:
        raise OSError(errno.EPERM, f"umount {path}: a FUSE mount of uid {owner}")
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
