"""The asyncio and blocking facades, against a real manager on loopback run in its own
trio thread (as a test harness embedding the engine would see it)."""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections.abc import Iterator

import pytest
import trio

from tests.engine.test_session import start_manager
from tests.manager.test_manager_tunnel import echo_server
from tpengine import aio, sync
from tpengine.engine._session import SessionInfo, open_session_with
from tpengine.tunnel import open_mux_websocket_url


@pytest.fixture
def manager_thread() -> Iterator[tuple[int, int]]:
    """(manager port, echo port) served by a trio thread for the test's duration."""
    ports: queue.Queue[tuple[int, int, trio.lowlevel.TrioToken, trio.Event]] = queue.Queue()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port, _ = await start_manager(nursery)
            echo = await echo_server(nursery)
            stop = trio.Event()
            ports.put((port, echo, trio.lowlevel.current_trio_token(), stop))
            await stop.wait()
            nursery.cancel_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    port, echo, token, stop = ports.get(timeout=30)
    try:
        yield port, echo
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join(timeout=30)


def factory(port: int) -> functools.partial:
    connector = functools.partial(open_mux_websocket_url, f"ws://127.0.0.1:{port}/")
    info = SessionInfo(namespace="default", manager_namespace="tpengine")
    return functools.partial(open_session_with, connector, info)


def test_blocking_facade(manager_thread: tuple[int, int]) -> None:
    port, echo = manager_thread
    with sync.open_session(_factory=factory(port)) as session:
        assert session.status()["status"] == "Connected"
        assert session.resolve("web") == ["10.96.0.7"]
        with session.open_tcp_stream("127.0.0.1", echo) as conn:
            conn.sendall(b"ping")
            conn.shutdown_write()
            assert conn.recv(10) == b"ping"
            assert conn.recv(10) == b""


def test_asyncio_facade(manager_thread: tuple[int, int]) -> None:
    port, echo = manager_thread

    async def main() -> bytes:
        async with aio.open_session(_factory=factory(port)) as session:
            assert await session.resolve("web") == ["10.96.0.7"]
            conn = await session.open_tcp_stream("127.0.0.1", echo)
            await conn.write(b"pong")
            await conn.write_eof()
            data = await conn.read(10)
            await conn.close()
            return data

    assert asyncio.run(main()) == b"pong"
