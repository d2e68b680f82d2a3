"""The library session against a real manager on loopback (direct websocket carrier)."""

from __future__ import annotations

import functools

import pytest
import trio

from manager.server import Manager, ManagerSettings
from tests.manager.test_manager_tunnel import FakeApi, FakeLookup, echo_server
from tpengine.engine._session import SessionError, SessionInfo, State, open_session_with
from tpengine.tunnel import DialRejected, open_mux_websocket_url


async def start_manager(nursery: trio.Nursery, port: int = 0) -> tuple[int, trio.CancelScope]:
    scope = trio.CancelScope()
    settings = ManagerSettings(
        namespace="tpengine", tunnel_port=port, health_port=0, host="127.0.0.1"
    )
    manager = Manager(settings, FakeApi(), lookup=FakeLookup())  # type: ignore[arg-type]

    async def run(task_status: trio.TaskStatus[int]) -> None:
        with scope:
            await manager.run(task_status=task_status)

    bound = await nursery.start(run)
    return bound, scope


async def test_session_streams_names_and_status(nursery: trio.Nursery) -> None:
    port, _ = await start_manager(nursery)
    echo_port = await echo_server(nursery)
    connector = functools.partial(open_mux_websocket_url, f"ws://127.0.0.1:{port}/")
    info = SessionInfo(namespace="default", manager_namespace="tpengine")
    async with open_session_with(connector, info) as session:
        assert session.status()["status"] == "Connected"
        assert session.status()["service_cidrs"] == ["10.96.0.0/12"]
        assert await session.resolve("web") == ["10.96.0.7"]
        with pytest.raises(SessionError, match="no such service"):
            await session.resolve("nope")
        stream = await session.open_tcp_stream("127.0.0.1", echo_port)
        async with stream:
            await stream.send_all(b"hi")
            assert await stream.receive_some(10) == b"hi"
        with pytest.raises(DialRejected):
            await session.open_tcp_stream("127.0.0.1", 1)
    assert info.state is State.CLOSED


async def test_session_reconnects_and_keeps_its_id(nursery: trio.Nursery) -> None:
    port, scope = await start_manager(nursery)
    connector = functools.partial(open_mux_websocket_url, f"ws://127.0.0.1:{port}/")
    info = SessionInfo(namespace="default", manager_namespace="tpengine")
    async with open_session_with(connector, info) as session:
        first_id = info.session_id
        scope.cancel()  # the manager goes away…
        with trio.fail_after(10):
            assert await session.wait_state_changed() is State.RECONNECTING
        await start_manager(nursery, port)  # …and comes back on the same address
        await session.wait_connected()
        assert info.state is State.CONNECTED
        assert info.reconnects == 1
        assert info.session_id != first_id  # a new manager does not know the old session
        assert await session.resolve("web") == ["10.96.0.7"]


async def test_unreachable_manager_fails_with_the_reason() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    connector = functools.partial(open_mux_websocket_url, f"ws://127.0.0.1:{port}/")
    info = SessionInfo(namespace="default", manager_namespace="tpengine")
    with pytest.raises(SessionError, match="could not reach the traffic-manager"):
        async with open_session_with(connector, info, connect_timeout=1.5):
            pass


async def test_mapped_namespaces_limit_the_cluster_names(nursery: trio.Nursery) -> None:
    """--mapped-namespaces: names of other namespaces go to the laptop's resolver."""
    from tpengine.dns._policy import Route

    port, _ = await start_manager(nursery)  # the cluster has namespaces default and shop
    connector = functools.partial(open_mux_websocket_url, f"ws://127.0.0.1:{port}/")
    everything = SessionInfo(namespace="default", manager_namespace="tpengine")
    async with open_session_with(connector, everything) as session:
        assert session.policy.classify("web.shop").cluster_names == ("web.shop.svc.cluster.local",)
    mapped = SessionInfo(
        namespace="default", manager_namespace="tpengine", mapped_namespaces=("default",)
    )
    async with open_session_with(connector, mapped) as session:
        assert session.status()["mapped_namespaces"] == ["default"]
        # Not a service of namespace shop: at most a pod "web" of a headless service "shop"
        # in the connected namespace, else the laptop's resolver answers.
        shop = session.policy.classify("web.shop")
        assert "web.shop.svc.cluster.local" not in shop.cluster_names
        assert shop.route is Route.CANDIDATE  # the cluster first, then the laptop's resolver
        assert session.policy.classify("web.default").cluster_names == (
            "web.default.svc.cluster.local",
        )
        assert await session.resolve("web") == ["10.96.0.7"]
