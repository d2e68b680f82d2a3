"""Loss, reordering and duplication between the kernel and the netstack (seeded).

A fault layer wraps the TUN: every packet either way (SYN, FIN and RST included) may be
dropped, duplicated or held back behind the next one, with rates and seed drawn by
hypothesis. Through it, several kernel connections transfer data both ways with
half-close, and one is aborted with RST. Every byte must arrive exactly once and in
order, every connection must finish, and the stack must forget all of them.
"""

from __future__ import annotations

import random
import socket
import struct
from dataclasses import replace
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.netstack._netns import in_netns, open_test_tun
from tpengine.netstack import NetstackConfig, TcpConfig, TcpStream, open_netstack

pytestmark = pytest.mark.root


class FaultyTun:
    """A TUN wrapper that drops, duplicates and reorders packets, both directions."""

    def __init__(self, tun: Any, rng: random.Random, drop: float, dup: float, swap: float):
        self._tun = tun
        self.fd = tun.fd
        self.vnet_hdr = tun.vnet_hdr
        self.offloads = tun.offloads
        self.mtu = tun.mtu
        self._rng = rng
        self._drop, self._dup, self._swap = drop, dup, swap
        self._held_in: list[bytes] = []
        self._held_out: list[bytes] = []
        self.faults = 0

    def _mangle(self, packets: list[bytes], held: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for packet in packets:
            r = self._rng.random()
            if r < self._drop:
                self.faults += 1
                continue
            if r < self._drop + self._swap and not held:
                held.append(packet)  # goes out after the next packet: reordered
                self.faults += 1
                continue
            out.append(packet)
            if held:
                out.extend(held)
                held.clear()
            if self._rng.random() < self._dup:
                out.append(packet)
                self.faults += 1
        return out

    def read_batch_nowait(self, max_packets: int = 64) -> list[bytes]:
        return self._mangle(self._tun.read_batch_nowait(max_packets), self._held_in)

    def write_nowait(self, packet: bytes | bytearray | memoryview) -> bool:
        for p in self._mangle([bytes(packet)], self._held_out):
            self._tun.write_nowait(p)
        return True


def _payload(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return rng.randbytes(n)


CONFIG = NetstackConfig(
    tcp=TcpConfig(
        min_rto=0.2,
        initial_rto=0.3,
        keepalive_idle=1.0,
        keepalive_interval=0.3,
        keepalive_count=3,
        msl=0.2,
        receive_buffer=32768,  # small windows: many more packets to lose
        send_buffer=32768,
        max_segment_payload=8192,
    )
)


@settings(max_examples=6)
@given(
    seed=st.integers(0, 2**32 - 1),
    drop=st.sampled_from([0.01, 0.03, 0.06]),
    dup=st.sampled_from([0.0, 0.02, 0.05]),
    swap=st.sampled_from([0.0, 0.03, 0.08]),
)
async def test_faults_every_byte_once_in_order_and_nothing_hangs(
    seed: int, drop: float, dup: float, swap: float
) -> None:
    await _run_faulty(random.Random(seed), drop, dup, swap, CONFIG)


@settings(max_examples=3)
@given(seed=st.integers(0, 2**32 - 1))
async def test_faults_without_sack_or_timestamps(seed: int) -> None:
    """The same, negotiating neither SACK nor timestamps: NewReno recovery (RFC 6582)
    and Karn-timed RTT samples do the work."""
    plain = NetstackConfig(tcp=replace(CONFIG.tcp, sack=False, timestamps=False))
    await _run_faulty(random.Random(seed), 0.04, 0.02, 0.05, plain)


async def _run_faulty(
    rng: random.Random, drop: float, dup: float, swap: float, config: NetstackConfig
) -> None:
    sizes = [0, 1, 70_000, 300_000]
    async with open_test_tun() as (tun, netns):
        faulty = FaultyTun(tun, rng, drop, dup, swap)
        async with open_netstack(faulty, config=config) as stack:
            received: dict[int, bytes] = {}
            with trio.fail_after(40):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_serve, stack, received)
                    async with trio.open_nursery() as clients:
                        for index, size in enumerate(sizes):
                            clients.start_soon(_client, netns, index, size)
                        clients.start_soon(_aborter, netns)
                    for index, size in enumerate(sizes):
                        assert received[index] == _payload(size, index), f"upload {index}"
                    # Every connection ends (the aborted one by RST or keepalive), and
                    # the stack forgets them all.
                    for _ in range(300):
                        if not stack.connection_count:
                            break
                        await trio.sleep(0.1)
                    assert stack.connection_count == 0
                    nursery.cancel_scope.cancel()


async def _serve(stack: Any, received: dict[int, bytes]) -> None:
    async with trio.open_nursery() as nursery:
        async for pending in stack.pending_connections():
            nursery.start_soon(_handle, pending, received)


async def _handle(pending: Any, received: dict[int, bytes]) -> None:
    """Protocol: a 4-byte index, then the upload until the client's FIN; the answer is
    the download of the same size, then FIN."""
    try:
        stream: TcpStream = await pending.accept()
    except trio.BrokenResourceError:
        return
    data = bytearray()
    try:
        while chunk := await stream.receive_some():
            data += chunk
        index = struct.unpack("!I", data[:4])[0]
        received[index] = bytes(data[4:])
        await stream.send_all(_payload(len(data) - 4, index + 1000))
    except trio.BrokenResourceError:
        pass
    await stream.aclose()


async def _kernel_socket(netns: str) -> trio.socket.SocketType:
    def make() -> socket.socket:
        with in_netns(netns):
            return socket.socket()

    return trio.socket.from_stdlib_socket(await trio.to_thread.run_sync(make))


async def _client(netns: str, index: int, size: int) -> None:
    sock = await _kernel_socket(netns)
    await sock.connect((f"10.77.8.{index + 1}", 9000))
    stream = trio.SocketStream(sock)
    await stream.send_all(struct.pack("!I", index) + _payload(size, index))
    await stream.send_eof()
    answer = bytearray()
    while chunk := await stream.receive_some(1 << 20):
        answer += chunk
    await stream.aclose()
    assert bytes(answer) == _payload(size, index + 1000), f"download {index}"


async def _aborter(netns: str) -> None:
    sock = await _kernel_socket(netns)
    await sock.connect(("10.77.8.99", 9000))
    await sock.send(struct.pack("!I", 99) + b"partial")
    await trio.sleep(0.05)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST
