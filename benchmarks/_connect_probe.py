"""Servers and load clients of the connect benchmark, run as a script by path.

Runs in a pod (``serve``) or on the laptop (``rtt``, ``connects``, ``dns``), so it uses
only the standard library and dnspython and prints one JSON line::

    python _connect_probe.py serve PORT            64-byte ping-pong on PORT, HTTP on PORT+1
    python _connect_probe.py rtt HOST PORT SECONDS  one connection, 64-byte round trips
    python _connect_probe.py connects HOST PORT SECONDS WORKERS
                                                    connect + 1 round trip + close, loop
    python _connect_probe.py dns SERVER SECONDS WORKERS NAME...
                                                    A queries over UDP, WORKERS at a time
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable

SIZE = 64
WARMUP = 50


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


HTTP_REPLY = (
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
    b"Connection: close\r\n\r\nok\n"
)


def serve(port: int) -> None:
    """One thread, one selector: 64-byte ping-pong on PORT, a minimal HTTP/1.0 server on
    PORT+1 (any request, 200 "ok", then close) that ``ab`` can hammer without the server
    being the limit."""
    sel = selectors.DefaultSelector()
    for p, kind in ((port, "pingpong"), (port + 1, "http")):
        listener = socket.create_server(("0.0.0.0", p), backlog=1024)
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ, ("listen", kind))
    buffers: dict[socket.socket, bytes] = {}
    while True:
        for key, _ in sel.select():
            role, kind = key.data
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if role == "listen":
                _accept(sel, sock, kind, buffers)
            else:
                _serve_one(sel, sock, kind, buffers)


def _accept(sel: selectors.BaseSelector, listener: socket.socket, kind: str, buffers: dict) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffers[conn] = b""
        sel.register(conn, selectors.EVENT_READ, ("conn", kind))


def _serve_one(sel: selectors.BaseSelector, conn: socket.socket, kind: str, buffers: dict) -> None:
    try:
        data = conn.recv(65536)
    except OSError:
        data = b""
    if not data:
        _close(sel, conn, buffers)
        return
    buffered = buffers[conn] + data
    if kind == "pingpong":
        whole = len(buffered) - len(buffered) % SIZE
        buffers[conn] = buffered[whole:]
        if whole:
            try:
                conn.setblocking(True)  # replies are small: the send buffer takes them
                conn.sendall(buffered[:whole])
                conn.setblocking(False)
            except OSError:
                _close(sel, conn, buffers)
    elif b"\r\n\r\n" in buffered:
        try:
            conn.sendall(HTTP_REPLY)
        except OSError:
            pass
        _close(sel, conn, buffers)
    else:
        buffers[conn] = buffered


def _close(sel: selectors.BaseSelector, conn: socket.socket, buffers: dict) -> None:
    sel.unregister(conn)
    buffers.pop(conn, None)
    conn.close()


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def rtt(host: str, port: int, seconds: float) -> dict[str, float]:
    message = b"p" * SIZE
    samples: list[float] = []
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(WARMUP):
            sock.sendall(message)
            _recv_exactly(sock, SIZE)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            sock.sendall(message)
            _recv_exactly(sock, SIZE)
            samples.append(time.perf_counter() - start)
    samples.sort()
    return {
        "n": len(samples),
        "p50_us": _percentile(samples, 0.50) * 1e6,
        "p99_us": _percentile(samples, 0.99) * 1e6,
    }


def _run_workers(workers: int, seconds: float, one: Callable[[], None]) -> dict[str, float]:
    counts = [0] * workers
    errors = [0] * workers
    deadline = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < deadline:
            try:
                one()
                counts[i] += 1
            except Exception:
                errors[i] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {"n": sum(counts), "errors": sum(errors), "per_s": sum(counts) / elapsed}


def connects(host: str, port: int, seconds: float, workers: int) -> dict[str, float]:
    message = b"c" * SIZE

    def one() -> None:
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(message)
            _recv_exactly(sock, SIZE)

    return _run_workers(workers, seconds, one)


def dns_qps(server: str, seconds: float, workers: int, names: list[str]) -> dict[str, float]:
    import dns.message
    import dns.query
    import dns.rcode

    queries = [dns.message.make_query(name, "A") for name in names]
    index = [0]

    def one() -> None:
        index[0] += 1
        query = queries[index[0] % len(queries)]
        answer = dns.query.udp(query, server, timeout=2)
        if answer.rcode() != dns.rcode.NOERROR or not answer.answer:
            raise LookupError(f"{query.question[0].name}: {dns.rcode.to_text(answer.rcode())}")

    return _run_workers(workers, seconds, one)


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    if command == "serve":
        serve(int(args[0]))
        return
    if command == "rtt":
        result = rtt(args[0], int(args[1]), float(args[2]))
    elif command == "connects":
        result = connects(args[0], int(args[1]), float(args[2]), int(args[3]))
    elif command == "dns":
        result = dns_qps(args[0], float(args[1]), int(args[2]), args[3:])
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
