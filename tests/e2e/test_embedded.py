"""The engine as a library: an unprivileged program on the laptop opens a session in its
own trio run (no TUN, no root) and talks to a service."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any

import pytest

pytestmark = [pytest.mark.root, pytest.mark.e2e]

PROGRAM = """
import os, trio, tpengine
assert os.geteuid() != 0, "must not be root"

async def main():
    async with tpengine.open_session(namespace="default") as session:
        stream = await session.open_tcp_stream("hello", 80)
        await stream.send_all(b"GET / HTTP/1.0\\r\\nHost: hello\\r\\n\\r\\n")
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
        print(data.split(b"\\r\\n\\r\\n", 1)[1].decode().splitlines()[0])
        print(await session.resolve("hello.default"))

trio.run(main)
"""

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
      - name: echo
        image: ghcr.io/telepresenceio/echo-server:latest
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: default}
spec:
  selector: {app: hello}
  ports: [{name: http, port: 80, targetPort: http}]
"""


def test_unprivileged_program_uses_the_library(cluster: Any) -> None:
    cluster.kubectl_ok("apply", "-f", "-", input=APP)
    cluster.kubectl_ok("rollout", "status", "deployment/hello", "--timeout=90s")
    kubeconfig = cluster.tp("local-cluster", "kubeconfig", "--name", cluster.name).stdout.strip()
    with tempfile.TemporaryDirectory() as home:
        os.chmod(home, 0o755)
        own = os.path.join(home, "kubeconfig")
        shutil.copy(kubeconfig, own)
        os.chmod(own, 0o644)
        result = cluster.laptop(
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            # Only so the uid can read a .venv under a private directory such as /root
            # (CI may clone there); it grants no network privilege.
            "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search",
            "env",
            f"HOME={home}",
            f"KUBECONFIG={own}",
            sys.executable,
            "-c",
            PROGRAM,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    first, addresses = result.stdout.splitlines()[:2]
    assert first.startswith("Request served by hello-")
    assert addresses.startswith("['10.")
