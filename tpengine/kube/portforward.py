"""A trio-native Kubernetes port-forward to one pod port, as a byte stream.

kr8s's own ``Pod.portforward`` runs only under asyncio, so this speaks the API server's
plain websocket channel protocol itself, over the thin websocket client of
:mod:`tpengine.kube._websocket` with kr8s's server and credentials (or over kr8s's
``api.open_websocket`` — httpx-ws under anyio — when a proxy is configured):

* ``GET /api/v1/namespaces/NS/pods/POD/portforward?ports=P`` upgraded to a websocket with
  subprotocol ``v4.channel.k8s.io`` (fallbacks ``v4.base64.channel.k8s.io`` and the
  unnamed original protocol);
* every message starts with its channel byte: port *i* of ``ports`` uses channel ``2i``
  for data and ``2i+1`` for errors — with one port, 0 and 1;
* the server first writes the port as uint16 little-endian on each channel
  (``[0, lo, hi]``, ``[1, lo, hi]``); those two bytes are dropped here;
* text on the error channel (``error forwarding port 80 to pod …``) becomes a
  :class:`PortForwardError` (a ``trio.BrokenResourceError``);
* one websocket carries one TCP connection; the API server closing the websocket is the
  pod side's end of stream.

Sending without waiting: :meth:`PortForwardStream.send_nowait` puts one message through
the websocket and TLS onto the socket from the calling task (the tunnel's driver writes
each of its messages so, instead of waking its writer task); what the socket did not take
yet stays with the TLS stream (or the websocket, without TLS), goes out first on the next
send, and :meth:`PortForwardStream.flush` sends it (``output_pending`` says when to). The
base64 variant and kr8s's websocket (behind a proxy) take nothing that way.

Half-close: this protocol has no way to signal a FIN for one direction (the SPDY variant
has stream FIN; the plain channel protocol has none, and v5's CLOSE signal exists only
for exec). :meth:`PortForwardStream.send_eof` therefore only closes our sending side
locally: further ``send_all`` calls raise ClosedResourceError, the pod sees nothing
until :meth:`aclose` closes the websocket (which the kubelet turns into a FIN and close
towards the pod). Protocols that need the peer to see a half-close (``nc -q``, some
RPCs) do not work through this transport; HTTP, websockets and the tunnel do.
"""

from __future__ import annotations

import base64
import json
import operator
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

import httpx_ws
import trio
import wsproto.events
import wsproto.utilities

from tpengine.kube import _websocket
from tpengine.kube._websocket import BINARY, WebSocketClient, WebSocketError

SUBPROTOCOLS = ["v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io"]
DATA, ERROR = 0, 1
#: Largest websocket message we send (the API server accepts much more; this keeps
#: latency of other traffic on the connection low and copies small).
SEND_CHUNK = 256 * 1024


class PortForwardError(trio.BrokenResourceError):
    """The API server or the kubelet could not forward, or the forward failed."""

    def __init__(self, target: str, message: str) -> None:
        super().__init__(f"port-forward to {target} failed: {message}")
        self.target = target
        self.message = message


class _Busy:
    def __init__(self, what: str) -> None:
        self.held = False
        self.what = what

    def __enter__(self) -> None:
        if self.held:
            raise trio.BusyResourceError(f"another task is already {self.what}")
        self.held = True

    def __exit__(self, *exc: object) -> None:
        self.held = False


class CarrierLost(Exception):
    """The websocket under a port-forward failed; the message says how."""


class _Carrier(Protocol):
    """One websocket's messages: ``receive`` gives bytes (binary), str (text) or None once
    the server closed it (``close_problem`` then says whether that was abnormal)."""

    close_problem: str | None

    async def receive(self) -> bytes | str | None: ...

    async def send(self, message: bytes | str) -> None: ...

    async def aclose(self) -> None: ...


