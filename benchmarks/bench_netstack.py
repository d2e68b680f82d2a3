"""The netstack's throughput, connection rate and memory, next to the raw TUN rates.

All in one run, each in a fresh namespace with a TUN routed to the stack:

- raw TUN read (TSO) and GSO-write rates (``bench_tun.measure_raw_rates``): the ceiling;
- kernel → netstack → sink and source → netstack → kernel, one stream and eight, MB/s
  (the kernel end is a separate Python process per stream inside the namespace);
- new connections per second accepted from ``ab`` (apache2-utils, C) against a tiny
  HTTP/1.0 responder on netstack streams;
- the stack's RSS growth per idle connection with 10,000 connections open.

Run: ``.venv/bin/python -m benchmarks netstack`` (needs root).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time

import trio

from benchmarks.bench_tun import measure_raw_rates
from tests.netstack._netns import in_netns, open_test_tun, run_in_netns
from tpengine import wire
from tpengine.netstack import COMPILED, NetstackConfig, PendingConnection, TcpConfig, open_netstack

# The kernel end: one process, one thread, all its connections multiplexed with
# selectors, so the stack under test competes with one peer process for the two
# cores, as the raw baseline does (eight processes would take 8/9 of the CPU).
_PEER = """
import selectors, socket, sys
mode, n, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chunk, buf = bytes(1 << 20), bytearray(1 << 20)
sel = selectors.DefaultSelector()
left = {}
for i in range(n):
    s = socket.create_connection(("10.77.5.%d" % (i + 1), 5001), timeout=60)
    s.setblocking(False)
    left[s] = per
    sel.register(s, selectors.EVENT_WRITE if mode == "send" else selectors.EVENT_READ)
while left:
    for key, _ in sel.select():
        s = key.fileobj
        if mode == "send" and left[s] > 0:
            try:
                left[s] -= s.send(memoryview(chunk)[: min(left[s], len(chunk))])
            except BlockingIOError:
                continue
            if left[s] == 0:
                s.shutdown(socket.SHUT_WR)
                sel.modify(s, selectors.EVENT_READ)
            continue
        try:
            got = s.recv_into(buf)
        except BlockingIOError:
            continue
        if mode == "receive":
            left[s] -= got
        if not got or left[s] <= 0:
            sel.unregister(s)
            s.close()
            del left[s]
