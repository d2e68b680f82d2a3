"""Linux namespace primitives through ctypes (Python 3.11 has no ``os.setns``).

``in_netns`` runs a blocking function on a fresh worker thread whose network namespace
was switched with setns(2): the namespace is a per-thread attribute, so the rest of the
process (and the trio thread) stays where it was. Sockets created on that thread belong
to the target namespace for their whole life, and may then be used from anywhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
from collections.abc import Callable
from typing import TypeVar

import trio

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

T = TypeVar("T")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2) on the calling thread."""
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def netns_path(name_or_path: str) -> str:
    """A named netns (``ip netns`` style, under /run/netns) or an explicit ns file path."""
    return name_or_path if name_or_path.startswith("/") else f"/run/netns/{name_or_path}"


def _run_in_netns(path: str, fn: Callable[[], T]) -> T:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, CLONE_NEWNET)
    finally:
        os.close(fd)
    return fn()


def call_in_netns(path: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a new OS thread inside the netns at ``path`` and return its result."""
    result: list[T] = []
    error: list[BaseException] = []

    def worker() -> None:
        try:
            result.append(_run_in_netns(path, fn))
        except BaseException as exc:  # handed back to the caller's thread
            error.append(exc)

    import threading

    thread = threading.Thread(target=worker, name="setns-worker", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def connect_in_netns(
    path: str, host: str, port: int, *, connect_timeout: float = 5.0
) -> socket.socket:
    """A connected TCP socket made inside the netns at ``path`` (blocking work off-thread)."""

    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(connect_timeout)
            sock.connect((host, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    return await trio.to_thread.run_sync(call_in_netns, path, connect, abandon_on_cancel=True)


def socket_in_netns(path: str, family: int, kind: int) -> socket.socket:
    """An unconnected socket created inside the netns at ``path``."""
    return call_in_netns(path, lambda: socket.socket(family, kind))
