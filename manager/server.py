"""The traffic-manager: the cluster side of every client's connection.

One websocket port carries each client's multiplexed tunnel (``tpengine.tunnel``).
Over it a client arrives (gets a session and the cluster's subnets), keeps its session
alive, asks DNS questions, and dials TCP connections and UDP flows into the cluster; the
manager dials them and reports refused/unreachable/timeout truthfully. A client that is
silent for ``session_timeout`` loses its session and everything it held.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import trio
import trio_websocket

from manager._agents import AgentInfo, AgentRegistry
from manager._cluster import ClusterWatcher
from manager._dialer import DialError, DialFailure, dial_tcp_socket, open_udp
from manager._engage import decide_injection, engagement_from_request
from manager._engagements import Engagement, EngagementConflict, EngagementRegistry, Kind
from manager._health import serve_health
from manager._inject import AgentSpec
from manager._lookup import ClusterLookup
from manager._relay import relay_dial
from manager._restore import enforce_replace, restore_replaced
from manager._sessions import ClientSession, SessionRegistry
from manager._webhook import serve_webhook
from tpengine import __version__
from tpengine.fdstream import FdStream
from tpengine.kube.injector import tls_from_environment
from tpengine.splice import splice_socket
from tpengine.tunnel import (
    SUBPROTOCOL,
    IncomingDial,
    MuxDatagramFlow,
    MuxSession,
    Proto,
    RejectReason,
    RemoteError,
    Role,
    TunnelError,
    open_mux_over_stream,
    open_mux_over_websocket,
    sniff_raw_mux,
)

log = logging.getLogger("tp-manager")

_REJECT = {
    DialFailure.REFUSED: RejectReason.REFUSED,
    DialFailure.UNREACHABLE: RejectReason.UNREACHABLE,
    DialFailure.TIMEOUT: RejectReason.TIMEOUT,
}
UDP_IDLE = 60.0
#: Seconds a new connection may take to show which carrier it speaks.
HANDSHAKE_TIMEOUT = 10.0


@dataclass(kw_only=True)
class ManagerSettings:
    namespace: str
    tunnel_port: int = 8081
    health_port: int = 8082
    host: str | None = None
    session_timeout: float = 30.0
    dial_timeout: float = 10.0
    agent_image: str = ""
    webhook_port: int = 8443
    agent_wait: float = 60.0

    @property
    def manager_url(self) -> str:
        """What injected agents dial: the raw tunnel over TCP (the port tells it from a
        websocket), so the agent ↔ manager link pays no websocket masking per byte."""
        return f"tcp://traffic-manager.{self.namespace}:{self.tunnel_port}"


class _Connection:
    """Per-tunnel state: the client session or the agent at the other end."""

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.agent: AgentInfo | None = None
        self.mux: MuxSession | None = None
        self.has_mux = trio.Event()  # requests can arrive before the session is handed over

    async def tunnel(self) -> MuxSession:
        await self.has_mux.wait()
        assert self.mux is not None
        return self.mux


class Manager:
    def __init__(
        self, settings: ManagerSettings, api: Any, *, lookup: ClusterLookup | None = None
    ) -> None:
        self.settings = settings
        self.sessions = SessionRegistry(timeout=settings.session_timeout)
        self._engagements_ended = trio.Event()
        self.cluster = ClusterWatcher(api=api, namespace=settings.namespace)
        self.lookup = lookup or ClusterLookup()
        self.agents = AgentRegistry()
        self.engagements = EngagementRegistry()
        self._client_muxes: dict[str, MuxSession] = {}
        self._session_changed = trio.Event()
        self._agents_changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.cluster.run)
            nursery.start_soon(self._expire_sessions)
            nursery.start_soon(
                functools.partial(
                    restore_replaced,
                    self.cluster.api,
                    self._replaced_now,
                    lambda: self._engagements_ended,
                    grace=self.settings.session_timeout,
                )
            )
            tls = tls_from_environment()
            if tls is not None:
                await nursery.start(
                    functools.partial(
                        serve_webhook, tls, self._decide, port=self.settings.webhook_port
                    )
                )
                log.info("agent-injector webhook serving on port %d", self.settings.webhook_port)
            else:
                log.warning(
                    "no agent-injector certificate (tp install makes it): agents will not be injected"
                )
            await nursery.start(serve_health, self.settings.health_port, self.cluster.ready.is_set)
            listeners = await nursery.start(
                functools.partial(
                    trio.serve_tcp,
                    self._serve_carrier,
                    self.settings.tunnel_port,
                    host=self.settings.host,
                )
            )
            port = int(listeners[0].socket.getsockname()[1])
            log.info("traffic-manager %s serving tunnels on port %d", __version__, port)
            task_status.started(port)

    async def _expire_sessions(self) -> None:
        while True:
            deadline = self.sessions.get_timer()
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._session_changed.wait()
                self._session_changed = trio.Event()
            for session in self.sessions.expire(trio.current_time()):
                log.info("session %s of %s@%s expired", session.id, session.user, session.host)
                self._client_muxes.pop(session.id, None)
                await self._drop_engagements(self.engagements.remove_session(session.id))

    async def _serve_carrier(self, stream: trio.SocketStream) -> None:
        """One port, two carriers: the raw tunnel (the engine, through a port-forward: no
        websocket framing and masking on top of the port-forward's own websocket) and a
        websocket (agents, and clients that need one), told apart by the first bytes."""
        try:
            peer = str(stream.socket.getpeername())
        except OSError:
            peer = "?"
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                raw, replay = await sniff_raw_mux(stream)
        except (trio.TooSlowError, trio.BrokenResourceError, OSError):
            await trio.aclose_forcefully(stream)
            return
        if raw:
            carrier: trio.abc.Stream = replay
            if type(stream) is trio.SocketStream:
                # The sniffed bytes come back first from the replay, then the socket is
                # driven on its descriptor (see tpengine.fdstream: fewer passes per message).
                carrier = FdStream(stream, bytes(await replay.receive_some()))
            opening = functools.partial(open_mux_over_stream, carrier, role=Role.SERVER)
            await self._run_tunnel(opening, peer)
            return
        async with trio.open_nursery() as nursery:
            try:
                request = await trio_websocket.wrap_server_stream(
                    nursery,
                    replay,  # any trio Stream works
                    receive_buffer_size=1 << 20,
                    max_message_size=16 << 20,
                )
            except (trio_websocket.ConnectionClosed, trio_websocket.HandshakeError, OSError):
                nursery.cancel_scope.cancel()
                return
            await self._serve_tunnel(request, peer)
            nursery.cancel_scope.cancel()

    async def _serve_tunnel(self, request: trio_websocket.WebSocketRequest, peer: str) -> None:
        # A ConnectionClosed escaping this handler would take the whole server down.
        try:
            subprotocol = SUBPROTOCOL if SUBPROTOCOL in request.proposed_subprotocols else None
            ws = await request.accept(subprotocol=subprotocol)
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError) as exc:
            log.info("tunnel from %s ended: %s", peer, exc)
            return
        await self._run_tunnel(functools.partial(open_mux_over_websocket, ws), peer)

    async def _run_tunnel(
        self, opening: Callable[..., AbstractAsyncContextManager[MuxSession]], peer: str
    ) -> None:
        conn = _Connection()
        try:
            async with (
                opening(
                    dial_handler=self._on_dial,
                    request_handler=lambda method, payload: self._on_request(conn, method, payload),
                ) as mux,
                trio.open_nursery() as nursery,
            ):
                conn.mux = mux
                conn.has_mux.set()
                try:
                    nursery.start_soon(self._push_cluster_changes, mux)
                    nursery.start_soon(self._note_engagement_errors, mux)
                    await mux.wait_closed()
                    nursery.cancel_scope.cancel()
                finally:
                    self._forget_tunnel(conn, mux)
        except (
            trio_websocket.ConnectionClosed,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            TunnelError,
        ) as exc:
            log.info("tunnel from %s ended: %s", peer, exc)
        except Exception:
            log.exception("tunnel from %s failed", peer)

    async def _note_engagement_errors(self, mux: MuxSession) -> None:
        """An agent reports why it could not deliver an engagement's traffic (the laptop
        refused the connection…); ``tp list`` shows it as the engagement's message."""
        async with mux.subscribe("engagement_error") as errors:
            async for error in errors:
                if not isinstance(error, dict):
                    continue
                engagement = self.engagements.get(str(error.get("id", "")))
                if engagement is not None:
                    engagement.message = str(error.get("message", ""))[:500]

    def _forget_tunnel(self, conn: _Connection, mux: MuxSession) -> None:
        if conn.agent is not None:
            self.agents.depart(conn.agent.namespace, conn.agent.pod, mux)
            log.info(
                "agent of %s/%s in pod %s departed",
                conn.agent.namespace,
                conn.agent.workload,
                conn.agent.pod,
            )
        if conn.session_id is not None and self._client_muxes.get(conn.session_id) is mux:
            del self._client_muxes[conn.session_id]

    async def _push_cluster_changes(self, mux: MuxSession) -> None:
        while True:
            await self.cluster.changed.wait()
            try:
                await mux.push("cluster_info", self.cluster.info.to_json())
            except (trio.BrokenResourceError, trio.ClosedResourceError, RemoteError):
                return
            except Exception as exc:  # a closed tunnel: nothing more to tell it
                log.debug("push failed: %s", exc)
                return

    async def _on_request(self, conn: _Connection, method: str, payload: Any) -> Any:
        payload = payload or {}
        now = trio.current_time()
        if method == "arrive":
            await conn.tunnel()
            return self._arrive(conn, payload, now)
        if method == "cluster_info":
            with trio.fail_after(30):
                await self.cluster.ready.wait()
            return self.cluster.info.to_json()
        if method == "lookup":
            return await self.lookup.lookup(str(payload["name"]), int(payload["type"]))
        if method == "remain":
            return {
                "ok": conn.session_id is not None and self.sessions.remain(conn.session_id, now)
            }
        if method == "depart":
            if conn.session_id is not None:
                self.sessions.depart(conn.session_id)
                await self._drop_engagements(self.engagements.remove_session(conn.session_id))
                conn.session_id = None
            return {}
        if method == "version":
            return {"version": __version__}
        if method == "agent_arrive":
            await conn.tunnel()
            return self._agent_arrive(conn, payload)
        if method in ("engage", "wait_active", "leave", "engagements", "workload_env"):
            session = self.sessions.get(conn.session_id or "")
            if session is None:
                raise ValueError("arrive first")
            if method == "engage":
                return await self._engage(session, payload)
            if method == "wait_active":
                engagement = self.engagements.find(session.id, str(payload.get("name", "")))
                if engagement is None:
                    return {"error": f"no engagement {payload.get('name')!r}", "code": "gone"}
                asked = float(payload.get("timeout") or self.settings.agent_wait)
                return await self._await_agents(
                    engagement, patience=min(asked, self.settings.agent_wait)
                )
            if method == "leave":
                return await self._leave(session, str(payload.get("name", "")))
            if method == "engagements":
                return [
                    self._with_pods(e) for e in self.engagements.all() if e.session_id == session.id
                ]
            return self._workload_env(payload)
        raise ValueError(f"unknown method {method!r}")

    def _arrive(self, conn: _Connection, payload: dict[str, Any], now: float) -> dict[str, Any]:
        previous = payload.get("session_id")
        if isinstance(previous, str) and self.sessions.remain(previous, now):
            conn.session_id = previous  # a reconnecting client keeps its session
        else:
            session = self.sessions.arrive(
                user=str(payload.get("user", "")),
                host=str(payload.get("host", "")),
                namespace=str(payload.get("namespace", "default")),
                version=str(payload.get("version", "")),
                now=now,
            )
            conn.session_id = session.id
            log.info("session %s: %s@%s arrived", session.id, session.user, session.host)
        if conn.mux is not None:
            self._client_muxes[conn.session_id] = conn.mux
        self._session_changed.set()
        return {"session_id": conn.session_id, "manager_version": __version__}

    def _decide(self, pod: dict[str, Any], namespace: str) -> AgentSpec | None:
        spec = decide_injection(
            pod, namespace, image=self.settings.agent_image, manager_url=self.settings.manager_url
        )
        if spec is not None and spec.replace and not self._replaced_now(namespace, spec.workload):
            # The template still says replace, but nobody replaces it now (the client
            # left without restoring it): the pod keeps its app container.
            log.info("no replace holds %s/%s: its new pod keeps the app", namespace, spec.workload)
            spec = dataclasses.replace(spec, replace=False)
        return spec

    def _replaced_now(self, namespace: str, workload: str) -> bool:
        return any(
            e.kind is Kind.REPLACE for e in self.engagements.of_workload(namespace, workload)
        )

    async def _engage(self, session: ClientSession, payload: dict[str, Any]) -> dict[str, Any]:
        new = engagement_from_request(
            payload, session_id=session.id, client=f"{session.user}@{session.host}"
        )
        try:
            engagement = self.engagements.add(new)
        except EngagementConflict as exc:
            return {"error": str(exc), "code": "conflict"}
        await self._push_engagements(engagement.namespace, engagement.workload)
        if engagement.kind is Kind.REPLACE:
            await enforce_replace(self.cluster.api, engagement.namespace, engagement.workload)
        # A client that still has to restart the workload's pods asks first ("wait":
        # false: a refused engagement then changes nothing) and waits for the agents with
        # `wait_active` after the restart.
        patience = self.settings.agent_wait if payload.get("wait", True) else 0.0
        return await self._await_agents(engagement, patience=patience)

    async def _await_agents(self, engagement: Engagement, *, patience: float) -> dict[str, Any]:
        """The engagement once an agent of its workload is there, or as it is after
        ``patience`` seconds."""
        with trio.move_on_after(patience):
            while not self.agents.of_workload(engagement.namespace, engagement.workload):
                await self._agents_changed.wait()
        if self.engagements.get(engagement.id) is not engagement:
            return {"error": f"engagement {engagement.name!r} ended while waiting", "code": "gone"}
        return self._with_pods(engagement)

    def _with_pods(self, engagement: Engagement) -> dict[str, Any]:
        """The engagement as clients see it, its state from the agents there now: an
        agent pod that restarts shows WAITING until its successor arrives."""
        agents = self.agents.of_workload(engagement.namespace, engagement.workload)
        engagement.refresh_state(agents_present=bool(agents))
        result = engagement.to_json()
        result["pods"] = [{"name": a.info.pod, "ip": a.info.pod_ip} for a in agents]
        return result

    async def _leave(self, session: ClientSession, name: str) -> dict[str, Any]:
        found = self.engagements.find(session.id, name)
        if found is None:
            return {"error": f"no engagement named {name!r}", "code": "not-found"}
        self.engagements.remove(found.id)
        await self._push_engagements(found.namespace, found.workload)
        return found.to_json()

    def _workload_env(self, payload: dict[str, Any]) -> dict[str, Any]:
        agents = self.agents.of_workload(
            str(payload.get("namespace")), str(payload.get("workload"))
        )
        if not agents:
            return {"error": "no traffic-agent of that workload is connected", "code": "not-found"}
        return {"env": agents[0].info.env, "pod": agents[0].info.pod}

    def _agent_arrive(self, conn: _Connection, payload: dict[str, Any]) -> dict[str, Any]:
        info = AgentInfo.from_json(payload)
        assert conn.mux is not None
        conn.agent = info
        self.agents.arrive(info, conn.mux)
        self._agents_changed.set()
        self._agents_changed = trio.Event()
        log.info("agent of %s/%s arrived from pod %s", info.namespace, info.workload, info.pod)
        return {"engagements": self._engagements_for(info.namespace, info.workload)}

    def _engagements_for(self, namespace: str, workload: str) -> list[dict[str, Any]]:
        return [e.to_agent_json() for e in self.engagements.of_workload(namespace, workload)]

    async def _push_engagements(self, namespace: str, workload: str) -> None:
        current = self._engagements_for(namespace, workload)
        for agent in self.agents.of_workload(namespace, workload):
            try:
                await agent.mux.push("engagements", current)
            except (TunnelError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.info("cannot tell agent %s: %s", agent.info.pod, exc)

    async def _drop_engagements(self, gone: list[Engagement]) -> None:
        if any(e.kind is Kind.REPLACE for e in gone):
            self._engagements_ended.set()  # manager._restore looks for orphaned pods now
            self._engagements_ended = trio.Event()
        for workload in {(e.namespace, e.workload) for e in gone}:
            await self._push_engagements(*workload)

    async def _on_dial(self, dial: IncomingDial) -> None:
        dest = dial.destination
        tag = dest.tag.decode(errors="replace")
        if tag.startswith("session:"):
            # An agent sends a connection to the engaging client (intercept, wiretap).
            target = self._client_muxes.get(tag.removeprefix("session:"))
            if target is None:
                await dial.reject(RejectReason.UNREACHABLE, "the engaging client is not connected")
                return
            await relay_dial(dial, target, dest.host, dest.port)
            return
        if tag.startswith("agent:"):
            # A client reaches a pod's localhost through its agent (--to-pod).
            namespace, _, pod = tag.removeprefix("agent:").partition("/")
            agent = self.agents.get(namespace, pod)
            if agent is None:
                await dial.reject(RejectReason.UNREACHABLE, f"no agent in pod {namespace}/{pod}")
                return
            await relay_dial(dial, agent.mux, dest.host, dest.port)
            return
        if tag:
            await dial.reject(RejectReason.FORBIDDEN, f"unknown routing tag {tag!r}")
            return
        if dest.proto is Proto.UDP:
            await self._dial_udp(dial)
            return
        try:
            upstream = await dial_tcp_socket(
                dest.host, dest.port, connect_timeout=self.settings.dial_timeout
            )
        except DialError as exc:
            await dial.reject(_REJECT[exc.failure], str(exc))
            return
        try:
            stream = await dial.accept_stream()
        except BaseException:
            upstream.close()
            raise
        await splice_socket(stream, upstream)

    async def _dial_udp(self, dial: IncomingDial) -> None:
        dest = dial.destination
        try:
            sock = await open_udp(dest.host, dest.port)
        except DialError as exc:
            await dial.reject(_REJECT[exc.failure], str(exc))
            return
        with sock:
            flow = await dial.accept()
            assert isinstance(flow, MuxDatagramFlow)
            await _relay_udp(flow, sock)


async def _relay_udp(flow: MuxDatagramFlow, sock: trio.socket.SocketType) -> None:
    """Datagrams both ways until the flow ends or stays idle for UDP_IDLE seconds."""
    idle = trio.CancelScope(deadline=trio.current_time() + UDP_IDLE)

    def touch() -> None:
        idle.deadline = trio.current_time() + UDP_IDLE

    async def outbound() -> None:
        async for datagram in flow:
            touch()
            try:
                await sock.send(datagram)
            except OSError:
                continue  # e.g. ECONNREFUSED from an earlier ICMP: UDP drops, nothing more

    async def inbound() -> None:
        while True:
            try:
                datagram = await sock.recv(65535)
            except OSError:
                continue
            touch()
            flow.send_nowait(datagram)

    try:
        with idle:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_then_cancel, outbound, nursery.cancel_scope)
                nursery.start_soon(_then_cancel, inbound, nursery.cancel_scope)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        with trio.CancelScope(shield=True):
            await flow.aclose()


async def _then_cancel(task: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
    try:
        await task()
    finally:
        scope.cancel()