"""
_IDLE = """
import socket, sys, resource
host, n = sys.argv[1], int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, n + 100))
socks = [socket.create_connection((host, 7000 + i % 1000), timeout=60) for i in range(n)]
print("open", flush=True)
sys.stdin.readline()
"""
_RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"

MB = 1e6


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class _Clock:
    def __init__(self) -> None:
        self.first: float | None = None
        self.last = 0.0
        self.nbytes = 0

    def start(self) -> None:
        now = time.perf_counter()
        if self.first is None or now < self.first:
            self.first = now

    def stop(self, nbytes: int) -> None:
        self.last = max(self.last, time.perf_counter())
        self.nbytes += nbytes

    def rate(self) -> float:
        assert self.first is not None
        return self.nbytes / (self.last - self.first) / MB


async def _sample_rss(samples: list[int]) -> None:
    while True:
        samples.append(_rss_kib())
        await trio.sleep(0.05)


async def _bulk(
    direction: str, streams: int, total: int, rss_samples: list[int] | None = None
) -> float:
    """MB/s through the stack: "in" = kernel → stack sink, "out" = stack source → kernel."""
    per = total // streams
    clock = _Clock()
    payload = bytes(1 << 20)
    async with open_test_tun(name="tpnbench") as (tun, netns), open_netstack(tun) as stack:

        async def handle(pending: PendingConnection) -> None:
            stream = await pending.accept()
            clock.start()
            n = 0
            async with stream:
                if direction == "in":
                    while data := await stream.receive_some(1 << 20):
                        n += len(data)
                else:
                    while n < per:
                        piece = payload[: min(len(payload), per - n)]
                        await stream.send_all(piece)
                        n += len(piece)
                    await stream.send_eof()
                    await stream.receive_some(1)
            clock.stop(n)

        async def serve() -> None:
            async with trio.open_nursery() as nursery:
                async for pending in stack.pending_connections():
                    nursery.start_soon(handle, pending)

        mode = "send" if direction == "in" else "receive"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            if rss_samples is not None:
                nursery.start_soon(_sample_rss, rss_samples)
            argv = [sys.executable, "-c", _PEER, mode, str(streams), str(per)]
            await run_in_netns(netns, argv)
            nursery.cancel_scope.cancel()
    return clock.rate()


async def _http_respond(stream: trio.abc.Stream) -> None:
    """The tiny HTTP/1.0 responder: read the request head, answer, close."""
    try:
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request:
                data = await stream.receive_some()
                if not data:
                    return
                request += data
            await stream.send_all(_RESPONSE)
    except trio.BrokenResourceError:
        pass


async def _ab(netns: str, url: str, requests: int, concurrency: int) -> float:
    argv = ["ab", "-q", "-n", str(requests), "-c", str(concurrency), url]
    result = await run_in_netns(netns, argv, capture_stdout=True, capture_stderr=True)
    out = result.stdout.decode()
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    if failed and int(failed.group(1)):
        raise RuntimeError(f"ab: {failed.group(1)} failed requests")
    found = re.search(r"Requests per second:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"ab printed no rate:\n{out}")
    return float(found.group(1))


async def _connection_rate(requests: int = 5000, concurrency: int = 16) -> float:
    """ab → TUN → netstack → the responder on a ``TcpStream``."""
    async with open_test_tun(name="tpnbench") as (tun, netns), open_netstack(tun) as stack:

        async def accept(pending: PendingConnection) -> None:
            try:
                stream = await pending.accept()
            except trio.BrokenResourceError:
                return
            await _http_respond(stream)

        async def serve() -> None:
            async with trio.open_nursery() as nursery:
                async for pending in stack.pending_connections():
                    nursery.start_soon(accept, pending)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            rate = await _ab(netns, "http://10.77.0.80/", requests, concurrency)
            nursery.cancel_scope.cancel()
    return rate


async def _kernel_connection_rate(requests: int = 5000, concurrency: int = 16) -> float:
    """The baseline: the same responder on the kernel's TCP (a listening socket in the
    namespace), same ab, same run."""
    async with open_test_tun(name="tpnbench") as (_tun, netns):

        def make() -> socket.socket:
            with in_netns(netns):
                sock = socket.socket()
                sock.bind(("127.0.0.1", 8080))
                sock.listen(1024)
                return sock

        listener = trio.SocketListener(
            trio.socket.from_stdlib_socket(await trio.to_thread.run_sync(make))
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, _http_respond, [listener])
            rate = await _ab(netns, "http://127.0.0.1:8080/", requests, concurrency)
            nursery.cancel_scope.cancel()
    return rate


_PINGPONG = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
lat = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    s.sendall(b"x" * 64)
    got = 0
    while got < 64:
        got += len(s.recv(64))
    lat.append(time.perf_counter() - t)
lat.sort()
print(lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6)
"""


async def _echo(stream: trio.abc.Stream) -> None:
    try:
        async with stream:
            while data := await stream.receive_some():
                await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


async def _rtt(rounds: int = 3000) -> tuple[tuple[float, float], tuple[float, float]]:
    """64-byte request/response RTT p50/p99 (µs) through the netstack, and the same echo
    server on kernel TCP (loopback in the namespace), client in its own process."""
    async with open_test_tun(name="tpnbench") as (tun, netns), open_netstack(tun) as stack:

        async def accept(pending: PendingConnection) -> None:
            try:
                stream = await pending.accept()
            except trio.BrokenResourceError:
                return
            await _echo(stream)

        async def serve() -> None:
            async with trio.open_nursery() as nursery:
                async for pending in stack.pending_connections():
                    nursery.start_soon(accept, pending)

        def make() -> socket.socket:
            with in_netns(netns):
                sock = socket.socket()
                sock.bind(("127.0.0.1", 7007))
                sock.listen(16)
                return sock

        listener = trio.SocketListener(
            trio.socket.from_stdlib_socket(await trio.to_thread.run_sync(make))
        )
        results = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            nursery.start_soon(trio.serve_listeners, _echo, [listener])
            for host, port in (("10.77.0.7", 7), ("127.0.0.1", 7007)):
                argv = [sys.executable, "-c", _PINGPONG, host, str(port), str(rounds)]
                out = await run_in_netns(netns, argv, capture_stdout=True)
                p50, p99 = map(float, out.stdout.split())
                results.append((p50, p99))
            nursery.cancel_scope.cancel()
    return results[0], results[1]


