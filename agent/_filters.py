"""The HTTP filters live in :mod:`tpengine.httpfilter` (shared by the CLI, the manager and
the agent); re-exported here for the agent's modules."""

from tpengine.httpfilter import FilterError, HttpFilter, parse_filter

__all__ = ["FilterError", "HttpFilter", "parse_filter"]
