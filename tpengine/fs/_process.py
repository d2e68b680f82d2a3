"""One mount per child process: several engagements' volumes mounted at once.

pyfuse3 serves one file system per process, so the engine runs each mount in a child
(``python -m tpengine.fs``) that is the FUSE daemon of that mount point. The child has
no tunnel: it asks the engine for each stream to the agent over a SOCK_SEQPACKET
control socket (``{"op": "connect"}``), and the engine dials the agent through the
manager, passes one end of a fresh socketpair (SCM_RIGHTS, unix(7)) and splices the
other end with the tunnel stream. The child reports ``{"op": "mounted", …}`` or
``{"op": "failed", "error": …}`` once. To unmount, the engine sends SIGTERM. The child
also holds the read end of a pipe whose write end only the engine has: EOF there means
the engine died, and the child unmounts and exits (PR_SET_PDEATHSIG would not do: it
fires when the *thread* that forked exits, and trio forks from a worker thread that
ends when idle). The helper unmounts what the engine registered as well.
"""

from __future__ import annotations

import array
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import trio

from tpengine.fs._client import Connect
from tpengine.fs._mount import (
    FIRST_CONTACT,
    MountError,
    MountHost,
    Tune,
    _mount_error,
)
from tpengine.splice import splice

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class _Child:
    name: str
    mount_point: str
    created: bool
    process: trio.Process | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    finished: trio.Event = field(default_factory=trio.Event)


class MountProcesses(MountHost[_Child]):
    """The engine's mounts, each served by a child process (see the module doc)."""

    async def mount(
        self, name: str, connect: Connect, *, path: str | None, read_only: bool
    ) -> dict[str, Any]:
        if self._nursery is None:
            raise MountError("volumes are mounted only by an engine that tp connect started")
        if name in self.active:
            raise MountError(f"the volumes of {name} are mounted already")
        created = path is None
        if path is None:
            path = tempfile.mkdtemp(prefix="telfs-")
        elif not path.startswith("/"):
            raise MountError(f"the mount point {path!r} must be an absolute path")
        else:
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as exc:
                raise MountError(f"cannot make the mount point {path}: {exc.strerror}") from None
        child = self.active[name] = _Child(name=name, mount_point=path, created=created)
        try:
            described: dict[str, Any] = await self._nursery.start(
                self._serve, child, connect, read_only
            )
        except BaseException as exc:
            self.active.pop(name, None)
            why = _mount_error(exc)
            if why is not None:
                raise why from None
            raise
        return described

    async def unmount(self, name: str) -> bool:
        child = self.active.get(name)
        if child is None:
            return False
        if child.process is not None and child.process.returncode is None:
            child.process.send_signal(signal.SIGTERM)  # the child unmounts and exits
        with trio.move_on_after(10):
            await child.finished.wait()
            return True
        child.scope.cancel()  # a child that does not go: killed (trio's process cleanup)
        await child.finished.wait()
        return True

    async def unmount_all(self) -> None:
        for name in list(self.active):
            await self.unmount(name)

    async def _serve(
        self,
        child: _Child,
        connect: Connect,
        read_only: bool,
        *,
        task_status: trio.TaskStatus[dict[str, Any]],
    ) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        life_r, life_w = os.pipe()  # the child's lifeline: EOF when the engine is gone
        try:
            with child.scope:
                if self._register is not None:
                    await self._register(child.mount_point)
                argv = [sys.executable, "-m", "tpengine.fs", "--control-fd", str(theirs.fileno())]
                argv += ["--lifeline-fd", str(life_r), *(["--read-only"] if read_only else [])]
                argv += ["--remove-dir"] if child.created else []
                async with trio.open_nursery() as nursery:
                    child.process = await nursery.start(
                        _run_process, [*argv, child.mount_point], (theirs.fileno(), life_r)
                    )
                    theirs.close()
                    os.close(life_r)
                    life_r = -1
                    control = trio.socket.from_stdlib_socket(ours)
                    await _converse(control, connect, self._tune, nursery, child, task_status)
                    nursery.cancel_scope.cancel()
        finally:
            ours.close()
            theirs.close()
            os.close(life_w)
            if life_r >= 0:
                os.close(life_r)
            await self._cleanup(child)

    async def _cleanup(self, child: _Child) -> None:
        with trio.CancelScope(shield=True):
            await _unmount_leftover(child.mount_point)
            if self._unregister is not None:
                try:
                    await self._unregister(child.mount_point)
                except Exception as exc:  # the helper gone: it unmounted everything
                    log.info("volumes: helper unmount of %s: %s", child.mount_point, exc)
            if child.created:
                with contextlib.suppress(OSError):
                    os.rmdir(child.mount_point)
            self.active.pop(child.name, None)
            child.finished.set()
            log.info("volumes of %s unmounted from %s", child.name, child.mount_point)


async def _unmount_leftover(path: str) -> None:
    """A child that was killed leaves its FUSE mount dead ("Transport endpoint is not
    connected"): take it down lazily, as ``fusermount3 -u -z`` does for its user."""
    from tpengine.helper._system import fuse_owner

    try:
        if fuse_owner(path) is None:
            return
        await trio.run_process(["fusermount3", "-u", "-z", path], check=False)
    except OSError as exc:
        log.warning("volumes: cannot unmount %s: %s", path, exc)


