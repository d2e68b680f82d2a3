"""The manager's sans-IO parts and its dialer on loopback."""

from __future__ import annotations

import errno
import functools
import ipaddress

import pytest
import trio

from manager._cidrs import covering_networks, pod_cidrs, service_cidrs_from_error
from manager._dialer import DialError, DialFailure, classify_os_error, dial_tcp
from manager._sessions import SessionRegistry

MESSAGE = (
    'Service "tp-probe" is invalid: spec.clusterIPs: Invalid value: ["1.1.1.1"]: failed to '
    "allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of "
    "valid IPs is 10.96.0.0/12"
)


def test_service_cidr_from_the_api_servers_error() -> None:
    assert service_cidrs_from_error(MESSAGE) == [ipaddress.ip_network("10.96.0.0/12")]
    assert service_cidrs_from_error("something else") == []


def test_pod_cidrs_prefer_node_pod_cidrs() -> None:
    nodes = [{"spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}}]
    assert pod_cidrs(nodes, []) == [ipaddress.ip_network("10.244.0.0/24")]


def test_pod_cidrs_cover_pod_ips_without_node_cidrs() -> None:
    pods = [
        {"status": {"podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}]}},
        {"status": {"podIP": "10.244.3.9"}},
        {"status": {"podIP": "198.18.0.1"}, "spec": {"hostNetwork": True}},
        {"status": {}},
    ]
    assert pod_cidrs([], pods) == [ipaddress.ip_network("10.244.0.0/16")]
    assert covering_networks(["fd00::1", "fd00::2", "bogus"]) == [ipaddress.ip_network("fd00::/64")]


def test_sessions_expire_when_silent() -> None:
    registry = SessionRegistry(timeout=30)
    a = registry.arrive(user="susan", host="laptop", namespace="default", version="0.1", now=0)
    b = registry.arrive(user="bob", host="laptop2", namespace="default", version="0.1", now=10)
    assert registry.get_timer() == 30
    assert registry.remain(a.id, now=25)
    assert registry.expire(now=39.9) == []
    assert [s.id for s in registry.expire(now=40)] == [b.id]
    assert not registry.remain(b.id, now=41)
    assert registry.depart(a.id) is a
    assert registry.get_timer() is None


def test_errno_classification() -> None:
    assert classify_os_error(OSError(errno.ECONNREFUSED, "")) is DialFailure.REFUSED
    assert classify_os_error(OSError(errno.EHOSTUNREACH, "")) is DialFailure.UNREACHABLE
    assert classify_os_error(OSError(errno.ETIMEDOUT, "")) is DialFailure.TIMEOUT


async def test_dial_refused_is_reported_as_refused() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # nothing listens there any more
    with pytest.raises(DialError) as caught:
        await dial_tcp("127.0.0.1", port, connect_timeout=5)
    assert caught.value.failure is DialFailure.REFUSED


async def test_dial_connects(nursery: trio.Nursery) -> None:
    async def echo(stream: trio.SocketStream) -> None:
        async for chunk in stream:
            await stream.send_all(chunk)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    stream = await dial_tcp("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"ping")
        assert await stream.receive_some(4) == b"ping"
