"""The agent's volume server and the engine's client and FUSE file system, without a
cluster: a directory tree stands for the agent's mounts root, a memory stream for the tunnel."""

from __future__ import annotations

import errno
import functools
import os
import random
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from agent._volumes import Connection, MountSpec, VolumeServer, serve_volumes
from tpengine.fs import MountError, VolumeClient, VolumeMounts
from tpengine.fs._client import Connect
from tpengine.fs._mount import READ_AHEAD_KB, set_read_ahead
from tpengine.fs._protocol import NO_HANDLE, Op, Reply, Request, decode_frame, encode_request
from tpengine.helper._system import fuse_mount

MOUNTS = [
    MountSpec(path="/etc/web", read_only=True),
    MountSpec(path="/var/data"),
    MountSpec(path="/var/run/secrets/token"),
]


@pytest.fixture(autouse=True)
def no_mount_left(tmp_path: Path) -> Iterator[None]:
    """Whatever a test mounted under its tmp_path goes, also when it failed."""
    yield
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if f" {tmp_path}/" in line]
    for point in reversed(points):
        libc.umount2(os.fsencode(point), 2)  # MNT_DETACH


def make_tree(root: Path) -> Path:
    web = root / "etc" / "web"
    web.mkdir(parents=True)
    (web / "settings.ini").write_text("debug = true\n")
    (web / "secret").write_text("s3cret")
    os.chmod(web / "secret", 0o600)
    (web / "inside").symlink_to("settings.ini")
    (web / "escape").symlink_to("../../outside")
    (root / "outside").write_text("not yours")
    (root / "var" / "data").mkdir(parents=True)
    (root / "var" / "run" / "secrets" / "token").mkdir(parents=True)
    (root / "var" / "unrelated").mkdir()
    return root


def ask(conn: Connection, op: Op, *args: Any) -> Reply:
    data = conn.answer(Request(id=1, op=op, args=args))
    frame = decode_frame(data[4], int.from_bytes(data[5:9], "big"), memoryview(data[9:]))
    assert isinstance(frame, Reply)
    return frame


@pytest.fixture
def conn(tmp_path: Path) -> Connection:
    return Connection(VolumeServer(MOUNTS, root=str(make_tree(tmp_path / "mounts"))))


def test_the_tree_shows_only_the_mount_paths(conn: Connection) -> None:
    root = ask(conn, Op.READDIR, b"", 0, 0)
    assert [name for name, _ in root.values[0]] == [b"etc", b"var"]
    var = ask(conn, Op.READDIR, b"var", 0, 0)
    assert [name for name, _ in var.values[0]] == [b"data", b"run"]  # not "unrelated"
    web = ask(conn, Op.READDIR, b"etc/web", 0, 65536)
    names = {name: attr for name, attr in web.values[0]}
    inline = {web.values[0][i][0]: data for i, data in web.values[2]}
    assert inline == {b"settings.ini": b"debug = true\n", b"secret": b"s3cret"}  # not links
    assert set(names) == {b"settings.ini", b"secret", b"inside", b"escape"}
    assert stat.S_IMODE(names[b"secret"].mode) == 0o600
    assert stat.S_ISLNK(names[b"inside"].mode)
    assert ask(conn, Op.GETATTR, b"var/unrelated").errno == errno.ENOENT


def test_reads_follow_symlinks_only_inside_the_volume(conn: Connection) -> None:
    handle, first = ask(conn, Op.OPEN, b"etc/web/inside", os.O_RDONLY, 5).values
    assert first == b"debug"
    assert ask(conn, Op.READ, handle, 0, 100).values == (b"debug = true\n",)
    assert ask(conn, Op.OPEN, b"etc/web/escape", os.O_RDONLY, 0).errno == errno.EACCES
    assert ask(conn, Op.GETATTR, b"etc/web/../../outside").errno == errno.EINVAL
    assert ask(conn, Op.READLINK, b"etc/web/escape").values == (b"../../outside",)
    assert ask(conn, Op.RELEASE, handle).errno == 0
    assert ask(conn, Op.READ, handle, 0, 1).errno == errno.EBADF


