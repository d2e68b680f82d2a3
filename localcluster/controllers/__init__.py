"""Controllers: workloads, endpoints, namespaces' defaults, garbage collection (in the store)."""

from ._manager import DEFAULT_NAMESPACES, bootstrap, run_controllers

__all__ = ["DEFAULT_NAMESPACES", "bootstrap", "run_controllers"]
