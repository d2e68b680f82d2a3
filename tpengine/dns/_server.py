"""trio drivers: serve a :class:`Resolver` over UDP and TCP, and forward upstream."""

from __future__ import annotations

import errno
import logging
import socket
import struct
from collections.abc import Sequence

import dns.flags
import dns.message
import trio

from tpengine.dns._resolver import Resolver, UpstreamError

log = logging.getLogger(__name__)

#: At most this many queries are answered at once; beyond it new UDP queries are dropped
#: (the client retries), so a flood cannot grow memory without bound.
MAX_INFLIGHT = 512
_TCP_IDLE_TIMEOUT = 10.0


async def serve_dns(
    resolver: Resolver,
    host: str,
    port: int = 53,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer queries on ``host:port`` over UDP and TCP (RFC 1035 §4.2) until cancelled.
    Port 0 picks a free port, the same for both."""
    for attempt in range(_PICK_ATTEMPTS if port == 0 else 1):
        try:
            udp, tcp = _bind_pair(host, port)
        except OSError as exc:
            # The port UDP got may be a TCP connection's already: pick again.
            if exc.errno != errno.EADDRINUSE or attempt == _PICK_ATTEMPTS - 1 or port:
                raise
            continue
        break
    await serve_dns_on(resolver, udp, tcp, task_status=task_status)


_PICK_ATTEMPTS = 20


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp.bind((host, port))
        tcp.bind((host, udp.getsockname()[1]))
        tcp.listen(64)
    except OSError:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


async def serve_dns_on(
    resolver: Resolver,
    udp_socket: socket.socket,
    tcp_socket: socket.socket,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on sockets bound elsewhere (port 53 is privileged: the helper binds them)."""
    udp = trio.socket.from_stdlib_socket(udp_socket)
    tcp = trio.socket.from_stdlib_socket(tcp_socket)
    bound = udp.getsockname()
    with udp, tcp:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve_udp, resolver, udp)
            nursery.start_soon(
                trio.serve_listeners,
                lambda stream: _serve_tcp_client(resolver, stream),
                [trio.SocketListener(tcp)],
            )
            task_status.started((bound[0], bound[1]))


async def _serve_udp(resolver: Resolver, sock: trio.socket.SocketType) -> None:
    slots = trio.Semaphore(MAX_INFLIGHT)
    async with trio.open_nursery() as nursery:
        while True:
            data, peer = await sock.recvfrom(65535)
            try:
                slots.acquire_nowait()
            except trio.WouldBlock:
                continue
            nursery.start_soon(_answer_udp, resolver, sock, data, peer, slots)


async def _answer_udp(
    resolver: Resolver,
    sock: trio.socket.SocketType,
    data: bytes,
    peer: tuple[str, int],
    slots: trio.Semaphore,
) -> None:
    try:
        reply = await resolver.answer(data)
        if reply is not None:
            await sock.sendto(_truncate_for_udp(reply), peer)
    except OSError as exc:
        log.debug("dns: cannot answer %s: %s", peer, exc)
    finally:
        slots.release()


def _truncate_for_udp(reply: bytes, limit: int = 1232) -> bytes:
    """Replies over ``limit`` keep only their question, with TC set (RFC 1035 §4.2.1;
    1232 is the DNS Flag Day 2020 EDNS size); the client retries over TCP."""
    if len(reply) <= limit:
        return reply
    message = dns.message.from_wire(reply)
    message.answer.clear()
    message.authority.clear()
    message.additional.clear()
    message.flags |= dns.flags.TC
    return message.to_wire()


async def _serve_tcp_client(resolver: Resolver, stream: trio.SocketStream) -> None:
    buffer = bytearray()
    async with stream:
        try:
            while True:
                with trio.move_on_after(_TCP_IDLE_TIMEOUT):
                    chunk = await stream.receive_some(65536)
                if not chunk:  # closed or idle
                    return
                buffer += chunk
                while len(buffer) >= 2:
                    (length,) = struct.unpack_from("!H", buffer)
                    if len(buffer) < 2 + length:
                        break
                    query = bytes(buffer[2 : 2 + length])
                    del buffer[: 2 + length]
                    reply = await resolver.answer(query)
                    if reply is None:
                        return
                    await stream.send_all(struct.pack("!H", len(reply)) + reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


class UdpUpstream:
    """Forwards a query to the previous resolvers in order, over UDP, then TCP when the
    reply is truncated (RFC 7766 §5)."""

    def __init__(self, servers: Sequence[str], *, port: int = 53, timeout: float = 2.0) -> None:
        if not servers:
            raise ValueError("no upstream DNS servers")
        self.servers = tuple(servers)
        self.port = port
        self.timeout = timeout

    async def __call__(self, wire: bytes) -> bytes:
        for server in self.servers:
            try:
                reply = await self._udp(server, wire)
                if reply is not None and struct.unpack_from("!H", reply, 2)[0] & 0x0200:
                    reply = await self._tcp(server, wire)
                if reply is not None:
                    return reply
            except OSError as exc:
                log.debug("dns: upstream %s failed: %s", server, exc)
        raise UpstreamError(f"no answer from {', '.join(self.servers)}")

    async def _udp(self, server: str, wire: bytes) -> bytes | None:
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
            await sock.connect((server, self.port))
            await sock.send(wire)
            with trio.move_on_after(self.timeout):
                while True:
                    reply = await sock.recv(65535)
                    if len(reply) >= 12 and reply[:2] == wire[:2]:
                        return reply
        return None

    async def _tcp(self, server: str, wire: bytes) -> bytes | None:
        with trio.move_on_after(self.timeout):
            stream = await trio.open_tcp_stream(server, self.port)
            async with stream:
                await stream.send_all(struct.pack("!H", len(wire)) + wire)
                data = b""
                while len(data) < 2 or len(data) < 2 + struct.unpack_from("!H", data)[0]:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return None
                    data += chunk
                return data[2 : 2 + struct.unpack_from("!H", data)[0]]
        return None
