"""Outbound connections from inside the cluster, with failures reported truthfully.

The engine accepts or refuses the laptop app's SYN by what the dial here returned, so an
app sees "connection refused" at once for a closed port and "no route to host" for an
address nobody answers — as it would inside the cluster — instead of a hang.
"""

from __future__ import annotations

import enum
import errno
import socket
from dataclasses import dataclass

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


def _literal(host: str, port: int) -> list[tuple[int, int, int, str, tuple[str, int]]]:
    """The one address of an IP literal (most dials: the laptop's TUN saw an address),
    without getaddrinfo's machinery; [] for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
    return []


async def dial_tcp(host: str, port: int, *, connect_timeout: float = 10.0) -> trio.SocketStream:
    """Connect to ``host:port`` (an IP or a cluster DNS name) or raise :class:`DialError`.

    The addresses of a name are tried in order; the first failure's errno decides what the
    app sees when none connects.
    """
    try:
        with trio.fail_after(connect_timeout):
            infos = _literal(host, port) or await trio.socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
            first_error: OSError | None = None
            for family, kind, proto, _, address in infos:
                sock = trio.socket.socket(family, kind, proto)
                try:
                    await sock.connect(address)
                except OSError as exc:
                    sock.close()
                    first_error = first_error or exc
                    continue
                except BaseException:
                    sock.close()
                    raise
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
                return trio.SocketStream(sock)
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
