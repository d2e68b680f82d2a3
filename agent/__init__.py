"""tpengine agent (cluster side): the ``traffic-agent`` sidecar and ``tp-agent init``.

Public surface (the contract with the manager is ``agent/CONTRACT.md``)::

    config = load_config(os.environ)          # TP_AGENT_CONFIG + the webhook's env
    agent = Agent(config)                     # listeners, routing, tunnel to the manager
    await agent.run()                         # in a trio nursery; runs until cancelled

Modules: ``_config`` (configuration), ``_engagements`` (what the manager pushes and what
it means per port), ``_agent`` (listeners, routing, the tunnel), ``_http1`` and ``_h2c``
(per-request and per-stream HTTP routing), ``_wiretap`` (copies), ``_topod``
(``--to-pod`` dials), ``_udp`` (UDP ports), ``_replace`` (the app's own ports during a
replace), ``_init`` (REDIRECT rules), ``_filters`` (HTTP filters, shared with the manager).
"""

from ._agent import Agent, ClientUnreachable
from ._config import AgentConfig, ConfigError, PortSpec, load_config
from ._engagements import Engagement, PortPlan, parse_engagements, plan_for
from ._filters import FilterError, HttpFilter, parse_filter
from ._h2c import H2Router
from ._http1 import Http1Router, Route, looks_like_http1

__all__ = [
    "Agent",
    "AgentConfig",
    "ClientUnreachable",
    "ConfigError",
    "Engagement",
    "FilterError",
    "H2Router",
    "Http1Router",
    "HttpFilter",
    "PortPlan",
    "PortSpec",
    "Route",
    "load_config",
    "looks_like_http1",
    "parse_engagements",
    "parse_filter",
    "plan_for",
]
