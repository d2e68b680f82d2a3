"""Container logs, kept per container run for ``kubectl logs`` (follow, previous, tail).

Each run of a container (restartCount n) writes ``<dir>/<n>.log``; lines are stored as
``<RFC 3339 nano timestamp> <line>`` like the CRI log format, so ``timestamps=True`` can
be honoured. Readers re-open the file; a follower waits on the run's ``changed`` event
and stops when the run has ended and everything was read.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO

import trio


def _stamp() -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%f000Z").encode()


class LogRun:
    """The log of one run of one container."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "ab")  # noqa: SIM115 - closed in finish()
        self._partial = b""
        self._changed = trio.Event()
        self.finished = False

    def feed(self, data: bytes) -> None:
        """Bytes from the container's stdout/stderr pipe."""
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        if lines:
            self._fh.write(b"".join(_stamp() + b" " + line + b"\n" for line in lines))
            self._fh.flush()
            self._wake()

    def finish(self) -> None:
        if self._partial:
            self._fh.write(_stamp() + b" " + self._partial + b"\n")
            self._partial = b""
        self._fh.close()
        self.finished = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        if not self.finished:
            await self._changed.wait()


async def pump(stream: trio.abc.ReceiveStream, run: LogRun) -> None:
    """Copy a container's output pipe into its log until EOF."""
    try:
        while True:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            if not data:
                break
            run.feed(bytes(data))
    finally:
        run.finish()
        await stream.aclose()


def _format(line: bytes, timestamps: bool) -> bytes:
    if timestamps:
        return line
    _, _, rest = line.partition(b" ")
    return rest


def _open_log(path: Path) -> BinaryIO:
    """The log file (local disk: a blocking open is fine); empty if the run never wrote."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return open(path, "rb")


@asynccontextmanager
async def read_log(
    path: Path, run: LogRun | None, *, follow: bool, tail_lines: int | None, timestamps: bool
) -> AsyncIterator[AsyncIterator[bytes]]:
    """Chunks of a run's log; with ``follow`` (and a live ``run``) until the run ends."""

    async def chunks() -> AsyncIterator[bytes]:
        with _open_log(path) as fh:
            data = fh.read()
            lines = data.splitlines(keepends=True)
            keep = b""
            if lines and not lines[-1].endswith(b"\n"):
                keep = lines.pop()
            if tail_lines is not None:
                lines = lines[-tail_lines:] if tail_lines > 0 else []
            if lines:
                yield b"".join(_format(line, timestamps) for line in lines)
            if not follow or run is None:
                return
            while True:
                finished = run.finished
                more = keep + fh.read()
                lines = more.splitlines(keepends=True)
                keep = b""
                if lines and not lines[-1].endswith(b"\n"):
                    keep = lines.pop()
                if lines:
                    yield b"".join(_format(line, timestamps) for line in lines)
                if finished:
                    return
                await run.wait_changed()

    yield chunks()
