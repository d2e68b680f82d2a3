"""``tpengine.open_session``: the engine as a library, without a TUN and without root."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import trio

from tpengine.engine._kube import ensure_manager, open_api, port_forward_connector
from tpengine.engine._session import Session, SessionInfo, open_session_with


async def _silent(text: str) -> None:
    await trio.lowlevel.checkpoint()


@asynccontextmanager
async def open_session(
    *,
    namespace: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    manager_namespace: str = "tpengine",
    install: bool = True,
    image: str | None = None,
    progress: Callable[[str], Awaitable[None]] = _silent,
    connect_timeout: float = 30.0,
    mapped_namespaces: Sequence[str] = (),
) -> AsyncIterator[Session]:
    """Connect to the cluster of ``context`` (kubeconfig rules as kubectl's) for the
    duration of the block::

        async with tpengine.open_session(namespace="default") as session:
            stream = await session.open_tcp_stream("web", 80)

    The traffic-manager is installed when missing (``install=False`` refuses instead).
    ``mapped_namespaces`` limits the names ``resolve`` and ``open_tcp_stream`` take from
    the cluster to those namespaces (and ``namespace``), as ``--mapped-namespaces``.
    Raises :class:`tpengine.SessionError` with a one-line reason when it cannot connect.
    """
    api, target = await open_api(kubeconfig=kubeconfig, context=context, namespace=namespace)
    if install:
        await progress(
            await ensure_manager(api, namespace=manager_namespace, image=image, progress=progress)
        )
    info = SessionInfo(
        namespace=target.namespace,
        manager_namespace=manager_namespace,
        context=target.context,
        server=target.server,
        mapped_namespaces=tuple(mapped_namespaces),
    )
    async with open_session_with(
        port_forward_connector(api, manager_namespace), info, connect_timeout=connect_timeout
    ) as session:
        yield session
