"""UDP agent ports: each caller address is a flow, relayed to the app or to the client
that took the port (an unfiltered intercept or a replace), replies sent back from the
agent port. HTTP filters and wiretaps do not apply to UDP (there is no request)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from tpengine.tunnel import DialRejected, TunnelClosed

from ._config import PortSpec

if TYPE_CHECKING:
    from ._agent import Agent

log = logging.getLogger(__name__)

UDP_IDLE = 60.0
QUEUE = 64


async def serve_udp_port(
    agent: Agent, spec: PortSpec, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind((agent.listen_host, spec.agent_port))
        task_status.started(sock.getsockname()[1])
        flows: dict[Any, trio.MemorySendChannel[bytes]] = {}
        async with trio.open_nursery() as nursery:
            while True:
                data, source = await sock.recvfrom(65536)
                channel = flows.get(source)
                if channel is None:
                    channel, inbox = trio.open_memory_channel[bytes](QUEUE)
                    flows[source] = channel
                    nursery.start_soon(_flow, agent, spec, sock, source, inbox, flows)
                try:
                    channel.send_nowait(data)
                except (trio.WouldBlock, trio.BrokenResourceError):
                    pass  # UDP: dropped when the flow cannot keep up


async def _flow(
    agent: Agent,
    spec: PortSpec,
    sock: trio.socket.SocketType,
    source: Any,
    inbox: trio.MemoryReceiveChannel[bytes],
    flows: dict[Any, trio.MemorySendChannel[bytes]],
) -> None:
    try:
        with trio.CancelScope(deadline=trio.current_time() + UDP_IDLE) as scope:
            plan = agent.plan(spec.app_port)
            if plan.takeover is not None and agent.mux is not None:
                eng = plan.takeover
                host, port = eng.target(spec.app_port)
                flow = await agent.mux.open_stream(
                    host, port, "udp", tag=b"session:" + eng.session_id.encode()
                )
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_pump_in, inbox, flow.send, scope)
                        async for reply in flow:
                            scope.deadline = trio.current_time() + UDP_IDLE
                            await sock.sendto(reply, source)
                finally:
                    await flow.aclose()
            else:
                upstream = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
                with upstream:
                    await upstream.connect((agent.app_host, spec.app_port))
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_pump_in, inbox, upstream.send, scope)
                        while True:
                            try:
                                reply = await upstream.recv(65536)
                            except OSError:
                                await trio.sleep(0.05)
                                continue
                            scope.deadline = trio.current_time() + UDP_IDLE
                            await sock.sendto(reply, source)
    except (OSError, DialRejected, TunnelClosed, trio.BrokenResourceError) as exc:
        log.info("udp flow from %s on port %d ended: %s", source, spec.agent_port, exc)
    finally:
        flows.pop(source, None)
        inbox.close()


async def _pump_in(
    inbox: trio.MemoryReceiveChannel[bytes], send: Any, scope: trio.CancelScope
) -> None:
    async for data in inbox:
        scope.deadline = trio.current_time() + UDP_IDLE
        try:
            await send(data)
        except OSError:
            pass
