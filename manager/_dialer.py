"""Outbound connections from inside the cluster, with failures reported truthfully.

The engine accepts or refuses the laptop app's SYN by what the dial here returned, so an
app sees "connection refused" at once for a closed port and "no route to host" for an
address nobody answers — as it would inside the cluster — instead of a hang.
"""

from __future__ import annotations

import enum
import errno
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio


class DialFailure(enum.Enum):
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"


@dataclass(frozen=True, kw_only=True)
class DialError(Exception):
    failure: DialFailure
    message: str

    def __str__(self) -> str:
        return f"{self.failure.value}: {self.message}"


_UNREACHABLE_ERRNOS = {
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EHOSTDOWN,
    errno.ENETDOWN,
    errno.EADDRNOTAVAIL,
}


def classify_os_error(exc: OSError) -> DialFailure:
    """Map a connect(2) error to what the app should see."""
    if exc.errno == errno.ECONNREFUSED:
        return DialFailure.REFUSED
    if exc.errno == errno.ETIMEDOUT:
        return DialFailure.TIMEOUT
    if exc.errno in _UNREACHABLE_ERRNOS:
        return DialFailure.UNREACHABLE
    return DialFailure.UNREACHABLE


def _literal(host: str, port: int) -> list[tuple[int, int, int, str, Any]]:
    """The one address of an IP literal (most dials: the laptop's TUN saw an address),
    without getaddrinfo's machinery; [] for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
    return []


def _start_connect(family: int, kind: int, proto: int, address: Any) -> tuple[socket.socket, int]:
    """A nonblocking connect(2): the socket and 0 (connected), EINPROGRESS (the handshake
    goes on) or the errno that ended it."""
    sock = socket.socket(family, kind | socket.SOCK_NONBLOCK, proto)
    try:
        # Small request/response messages go out at once (no Nagle delay).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        err = sock.connect_ex(address)
        if err == errno.EINPROGRESS:
            # To a peer on this host (a pod behind a veth, loopback) the kernel has done the
            # whole handshake inside connect(2): then getpeername(2) works (ENOTCONN while
            # SYN-SENT or after a reset, which leaves its errno in SO_ERROR).
            try:
                sock.getpeername()
                err = 0
            except OSError:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or errno.EINPROGRESS
    except BaseException:
        sock.close()
        raise
    return sock, err


async def _connect(
    family: int, kind: int, proto: int, address: Any, deadline: float
) -> socket.socket:
    """Connect or raise OSError (trio.TooSlowError at ``deadline``). Not a checkpoint when
    connect(2) finishes at once; no trio socket calls, whose per-call address
    normalisation and extra scheduling pass were most of a dial's cost."""
    sock, err = _start_connect(family, kind, proto, address)
    if err == errno.EINPROGRESS:
        try:
            with trio.fail_at(deadline):
                await trio.lowlevel.wait_writable(sock)
        except BaseException:
            sock.close()
            raise
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        sock.close()
        raise OSError(err, os.strerror(err))
    return sock


async def dial_tcp(host: str, port: int, *, connect_timeout: float = 10.0) -> trio.SocketStream:
    """Connect to ``host:port`` (an IP or a cluster DNS name) or raise :class:`DialError`.

    The addresses of a name are tried in order; the first failure's errno decides what the
    app sees when none connects. ``connect_timeout`` covers the name lookup and all tries.
    """
    sock = await dial_tcp_socket(host, port, connect_timeout=connect_timeout)
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


async def dial_tcp_socket(host: str, port: int, *, connect_timeout: float = 10.0) -> socket.socket:
    """:func:`dial_tcp`, giving the connected nonblocking stdlib socket (for
    ``tpengine.splice.splice_socket``: no trio socket objects per relayed connection)."""
    deadline = trio.current_time() + connect_timeout
    try:
        infos: Sequence[tuple[int, int, int, str, Any]] = _literal(host, port)
        if not infos:
            with trio.fail_at(deadline):
                infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        first_error: OSError | None = None
        for family, kind, proto, _, address in infos:
            try:
                return await _connect(family, kind, proto, address, deadline)
            except OSError as exc:
                first_error = first_error or exc
    except trio.TooSlowError:
        raise DialError(
            failure=DialFailure.TIMEOUT,
            message=f"{host}:{port} did not answer in {connect_timeout:g} s",
        ) from None
    except socket.gaierror as exc:
        raise DialError(
            failure=DialFailure.UNREACHABLE, message=f"{host}: {exc.strerror}"
        ) from None
    assert first_error is not None  # getaddrinfo never returns an empty list
    raise DialError(
        failure=classify_os_error(first_error), message=f"{host}:{port}: {first_error.strerror}"
    )


async def open_udp(host: str, port: int) -> trio.socket.SocketType:
    """A connected UDP socket to ``host:port`` (UDP has no handshake: only a bad address
    fails here; a closed port shows up later as ECONNREFUSED on receive)."""
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise DialError(
            failure=DialFailure.UNREACHABLE, message=f"{host}: {exc.strerror}"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = trio.socket.socket(family, kind, proto)
    try:
        await sock.connect(address)
    except OSError as exc:
        sock.close()
        raise DialError(
            failure=classify_os_error(exc), message=f"{host}:{port}: {exc.strerror}"
        ) from None
    return sock
