"""The engine process behind ``tp connect``: session, TUN, network stack, DNS, control.

``tp connect`` starts it in the background with the helper's socket; it serves the
control socket first (so a second ``tp connect`` finds it), then connects step by step,
reporting progress to whoever waits on ``wait_ready``. ``quit`` (or SIGTERM) ends it; its
helper then undoes the TUN, routes and DNS. If it dies, the helper does the same.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import trio

from tpengine import __version__
from tpengine.dns import Resolver, UdpUpstream, serve_dns_on
from tpengine.engine._control import ControlError, Progress, serve_control
from tpengine.engine._engage import (
    LocalTargets,
    engage,
    engageable_workloads,
    leave,
    mount_volumes,
)
from tpengine.engine._kube import ensure_manager, open_api, port_forward_connector
from tpengine.engine._laptop_routes import laptop_routes
from tpengine.engine._loglevel import LogLevel, LogLevelError, parse_duration, parse_level
from tpengine.engine._network import serve_tun
from tpengine.engine._reengage import WAITING_FOR_MANAGER, EngagementMemory, keep_engaged
from tpengine.engine._routes import Network, RoutingRules, SubnetConflict
from tpengine.engine._session import Session, SessionError, SessionInfo, State, open_session_with
from tpengine.engine._topod import (
    LOCALHOST,
    open_to_pod_sockets,
    serve_to_pod,
)
from tpengine.engine._topod_spec import ToPodError, ToPodPort
from tpengine.helper import HelperClient, HelperError
from tpengine.helper._resolvconf import nameservers_of
from tpengine.netstack import open_netstack
from tpengine.netstack.tun import TunDevice, TunOffloads
from tpengine.tunnel import DialRejected, MuxDatagramFlow, MuxStream, RejectReason, TunnelError

log = logging.getLogger("tp-engine")

TUN_NAME = "tp%d"
TUN_MTU = 65000
#: How long quitting waits for a replaced workload's pods to get their app back.
REPLACE_RESTORE_TIMEOUT = 90.0


@dataclass(kw_only=True)
class EngineOptions:
    namespace: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    manager_namespace: str = "tpengine"
    also_proxy: list[str] = field(default_factory=list)
    never_proxy: list[str] = field(default_factory=list)
    allow_conflicting_subnets: list[str] = field(default_factory=list)
    mapped_namespaces: list[str] = field(default_factory=list)
    image: str | None = None
    tun_address: str = "198.19.0.1"
    pcap: str | None = None
    control_name: str | None = None


class Engine:
    def __init__(self, options: EngineOptions, helper: HelperClient | None) -> None:
        self.options = options
        self.helper = helper
        self.session: Session | None = None
        self.progress: list[str] = []
        self.failure: str | None = None
        self.ready = trio.Event()
        self._news = trio.Event()
        self._quit = trio.Event()
        self.tun_name = ""
        self.api: Any = None
        self.targets = LocalTargets()
        from tpengine.fs import MountProcesses

        self.volumes = MountProcesses(
            register=helper.register_mount if helper else None,
            unregister=helper.unmount if helper else None,
            tune=helper.set_read_ahead if helper else None,
        )
        self.engagements = EngagementMemory()  # re-sent on every new session
        self._forwards: trio.Nursery | None = None
        self._to_pod: dict[str, trio.CancelScope] = {}
        self.routed: list[Network] = []
        self.log_level = LogLevel()
        self.conflicts: list[SubnetConflict] = []  # subnets left unrouted (see _update_routes)
        self.dns_upstream: list[str] = []

    # -- progress ---------------------------------------------------------------------

    async def say(self, text: str) -> None:
        log.info("%s", text)
        self.progress.append(text)
        self._news.set()
        self._news = trio.Event()
        await trio.lowlevel.checkpoint()

    def fail(self, text: str) -> None:
        log.error("connect failed: %s", text)
        self.failure = text
        self.ready.set()
        self._news.set()

    # -- control handlers -------------------------------------------------------------

    async def _wait_ready(self, params: dict[str, Any], progress: Progress) -> Any:
        shown = 0
        while True:
            while shown < len(self.progress):
                await progress(self.progress[shown])
                shown += 1
            if self.ready.is_set():
                break
            await self._news.wait()
        if self.failure:
            raise ControlError(self.failure, "connect-failed")
        return self.status()

    async def _status(self, params: dict[str, Any], progress: Progress) -> Any:
        return self.status()

    async def _log_level_handler(self, params: dict[str, Any], progress: Progress) -> Any:
        try:
            level = parse_level(str(params.get("level", "")))
            seconds = parse_duration(str(params.get("duration", "30m")))
        except LogLevelError as exc:
            raise ControlError(str(exc), "bad-request") from None
        self.log_level.set(level, seconds)
        log.warning("log level %s for %s s", self.log_level.current, seconds)
        return {
            "level": self.log_level.current,
            "seconds": None if seconds == math.inf else seconds,
        }

    async def _quit_handler(self, params: dict[str, Any], progress: Progress) -> Any:
        await self._undo_replacements(progress)
        self._quit.set()
        return {"quitting": True}

    async def _undo_replacements(self, progress: Progress | None = None) -> None:
        """Before going away: give every replaced workload its app container back (only
        the engine may change workloads; the manager cannot do it after we are gone)."""
        session = self.session
        for name in list(self.targets.replaced):
            workload = self.targets.replaced[name][0]
            what = f"{workload['kind']} {workload['metadata']['name']}"
            if progress is not None:
                await progress(f"Restoring the app container of {what}")
            with trio.move_on_after(REPLACE_RESTORE_TIMEOUT):
                try:
                    if session is None:
                        raise SessionError("no session")
                    await leave(self.api, session, self.targets, name)
                except (SessionError, TunnelError, trio.BrokenResourceError) as exc:
                    log.warning("could not restore %s on quit: %s", what, exc)
            self.targets.replaced.pop(name, None)

    async def _engage_handler(self, params: dict[str, Any], progress: Progress) -> Any:
        session = self._connected_session()
        try:
            result = await engage(self.api, session, self.targets, params)
        except SessionError as exc:
            raise ControlError(str(exc), "engage-failed") from None
        self.engagements.remember(result)
        try:
            to_pod = [ToPodPort.parse(p) for p in params.get("to_pod") or []]
        except ToPodError as exc:
            raise ControlError(str(exc), "engage-failed") from None
        if to_pod:
            result["to_pod"] = await self._start_to_pod(session, result, to_pod)
        result.update(await mount_volumes(self.volumes, session, result, params))
        return result

    async def _start_to_pod(
        self, session: Session, engagement: dict[str, Any], ports: list[ToPodPort]
    ) -> list[str]:
        """``--to-pod``: localhost:PORT on the laptop reaches the engaged pod's localhost:PORT
        (its sidecars) through the manager and the pod's agent."""
        pods = engagement.get("pods") or []
        if not pods or self._forwards is None:
            raise ControlError(
                "--to-pod needs a running pod with its traffic-agent", "engage-failed"
            )
        namespace, name = engagement["namespace"], engagement["name"]
        pod = [str(pods[0]["name"])]  # the engaged pod now: it follows a restarted pod
        try:
            bound = await open_to_pod_sockets(ports)
        except ToPodError as exc:
            raise ControlError(str(exc), "engage-failed") from None

        async def dial(port: int, proto: str) -> MuxStream | MuxDatagramFlow:
            try:
                mux = await session._current_mux()
            except SessionError as exc:
                raise trio.BrokenResourceError(str(exc)) from None
            for attempt in (1, 2):
                tag = f"agent:{namespace}/{pod[0]}".encode()
                try:
                    if proto == "udp":
                        return await mux.open_stream(LOCALHOST, port, "udp", tag=tag)
                    return await mux.open_stream(LOCALHOST, port, tag=tag)
                except DialRejected as exc:
                    # The pod was replaced (its agent is gone): ask which pod carries the
                    # engagement now and try that one once.
                    if attempt == 2 or exc.reason is not RejectReason.UNREACHABLE:
                        raise
                    listed = await mux.request("engagements", {})
                    found: dict[str, Any] = next((e for e in listed if e.get("name") == name), {})
                    if not found.get("pods"):
                        raise
                    pod[0] = str(found["pods"][0]["name"])
            raise AssertionError("unreachable")

        scope = trio.CancelScope()
        self._to_pod[engagement["name"]] = scope

        async def serve() -> None:
            with scope:
                await serve_to_pod(bound, dial)

        self._forwards.start_soon(serve)
        return [str(p) for p in ports]

    async def _leave_handler(self, params: dict[str, Any], progress: Progress) -> Any:
        scope = self._to_pod.pop(str(params.get("name", "")), None)
        if scope is not None:
            scope.cancel()
        name = str(params.get("name", ""))
        await self.volumes.unmount(name)
        try:
            result = await leave(self.api, self._connected_session(), self.targets, name)
        except SessionError as exc:
            # Known here but not (yet, or any more) to the manager: re-engaging was refused
            # or is still under way after a new session. Leaving it is forgetting it.
            forgotten = self.engagements.forget(name)
            if forgotten is None:
                raise ControlError(str(exc), "not-found") from None
            self.targets.allowed.pop(name, None)
            return forgotten
        self.engagements.forget(name)
        return result

    async def _list_handler(self, params: dict[str, Any], progress: Progress) -> Any:
        session = self._connected_session()
        listed = None
        if session.info.state is State.CONNECTED:
            with trio.move_on_after(5):
                try:
                    listed = await (await session._current_mux()).request("engagements", {})
                except (TunnelError, SessionError, trio.BrokenResourceError):
                    listed = None  # it went away just now: show ours as waiting
        # While the manager is away (or has not heard of them yet), ours show as WAITING.
        engagements = self.engagements.merge_listing(
            listed, **({"message": WAITING_FOR_MANAGER} if listed is None else {})
        )
        namespace = params.get("namespace") or session.info.namespace
        workloads = await engageable_workloads(self.api, namespace)
        return {"namespace": namespace, "workloads": workloads, "engagements": engagements}

    async def _env_handler(self, params: dict[str, Any], progress: Progress) -> Any:
        mux = await self._connected_session()._current_mux()
        result = await mux.request("workload_env", params)
        if "error" in result:
            raise ControlError(result["error"], "not-found")
        return result

    def _connected_session(self) -> Session:
        if self.session is None or not self.ready.is_set() or self.failure:
            raise ControlError("not connected (run tp connect)", "not-connected")
        return self.session

    def status(self) -> dict[str, Any]:
        session = self.session.status() if self.session else {"status": "Connecting"}
        return {
            "engine": {
                "version": f"v{__version__}",
                "pid": os.getpid(),
                **session,
                "engagements": self.engagements.summary(),
            },
            "network": {
                "tun": self.tun_name or None,
                "dns": self.options.tun_address if self.tun_name else None,
                "dns_upstream": self.dns_upstream,
                "subnets": [str(n) for n in self.routed],
                "also_proxy": self.options.also_proxy,
                "never_proxy": self.options.never_proxy,
                "allow_conflicting_subnets": self.options.allow_conflicting_subnets,
                "conflicts": [str(c) for c in self.conflicts],
            },
            "failure": self.failure,
        }

    # -- the run ----------------------------------------------------------------------

    async def run(self) -> None:
        handlers = {
            "wait_ready": self._wait_ready,
            "status": self._status,
            "quit": self._quit_handler,
            "engage": self._engage_handler,
            "leave": self._leave_handler,
            "list": self._list_handler,
            "workload_env": self._env_handler,
            "log_level": self._log_level_handler,
        }
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.log_level.run)
            await nursery.start(
                lambda task_status: serve_control(
                    handlers, name=self.options.control_name, task_status=task_status
                )
            )
            async with trio.open_nursery() as work:
                work.start_soon(self._connect_and_serve)
                await self._quit.wait()
                await self._undo_replacements()  # SIGTERM and `connect -- cmd` come here too
                await self._depart()
                work.cancel_scope.cancel()
            # The network is down (the netstack closed the TUN); the helper now removes
            # routes, DNS and the device. Only then does the control socket close, so a
            # `tp quit` that waits for it returns when nothing is left.
            if self.helper is not None:
                with trio.CancelScope(shield=True):
                    await self.helper.aclose()
            nursery.cancel_scope.cancel()

    async def _depart(self) -> None:
        """Tell the manager this client leaves while the tunnel is still up: it ends the
        session and its engagements now, not a session timeout later (cancelling the
        session's tasks first would tear the tunnel down under the goodbye)."""
        session = self.session
        if session is None or session.info.state is not State.CONNECTED:
            return
        with trio.move_on_after(2):
            try:
                await (await session._current_mux()).request("depart", {})
            except (TunnelError, SessionError, trio.BrokenResourceError) as exc:
                log.info("depart: %s", exc)

    async def _connect_and_serve(self) -> None:
        try:
            await self._connect_and_serve_inner()
        except SessionError as exc:
            self.fail(str(exc))
        except HelperError as exc:
            self.fail(f"the privileged helper failed: {exc}")
        except OSError as exc:
            self.fail(f"{exc.strerror or exc}")
        finally:
            if self.failure:
                # Let the waiting tp connect read the failure, then end the engine.
                await trio.sleep(0.5)
                self._quit.set()

    async def _connect_and_serve_inner(self) -> None:
        opts = self.options
        routing = RoutingRules.parse(
            opts.also_proxy, opts.never_proxy, opts.allow_conflicting_subnets
        )
        await self.say("Connecting to the cluster")
        api, target = await open_api(
            kubeconfig=opts.kubeconfig, context=opts.context, namespace=opts.namespace
        )
        await self.say(
            await ensure_manager(
                api, namespace=opts.manager_namespace, image=opts.image, progress=self.say
            )
        )
        info = SessionInfo(
            namespace=target.namespace,
            manager_namespace=opts.manager_namespace,
            context=target.context,
            server=target.server,
            mapped_namespaces=tuple(opts.mapped_namespaces),
        )
        self.api = api
        connector = port_forward_connector(
            api, opts.manager_namespace, dial_handler=self.targets.handle_dial
        )
        async with open_session_with(connector, info) as session, trio.open_nursery() as nursery:
            self.session = session
            nursery.start_soon(keep_engaged, session, self.engagements)
            await self.say(f"Connected to the traffic-manager (session {info.session_id})")
            if self.helper is None:
                self.ready.set()
                self._news.set()
                await trio.sleep_forever()
            await self._serve_network(session, routing)

    async def _serve_network(self, session: Session, routing: RoutingRules) -> None:
        assert self.helper is not None
        opts = self.options
        # Refused before anything is made: a subnet a route of the laptop's already uses.
        _, conflicts = await self._plan_routes(session, routing)
        if conflicts:
            self.fail(str(conflicts[0]))
            return
        hello = await self.helper.hello()
        if hello.get("restored_dns"):
            await self.say("Restored the DNS configuration a crashed session left behind")
        fd, tun_info = await self.helper.create_tun(
            TUN_NAME, mtu=TUN_MTU, addresses=[f"{opts.tun_address}/32"]
        )
        tun = TunDevice.from_fd(
            fd, offloads=TunOffloads.from_flags(tun_info["offloads"]), mtu=TUN_MTU
        )
        self.tun_name = tun.name
        if opts.pcap:
            tun.trace_to(opts.pcap)
        await self.say(f"Created TUN device {tun.name}")
        async with trio.open_nursery() as nursery:
            resolver = await self._start_dns(session, nursery)
            await self._update_routes(session, routing)
            await nursery.start(self.volumes.run)
            async with open_netstack(tun) as stack:
                self._forwards = nursery
                nursery.start_soon(serve_tun, stack, session)
                nursery.start_soon(self._follow_cluster, session, resolver, routing)
                await self.say(
                    f"Network ready: {len(self.routed)} subnets routed to {tun.name}, DNS on {opts.tun_address}"
                )
                self.ready.set()
                self._news.set()
                await trio.sleep_forever()

    async def _start_dns(self, session: Session, nursery: trio.Nursery) -> Resolver:
        assert self.helper is not None
        address = self.options.tun_address
        try:
            current = await trio.Path("/etc/resolv.conf").read_text()
        except OSError:
            current = ""
        self.dns_upstream = [s for s in nameservers_of(current) if s != address]
        upstream = UdpUpstream(self.dns_upstream) if self.dns_upstream else None
        resolver = Resolver(
            session.policy,
            cluster_lookup=session.lookup,
            upstream=upstream,
            clock=trio.current_time,
        )
        udp, tcp = await self.helper.bind_dns(address)
        await nursery.start(serve_dns_on, resolver, udp, tcp)
        await self.helper.set_dns([address])
        return resolver

    async def _update_routes(self, session: Session, routing: RoutingRules) -> None:
        assert self.helper is not None
        wanted, conflicts = await self._plan_routes(session, routing)
        for conflict in conflicts:
            if conflict not in self.conflicts:
                log.warning("not routed: %s", conflict)
        self.conflicts = conflicts
        stale = [n for n in self.routed if n not in wanted]
        new = [n for n in wanted if n not in self.routed]
        if stale:
            await self.helper.remove_routes(self.tun_name, [str(n) for n in stale])
        if new:
            await self.helper.add_routes(self.tun_name, [str(n) for n in new])
        self.routed = wanted

    async def _plan_routes(
        self, session: Session, routing: RoutingRules
    ) -> tuple[list[Network], list[SubnetConflict]]:
        """The networks to route: the cluster's and ``--also-proxy``, minus
        ``--never-proxy``, minus those a route of the laptop's already uses (unless
        allowed). At connect such a conflict fails ``tp connect``; a subnet the cluster
        gains later is left out, with a warning in the log and in ``tp status``."""
        cluster = [*session.info.cluster.pod_cidrs, *session.info.cluster.service_cidrs]
        return routing.plan(cluster, await laptop_routes(skip_link=self.tun_name or None))

    async def _follow_cluster(
        self, session: Session, resolver: Resolver, routing: RoutingRules
    ) -> None:
        while True:
            await session.wait_cluster_changed()
            resolver.set_policy(session.policy)
            await self._update_routes(session, routing)
            log.info("subnets now: %s", ", ".join(map(str, self.routed)))


def helper_from_fd(fd: int | None) -> HelperClient | None:
    if fd is None:
        return None
    return HelperClient(socket.socket(fileno=fd))