async def _idle_rss(count: int = 10_000) -> tuple[float, int]:
    """KiB of RSS the stack grows by per idle connection (and how many were open)."""
    config = NetstackConfig(backlog=count, tcp=TcpConfig(keepalive_idle=None))
    async with (
        open_test_tun(name="tpnbench") as (tun, netns),
        open_netstack(tun, config=config) as stack,
    ):
        opened = trio.Event()
        accepted = 0

        async def hold(pending: PendingConnection) -> None:
            nonlocal accepted
            stream = await pending.accept()
            accepted += 1
            if accepted == count:
                opened.set()
            await stream.receive_some()

        async def serve() -> None:
            async with trio.open_nursery() as nursery:
                async for pending in stack.pending_connections():
                    nursery.start_soon(hold, pending)

        before = _rss_kib()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            proc = await trio.lowlevel.open_process(
                [
                    "ip",
                    "netns",
                    "exec",
                    netns,
                    sys.executable,
                    "-c",
                    _IDLE,
                    "10.77.6.1",
                    str(count),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
            )
            try:
                with trio.fail_after(120):
                    await opened.wait()
                await trio.sleep(0.5)
                after = _rss_kib()
                open_now = stack.connection_count
            finally:
                assert proc.stdin is not None
                await proc.stdin.send_all(b"\n")
                await proc.wait()
            nursery.cancel_scope.cancel()
    return (after - before) / count, open_now


async def _run() -> None:
    def build(compiled: bool) -> str:
        return "compiled with mypyc" if compiled else "pure Python (not compiled: ./dev setup)"

    print(f"tpengine.wire build: {build(wire.COMPILED)}; tpengine.netstack: {build(COMPILED)}")
    print(f"load average (1 min) at the start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    total = 256 << 20
    raw = await measure_raw_rates(total)
    mib = total >> 20
    print(f"raw TUN read (TSO), kernel → userspace, {mib} MiB:     {raw.read_mb_s:7.0f} MB/s")
    print(f"raw TUN write (GSO), userspace → kernel, {mib} MiB:    {raw.write_mb_s:7.0f} MB/s")
    for streams in (1, 8):
        rate_in = await _bulk("in", streams, total)
        rate_out = await _bulk("out", streams, total)
        print(
            f"netstack kernel → sink,   {streams} stream(s), {mib} MiB: {rate_in:7.0f} MB/s"
            f"  ({rate_in / raw.read_mb_s:4.0%} of raw read)"
        )
        print(
            f"netstack source → kernel, {streams} stream(s), {mib} MiB: {rate_out:7.0f} MB/s"
            f"  ({rate_out / raw.write_mb_s:4.0%} of raw write)"
        )
    samples: list[int] = []
    rate = await _bulk("out", 1, 1 << 30, samples)
    samples_in: list[int] = []
    rate_in = await _bulk("in", 1, 1 << 30, samples_in)
    tenth, tenth_in = len(samples) // 10, len(samples_in) // 10
    print(
        f"RSS across 1 GiB out ({rate:.0f} MB/s): {samples[tenth] >> 10} MiB at 10%, "
        f"max {max(samples[tenth:]) >> 10} MiB; 1 GiB in ({rate_in:.0f} MB/s): "
        f"{samples_in[tenth_in] >> 10} MiB at 10%, max {max(samples_in[tenth_in:]) >> 10} MiB"
    )
    if shutil.which("ab"):
        rate = await _connection_rate()
        kernel = await _kernel_connection_rate()
        print(
            f"new connections/s (ab -n 5000 -c 16, HTTP/1.0): {rate:7.0f} /s  (target ≥ 3,000;"
            f" same responder on kernel TCP: {kernel:.0f} /s, {rate / kernel:.0%})"
        )
    else:
        print("new connections/s: ab (apache2-utils) not installed; skipped")
    (p50, p99), (k50, k99) = await _rtt()
    print(
        f"64-byte request RTT p50/p99: {p50:.0f}/{p99:.0f} µs"
        f"  (same trio echo server on kernel TCP: {k50:.0f}/{k99:.0f} µs)"
    )
    per_conn, open_now = await _idle_rss()
    print(f"RSS per idle connection ({open_now} open):       {per_conn:7.1f} KiB  (target ≤ 16 KB)")


def main() -> None:
    if os.geteuid() != 0:
        print("netstack: needs root (network namespaces and a TUN device); skipped")
        return
    trio.run(_run)


if __name__ == "__main__":
    main()
