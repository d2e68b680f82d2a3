"""``--to-pod PORT[/UDP]``: the laptop's localhost:PORT reaches the engaged pod's
localhost:PORT (its sidecars), through the manager and the pod's traffic-agent.

TCP: one listener on 127.0.0.1:PORT; each accepted connection dials the agent (tag
``agent:NS/POD``) and is spliced; a refused dial resets the local connection, as the
pod's own refusal would. UDP: one socket bound to 127.0.0.1:PORT; each local peer
(address, port) gets its own tunnel flow, so replies go back to the peer that asked, and a
flow with no datagram either way for ``UDP_IDLE`` seconds is closed (as conntrack
expires UDP "connections"). Nothing listens on a wildcard address.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from tpengine.engine._topod_spec import ToPodError, ToPodPort
from tpengine.splice import reset, splice
from tpengine.tunnel import MuxDatagramFlow, MuxStream, TunnelError

log = logging.getLogger("tp-engine")

UDP_IDLE = 60.0
LOCALHOST = "127.0.0.1"

#: Dial the pod's localhost: (port, "tcp"|"udp") -> the tunnel stream or flow.
DialPod = Callable[[int, str], Awaitable[MuxStream | MuxDatagramFlow]]


async def open_to_pod_sockets(
    ports: list[ToPodPort],
) -> list[tuple[ToPodPort, trio.SocketListener | trio.socket.SocketType]]:
    """Bind every port first, so a taken port fails the engagement before anything runs."""
    bound: list[tuple[ToPodPort, trio.SocketListener | trio.socket.SocketType]] = []
    try:
        for spec in ports:
            try:
                if spec.protocol == "TCP":
                    [listener] = await trio.open_tcp_listeners(spec.port, host=LOCALHOST)
                    bound.append((spec, listener))
                else:
                    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
                    bound.append((spec, sock))
                    await sock.bind((LOCALHOST, spec.port))
            except OSError as exc:
                raise ToPodError(f"--to-pod {spec}: {exc.strerror}") from None
    except BaseException:
        for _, item in bound:
            if isinstance(item, trio.SocketListener):
                await item.aclose()
            else:
                item.close()
        raise
    return bound


async def serve_to_pod(
    bound: list[tuple[ToPodPort, trio.SocketListener | trio.socket.SocketType]], dial: DialPod
) -> None:
    """Serve every bound port until cancelled; closes them on the way out."""
    async with trio.open_nursery() as nursery:
        for spec, item in bound:
            if isinstance(item, trio.SocketListener):
                nursery.start_soon(_serve_tcp, item, spec.port, dial)
            else:
                nursery.start_soon(_serve_udp, item, spec.port, dial)


async def _serve_tcp(listener: trio.SocketListener, port: int, dial: DialPod) -> None:
    async def forward(local: trio.SocketStream) -> None:
        try:
            remote = await dial(port, "tcp")
        except (TunnelError, trio.BrokenResourceError) as exc:
            log.info("--to-pod %d: %s", port, exc)
            await reset(local)
            return
        assert isinstance(remote, MuxStream)
        await splice(local, remote)

    await trio.serve_listeners(forward, [listener])


async def _serve_udp(sock: trio.socket.SocketType, port: int, dial: DialPod) -> None:
    flows: dict[tuple[str, int], tuple[MuxDatagramFlow, trio.CancelScope]] = {}
    with sock:
        async with trio.open_nursery() as nursery:
            while True:
                data, peer = await sock.recvfrom(65535)
                entry = flows.get(peer)
                if entry is None:
                    try:
                        flow = await dial(port, "udp")
                    except (TunnelError, trio.BrokenResourceError) as exc:
                        log.info("--to-pod %d/UDP from %s: %s", port, peer, exc)
                        continue  # UDP has no refusal to give back; the datagram is lost
                    assert isinstance(flow, MuxDatagramFlow)
                    entry = flows[peer] = (flow, trio.CancelScope())
                    nursery.start_soon(_replies, sock, peer, entry, flows)
                flow, scope = entry
                scope.deadline = trio.current_time() + UDP_IDLE
                try:
                    flow.send_nowait(data)  # a full flow drops, as a congested link would
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    scope.cancel()


async def _replies(
    sock: trio.socket.SocketType,
    peer: tuple[str, int],
    entry: tuple[MuxDatagramFlow, trio.CancelScope],
    flows: dict[tuple[str, int], tuple[MuxDatagramFlow, trio.CancelScope]],
) -> None:
    """The pod's datagrams back to ``peer`` until the flow ends or idles out."""
    flow, scope = entry
    try:
        with scope:
            scope.deadline = trio.current_time() + UDP_IDLE
            async for datagram in flow:
                scope.deadline = trio.current_time() + UDP_IDLE
                try:
                    await sock.sendto(datagram, peer)
                except OSError:
                    pass  # the local peer went away; its next datagram opens a new flow
    finally:
        if flows.get(peer) is entry:
            del flows[peer]
        with trio.CancelScope(shield=True):
            await flow.aclose()
