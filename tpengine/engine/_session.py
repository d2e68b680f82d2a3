"""The session engine as a library: reach the cluster from any trio program.

``open_session`` keeps one tunnel to the traffic-manager alive for the duration of its
block, reconnecting by itself when the carrier (a port-forward, a direct websocket) or
the manager drops, and resuming the same manager session. It needs no TUN and no root:

    async with tpengine.open_session(namespace="default") as session:
        stream = await session.open_tcp_stream("web", 80)
        addresses = await session.resolve("web")

The CLI's engine adds the TUN, the userspace network stack and the DNS server on top.
"""

from __future__ import annotations

import enum
import getpass
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import dns.rcode
import dns.rdatatype
import trio
import trio_websocket

from tpengine import __version__
from tpengine.dns import ClusterAnswer, NamePolicy, Route
from tpengine.tunnel import MuxDatagramFlow, MuxSession, MuxStream, ReconnectBackoff, TunnelError

log = logging.getLogger(__name__)

Connector = Callable[[], AbstractAsyncContextManager[MuxSession]]


class SessionError(Exception):
    """The session cannot do what was asked (not connected in time, name not found…)."""


class State(enum.Enum):
    CONNECTING = "Connecting"
    CONNECTED = "Connected"
    RECONNECTING = "Reconnecting"
    CLOSED = "Closed"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(kw_only=True)
class ClusterView:
    pod_cidrs: tuple[Network, ...] = ()
    service_cidrs: tuple[Network, ...] = ()
    namespaces: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterView:
        return cls(
            pod_cidrs=tuple(ipaddress.ip_network(n) for n in data.get("pod_cidrs", [])),
            service_cidrs=tuple(ipaddress.ip_network(n) for n in data.get("service_cidrs", [])),
            namespaces=tuple(data.get("namespaces", [])),
            cluster_domain=data.get("cluster_domain", "cluster.local"),
        )


@dataclass(kw_only=True)
class SessionInfo:
    namespace: str
    manager_namespace: str
    context: str = ""
    server: str = ""
    state: State = State.CONNECTING
    session_id: str | None = None
    manager_version: str = ""
    reconnects: int = 0
    last_error: str = ""
    cluster: ClusterView = field(default_factory=ClusterView)
    #: Only these namespaces' names resolve through the cluster (Telepresence's
    #: --mapped-namespaces); empty: every namespace. The connected one always does.
    mapped_namespaces: tuple[str, ...] = ()


