"""Pod subresources that stream: log, exec, portforward (via the NodeRuntime)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from . import _exec, _portforward
from ._errors import BadRequest
from ._fastws import FastWebSocket
from ._http import Request, Response
from ._websocket import WebSocket, handshake_headers

if TYPE_CHECKING:
    from ._app import ApiServer, Target

log = logging.getLogger(__name__)

PORTFORWARD_SPDY_WS = "SPDY/3.1+portforward.k8s.io"
PORTFORWARD_WS = ("v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io")


def _flag(req: Request, name: str) -> bool:
    return (req.arg(name) or "").lower() in ("true", "1")


def _pod(app: ApiServer, target: Target) -> dict[str, Any]:
    assert target.name is not None
    return app.store.get("pods", target.namespace, target.name)


def _container(pod: dict[str, Any], wanted: str | None) -> str:
    names = [c["name"] for c in pod["spec"].get("containers") or []]
    inits = [c["name"] for c in pod["spec"].get("initContainers") or []]
    name = pod["metadata"]["name"]
    if wanted:
        if wanted not in names + inits:
            raise BadRequest(f"container {wanted} is not valid for pod {name}")
        return wanted
    if len(names) == 1:
        return names[0]
    default = (pod["metadata"].get("annotations") or {}).get(
        "kubectl.kubernetes.io/default-container"
    )
    if default in names:
        return str(default)
    raise BadRequest(
        f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
        + (f" or one of the init containers: [{' '.join(inits)}]" if inits else "")
    )


def _protocols(req: Request) -> list[str]:
    return [p.strip() for p in req.header("sec-websocket-protocol").split(",") if p.strip()]


def _is_websocket(req: Request) -> bool:
    return "websocket" in req.header("upgrade").lower()


async def handle(app: ApiServer, req: Request, target: Target) -> Response:
    if target.subresource == "attach":
        raise BadRequest("attach is not supported by the local cluster")
    pod = _pod(app, target)
    if target.subresource == "exec":
        return await _exec_response(app, req, pod)
    return await _portforward_response(app, req, pod)


async def _exec_response(app: ApiServer, req: Request, pod: dict[str, Any]) -> Response:
    container = _container(pod, req.arg("container"))
    command = req.args("command")
    if not command:
        raise BadRequest("you must specify at least 1 command")
    if not _is_websocket(req):
        raise BadRequest("exec needs a websocket upgrade (v5.channel.k8s.io or v4.channel.k8s.io)")
    offered = _protocols(req)
    chosen = next((p for p in offered if p in _exec.PROTOCOLS), None)
    if chosen is None:
        raise BadRequest(f"unable to upgrade connection: no supported subprotocol in {offered}")
    if pod.get("status", {}).get("phase") != "Running":
        raise BadRequest(
            f'unable to upgrade connection: container not found ("{container}")'
            if pod.get("status", {}).get("phase") == "Pending"
            else f"cannot exec into a container in a completed pod; current phase is {pod['status'].get('phase')}"
        )
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    tty, stdin = _flag(req, "tty"), _flag(req, "stdin")

    async def upgraded(stream: trio.abc.Stream, trailing: bytes) -> None:
        ws = WebSocket(stream, trailing)
        try:
            session = await app.runtime.exec(ns, name, container, command, stdin=stdin, tty=tty)
        except Exception as exc:  # PodNotRunning, OSError or a runtime bug: report it
            try:
                await ws.send(bytes([_exec.ERROR]) + _json(_exec.failure_status(str(exc))))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await ws.aclose()
            return
        await _exec.serve_exec(ws, session, command)

    return Response(
        status=101,
        headers=handshake_headers(req.header("sec-websocket-key"), chosen),
        upgrade=upgraded,
    )


def _json(obj: Any) -> bytes:
    import json

    return json.dumps(obj).encode()


async def _portforward_response(app: ApiServer, req: Request, pod: dict[str, Any]) -> Response:
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    if pod.get("status", {}).get("phase") != "Running":
        raise BadRequest(f"unable to upgrade connection: pod {name} is not running")
    open_port = _portforward.opener(app.runtime, ns, name)
    ports: list[int] = []
    for value in req.args("ports"):
        for part in value.split(","):
            try:
                port = int(part)
            except ValueError:
                raise BadRequest(f"unable to parse {part!r} as a port") from None
            if not 0 < port < 65536:
                raise BadRequest(f"port {port} must be > 0 and < 65536")
            ports.append(port)
    if _is_websocket(req):
        offered = _protocols(req)
        if PORTFORWARD_SPDY_WS in offered:

            async def tunneled(stream: trio.abc.Stream, trailing: bytes) -> None:
                transport = _portforward.WebSocketBytes(FastWebSocket(stream, trailing))
                await _portforward.SpdySession(transport, open_port, ns, name).run()

            headers = handshake_headers(req.header("sec-websocket-key"), PORTFORWARD_SPDY_WS)
            return Response(status=101, headers=headers, upgrade=tunneled)
        if not ports:
            raise BadRequest('query parameter "port" is required')
        chosen = next((p for p in offered if p in PORTFORWARD_WS), None)
        if offered and chosen is None:
            raise BadRequest(f"unable to upgrade connection: no supported subprotocol in {offered}")

        async def plain(stream: trio.abc.Stream, trailing: bytes) -> None:
            await _portforward.serve_websocket(
                FastWebSocket(stream, trailing),
                open_port,
                ports,
                ns,
                name,
                _portforward.ChannelCodec(base64=chosen == "v4.base64.channel.k8s.io"),
            )

        return Response(
            status=101,
            headers=handshake_headers(req.header("sec-websocket-key"), chosen),
            upgrade=plain,
        )
    if req.header("upgrade").lower().startswith("spdy/3.1"):
        # The pre-1.31 path: POST + Upgrade: SPDY/3.1 (X-Stream-Protocol-Version portforward.k8s.io).
        async def raw(stream: trio.abc.Stream, trailing: bytes) -> None:
            transport: trio.abc.Stream = stream
            if trailing:
                transport = _Prefixed(stream, trailing)
            await _portforward.SpdySession(transport, open_port, ns, name).run()

        headers = [
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "portforward.k8s.io"),
        ]
        return Response(status=101, headers=headers, upgrade=raw)
    raise BadRequest("Upgrade request required")


class _Prefixed(trio.abc.Stream):
    """A stream with some already-read bytes put back in front."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream, self._prefix = stream, prefix

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await self._stream.aclose()
