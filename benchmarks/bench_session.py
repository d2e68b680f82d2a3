"""A long ``tp connect`` session: memory, file descriptors and latency stay flat.

Developers stay connected all day, so what a connection leaves behind adds up.
``python -m benchmarks session`` (as root) brings up local cluster ``tpls``, connects its
laptop, warms up with ``WARMUP`` connections, then runs ``ROUNDS`` rounds of ``PER_ROUND``
new connections each (``ab -c 8``, one request per connection, to the minimal HTTP
server's ClusterIP) and after each round records the resident memory and open file
descriptors of the engine, the traffic-manager and the local cluster's API server, with
the 64-byte RTT p50 through the tunnel.

Targets: after the warm-up, resident memory grows by less than 1 MB per 10,000
connections in each process and no descriptor is left behind; the RTT does not drift.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks._connect_cluster import (
    PINGPONG_PORT,
    PROBE,
    BenchError,
    Cluster,
    deploy,
    local_cluster,
)
from benchmarks._connect_cpu import tp_meter
from benchmarks._connect_paths import tp_connect

NAME = "tpls"
WARMUP = 20_000  # the allocators reach their working size
PER_ROUND = 20_000
ROUNDS = 3
MB_PER_10K_TARGET = 1.0


@dataclass(frozen=True)
class Sample:
    connections: int
    rss_mb: dict[str, float]
    fds: dict[str, int]
    rtt_p50_us: float


def _process(pid: int) -> tuple[float, int]:
    """(resident MB, open descriptors) of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def _connections(cluster: Cluster, url: str, n: int) -> None:
    out = cluster.laptop("ab", "-q", "-r", "-n", str(n), "-c", "8", url, timeout=900).stdout
    if "Failed requests:        0" not in out:
        raise BenchError(f"ab {url}: some requests failed: {out[-400:]}")


def _rtt_p50(cluster: Cluster, ip: str) -> float:
    out = cluster.laptop(sys.executable, str(PROBE), "rtt", ip, str(PINGPONG_PORT), "2")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["p50_us"])


def _sample(cluster: Cluster, pids: dict[str, int], done: int, ip: str) -> Sample:
    rtt = _rtt_p50(cluster, ip)
    time.sleep(1.0)  # let connections in TIME-WAIT and closing finish
    rss, fds = {}, {}
    for what, pid in pids.items():
        rss[what], fds[what] = _process(pid)
    return Sample(connections=done, rss_mb=rss, fds=fds, rtt_p50_us=rtt)


def _report(samples: list[Sample]) -> None:
    names = list(samples[0].rss_mb)
    head = " | ".join(f"{n} MB | {n} fds" for n in names)
    print(f"| connections | {head} | RTT p50 µs |")
    print("|" + "---|" * (2 + 2 * len(names)))
    for s in samples:
        cells = " | ".join(f"{s.rss_mb[n]:.1f} | {s.fds[n]}" for n in names)
        print(f"| {s.connections:,} | {cells} | {s.rtt_p50_us:.0f} |")
    first, last = samples[0], samples[-1]
    per = (last.connections - first.connections) / 10_000
    for n in names:
        growth = (last.rss_mb[n] - first.rss_mb[n]) / per
        fd_left = last.fds[n] - first.fds[n]
        verdict = "ok" if growth < MB_PER_10K_TARGET and fd_left <= 0 else "MISS"
        print(
            f"{n}: {growth:+.2f} MB per 10,000 connections after the warm-up, "
            f"{fd_left:+d} descriptors: {verdict} (< {MB_PER_10K_TARGET:g} MB, none left)"
        )
    drift = last.rtt_p50_us / first.rtt_p50_us
    print(f"RTT p50 after / after warm-up: {drift:.2f}×")


def main() -> None:
    if os.geteuid() != 0:
        print("bench session needs root (network namespaces, routes): skipped")
        return
    try:
        with local_cluster(NAME) as cluster:
            targets = deploy(cluster)
            url = f"http://{targets.pingpong_cluster_ip}/"
            with tp_connect(cluster) as way:
                print(f"tp connect in {way.connect_seconds:.2f} s", flush=True)
                pids = tp_meter(cluster).pids
                _connections(cluster, url, WARMUP)
                samples = [_sample(cluster, pids, WARMUP, targets.pingpong_ip)]
                for round_ in range(1, ROUNDS + 1):
                    _connections(cluster, url, PER_ROUND)
                    done = WARMUP + round_ * PER_ROUND
                    samples.append(_sample(cluster, pids, done, targets.pingpong_ip))
                    print(f"{done:,} connections", flush=True)
            _report(samples)
    except BenchError as exc:
        print(f"bench session: {exc}; everything it made is removed", file=sys.stderr)
        raise SystemExit(1) from None
