"""A real peer process killed (or frozen) mid-transfer is detected by keepalive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from tpengine.tunnel import ErrorCode, MuxConfig, open_mux_websocket_url

PEER = """
import sys, trio
from tpengine.tunnel import MuxConfig, serve_mux_websocket

async def firehose(dial):
    stream = await dial.accept_stream()
    while True:
        await stream.send_all(b"x" * 65536)

async def session(s, request):
    await s.wait_closed()

async def main():
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: serve_mux_websocket(
            session, "127.0.0.1", 0, dial_handler=firehose, task_status=task_status))
        print(server.port, flush=True)

trio.run(main)
"""

KEEPALIVE = MuxConfig(keepalive_interval=0.2, keepalive_timeout=1.0)


@asynccontextmanager
async def peer_process() -> AsyncIterator[tuple[int, int]]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", PEER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        line = b""
        with trio.fail_after(20):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(64)
                assert chunk, "peer exited before listening"
                line += chunk
        yield proc.pid, int(line)
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
        with trio.CancelScope(shield=True):
            await proc.wait()


@pytest.mark.parametrize(
    ("sig", "expected"),
    [
        # Frozen: the socket stays open and silent, only keepalive can tell.
        (signal.SIGSTOP, ErrorCode.KEEPALIVE_TIMEOUT),
        # Killed: the kernel closes the socket, seen at once as a lost connection.
        (signal.SIGKILL, ErrorCode.CONNECTION_LOST),
    ],
    ids=["frozen", "killed"],
)
async def test_peer_killed_mid_transfer_is_detected_within_keepalive_timeout(
    sig: signal.Signals, expected: ErrorCode
) -> None:
    async with (
        peer_process() as (pid, port),
        open_mux_websocket_url(f"ws://127.0.0.1:{port}/", config=KEEPALIVE) as client,
    ):
        stream = await client.open_stream("10.0.0.1", 80)
        received = 0
        while received < 1024 * 1024:  # mid-transfer
            received += len(await stream.receive_some())
        os.kill(pid, sig)
        with trio.fail_after(KEEPALIVE.keepalive_timeout + 1.5):  # + scheduling slack
            termination = await client.wait_closed()
        assert termination.code is expected
        with pytest.raises(trio.BrokenResourceError):
            while True:
                await stream.receive_some()
