"""The tunnel over the engine's carrier (port-forward → websocket → TLS → socket, with
a small socket buffer) against an in-test API server relay: the driver writes from the
task that queued (send_nowait), and what the socket did not take yet is flushed by the
writer, so every byte arrives, in order."""

from __future__ import annotations

import random

import trio
import trio.testing

from tests._tcp import receive_exactly, trio_tcp_pair
from tests.kube._tls_pair import tls_pair
from tpengine.fdstream import FdStream
from tpengine.kube._websocket import BINARY, CLOSE, FrameReader, WebSocketClient, encode_frame
from tpengine.kube.portforward import PortForwardStream, _ThinCarrier
from tpengine.tunnel import IncomingDial, Role, open_mux_over_stream


class _CountingPortForward(PortForwardStream):
    """The real stream, counting the writer's flushes (to know the path was taken)."""

    flushes = 0

    async def flush(self) -> None:
        self.flushes += 1
        await super().flush()


class _Relay:
    """The API server's side: client frames (channel 0 + data) to the pod's connection,
    the pod's bytes back as unmasked frames, after the port on both channels. Reading
    from the client pauses while :attr:`reading` is not set (its socket fills up)."""

    def __init__(self) -> None:
        self.reading = trio.Event()
        self.reading.set()

    async def run(self, api: trio.abc.Stream, pod: trio.abc.Stream) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._down, api, pod)
            await self._up(api, pod)
            nursery.cancel_scope.cancel()

    async def _up(self, api: trio.abc.Stream, pod: trio.abc.Stream) -> None:
        reader = FrameReader(expect_masked=True)
        while True:
            await self.reading.wait()
            data = await api.receive_some(65536)
            if not data:
                return
            reader.feed(data)
            while (message := reader.next_message()) is not None:
                opcode, payload = message
                if opcode == CLOSE:
                    return
                assert opcode == BINARY and payload[:1] == b"\x00"
                await pod.send_all(payload[1:])

    async def _down(self, api: trio.abc.Stream, pod: trio.abc.Stream) -> None:
        port = (8081).to_bytes(2, "little")
        await api.send_all(encode_frame(BINARY, b"\x00" + port, masked=False))
        await api.send_all(encode_frame(BINARY, b"\x01" + port, masked=False))
        while data := await pod.receive_some(65536):
            await api.send_all(encode_frame(BINARY, b"\x00" + data, masked=False))


async def _echo(dial: IncomingDial) -> None:
    stream = await dial.accept_stream()
    async with stream:
        while data := await stream.receive_some():
            await stream.send_all(data)


async def _pod_side(stream: trio.SocketStream) -> None:
    """The manager's end of the tunnel, behind the relay."""
    async with open_mux_over_stream(FdStream(stream), role=Role.SERVER, dial_handler=_echo) as s:
        await s.wait_closed()


async def test_tunnel_over_the_port_forward_carrier_loses_and_reorders_nothing() -> None:
    rng = random.Random(21)
    small = [rng.randbytes(64) for _ in range(200)]
    held = rng.randbytes(600_000)
    bulk = rng.randbytes(3_000_000)
    relay, (relay_end, pod_end) = _Relay(), trio_tcp_pair()
    async with (
        tls_pair() as (tls, api_side, _),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(relay.run, api_side, relay_end)
        pf = _CountingPortForward(_ThinCarrier(WebSocketClient(tls, None, b"")), "test")
        nursery.start_soon(_pod_side, pod_end)
        async with open_mux_over_stream(pf, role=Role.CLIENT) as client:
            stream = await client.open_stream("10.0.0.1", 7)
            for message in small:  # round trips: each written by the queuing task
                await stream.send_all(message)
                assert await receive_exactly(stream, len(message)) == message
            # The API server stops reading: the socket takes part of a record, the TLS
            # stream keeps the rest, and the writer flushes it (blocked until resumed).
            relay.reading = trio.Event()
            for pos in range(0, len(held), 50_000):
                await stream.send_all(held[pos : pos + 50_000])
                await trio.lowlevel.checkpoint()  # the writer runs (or stays idle)
            await trio.testing.wait_all_tasks_blocked()
            assert pf.flushes == 1  # the writer is in it, waiting for the socket
            relay.reading.set()
            assert await receive_exactly(stream, len(held)) == held
            back = bytearray()

            async def receive() -> None:
                back.extend(await receive_exactly(stream, len(bulk)))

            async with trio.open_nursery() as both:
                both.start_soon(receive)
                for pos in range(0, len(bulk), 50_000):
                    await stream.send_all(bulk[pos : pos + 50_000])
                    if pos % 200_000 == 0:
                        await trio.lowlevel.checkpoint()  # writer idle: send_nowait again
            assert bytes(back) == bulk
            await stream.aclose()
        nursery.cancel_scope.cancel()
    await trio.aclose_forcefully(relay_end)
