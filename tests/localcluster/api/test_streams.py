"""exec, logs and port-forward through the API server to the fake runtime."""

from __future__ import annotations

import functools
import hashlib
import random
import struct
import subprocess
from pathlib import Path

import trio
from trio_websocket import open_websocket_url

from tests.localcluster.api.conftest import Cluster, first_match
from tests.localcluster.api.test_kubectl import APP

SIZE = 20 * 1024 * 1024


async def _deploy(cluster: Cluster, tmp_path: Path) -> str:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(APP.replace("replicas: 2", "replicas: 1"))
    await cluster.kubectl("apply", "-f", str(manifest))
    await cluster.kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    pods, _ = cluster.store.list("pods", "default", label_selector="app=web")
    return str(pods[0]["metadata"]["name"])


async def test_exec_stdin_stdout_and_exit_code(cluster: Cluster, tmp_path: Path) -> None:
    pod = await _deploy(cluster, tmp_path)
    out = await cluster.kubectl("exec", "-i", pod, "--", "cat", input=b"hello\nworld\n")
    assert out.stdout == b"hello\nworld\n"
    out = await cluster.kubectl("exec", pod, "--", "echo", "hi", "there")
    assert out.stdout == b"hi there\n"
    out = await cluster.kubectl("exec", pod, "--", "sh", "-c", "exit 3", check=False)
    assert out.returncode == 3
    assert b"exiting" in out.stderr
    out = await cluster.kubectl("exec", pod, "-c", "nope", "--", "true", check=False)
    assert out.returncode != 0 and b"container nope is not valid for pod" in out.stderr


async def test_logs_and_follow(cluster: Cluster, tmp_path: Path) -> None:
    pod = await _deploy(cluster, tmp_path)
    cluster.runtime.logs_by_pod[f"default/{pod}"] = [b"line one\n", b"line two\n"]
    out = await cluster.kubectl("logs", pod)
    assert out.stdout == b"line one\nline two\n"
    cluster.runtime.log_stamps_by_pod[f"default/{pod}"] = [
        "2020-01-01T00:00:00.1Z",
        "2999-01-01T00:00:00.123456789Z",
    ]
    out = await cluster.kubectl("logs", "--since-time=2021-01-01T00:00:00Z", pod)
    assert out.stdout == b"line two\n"
    out = await cluster.kubectl("logs", "--since=1h", "--timestamps", pod)
    assert out.stdout == b"2999-01-01T00:00:00.123456789Z line two\n"
    out = await cluster.kubectl("logs", "--limit-bytes=6", pod)
    assert out.stdout == b"line o"
    out = await cluster.kubectl("logs", "-f", "deployment/web")
    assert out.stdout.endswith(b"follow 0\nfollow 1\nfollow 2\n")


async def _transfer(port: int) -> bytes:
    rng = random.Random(7)
    data = rng.randbytes(SIZE)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = bytearray()
    async with stream, trio.open_nursery() as nursery:

        async def send() -> None:
            view = memoryview(data)
            for i in range(0, len(view), 1 << 18):
                await stream.send_all(view[i : i + (1 << 18)])

        nursery.start_soon(send)
        while len(received) < SIZE:
            chunk = await stream.receive_some(1 << 20)
            if not chunk:
                break
            received += chunk
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
    return bytes(received[:16])


