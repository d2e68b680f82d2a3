"""The traffic-agent: listeners on the agent ports, routing, and the tunnel to the manager.

Theory of operation. ``Agent.run`` opens every agent port first (the webhook's
readinessProbe is a tcpSocket on the first one, so the pod becomes Ready as soon as the
agent can pass traffic to the app), then keeps a tunnel to the manager: ``agent_arrive``
answers with the current engagements, the ``engagements`` push replaces them whenever
they change. Without a tunnel there are no engagements: everything goes to the app.

Each connection is routed by the engagements of its app port at the time it arrives
(HTTP requests are routed one by one, by the engagements current at each request):
no engagement → the app; an unfiltered intercept or a replace → the client; filtered
intercepts or wiretaps → sniff the first bytes, then HTTP/1.x per request
(``Http1Router``), h2c per stream (``H2Router``), anything else to the app (or the
client that took the port). Wiretap clients get copies that never slow the caller.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable

import trio

from tpengine.fs import VOLUMES_HOST
from tpengine.splice import reset, splice
from tpengine.tunnel import (
    DialRejected,
    IncomingDial,
    MuxConfig,
    MuxSession,
    ReconnectBackoff,
    TunnelClosed,
    open_mux_url,
)

from ._config import AgentConfig, PortSpec
from ._engagements import Engagement, PortPlan, parse_engagements, plan_for
from ._h2c import H2Router
from ._http1 import Http1Router, Route
from ._replace import serve_replaced_ports
from ._streams import ReplayStream, Sniffed, classify, sniff
from ._topod import serve_pod_dial
from ._udp import serve_udp_port
from ._volumes import MOUNTS_ROOT, MountSpec, VolumeServer, serve_volumes
from ._wiretap import FLUSH_TIMEOUT, Copier, CopyStats, HttpCopies

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.25
MAX_BACKOFF = 5.0
ARRIVE_TIMEOUT = 30.0
REPORT_EVERY = 10.0

Connect = Callable[[], Awaitable[trio.abc.Stream]]


class ClientUnreachable(OSError):
    """The engaging client cannot be reached (refused, or no tunnel): 502 or a reset."""


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        listen_host: str = "0.0.0.0",
        app_host: str = "127.0.0.1",
        mux_config: MuxConfig | None = None,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.config = config
        self.listen_host = listen_host
        self.app_host = app_host
        self.mux_config = mux_config
        self.max_backoff = max_backoff
        self.engagements: list[Engagement] = []
        self.mux: MuxSession | None = None
        self.arrivals = 0  # successful agent_arrive calls (one per tunnel)
        self.copy_stats = CopyStats()
        self.bound: dict[tuple[int, str], int] = {}  # (app port, protocol) -> bound port
        self._changed = trio.Event()
        self._reported: dict[str, float] = {}  # engagement id -> when its error was pushed
        self._port_names = {p.name: p.app_port for p in config.ports if p.name}
        self.volumes = VolumeServer(
            [MountSpec(path=p, read_only=ro) for p, ro in config.mounts],
            root=config.mounts_root or MOUNTS_ROOT,
        )

    # -- state ------------------------------------------------------------------------------

    def plan(self, app_port: int) -> PortPlan:
        return plan_for(self.engagements, app_port)

    def _set_engagements(self, engagements: list[Engagement]) -> None:
        if engagements != self.engagements:
            log.info("engagements: %s", [f"{e.kind} {e.id} by {e.client}" for e in engagements])
        self.engagements = engagements
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[Agent], bool]) -> None:
        """Wait until ``predicate(agent)`` holds (tests and status use it)."""
        while not predicate(self):
            await self._changed.wait()

    async def wait_changed(self) -> None:
        """Wait for the next change of the engagements or of the tunnel."""
        await self._changed.wait()

    # -- running ----------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[dict[tuple[int, str], int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            for spec in self.config.ports:
                if spec.protocol == "UDP":
                    port = await nursery.start(serve_udp_port, self, spec)
                else:
                    listeners = await trio.open_tcp_listeners(
                        spec.agent_port, host=self.listen_host
                    )
                    port = listeners[0].socket.getsockname()[1]
                    handler = functools.partial(self._serve_connection, spec=spec)
                    nursery.start_soon(trio.serve_listeners, handler, listeners)
                self.bound[(spec.app_port, spec.protocol)] = port
            first = self.config.ports[0] if self.config.ports else None
            if first is not None and (first.app_port, "TCP") not in self.bound:
                # The webhook's readinessProbe is a tcpSocket on the first agent port;
                # a UDP-only first port still needs something there that accepts.
                listeners = await trio.open_tcp_listeners(first.agent_port, host=self.listen_host)
                nursery.start_soon(trio.serve_listeners, _hang_up, listeners)
            log.info("listening: %s", self.bound)
            task_status.started(dict(self.bound))
            nursery.start_soon(serve_replaced_ports, self, self._serve_connection)
            await self._manager_loop()

    async def _manager_loop(self) -> None:
        backoff = ReconnectBackoff(first=FIRST_BACKOFF, longest=self.max_backoff)
        while True:
            arrivals = self.arrivals
            try:
                async with open_mux_url(
                    self.config.manager_url,
                    config=self.mux_config,
                    dial_handler=self._on_dial,
                ) as mux:
                    await self._serve_tunnel(mux)
            except Exception as exc:
                log.info("tunnel to the manager %s: %s", self.config.manager_url, _why(exc))
            finally:
                self.mux = None
                self._set_engagements([])  # nobody to route to: the app takes it all
            if self.arrivals > arrivals:
                # A tunnel that had arrived was lost (however it ended: a restarted manager
                # closes it or drops it): its successor starts from the shortest wait.
                backoff.connected()
            await trio.sleep(backoff.next_delay(trio.current_time()))

    async def _serve_tunnel(self, mux: MuxSession) -> None:
        # Subscribe before arriving, so a change made right after the reply is not lost.
        async with mux.subscribe("engagements") as pushes:
            with trio.fail_after(ARRIVE_TIMEOUT):  # a manager that never answers is retried
                reply = await mux.request("agent_arrive", self.config.arrive_payload())
            engagements = reply.get("engagements") if isinstance(reply, dict) else None
            self.mux = mux
            self.arrivals += 1
            log.info("arrived at the manager %s", self.config.manager_url)
            self._set_engagements(parse_engagements(engagements or [], self._port_names))
            async for payload in pushes:
                self._set_engagements(parse_engagements(payload, self._port_names))
        # The channel ends when the tunnel closes (or we fell behind): start over.

    async def _on_dial(self, dial: IncomingDial) -> None:
        if dial.destination.host == VOLUMES_HOST:
            # The engaging client's FUSE mount (tp intercept --mount): the app's volumes.
            await serve_volumes(await dial.accept_stream(), self.volumes)
            return
        await serve_pod_dial(dial, self.app_host, also=(self.config.pod_ip,))

    # -- routing ----------------------------------------------------------------------------

    async def _serve_connection(self, caller: trio.SocketStream, *, spec: PortSpec) -> None:
        try:
            await self._route(caller, spec.app_port)
        except Exception:  # one bad connection must never take the agent down
            log.exception("connection on agent port %d failed", spec.agent_port)
        finally:
            with trio.CancelScope(shield=True):
                await caller.aclose()

    async def _route(self, caller: trio.SocketStream, app_port: int) -> None:
        plan = self.plan(app_port)
        if not plan.needs_sniff:
            await self._raw(caller, b"", app_port, plan, copies=[])
            return
        verdict, first = await sniff(caller)
        async with trio.open_nursery() as nursery:
            copiers = {
                eng.id: Copier(
                    f"{eng.id} ({eng.client})", self._client_connect(eng, app_port), self.copy_stats
                )
                for eng in plan.wiretaps
            }
            for copier in copiers.values():
                nursery.start_soon(copier.run)
            try:
                await self._dispatch(caller, verdict, first, app_port, plan, copiers)
            finally:
                for copier in copiers.values():
                    copier.close()
                nursery.cancel_scope.deadline = trio.current_time() + FLUSH_TIMEOUT

    async def _dispatch(
        self,
        caller: trio.SocketStream,
        verdict: Sniffed,
        first: bytes,
        app_port: int,
        plan: PortPlan,
        copiers: dict[str, Copier],
    ) -> None:
        choose = functools.partial(self._choose, app_port)
        if verdict is Sniffed.HTTP1:
            observe = HttpCopies([(e.filter, copiers[e.id]) for e in plan.wiretaps])
            router = Http1Router(
                caller,
                lambda request: choose(request.target, request.headers.raw_items()),
                first,
                observe=observe if plan.wiretaps else None,
            )
            await router.serve()
        elif verdict is Sniffed.H2C:
            tap = HttpCopies([(e.filter, copiers[e.id]) for e in plan.wiretaps])
            await H2Router(caller, choose, first, tap=tap if plan.wiretaps else None).serve()
        else:
            raw_copies = [copiers[e.id] for e in plan.wiretaps if e.filter.empty]
            await self._raw(caller, first, app_port, plan, copies=raw_copies)

    def _choose(
        self, app_port: int, target: bytes, headers: Iterable[tuple[bytes, bytes]]
    ) -> Route:
        """The route of one HTTP request, by the engagements current now."""
        plan = self.plan(app_port)
        headers = list(headers)
        for eng in plan.filtered:
            if eng.filter.matches(target, headers):
                return self._client_route(eng, app_port)
        if plan.takeover is not None:
            return self._client_route(plan.takeover, app_port)
        return self._app_route(app_port)

    def _app_route(self, app_port: int) -> Route:
        return Route("app", functools.partial(trio.open_tcp_stream, self.app_host, app_port))

    def _client_route(self, eng: Engagement, app_port: int) -> Route:
        return Route(
            f"client {eng.client or eng.session_id} ({eng.kind} {eng.id})",
            self._client_connect(eng, app_port),
        )

    def _client_connect(self, eng: Engagement, app_port: int) -> Connect:
        async def connect() -> trio.abc.Stream:
            mux = self.mux
            if mux is None or mux.closed:
                raise ClientUnreachable("no tunnel to the traffic-manager")
            host, port = eng.target(app_port)
            try:
                return await mux.open_stream(
                    host, port, "tcp", tag=b"session:" + eng.session_id.encode()
                )
            except DialRejected as exc:
                message = f"{eng.client or 'the client'} refused {host}:{port}: {exc.message}"
                await self._report(mux, eng, message)
                raise ClientUnreachable(message) from None
            except TunnelClosed as exc:
                raise ClientUnreachable(
                    f"the tunnel to the traffic-manager closed: {exc.message}"
                ) from None

        return connect

    async def _report(self, mux: MuxSession, eng: Engagement, message: str) -> None:
        """Tell the manager (push ``engagement_error``) why traffic for an engagement
        failed, so ``tp list`` can show it; at most once per REPORT_EVERY per engagement."""
        now = trio.current_time()
        if now - self._reported.get(eng.id, -REPORT_EVERY) < REPORT_EVERY:
            return
        self._reported[eng.id] = now
        payload = {"id": eng.id, "session_id": eng.session_id, "pod": self.config.pod}
        try:
            await mux.push("engagement_error", {**payload, "message": message})
        except trio.BrokenResourceError:
            pass

    async def _raw(
        self,
        caller: trio.SocketStream,
        first: bytes,
        app_port: int,
        plan: PortPlan,
        copies: list[Copier],
    ) -> None:
        """A byte splice to the client that took the port, else the app."""
        if plan.takeover is not None:
            route = self._client_route(plan.takeover, app_port)
        else:
            route = self._app_route(app_port)
        try:
            upstream = await route.connect()
        except OSError as exc:
            log.info("%s not reachable: %s", route.name, exc)
            await self._refuse(caller, first, route.name, exc)
            return

        def tap(data: bytes) -> None:
            for copier in copies:
                copier.offer(data)

        await splice(ReplayStream(caller, first, tap if copies else None), upstream)

    async def _refuse(
        self, caller: trio.SocketStream, first: bytes, name: str, error: OSError
    ) -> None:
        """The caller's upstream is not reachable: a 502 if it speaks HTTP/1 (the
        contract), else a reset, as a refused TCP connection would look."""
        if not first:
            _, first = await sniff(caller)
        if classify(first) is Sniffed.HTTP1:

            async def fail() -> trio.abc.Stream:
                raise error

            await Http1Router(caller, lambda request: Route(name, fail), first).serve()
        else:
            await reset(caller)


def _why(exc: BaseException) -> str:
    """One line for the log: the innermost error, with its type when it says nothing."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if exc.__cause__ is not None and not str(exc):
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


async def _hang_up(stream: trio.SocketStream) -> None:
    await stream.aclose()
