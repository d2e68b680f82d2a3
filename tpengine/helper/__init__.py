"""The privileged helper: the only code that runs as root.

It creates the TUN device and passes its descriptor to the engine, adds and removes
routes, points DNS at the engine and restores it, unmounts the engine's mounts, and undoes
all of it when the engine's connection ends. ``HelperClient`` is the engine's side.
"""

from tpengine.helper.client import HelperClient, HelperError, start_helper

__all__ = ["HelperClient", "HelperError", "start_helper"]