async def test_kubectl_port_forward_20mb_intact(cluster: Cluster, tmp_path: Path) -> None:
    pod = await _deploy(cluster, tmp_path)
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(
            functools.partial(
                trio.run_process,
                ["kubectl", "port-forward", f"pod/{pod}", ":8080"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=cluster.env,
                check=False,
            )
        )
        buffer = b""
        with trio.fail_after(15):
            while b"Forwarding from 127.0.0.1:" not in buffer or not buffer.endswith(b"\n"):
                buffer += await proc.stdout.receive_some(4096)
        port = int(first_match(r"Forwarding from 127\.0\.0\.1:(\d+)", buffer.decode()))
        await _transfer(port)
        proc.terminate()
    entries = [e for e in cluster.audit() if e["subresource"] == "portforward"]
    assert entries and entries[0]["code"] == 101


async def test_plain_websocket_port_forward(cluster: Cluster, tmp_path: Path) -> None:
    """The channel protocol kr8s speaks: port prefix first, data on channel 0."""
    import ssl

    pod = await _deploy(cluster, tmp_path)
    context = ssl.create_default_context(cadata=cluster.pki.ca_cert_pem.decode())
    url = f"wss://127.0.0.1:{cluster.port}/api/v1/namespaces/default/pods/{pod}/portforward?ports=8080"
    headers = [("Authorization", f"Bearer {cluster.pki.token}")]
    async with open_websocket_url(
        url, ssl_context=context, subprotocols=["v4.channel.k8s.io"], extra_headers=headers
    ) as ws:
        assert ws.subprotocol == "v4.channel.k8s.io"
        first = {await ws.get_message(), await ws.get_message()}
        assert first == {b"\x00" + struct.pack("<H", 8080), b"\x01" + struct.pack("<H", 8080)}
        payload = random.Random(3).randbytes(1 << 20)
        got = bytearray()
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                for i in range(0, len(payload), 65536):
                    await ws.send_message(b"\x00" + payload[i : i + 65536])

            nursery.start_soon(send)
            while len(got) < len(payload):
                message = await ws.get_message()
                assert message[0] == 0
                got += message[1:]
        assert bytes(got) == payload


async def test_port_forward_to_a_closed_port_reports_error(
    cluster: Cluster, tmp_path: Path
) -> None:
    import ssl

    pod = await _deploy(cluster, tmp_path)
    context = ssl.create_default_context(cadata=cluster.pki.ca_cert_pem.decode())
    url = f"wss://127.0.0.1:{cluster.port}/api/v1/namespaces/default/pods/{pod}/portforward?ports=9"
    headers = [("Authorization", f"Bearer {cluster.pki.token}")]
    async with open_websocket_url(url, ssl_context=context, extra_headers=headers) as ws:
        messages = [await ws.get_message() for _ in range(3)]
    assert messages[2][0] == 1 and b"error forwarding port 9" in messages[2]


async def test_spdy_upgrade_fallback_port_forward(cluster: Cluster, tmp_path: Path) -> None:
    """The pre-1.31 path: POST + ``Upgrade: SPDY/3.1``, then raw SPDY frames on the socket."""
    import ssl
    import zlib

    from localcluster.apiserver import _spdy
    from tests.localcluster.api.test_units import _syn

    pod = await _deploy(cluster, tmp_path)
    context = ssl.create_default_context(cadata=cluster.pki.ca_cert_pem.decode())
    tcp = await trio.open_tcp_stream("127.0.0.1", cluster.port)
    stream = trio.SSLStream(tcp, context, server_hostname="127.0.0.1")
    request = (
        f"POST /api/v1/namespaces/default/pods/{pod}/portforward HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {cluster.pki.token}\r\n"
        "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        "X-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n"
    )
    await stream.send_all(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(4096)
    assert head.startswith(b"HTTP/1.1 101")
    rest = head.split(b"\r\n\r\n", 1)[1]
    deflate = zlib.compressobj(zdict=_spdy.DICTIONARY)
    inflate = _Client(rest)
    await stream.send_all(
        _syn(deflate, 1, {"streamtype": "error", "port": "8080", "requestid": "0"})
        + _syn(deflate, 3, {"streamtype": "data", "port": "8080", "requestid": "0"})
        + struct.pack(">II", 3, (1 << 24) | 4)
        + b"ping"
    )
    echoed, fins = b"", set()
    with trio.fail_after(10):
        while fins != {1, 3}:
            for kind, sid, data, fin in inflate.feed(await stream.receive_some(65536)):
                if kind == "data":
                    echoed += data if sid == 3 else b""
                    assert sid == 3 or not data  # nothing on the error stream
                    if fin:
                        fins.add(sid)
    assert echoed == b"ping"
    await stream.aclose()


class _Client:
    """Just enough of a SPDY reader for the test: DATA frames and control frame types."""

    def __init__(self, data: bytes) -> None:
        self.buffer = bytearray(data)

    def feed(self, data: bytes) -> list[tuple[str, int, bytes, bool]]:
        self.buffer += data
        out = []
        while len(self.buffer) >= 8:
            length = int.from_bytes(self.buffer[5:8], "big")
            if len(self.buffer) < 8 + length:
                break
            frame, self.buffer = bytes(self.buffer[: 8 + length]), self.buffer[8 + length :]
            if frame[0] & 0x80:
                out.append(("control", int.from_bytes(frame[2:4], "big"), b"", False))
            else:
                sid = int.from_bytes(frame[0:4], "big")
                out.append(("data", sid, frame[8:], bool(frame[4] & 1)))
        return out


async def test_base64_websocket_port_forward(cluster: Cluster, tmp_path: Path) -> None:
    import base64
    import ssl

    pod = await _deploy(cluster, tmp_path)
    context = ssl.create_default_context(cadata=cluster.pki.ca_cert_pem.decode())
    url = f"wss://127.0.0.1:{cluster.port}/api/v1/namespaces/default/pods/{pod}/portforward?ports=8080"
    headers = [("Authorization", f"Bearer {cluster.pki.token}")]
    async with open_websocket_url(
        url, ssl_context=context, subprotocols=["v4.base64.channel.k8s.io"], extra_headers=headers
    ) as ws:
        assert ws.subprotocol == "v4.base64.channel.k8s.io"
        prefix = base64.b64encode(struct.pack("<H", 8080)).decode()
        assert {await ws.get_message(), await ws.get_message()} == {"0" + prefix, "1" + prefix}
        await ws.send_message("0" + base64.b64encode(b"over base64").decode())
        reply = await ws.get_message()
        assert reply[0] == "0" and base64.b64decode(reply[1:]) == b"over base64"
