"""Relaying a dial from one tunnel to another: agent → client for intercepts, client →
agent for ``--to-pod``. The second tunnel's answer (accepted, refused, unreachable) is
passed back as it is, so the original dialer learns the truth."""

from __future__ import annotations

import trio

from tpengine.splice import splice
from tpengine.tunnel import (
    DialRejected,
    IncomingDial,
    MuxDatagramFlow,
    MuxSession,
    Proto,
    RejectReason,
    TunnelError,
)


async def relay_dial(dial: IncomingDial, target: MuxSession, host: str, port: int) -> None:
    proto = "udp" if dial.destination.proto is Proto.UDP else "tcp"
    try:
        other = await target.open_stream(host, port, proto)  # type: ignore[call-overload]
    except DialRejected as exc:
        await dial.reject(exc.reason, exc.message)
        return
    except (TunnelError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        await dial.reject(RejectReason.UNREACHABLE, f"the other end's tunnel is gone: {exc}")
        return
    try:
        mine = await dial.accept()
    except BaseException:
        with trio.CancelScope(shield=True):
            await other.aclose()
        raise
    if isinstance(mine, MuxDatagramFlow):
        assert isinstance(other, MuxDatagramFlow)
        await _relay_datagrams(mine, other)
    else:
        await splice(mine, other)


async def _relay_datagrams(a: MuxDatagramFlow, b: MuxDatagramFlow) -> None:
    async def pump(source: MuxDatagramFlow, sink: MuxDatagramFlow, done: trio.CancelScope) -> None:
        try:
            async for datagram in source:
                sink.send_nowait(datagram)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, a, b, nursery.cancel_scope)
            nursery.start_soon(pump, b, a, nursery.cancel_scope)
    finally:
        with trio.CancelScope(shield=True):
            await a.aclose()
            await b.aclose()
