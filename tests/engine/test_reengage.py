"""Engagements re-sent on a new session: a real manager on loopback restarts under a
library session; the engine's memory re-engages and the workload's agent is told."""

from __future__ import annotations

import functools
from typing import Any

import trio

from tests.engine.test_session import start_manager
from tests.manager.test_manager_tunnel import ENGAGE
from tpengine.engine._reengage import EngagementMemory, keep_engaged, request_from_result
from tpengine.engine._session import SessionInfo, open_session_with
from tpengine.tunnel import MuxSession, open_mux_websocket_url

AGENT = {
    "namespace": "default",
    "workload": "web",
    "pod": "web-1",
    "pod_ip": "10.244.0.9",
    "container": "web",
}
REQUEST = {
    **ENGAGE,
    "filter": {
        "headers": [["x-user", "susan"]],
        "path_equal": None,
        "path_prefix": None,
        "path_regex": None,
    },
    "workload_kind": "Deployment",
    "address": "127.0.0.1",
    "service": "web",
    "local_ports": [{"local": 9000, "container_port": 8080, "protocol": "TCP", "service_port": 80}],
}


async def agent_sees(url: str, wanted_session: str) -> list[dict[str, Any]]:
    """Arrive as the workload's agent; wait until the engagements name ``wanted_session``."""
    async with open_mux_websocket_url(url) as agent, agent.subscribe("engagements") as pushes:
        current = (await agent.request("agent_arrive", AGENT))["engagements"]
        while not any(e["session_id"] == wanted_session for e in current):
            current = await pushes.receive()
        return list(current)


async def hold_agent(url: str, *, task_status: trio.TaskStatus[None]) -> None:
    """An agent of the workload connected until its manager goes away."""
    async with open_mux_websocket_url(url) as agent:
        await agent.request("agent_arrive", AGENT)
        task_status.started()
        await agent.wait_closed()


async def engage(mux: MuxSession, memory: EngagementMemory) -> dict[str, Any]:
    result: dict[str, Any] = await mux.request("engage", REQUEST)
    memory.remember(result)
    return result


async def test_the_manager_echoes_everything_a_new_session_needs(nursery: trio.Nursery) -> None:
    port, _ = await start_manager(nursery)
    url = f"ws://127.0.0.1:{port}/"
    async with open_mux_websocket_url(url) as agent, open_mux_websocket_url(url) as client:
        await agent.request("agent_arrive", AGENT)
        await client.request("arrive", {"user": "susan", "host": "laptop"})
        result = await client.request("engage", REQUEST)
    assert request_from_result(result) == REQUEST


async def test_a_restarted_manager_gets_the_engagements_again(nursery: trio.Nursery) -> None:
    port, scope = await start_manager(nursery)
    url = f"ws://127.0.0.1:{port}/"
    memory = EngagementMemory()
    info = SessionInfo(namespace="default", manager_namespace="tpengine")
    async with (
        open_session_with(functools.partial(open_mux_websocket_url, url), info) as session,
        trio.open_nursery() as tasks,
    ):
        tasks.start_soon(keep_engaged, session, memory)
        with trio.fail_after(10):
            await tasks.start(functools.partial(hold_agent, url))
            await engage(await session._current_mux(), memory)
            first = info.session_id
            scope.cancel()  # the manager restarts: it forgets every session and engagement
            await session.wait_state_changed()  # reconnecting
            await start_manager(nursery, port)
            await session.wait_connected()
            assert info.session_id != first
            [seen] = await agent_sees(url, str(info.session_id))
            await tasks.start(functools.partial(hold_agent, url))
        assert seen["targets"] == {"8080": ["127.0.0.1", 9000]}
        assert seen["filter"]["headers"] == [["x-user", "susan"]]
        listed = await (await session._current_mux()).request("engagements", {})
        assert [(e["name"], e["state"]) for e in memory.merge_listing(listed)] == [
            ("web", "ACTIVE")
        ]
        tasks.cancel_scope.cancel()


async def test_tp_list_shows_what_the_manager_does_not_have_yet() -> None:
    memory = EngagementMemory()
    memory.remember({**REQUEST, "ports": ["8080"], "state": "ACTIVE", "id": "1"})
    [waiting] = memory.merge_listing(None, message="waiting for the traffic-manager")
    assert (waiting["name"], waiting["state"]) == ("web", "WAITING")
    assert waiting["message"] == "waiting for the traffic-manager"
    assert waiting["ports"] == ["8080"] and waiting["local_ports"] == REQUEST["local_ports"]
    memory.problems["web"] = "could not re-engage: port 8080 is already intercepted by bob"
    [failed] = memory.merge_listing([])
    assert failed["state"] == "FAILED" and "bob" in failed["message"]
    assert memory.merge_listing([{"name": "web", "state": "ACTIVE"}]) == [
        {"name": "web", "state": "ACTIVE"}
    ]
    assert memory.forget("web") is not None and memory.merge_listing(None) == []


async def test_a_port_taken_meanwhile_is_reported_not_retaken(nursery: trio.Nursery) -> None:
    port, scope = await start_manager(nursery)
    url = f"ws://127.0.0.1:{port}/"
    memory = EngagementMemory()
    info = SessionInfo(namespace="default", manager_namespace="tpengine")
    unfiltered = {**REQUEST, "name": "bobs", "filter": {}}
    async with (
        open_session_with(functools.partial(open_mux_websocket_url, url), info) as session,
        trio.open_nursery() as tasks,
    ):
        tasks.start_soon(keep_engaged, session, memory)
        with trio.fail_after(10):
            await tasks.start(functools.partial(hold_agent, url))
            await engage(await session._current_mux(), memory)
            scope.cancel()
            await session.wait_state_changed()  # reconnecting (backoff ≥ 0.25 s)…
            await start_manager(nursery, port)
            await tasks.start(functools.partial(hold_agent, url))
            async with open_mux_websocket_url(url) as bob:
                # …meanwhile Bob takes every request of the port.
                await bob.request("arrive", {"user": "bob", "host": "laptop2"})
                assert (await bob.request("engage", unfiltered))["state"] == "ACTIVE"
                await session.wait_connected()
                # Re-engaging is refused; the engine learns it from the manager's reply.
                while "web" not in memory.problems:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                listed = await (await session._current_mux()).request("engagements", {})
                [failed] = memory.merge_listing(listed)
                assert failed["state"] == "FAILED"
                assert "already intercepted by bob@laptop2" in failed["message"]
        tasks.cancel_scope.cancel()
