"""An asyncio facade over the trio engine.

trio runs as a guest inside the running asyncio loop (``trio.lowlevel.start_guest_run``):
one thread, one loop, the engine's structured concurrency intact::

    from tpengine import aio

    async with aio.open_session(namespace="default") as session:
        conn = await session.open_tcp_stream("web", 80)
        await conn.write(b"GET / HTTP/1.0\\r\\n\\r\\n")
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import outcome
import trio

from tpengine.engine._session import Session

T = TypeVar("T")
SessionFactory = Callable[..., AbstractAsyncContextManager[Session]]


class _Portal:
    """Runs trio coroutines from asyncio code on the same thread."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken, nursery: trio.Nursery
    ) -> None:
        self._loop = loop
        self._token = token
        self._nursery = nursery

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        future: asyncio.Future[T] = self._loop.create_future()
        scope = trio.CancelScope()

        def settle(result: outcome.Outcome[T]) -> None:
            if future.done():
                return
            if isinstance(result, outcome.Error):
                future.set_exception(result.error)
            else:
                future.set_result(result.unwrap())

        async def runner() -> None:
            with scope:
                result = await outcome.acapture(fn, *args)
                self._loop.call_soon_threadsafe(settle, result)

        self._token.run_sync_soon(self._nursery.start_soon, runner)
        try:
            return await future
        except asyncio.CancelledError:
            self._token.run_sync_soon(scope.cancel)
            raise


class AioStream:
    """A connection to a cluster address with asyncio-style awaitables."""

    def __init__(self, portal: _Portal, stream: trio.abc.HalfCloseableStream) -> None:
        self._portal = portal
        self._stream = stream

    async def write(self, data: bytes) -> None:
        await self._portal.run(self._stream.send_all, data)

    async def read(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes``; b"" once the other side closed its half."""
        return bytes(await self._portal.run(self._stream.receive_some, max_bytes))

    async def write_eof(self) -> None:
        await self._portal.run(self._stream.send_eof)

    async def close(self) -> None:
        await self._portal.run(self._stream.aclose)


class AioSession:
    def __init__(self, portal: _Portal, session: Session) -> None:
        self._portal = portal
        self._session = session

    async def open_tcp_stream(self, host: str, port: int) -> AioStream:
        stream = await self._portal.run(self._session.open_tcp_stream, host, port)
        return AioStream(self._portal, stream)

    async def resolve(self, name: str) -> list[str]:
        return await self._portal.run(self._session.resolve, name)

    def status(self) -> dict[str, Any]:
        return self._session.status()


@asynccontextmanager
async def open_session(
    *, _factory: SessionFactory | None = None, **kwargs: Any
) -> AsyncIterator[AioSession]:
    """Like :func:`tpengine.open_session`, inside a running asyncio loop."""
    if _factory is None:
        from tpengine.engine._public import open_session as _factory
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[tuple[_Portal, Session, trio.Event]] = loop.create_future()
    finished: asyncio.Future[outcome.Outcome[None]] = loop.create_future()

    async def trio_main() -> None:
        assert _factory is not None
        async with trio.open_nursery() as nursery, _factory(**kwargs) as session:
            stop = trio.Event()
            portal = _Portal(loop, trio.lowlevel.current_trio_token(), nursery)
            loop.call_soon_threadsafe(ready.set_result, (portal, session, stop))
            await stop.wait()
            nursery.cancel_scope.cancel()

    def done(result: outcome.Outcome[None]) -> None:
        finished.set_result(result)
        if not ready.done():
            if isinstance(result, outcome.Error):
                ready.set_exception(result.error)
            else:
                ready.set_exception(RuntimeError("the session ended before it started"))

    trio.lowlevel.start_guest_run(
        trio_main,
        run_sync_soon_threadsafe=loop.call_soon_threadsafe,
        done_callback=lambda result: loop.call_soon_threadsafe(done, result),
        host_uses_signal_set_wakeup_fd=True,
    )
    portal, session, stop = await ready
    try:
        yield AioSession(portal, session)
    finally:
        portal._token.run_sync_soon(stop.set)
        (await finished).unwrap()
