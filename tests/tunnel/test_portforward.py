"""The trio port-forward against a small in-test API server speaking the Kubernetes
websocket channel protocol (a fake for this unit test of one piece)."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from urllib.parse import parse_qs, urlsplit

import kr8s.asyncio
import pytest
import trio
import trio_websocket
from hypothesis import given
from hypothesis import strategies as st

from tpengine.kube.portforward import PortForwardError, PortForwardStream, open_pod_port_forward
from tpengine.tunnel import IncomingDial, MuxSession, serve_mux_websocket, wrap_mux_client_stream

VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "platform": "linux/amd64"}
REFUSED = (
    "error forwarding port 80 to pod broken, uid : failed to execute portforward in "
    "network namespace: failed to connect to localhost:80 inside namespace: connection refused"
)


class _Replay(trio.abc.Stream):
    """A stream whose first bytes were already read: hand them out again."""

    def __init__(self, stream: trio.abc.Stream, head: bytes) -> None:
        self.stream, self.head = stream, head

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.head:
            out, self.head = self.head, b""
            return out
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


class FakeApiServer:
    """Answers ``GET /version`` and port-forward upgrades the way the API server does:
    ``[0,lo,hi]`` and ``[1,lo,hi]`` first, data on channel 0, errors on channel 1."""

    def __init__(self, pods: dict[str, int], *, base64_only: bool = False) -> None:
        self.pods = pods  # pod name → local port standing in for the pod's port
        self.base64_only = base64_only  # an API server offering only the base64 variant

    async def handle(self, stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            head += chunk
        if b"upgrade: websocket" not in head.lower():
            body = json.dumps(VERSION).encode()
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
            await stream.aclose()
            return
        async with trio.open_nursery() as nursery:
            request = await trio_websocket.wrap_server_stream(
                nursery, _Replay(stream, head), receive_buffer_size=65536
            )
            try:
                await self.port_forward(request)
            except trio_websocket.ConnectionClosed:
                pass
            nursery.cancel_scope.cancel()

    async def port_forward(self, request: trio_websocket.WebSocketRequest) -> None:
        url = urlsplit(request.path)
        parts = url.path.split("/")  # /api/v1/namespaces/NS/pods/POD/portforward
        pod, port = parts[6], int(parse_qs(url.query)["ports"][0])
        if pod not in self.pods and pod != "broken":
            status = {"kind": "Status", "code": 404, "message": f'pods "{pod}" not found'}
            await request.reject(404, body=json.dumps(status).encode())
            return
        if self.base64_only:
            await self.port_forward_base64(request, pod, port)
            return
        assert "v4.channel.k8s.io" in request.proposed_subprotocols
        ws = await request.accept(subprotocol="v4.channel.k8s.io")
        prefix = port.to_bytes(2, "little")
        await ws.send_message(b"\x00" + prefix)
        await ws.send_message(b"\x01" + prefix)
        if pod == "broken":
            await ws.send_message(b"\x01" + REFUSED.encode())
            await ws.aclose()
            return
        backend = await trio.open_tcp_stream("127.0.0.1", self.pods[pod])
        async with backend, trio.open_nursery() as nursery:

            async def pod_to_ws() -> None:
                while data := await backend.receive_some(65536):
                    await ws.send_message(b"\x00" + data)
                await ws.aclose()  # the pod closed: the API server ends the websocket
                nursery.cancel_scope.cancel()

            nursery.start_soon(pod_to_ws)
            while True:
                try:
                    message = await ws.get_message()
                except trio_websocket.ConnectionClosed:
                    break  # the client closed: the kubelet closes the pod connection
                assert isinstance(message, bytes) and message[0] == 0
                await backend.send_all(message[1:])
            nursery.cancel_scope.cancel()

    async def port_forward_base64(
        self, request: trio_websocket.WebSocketRequest, pod: str, port: int
    ) -> None:
        """v4.base64.channel.k8s.io: text messages, channel as an ASCII digit, base64."""
        assert "v4.base64.channel.k8s.io" in request.proposed_subprotocols
        ws = await request.accept(subprotocol="v4.base64.channel.k8s.io")
        prefix = base64.b64encode(port.to_bytes(2, "little")).decode()
        await ws.send_message("0" + prefix)
        await ws.send_message("1" + prefix)
        backend = await trio.open_tcp_stream("127.0.0.1", self.pods[pod])
        async with backend:
            message = await ws.get_message()
            assert isinstance(message, str) and message[0] == "0"
            await backend.send_all(base64.b64decode(message[1:]))
            await backend.send_eof()
            while data := await backend.receive_some(65536):
                await ws.send_message("0" + base64.b64encode(data).decode())
            await ws.aclose()


async def _echo(stream: trio.SocketStream) -> None:
    while data := await stream.receive_some(65536):
        await stream.send_all(data)


@asynccontextmanager
async def cluster(pod_handlers: dict[str, object], **fake: bool) -> AsyncIterator[object]:
    async with trio.open_nursery() as nursery:
        pods = {}
        for name, handler in pod_handlers.items():
            [listener] = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
            pods[name] = listener.socket.getsockname()[1]
        fake_server = FakeApiServer(pods, **fake)
        [api_listener] = await nursery.start(
            partial(trio.serve_tcp, fake_server.handle, 0, host="127.0.0.1")
        )
        api_port = api_listener.socket.getsockname()[1]
        yield await kr8s.asyncio.api(url=f"http://127.0.0.1:{api_port}")
        nursery.cancel_scope.cancel()


@pytest.fixture(params=["thin", "httpx"])
def carrier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Our own websocket client, or kr8s's httpx-ws (which the port-forward uses when a
    proxy is configured: the fake API server is plain http, so httpx goes direct)."""
    if request.param == "httpx":
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    return str(request.param)


