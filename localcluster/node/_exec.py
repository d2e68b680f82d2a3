"""``kubectl exec`` sessions: a command in a container's namespaces, pipes or a pty."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import termios
from typing import Any

import trio

from localcluster.node._process import ContainerProcess, start_container


class _PtyStdin(trio.abc.SendStream):
    """Writes to the pty master; closing sends EOF (^D) the way a terminal would."""

    def __init__(self, master: trio.lowlevel.FdStream) -> None:
        self._master = master
        self._closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._master.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._master.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                await self._master.send_all(b"\x04")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


class _PtyStdout(trio.abc.ReceiveStream):
    """Reads the pty master; EIO once the last slave fd is closed means end of output."""

    def __init__(self, master: trio.lowlevel.FdStream) -> None:
        self._master = master

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self._master.receive_some(max_bytes)
        except trio.BrokenResourceError:
            return b""

    async def aclose(self) -> None:
        await self._master.aclose()


class ProcessExecSession:
    """The runtime_api.ExecSession of one exec'd process."""

    def __init__(
        self, proc: ContainerProcess, *, stdin: Any, stdout: Any, stderr: Any, master: int | None
    ) -> None:
        self._proc = proc
        self.stdin: trio.abc.SendStream | None = stdin
        self.stdout: trio.abc.ReceiveStream = stdout
        self.stderr: trio.abc.ReceiveStream | None = stderr
        self._master = master

    async def wait(self) -> int:
        return await self._proc.wait()

    def resize(self, width: int, height: int) -> None:
        if self._master is not None:
            try:
                fcntl.ioctl(
                    self._master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0)
                )
            except OSError:
                pass

    async def aclose(self) -> None:
        if self._proc.process.returncode is None:
            self._proc.kill()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(5):
                await self._proc.process.wait()
            for stream in (self.stdin, self.stdout, self.stderr):
                if stream is not None:
                    try:
                        await stream.aclose()
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass


async def open_exec(spec: dict[str, Any], *, stdin: bool, tty: bool) -> ProcessExecSession:
    if tty:
        master, slave = os.openpty()
        try:
            proc = await start_container(spec, stdin=slave, stdout=slave, stderr=slave)
        finally:
            os.close(slave)
        stream = trio.lowlevel.FdStream(master)
        return ProcessExecSession(
            proc,
            stdin=_PtyStdin(stream) if stdin else None,
            stdout=_PtyStdout(stream),
            stderr=None,
            master=master,
        )
    proc = await start_container(
        spec,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    p = proc.process
    assert p.stdout is not None and p.stderr is not None
    return ProcessExecSession(proc, stdin=p.stdin, stdout=p.stdout, stderr=p.stderr, master=None)
