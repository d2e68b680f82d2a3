"""``tp connect`` from the laptop of a local cluster, next to the direct route (the limit)
and sshuttle (the Python peer to beat), all measured in one run.

``python -m benchmarks connect`` (as root): brings up local cluster ``tpb``, deploys an
iperf3 server, the probe (64-byte ping-pong and a minimal HTTP server) and the
echo-server, then measures each path from the laptop:

- bulk TCP laptop → pod and pod → laptop: ``iperf3 -c POD -t 3`` and ``-R`` (Mbit/s);
- 64-byte request RTT p50/p99 on one connection (the probe's client, one at a time);
- new connections per second: ``ab -c 8`` for a few seconds against the minimal HTTP
  server's ClusterIP (one request per connection; the server is far from being the limit)
  and against the echo-server's ClusterIP (the Python echo-server is the limit there);
- DNS queries per second (dnspython, 8 at a time, cluster FQDNs) through the path's
  resolver: the cluster DNS over the direct route, sshuttle ``--dns``, tp's resolver;
- ``tp connect`` wall time with the traffic-manager already installed.

Then the cluster goes down, also on failure or Ctrl-C. Not part of ``./dev test``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import FrameType

from benchmarks._connect_cluster import (
    IPERF_PORT,
    PINGPONG_PORT,
    PROBE,
    BenchError,
    Cluster,
    Targets,
    deploy,
    local_cluster,
)
from benchmarks._connect_cpu import CpuMeter, per_unit, tp_meter
from benchmarks._connect_paths import Way, direct_route, sshuttle, tp_connect

IPERF_SECONDS = 3
RTT_SECONDS = 2.0
AB_SECONDS = 3
DNS_SECONDS = 2.0
CONCURRENCY = 8


@dataclass
class Figures:
    up_mbps: float | None = None
    down_mbps: float | None = None
    rtt_p50_us: float | None = None
    rtt_p99_us: float | None = None
    conns_per_s: float | None = None
    echo_per_s: float | None = None
    dns_qps: float | None = None
    connect_s: float | None = None
    notes: list[str] = field(default_factory=list)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # figure → process → µs


def _iperf(cluster: Cluster, ip: str, reverse: bool) -> tuple[float, float]:
    """(Mbit/s, MB) received; one retry when the server is still busy with the last test
    (over sshuttle its end of a finished test can lag) or the test hung."""
    argv = ["iperf3", "-c", ip, "-p", str(IPERF_PORT), "-t", str(IPERF_SECONDS), "-J"]
    argv += ["-R"] if reverse else []
    for attempt in (1, 2):
        try:
            out = cluster.laptop(*argv, timeout=IPERF_SECONDS + 30, check=False)
        except subprocess.TimeoutExpired:
            # Seen with sshuttle on a busy machine: the first test's connection hangs
            # (iperf3 waits forever for the server's results); a second one works.
            report = {"error": f"no result after {IPERF_SECONDS + 30} s"}
        else:
            try:
                report = json.loads(out.stdout)
            except ValueError:
                report = {"error": (out.stderr or out.stdout).strip()[-300:]}
        if "error" not in report:
            received = report["end"]["sum_received"]
            return float(received["bits_per_second"]) / 1e6, float(received["bytes"]) / 1e6
        if attempt == 1:
            time.sleep(2)
    raise BenchError(f"iperf3: {report['error']}")


def _probe(cluster: Cluster, *args: str, timeout: float = 60) -> dict[str, float]:
    out = cluster.laptop(sys.executable, str(PROBE), *args, timeout=timeout)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _ab(cluster: Cluster, url: str) -> tuple[float, float]:
    """(requests/s, requests): ab without keep-alive opens one connection per request."""
    argv = ["ab", "-q", "-r", "-s", "10", "-t", str(AB_SECONDS), "-n", "1000000"]
    out = cluster.laptop(*argv, "-c", str(CONCURRENCY), url, timeout=AB_SECONDS + 60).stdout
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    if failed and int(failed.group(1)):
        raise BenchError(f"ab {url}: {failed.group(1)} failed requests")
    rate = re.search(r"Requests per second:\s+([\d.]+)", out)
    done = re.search(r"Complete requests:\s+(\d+)", out)
    if rate is None or done is None:
        raise BenchError(f"ab {url}: no rate in its output: {out[-400:]}")
    return float(rate.group(1)), float(done.group(1))


def _attempt(figures: Figures, what: str, fn: Callable[[], float], meter: CpuMeter | None) -> None:
    """One figure's failure is a note in the table, not the end of the run. ``fn``
    returns how many units of work it did, for the CPU-per-unit figures."""
    before = meter.sample() if meter else {}
    try:
        units = fn()
    except (BenchError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
        figures.notes.append(f"{what}: {exc}"[:300])
        print(f"  {what} failed: {exc}", file=sys.stderr)
        return
    if meter:
        figures.cpu[what] = per_unit(before, meter.sample(), units)


def measure(cluster: Cluster, way: Way, targets: Targets) -> Figures:
    f = Figures(connect_s=way.connect_seconds, notes=list(way.notes))
    print(f"measuring {way.name} …", flush=True)

    def up() -> float:
        f.up_mbps, mb = _iperf(cluster, targets.iperf_ip, reverse=False)
        return mb

    def down() -> float:
        f.down_mbps, mb = _iperf(cluster, targets.iperf_ip, reverse=True)
        return mb

    def rtt() -> float:
        r = _probe(cluster, "rtt", targets.pingpong_ip, str(PINGPONG_PORT), str(RTT_SECONDS))
        f.rtt_p50_us, f.rtt_p99_us = r["p50_us"], r["p99_us"]
        return r["n"]

    def conns() -> float:
        f.conns_per_s, n = _ab(cluster, f"http://{targets.pingpong_cluster_ip}/")
        return n

    def echo() -> float:
        f.echo_per_s, n = _ab(cluster, f"http://{targets.hello_cluster_ip}/")
        return n

    def dns() -> float:
        assert way.dns_server is not None
        args = [way.dns_server, str(DNS_SECONDS), str(CONCURRENCY), *targets.dns_names]
        r = _probe(cluster, "dns", *args)
        if r["errors"]:
            raise BenchError(f"{r['errors']:.0f} DNS queries failed of {r['n'] + r['errors']:.0f}")
        f.dns_qps = r["per_s"]
        return r["n"]

    meter = tp_meter(cluster) if way.name == "tp" else None
    figures = [("up", up), ("down", down), ("rtt", rtt), ("conns", conns), ("echo", echo)]
    for what, fn in [*figures, ("dns", dns)]:
        _attempt(f, what, fn, meter)
    return f


# -- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    attr: str
    unit: str
    higher_is_better: bool
    target: float | None = None  # vs sshuttle: tp/sshuttle ≥ target (or ≤ for lower-better)


ROWS = [
    Row("bulk TCP laptop → pod", "up_mbps", "Mbit/s", True, 4.0),
    Row("bulk TCP pod → laptop", "down_mbps", "Mbit/s", True, 4.0),
    Row("64 B request RTT p50", "rtt_p50_us", "µs", False, 1.0),
    Row("64 B request RTT p99", "rtt_p99_us", "µs", False),
    Row("new connections/s (ab -c 8, tiny HTTP)", "conns_per_s", "/s", True, 2.0),
    Row("HTTP req/s to echo-server (ab -c 8)", "echo_per_s", "/s", True),
    Row("DNS queries/s (8 at a time)", "dns_qps", "/s", True),
]


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}×"


def _verdict(row: Row, tp: float | None, ssh: float | None) -> str:
    if row.target is None:
        return ""
    if tp is None or not ssh:
        return "?"
    ratio = tp / ssh
    ok = ratio >= row.target if row.higher_is_better else ratio <= row.target
    sign = "≥" if row.higher_is_better else "≤"
    return f"{'ok' if ok else 'MISS'} ({sign}{row.target:g}× sshuttle)"


def print_table(direct: Figures, ssh: Figures, tp: Figures) -> None:
    header = ("figure", "unit", "direct", "sshuttle", "tp", "tp/sshuttle", "tp/direct", "target")
    lines = [header]
    for row in ROWS:
        d, s, t = (getattr(fig, row.attr) for fig in (direct, ssh, tp))
        lines.append(
            (
                row.label,
                row.unit,
                _fmt(d),
                _fmt(s),
                _fmt(t),
                _ratio(t, s),
                _ratio(t, d),
                _verdict(row, t, s),
            )
        )
    connect = tp.connect_s
    ok = "?" if connect is None else ("ok" if connect <= 3.0 else "MISS")
    lines.append(("tp connect wall time", "s", "", "", _fmt(connect), "", "", f"{ok} (≤3 s)"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for name, fig in (("direct", direct), ("sshuttle", ssh), ("tp", tp)):
        for note in fig.notes:
            print(f"note ({name}): {note}")
    _print_cpu(tp)


CPU_UNITS = {
    "up": "per MB laptop → pod",
    "down": "per MB pod → laptop",
    "rtt": "per 64 B round trip",
    "conns": "per connection (tiny HTTP)",
    "echo": "per connection (echo-server)",
    "dns": "per DNS query",
}


def _print_cpu(tp: Figures) -> None:
    if not tp.cpu:
        return
    procs = ("engine", "manager", "apiserver")
    print("\ntp's CPU time (user + system, µs) per unit of work, same run:")
    print(f"| {'work':28} | " + " | ".join(f"{p:>9}" for p in procs) + " |")
    print(f"|{'-' * 30}|" + "|".join("-" * 11 for _ in procs) + "|")
    for what, label in CPU_UNITS.items():
        row = tp.cpu.get(what, {})
        cells = " | ".join(f"{row[p]:>9,.0f}" if p in row else f"{'—':>9}" for p in procs)
        print(f"| {label:28} | {cells} |")
    print("(apiserver: the local cluster's daemon, which relays the port-forward)")


# -- the run ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C: every context manager's cleanup runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _run_path(
    cluster: Cluster, targets: Targets, path: Callable[[Cluster], AbstractContextManager[Way]]
) -> Figures:
    figures: Figures | None = None
    try:
        with path(cluster) as way:
            figures = measure(cluster, way, targets)
    except (BenchError, subprocess.SubprocessError) as exc:
        print(f"  {path.__name__} failed: {exc}", file=sys.stderr)
        figures = figures or Figures()
        figures.notes.append(f"{path.__name__}: {exc}"[:300])
    return figures


def main() -> None:
    if os.geteuid() != 0:
        print("bench connect needs root (network namespaces, routes, sshd): skipped")
        return
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    try:
        with _sigterm_interrupts(), local_cluster() as cluster:
            print(f"local cluster {cluster.name} up ({time.perf_counter() - started:.1f} s)")
            targets = deploy(cluster)
            print(f"servers ready ({time.perf_counter() - started:.1f} s): {targets}")
            direct = _run_path(cluster, targets, direct_route)
            ssh = _run_path(cluster, targets, sshuttle)
            tp = _run_path(cluster, targets, tp_connect)
    except KeyboardInterrupt:
        print("interrupted; everything the benchmark made is removed", file=sys.stderr)
        raise SystemExit(130) from None
    except BenchError as exc:
        print(f"bench connect: {exc}; everything it made is removed", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"measured in {time.perf_counter() - started:.0f} s; cluster {cluster.name} is down")
    # On a shared 2-core machine the other figures mean little without this one.
    print(f"load average (1 min) {load_before:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print_table(direct, ssh, tp)


if __name__ == "__main__":
    main()
