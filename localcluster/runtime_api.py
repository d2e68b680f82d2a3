"""What the node side offers the API server for pod subresources (exec, log, portforward)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import trio


class PodNotRunning(Exception):
    """The pod or container cannot serve the request (the API server answers 400)."""


class ExecSession(Protocol):
    stdin: trio.abc.SendStream | None  # None when stdin was not requested
    stdout: trio.abc.ReceiveStream
    stderr: trio.abc.ReceiveStream | None  # None with tty

    async def wait(self) -> int:
        """The exit code."""
        ...

    def resize(self, width: int, height: int) -> None: ...

    async def aclose(self) -> None:
        """Kill the process if still running and release everything."""
        ...


class NodeRuntime(Protocol):
    async def open_pod_port(self, namespace: str, pod: str, port: int) -> trio.abc.Stream:
        """TCP to the pod's localhost:port inside its netns; OSError if refused."""
        ...

    async def exec(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        command: list[str],
        *,
        stdin: bool,
        tty: bool,
    ) -> ExecSession: ...

    def logs(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        *,
        follow: bool,
        tail_lines: int | None = None,
        previous: bool = False,
        timestamps: bool = False,
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]: ...


__all__ = ["ExecSession", "NodeRuntime", "PodNotRunning"]
