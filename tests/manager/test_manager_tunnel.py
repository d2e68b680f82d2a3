"""The manager's tunnel side on loopback: arrive, cluster info, DNS, truthful dials.

The API server is replaced by a small in-test object here (a unit test of one piece);
the end-to-end tests run the real manager in the local cluster.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from manager.server import Manager, ManagerSettings
from tpengine.tunnel import (
    DialRejected,
    RejectReason,
    Role,
    open_mux_over_stream,
    open_mux_websocket_url,
)

PODS = {"items": [{"status": {"podIP": "10.244.0.5"}, "spec": {}}]}
NAMESPACES = {"items": [{"metadata": {"name": "default"}}, {"metadata": {"name": "shop"}}]}


class FakeResponse:
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def json(self) -> dict[str, Any]:
        return self._data

    async def aiter_lines(self) -> AsyncIterator[str]:
        """A watch on which nothing ever happens."""
        await trio.sleep_forever()
        yield ""


class FakeApi:
    """Answers the three lists and refuses the service probe as a real API server does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    @contextlib.asynccontextmanager
    async def call_api(
        self, method: str, *, url: str, **kwargs: Any
    ) -> AsyncIterator[FakeResponse]:
        import httpx
        import kr8s

        self.calls.append((method, url))
        await trio.lowlevel.checkpoint()
        if method == "POST":
            body = {
                "message": "failed to allocate IP 1.1.1.1: The range of valid IPs is 10.96.0.0/12"
            }
            response = httpx.Response(422, json=body)
            raise kr8s.ServerError(body["message"], response=response)
        if url == "nodes":
            raise kr8s.ServerError("not found", response=httpx.Response(404, json={}))
        yield FakeResponse({"pods": PODS, "namespaces": NAMESPACES}.get(url, {"items": []}))


class FakeLookup:
    async def lookup(self, fqdn: str, rdtype: int) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        if fqdn == "web.default.svc.cluster.local" and rdtype == 1:
            return {"rcode": 0, "records": ["10.96.0.7"], "ttl": 5}
        return {"rcode": 3, "records": [], "ttl": 0}


@pytest.fixture
async def manager_url(nursery: trio.Nursery) -> str:
    settings = ManagerSettings(namespace="tpengine", tunnel_port=0, health_port=0, host="127.0.0.1")
    manager = Manager(settings, FakeApi(), lookup=FakeLookup())  # type: ignore[arg-type]
    port = await nursery.start(manager.run)
    return f"ws://127.0.0.1:{port}/"


async def echo_server(nursery: trio.Nursery) -> int:
    async def echo(stream: trio.SocketStream) -> None:
        async for chunk in stream:
            await stream.send_all(chunk)
        await stream.send_eof()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def test_arrive_info_and_lookup(manager_url: str) -> None:
    async with open_mux_websocket_url(manager_url) as mux:
        arrived = await mux.request(
            "arrive", {"user": "susan", "host": "laptop", "namespace": "default"}
        )
        assert arrived["session_id"]
        info = await mux.request("cluster_info")
        assert info["service_cidrs"] == ["10.96.0.0/12"]
        assert info["pod_cidrs"] == ["10.244.0.0/16"]
        assert info["namespaces"] == ["default", "shop"]
        answer = await mux.request("lookup", {"name": "web.default.svc.cluster.local", "type": 1})
        assert answer["records"] == ["10.96.0.7"]
        # A reconnecting client keeps its session.
    async with open_mux_websocket_url(manager_url) as mux:
        again = await mux.request("arrive", {"session_id": arrived["session_id"]})
        assert again["session_id"] == arrived["session_id"]


async def test_dial_carries_data_and_half_close(manager_url: str, nursery: trio.Nursery) -> None:
    port = await echo_server(nursery)
    payload = json.dumps(list(range(50000))).encode()
    async with open_mux_websocket_url(manager_url) as mux:
        stream = await mux.open_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(payload)
            await stream.send_eof()
            received = bytearray()
            async for chunk in stream:
                received += chunk
        assert received == payload


async def test_refused_dial_is_reported_as_refused(manager_url: str) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    closed_port = listener.socket.getsockname()[1]
    await listener.aclose()
    async with open_mux_websocket_url(manager_url) as mux:
        with pytest.raises(DialRejected) as caught:
            await mux.open_stream("127.0.0.1", closed_port)
        assert caught.value.reason is RejectReason.REFUSED


async def test_udp_flow(manager_url: str) -> None:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        async with open_mux_websocket_url(manager_url) as mux:
            flow = await mux.open_stream("127.0.0.1", port, "udp")
            flow.send_nowait(b"hello")
            data, peer = await sock.recvfrom(100)
            assert data == b"hello"
            await sock.sendto(b"world", peer)
            assert await flow.receive() == b"world"
            await flow.aclose()


