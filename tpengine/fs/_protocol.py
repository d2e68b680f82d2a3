"""The remote-volume file protocol: a sans-IO codec shared by the agent and the engine.

Theory of operation. The engine dials the agent (through the manager, tag
``agent:<ns>/<pod>``, host ``VOLUMES_HOST``) and gets one mux stream. On it, both ends
send *frames*; many requests are in flight at once, told apart by their request id (the
client numbers them; the server answers each exactly once, in any order). Errors travel
as errno values, so the FUSE side hands the agent's own ``ENOENT``/``EACCES``/``EROFS``
to the local process unchanged.

Frame (all integers big-endian)::

    length u32 | op u8 (| 0x80 for a reply) | request id u32 | body (length - 5 bytes)

Request body: the op's fields in order. Reply body: ``errno u16`` and, when errno is 0,
the op's reply fields. Field kinds:

====  ==========================================================================
I     u32
Q     u64
q     i64 (nanosecond times; -1 = "leave as is")
b     bytes: length u32 | bytes (paths, names, JSON)
d     file data: as ``b`` on the wire; decoded without a copy (a memoryview into the
      frame) when the frame is large enough to have a buffer of its own
A     attributes: mode u32 | nlink u32 | uid u32 | gid u32 | size u64 | blocks u64 |
      atime_ns i64 | mtime_ns i64 | ctime_ns i64
E     directory entries: count u32 | count × (name b | attributes A)
V     statfs: bsize, frsize, blocks, bfree, bavail, files, ffree, namemax (8 × u64)
D     inline file contents: count u32 | count × (entry index u32 | data b)
====  ==========================================================================

Paths are relative to the mount root (``b""`` is the root), components joined by
``/``; the server refuses ``..``, ``.``, empty components and NUL. Reads and writes
carry at most ``MAX_CHUNK`` bytes (the kernel asks for up to 1 MiB at a time). A frame
longer than ``MAX_FRAME`` or that does not decode exactly is a
:class:`ProtocolViolation`: the reader drops the connection (never the process).

Bulk data is copied as little as Python allows: a frame of ``BIG_FRAME`` bytes or more
is gathered straight into a buffer of its own (one copy from what the socket gave), and
its ``d`` field is a view into that buffer; the server sends a READ reply as a small
header followed by the data it read (``read_reply_header``), and the client a large
WRITE as a header and the data (``write_request_header``), never joined.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

VOLUMES_HOST = "volumes"  # the dial's host that the agent answers with its volumes
VOLUMES_PORT = 1
VERSION = 1
MAX_CHUNK = 1024 * 1024
#: A directory listing is sent in pages of at most this many entries.
READDIR_PAGE = 512
#: Regular files up to this size come with the listing (READDIR's inline budget).
INLINE_MAX = 64 * 1024
MAX_FRAME = MAX_CHUNK + 64 * 1024
#: Frames at least this long are gathered into a buffer of their own (see above).
BIG_FRAME = 64 * 1024
REPLY = 0x80
_HEADER = struct.Struct(">IBI")
_ATTR = struct.Struct(">IIIIQQqqq")
_STATFS = struct.Struct(">8Q")


class ProtocolViolation(Exception):
    """The peer sent something that is not this protocol; drop the connection."""


class Op(enum.IntEnum):
    HELLO = 1
    GETATTR = 2
    READDIR = 3
    OPEN = 4
    READ = 5
    WRITE = 6
    RELEASE = 7
    FSYNC = 8
    CREATE = 9
    MKDIR = 10
    UNLINK = 11
    RMDIR = 12
    RENAME = 13
    TRUNCATE = 14
    SETATTR = 15
    SYMLINK = 16
    READLINK = 17
    STATFS = 18


# op -> (request fields, reply fields)
SCHEMAS: dict[Op, tuple[str, str]] = {
    # version, client token (connections with one token share file handles: a client
    # may spread reads over several streams) -> version, JSON {"mounts": [{path, ro}]}
    Op.HELLO: ("Ib", "Ib"),
    Op.GETATTR: ("b", "A"),  # path (not following a last symlink)
    # path, first index, inline budget -> entries, 1 when more follow, the contents of
    # small regular files among them (entry index, bytes) within the budget
    Op.READDIR: ("bII", "EID"),
    # path, open flags, first bytes wanted -> handle, those bytes; handle NO_HANDLE when
    # those bytes are all of the file and it was opened read-only: the server keeps
    # nothing open, and the client sends no READ or RELEASE for it
    Op.OPEN: ("bII", "Qd"),
    Op.READ: ("QQI", "d"),  # handle, offset, size -> data (short = end of file)
    Op.WRITE: ("QQd", "I"),  # handle, offset, data -> bytes written
    Op.RELEASE: ("Q", ""),
    Op.FSYNC: ("QI", ""),  # handle, datasync
    Op.CREATE: ("bII", "QA"),  # path, flags, mode -> handle, attributes
    Op.MKDIR: ("bI", "A"),  # path, mode
    Op.UNLINK: ("b", ""),
    Op.RMDIR: ("b", ""),
    Op.RENAME: ("bbI", ""),  # old, new, flags (RENAME_NOREPLACE/EXCHANGE)
    Op.TRUNCATE: ("bQ", "A"),  # path, size
    Op.SETATTR: ("bIqq", "A"),  # path, mode (0xFFFFFFFF: keep), atime_ns, mtime_ns
    Op.SYMLINK: ("bb", "A"),  # path, target
    Op.READLINK: ("b", "b"),
    Op.STATFS: ("", "V"),
}
NO_HANDLE = 0
KEEP_MODE = 0xFFFFFFFF
KEEP_TIME = -1


@dataclass(frozen=True, kw_only=True)
class Attr:
    mode: int
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    size: int = 0
    blocks: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0


@dataclass(frozen=True, kw_only=True)
class StatFs:
    bsize: int
    frsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    namemax: int


@dataclass(frozen=True, kw_only=True)
class Request:
    id: int
    op: Op
    args: tuple[Any, ...]


@dataclass(frozen=True, kw_only=True)
class Reply:
    id: int
    op: Op
    errno: int
    values: tuple[Any, ...] = ()


Frame = Request | Reply

# -- encoding --------------------------------------------------------------------------


def _encode_field(kind: str, value: Any, out: list[bytes]) -> None:
    if kind == "I":
        out.append(struct.pack(">I", value))
    elif kind == "Q":
        out.append(struct.pack(">Q", value))
    elif kind == "q":
        out.append(struct.pack(">q", value))
    elif kind in "bd":
        out.append(struct.pack(">I", len(value)))
        out.append(bytes(value))
    elif kind == "A":
        out.append(_pack_attr(value))
    elif kind == "E":
        out.append(struct.pack(">I", len(value)))
        for name, attr in value:
            out.append(struct.pack(">I", len(name)))
            out.append(bytes(name))
            out.append(_pack_attr(attr))
    elif kind == "D":
        out.append(struct.pack(">I", len(value)))
        for index, data in value:
            out.append(struct.pack(">II", index, len(data)))
            out.append(bytes(data))
    elif kind == "V":
        v = value
        out.append(
            _STATFS.pack(
                v.bsize, v.frsize, v.blocks, v.bfree, v.bavail, v.files, v.ffree, v.namemax
            )
        )
    else:  # pragma: no cover - the schemas above use only these kinds
        raise ValueError(f"unknown field kind {kind!r}")


def _pack_attr(a: Attr) -> bytes:
    return _ATTR.pack(
        a.mode, a.nlink, a.uid, a.gid, a.size, a.blocks, a.atime_ns, a.mtime_ns, a.ctime_ns
    )


def _frame(code: int, request_id: int, parts: list[bytes]) -> bytes:
    body = b"".join(parts)
    return _HEADER.pack(len(body) + 5, code, request_id) + body


def read_reply_header(request_id: int, size: int) -> bytes:
    """The bytes before ``size`` bytes of data in a successful READ reply:
    ``read_reply_header(i, len(data)) + data == encode_reply(i, Op.READ, 0, data)``, so
    the data is sent as it was read, without joining."""
    return _READ_REPLY.pack(size + 11, Op.READ | REPLY, request_id, 0, size)


_READ_REPLY = struct.Struct(">IBIHI")


def write_request_header(request_id: int, handle: int, offset: int, size: int) -> bytes:
    """The bytes before ``size`` bytes of data in a WRITE request:
    ``write_request_header(i, h, o, len(data)) + data == encode_request(i, Op.WRITE, h, o,
    data)``, so the data is sent as the kernel gave it, without joining."""
    return _WRITE_REQUEST.pack(size + 25, Op.WRITE, request_id, handle, offset, size)


_WRITE_REQUEST = struct.Struct(">IBIQQI")


def encode_request(request_id: int, op: Op, *args: Any) -> bytes:
    fields = SCHEMAS[op][0]
    if len(args) != len(fields):
        raise ValueError(f"{op.name} takes {len(fields)} fields, not {len(args)}")
    parts: list[bytes] = []
    for kind, value in zip(fields, args, strict=True):
        _encode_field(kind, value, parts)
    return _frame(op, request_id, parts)


def encode_reply(request_id: int, op: Op, errno: int = 0, *values: Any) -> bytes:
    parts = [struct.pack(">H", errno)]
    if errno == 0:
        fields = SCHEMAS[op][1]
        if len(values) != len(fields):
            raise ValueError(f"{op.name} replies with {len(fields)} fields, not {len(values)}")
        for kind, value in zip(fields, values, strict=True):
            _encode_field(kind, value, parts)
    return _frame(op | REPLY, request_id, parts)


# -- decoding --------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: memoryview, *, owned: bool = False) -> None:
        self.data = data
        self.pos = 0
        self.owned = owned  # data is the frame's own buffer: "d" fields may point into it

    def take(self, n: int) -> memoryview:
        if n > len(self.data) - self.pos:
            raise ProtocolViolation("a field runs past the end of its frame")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        if fmt.size > len(self.data) - self.pos:
            raise ProtocolViolation("a field runs past the end of its frame")
        values = fmt.unpack_from(self.data, self.pos)
        self.pos += fmt.size
        return values

    def bytes_field(self) -> bytes:
        (n,) = self.unpack(_U32)
        return bytes(self.take(n))

    def field(self, kind: str) -> Any:
        if kind in _NUMBERS:
            return self.unpack(_NUMBERS[kind])[0]
        if kind == "b":
            return self.bytes_field()
        if kind == "d":
            (n,) = self.unpack(_U32)
            return self.take(n) if self.owned else bytes(self.take(n))
        if kind == "A":
            return self.attr()
        if kind == "E":
            (count,) = self.unpack(_U32)
            if count > len(self.data):  # each entry takes bytes: a lie is cheap to spot
                raise ProtocolViolation("more directory entries than bytes")
            return [(self.bytes_field(), self.attr()) for _ in range(count)]
        if kind == "D":
            (count,) = self.unpack(_U32)
            if count > len(self.data):
                raise ProtocolViolation("more inline files than bytes")
            return [(self.unpack(_U32)[0], self.bytes_field()) for _ in range(count)]
        if kind == "V":
            return StatFs(**dict(zip(_STATFS_FIELDS, self.unpack(_STATFS), strict=True)))
        raise ProtocolViolation(f"unknown field kind {kind!r}")  # pragma: no cover

    def attr(self) -> Attr:
        mode, nlink, uid, gid, size, blocks, atime, mtime, ctime = self.unpack(_ATTR)
        return Attr(
            mode=mode,
            nlink=nlink,
            uid=uid,
            gid=gid,
            size=size,
            blocks=blocks,
            atime_ns=atime,
            mtime_ns=mtime,
            ctime_ns=ctime,
        )


_U32 = struct.Struct(">I")
_NUMBERS = {"I": _U32, "Q": struct.Struct(">Q"), "q": struct.Struct(">q")}
_STATFS_FIELDS = ("bsize", "frsize", "blocks", "bfree", "bavail", "files", "ffree", "namemax")


def decode_frame(code: int, request_id: int, body: memoryview, *, owned: bool = False) -> Frame:
    """One frame's header values and body into a Request or Reply; with ``owned`` (the
    body is a buffer nobody reuses) ``d`` fields are views into it, else copies."""
    try:
        op = Op(code & ~REPLY)
    except ValueError:
        raise ProtocolViolation(f"unknown op {code & ~REPLY}") from None
    reader = _Reader(body, owned=owned)
    if code & REPLY:
        (errno,) = struct.unpack(">H", reader.take(2))
        values: tuple[Any, ...] = ()
        if errno == 0:
            values = tuple(reader.field(kind) for kind in SCHEMAS[op][1])
        frame: Frame = Reply(id=request_id, op=op, errno=errno, values=values)
    else:
        args = tuple(reader.field(kind) for kind in SCHEMAS[op][0])
        frame = Request(id=request_id, op=op, args=args)
    if reader.pos != len(body):
        raise ProtocolViolation(f"{len(body) - reader.pos} bytes after the fields of {op.name}")
    return frame


class FrameDecoder:
    """Bytes in, frames out; raises ProtocolViolation once the stream is not this
    protocol (after which it must not be fed again).

    Small frames collect in one shared buffer. A frame of ``BIG_FRAME`` bytes or more
    gets a buffer of its own as soon as its header is known: what arrives is copied
    there once, and the frame's ``d`` field is a view into it (no second copy)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._big: bytearray | None = None  # the body of the large frame being gathered
        self._filled = 0
        self._big_header: tuple[int, int] = (0, 0)  # its op code and request id

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._big is not None and not self._buffer:
            n = min(len(data), len(self._big) - self._filled)
            self._big[self._filled : self._filled + n] = memoryview(data)[:n]
            self._filled += n
            data = memoryview(data)[n:]
        if data:
            self._buffer += data

    def space(self) -> memoryview | None:
        """Where the next bytes go, when a large frame is being gathered: a reader may
        receive straight into it (``recv_into``) and call ``filled``, instead of
        ``feed``; None when bytes must come through ``feed``."""
        if self._big is None or self._buffer:
            return None
        return memoryview(self._big)[self._filled :]

    def filled(self, n: int) -> None:
        """``n`` bytes were written at the start of ``space()``."""
        assert self._big is not None and 0 <= n <= len(self._big) - self._filled
        self._filled += n

    def frames(self) -> Iterator[Frame]:
        while True:
            if self._big is not None:
                if self._filled < len(self._big):
                    return
                gathered, self._big = self._big, None
                yield decode_frame(*self._big_header, memoryview(gathered), owned=True)
                continue  # what came after it waits in the shared buffer
            if len(self._buffer) < _HEADER.size:
                return
            length, code, request_id = _HEADER.unpack_from(self._buffer)
            if length < 5 or length > self.max_frame:
                raise ProtocolViolation(f"frame length {length} outside 5..{self.max_frame}")
            end = 4 + length
            if length >= BIG_FRAME:
                # Its own buffer from now on; what is here already moves there once.
                self._big = bytearray(length - 5)
                self._big_header = (code, request_id)
                self._filled = 0
                rest = self._buffer_take()
                self.feed(memoryview(rest)[_HEADER.size :])
                continue
            if len(self._buffer) < end:
                return
            with memoryview(self._buffer) as view:
                body = view[_HEADER.size : end]
                try:
                    frame = decode_frame(code, request_id, body)
                finally:
                    body.release()
            del self._buffer[:end]
            yield frame

    def _buffer_take(self) -> bytearray:
        taken, self._buffer = self._buffer, bytearray()
        return taken


def entry_size(name: bytes) -> int:
    """Bytes one directory entry takes in a READDIR reply."""
    return 4 + len(name) + _ATTR.size


def join(parent: bytes, name: bytes) -> bytes:
    return name if not parent else parent + b"/" + name


class BadPath(ValueError):
    """A path with ``..``, ``.``, an empty component or NUL: answered with EINVAL."""


def split_path(path: bytes) -> tuple[bytes, ...]:
    """The components of a protocol path; BadPath for ``..``, ``.``, empty components
    or NUL (the server never resolves them: confinement starts here)."""
    if not path:
        return ()
    parts = tuple(path.split(b"/"))
    for part in parts:
        if part in (b"", b".", b"..") or b"\0" in part:
            raise BadPath(f"bad path component {part!r}")
    return parts
