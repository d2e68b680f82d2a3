"""Raw TUN rates: the baselines the netstack is measured against (issue 4).

- read: a kernel TCP sender (a separate process in the namespace) pushes bytes into the
  TUN with TSO; a trivial userspace peer (tests/netstack/_netns.RawTcpPeer) reads them in
  batches and ACKs once per batch — no reassembly beyond "in order", no copy.
- write: the same peer sends 64,000-byte GSO segments (partial checksums) within the
  kernel's window into a kernel receiver process.

``measure_raw_rates`` is reusable: the netstack benchmark calls it in the same run.
Run: ``.venv/bin/python -m benchmarks tun`` (needs root).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from functools import partial

import trio

from tests.netstack._netns import RawTcpPeer, open_test_tun, run_in_netns
from tpengine.netstack.tun import TunDevice

_SENDER = """
import socket, sys
n = int(sys.argv[2]); chunk = bytes(1 << 20)
s = socket.create_connection((sys.argv[1], 5201), timeout=30)
while n > 0:
    s.sendall(chunk[: min(n, len(chunk))]); n -= len(chunk)
s.close()
"""
_RECEIVER = """
import socket, sys
n = int(sys.argv[2]); buf = bytearray(1 << 20)
s = socket.create_connection((sys.argv[1], 5202), timeout=30)
while n > 0:
    got = s.recv_into(buf)
    if not got: sys.exit("short read: %d bytes missing" % n)
    n -= got
s.close()
"""


@dataclass(frozen=True, kw_only=True)
class RawRates:
    read_mb_s: float  # kernel -> TUN -> userspace, MB/s (10**6 bytes)
    write_mb_s: float  # userspace -> TUN (GSO) -> kernel, MB/s
    nbytes: int


async def measure_raw_read(
    tun: TunDevice, netns: str, nbytes: int, address: str = "10.77.9.1"
) -> float:
    """MB/s a kernel sender achieves into ``tun`` with a do-nothing userspace receiver."""
    peer = RawTcpPeer(tun)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run, netns, _SENDER, address, nbytes)
        await peer.accept()
        started = time.perf_counter()
        got = await peer.receive(nbytes)
        elapsed = time.perf_counter() - started
    if got < nbytes:
        raise RuntimeError(f"raw read: {got} of {nbytes} bytes")
    return nbytes / elapsed / 1e6


async def measure_raw_write(
    tun: TunDevice, netns: str, nbytes: int, address: str = "10.77.9.2", *, segment: int = 64000
) -> float:
    """MB/s a trivial GSO sender achieves through ``tun`` into a kernel receiver."""
    peer = RawTcpPeer(tun)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run, netns, _RECEIVER, address, nbytes)
        await peer.accept()
        started = time.perf_counter()
        await peer.send(bytes(segment * 16), total=nbytes, segment=segment)
        elapsed = time.perf_counter() - started
    return nbytes / elapsed / 1e6


async def _run(netns: str, script: str, address: str, nbytes: int) -> None:
    await run_in_netns(netns, [sys.executable, "-c", script, address, str(nbytes)])


async def measure_raw_rates(nbytes: int = 256 << 20, *, offload: bool = True) -> RawRates:
    """Both raw rates on a fresh TUN in a fresh namespace (cleaned up afterwards).
    ``offload=False`` is the baseline: no TSO, MTU-sized packets each way."""
    async with open_test_tun(name="tpnbench", offload=offload) as (tun, netns):
        read = await measure_raw_read(tun, netns, nbytes)
        write = await measure_raw_write(tun, netns, nbytes, segment=64000 if offload else 1460)
    return RawRates(read_mb_s=read, write_mb_s=write, nbytes=nbytes)


def main() -> None:
    if os.geteuid() != 0:
        print("tun: needs root (network namespaces and a TUN device); skipped")
        return
    nbytes = 256 << 20
    rates = trio.run(measure_raw_rates, nbytes)
    base = trio.run(partial(measure_raw_rates, 32 << 20, offload=False))
    print(f"{'raw TUN rate, MB/s':<52}{'TSO/GSO':>9}{'no offload':>12}{'ratio':>8}")
    for label, ours, theirs in (
        ("read: kernel sender → TUN → userspace (ACK per batch)", rates.read_mb_s, base.read_mb_s),
        ("write: userspace (64 KB GSO) → TUN → kernel receiver", rates.write_mb_s, base.write_mb_s),
    ):
        print(f"{label:<52}{ours:>9.0f}{theirs:>12.0f}{ours / theirs:>7.1f}×")
    print(f"({nbytes >> 20} MiB with offloads, {base.nbytes >> 20} MiB without, MTU 1500)")


if __name__ == "__main__":
    main()
