"""The trio port-forward against the local cluster's real API server and a real pod.

The API server is only reachable from the laptop namespace, so the client runs there
(``tp local-cluster exec``), using the kubeconfig the cluster wrote.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = [pytest.mark.root, pytest.mark.e2e]

NS = "e2e-tunnel"
MUX_NS = "e2e-tunnel-mux"
POD = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: echo, namespace: {NS}}}
spec:
  containers:
  - name: echo
    image: ghcr.io/telepresenceio/echo-server:latest
    ports: [{{containerPort: 8080, name: http}}]
    readinessProbe: {{httpGet: {{path: /, port: http}}, periodSeconds: 1}}
"""

CLIENT = """
import sys, trio, kr8s.asyncio
from tpengine.kube.portforward import PortForwardError, open_pod_port_forward

async def main():
    api = await kr8s.asyncio.api()
    pod, ns = sys.argv[1], sys.argv[2]
    with trio.fail_after(20):
        async with open_pod_port_forward(api, pod, 8080, namespace=ns) as stream:
            await stream.send_all(b"GET /through-the-forward HTTP/1.1\\r\\nHost: echo\\r\\n\\r\\n")
            got = b""
            while b"through-the-forward" not in got:
                chunk = await stream.receive_some()
                if not chunk:
                    break
                got += chunk
            print(got.decode(errors="replace"))
        try:
            async with open_pod_port_forward(api, pod, 9, namespace=ns) as stream:
                await stream.receive_some()
        except PortForwardError as exc:
            print("ERROR-CHANNEL:", exc)

trio.run(main)
"""


MUX_POD = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {MUX_NS}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: mux, namespace: {MUX_NS}}}
spec:
  containers:
  - name: mux
    image: tpengine/tpengine:dev
    command:
    - python
    - -c
    - |
      import trio
      from tpengine.tunnel import serve_mux_websocket

      async def echo(dial):
          stream = await dial.accept_stream()
          while data := await stream.receive_some():
              await stream.send_all(data)
          await stream.send_eof()

      async def where(method, payload):
          return {{"method": method, "payload": payload, "pod": "mux"}}

      async def session(s, request):
          await s.wait_closed()

      trio.run(lambda: serve_mux_websocket(
          session, "0.0.0.0", 8081, dial_handler=echo, request_handler=where))
    ports: [{{containerPort: 8081}}]
    readinessProbe: {{tcpSocket: {{port: 8081}}, periodSeconds: 1}}
"""

MUX_CLIENT = """
import random, sys, trio, kr8s.asyncio
from tpengine.kube.portforward import open_pod_port_forward
from tpengine.tunnel import wrap_mux_client_stream

async def roundtrip(session, i):
    payload = random.Random(i).randbytes(300_000)
    stream = await session.open_stream("10.96.0.1", 443, tag=b"e2e")
    async with stream, trio.open_nursery() as nursery:
        async def write():
            await stream.send_all(payload)
            await stream.send_eof()
        nursery.start_soon(write)
        got = b""
        while chunk := await stream.receive_some():
            got += chunk
    assert got == payload, (i, len(got))

async def main():
    api = await kr8s.asyncio.api()
    with trio.fail_after(30):
        async with (
            open_pod_port_forward(api, "mux", 8081, namespace=sys.argv[1]) as pf,
            wrap_mux_client_stream(pf, "mux") as session,
        ):
            async with trio.open_nursery() as nursery:
                for i in range(8):
                    nursery.start_soon(roundtrip, session, i)
            print("STREAMS-OK")
            print(await session.request("hello", {"n": 1}))
            print("RTT", await session.ping())

trio.run(main)
"""


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.skip("needs root and network namespaces")
    from localcluster.node.testing import shared_cluster

    with shared_cluster() as c:
        # tests/localcluster/e2e/test_zz_down.py takes the shared cluster down while the
        # session still holds it; ``up`` is a no-op on a running cluster, else restarts it.
        up = c.tp("local-cluster", "up", "--name", c.name)
        assert up.returncode == 0, up.stdout + up.stderr
        yield c


def test_port_forward_to_a_real_pod_and_its_error_channel(cluster: Any) -> None:
    cluster.kubectl_ok("apply", "-f", "-", input=POD)
    try:
        cluster.kubectl_ok("wait", "-n", NS, "--for=condition=Ready", "pod/echo", "--timeout=60s")
        result = cluster.laptop(sys.executable, "-c", CLIENT, "echo", NS, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "Request served by echo" in result.stdout
        assert "GET /through-the-forward" in result.stdout
        assert "ERROR-CHANNEL:" in result.stdout and "port 9" in result.stdout
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=false")


def test_tunnel_through_the_port_forward_into_a_pod(cluster: Any) -> None:
    """The engine's path to the manager: websocket over the port-forward, mux inside."""
    cluster.kubectl_ok("apply", "-f", "-", input=MUX_POD)
    try:
        cluster.kubectl_ok(
            "wait", "-n", MUX_NS, "--for=condition=Ready", "pod/mux", "--timeout=60s"
        )
        result = cluster.laptop(sys.executable, "-c", MUX_CLIENT, MUX_NS, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "STREAMS-OK" in result.stdout
        assert "'pod': 'mux'" in result.stdout and "RTT" in result.stdout
    finally:
        cluster.kubectl("delete", "namespace", MUX_NS, "--wait=false")