class _ThinCarrier:
    """:mod:`tpengine.kube._websocket`: frames parsed in the reading task itself."""

    def __init__(self, ws: WebSocketClient) -> None:
        self.ws = ws
        self.close_problem: str | None = None

    async def receive(self) -> bytes | str | None:
        try:
            message = await self.ws.receive_message()
        except WebSocketError as exc:
            await self.ws.aclose(1002)
            raise CarrierLost(f"the API server broke the websocket protocol: {exc}") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise CarrierLost(f"connection to the API server lost ({exc})") from None
        if message is None:
            code = self.ws.close_code
            if code not in (1000, 1005):
                self.close_problem = f"websocket closed with code {code} {self.ws.close_reason}"
            return None
        opcode, payload = message
        return payload if opcode == BINARY else payload.decode("utf-8", "replace")

    async def send(self, message: bytes | str) -> None:
        try:
            if isinstance(message, str):
                await self.ws.send_message(message.encode(), text=True)
            else:
                await self.ws.send_message(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise trio.BrokenResourceError(f"connection to the API server lost ({exc})") from None

    def send_nowait(self, message: bytes) -> int:
        """All of a binary ``message`` without waiting, or 0 (see WebSocketClient)."""
        return self.ws.send_nowait(message)

    @property
    def output_pending(self) -> bool:
        return self.ws.output_pending

    async def flush(self) -> None:
        try:
            await self.ws.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise trio.BrokenResourceError(f"connection to the API server lost ({exc})") from None

    async def aclose(self) -> None:
        await self.ws.aclose()


class _HttpxCarrier:
    """kr8s's own websocket (httpx-ws over anyio): used when a proxy is configured."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.close_problem: str | None = None

    async def receive(self) -> bytes | str | None:
        try:
            event = await self.ws.receive()
        except httpx_ws.WebSocketDisconnect as exc:
            # The API server ends the websocket when the pod side closed the connection.
            if exc.code not in (1000, 1005):
                self.close_problem = f"websocket closed with code {exc.code} {exc.reason or ''}"
            return None
        except (httpx_ws.HTTPXWSException, OSError) as exc:
            raise CarrierLost(f"connection to the API server lost ({type(exc).__name__})") from None
        if isinstance(event, wsproto.events.BytesMessage):
            return bytes(event.data)
        if isinstance(event, wsproto.events.TextMessage):
            return str(event.data)
        return b""

    async def send(self, message: bytes | str) -> None:
        try:
            if isinstance(message, str):
                await self.ws.send_text(message)
            else:
                await self.ws.send_bytes(message)
        except (httpx_ws.HTTPXWSException, wsproto.utilities.LocalProtocolError, OSError) as exc:
            raise trio.BrokenResourceError(f"port-forward broke: {exc}") from None

    async def aclose(self) -> None:
        try:
            await self.ws.close()
        except (httpx_ws.HTTPXWSException, OSError):
            pass


class PortForwardStream(trio.abc.HalfCloseableStream):
    """The byte stream to ``pod:port``; trio's stream errors only."""

    def __init__(self, carrier: _Carrier, target: str, *, text: bool = False) -> None:
        self._carrier = carrier
        self.target = target
        self._text = text  # v4.base64.channel.k8s.io: "0" + base64 in text messages
        self._buf = b""
        self._offset = 0  # bytes of _buf already returned
        self._seen_port = {DATA: False, ERROR: False}
        self._eof = False
        self._eof_sent = False
        self._closed = False
        self._error: str | None = None
        self._send_busy = _Busy("sending on this port-forward")
        self._recv_busy = _Busy("receiving on this port-forward")
        # Binary messages written from the calling task (the thin websocket client only;
        # base64 text and kr8s's httpx-ws always go through send_all).
        self._nowait_carrier = None if text or not isinstance(carrier, _ThinCarrier) else carrier

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with self._send_busy:
            self._check_send()
            view = memoryview(data)
            for pos in range(0, len(view), SEND_CHUNK):
                chunk = view[pos : pos + SEND_CHUNK]
                if self._text:
                    await self._carrier.send("0" + base64.b64encode(chunk).decode())
                else:
                    await self._carrier.send(b"\x00" + chunk)
            if not view:
                await trio.lowlevel.checkpoint()

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Send the start of ``data`` (at most one message: SEND_CHUNK bytes) from this
        task without waiting: the count taken, or 0 when nothing can be taken now (a
        send in progress in another task, bytes of an earlier one still unsent, base64
        or proxied mode, closed or failed: then :meth:`send_all` raises). Bytes taken
        may still be on their way (:attr:`output_pending`; :meth:`flush` sends them)."""
        carrier = self._nowait_carrier
        if (
            carrier is None
            or not data
            or self._send_busy.held
            or self._closed
            or self._eof_sent
            or self._error is not None
        ):
            return 0
        chunk = data[:SEND_CHUNK]
        return len(chunk) if carrier.send_nowait(b"\x00" + chunk) else 0

    @property
    def output_pending(self) -> bool:
        """Whether bytes :meth:`send_nowait` took are not on the wire yet."""
        carrier = self._nowait_carrier
        return carrier is not None and carrier.output_pending

    async def flush(self) -> None:
        """Put on the wire what :meth:`send_nowait` took (also done by any send)."""
        with self._send_busy:
            if self._closed:
                raise trio.ClosedResourceError("port-forward was closed")
            if self._nowait_carrier is not None:
                await self._nowait_carrier.flush()
            else:
                await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_busy:
            self._check_send()
            await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        """Local only: the channel protocol cannot carry a half-close (see module doc)."""
        with self._send_busy:
            if self._closed:
                raise trio.ClosedResourceError("port-forward was closed")
            self._eof_sent = True
            await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        with self._recv_busy:
            if self._buf:
                await trio.lowlevel.checkpoint()
            while not self._buf:
                if self._closed:
                    raise trio.ClosedResourceError("port-forward was closed")
                if self._error is not None:
                    raise PortForwardError(self.target, self._error)
                if self._eof:
                    await trio.lowlevel.checkpoint()
                    return b""
                await self._read_message()
            if self._closed:
                raise trio.ClosedResourceError("port-forward was closed")
            start = self._offset
            if max_bytes is None or max_bytes >= len(self._buf) - start:
                out = self._buf[start:] if start else self._buf
                self._buf, self._offset = b"", 0
            else:  # copy only what is returned: tiny reads of a big message stay linear
                out = self._buf[start : start + max_bytes]
                self._offset += max_bytes
            return out

    async def _read_message(self) -> None:
        try:
            message = await self._carrier.receive()
        except CarrierLost as exc:
            self._error = str(exc)
            return
        if message is None:
            # The API server ends the websocket when the pod side closed the connection.
            if self._error is None:
                self._error = self._carrier.close_problem
            self._eof = True
            return
        if isinstance(message, bytes):
            raw = message
        elif message:
            # Base64 variant: channel as an ASCII digit, payload base64 (the first
            # message's payload is then the port, also base64-encoded).
            try:
                if not message[0].isdigit():
                    raise ValueError("channel is not a digit")
                raw = bytes((int(message[0]),)) + base64.b64decode(message[1:], validate=True)
            except ValueError:  # binascii.Error is a ValueError
                self._error = "API server sent a malformed base64 channel message"
                return
        else:
            return
        self._on_channel_message(raw)

    def _on_channel_message(self, raw: bytes) -> None:
        if not raw:
            return
        channel, payload = raw[0], raw[1:]
        if channel not in (DATA, ERROR):
            return  # only one port was requested; other channels do not exist
        if not self._seen_port[channel]:
            # The first message on each channel is the port, uint16 little-endian.
            self._seen_port[channel] = True
            payload = payload[2:]
        if not payload:
            return
        if channel == DATA:
            self._buf += payload
        else:
            text = payload.decode("utf-8", "replace").strip()
            self._error = text if self._error is None else f"{self._error}; {text}"

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with trio.move_on_after(2) as scope:
                scope.shield = True
                await self._carrier.aclose()
        await trio.lowlevel.checkpoint()

    def _check_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("port-forward was closed")
        if self._eof_sent:
            raise trio.ClosedResourceError("can't send after send_eof()")
        if self._error is not None:
            raise PortForwardError(self.target, self._error)


@asynccontextmanager
async def open_pod_port_forward(
    api: Any, pod: str, port: int, *, namespace: str = "default"
) -> AsyncIterator[PortForwardStream]:
    """Open a byte stream to ``port`` of ``pod`` through the API server.

    ``api`` is a ``kr8s.asyncio`` Api (``await kr8s.asyncio.api(...)``); its server and
    credentials are used by this module's own websocket client (kr8s's httpx-ws when a
    proxy is configured). Usable on its own or under a tunnel::

        async with open_pod_port_forward(api, "traffic-manager-7d9", 8081,
                                         namespace="tpengine") as stream:
            async with open_mux_over_stream(stream, role=Role.CLIENT) as session:
                ...
    """
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    target = f"pod/{pod}:{port} in namespace {namespace}"
    opening = _open_thin if _websocket.usable_for(api) else _open_httpx
    async with opening(api, pod, port, namespace, target) as (carrier, text):
        stream = PortForwardStream(carrier, target, text=text)
        try:
            yield stream
        finally:
            stream._closed = True


@asynccontextmanager
async def _open_thin(
    api: Any, pod: str, port: int, namespace: str, target: str
) -> AsyncIterator[tuple[_Carrier, bool]]:
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}/portforward"
    opening = _websocket.open_api_websocket(api, path, {"ports": str(port)}, SUBPROTOCOLS)
    async with AsyncExitStack() as stack:
        try:
            ws = await stack.enter_async_context(opening)
        except _websocket.UpgradeRefused as exc:
            raise PortForwardError(target, _describe_refusal(exc.status, exc.body)) from None
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, WebSocketError) as exc:
            raise PortForwardError(target, f"cannot reach the API server: {exc}") from None
        yield _ThinCarrier(ws), ws.subprotocol == SUBPROTOCOLS[1]


@asynccontextmanager
async def _open_httpx(
    api: Any, pod: str, port: int, namespace: str, target: str
) -> AsyncIterator[tuple[_Carrier, bool]]:
    try:
        async with api.open_websocket(
            version="v1",
            url=f"pods/{pod}/portforward",
            namespace=namespace,
            params={"ports": str(port)},
            subprotocols=SUBPROTOCOLS,
            max_message_size_bytes=256 * 1024,
            queue_size=64,
            # The tunnel above has its own keepalive; the API server answers pings too.
            keepalive_ping_interval_seconds=None,
        ) as ws:
            yield _HttpxCarrier(ws), ws.subprotocol == SUBPROTOCOLS[1]
    except httpx_ws.WebSocketUpgradeError as exc:
        code = int(getattr(exc.response, "status_code", 0))
        raise PortForwardError(target, _describe_refusal(code, b"")) from None
    except BaseExceptionGroup as group:
        # httpx-ws runs the websocket in a task group, which wraps what the body raised.
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            raise group.exceptions[0] from None
        raise


def open_port_forward(
    api: Any, namespace: str, pod: str, port: int
) -> AbstractAsyncContextManager[PortForwardStream]:
    """:func:`open_pod_port_forward` with positional (namespace, pod, port)."""
    return open_pod_port_forward(api, pod, port, namespace=namespace)


_REFUSALS = {
    400: "the pod is not running (or not ready for port-forward)",
    401: "the API server did not accept our credentials",
    403: "forbidden: the user may not create pods/portforward in this namespace",
    404: "no such pod",
}


def _describe_refusal(code: int, body: bytes) -> str:
    """The upgrade was answered with an HTTP status instead of 101: explain the status
    code, with the server's Status message when it sent one."""
    text = f"API server answered HTTP {code}: {_REFUSALS.get(code, 'upgrade refused')}"
    try:
        message = json.loads(body).get("message") if body else None
    except (ValueError, AttributeError):
        message = None
    return f"{text} ({message})" if isinstance(message, str) and message else text
