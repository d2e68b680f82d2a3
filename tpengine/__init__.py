"""tpengine: join a Kubernetes cluster's network from your laptop, on trio.

The engine is a library first::

    async with tpengine.open_session(namespace="default") as session:
        stream = await session.open_tcp_stream("web", 80)

``tp`` (the CLI) adds the TUN device, the userspace network stack and the DNS resolver
on top, through a small privileged helper.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tpengine._version import __version__

if TYPE_CHECKING:
    from tpengine.engine._public import open_session
    from tpengine.engine._session import Session, SessionError

__all__ = ["Session", "SessionError", "__version__", "open_session"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `tp --help` and the cluster side need none of it.
    if name == "open_session":
        from tpengine.engine._public import open_session

        return open_session
    if name in ("Session", "SessionError"):
        from tpengine.engine import _session

        return getattr(_session, name)
    raise AttributeError(f"module 'tpengine' has no attribute {name!r}")
