"""Small stream helpers: sniffing a caller's first bytes, replaying them, teeing a copy.

A routing decision needs the first bytes of a connection (RFC 9112 §3 request line, RFC
9113 §3.4 preface) before any upstream is chosen; the bytes read for it are replayed to
whichever upstream wins, so the upstream sees the caller's stream unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import trio

from tpengine.splice import reset

from ._http1 import looks_like_http1

#: RFC 9113 §3.4: the client connection preface of HTTP/2 (with prior knowledge, §3.3).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Longest HTTP method we accept, plus the space after it (looks_like_http1).
_METHOD_LIMIT = 17
#: Protocols where the server speaks first (SMTP, MySQL) send nothing: after this long
#: without bytes the connection is taken as "not HTTP" and goes to the app.
SNIFF_TIMEOUT = 1.0


class Sniffed(enum.Enum):
    HTTP1 = "http/1"
    H2C = "h2c"
    OTHER = "other"


def classify(data: bytes) -> Sniffed | None:
    """What ``data`` (the first bytes of a connection) is, or None to read more."""
    if not data:
        return None
    if H2_PREFACE.startswith(data[: len(H2_PREFACE)]):
        return Sniffed.H2C if len(data) >= len(H2_PREFACE) else None
    if b" " in data[:_METHOD_LIMIT]:
        return Sniffed.HTTP1 if looks_like_http1(data) else Sniffed.OTHER
    return None if len(data) < _METHOD_LIMIT else Sniffed.OTHER


async def sniff(stream: trio.abc.Stream, patience: float = SNIFF_TIMEOUT) -> tuple[Sniffed, bytes]:
    """Read until the first bytes say what the caller speaks; return them with the verdict.
    EOF, silence or a broken caller give OTHER with whatever arrived."""
    data = b""
    with trio.move_on_after(patience):
        while (verdict := classify(data)) is None:
            try:
                chunk = await stream.receive_some(4096)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            if not chunk:
                break
            data += chunk
        else:
            return verdict, data
    return Sniffed.OTHER, data


class ReplayStream(trio.abc.HalfCloseableStream):
    """``inner`` with ``prefix`` read first; every chunk read is also given to ``tap``."""

    def __init__(
        self,
        inner: trio.abc.Stream,
        prefix: bytes = b"",
        tap: Callable[[bytes], None] | None = None,
    ) -> None:
        self.inner = inner
        self.prefix = prefix
        self.tap = tap

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.prefix:
            await trio.lowlevel.checkpoint()
            cut = len(self.prefix) if max_bytes is None else max_bytes
            data, self.prefix = self.prefix[:cut], self.prefix[cut:]
        else:
            data = bytes(await self.inner.receive_some(max_bytes))
        if data and self.tap is not None:
            self.tap(data)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if isinstance(self.inner, trio.abc.HalfCloseableStream):
            await self.inner.send_eof()
        else:
            await self.inner.aclose()

    async def reset(self, message: str = "") -> None:
        await reset(self.inner)

    async def aclose(self) -> None:
        await self.inner.aclose()
