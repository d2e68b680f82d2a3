"""The FUSE file system (pyfuse3, trio-native) that shows an agent's volumes on the laptop.

Every FUSE request becomes one protocol request (``VolumeClient.call``); the kernel
sends several at once (pyfuse3 runs up to 99 worker tasks), and they share the one
stream. Paths, not inode numbers, cross the wire: this side numbers the paths it has
seen (the root is inode 1) and renumbers nothing on rename but the moved subtree's
paths. Attributes and names are cached by the kernel for ``CACHE_TIMEOUT`` seconds
(entry and attr timeouts), so a listing followed by reads costs no second round trip
per file and a change in the pod shows within a second.

Files appear owned by the user who mounted them with the pod's modes: the agent still
enforces the pod's real owners and modes for every request, so this only makes
``default_permissions`` (the kernel's own check) agree with what the user may try.

Sequential reads are read ahead: after two reads in a row, the next ``READ_AHEAD``
units of 1 MiB are requested at once, so the wire stays busy instead of paying one
round trip through manager and agent per request (the mount's kernel read-ahead, raised
by ``_mount``, keeps several 1 MiB reads in flight; the data is handed to the kernel as
views of the buffers it arrived in, not copied again).
OPEN brings the file's first 128 KiB along, so reading a small file is one round trip
(and when that is all of a file opened read-only, the agent keeps no handle for it:
no RELEASE either). A small file whose whole contents are known at OPEN (from a
listing, or that first chunk) is stored in the kernel's page cache right then
(``notify_store``), so the reads that follow are answered by the kernel without a READ
request at all.
A handle opened on a connection that has since been replaced (the agent's pod was
deleted and a new one arrived) fails with EIO; new opens reach the new pod.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, cast

import pyfuse3
import trio

from tpengine.fs._client import VolumeClient
from tpengine.fs._protocol import (
    INLINE_MAX,
    KEEP_MODE,
    KEEP_TIME,
    NO_HANDLE,
    READDIR_PAGE,
    Attr,
    Op,
    StatFs,
    join,
)

log = logging.getLogger(__name__)

CACHE_TIMEOUT = 1.0
#: Bytes a directory's st_size grows by per entry (ext4 ~24 for short names, tmpfs 20):
#: its size tells how many READDIR pages to ask for at once, up to PAGES_AT_ONCE.
DIRENT_BYTES = 24
PAGES_AT_ONCE = 4
CHUNK = 128 * 1024
INLINE_BUDGET = 512 * 1024  # bytes of small files one READDIR page may bring
#: The handle of a file served from what this side has (inline contents, or all of it
#: that OPEN brought): the agent keeps no handle for it (agents number theirs from 1).
LOCAL = NO_HANDLE
_WRITING = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND
assert INLINE_MAX < CHUNK  # an inline file is all there is of it
#: A sequential reader gets READ_AHEAD units of UNIT bytes requested ahead of it: few,
#: big requests cost less per byte in every process on the way than many small ones.
UNIT = 1024 * 1024
READ_AHEAD = 16
P = ParamSpec("P")
T = TypeVar("T")


def _fuse_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """OSError → the same errno for the caller; anything else is a bug: EIO (pyfuse3
    would otherwise end its main loop)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            log.debug("volumes: %s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("volumes: %s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class _OpenFile:
    def __init__(self, path: bytes, handle: int, generation: int, inode: int = 0) -> None:
        self.path = path
        self.inode = inode
        self.handle = handle
        self.generation = generation
        self.next_offset = -1  # where a sequential reader reads next
        self.streak = 0
        self.ahead: dict[int, _Chunk] = {}


class _Chunk:
    __slots__ = ("data", "done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.data: bytes | memoryview = b""
        self.error: OSError | None = None


class RemoteFs(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, client: VolumeClient, nursery: trio.Nursery) -> None:
        super().__init__()
        self.client = client
        self._nursery = nursery
        self._paths: dict[int, bytes] = {pyfuse3.ROOT_INODE: b""}
        self._inodes: dict[bytes, int] = {b"": pyfuse3.ROOT_INODE}
        self._next_inode = pyfuse3.ROOT_INODE + 1
        self._files: dict[int, _OpenFile] = {}
        self._opened: dict[int, int] = {}  # inode -> its open handles here
        #: small files' contents that came with a listing: path -> (bytes, valid until)
        self._inline: dict[bytes, tuple[bytes, float]] = {}
        self._dirs: dict[int, list[tuple[bytes, Attr]]] = {}
        self._dir_sizes: dict[int, int] = {}  # a directory's st_size: how big its listing is
        self._next_fh = 1
        self.initialised = trio.Event()  # the kernel's INIT is answered
        self._uid, self._gid = os.getuid(), os.getgid()

    def init(self) -> None:
        # Called while the kernel's INIT is answered; what must follow the answer (the
        # kernel sets the mount's read-ahead from it) waits for ``initialised``.
        self._nursery.start_soon(self._set_initialised)

    async def _set_initialised(self) -> None:
        self.initialised.set()

    # -- inodes and attributes ------------------------------------------------------------

    def _path(self, inode: int) -> bytes:
        try:
            return self._paths[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _inode(self, path: bytes) -> int:
        inode = self._inodes.get(path)
        if inode is None:
            inode = self._inodes[path] = self._next_inode
            self._paths[inode] = path
            self._next_inode += 1
        return inode

    def _entry(self, path: bytes, attr: Attr) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = self._inode(path)
        entry.st_mode = attr.mode
        entry.st_nlink = attr.nlink
        entry.st_uid = self._uid
        entry.st_gid = self._gid
        entry.st_size = attr.size
        entry.st_blocks = attr.blocks
        entry.st_blksize = CHUNK
        entry.st_atime_ns = attr.atime_ns
        entry.st_mtime_ns = attr.mtime_ns
        entry.st_ctime_ns = attr.ctime_ns
        entry.entry_timeout = CACHE_TIMEOUT
        entry.attr_timeout = CACHE_TIMEOUT
        if stat.S_ISDIR(attr.mode):
            self._dir_sizes[entry.st_ino] = attr.size
        return entry

    async def _call(self, op: Op, *args: Any, generation: int | None = None) -> tuple[Any, ...]:
        values, _ = await self.client.call(op, *args, generation=generation)
        return values

    # -- lookups ----------------------------------------------------------------------------

    @_fuse_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        path = join(self._path(parent_inode), name)
        (attr,) = await self._call(Op.GETATTR, path)
        return self._entry(path, attr)

    @_fuse_errors
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        path = self._path(inode)
        error: OSError | None = None
        try:
            (attr,), generation = await self.client.call(Op.GETATTR, path)
        except OSError as exc:  # say, ENOENT from a new pod
            error, generation = exc, self.client.generation
        if self._stale(path, generation):
            # The kernel asks this on a read from an open file too (to check its size):
            # the file that was opened is gone with its pod, whatever the new pod has.
            raise OSError(errno.EIO, "the agent's pod was replaced since the file was opened")
        if error is not None:
            raise error
        return self._entry(path, attr)

    @_fuse_errors
    async def setattr(
        self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        path = self._path(inode)
        self._inline.pop(path, None)
        result: Attr | None = None
        if fields.update_size:
            (result,) = await self._call(Op.TRUNCATE, path, attr.st_size)
        if fields.update_mode or fields.update_atime or fields.update_mtime:
            (result,) = await self._call(
                Op.SETATTR,
                path,
                stat.S_IMODE(attr.st_mode) if fields.update_mode else KEEP_MODE,
                attr.st_atime_ns if fields.update_atime else KEEP_TIME,
                attr.st_mtime_ns if fields.update_mtime else KEEP_TIME,
            )
        if result is None:  # chown: the pod's owners are not the laptop's to change
            (result,) = await self._call(Op.GETATTR, path)
        return self._entry(path, result)

    @_fuse_errors
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        (target,) = await self._call(Op.READLINK, self._path(inode))
        return bytes(target)

    # -- directories ----------------------------------------------------------------------

    @_fuse_errors
    async def opendir(self, inode: int, ctx: Any) -> int:
        path = self._path(inode)
        entries: list[tuple[bytes, Attr]] = []
        now = trio.current_time()
        self._inline = {p: v for p, v in self._inline.items() if v[1] > now}
        more = True
        for values in await self._first_pages(path, inode):
            more = self._add_page(path, values, entries, now)
        while more:
            values = await self._call(Op.READDIR, path, len(entries), INLINE_BUDGET)
            more = self._add_page(path, values, entries, now)
        fh = self._new_fh()
        self._dirs[fh] = [(join(path, name), attr) for name, attr in entries]
        return fh

    async def _first_pages(self, path: bytes, inode: int) -> list[tuple[Any, ...]]:
        """The first pages of a listing. A directory whose size says it needs several
        (~``DIRENT_BYTES`` an entry) has up to ``PAGES_AT_ONCE`` of them asked at once: one
        round trip for all, not one each. Kept: each page that follows a full one (a page
        of another length ends the guess; the rest is asked from where it stopped)."""
        guess = -(-self._dir_sizes.get(inode, 0) // (DIRENT_BYTES * READDIR_PAGE))
        results: list[tuple[Any, ...] | OSError] = [OSError(errno.EIO)] * max(
            1, min(guess, PAGES_AT_ONCE)
        )

        async def fetch(k: int) -> None:
            try:
                results[k] = await self._call(Op.READDIR, path, k * READDIR_PAGE, INLINE_BUDGET)
            except OSError as exc:
                results[k] = exc

        async with trio.open_nursery() as nursery:
            for k in range(len(results)):
                nursery.start_soon(fetch, k)
        pages: list[tuple[Any, ...]] = []
        for result in results:
            if isinstance(result, OSError):
                if not pages:
                    raise result
                break
            pages.append(result)
            if len(result[0]) != READDIR_PAGE or not result[1]:
                break
        return pages

    def _add_page(
        self, path: bytes, values: tuple[Any, ...], entries: list[tuple[bytes, Attr]], now: float
    ) -> bool:
        """One READDIR reply's entries (and small files' contents) taken in; whether more
        follow."""
        page, more, inline = values
        for index, data in inline:
            if 0 <= index < len(page):
                self._inline[join(path, page[index][0])] = (bytes(data), now + CACHE_TIMEOUT)
        entries += page
        return bool(more) and bool(page)

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = self._dirs.get(fh, [])
        for index in range(start_id, len(entries)):
            path, attr = entries[index]
            name = path.rpartition(b"/")[2]
            if not pyfuse3.readdir_reply(token, name, self._entry(path, attr), index + 1):
                break

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @_fuse_errors
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        path = join(self._path(parent_inode), name)
        (attr,) = await self._call(Op.MKDIR, path, mode)
        return self._entry(path, attr)

    @_fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self._call(Op.RMDIR, join(self._path(parent_inode), name))

    @_fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        path = join(self._path(parent_inode), name)
        self._inline.pop(path, None)
        await self._call(Op.UNLINK, path)

    @_fuse_errors
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        old = join(self._path(parent_inode_old), name_old)
        new = join(self._path(parent_inode_new), name_new)
        self._inline.clear()
        await self._call(Op.RENAME, old, new, flags)
        self._moved(old, new)

    def _moved(self, old: bytes, new: bytes) -> None:
        """Renumber nothing: the inodes of ``old`` and below now name paths under ``new``."""
        self._inodes.pop(new, None)
        prefix = old + b"/"
        for path in [p for p in self._inodes if p == old or p.startswith(prefix)]:
            inode = self._inodes.pop(path)
            moved = new + path[len(old) :]
            self._inodes[moved] = inode
            self._paths[inode] = moved

    @_fuse_errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        path = join(self._path(parent_inode), name)
        (attr,) = await self._call(Op.SYMLINK, path, target)
        return self._entry(path, attr)

    @_fuse_errors
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        (fs,) = await self._call(Op.STATFS)
        return _statvfs(fs)

    # -- files ----------------------------------------------------------------------------

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    @_fuse_errors
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        path = self._path(inode)
        cached = self._inline.get(path)
        if flags & _WRITING:
            self._inline.pop(path, None)
        elif cached is not None and cached[1] > trio.current_time():
            # Listed a moment ago with its contents: no round trip (as attributes are
            # cached for CACHE_TIMEOUT, so is a small file's data).
            self._store(inode, cached[0])
            return self._opened_file(inode, path, LOCAL, self.client.generation, cached[0])
        (handle, first), generation = await self.client.call(Op.OPEN, path, flags, CHUNK)
        if flags & os.O_ACCMODE == os.O_WRONLY:
            return self._opened_file(inode, path, handle, generation, None)
        if len(first) < CHUNK and not flags & _WRITING:
            self._store(inode, first)  # short: all of the file
        return self._opened_file(inode, path, handle, generation, first)

    def _opened_file(
        self, inode: int, path: bytes, handle: int, generation: int, first: Any
    ) -> pyfuse3.FileInfo:
        fh = self._new_fh()
        file = self._files[fh] = _OpenFile(path, handle, generation, inode)
        self._opened[inode] = self._opened.get(inode, 0) + 1
        if first is not None:
            chunk = file.ahead[-1] = _Chunk()  # the first reads are answered already
            chunk.data = first
            chunk.done.set()
        return pyfuse3.FileInfo(fh=fh)

    def _store(self, inode: int, data: bytes | memoryview) -> None:
        """A small file's whole contents into the kernel's page cache (fuse(4)
        FUSE_NOTIFY_STORE), so its reads need no READ request. Only while the file is
        open nowhere else: the kernel locks the pages it stores into, and a page locked
        by a READ that waits for this process would wait forever (this call blocks the
        loop that would answer it); without an open file there is no READ."""
        if self._opened.get(inode) or not data:
            return
        try:
            pyfuse3.notify_store(inode, 0, _buffer(data))
        except OSError as exc:  # ENOENT: the kernel forgot the inode; ENOSYS: too old
            log.debug("volumes: notify_store of inode %d: %s", inode, exc)

    @_fuse_errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = join(self._path(parent_inode), name)
        self._inline.pop(path, None)
        (handle, attr), generation = await self.client.call(Op.CREATE, path, flags, mode)
        entry = self._entry(path, attr)
        return self._opened_file(entry.st_ino, path, handle, generation, None), entry

    def _stale(self, path: bytes, current: int) -> bool:
        """Whether ``path`` is open through a handle of an agent other than the one of
        generation ``current`` (the one that answered)."""
        return any(
            f.path == path and f.handle != LOCAL and f.generation != current
            for f in self._files.values()
        )

    async def _handle(self, fh: int) -> tuple[_OpenFile, int]:
        """The file and its handle; EIO when the handle was opened on a connection that
        is gone (the file was in a pod that was replaced: like NFS's stale handles, it
        is not silently swapped for whatever the new pod has at that path)."""
        file = self._files.get(fh)
        if file is None:
            raise OSError(errno.EBADF, "no such handle")
        if file.generation != self.client.generation and file.handle != LOCAL:
            raise OSError(errno.EIO, "the agent's pod was replaced since the file was opened")
        return file, file.handle

    @_fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        file, handle = await self._handle(fh)
        first = file.ahead.get(-1)  # the bytes OPEN brought
        if first is not None and (off + size <= len(first.data) or len(first.data) < CHUNK):
            return _buffer(first.data[off : off + size])  # (all of a file shorter than CHUNK)
        sequential = off == file.next_offset
        file.streak = file.streak + 1 if sequential else 0
        file.next_offset = off + size
        if file.streak >= 2:
            self._read_ahead(file, off // UNIT)
        data = await self._from_units(file, off, size)
        if data is None:
            (data,) = await self._call(Op.READ, handle, off, size, generation=file.generation)
        return _buffer(data)

    @staticmethod
    async def _from_units(file: _OpenFile, off: int, size: int) -> bytes | memoryview | None:
        """``size`` bytes at ``off`` from the units read ahead (views, joined only when
        the range spans two), or None when they are not all there."""
        chunks = [file.ahead.get(u) for u in range(off // UNIT, (off + size - 1) // UNIT + 1)]
        parts: list[bytes | memoryview] = []
        for index, chunk in enumerate(chunks):
            if chunk is None:
                return None
            await chunk.done.wait()
            if chunk.error is not None:
                return None
            start = max(0, off - (off // UNIT + index) * UNIT)
            parts.append(chunk.data[start : start + size - sum(map(len, parts))])
            if len(chunk.data) < UNIT:
                break  # the end of the file
        else:
            if sum(map(len, parts)) != size:
                return None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_ahead(self, file: _OpenFile, unit: int) -> None:
        """Units ``unit`` .. ``unit + READ_AHEAD`` requested; the ones before dropped."""
        for old in [u for u in file.ahead if 0 <= u < unit]:
            del file.ahead[old]
        for wanted in range(unit, unit + READ_AHEAD):
            if wanted not in file.ahead:
                chunk = file.ahead[wanted] = _Chunk()
                self._nursery.start_soon(self._fetch, file, wanted, chunk)

    async def _fetch(self, file: _OpenFile, unit: int, chunk: _Chunk) -> None:
        try:
            (data,) = await self._call(
                Op.READ, file.handle, unit * UNIT, UNIT, generation=file.generation
            )
            chunk.data = data
        except OSError as exc:
            chunk.error = exc
        finally:
            chunk.done.set()

    @_fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        file, handle = await self._handle(fh)
        file.ahead.clear()
        (written,) = await self._call(Op.WRITE, handle, off, buf, generation=file.generation)
        return int(written)

    async def flush(self, fh: int) -> None:
        # Nothing to do at close(2) (writes are not buffered here): ENOSYS tells the
        # kernel never to send FLUSH again, one request less per file (fuse(4)).
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @_fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        file, handle = await self._handle(fh)
        if handle != LOCAL:  # (one read only, all here: nothing to sync)
            await self._call(Op.FSYNC, handle, int(datasync), generation=file.generation)

    async def release(self, fh: int) -> None:
        file = self._files.pop(fh, None)
        if file is not None:
            left = self._opened.get(file.inode, 0) - 1
            if left > 0:
                self._opened[file.inode] = left
            else:
                self._opened.pop(file.inode, None)
        if file is None or file.generation != self.client.generation or file.handle == LOCAL:
            return  # its connection is gone, and the handle with it (or it had none)
        # Nobody waits for a release (close(2) already returned): no round trip here.
        self._nursery.start_soon(self._release_remote, file)

    async def _release_remote(self, file: _OpenFile) -> None:
        try:
            await self._call(Op.RELEASE, file.handle, generation=file.generation)
        except OSError:
            pass


def _buffer(data: bytes | memoryview) -> bytes:
    """``data`` as pyfuse3 is typed to take it: it takes any buffer (PyObject_GetBuffer
    in its read reply and notify_store), so a view is passed on without a copy."""
    return cast(bytes, data)


def _statvfs(fs: StatFs) -> pyfuse3.StatvfsData:
    data = pyfuse3.StatvfsData()
    data.f_bsize = fs.bsize
    data.f_frsize = fs.frsize
    data.f_blocks = fs.blocks
    data.f_bfree = fs.bfree
    data.f_bavail = fs.bavail
    data.f_files = fs.files
    data.f_ffree = fs.ffree
    data.f_favail = fs.ffree
    data.f_namemax = fs.namemax
    return data
