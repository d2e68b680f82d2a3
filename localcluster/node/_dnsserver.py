"""A small authoritative DNS server driver: UDP and TCP on one address (trio).

The answering is a plain function ``answer(query) -> response`` (dnspython messages),
so it is tested without sockets. Malformed queries get FORMERR when the header can be
read and are dropped otherwise (RFC 1035 §4.1.1); nothing is ever forwarded upstream.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import trio

log = logging.getLogger(__name__)

Answerer = Callable[[dns.message.Message], dns.message.Message]
UDP_LIMIT = 512


def respond(wire: bytes, answer: Answerer, *, udp: bool) -> bytes | None:
    """The reply to one query datagram/message, or None to drop it."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        if len(wire) < 12:
            return None
        # Echo the id with FORMERR (RFC 1035 §4.1.1: "Format error").
        qid = struct.unpack("!H", wire[:2])[0]
        return struct.pack("!HHHHHH", qid, 0x8000 | dns.rcode.FORMERR, 0, 0, 0, 0)
    if query.flags & dns.flags.QR:
        return None
    try:
        reply = answer(query)
    except Exception:  # a bug in one answer must not stop the server
        log.exception("answering %s", query.question)
        reply = dns.message.make_response(query)
        reply.set_rcode(dns.rcode.SERVFAIL)
    limit = max(UDP_LIMIT, query.payload) if udp else 65535
    try:
        return reply.to_wire(max_size=limit)
    except dns.exception.TooBig:
        # RFC 1035 §4.2.1: truncate and set TC so the client retries over TCP.
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.TC
        return reply.to_wire()


async def serve_udp(sock: trio.socket.SocketType, answer: Answerer) -> None:
    while True:
        data, peer = await sock.recvfrom(65535)
        reply = respond(data, answer, udp=True)
        if reply is not None:
            try:
                await sock.sendto(reply, peer)
            except OSError:
                pass


async def _tcp_conn(stream: trio.SocketStream, answer: Answerer) -> None:
    buf = bytearray()
    async with stream:
        with trio.move_on_after(30):
            while True:
                while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                    size = struct.unpack("!H", buf[:2])[0]
                    wire, buf = bytes(buf[2 : 2 + size]), buf[2 + size :]
                    reply = respond(wire, answer, udp=False)
                    if reply is None:
                        return
                    await stream.send_all(struct.pack("!H", len(reply)) + reply)
                try:
                    data = await stream.receive_some(65535)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return
                buf += data


async def serve_dns(
    host: str,
    port: int,
    answer: Answerer,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``answer`` on host:port over UDP and TCP until cancelled."""
    udp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await udp.bind((host, port))
    listeners = await trio.open_tcp_listeners(port, host=host)
    with udp:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_udp, udp, answer)
            await nursery.start(trio.serve_listeners, lambda s: _tcp_conn(s, answer), listeners)
            task_status.started()
