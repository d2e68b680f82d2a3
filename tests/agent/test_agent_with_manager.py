"""The agent against the real traffic-manager (on loopback, its API server replaced by a
small in-test object): both sides of the agent contract together. A client session
engages the workload with a header filter; the manager pushes the engagement to the
agent; the agent's dials for Susan's requests travel agent → manager → client → laptop.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from agent._agent import Agent
from agent._config import AgentConfig, PortSpec
from manager.server import Manager, ManagerSettings
from tests.agent.conftest import HttpServer, start_server
from tests.agent.test_agent import get, http1
from tpengine.splice import splice
from tpengine.tunnel import IncomingDial, RejectReason, open_mux_url


class QuietApi:
    """Empty lists for whatever the manager's cluster watcher asks."""

    @contextlib.asynccontextmanager
    async def call_api(self, method: str, *, url: str, **kwargs: Any) -> AsyncIterator[Any]:
        import httpx
        import kr8s

        await trio.lowlevel.checkpoint()
        if method != "GET":
            raise kr8s.ServerError("refused", response=httpx.Response(422, json={}))

        class Empty:
            def json(self) -> dict[str, Any]:
                return {"items": []}

            async def aiter_lines(self) -> AsyncIterator[str]:  # a watch: nothing happens
                await trio.sleep_forever()
                yield ""

        yield Empty()


async def laptop_dial(dial: IncomingDial) -> None:
    """The engine's part: connect to --address:--port on the laptop."""
    try:
        laptop = await trio.open_tcp_stream(dial.destination.host, dial.destination.port)
    except OSError as exc:
        await dial.reject(RejectReason.REFUSED, str(exc))
        return
    await splice(await dial.accept_stream(), laptop)


@pytest.mark.parametrize("scheme", ["tcp", "ws"])  # the raw tunnel, or a websocket
async def test_header_intercept_through_the_real_manager(
    nursery: trio.Nursery, scheme: str
) -> None:
    settings = ManagerSettings(namespace="tpengine", tunnel_port=0, health_port=0, host="127.0.0.1")
    port = await nursery.start(Manager(settings, QuietApi()).run)
    url = f"{scheme}://127.0.0.1:{port}" + ("/" if scheme == "ws" else "")
    app = await start_server(nursery, HttpServer("app"))
    laptop = await start_server(nursery, HttpServer("laptop"))
    config = AgentConfig(
        workload="web",
        namespace="default",
        container="web",
        manager_url=url,
        ports=(PortSpec(agent_port=0, app_port=app.port, name="http"),),
        pod="web-1",
        pod_ip="10.244.0.7",
        app_env={"GREETING": "hi"},
    )
    agent = Agent(config, listen_host="127.0.0.1", max_backoff=0.2)
    bound = await nursery.start(agent.run)
    agent_port = bound[(app.port, "TCP")]
    with trio.fail_after(10):
        await agent.wait_until(lambda a: a.mux is not None)

    async with open_mux_url(url, dial_handler=laptop_dial) as mux:
        await mux.request("arrive", {"user": "susan", "host": "laptop", "namespace": "default"})
        engaged = await mux.request(
            "engage",
            {
                "kind": "intercept",
                "name": "web",
                "namespace": "default",
                "workload": "web",
                "container": "web",
                "ports": [app.port],
                "targets": {str(app.port): ["127.0.0.1", laptop.port]},
                "filter": {"headers": [["x-user", "susan"]]},
            },
        )
        assert engaged.get("state") == "ACTIVE", engaged
        with trio.fail_after(10):
            await agent.wait_until(lambda a: bool(a.engagements))
        answers = await http1(agent_port, [get("/1", "susan"), get("/2", "bob")])
        assert answers == [(200, b"laptop GET /1 0"), (200, b"app GET /2 0")]

        await mux.request("leave", {"name": "web"})
        with trio.fail_after(10):
            await agent.wait_until(lambda a: not a.engagements)
        assert await http1(agent_port, [get("/3", "susan")]) == [(200, b"app GET /3 0")]
