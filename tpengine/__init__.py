"""tpengine: join a Kubernetes cluster's network from your laptop, on trio.

The engine is a library first (``tpengine.open_session`` arrives with the connect
issue); the ``tp`` CLI is one of its users.
"""

from tpengine._version import __version__

__all__ = ["__version__"]
