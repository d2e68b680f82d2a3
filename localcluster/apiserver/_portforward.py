"""Port-forward: the plain websocket channel protocol and SPDY/3.1 (in a websocket or raw).

Websocket (kubelet's portforward/websocket.go, what kr8s speaks): ``?ports=a,b``; port i
uses channel 2i for data and 2i+1 for errors; each message starts with its channel byte;
the server first sends each port as uint16 little-endian on both channels.

SPDY (portforward.k8s.io, kubelet's portforward/httpstream.go): per forwarded connection
the client opens an error stream and a data stream sharing a ``requestid``; the server
replies to each, pipes data (FIN = half-close), and finishes by closing both streams,
writing a message on the error stream first when something failed.
"""

from __future__ import annotations

import logging
import struct
from base64 import b64decode, b64encode
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from ..runtime_api import NodeRuntime
from . import _spdy, _threadrelay
from ._fastws import FastWebSocket
from ._fdio import read_fd, write_fd
from ._websocket import WebSocket

#: Port-forward runs over the lean websocket; the wsproto one works too (same interface).
AnyWebSocket = FastWebSocket | WebSocket

log = logging.getLogger(__name__)
CHUNK = 256 * 1024
Opener = Callable[[int], Awaitable[trio.abc.Stream]]


def opener(runtime: NodeRuntime, namespace: str, pod: str) -> Opener:
    async def open_port(port: int) -> trio.abc.Stream:
        return await runtime.open_pod_port(namespace, pod, port)

    return open_port


def _error_text(namespace: str, pod: str, port: int, exc: BaseException) -> str:
    return (
        f"error forwarding port {port} to pod {pod} in namespace {namespace}: "
        f"failed to connect to localhost:{port} inside the pod: {exc}"
    )


# ---- plain websocket -------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelCodec:
    """Channel framing: binary (``v4.channel.k8s.io``) or ``v4.base64.channel.k8s.io``,
    where each message is text: the channel as one ASCII digit, then base64 data."""

    base64: bool = False

    def encode(self, channel: int, data: bytes | bytearray) -> bytes | str:
        if self.base64:
            return str(channel) + b64encode(data).decode()
        return bytes([channel]) + data

    def decode(self, message: bytes | str) -> tuple[int, bytes | memoryview] | None:
        if not message:
            return None
        if isinstance(message, bytes):  # a view: the relay passes the data on uncopied
            return None if self.base64 else (message[0], memoryview(message)[1:])
        if not self.base64 or not message[0].isdigit():
            return None
        try:
            return int(message[0]), b64decode(message[1:], validate=True)
        except ValueError:
            return None


async def serve_websocket(
    ws: AnyWebSocket,
    open_port: Opener,
    ports: list[int],
    namespace: str,
    pod: str,
    codec: ChannelCodec = ChannelCodec(),
) -> None:
    for i, port in enumerate(ports):
        prefix = struct.pack("<H", port)
        await ws.send(codec.encode(2 * i, prefix))
        await ws.send(codec.encode(2 * i + 1, prefix))
    streams: dict[int, trio.abc.Stream] = {}
    try:
        for i, port in enumerate(ports):
            try:
                streams[i] = await open_port(port)
            except Exception as exc:  # any failure is reported on the error channel
                text = _error_text(namespace, pod, port, exc).encode()
                await ws.send(codec.encode(2 * i + 1, text))
        if (
            isinstance(ws, FastWebSocket)
            and not codec.base64
            and _threadrelay.eligible(ws, streams)
        ):
            ending = await _threadrelay.relay(ws, streams)
            if ending.echo is not None:
                await ws.echo_close(ending.echo)
            elif ending.code != 1000:
                await ws.aclose(ending.code)
            return
        async with trio.open_nursery() as nursery:
            for i, stream in streams.items():
                nursery.start_soon(_pod_to_ws, ws, stream, 2 * i, codec, nursery.cancel_scope)
            await _ws_to_pods(ws, streams, codec)
            nursery.cancel_scope.cancel()
    finally:
        # Shielded: when the server is stopping (cancelled), every socket still closes.
        with trio.CancelScope(shield=True):
            for stream in streams.values():
                await trio.aclose_forcefully(stream)
            await ws.aclose()