class Session:
    def __init__(
        self, connector: Connector, info: SessionInfo, *, connect_timeout: float = 30.0
    ) -> None:
        self._connector = connector
        self.info = info
        self._mux: MuxSession | None = None
        self._connected = trio.Event()
        self._cluster_changed = trio.Event()
        self._state_changed = trio.Event()
        self._connect_timeout = connect_timeout
        self.policy = NamePolicy(namespace=info.namespace)

    # -- public API -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        info = self.info
        return {
            "status": info.state.value,
            "namespace": info.namespace,
            "manager_namespace": info.manager_namespace,
            "mapped_namespaces": list(info.mapped_namespaces),
            "kubernetes_context": info.context,
            "kubernetes_server": info.server,
            "session_id": info.session_id,
            "manager_version": info.manager_version,
            "reconnects": info.reconnects,
            "last_error": info.last_error,
            "pod_cidrs": [str(n) for n in info.cluster.pod_cidrs],
            "service_cidrs": [str(n) for n in info.cluster.service_cidrs],
            "rtt_ms": round(self._mux.rtt * 1000, 3) if self._mux and self._mux.rtt else None,
        }

    async def open_tcp_stream(self, host: str, port: int) -> MuxStream:
        """A stream to ``host:port`` inside the cluster (short names use the session's
        namespace). Raises :class:`tpengine.tunnel.DialRejected` when the cluster side
        refused or could not reach it."""
        mux = await self._current_mux()
        return await mux.open_stream(self._qualify(host), port)

    async def open_udp(self, host: str, port: int) -> MuxDatagramFlow:
        mux = await self._current_mux()
        return await mux.open_stream(self._qualify(host), port, "udp")

    async def resolve(self, name: str) -> list[str]:
        """The cluster addresses of ``name`` (A then AAAA); SessionError if there are none."""
        addresses: list[str] = []
        verdict = self.policy.classify(name)
        names = verdict.cluster_names if verdict.route is not Route.UPSTREAM else ()
        for fqdn in names:
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                answer = await self.lookup(fqdn, rdtype)
                addresses += answer.records
            if addresses:
                return addresses
        raise SessionError(f"{name}: no such service or pod in the cluster")

    async def lookup(self, fqdn: str, rdtype: int) -> ClusterAnswer:
        """Ask the cluster's DNS through the manager (the engine's resolver uses this)."""
        try:
            mux = await self._current_mux()
            data = await mux.request("lookup", {"name": fqdn, "type": int(rdtype)})
        except (TunnelError, SessionError, trio.BrokenResourceError) as exc:
            log.debug("lookup %s failed: %s", fqdn, exc)
            return ClusterAnswer(rcode=dns.rcode.SERVFAIL)
        return ClusterAnswer(
            rcode=int(data["rcode"]), records=tuple(data["records"]), ttl=int(data["ttl"])
        )

    async def wait_state_changed(self) -> State:
        """Wait until the connection state changes; return the new state."""
        await self._state_changed.wait()
        return self.info.state

    async def wait_cluster_changed(self) -> ClusterView:
        await self._cluster_changed.wait()
        return self.info.cluster

    async def wait_connected(self) -> None:
        with trio.move_on_after(self._connect_timeout):
            await self._connected.wait()
            return
        raise SessionError(
            f"could not reach the traffic-manager: {self.info.last_error or 'timed out'}"
        )

    # -- internals --------------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        if state is not self.info.state:
            self.info.state = state
            self._state_changed.set()
            self._state_changed = trio.Event()

    def _qualify(self, host: str) -> str:
        if _is_ip_literal(host):  # every TUN connection: inet_pton is ~10x ip_address
            return host
        verdict = self.policy.classify(host)
        return verdict.cluster_names[0] if verdict.cluster_names else host

    async def _current_mux(self) -> MuxSession:
        if self._mux is None or self._mux.closed:
            await self.wait_connected()
        assert self._mux is not None
        return self._mux

    def _set_cluster(self, data: dict[str, Any]) -> None:
        self.info.cluster = ClusterView.from_json(data)
        namespaces = frozenset(self.info.cluster.namespaces)
        if self.info.mapped_namespaces:
            namespaces &= frozenset(self.info.mapped_namespaces)
        self.policy = NamePolicy(
            namespace=self.info.namespace,
            cluster_domain=self.info.cluster.cluster_domain,
            namespaces=namespaces,
            cluster_networks=self.info.cluster.pod_cidrs + self.info.cluster.service_cidrs,
        )
        self._cluster_changed.set()
        self._cluster_changed = trio.Event()

    async def _supervise(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep a tunnel up; reconnect when it drops (waits: ``ReconnectBackoff``)."""
        backoff = ReconnectBackoff()
        started = False
        while True:
            try:
                async with self._connector() as mux:
                    await self._arrive(mux)
                    backoff.connected()
                    if not started:
                        started = True
                        task_status.started()
                    await self._serve(mux)
            except SessionError as exc:
                self.info.last_error = str(exc)
                if not started:
                    raise
            except BaseException as exc:
                problem = connection_problem(exc)
                if problem is None:
                    raise
                self.info.last_error = problem
                log.warning("tunnel to the traffic-manager lost: %s", problem)
            self._mux = None
            self._connected = trio.Event()
            if self.info.state is State.CONNECTED:
                self.info.reconnects += 1
            self._set_state(State.RECONNECTING if started else State.CONNECTING)
            await trio.sleep(backoff.next_delay(trio.current_time()))

    async def _arrive(self, mux: MuxSession) -> None:
        arrived = await mux.request(
            "arrive",
            {
                "session_id": self.info.session_id,
                "user": getpass.getuser(),
                "host": socket.gethostname(),
                "namespace": self.info.namespace,
                "version": __version__,
            },
        )
        self.info.session_id = arrived["session_id"]
        self.info.manager_version = arrived.get("manager_version", "")
        self._set_cluster(await mux.request("cluster_info"))
        self._mux = mux
        self.info.last_error = ""
        self._set_state(State.CONNECTED)
        self._connected.set()

    async def _serve(self, mux: MuxSession) -> None:
        async with trio.open_nursery() as nursery, mux.subscribe("cluster_info") as pushes:
            nursery.start_soon(self._keep_alive, mux)
            async for data in pushes:
                self._set_cluster(data)
            nursery.cancel_scope.cancel()
        await mux.wait_closed()

    async def _keep_alive(self, mux: MuxSession) -> None:
        while True:
            await trio.sleep(10)
            result = await mux.request("remain", {})
            if not result.get("ok"):
                await self._arrive(mux)  # the manager forgot us (restarted): arrive again


def _is_ip_literal(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False


_CONNECTION_ERRORS = (
    TunnelError,
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio_websocket.HandshakeError,
    trio_websocket.ConnectionClosed,
)


def connection_problem(exc: BaseException) -> str | None:
    """A one-line description when ``exc`` (or every exception in a group) means the
    carrier or the tunnel failed, else None (a bug: let it propagate)."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [connection_problem(e) for e in exc.exceptions]
        if all(leaf is not None for leaf in leaves):
            return "; ".join(dict.fromkeys(leaf for leaf in leaves if leaf))
        return None
    if isinstance(exc, _CONNECTION_ERRORS):
        cause = exc.__cause__ or exc.__context__
        text = str(exc) or type(exc).__name__
        if isinstance(exc, trio_websocket.HandshakeError) and cause is not None:
            inner = connection_problem(cause)
            text = inner or text
        return text
    return None


@asynccontextmanager
async def open_session_with(
    connector: Connector, info: SessionInfo, *, connect_timeout: float = 30.0
) -> AsyncIterator[Session]:
    """A session over ``connector`` (used by ``open_session`` and by tests).

    An exception from the block, or the session's own failure, comes out as itself, not
    wrapped in an exception group: callers should not need ``except*`` for a library.
    """
    session = Session(connector, info, connect_timeout=connect_timeout)
    try:
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(connect_timeout):
                    await nursery.start(session._supervise)
            except trio.TooSlowError:
                raise SessionError(
                    f"could not reach the traffic-manager in {connect_timeout:g} s: "
                    f"{session.info.last_error or 'no answer'}"
                ) from None
            try:
                yield session
            finally:
                await _depart(session)
                session._set_state(State.CLOSED)
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from group.exceptions[0].__cause__
        raise


async def _depart(session: Session) -> None:
    mux = session._mux
    if mux is None or mux.closed:
        return
    with trio.move_on_after(2) as scope:
        scope.shield = True
        try:
            await mux.request("depart", {})
        except (TunnelError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
