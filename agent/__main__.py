"""Entry point of ``tp-agent``: the traffic-agent sidecar, or ``tp-agent init``."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence

import trio

from ._agent import Agent
from ._config import ConfigError, load_config
from ._init import init_main

USAGE = """usage: tp-agent            run the traffic-agent (configured by TP_AGENT_CONFIG)
       tp-agent init ...   install the REDIRECT rules (init container); see --help
"""


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def run_agent() -> int:
    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        print(f"tp-agent: {exc}", file=sys.stderr)
        return 2
    level = getattr(logging, os.environ.get("TP_LOG_LEVEL", "INFO").upper(), logging.INFO)
    logging.basicConfig(
        level=level if isinstance(level, int) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    agent = Agent(config, listen_host=os.environ.get("TP_AGENT_LISTEN_HOST", "0.0.0.0"))
    try:
        trio.run(_serve_until_stopped, agent)
    except KeyboardInterrupt:
        return 0
    except BaseException as exc:  # one line for the user: a port in use, say
        leaf = _leaf(exc)
        if isinstance(leaf, OSError):
            print(f"tp-agent: cannot listen on the agent ports: {leaf}", file=sys.stderr)
            return 1
        raise
    return 0


async def _serve_until_stopped(agent: Agent) -> None:
    """Run until SIGTERM (the kubelet stopping the pod) or SIGINT; leaving the nursery
    closes the tunnel with a GOAWAY, so the manager sees the agent depart at once."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent.run)
            async for signum in signals:
                logging.getLogger("agent").info("stopping on %s", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["init"]:
        sys.exit(init_main(args[1:]))
    if args in (["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        sys.exit(0)
    if args:
        sys.stderr.write(f"tp-agent: unknown arguments {' '.join(args)}\n{USAGE}")
        sys.exit(2)
    sys.exit(run_agent())


if __name__ == "__main__":
    main()
