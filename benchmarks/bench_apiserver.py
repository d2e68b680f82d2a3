"""The local cluster's API server: `kubectl get pods` latency and port-forward throughput.

- latency: median wall time of ``kubectl get pods`` (10 pods) next to ``kubectl get --raw
  /version`` (the same binary, one trivial request) — the difference is what discovery,
  the list and the Table cost.
- throughput: 32 MiB echoed through a pod port-forward (the fake runtime connects to a
  loopback echo server), over (a) the plain websocket channel protocol with a
  trio-websocket client and (b) kubectl's SPDY-in-websocket, next to (c) a bare
  trio-websocket echo on loopback (no TLS, no API server) in the same run.

Run: ``.venv/bin/python -m benchmarks apiserver``.
"""

from __future__ import annotations

import functools
import os
import re
import ssl
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import trio
from trio_websocket import open_websocket_url, serve_websocket

from localcluster.apiserver import ApiServer, serve_apiserver
from localcluster.apiserver._http import Request
from localcluster.controllers import bootstrap
from localcluster.pki import ensure_pki, write_kubeconfig
from localcluster.store import Store
from tests.localcluster.api.conftest import echo_server
from tests.localcluster.api.fakenode import FakeKubelet, FakeRuntime

TOTAL = 32 * 1024 * 1024
MESSAGE = 64 * 1024


async def _echo_through_websocket(
    url: str, context: ssl.SSLContext | None, **kwargs: object
) -> float:
    payload = os.urandom(MESSAGE)
    async with open_websocket_url(url, ssl_context=context, **kwargs) as ws:  # type: ignore[arg-type]
        prefix = b""
        if "portforward" in url:
            await ws.get_message()
            await ws.get_message()
            prefix = b"\x00"
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                for _ in range(TOTAL // MESSAGE):
                    await ws.send_message(prefix + payload)

            nursery.start_soon(send)
            got = 0
            while got < TOTAL:
                message = await ws.get_message()
                got += len(message) - len(prefix)
        return TOTAL / (time.perf_counter() - started) / 1e6


async def _bare_websocket() -> float:
    async def echo(request: object) -> None:
        ws = await request.accept()  # type: ignore[attr-defined]
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except Exception:
            return

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(serve_websocket, echo, "127.0.0.1", 0, ssl_context=None)
        )
        rate = await _echo_through_websocket(f"ws://127.0.0.1:{server.port}/", None)
        nursery.cancel_scope.cancel()
    return rate


async def _tcp_echo(port: int) -> float:
    payload = os.urandom(MESSAGE)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    started = time.perf_counter()
    async with stream, trio.open_nursery() as nursery:

        async def send() -> None:
            for _ in range(TOTAL // MESSAGE):
                await stream.send_all(payload)

        nursery.start_soon(send)
        got = 0
        while got < TOTAL:
            got += len(await stream.receive_some(1 << 20))
    return TOTAL / (time.perf_counter() - started) / 1e6


async def _kubectl(env: dict[str, str], *args: str) -> float:
    started = time.perf_counter()
    await trio.run_process(["kubectl", *args], env=env, capture_stdout=True, capture_stderr=True)
    return (time.perf_counter() - started) * 1000


async def _kubectl_port_forward(env: dict[str, str], pod: str) -> float:
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(
            functools.partial(
                trio.run_process,
                ["kubectl", "port-forward", f"pod/{pod}", ":8080"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                check=False,
            )
        )
        buffer = b""
        while b"Forwarding from 127.0.0.1:" not in buffer or not buffer.endswith(b"\n"):
            buffer += await proc.stdout.receive_some(4096)
        match = re.search(rb"Forwarding from 127\.0\.0\.1:(\d+)", buffer)
        assert match is not None
        rate = await _tcp_echo(int(match.group(1)))
        proc.terminate()
    return rate


async def _server_time(store: Store, runtime: FakeRuntime, token: str) -> float:
    """The server's own time for the list request `kubectl get pods` makes (no network)."""
    app = ApiServer(store=store, runtime=runtime, token=token)
    request = Request(
        method="GET",
        path="/api/v1/namespaces/default/pods",
        query={"limit": ["500"]},
        headers={
            "authorization": f"Bearer {token}",
            "accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        },
        body=b"",
    )
    samples = []
    for _ in range(50):
        started = time.perf_counter()
        response = await app.handle(request)
        assert response.status == 200
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def _run(tmp: Path) -> None:
    pki = ensure_pki(tmp / "state", extra_sans=["127.0.0.1"])
    store = Store(node_name="bench-node")
    await bootstrap(store, ca_cert_pem=pki.ca_cert_pem)
    async with trio.open_nursery() as nursery:
        kubelet = FakeKubelet(store)
        nursery.start_soon(kubelet.run)
        echo_port = await nursery.start(echo_server)
        runtime = FakeRuntime(store, nursery, targets={8080: echo_port})
        port = await nursery.start(
            functools.partial(serve_apiserver, store, runtime, host="127.0.0.1", port=0, pki=pki)
        )
        kubeconfig = tmp / "kubeconfig"
        write_kubeconfig(
            kubeconfig, server=f"https://127.0.0.1:{port}", pki=pki, cluster_name="bench"
        )
        env = {"HOME": str(tmp), "KUBECONFIG": str(kubeconfig), "PATH": os.environ.get("PATH", "")}
        for i in range(10):
            spec = {"containers": [{"name": "c", "image": "jmalloc/echo-server"}]}
            await store.create("pods", "default", {"metadata": {"name": f"p{i}"}, "spec": spec})
        await trio.sleep(0.2)
        await _kubectl(env, "get", "pods")  # warm the dispatcher's version cache
        raw = statistics.median(
            [await _kubectl(env, "get", "--raw", "/version") for _ in range(10)]
        )
        get = statistics.median([await _kubectl(env, "get", "pods") for _ in range(10)])
        print(f"kubectl get pods (10 pods):      {get:7.1f} ms median")
        print(
            f"kubectl get --raw /version:      {raw:7.1f} ms median (baseline: same binary, trivial request)"
        )
        print(f"ratio get pods / raw version:    {get / raw:7.2f}")
        print(
            f"server time, pods Table request: {await _server_time(store, runtime, pki.token):7.2f} ms median"
        )

        context = ssl.create_default_context(cadata=pki.ca_cert_pem.decode())
        url = f"wss://127.0.0.1:{port}/api/v1/namespaces/default/pods/p0/portforward?ports=8080"
        headers = [("Authorization", f"Bearer {pki.token}")]
        bare = await _bare_websocket()
        plain = await _echo_through_websocket(
            url, context, extra_headers=headers, subprotocols=["v4.channel.k8s.io"]
        )
        spdy = await _kubectl_port_forward(env, "p0")
        print(f"bare trio-websocket echo:        {bare:7.1f} MB/s (baseline, loopback, no TLS)")
        print(f"port-forward, plain websocket:   {plain:7.1f} MB/s  ratio {plain / bare:5.2f}")
        print(f"port-forward, kubectl SPDY/ws:   {spdy:7.1f} MB/s  ratio {spdy / bare:5.2f}")
        nursery.cancel_scope.cancel()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(_run, Path(tmp))


if __name__ == "__main__":
    main()
