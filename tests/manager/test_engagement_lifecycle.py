"""An engagement's life in the manager around its agents and its client: WAITING while
no agent of the workload is connected, handed to an agent that arrives later (a
restarted pod), removed when its client departs or goes silent past the timeout."""

from __future__ import annotations

import functools
from typing import Any

import trio

from manager.server import Manager, ManagerSettings
from tests.manager.test_manager_tunnel import ENGAGE, FakeApi, FakeLookup
from tpengine.tunnel import MuxSession, open_mux_websocket_url

AGENT = {
    "namespace": "default",
    "workload": "web",
    "pod": "web-1",
    "pod_ip": "10.244.0.9",
    "container": "web",
}


async def start(nursery: trio.Nursery, *, session_timeout: float = 30.0) -> str:
    settings = ManagerSettings(
        namespace="tpengine",
        tunnel_port=0,
        health_port=0,
        host="127.0.0.1",
        session_timeout=session_timeout,
    )
    manager = Manager(settings, FakeApi(), lookup=FakeLookup())  # type: ignore[arg-type]
    port = await nursery.start(manager.run)
    return f"ws://127.0.0.1:{port}/"


async def agent_of(url: str, pod: str, *, task_status: trio.TaskStatus[Any]) -> None:
    """An agent in ``pod``, until cancelled; started() hands over what it arrived with."""
    async with open_mux_websocket_url(url) as agent:
        reply = await agent.request("agent_arrive", {**AGENT, "pod": pod})
        task_status.started(reply["engagements"])
        await trio.sleep_forever()


async def state_of(client: MuxSession) -> tuple[str, str]:
    [engagement] = await client.request("engagements", {})
    return engagement["state"], engagement["message"]


async def test_waiting_while_the_agent_pod_restarts(nursery: trio.Nursery) -> None:
    url = await start(nursery)
    with trio.fail_after(10):
        first = trio.CancelScope()

        async def first_pod(task_status: trio.TaskStatus[Any]) -> None:
            with first:
                await agent_of(url, "web-1", task_status=task_status)

        await nursery.start(first_pod)
        async with open_mux_websocket_url(url) as client:
            await client.request("arrive", {"user": "susan", "host": "laptop"})
            assert (await client.request("engage", ENGAGE))["state"] == "ACTIVE"
            first.cancel()  # the pod is deleted: its agent's tunnel closes
            # The manager notices the closed tunnel on its own time; clients can only ask.
            while (await state_of(client))[0] != "WAITING":  # noqa: ASYNC110
                await trio.sleep(0.01)
            assert await state_of(client) == (
                "WAITING",
                "waiting for the traffic-agent to arrive",
            )
            # Its successor arrives and is handed the engagement at once.
            [handed] = await nursery.start(functools.partial(agent_of, url, "web-2"))
            assert handed["filter"]["headers"] == [["x-user", "susan"]]
            assert await state_of(client) == ("ACTIVE", "")


async def watch_until_empty(agent: MuxSession) -> None:
    async with agent.subscribe("engagements") as pushes:
        async for current in pushes:
            if current == []:
                return


async def test_a_departing_client_takes_its_engagements(nursery: trio.Nursery) -> None:
    url = await start(nursery)
    with trio.fail_after(10):
        async with open_mux_websocket_url(url) as agent:
            await agent.request("agent_arrive", AGENT)
            async with open_mux_websocket_url(url) as client:
                await client.request("arrive", {"user": "susan", "host": "laptop"})
                await client.request("engage", ENGAGE)
                async with trio.open_nursery() as watching:
                    watching.start_soon(watch_until_empty, agent)
                    await client.request("depart", {})


async def test_a_silent_clients_engagements_expire(nursery: trio.Nursery) -> None:
    url = await start(nursery, session_timeout=0.5)
    with trio.fail_after(10):
        async with open_mux_websocket_url(url) as agent:
            await agent.request("agent_arrive", AGENT)
            async with open_mux_websocket_url(url) as client:
                await client.request("arrive", {"user": "susan", "host": "laptop"})
                await client.request("engage", ENGAGE)
                # The tunnel stays open, but the client never says `remain`.
                await watch_until_empty(agent)
                assert (await client.request("remain", {}))["ok"] is False
