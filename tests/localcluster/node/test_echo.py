"""The built-in echo server of the echo-server images, on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from localcluster.node._podspec import ECHO_SCRIPT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_echo_server_reply() -> None:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOSTNAME": "web-abc"}
    proc = subprocess.Popen(
        [sys.executable, ECHO_SCRIPT], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == f"Echo server listening on port {port}.\n"
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/any/path?q=1",
            data=b"payload",
            method="PUT",
            headers={"X-Test": "yes"},
        )
        for _ in range(50):
            try:
                reply = urllib.request.urlopen(req, timeout=5)
                break
            except OSError:
                time.sleep(0.05)
        body = reply.read().decode()
        assert reply.status == 200
        assert body.startswith("Request served by web-abc\n\nPUT /any/path?q=1 HTTP/1.1\n\n")
        assert "X-Test: yes" in body and body.endswith("\npayload")
    finally:
        proc.kill()
        proc.wait()
