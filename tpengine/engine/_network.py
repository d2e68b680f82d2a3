"""The TUN data path: every connection and flow the laptop's apps open towards cluster
addresses becomes a tunnel stream to the manager.

A SYN is answered only once the manager's dial has succeeded or failed, so the app sees
what it would see inside the cluster: the handshake completes, "connection refused"
(RST) or "no route to host" (ICMP unreachable).
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio

from tpengine.netstack import Netstack, PendingConnection, UdpFlow
from tpengine.splice import splice
from tpengine.tunnel import DialRejected, MuxDatagramFlow, MuxStream, RejectReason, TunnelError

log = logging.getLogger(__name__)


class Dialer(Protocol):
    async def open_tcp_stream(self, host: str, port: int) -> MuxStream: ...

    async def open_udp(self, host: str, port: int) -> MuxDatagramFlow: ...


async def serve_tun(stack: Netstack, dialer: Dialer) -> None:
    """Bridge every TCP connection and UDP flow of ``stack`` to ``dialer`` until cancelled."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_accept_tcp, stack, dialer, nursery)
        nursery.start_soon(_accept_udp, stack, dialer, nursery)


async def _accept_tcp(stack: Netstack, dialer: Dialer, nursery: trio.Nursery) -> None:
    async for pending in stack.pending_connections():
        nursery.start_soon(_bridge_tcp, pending, dialer)


async def _accept_udp(stack: Netstack, dialer: Dialer, nursery: trio.Nursery) -> None:
    async for flow in stack.udp_flows():
        nursery.start_soon(_bridge_udp, flow, dialer)


async def _bridge_tcp(pending: PendingConnection, dialer: Dialer) -> None:
    host, port = pending.destination
    try:
        remote = await dialer.open_tcp_stream(host, port)
    except DialRejected as exc:
        log.debug("dial %s:%d rejected: %s", host, port, exc)
        if exc.reason in (RejectReason.REFUSED, RejectReason.FORBIDDEN):
            pending.refuse()
        else:
            pending.unreachable()
        return
    except (TunnelError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        log.debug("dial %s:%d failed: %s", host, port, exc)
        pending.unreachable()
        return
    try:
        local = await pending.accept()
    except trio.BrokenResourceError:
        await remote.aclose()
        return
    except BaseException:
        with trio.CancelScope(shield=True):
            await remote.aclose()
        raise
    await splice(local, remote)


async def _bridge_udp(flow: UdpFlow, dialer: Dialer) -> None:
    host, port = flow.destination
    try:
        remote = await dialer.open_udp(host, port)
    except (TunnelError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        log.debug("udp %s:%d failed: %s", host, port, exc)
        flow.close()
        return

    async def outbound(done: trio.CancelScope) -> None:
        try:
            async for datagram in flow:
                remote.send_nowait(datagram)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()

    async def inbound(done: trio.CancelScope) -> None:
        try:
            async for datagram in remote:
                await flow.send(datagram)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbound, nursery.cancel_scope)
            nursery.start_soon(inbound, nursery.cancel_scope)
    finally:
        flow.close()
        with trio.CancelScope(shield=True):
            await remote.aclose()
