"""``--to-pod``: the engaging client's localhost:PORT forwarded to the pod's localhost.

The manager relays the client's dial to the agent with host ``127.0.0.1`` (or
``localhost``) and a port; the agent shares the pod's network namespace, so connecting
there reaches a sidecar or the app. The dial is rejected with the truthful reason
(REFUSED when nothing listens, UNREACHABLE otherwise), and only loopback is served: the
agent is not a general proxy into the cluster (the manager is).
"""

from __future__ import annotations

import errno
import logging

import trio

from tpengine.splice import splice
from tpengine.tunnel import IncomingDial, MuxDatagramFlow, Proto, RejectReason

log = logging.getLogger(__name__)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: A UDP flow with no datagram either way for this long is closed (as conntrack does).
UDP_IDLE = 60.0


async def serve_pod_dial(
    dial: IncomingDial, app_host: str = "127.0.0.1", also: tuple[str, ...] = ()
) -> None:
    """Serve one dial from the manager; ``also`` are more addresses of the pod itself
    (its IP), served like localhost."""
    dest = dial.destination
    if dest.host not in LOOPBACK and (not dest.host or dest.host not in also):
        await dial.reject(
            RejectReason.FORBIDDEN, f"the agent forwards only to localhost, not {dest.host}"
        )
        return
    host = "::1" if dest.host == "::1" else app_host
    if dest.proto is Proto.UDP:
        await _serve_udp(dial, host)
        return
    try:
        upstream = await trio.open_tcp_stream(host, dest.port)
    except OSError as exc:
        reason = RejectReason.REFUSED if _refused(exc) else RejectReason.UNREACHABLE
        await dial.reject(reason, f"{dest.host}:{dest.port} in the pod: {exc}")
        return
    stream = await dial.accept_stream()
    log.info("to-pod tcp %s:%d", dest.host, dest.port)
    await splice(stream, upstream)


def _refused(exc: BaseException) -> bool:
    """trio raises one OSError for all addresses tried, the real errors in its cause."""
    if isinstance(exc, ConnectionRefusedError):
        return True
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        return all(_refused(inner) for inner in cause.exceptions)
    return cause is not None and _refused(cause)


async def _serve_udp(dial: IncomingDial, host: str) -> None:
    family = trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
    with sock:
        try:
            await sock.connect((host, dial.destination.port))
        except OSError as exc:
            await dial.reject(
                RejectReason.UNREACHABLE, f"udp {host}:{dial.destination.port}: {exc}"
            )
            return
        flow = await dial.accept_flow()
        log.info("to-pod udp %s:%d", host, dial.destination.port)
        await relay_datagrams(flow, sock)


async def relay_datagrams(flow: MuxDatagramFlow, sock: trio.socket.SocketType) -> None:
    """Datagrams both ways between a tunnel flow and a connected UDP socket, until the
    flow ends or both sides are idle for UDP_IDLE."""
    idle = trio.CancelScope(deadline=trio.current_time() + UDP_IDLE)

    async def outbound(done: trio.CancelScope) -> None:
        async for datagram in flow:
            idle.deadline = trio.current_time() + UDP_IDLE
            try:
                await sock.send(datagram)
            except OSError as exc:  # ICMP port unreachable from an earlier send, say
                if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                    raise
        done.cancel()

    async def inbound() -> None:
        while True:
            try:
                data = await sock.recv(65536)
            except OSError:
                await trio.sleep(0.05)  # ECONNREFUSED: nothing listens (yet); keep going
                continue
            idle.deadline = trio.current_time() + UDP_IDLE
            try:
                flow.send_nowait(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    with idle:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbound, nursery.cancel_scope)
            nursery.start_soon(inbound)
    await flow.aclose()