async def _run_process(
    argv: list[str], fds: tuple[int, ...], *, task_status: trio.TaskStatus[trio.Process]
) -> None:
    process = await trio.lowlevel.open_process(argv, pass_fds=fds, stdin=subprocess.DEVNULL)
    task_status.started(process)
    try:
        await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:  # cancelled (tp quit): unmount, then exit
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(5):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _converse(
    control: trio.socket.SocketType,
    connect: Connect,
    tune: Tune | None,
    nursery: trio.Nursery,
    child: _Child,
    task_status: trio.TaskStatus[dict[str, Any]],
) -> None:
    """Answer the child's requests until it closes the control socket (it exited)."""
    started = False
    with trio.move_on_after(FIRST_CONTACT + 5) as first:
        while True:
            data = await control.recv(65536)
            if not data:
                break
            message = json.loads(data)
            op = message.get("op")
            if op == "connect":
                await _pass_stream(control, connect, nursery)
            elif op == "tune":
                await _tune_for(control, tune, child.mount_point, message.get("kb"))
            elif op == "mounted" and not started:
                started, first.deadline = True, float("inf")
                log.info("volumes of %s mounted on %s", child.name, child.mount_point)
                task_status.started(
                    {
                        "mount_point": child.mount_point,
                        "read_only": bool(message.get("read_only")),
                        "mounts": [str(m) for m in message.get("mounts") or []],
                    }
                )
            elif op == "failed" and not started:
                raise MountError(str(message.get("error") or "the mount failed"))
    if not started:
        raise MountError(
            "the volume mount did not start"
            if first.cancelled_caught
            else "the volume mount process ended before mounting"
        )


async def _tune_for(
    control: trio.socket.SocketType, tune: Tune | None, mount_point: str, kb: Any
) -> None:
    """The child may not set its mount's read-ahead (only root may): the helper does,
    for this child's own mount point only."""
    try:
        if tune is None:
            raise OSError(errno.EPERM, "no privileged helper")
        if not isinstance(kb, int) or isinstance(kb, bool):
            raise ValueError(f"read-ahead {kb!r} is not a number of KiB")
        await tune(mount_point, kb)
    except Exception as exc:  # the helper's refusal, whatever its kind, goes to the child
        await control.send(json.dumps({"ok": False, "error": str(exc)}).encode())
        return
    await control.send(json.dumps({"ok": True}).encode())


async def _pass_stream(
    control: trio.socket.SocketType, connect: Connect, nursery: trio.Nursery
) -> None:
    try:
        stream = await connect()
    except OSError as exc:
        await control.send(json.dumps({"ok": False, "error": str(exc)}).encode())
        return
    mine, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        fds = array.array("i", [child_end.fileno()])
        await control.sendmsg(
            [json.dumps({"ok": True}).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]
        )
    except OSError:
        mine.close()
        await stream.aclose()
        return
    finally:
        child_end.close()
    nursery.start_soon(splice, stream, trio.SocketStream(trio.socket.from_stdlib_socket(mine)))


# -- the child ------------------------------------------------------------------------------


async def _until_stopped(signals: AsyncIterator[int], lifeline_fd: int) -> None:
    """Until SIGTERM/SIGINT, or EOF on the lifeline (the engine died)."""
    async with trio.open_nursery() as nursery:

        async def signalled() -> None:
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()

        async def orphaned() -> None:
            await trio.lowlevel.wait_readable(lifeline_fd)
            nursery.cancel_scope.cancel()

        nursery.start_soon(signalled)
        nursery.start_soon(orphaned)


async def serve_child(
    control_fd: int, lifeline_fd: int, mount_point: str, read_only: bool, remove_dir: bool = False
) -> None:
    """The child's life: mount, report, serve until SIGTERM (or the engine's death)."""
    from tpengine.fs._mount import VolumeMounts

    control = trio.socket.from_stdlib_socket(
        socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=control_fd)
    )
    lock = trio.Lock()

    async def connect() -> trio.abc.Stream:
        async with lock:  # one request at a time: replies come in order
            await control.send(b'{"op": "connect"}')
            data, ancdata, _flags, _addr = await control.recvmsg(4096, socket.CMSG_SPACE(4))
        reply = json.loads(data or b"{}")
        fds = [
            fd
            for level, kind, payload in ancdata
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
            for fd in array.array("i", payload[: len(payload) - len(payload) % 4])
        ]
        if not reply.get("ok") or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise OSError(errno.EHOSTUNREACH, str(reply.get("error") or "the engine is gone"))
        return trio.SocketStream(trio.socket.from_stdlib_socket(socket.socket(fileno=fds[0])))

    async def tune(path: str, kb: int) -> None:
        async with lock:
            await control.send(json.dumps({"op": "tune", "kb": kb}).encode())
            data = await control.recv(4096)
        reply = json.loads(data or b"{}")
        if not reply.get("ok"):
            raise OSError(errno.EPERM, str(reply.get("error") or "the engine is gone"))

    mounts = VolumeMounts(tune=tune)
    # SIGTERM handled from the start: it may come the moment "mounted" is read.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(mounts.run)
            try:
                info = await mounts.mount("volumes", connect, path=mount_point, read_only=read_only)
            except MountError as exc:
                await control.send(json.dumps({"op": "failed", "error": str(exc)}).encode())
                return
            await control.send(json.dumps({"op": "mounted", **info}).encode())
            await _until_stopped(signals, lifeline_fd)
            await mounts.unmount("volumes")
            if remove_dir:  # a temp dir the engine made: gone too, even if the engine is
                with contextlib.suppress(OSError):
                    os.rmdir(mount_point)
            nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tpengine.fs")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--lifeline-fd", type=int, required=True)
    parser.add_argument("--read-only", action="store_true")
    parser.add_argument("--remove-dir", action="store_true", help="rmdir it after unmounting")
    parser.add_argument("mount_point")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s tpfs %(levelname)s %(message)s")
    trio.run(
        serve_child,
        args.control_fd,
        args.lifeline_fd,
        args.mount_point,
        args.read_only,
        args.remove_dir,
    )
