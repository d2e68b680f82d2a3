"""A mount's kernel read-ahead: set by the mount process when it may (root), else by the
privileged helper through the engine, for that mount point only."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import trio

from tpengine.fs._mount import READ_AHEAD_KB, _tune
from tpengine.fs._process import _tune_for


class InitialisedFs:
    def __init__(self) -> None:
        self.initialised = trio.Event()
        self.initialised.set()


async def test_the_helper_is_asked_when_the_mount_process_may_not(tmp_path: Path) -> None:
    asked: list[tuple[str, int]] = []

    async def helper(path: str, kb: int) -> None:
        await trio.lowlevel.checkpoint()
        asked.append((path, kb))

    # Not a mount at all here, so the mount process's own write fails as an
    # unprivileged one would: the helper is asked instead.
    await _tune(InitialisedFs(), str(tmp_path), helper)
    assert asked == [(str(tmp_path), READ_AHEAD_KB)]


async def test_a_refusing_helper_costs_only_speed(tmp_path: Path) -> None:
    async def helper(path: str, kb: int) -> None:
        await trio.lowlevel.checkpoint()
        raise OSError(13, "Permission denied")

    await _tune(InitialisedFs(), str(tmp_path), helper)  # logged, not raised


async def test_the_engine_tunes_only_its_childs_own_mount_point() -> None:
    engine_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    control = trio.socket.from_stdlib_socket(engine_end)
    child = trio.socket.from_stdlib_socket(child_end)
    asked: list[tuple[str, int]] = []

    async def helper(path: str, kb: int) -> None:
        await trio.lowlevel.checkpoint()
        asked.append((path, kb))

    with control, child:
        await _tune_for(control, helper, "/tmp/tpfs-mine", 2048)
        assert json.loads(await child.recv(4096)) == {"ok": True}
        await _tune_for(control, helper, "/tmp/tpfs-mine", "lots")
        assert "not a number" in json.loads(await child.recv(4096))["error"]
        await _tune_for(control, None, "/tmp/tpfs-mine", 2048)
        assert json.loads(await child.recv(4096)) == {
            "ok": False,
            "error": "[Errno 1] no privileged helper",
        }
    assert asked == [("/tmp/tpfs-mine", 2048)]
