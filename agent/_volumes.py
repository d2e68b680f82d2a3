"""The app container's volumes, served to the engaging client (``tpengine.fs`` protocol).

The webhook mounts each of the app container's volumeMounts in the agent container under
``MOUNTS_ROOT`` (``/tmp/tel_app_mounts/<mountPath>``, read-only where the app's is) and lists
the mountPaths in the agent's configuration. The engine dials the agent (host
``VOLUMES_HOST``) and sends requests on that one stream; this module answers them.

What the client sees is a tree of those mountPaths only: the directories above a
mountPath are virtual (read-only, listing just the way down to the mounts), and
everything at or below a mountPath is the real file system. Confinement: a request's
path never holds ``..`` or ``.`` (refused: EINVAL), and every real path is resolved by
``openat2(2)`` with ``RESOLVE_BENEATH`` from the mount's own directory, so no symlink (or
a race that swaps a directory for one) leads outside that volume. Writes under a
read-only mount are refused with EROFS before the kernel is asked (its read-only bind
mount would refuse them too).

Requests are answered in the order they arrive, inline: the volumes are local file
systems of the pod, where a 128 KiB read costs tens of microseconds (less than handing
it to a thread). A file handle belongs to its connection and is closed with it.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from tpengine.fs._protocol import (
    INLINE_MAX,
    KEEP_MODE,
    KEEP_TIME,
    MAX_CHUNK,
    NO_HANDLE,
    READDIR_PAGE,
    VERSION,
    Attr,
    BadPath,
    FrameDecoder,
    Op,
    ProtocolViolation,
    Request,
    StatFs,
    encode_reply,
    read_reply_header,
    split_path,
)

log = logging.getLogger(__name__)

MOUNTS_ROOT = "/tmp/tel_app_mounts"  # the config's mounts_root says where, if elsewhere
_SYS_OPENAT2 = 437  # the same number on every architecture (asm-generic, Linux 5.6)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_BENEATH = 0x08
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
#: Open flags a client may pass; anything else (O_NOFOLLOW, O_PATH, O_TMPFILE…) is dropped.
_OPEN_FLAGS = os.O_ACCMODE | os.O_APPEND | os.O_TRUNC | os.O_SYNC | os.O_DSYNC | os.O_NONBLOCK
_MUTATING = {
    Op.CREATE,
    Op.MKDIR,
    Op.UNLINK,
    Op.RMDIR,
    Op.RENAME,
    Op.TRUNCATE,
    Op.SETATTR,
    Op.SYMLINK,
}
_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2_beneath(dir_fd: int, path: bytes, flags: int, mode: int = 0) -> int:
    """``openat2(dir_fd, path, {flags, mode, RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS})``:
    an fd for ``path`` that can only resolve below ``dir_fd`` (openat2(2))."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, dir_fd, path or b".", ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        code = ctypes.get_errno()
        if code == errno.EXDEV:  # a path leaving the volume: refuse it as a permission
            code = errno.EACCES
        raise OSError(code, os.strerror(code))
    return int(fd)