def test_a_file_read_whole_at_open_keeps_no_handle(conn: Connection, tmp_path: Path) -> None:
    assert ask(conn, Op.OPEN, b"etc/web/settings.ini", os.O_RDONLY, 100).values == (
        NO_HANDLE,
        b"debug = true\n",
    )
    (tmp_path / "mounts" / "var" / "data" / "f").write_text("abc")
    handle, first = ask(conn, Op.OPEN, b"var/data/f", os.O_RDWR, 100).values
    assert handle != NO_HANDLE and first == b"abc"  # written through the handle later
    assert list(conn.handles) == [handle]


def test_read_only_volumes_and_the_tree_above_them_refuse_writes(conn: Connection) -> None:
    for op, args in [
        (Op.CREATE, (b"etc/web/new", os.O_WRONLY, 0o644)),
        (Op.OPEN, (b"etc/web/settings.ini", os.O_WRONLY, 0)),
        (Op.UNLINK, (b"etc/web/settings.ini",)),
        (Op.MKDIR, (b"etc/new", 0o755)),
        (Op.TRUNCATE, (b"etc/web/settings.ini", 0)),
    ]:
        assert ask(conn, op, *args).errno == errno.EROFS, op


def test_connections_with_one_token_share_file_handles(tmp_path: Path) -> None:
    server = VolumeServer(MOUNTS, root=str(make_tree(tmp_path / "mounts")))
    first, second, other = Connection(server), Connection(server), Connection(server)
    for conn, token in ((first, b"t1"), (second, b"t1"), (other, b"t2")):
        assert ask(conn, Op.HELLO, 1, token).errno == 0
    handle, _ = ask(first, Op.OPEN, b"etc/web/settings.ini", os.O_RDONLY, 0).values
    assert ask(second, Op.READ, handle, 0, 5).values == (b"debug",)
    assert ask(other, Op.READ, handle, 0, 5).errno == errno.EBADF  # another client's
    first.close()
    assert ask(second, Op.READ, handle, 8, 4).values == (b"true",)  # still open
    second.close()
    assert list(server.sessions) == [b"t2"]


def test_writes_in_a_writable_volume(conn: Connection, tmp_path: Path) -> None:
    handle, attr = ask(conn, Op.CREATE, b"var/data/out.txt", os.O_WRONLY, 0o640).values
    assert stat.S_IMODE(attr.mode) == 0o640
    assert ask(conn, Op.WRITE, handle, 0, b"hello").values == (5,)
    ask(conn, Op.RELEASE, handle)
    data = tmp_path / "mounts" / "var" / "data"
    assert (data / "out.txt").read_text() == "hello"
    assert ask(conn, Op.RENAME, b"var/data/out.txt", b"var/data/moved", 0).errno == 0
    assert ask(conn, Op.RENAME, b"var/data/moved", b"var/run/secrets/token/x", 0).errno == (
        errno.EXDEV
    )
    assert ask(conn, Op.SYMLINK, b"var/data/link", b"moved").errno == 0
    assert ask(conn, Op.MKDIR, b"var/data/sub", 0o700).errno == 0
    assert sorted(os.listdir(data)) == ["link", "moved", "sub"]
    assert ask(conn, Op.RMDIR, b"var/data").errno == errno.EBUSY
    os.mkfifo(data / "fifo")  # opening it would block the agent: refused
    assert ask(conn, Op.OPEN, b"var/data/fifo", os.O_RDONLY, 0).errno == errno.EOPNOTSUPP