def _fd(stream: trio.abc.Stream) -> int:
    """The descriptor of a plain SocketStream (the kubelet's pod connection), else -1:
    the relay then reads and writes it directly (see ``_fdio``)."""
    return stream.socket.fileno() if type(stream) is trio.SocketStream else -1


async def _pod_to_ws(
    ws: AnyWebSocket,
    stream: trio.abc.Stream,
    channel: int,
    codec: ChannelCodec,
    scope: trio.CancelScope,
) -> None:
    fd = _fd(stream)
    # The channel byte goes into the frame with the data in one join (no extra copy).
    fast = ws if isinstance(ws, FastWebSocket) and not codec.base64 else None
    prefix = bytes([channel])
    try:
        while True:
            if fd >= 0:
                data = await read_fd(fd, CHUNK)
            else:
                data = bytes(await stream.receive_some(CHUNK))
            if not data:
                break
            if fast is not None:
                await fast.send(data, prefix)
            else:
                await ws.send(codec.encode(channel, data))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()  # the pod closed its side: the websocket (one connection) is done


async def _ws_to_pods(
    ws: AnyWebSocket, streams: dict[int, trio.abc.Stream], codec: ChannelCodec
) -> None:
    while True:
        message = await ws.receive()
        if message is None:
            return
        decoded = codec.decode(message)
        if decoded is None:
            continue
        channel, data = decoded
        stream = streams.get(channel // 2)
        if channel % 2 or stream is None or not data:
            continue
        try:
            fd = _fd(stream)
            if fd >= 0:
                await write_fd(fd, data)  # ws.receive was the loop's checkpoint
            else:
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


# ---- SPDY ---------------------------------------------------------------------------------


class WebSocketBytes(trio.abc.Stream):
    """A websocket whose binary messages carry one byte stream (kubectl's SPDY tunnel)."""

    def __init__(self, ws: AnyWebSocket) -> None:
        self._ws = ws

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._ws.send(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            message = await self._ws.receive()
            if message is None:
                return b""
            if isinstance(message, bytes) and message:
                return message

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await self._ws.aclose()


@dataclass(eq=False)
class _Forward:
    request_id: str
    port: int
    error_id: int | None = None
    data_id: int | None = None
    pod: trio.abc.Stream | None = None
    data_in: trio.MemorySendChannel[bytes | None] | None = None
    started: bool = False


@dataclass(eq=False)
class SpdySession:
    transport: trio.abc.Stream
    open_port: Opener
    namespace: str
    pod: str
    allowed_ports: list[int] | None = None
    conn: _spdy.SpdyConnection = field(default_factory=_spdy.SpdyConnection)
    _lock: trio.Lock = field(default_factory=trio.Lock)
    _forwards: dict[str, _Forward] = field(default_factory=dict)
    _by_stream: dict[int, _Forward] = field(default_factory=dict)

    async def _send(self, data: bytes) -> None:
        async with self._lock:
            await self.transport.send_all(data)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        data = await self.transport.receive_some(CHUNK)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
                    if not data:
                        break
                    try:
                        frames = self.conn.receive_data(bytes(data))
                    except _spdy.SpdyProtocolError as exc:
                        log.info("port-forward: SPDY protocol error: %s", exc)
                        await self._send(self.conn.goaway(0, 1))
                        break
                    for frame in frames:
                        await self._frame(frame, nursery)
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            for forward in self._forwards.values():
                if forward.pod is not None:
                    await trio.aclose_forcefully(forward.pod)
            await trio.aclose_forcefully(self.transport)

    async def _frame(self, frame: _spdy.Frame, nursery: trio.Nursery) -> None:
        if isinstance(frame, _spdy.Ping):
            await self._send(self.conn.ping(frame.ping_id))
        elif isinstance(frame, _spdy.SynStream):
            await self._syn(frame, nursery)
        elif isinstance(frame, _spdy.Data):
            forward = self._by_stream.get(frame.stream_id)
            if forward is None or forward.data_id != frame.stream_id or forward.data_in is None:
                return
            try:
                if frame.data:
                    await forward.data_in.send(frame.data)
                if frame.fin:
                    await forward.data_in.send(None)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the pod side is done with this connection: drop what still arrives
        elif isinstance(frame, _spdy.RstStream):
            forward = self._by_stream.pop(frame.stream_id, None)
            if forward is not None and forward.pod is not None:
                await trio.aclose_forcefully(forward.pod)
        elif isinstance(frame, _spdy.GoAway):
            return

    async def _syn(self, frame: _spdy.SynStream, nursery: trio.Nursery) -> None:
        headers = frame.headers
        kind, request_id = headers.get("streamtype", ""), headers.get("requestid", "")
        try:
            port = int(headers.get("port", ""))
        except ValueError:
            await self._send(self.conn.rst_stream(frame.stream_id, _spdy.RST_PROTOCOL_ERROR))
            return
        if kind not in ("data", "error") or not 0 < port < 65536:
            await self._send(self.conn.rst_stream(frame.stream_id, _spdy.RST_PROTOCOL_ERROR))
            return
        forward = self._forwards.setdefault(request_id, _Forward(request_id=request_id, port=port))
        if kind == "error":
            forward.error_id = frame.stream_id
        else:
            forward.data_id = frame.stream_id
        self._by_stream[frame.stream_id] = forward
        await self._send(self.conn.syn_reply(frame.stream_id))
        if forward.error_id is not None and forward.data_id is not None and not forward.started:
            forward.started = True
            send, receive = trio.open_memory_channel[bytes | None](64)
            forward.data_in = send
            nursery.start_soon(self._pipe, forward, receive)

    async def _pipe(
        self, forward: _Forward, incoming: trio.MemoryReceiveChannel[bytes | None]
    ) -> None:
        with incoming:  # closed when done, so the reader never blocks on a finished pipe
            await self._forward(forward, incoming)

    async def _forward(
        self, forward: _Forward, incoming: trio.MemoryReceiveChannel[bytes | None]
    ) -> None:
        assert forward.data_id is not None and forward.error_id is not None
        error: str | None = None
        if self.allowed_ports is not None and forward.port not in self.allowed_ports:
            error = f"port {forward.port} was not requested"
        else:
            try:
                forward.pod = await self.open_port(forward.port)
            except Exception as exc:  # reported on the error stream
                error = _error_text(self.namespace, self.pod, forward.port, exc)
        if forward.pod is not None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._client_to_pod, forward.pod, incoming)
                await self._pod_to_client(forward.pod, forward.data_id)
                nursery.cancel_scope.cancel()
            await trio.aclose_forcefully(forward.pod)
        try:
            if error is not None:
                await self._send(self.conn.data(forward.error_id, error.encode()))
            await self._send(self.conn.data(forward.data_id, b"", fin=True))
            await self._send(self.conn.data(forward.error_id, b"", fin=True))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        self._forwards.pop(forward.request_id, None)
        self._by_stream.pop(forward.data_id, None)
        self._by_stream.pop(forward.error_id, None)

    async def _pod_to_client(self, pod: trio.abc.Stream, stream_id: int) -> None:
        try:
            while True:
                data = await pod.receive_some(CHUNK)
                if not data:
                    return
                await self._send(self.conn.data(stream_id, bytes(data)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def _client_to_pod(
        self, pod: trio.abc.Stream, incoming: trio.MemoryReceiveChannel[bytes | None]
    ) -> None:
        try:
            async for data in incoming:
                if data is None:  # the client's FIN: half-close towards the pod
                    if isinstance(pod, trio.abc.HalfCloseableStream):
                        await pod.send_eof()
                    return
                await pod.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            incoming.close()  # the pod stopped reading: later data is dropped, not queued
