"""The plain-websocket port-forward relay in a thread of its own (poll(2), no trio).

A ``tp connect`` sends every message of every proxied connection through one
port-forward websocket, so the relay's cost per message is paid on every round trip. In
trio each message costs a pass of its scheduler (several times the work of the message
itself); this thread waits in poll(2) on the websocket's socket and the pods' and
handles each message straight away: read, decrypt, parse, unmask, write — what a Go
kubelet does. The framing rules (RFC 6455) are FastWebSocket's own
(:meth:`~._fastws.FastWebSocket.consume_frame`), the channel rules the relay's
(kubelet's portforward/websocket.go): data on even channels, nothing from the client on
error channels, the connection ends when a pod closes its side or the client closes.

Backpressure as in the trio relay: the websocket is not read while a pod's unsent data
passes ``HIGH_WATER``, and pods are not read while the websocket's is.
"""

from __future__ import annotations

import os
import select
import socket
from dataclasses import dataclass

import trio

from ._fastws import BINARY, CLOSE, FastWebSocket, Malformed, frame
from ._fdio import LeanTLS

CHUNK = 256 * 1024
HIGH_WATER = 4 * 1024 * 1024
_IN, _OUT = select.POLLIN, select.POLLOUT


@dataclass(frozen=True, kw_only=True)
class Ending:
    """How the relay ended: the client's close frame to echo, or a close code to send."""

    echo: bytes | None = None
    code: int = 1000


def eligible(ws: FastWebSocket, streams: dict[int, trio.abc.Stream]) -> bool:
    """Only the lean case runs in the thread: TLS on a socket, pods on plain sockets."""
    return ws.lean is not None and all(type(s) is trio.SocketStream for s in streams.values())


async def relay(ws: FastWebSocket, streams: dict[int, trio.abc.Stream]) -> Ending:
    """Relay until either side ends; then the caller closes pods and websocket."""
    lean = ws.lean
    assert lean is not None
    pods = {i: s.socket.fileno() for i, s in streams.items() if isinstance(s, trio.SocketStream)}
    wake_r, wake_w = socket.socketpair()
    with wake_r, wake_w:
        worker = _Relay(ws, lean, pods, wake_r.fileno())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_wake_when_cancelled, wake_w)
            # A thread per open port-forward, outside trio's default limit of 40 threads.
            ending = await trio.to_thread.run_sync(worker.run, limiter=trio.CapacityLimiter(1))
            nursery.cancel_scope.cancel()
    return ending


async def _wake_when_cancelled(wake: socket.socket) -> None:
    try:
        await trio.sleep_forever()
    finally:
        wake.send(b"!")  # the thread stops at its next poll; run_sync returns


class _Relay:
    def __init__(self, ws: FastWebSocket, tls: LeanTLS, pods: dict[int, int], wake: int) -> None:
        self.ws = ws
        self.tls = tls
        self.pods = pods  # port index → descriptor (data channel 2i)
        self.index = {fd: i for i, fd in pods.items()}
        self.prefix = {i: bytes([2 * i]) for i in pods}
        self.pending = {i: bytearray() for i in pods}  # bytes a pod has not taken yet
        self.wake = wake
        self.ending: Ending | None = None

    def run(self) -> Ending:
        poller = select.poll()
        masks: dict[int, int] = {}
        try:
            self._from_websocket_buffer()  # frames that came with the upgrade request
        except (trio.BrokenResourceError, OSError):
            return Ending()
        while self.ending is None:
            wanted = {self.wake: _IN, self.tls.fileno(): self._websocket_mask()}
            for i, fd in self.pods.items():
                wanted[fd] = self._pod_mask(i)
            for fd, mask in wanted.items():
                if masks.get(fd) != mask:
                    poller.register(fd, mask)
                    masks[fd] = mask
            for fd, events in poller.poll():
                if fd == self.wake:
                    return Ending()
                self._on_events(fd, events)
                if self.ending is not None:
                    break
        return self.ending

    def _websocket_mask(self) -> int:
        full = any(len(p) >= HIGH_WATER for p in self.pending.values())
        return (0 if full else _IN) | (_OUT if self.tls.backlog else 0)

    def _pod_mask(self, i: int) -> int:
        return (_IN if self.tls.backlog < HIGH_WATER else 0) | (_OUT if self.pending[i] else 0)

    def _on_events(self, fd: int, events: int) -> None:
        readable = events & ~_OUT  # POLLIN, or POLLERR/POLLHUP: a read tells which
        try:
            if fd == self.tls.fileno():
                if events & _OUT:
                    self.tls.flush_nowait()
                if readable:
                    self._from_websocket()
                return
            i = self.index[fd]
            if events & _OUT:
                self._to_pod(i, b"")
            if readable and self.ending is None:
                self._from_pod(i)
        except (trio.BrokenResourceError, OSError):
            self.ending = Ending()

    def _from_websocket(self) -> None:
        while self.ending is None:
            try:
                data = self.tls.receive_nowait()
            except trio.WouldBlock:
                return
            if not data:
                self.ending = Ending()  # the client went away
                return
            self.ws.feed(data)
            self._from_websocket_buffer()

    def _from_websocket_buffer(self) -> None:
        while self.ending is None:
            try:
                parsed = self.ws.next_frame()
            except Malformed:
                self.ending = Ending(code=1002)
                return
            if parsed is None:
                return
            message, reply, abort = self.ws.consume_frame(*parsed)
            if reply is not None:
                if reply[0] == CLOSE:
                    self.ending = Ending(echo=reply[1])  # echoed by the caller
                    return
                self.tls.send_nowait(frame(reply[0], reply[1]))
            if abort is not None:
                self.ending = Ending(code=abort)
                return
            if isinstance(message, bytes) and len(message) > 1 and not message[0] % 2:
                i = message[0] // 2
                if i in self.pods:
                    self._to_pod(i, memoryview(message)[1:])

    def _to_pod(self, i: int, data: bytes | memoryview) -> None:
        """``data`` after what waits for pod ``i``: as much as it takes now, the rest kept."""
        pending = self.pending[i]
        if pending or not data:
            pending += data
            if pending:
                del pending[: _write(self.pods[i], pending)]
            return
        sent = _write(self.pods[i], data)
        if sent < len(data):
            pending += data[sent:]

    def _from_pod(self, i: int) -> None:
        try:
            data = os.read(self.pods[i], CHUNK)
        except BlockingIOError:
            return
        if not data:
            self.ending = Ending()  # the pod closed its side: this port-forward is done
            return
        self.tls.send_nowait(frame(BINARY, data, self.prefix[i]))


def _write(fd: int, data: bytes | bytearray | memoryview) -> int:
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