async def test_relays_between_agent_and_client(manager_url: str, nursery: trio.Nursery) -> None:
    from tpengine.tunnel import IncomingDial

    echo = await echo_server(nursery)

    async def connect_locally(dial: IncomingDial) -> None:
        # What the engine (for an intercept) or the agent (for --to-pod) does with a dial.
        from tpengine.splice import splice

        local = await trio.open_tcp_stream(dial.destination.host, dial.destination.port)
        await splice(await dial.accept_stream(), local)

    async with (
        open_mux_websocket_url(manager_url, dial_handler=connect_locally) as client,
        open_mux_websocket_url(manager_url, dial_handler=connect_locally) as agent,
    ):
        session = (await client.request("arrive", {"user": "susan", "host": "laptop"}))[
            "session_id"
        ]
        arrived = await agent.request(
            "agent_arrive",
            {
                "namespace": "default",
                "workload": "web",
                "pod": "web-1",
                "pod_ip": "10.244.0.9",
                "container": "web",
            },
        )
        assert arrived == {"engagements": []}
        for mux, tag in ((agent, f"session:{session}"), (client, "agent:default/web-1")):
            stream = await mux.open_stream("127.0.0.1", echo, tag=tag.encode())
            async with stream:
                await stream.send_all(b"through the manager")
                await stream.send_eof()
                assert await stream.receive_some(100) == b"through the manager"
        with pytest.raises(DialRejected) as caught:
            await agent.open_stream("127.0.0.1", echo, tag=b"session:nobody")
        assert caught.value.reason is RejectReason.UNREACHABLE
        with pytest.raises(DialRejected) as caught:
            await client.open_stream("127.0.0.1", echo, tag=b"agent:default/nope")
        assert caught.value.reason is RejectReason.UNREACHABLE
        with pytest.raises(DialRejected) as caught:
            await client.open_stream("127.0.0.1", echo, tag=b"bogus")
        assert caught.value.reason is RejectReason.FORBIDDEN


ENGAGE = {
    "kind": "intercept",
    "name": "web",
    "namespace": "default",
    "workload": "web",
    "container": "web",
    "ports": [8080],
    "filter": {"headers": [["x-user", "susan"]]},
    "targets": {"8080": ["127.0.0.1", 9000]},
}


async def test_engage_tells_the_agents_and_refuses_conflicts(manager_url: str) -> None:
    async with (
        open_mux_websocket_url(manager_url) as agent,
        open_mux_websocket_url(manager_url) as susan,
        open_mux_websocket_url(manager_url) as bob,
    ):
        await agent.request(
            "agent_arrive",
            {
                "namespace": "default",
                "workload": "web",
                "pod": "web-1",
                "pod_ip": "10.244.0.9",
                "container": "web",
                "env": {"DB": "pg"},
            },
        )
        susan_id = (await susan.request("arrive", {"user": "susan", "host": "laptop"}))[
            "session_id"
        ]
        await bob.request("arrive", {"user": "bob", "host": "laptop2"})
        async with agent.subscribe("engagements") as pushes:
            engaged = await susan.request("engage", ENGAGE)
            assert engaged["state"] == "ACTIVE" and engaged["pods"] == [
                {"name": "web-1", "ip": "10.244.0.9"}
            ]
            [pushed] = await pushes.receive()
            assert pushed["session_id"] == susan_id and pushed["targets"] == {
                "8080": ["127.0.0.1", 9000]
            }
            refused = await bob.request(
                "engage", {**ENGAGE, "filter": {"headers": [["x-user", "susan"]]}}
            )
            assert refused["code"] == "conflict" and "susan@laptop" in refused["error"]
            allowed = await bob.request(
                "engage", {**ENGAGE, "filter": {"headers": [["x-user", "bob"]]}}
            )
            assert allowed["state"] == "ACTIVE"
            assert len(await pushes.receive()) == 2
            assert (
                await susan.request("workload_env", {"namespace": "default", "workload": "web"})
            )["env"] == {"DB": "pg"}
            left = await susan.request("leave", {"name": "web"})
            assert left["name"] == "web"
            [remaining] = await pushes.receive()
            assert remaining["client"] == "bob@laptop2"
            assert (await susan.request("leave", {"name": "web"}))["code"] == "not-found"


async def test_the_raw_tunnel_and_a_websocket_share_the_port(
    manager_url: str, nursery: trio.Nursery
) -> None:
    """The engine speaks the tunnel raw (its port-forward is already a websocket); agents
    speak websocket; the manager tells them apart by the first bytes on one port. A
    client session arrived over one carrier is resumed over the other."""
    port = await echo_server(nursery)
    manager_port = int(manager_url.rsplit(":", 1)[1].strip("/"))
    tcp = await trio.open_tcp_stream("127.0.0.1", manager_port)
    async with open_mux_over_stream(tcp, role=Role.CLIENT) as mux:
        arrived = await mux.request("arrive", {"user": "raw", "host": "laptop"})
        stream = await mux.open_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"raw tunnel")
            assert await stream.receive_some() == b"raw tunnel"
    async with open_mux_websocket_url(manager_url) as mux:
        again = await mux.request("arrive", {"session_id": arrived["session_id"]})
        assert again["session_id"] == arrived["session_id"]
    garbage = await trio.open_tcp_stream("127.0.0.1", manager_port)
    async with garbage:
        await garbage.send_all(b"HELLO?\r\n\r\n")  # neither: refused as a bad request
        answer = b""
        while chunk := await garbage.receive_some():
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 4")
    async with open_mux_websocket_url(manager_url) as mux:  # and the manager runs on
        assert (await mux.request("version"))["version"]