async def test_requests_in_flight_fail_with_eio_when_the_stream_breaks(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    server = VolumeServer(MOUNTS, root=str(make_tree(tmp_path / "m")))
    streams: list[trio.abc.Stream] = []
    new_pod = trio.Event()
    hold = trio.Event()

    async def connect() -> trio.abc.Stream:
        if streams:
            await new_pod.wait()  # no agent until the new pod is there
        client_end, server_end = trio.testing.memory_stream_pair()
        streams.append(server_end)
        nursery.start_soon(serve_until_held, server_end)
        return client_end

    async def serve_until_held(stream: trio.abc.Stream) -> None:
        if len(streams) == 1:
            await serve_volumes(stream, server)
        else:  # the second connection answers only HELLO, then hangs up at a signal
            await serve_volumes(_HangingStream(stream, hold), server)

    async with trio.open_nursery() as nursery:
        client = VolumeClient(connect, connect_timeout=2.0, retry_every=0.5)
        nursery.start_soon(client.run)
        values, generation = await client.call(Op.GETATTR, b"etc/web/settings.ini")
        assert values[0].size == 13
        await streams[0].aclose()  # the agent's pod went away
        started = trio.current_time()
        with pytest.raises(OSError) as caught:
            await client.call(Op.GETATTR, b"etc/web/settings.ini")
        assert caught.value.errno == errno.EIO
        assert trio.current_time() - started <= client.connect_timeout  # no hang
        new_pod.set()
        with trio.fail_after(5):
            while not client.connected or client.generation == generation:
                await client.wait_changed()
        async with trio.open_nursery() as inner:

            async def stuck() -> None:
                sent = trio.current_time()
                with pytest.raises(OSError) as stuck_error:
                    await client.call(Op.GETATTR, b"etc/web/secret")
                assert stuck_error.value.errno == errno.EIO
                assert (
                    trio.current_time() - sent < client.request_timeout
                )  # the break, not a timeout

            inner.start_soon(stuck)
            await trio.testing.wait_all_tasks_blocked()
            hold.set()  # the agent dies with the request in flight
        nursery.cancel_scope.cancel()


class _HangingStream(trio.abc.Stream):
    """Passes HELLO, swallows everything after it and closes when ``hold`` is set."""

    def __init__(self, inner: trio.abc.Stream, hold: trio.Event) -> None:
        self.inner, self.hold, self.seen = inner, hold, 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        self.seen += 1
        if self.seen > 1:
            await self.hold.wait()
            await self.inner.aclose()
            return b""
        return bytes(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


def agent_pod(server: VolumeServer, nursery: trio.Nursery) -> Connect:
    """A ``connect`` for the volume client: each dial is served by ``server`` over a
    fresh in-memory stream, as if through the tunnel to the agent's pod."""

    async def connect() -> trio.abc.Stream:
        client_end, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(serve_volumes, server_end, server)
        return client_end

    return connect


async def test_reads_of_a_big_file_give_its_bytes_whatever_the_offsets(tmp_path: Path) -> None:
    """The FUSE read path without a mount (read-ahead units, ranges across two units, the
    bytes OPEN brought): sequential reads as the kernel's read-ahead sends them (several
    at once, not aligned to the units), then reads anywhere."""
    import pyfuse3

    from tpengine.fs._fuse import UNIT, RemoteFs

    rng = random.Random(5)
    big = rng.randbytes(5 * UNIT + 123)
    server = VolumeServer(MOUNTS, root=str(make_tree(tmp_path / "remote")))
    (tmp_path / "remote" / "var" / "data" / "big.bin").write_bytes(big)

    async with trio.open_nursery() as nursery:
        connect = agent_pod(server, nursery)
        client = VolumeClient(connect, streams=3)
        await nursery.start(client.run)
        fs = RemoteFs(client, nursery)
        inode = pyfuse3.ROOT_INODE
        for name in (b"var", b"data", b"big.bin"):
            inode = (await fs.lookup(inode, name)).st_ino
        fh = (await fs.open(inode, os.O_RDONLY, None)).fh
        got: dict[int, bytes] = {}

        async def read(off: int, size: int) -> None:
            got[off] = bytes(await fs.read(fh, off, size))

        step = UNIT - 3 * 4096
        async with trio.open_nursery() as kernel:
            for off in range(0, len(big), step):
                kernel.start_soon(read, off, step)
                await trio.lowlevel.checkpoint()  # in order, as the kernel sends them
        assert b"".join(got[off] for off in sorted(got)) == big
        for _ in range(30):
            off, size = rng.randrange(len(big)), rng.choice([4096, 131072, UNIT])
            assert bytes(await fs.read(fh, off, size)) == big[off : off + size]
        await fs.release(fh)
        nursery.cancel_scope.cancel()


def test_read_ahead_of_a_path_that_is_no_mount_is_left_alone(tmp_path: Path) -> None:
    assert set_read_ahead(str(tmp_path), READ_AHEAD_KB) is False  # logged, not raised


def test_a_hello_frame_encodes() -> None:
    assert encode_request(1, Op.HELLO, 1, b"token")[4] == Op.HELLO


# -- the FUSE file system, mounted for real ------------------------------------------------


def mounted(path: Path) -> bool:
    """Whether a FUSE file system, live or dead, is mounted on ``path`` (mountinfo: a
    dead one fails stat(2), so Path.is_mount would say no)."""
    from tpengine.helper._system import fuse_owner

    return fuse_owner(str(path)) is not None


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(fn)


@pytest.mark.root
async def test_fuse_mount_mirrors_the_volumes(tmp_path: Path) -> None:
    server = VolumeServer(MOUNTS, root=str(make_tree(tmp_path / "remote")))
    big = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "remote" / "var" / "data" / "big.bin").write_bytes(big)

    mount_point = tmp_path / "mnt"
    async with trio.open_nursery() as nursery:
        connect = agent_pod(server, nursery)
        mounts = VolumeMounts()
        await nursery.start(mounts.run)
        info = await mounts.mount("web", connect, path=str(mount_point), read_only=False)
        try:
            assert info["mounts"] == ["/etc/web", "/var/data", "/var/run/secrets/token"]
            web = mount_point / "etc" / "web"
            assert await in_thread((web / "settings.ini").read_text) == "debug = true\n"
            assert stat.S_IMODE((await in_thread((web / "secret").stat)).st_mode) == 0o600
            assert sorted(await in_thread(lambda: os.listdir(mount_point / "var"))) == [
                "data",
                "run",
            ]
            with pytest.raises(OSError) as caught:
                await in_thread(lambda: (web / "new").write_text("x"))
            assert caught.value.errno == errno.EROFS
            data = mount_point / "var" / "data"
            assert await in_thread((data / "big.bin").read_bytes) == big
            # The kernel reads ahead far enough for 1 MiB READs, several at once.
            found = await in_thread(lambda: fuse_mount(str(mount_point)))
            assert found is not None
            read_ahead = await in_thread(Path(f"/sys/class/bdi/{found[1]}/read_ahead_kb").read_text)
            assert int(read_ahead) == READ_AHEAD_KB
            small = {f"f{i}": os.urandom(i * 997) for i in range(30)}
            many = tmp_path / "remote" / "var" / "data" / "many"
            many.mkdir()
            for name, content in small.items():
                (many / name).write_bytes(content)

            def read_listed() -> dict[str, bytes]:  # listed, so read from the listing
                return {n: (data / "many" / n).read_bytes() for n in os.listdir(data / "many")}

            assert await in_thread(read_listed) == small
            big_dir = tmp_path / "remote" / "var" / "data" / "big-dir"
            big_dir.mkdir()
            names = {f"entry-{i:05}" for i in range(1300)}  # three READDIR pages
            for name in names:
                (big_dir / name).touch()
            listed = await in_thread(lambda: os.listdir(data / "big-dir"))
            assert sorted(listed) == sorted(names)

            def read_often(name: str) -> None:  # opened here while open elsewhere too
                with open(data / "many" / name, "rb") as held:
                    for _ in range(40):
                        assert (data / "many" / name).read_bytes() == small[name]
                        assert held.read() == small[name] and held.seek(0) == 0

            async with trio.open_nursery() as readers:  # several readers of one file at once
                for name in ("f3", "f3", "f7", "f7", "f29"):
                    readers.start_soon(in_thread, functools.partial(read_often, name))
            await in_thread(lambda: (data / "local.txt").write_text("from the laptop"))
            remote = tmp_path / "remote" / "var" / "data" / "local.txt"
            assert remote.read_text() == "from the laptop"
            await in_thread(lambda: (data / "big-up.bin").write_bytes(big))  # 1 MiB WRITEs
            assert (tmp_path / "remote" / "var" / "data" / "big-up.bin").read_bytes() == big
            with pytest.raises(MountError, match="one engagement at a time"):
                await mounts.mount("other", connect, path=None, read_only=True)
        finally:
            await mounts.unmount("web")
        assert not mounted(mount_point)
        nursery.cancel_scope.cancel()


@pytest.mark.root
async def test_a_mount_unmounted_from_outside_ends_and_is_forgotten(tmp_path: Path) -> None:
    import ctypes

    server = VolumeServer(MOUNTS, root=str(make_tree(tmp_path / "remote")))

    async with trio.open_nursery() as nursery:
        connect = agent_pod(server, nursery)
        mounts = VolumeMounts()
        await nursery.start(mounts.run)
        await mounts.mount("web", connect, path=str(tmp_path / "mnt"), read_only=True)
        mount = mounts.active["web"]
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.umount2(os.fsencode(tmp_path / "mnt"), 2) == 0  # umount -l by the user
        with trio.fail_after(10):
            await mount.finished.wait()
        assert mounts.active == {}
        nursery.cancel_scope.cancel()


@pytest.mark.root
async def test_each_mount_in_its_own_process_two_at_once(tmp_path: Path) -> None:
    from tpengine.fs._process import MountProcesses

    server = VolumeServer(MOUNTS, root=str(make_tree(tmp_path / "remote")))

    async with trio.open_nursery() as nursery:
        connect = agent_pod(server, nursery)
        mounts = MountProcesses()
        await nursery.start(mounts.run)
        first = await mounts.mount("one", connect, path=str(tmp_path / "one"), read_only=False)
        second = await mounts.mount("two", connect, path=None, read_only=True)
        try:
            assert first["mounts"] == ["/etc/web", "/var/data", "/var/run/secrets/token"]
            for root in (first["mount_point"], second["mount_point"]):
                settings = Path(root) / "etc" / "web" / "settings.ini"
                assert await in_thread(settings.read_text) == "debug = true\n"
            written = Path(first["mount_point"]) / "var" / "data" / "x"
            await in_thread(lambda: written.write_text("from one"))
            with pytest.raises(OSError) as caught:
                await in_thread(
                    lambda: (Path(second["mount_point"]) / "var/data/y").write_text("no")
                )
            assert caught.value.errno == errno.EROFS
        finally:
            await mounts.unmount_all()
        assert not mounted(tmp_path / "one")
        assert not await in_thread(Path(second["mount_point"]).exists)  # its temp dir too
        nursery.cancel_scope.cancel()


@pytest.mark.root
async def test_a_killed_mount_process_leaves_no_dead_mount(tmp_path: Path) -> None:
    import signal

    from tpengine.fs._process import MountProcesses

    server = VolumeServer(MOUNTS, root=str(make_tree(tmp_path / "remote")))

    async with trio.open_nursery() as nursery:
        connect = agent_pod(server, nursery)
        mounts = MountProcesses()
        await nursery.start(mounts.run)
        await mounts.mount("one", connect, path=str(tmp_path / "one"), read_only=True)
        child = mounts.active["one"]
        assert child.process is not None
        child.process.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            await child.finished.wait()
        assert not mounted(tmp_path / "one")
        nursery.cancel_scope.cancel()


@pytest.mark.root
async def test_quitting_unmounts_through_the_mount_process(tmp_path: Path) -> None:
    from tpengine.fs._process import MountProcesses

    server = VolumeServer(MOUNTS, root=str(make_tree(tmp_path / "remote")))

    async with trio.open_nursery() as outer:
        connect = agent_pod(server, outer)
        mounts = MountProcesses()
        with trio.CancelScope() as engine:  # the engine's nursery, cancelled by tp quit
            async with trio.open_nursery() as nursery:
                await nursery.start(mounts.run)
                await mounts.mount("one", connect, path=str(tmp_path / "one"), read_only=True)
                process = mounts.active["one"].process
                engine.cancel()
        assert process is not None and process.returncode == 0  # it exited by itself
        assert not mounted(tmp_path / "one")
        outer.cancel_scope.cancel()
