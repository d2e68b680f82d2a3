"""Start and stop the launcher processes of a pod: its sandbox and its containers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

LAUNCHER = str(Path(__file__).with_name("_launch.py"))


def launcher_argv(mode: str, spec: dict[str, Any]) -> list[str]:
    return [sys.executable, "-I", LAUNCHER, mode, json.dumps(spec)]


def signal_pid(pid: int | None, sig: int) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


async def _read_all(fd: int) -> bytes:
    stream = trio.lowlevel.FdStream(fd)
    out = b""
    async with stream:
        while True:
            chunk = await stream.receive_some(64)
            if not chunk:
                return out
            out += chunk
            if out.endswith(b"\n"):
                return out


@dataclass
class Sandbox:
    """A pod's PID 1 (inside the pod's PID namespace) and the launcher waiting on it."""

    process: trio.Process
    pid1: int

    def kill(self) -> None:
        # SIGKILL on a PID namespace's init kills every process in it (pid_namespaces(7)).
        signal_pid(self.pid1, signal.SIGKILL)
        signal_pid(self.process.pid, signal.SIGKILL)

    async def aclose(self) -> None:
        self.kill()
        with trio.move_on_after(5):
            await self.process.wait()


async def start_sandbox(spec: dict[str, Any], log_path: Path) -> Sandbox:
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        proc = await trio.lowlevel.open_process(
            launcher_argv("sandbox", spec),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    finally:
        os.close(log)
    assert proc.stdout is not None
    line = b""
    try:
        with trio.move_on_after(20):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(64)
                if not chunk:
                    break
                line += chunk
    except BaseException:
        # Cancelled before we learnt PID 1: nothing would ever stop this sandbox.
        proc.kill()
        raise
    await proc.stdout.aclose()
    if not line.strip().isdigit():
        proc.kill()
        await proc.wait()
        raise OSError(f"pod sandbox did not start (see {log_path})")
    return Sandbox(process=proc, pid1=int(line))


@dataclass
class ContainerProcess:
    """One running container (or exec): the launcher and the process it forked."""

    process: trio.Process
    child_pid: int | None = None
    _exited: trio.Event = field(default_factory=trio.Event)
    exit_code: int | None = None

    async def wait(self) -> int:
        code = await self.process.wait()
        self.exit_code = code if code >= 0 else 128 - code
        self._exited.set()
        return self.exit_code

    def terminate(self) -> None:
        signal_pid(self.process.pid, signal.SIGTERM)

    def kill(self) -> None:
        signal_pid(self.child_pid, signal.SIGKILL)
        signal_pid(self.process.pid, signal.SIGKILL)

    async def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (the pod's grace period)."""
        if self.process.returncode is not None:
            return
        self.terminate()
        with trio.move_on_after(max(grace, 0.0)):
            await self.process.wait()
            return
        self.kill()
        with trio.move_on_after(5):
            await self.process.wait()


async def start_container(
    spec: dict[str, Any], *, stdin: Any = subprocess.DEVNULL, stdout: Any, stderr: Any
) -> ContainerProcess:
    """Run the launcher in ``container`` mode; learn the forked child's host pid."""
    pid_r, pid_w = os.pipe()
    spec = {**spec, "pid_fd": pid_w}
    try:
        proc = await trio.lowlevel.open_process(
            launcher_argv("container", spec),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            pass_fds=(pid_w,),
            start_new_session=True,
        )
    except BaseException:
        os.close(pid_r)
        raise
    finally:
        os.close(pid_w)
    cp = ContainerProcess(process=proc)
    try:
        with trio.move_on_after(20):
            raw = await _read_all(pid_r)
            if raw.strip().isdigit():
                cp.child_pid = int(raw)
    except BaseException:
        proc.kill()  # cancelled while starting: the caller never gets to stop it
        raise
    return cp
