"""The helper's request protocol: one JSON object per SOCK_SEQPACKET message.

Engine → helper, each answered by exactly one reply ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``; the reply to ``create_tun`` carries the TUN's file
descriptor as SCM_RIGHTS ancillary data.

    {"op": "hello", "version": 1}
    {"op": "create_tun", "name": "tp0", "mtu": 65000, "addresses": ["198.19.0.1/32"]}
    {"op": "add_routes", "device": "tp0", "cidrs": ["10.96.0.0/12"]}
    {"op": "remove_routes", "device": "tp0", "cidrs": ["10.96.0.0/12"]}
    {"op": "bind_dns", "address": "198.19.0.1"}    (reply carries a UDP and a TCP socket
                                                    bound to port 53 of a TUN address)
    {"op": "set_dns", "nameservers": ["198.19.0.2"]}
    {"op": "restore_dns"}
    {"op": "register_mount", "path": "/tmp/tpfs-1"}
    {"op": "unmount", "path": "/tmp/tpfs-1"}
    {"op": "set_read_ahead", "path": "/tmp/tpfs-1", "kb": 2048}   (a registered FUSE mount's
                                                    kernel read-ahead: only root may set it)
    {"op": "bye"}

Everything here is validated before the helper touches the system: the helper runs as
root and trusts nothing it is sent. This module is sans-IO.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
MAX_MESSAGE = 16384
# IFNAMSIZ is 16 with the NUL; a trailing %d lets the kernel pick the number (tun(4)).
_DEVICE_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]{0,12}(%d)?$")
_MAX_CIDRS = 256


class BadRequest(Exception):
    """A request the helper refuses; the message goes back to the engine verbatim."""


@dataclass(frozen=True, kw_only=True)
class Hello:
    version: int


@dataclass(frozen=True, kw_only=True)
class CreateTun:
    name: str
    mtu: int
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]


@dataclass(frozen=True, kw_only=True)
class Routes:
    add: bool
    device: str
    cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


@dataclass(frozen=True, kw_only=True)
class SetDns:
    nameservers: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]


@dataclass(frozen=True, kw_only=True)
class BindDns:
    address: ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, kw_only=True)
class RestoreDns:
    pass


@dataclass(frozen=True, kw_only=True)
class Mount:
    register: bool  # True: remember to unmount on exit; False: unmount now
    path: str


@dataclass(frozen=True, kw_only=True)
class ReadAhead:
    path: str
    kb: int


@dataclass(frozen=True, kw_only=True)
class Bye:
    pass


Request = Hello | CreateTun | Routes | BindDns | SetDns | RestoreDns | Mount | ReadAhead | Bye

#: The read-ahead a mount may ask for: the kernel's 128 KiB default up to 16 MiB.
READ_AHEAD_KB = range(128, 16384 + 1)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def parse_request(data: bytes) -> Request:
    """Decode and validate one request; raise :class:`BadRequest` naming what is wrong."""
    if len(data) > MAX_MESSAGE:
        raise BadRequest("request too large")
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"request is not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise BadRequest("request must be an object with an 'op'")
    op = message["op"]
    parser = _PARSERS.get(op)
    if parser is None:
        raise BadRequest(f"unknown op {op!r}")
    return parser(message)


def _field(message: dict[str, Any], key: str, kind: type) -> Any:
    value = message.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise BadRequest(f"{message['op']}: '{key}' must be a {kind.__name__}")
    return value


def _device(message: dict[str, Any], key: str) -> str:
    name = _field(message, key, str)
    if not _DEVICE_NAME.match(name):
        raise BadRequest(f"{message['op']}: invalid device name {name!r}")
    return name


def _string_list(message: dict[str, Any], key: str) -> list[str]:
    values = _field(message, key, list)
    if len(values) > _MAX_CIDRS or not all(isinstance(v, str) for v in values):
        raise BadRequest(f"{message['op']}: '{key}' must be a list of at most {_MAX_CIDRS} strings")
    return values


def _hello(message: dict[str, Any]) -> Request:
    return Hello(version=_field(message, "version", int))


def _create_tun(message: dict[str, Any]) -> Request:
    mtu = _field(message, "mtu", int)
    if not 1280 <= mtu <= 65535:
        raise BadRequest(f"create_tun: mtu {mtu} outside 1280..65535")
    addresses = []
    for text in _string_list(message, "addresses"):
        try:
            address = ipaddress.ip_interface(text)
        except ValueError:
            raise BadRequest(f"create_tun: {text!r} is not an address/prefix") from None
        _refuse_special(address.ip, text)
        addresses.append(address)
    return CreateTun(name=_device(message, "name"), mtu=mtu, addresses=tuple(addresses))


def _routes(message: dict[str, Any]) -> Request:
    cidrs = []
    for text in _string_list(message, "cidrs"):
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError:
            raise BadRequest(
                f"{message['op']}: {text!r} is not a CIDR (like 10.96.0.0/12)"
            ) from None
        if network.prefixlen < 8:
            # Routing a /0../7 to the TUN would capture the laptop's own traffic.
            raise BadRequest(f"{message['op']}: {text} is too wide (at most /8 is allowed)")
        _refuse_special(network.network_address, text)
        cidrs.append(network)
    return Routes(
        add=message["op"] == "add_routes", device=_device(message, "device"), cidrs=tuple(cidrs)
    )


def _set_dns(message: dict[str, Any]) -> Request:
    servers = []
    for text in _string_list(message, "nameservers"):
        try:
            servers.append(ipaddress.ip_address(text))
        except ValueError:
            raise BadRequest(f"set_dns: {text!r} is not an IP address") from None
    if not 1 <= len(servers) <= 3:  # resolv.conf(5): at most MAXNS = 3 nameservers
        raise BadRequest("set_dns: give one to three nameservers")
    return SetDns(nameservers=tuple(servers))


def _bind_dns(message: dict[str, Any]) -> Request:
    text = _field(message, "address", str)
    try:
        return BindDns(address=ipaddress.ip_address(text))
    except ValueError:
        raise BadRequest(f"bind_dns: {text!r} is not an IP address") from None


def _mount(message: dict[str, Any]) -> Request:
    return Mount(register=message["op"] == "register_mount", path=_mount_path(message))


def _mount_path(message: dict[str, Any]) -> str:
    path: str = _field(message, "path", str)
    if not os.path.isabs(path) or "\0" in path or os.path.normpath(path) != path or path == "/":
        raise BadRequest(f"{message['op']}: {path!r} is not a normalised absolute path")
    return path


def _read_ahead(message: dict[str, Any]) -> Request:
    path = _mount_path(message)
    kb = _field(message, "kb", int)
    if kb not in READ_AHEAD_KB:
        raise BadRequest(f"set_read_ahead: {kb!r} KiB is not within 128 to 16384")
    return ReadAhead(path=path, kb=kb)


def _refuse_special(address: ipaddress.IPv4Address | ipaddress.IPv6Address, text: str) -> None:
    if (
        address.is_loopback
        or address.is_multicast
        or address.is_unspecified
        or address.is_link_local
    ):
        raise BadRequest(
            f"{text}: loopback, link-local, multicast and unspecified addresses are refused"
        )


_PARSERS = {
    "hello": _hello,
    "create_tun": _create_tun,
    "add_routes": _routes,
    "remove_routes": _routes,
    "bind_dns": _bind_dns,
    "set_dns": _set_dns,
    "restore_dns": lambda message: RestoreDns(),
    "register_mount": _mount,
    "unmount": _mount,
    "set_read_ahead": _read_ahead,
    "bye": lambda message: Bye(),
}
