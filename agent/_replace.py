"""While a ``replace`` holds an app port, the agent also listens on the app's own port.

The manager removes the app container for a replace, which frees its ports in the pod's
network namespace; a sidecar calling ``localhost:APP_PORT`` would otherwise find nothing
there (symbolic target ports have no REDIRECT rule). So for every TCP app port taken by
a replace, the agent binds that port too and routes what arrives like its own port's
traffic (to the replacing client). While the app is still there (its container not yet
gone) the port is busy: the agent retries until it is free, and lets go when the replace
ends.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from ._config import PortSpec

if TYPE_CHECKING:
    from ._agent import Agent

log = logging.getLogger(__name__)

RETRY = 1.0

Handler = Callable[..., Awaitable[None]]


async def serve_replaced_ports(agent: Agent, handler: Handler) -> None:
    """Keep one listener per replaced TCP app port, following the engagements."""
    running: dict[int, trio.CancelScope] = {}
    specs = {spec.app_port: spec for spec in agent.config.ports if spec.protocol == "TCP"}
    async with trio.open_nursery() as nursery:
        while True:
            wanted = {
                port
                for eng in agent.engagements
                if eng.kind == "replace"
                for port in eng.ports
                if port in specs
            }
            for port in set(running) - wanted:
                running.pop(port).cancel()
                log.info("replace of port %d ended: the app's port is let go", port)
            for port in wanted - set(running):
                scope = running[port] = trio.CancelScope()
                nursery.start_soon(_listen, agent, specs[port], handler, scope)
            await agent.wait_changed()


async def _listen(agent: Agent, spec: PortSpec, handler: Handler, scope: trio.CancelScope) -> None:
    with scope:
        while True:
            try:
                listeners = await trio.open_tcp_listeners(spec.app_port, host=agent.listen_host)
                break
            except OSError as exc:  # the app still holds it (or a low port needs a capability)
                log.info("replace: cannot listen on the app's port %d yet: %s", spec.app_port, exc)
                await trio.sleep(RETRY)
        log.info("replace: listening on the app's port %d too", spec.app_port)
        await trio.serve_listeners(functools.partial(handler, spec=spec), listeners)
