"""A blocking facade over the trio engine, for plain synchronous code and test suites.

The session runs in its own trio thread; each call crosses over with
``trio.from_thread.run``::

    from tpengine import sync

    with sync.open_session(namespace="default") as session:
        with session.open_tcp_stream("web", 80) as conn:
            conn.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            print(conn.recv(65536))
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any, TypeVar

import trio

from tpengine.engine._session import Session

T = TypeVar("T")
SessionFactory = Callable[..., AbstractAsyncContextManager[Session]]


class SyncStream:
    """A connection to a cluster address, used like a blocking socket."""

    def __init__(
        self, stream: trio.abc.HalfCloseableStream, token: trio.lowlevel.TrioToken
    ) -> None:
        self._stream = stream
        self._token = token

    def sendall(self, data: bytes) -> None:
        trio.from_thread.run(self._stream.send_all, data, trio_token=self._token)

    def recv(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes``; b"" once the other side closed its half."""
        return bytes(
            trio.from_thread.run(self._stream.receive_some, max_bytes, trio_token=self._token)
        )

    def shutdown_write(self) -> None:
        trio.from_thread.run(self._stream.send_eof, trio_token=self._token)

    def close(self) -> None:
        trio.from_thread.run(self._stream.aclose, trio_token=self._token)

    def __enter__(self) -> SyncStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncSession:
    def __init__(self, session: Session, token: trio.lowlevel.TrioToken) -> None:
        self._session = session
        self._token = token

    def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def open_tcp_stream(self, host: str, port: int) -> SyncStream:
        return SyncStream(self._run(self._session.open_tcp_stream, host, port), self._token)

    def resolve(self, name: str) -> list[str]:
        result: list[str] = self._run(self._session.resolve, name)
        return result

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = trio.from_thread.run_sync(
            self._session.status, trio_token=self._token
        )
        return status


@contextmanager
def open_session(*, _factory: SessionFactory | None = None, **kwargs: Any) -> Iterator[SyncSession]:
    """Like :func:`tpengine.open_session`, for code that does not run an event loop."""
    if _factory is None:
        from tpengine.engine._public import open_session as _factory
    handoff: queue.Queue[tuple[Session, trio.lowlevel.TrioToken, trio.Event] | BaseException] = (
        queue.Queue()
    )
    failure: list[BaseException] = []

    async def main() -> None:
        assert _factory is not None
        try:
            async with _factory(**kwargs) as session:
                stop = trio.Event()
                handoff.put((session, trio.lowlevel.current_trio_token(), stop))
                await stop.wait()
        except BaseException as exc:  # handed to the caller's thread
            if handoff.empty():
                handoff.put(exc)
            else:
                failure.append(exc)

    thread = threading.Thread(target=trio.run, args=(main,), name="tpengine-session", daemon=True)
    thread.start()
    got = handoff.get()
    if isinstance(got, BaseException):
        thread.join()
        raise got
    session, token, stop = got
    try:
        yield SyncSession(session, token)
    finally:
        try:
            trio.from_thread.run_sync(stop.set, trio_token=token)
        except trio.RunFinishedError:
            pass
        thread.join()
    if failure:
        raise failure[0]