def _renameat2(old_fd: int, old: bytes, new_fd: int, new: bytes, flags: int) -> None:
    if _libc.renameat2(old_fd, old, new_fd, new, ctypes.c_uint(flags)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@dataclass(frozen=True, kw_only=True)
class MountSpec:
    path: str  # the app's mountPath, absolute
    read_only: bool = False

    @property
    def parts(self) -> tuple[bytes, ...]:
        return tuple(os.fsencode(p) for p in self.path.strip("/").split("/") if p)


def attr_of(st: os.stat_result) -> Attr:
    return Attr(
        mode=st.st_mode,
        nlink=st.st_nlink,
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size,
        blocks=st.st_blocks,
        atime_ns=st.st_atime_ns,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
    )


_VIRTUAL_DIR = Attr(mode=stat.S_IFDIR | 0o555, nlink=2)


class _Where:
    """A request path placed in the tree: in a mount (with the rest below it) or a
    virtual directory above mounts (with the names one level down)."""

    def __init__(
        self, mount: MountSpec | None, rest: tuple[bytes, ...], children: list[bytes]
    ) -> None:
        self.mount = mount
        self.rest = rest
        self.children = children


class VolumeServer:
    """Answers the protocol for one set of mounts; one instance serves many connections."""

    def __init__(self, mounts: Sequence[MountSpec], root: str = MOUNTS_ROOT) -> None:
        self.mounts = sorted(mounts, key=lambda m: len(m.parts), reverse=True)
        self.root = root
        self.sessions: dict[bytes, _Handles] = {}  # client token -> its open files

    def hello_json(self) -> bytes:
        mounts = [{"path": m.path, "ro": m.read_only} for m in self.mounts]
        return json.dumps({"mounts": sorted(mounts, key=lambda m: str(m["path"]))}).encode()

    # -- placing paths -------------------------------------------------------------------

    def where(self, path: bytes) -> _Where:
        parts = split_path(path)
        for mount in self.mounts:  # the deepest mount first (a mount inside a mount)
            mp = mount.parts
            if parts[: len(mp)] == mp:
                return _Where(mount, parts[len(mp) :], [])
        children = sorted(
            {m.parts[len(parts)] for m in self.mounts if m.parts[: len(parts)] == parts}
        )
        if not children:
            raise OSError(errno.ENOENT, "no such volume path")
        return _Where(None, parts, children)

    def mount_fd(self, mount: MountSpec) -> int:
        """An O_PATH descriptor of the mount's directory (or file), opened per call so a
        volume that is mounted again later is seen as it is now."""
        return os.open(self.root.rstrip("/") + mount.path, os.O_PATH | os.O_CLOEXEC)


class _Handles:
    """Open files of one client (all its connections that said the same token)."""

    def __init__(self) -> None:
        self.open: dict[int, tuple[int, bool]] = {}  # handle -> (fd, read-only mount)
        self.next = 1
        self.users = 0


class Connection:
    """The state of one client connection: its open file handles (shared with the
    client's other connections that gave the same token in HELLO)."""

    def __init__(self, server: VolumeServer) -> None:
        self.server = server
        self._table = _Handles()
        self._table.users = 1
        self._token = b""

    @property
    def handles(self) -> dict[int, tuple[int, bool]]:
        return self._table.open

    def _join(self, token: bytes) -> None:
        if not token or self._token or self._table.open:
            return  # no token, or too late: this connection keeps its own handles
        self._token = token
        self._table = self.server.sessions.setdefault(token, _Handles())
        self._table.users += 1

    def close(self) -> None:
        self._table.users -= 1
        if self._table.users > 0:
            return  # the client's other connections still use them
        for fd, _ in self._table.open.values():
            os.close(fd)
        self._table.open.clear()
        self.server.sessions.pop(self._token, None)

    def answer(self, request: Request) -> bytes:
        """The encoded reply to one request (errors as errno, never an exception)."""
        return b"".join(self.answer_parts(request))

    def answer_parts(self, request: Request) -> list[bytes]:
        """The reply as pieces to send in order: a READ's data is sent as ``pread``
        returned it, after a small header, never copied into a joined frame."""
        try:
            values = self._dispatch(request)
        except OSError as exc:
            return [encode_reply(request.id, request.op, exc.errno or errno.EIO)]
        except BadPath:
            return [encode_reply(request.id, request.op, errno.EINVAL)]
        except Exception:  # a bug here must cost one request, not the connection
            log.exception("volume request %s failed", request.op.name)
            return [encode_reply(request.id, request.op, errno.EIO)]
        if request.op is Op.READ:
            (data,) = values
            return [read_reply_header(request.id, len(data)), data]
        return [encode_reply(request.id, request.op, 0, *values)]

    def _dispatch(self, request: Request) -> tuple[Any, ...]:
        op, args = request.op, request.args
        if op is Op.HELLO:
            self._join(bytes(args[1][:64]))
            return (VERSION, self.server.hello_json())
        if op is Op.STATFS:
            return (self._statfs(),)
        if op in (Op.READ, Op.WRITE, Op.RELEASE, Op.FSYNC):
            return self._handle_op(op, args)
        where = self._place(op, args[0])
        if where.mount is None:
            return self._virtual(op, args, where)
        if op in _MUTATING and where.mount.read_only:
            raise OSError(errno.EROFS, "read-only volume")
        fd = self.server.mount_fd(where.mount)
        try:
            return _REAL[op](self, fd, where, args)
        finally:
            os.close(fd)

    def _place(self, op: Op, path: bytes) -> _Where:
        try:
            return self.server.where(path)
        except FileNotFoundError:
            parent = path.rpartition(b"/")[0]
            if op in (Op.CREATE, Op.MKDIR, Op.SYMLINK) and self.server.where(parent).mount is None:
                raise OSError(
                    errno.EROFS, "the directories above the volumes are read-only"
                ) from None
            raise

    def _virtual(self, op: Op, args: tuple[Any, ...], where: _Where) -> tuple[Any, ...]:
        if op is Op.GETATTR:
            return (_VIRTUAL_DIR,)
        if op is Op.READDIR:
            entries = []
            for name in where.children[args[1] : args[1] + READDIR_PAGE]:
                try:
                    entries.append((name, self._getattr_path(b"/".join((*where.rest, name)))))
                except OSError:
                    continue  # a mount that is not there (yet) is left out
            return (entries, int(args[1] + READDIR_PAGE < len(where.children)), [])
        if op is Op.OPEN:
            raise OSError(errno.EISDIR, "a directory")
        if op is Op.READLINK:
            raise OSError(errno.EINVAL, "not a symlink")
        raise OSError(errno.EROFS, "the directories above the volumes are read-only")

    def _getattr_path(self, path: bytes) -> Attr:
        where = self.server.where(path)
        if where.mount is None:
            return _VIRTUAL_DIR
        fd = self.server.mount_fd(where.mount)
        try:
            return _getattr(self, fd, where, (path,))[0]
        finally:
            os.close(fd)

    def _statfs(self) -> StatFs:
        target = self.server.root
        for mount in self.server.mounts:
            target = self.server.root.rstrip("/") + mount.path
            break
        st = os.statvfs(target)
        return StatFs(
            bsize=st.f_bsize,
            frsize=st.f_frsize,
            blocks=st.f_blocks,
            bfree=st.f_bfree,
            bavail=st.f_bavail,
            files=st.f_files,
            ffree=st.f_ffree,
            namemax=st.f_namemax,
        )

    def _new_handle(self, fd: int, read_only: bool) -> int:
        handle = self._table.next
        self._table.next += 1
        self.handles[handle] = (fd, read_only)
        return handle

    def _handle_op(self, op: Op, args: tuple[Any, ...]) -> tuple[Any, ...]:
        found = self.handles.get(args[0])
        if found is None:
            raise OSError(errno.EBADF, "no such handle")
        fd, read_only = found
        if op is Op.READ:
            return (os.pread(fd, min(args[2], MAX_CHUNK), args[1]),)
        if op is Op.WRITE:
            if read_only:
                raise OSError(errno.EROFS, "read-only volume")
            return (os.pwrite(fd, args[2], args[1]),)
        if op is Op.FSYNC:
            (os.fdatasync if args[1] else os.fsync)(fd)
            return ()
        del self.handles[args[0]]
        os.close(fd)
        return ()


# -- operations on real paths (fd: the mount's O_PATH descriptor) ---------------------------


def _parent(fd: int, where: _Where) -> tuple[int, bytes]:
    """A directory fd for the path's parent (beneath the mount) and the last name; EBUSY
    for the mount's root itself (it cannot be removed, renamed or made)."""
    if not where.rest:
        raise OSError(errno.EBUSY, "the volume's mount point")
    return openat2_beneath(fd, b"/".join(where.rest[:-1]), os.O_PATH | os.O_DIRECTORY), where.rest[
        -1
    ]


def _in_parent(fd: int, where: _Where, action: Callable[[int, bytes], Any]) -> Any:
    parent, name = _parent(fd, where)
    try:
        return action(parent, name)
    finally:
        os.close(parent)


def _getattr(conn: Connection, fd: int, where: _Where, args: tuple[Any, ...]) -> tuple[Any, ...]:
    if not where.rest:
        return (attr_of(os.stat(fd)),)
    st = _in_parent(fd, where, lambda p, n: os.stat(n, dir_fd=p, follow_symlinks=False))
    return (attr_of(st),)


def _readdir(conn: Connection, fd: int, where: _Where, args: tuple[Any, ...]) -> tuple[Any, ...]:
    first, budget = args[1], min(args[2], MAX_CHUNK // 2)
    dir_fd = openat2_beneath(fd, b"/".join(where.rest), os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = sorted(os.listdir(dir_fd))
        entries: list[tuple[bytes, Attr]] = []
        inline: list[tuple[int, bytes]] = []
        for name in names[first : first + READDIR_PAGE]:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the listing
            if stat.S_ISREG(st.st_mode) and st.st_size <= min(INLINE_MAX, budget):
                data = _small_file(dir_fd, name, st.st_size)
                if data is not None:
                    inline.append((len(entries), data))
                    budget -= len(data)
            entries.append((os.fsencode(name), attr_of(st)))
    finally:
        os.close(dir_fd)
    return (entries, int(first + READDIR_PAGE < len(names)), inline)


def _small_file(dir_fd: int, name: str, size: int) -> bytes | None:
    """A small file's contents for the listing (one round trip lists and reads a
    directory of config files); None when it cannot be read or changed meanwhile."""
    try:
        opened = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None  # not readable by the agent: the client opens it and gets the error
    try:
        data = os.read(opened, size + 1)
    except OSError:
        return None
    finally:
        os.close(opened)
    return data if len(data) == size else None


def _open(conn: Connection, fd: int, where: _Where, args: tuple[Any, ...]) -> tuple[Any, ...]:
    read_only = where.mount is not None and where.mount.read_only
    flags = args[1] & _OPEN_FLAGS
    if read_only and flags & _WRITE_FLAGS:
        raise OSError(errno.EROFS, "read-only volume")
    opened = _open_file(fd, where, flags)
    is_dir = stat.S_ISDIR(os.fstat(opened).st_mode)
    if is_dir and flags & os.O_ACCMODE != os.O_RDONLY:
        os.close(opened)
        raise OSError(errno.EISDIR, "a directory")
    # The first bytes come with the handle: a small file costs one round trip, not two.
    wanted = min(args[2], MAX_CHUNK) if flags & os.O_ACCMODE != os.O_WRONLY and not is_dir else 0
    first = os.pread(opened, wanted, 0) if wanted else b""
    if wanted and len(first) < wanted and flags & (os.O_ACCMODE | _WRITE_FLAGS) == os.O_RDONLY:
        # All of a file that is only read: no handle to keep (no RELEASE round trip).
        os.close(opened)
        return (NO_HANDLE, first)
    return (conn._new_handle(opened, read_only), first)


def _create(conn: Connection, fd: int, where: _Where, args: tuple[Any, ...]) -> tuple[Any, ...]:
    flags = (args[1] & _OPEN_FLAGS) | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= args[1] & os.O_EXCL
    mode = args[2] & 0o7777

    def create(parent: int, name: bytes) -> int:
        try:
            opened = os.open(name, flags | os.O_EXCL, mode, dir_fd=parent)
        except FileExistsError:
            if flags & os.O_EXCL:
                raise
            # There after all (made meanwhile): opened as it is, its mode kept (open(2)).
            # O_NONBLOCK: a FIFO must not block the agent (no effect on regular files).
            opened = os.open(name, (flags & ~os.O_CREAT) | os.O_NONBLOCK, dir_fd=parent)
            if not stat.S_ISREG(os.fstat(opened).st_mode):
                os.close(opened)
                raise OSError(errno.EOPNOTSUPP, "special files are not served") from None
            return opened
        os.fchmod(opened, mode)  # exactly the mode asked for, whatever the agent's umask
        return opened

    opened = _in_parent(fd, where, create)
    return (conn._new_handle(opened, False), attr_of(os.fstat(opened)))


def _mkdir(conn: Connection, fd: int, where: _Where, args: tuple[Any, ...]) -> tuple[Any, ...]:
    mode = args[1] & 0o7777

    def mkdir(parent: int, name: bytes) -> os.stat_result:
        os.mkdir(name, mode, dir_fd=parent)
        os.chmod(name, mode, dir_fd=parent)
        return os.stat(name, dir_fd=parent, follow_symlinks=False)

    return (attr_of(_in_parent(fd, where, mkdir)),)


def _unlink(conn: Connection, fd: int, where: _Where, args: tuple[Any, ...]) -> tuple[Any, ...]:
    _in_parent(fd, where, lambda p, n: os.unlink(n, dir_fd=p))
    return ()


def _rmdir(conn: Connection, fd: int, where: _Where, args: tuple[Any, ...]) -> tuple[Any, ...]:
    _in_parent(fd, where, lambda p, n: os.rmdir(n, dir_fd=p))
    return ()


def _rename(conn: Connection, fd: int, where: _Where, args: tuple[Any, ...]) -> tuple[Any, ...]:
    target = conn.server.where(args[1])
    if target.mount != where.mount:
        raise OSError(errno.EXDEV, "across volumes")
    old_parent, old = _parent(fd, where)
    try:
        new_parent, new = _parent(fd, target)
        try:
            _renameat2(old_parent, old, new_parent, new, args[2])
        finally:
            os.close(new_parent)
    finally:
        os.close(old_parent)
    return ()


def _open_file(fd: int, where: _Where, flags: int) -> int:
    """Open a regular file or directory below the mount. FIFOs, sockets and devices are
    refused (EOPNOTSUPP): opening one may block, and requests are answered inline."""
    probe = openat2_beneath(fd, b"/".join(where.rest), os.O_PATH) if where.rest else os.dup(fd)
    try:
        mode = os.fstat(probe).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise OSError(errno.EOPNOTSUPP, "special files are not served")
        # The very inode checked: reopened through its O_PATH descriptor (proc(5)).
        return os.open(f"/proc/self/fd/{probe}", flags | os.O_CLOEXEC)
    finally:
        os.close(probe)


def _truncate(conn: Connection, fd: int, where: _Where, args: tuple[Any, ...]) -> tuple[Any, ...]:
    opened = _open_file(fd, where, os.O_WRONLY)
    try:
        os.ftruncate(opened, args[1])
        return (attr_of(os.fstat(opened)),)
    finally:
        os.close(opened)


def _setattr(conn: Connection, fd: int, where: _Where, args: tuple[Any, ...]) -> tuple[Any, ...]:
    _, mode, atime, mtime = args
    target = openat2_beneath(fd, b"/".join(where.rest), os.O_PATH)
    try:
        path = f"/proc/self/fd/{target}"  # chmod/utimes through the resolved descriptor
        if mode != KEEP_MODE:
            os.chmod(path, mode & 0o7777)
        if atime != KEEP_TIME or mtime != KEEP_TIME:
            st = os.stat(target)
            os.utime(
                path,
                ns=(
                    st.st_atime_ns if atime == KEEP_TIME else atime,
                    st.st_mtime_ns if mtime == KEEP_TIME else mtime,
                ),
            )
        return (attr_of(os.stat(target)),)
    finally:
        os.close(target)


def _symlink(conn: Connection, fd: int, where: _Where, args: tuple[Any, ...]) -> tuple[Any, ...]:
    def symlink(parent: int, name: bytes) -> os.stat_result:
        os.symlink(args[1], name, dir_fd=parent)
        return os.stat(name, dir_fd=parent, follow_symlinks=False)

    return (attr_of(_in_parent(fd, where, symlink)),)


def _readlink(conn: Connection, fd: int, where: _Where, args: tuple[Any, ...]) -> tuple[Any, ...]:
    if not where.rest:
        raise OSError(errno.EINVAL, "not a symlink")
    return (os.fsencode(_in_parent(fd, where, lambda p, n: os.readlink(n, dir_fd=p))),)


_Handler = Callable[[Connection, int, _Where, tuple[Any, ...]], tuple[Any, ...]]
_REAL: dict[Op, _Handler] = {
    Op.GETATTR: _getattr,
    Op.READDIR: _readdir,
    Op.OPEN: _open,
    Op.CREATE: _create,
    Op.MKDIR: _mkdir,
    Op.UNLINK: _unlink,
    Op.RMDIR: _rmdir,
    Op.RENAME: _rename,
    Op.TRUNCATE: _truncate,
    Op.SETATTR: _setattr,
    Op.SYMLINK: _symlink,
    Op.READLINK: _readlink,
}


async def _send_pieces(stream: trio.abc.Stream, pieces: list[bytes]) -> None:
    """Send ``pieces`` in order: small ones joined into one send, large ones (file data)
    as they are (a mux stream sends bytes without copying them)."""
    small: list[bytes] = []
    for piece in pieces:
        if len(piece) < _JOIN_BELOW:
            small.append(piece)
            continue
        if small:
            await stream.send_all(b"".join(small))
            small = []
        await stream.send_all(piece)
    if small:
        await stream.send_all(b"".join(small))


_JOIN_BELOW = 16 * 1024


async def serve_volumes(stream: trio.abc.Stream, server: VolumeServer) -> None:
    """Answer requests on ``stream`` until it ends; a peer that breaks the protocol is
    dropped (logged), never the agent."""
    conn = Connection(server)
    decoder = FrameDecoder()
    try:
        while True:
            data = await stream.receive_some(MAX_CHUNK + 65536)
            if not data:
                return
            decoder.feed(data)
            replies: list[bytes] = []
            for frame in decoder.frames():
                if not isinstance(frame, Request):
                    raise ProtocolViolation("a reply sent to the server")
                replies += conn.answer_parts(frame)
            await _send_pieces(stream, replies)
    except ProtocolViolation as exc:
        log.info("volume client broke the protocol: %s", exc)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        conn.close()
        with trio.CancelScope(shield=True):
            await stream.aclose()