async def test_bytes_flow_both_ways_through_the_port_forward(carrier: str) -> None:
    payload = random.Random(3).randbytes(700_000)
    async with (
        cluster({"web": _echo}) as api,
        open_pod_port_forward(api, "web", 8080, namespace="demo") as stream,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, payload)
            got = bytearray()
            while len(got) < len(payload):
                got += await stream.receive_some()
        assert bytes(got) == payload
        await stream.send_eof()  # local only: the protocol has no half-close
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"more")


async def test_pod_closing_is_end_of_stream(carrier: str) -> None:
    async def hello_and_close(stream: trio.SocketStream) -> None:
        await stream.send_all(b"hello from the pod")

    async with (
        cluster({"web": hello_and_close}) as api,
        open_pod_port_forward(api, "web", 80) as stream,
    ):
        got = b""
        while chunk := await stream.receive_some(5):
            assert len(chunk) <= 5
            got += chunk
        assert got == b"hello from the pod"


async def test_error_channel_becomes_a_clear_exception(carrier: str) -> None:
    async with cluster({}) as api, open_pod_port_forward(api, "broken", 80) as stream:
        with pytest.raises(PortForwardError) as info:
            await stream.receive_some()
    assert isinstance(info.value, trio.BrokenResourceError)
    assert "connection refused" in str(info.value) and "pod/broken:80" in str(info.value)


async def test_missing_pod_is_refused_with_the_servers_message(carrier: str) -> None:
    async with cluster({}) as api:
        with pytest.raises(PortForwardError, match="pod/nope:80 .* HTTP 404: no such pod"):
            async with open_pod_port_forward(api, "nope", 80):
                pass


async def test_tunnel_runs_over_the_port_forward() -> None:
    """The engine's path to the manager: websocket over the port-forward, mux inside."""

    async def echo_dial(dial: IncomingDial) -> None:
        stream = await dial.accept_stream()
        while data := await stream.receive_some():
            await stream.send_all(data)
        await stream.send_eof()

    async def on_session(session: MuxSession, request: object) -> None:
        await session.wait_closed()

    async with trio.open_nursery() as nursery:
        manager = await nursery.start(
            partial(serve_mux_websocket, on_session, "127.0.0.1", 0, dial_handler=echo_dial)
        )

        async def to_manager(stream: trio.SocketStream) -> None:
            upstream = await trio.open_tcp_stream("127.0.0.1", manager.port)
            async with upstream, trio.open_nursery() as pipes:

                async def pump(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
                    while data := await src.receive_some(65536):
                        await dst.send_all(data)
                    pipes.cancel_scope.cancel()

                pipes.start_soon(pump, stream, upstream)
                pipes.start_soon(pump, upstream, stream)

        async with (
            cluster({"traffic-manager-0": to_manager}) as api,
            open_pod_port_forward(api, "traffic-manager-0", 8081, namespace="tpengine") as pf,
            wrap_mux_client_stream(pf, "traffic-manager.tpengine") as session,
        ):
            streams = [await session.open_stream("10.96.0.1", 443) for _ in range(4)]
            for i, stream in enumerate(streams):
                await stream.send_all(b"stream %d " % i * 1000)
                await stream.send_eof()
            for i, stream in enumerate(streams):
                got = b""
                while chunk := await stream.receive_some():
                    got += chunk
                assert got == b"stream %d " % i * 1000
        nursery.cancel_scope.cancel()


async def test_base64_channel_variant() -> None:
    async with (
        cluster({"web": _echo}, base64_only=True) as api,
        open_pod_port_forward(api, "web", 80) as stream,
    ):
        await stream.send_all(b"\x00\xffbinary\r\n")
        got = b""
        while chunk := await stream.receive_some():
            got += chunk
        assert got == b"\x00\xffbinary\r\n"


@given(st.lists(st.one_of(st.binary(max_size=12), st.text(max_size=12)), max_size=8))
def test_any_server_messages_give_data_eof_or_a_port_forward_error(messages) -> None:  # type: ignore[no-untyped-def]
    """Whatever the server sends, the stream yields bytes, EOF or PortForwardError."""

    class Scripted:
        """The carrier PortForwardStream reads: messages, then a close (1000)."""

        close_problem = None

        def __init__(self) -> None:
            self.queue = list(messages)

        async def receive(self) -> bytes | str | None:
            await trio.lowlevel.checkpoint()
            return self.queue.pop(0) if self.queue else None

        async def send(self, message: bytes | str) -> None:
            await trio.lowlevel.checkpoint()

        async def aclose(self) -> None:
            await trio.lowlevel.checkpoint()

    for text in (False, True):
        stream = PortForwardStream(Scripted(), "pod/x:80", text=text)

        async def drain(stream: PortForwardStream = stream) -> None:
            try:
                while await stream.receive_some():
                    pass
            except PortForwardError:
                pass

        trio.run(drain)
