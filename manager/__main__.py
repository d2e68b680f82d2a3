"""Entry point of ``tp-manager`` (the traffic-manager Deployment runs it)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import trio


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tp-manager", description="tpengine traffic-manager")
    parser.add_argument("--namespace", default=os.environ.get("TP_MANAGER_NAMESPACE", "tpengine"))
    parser.add_argument(
        "--tunnel-port", type=int, default=int(os.environ.get("TP_TUNNEL_PORT", "8081"))
    )
    parser.add_argument(
        "--health-port", type=int, default=int(os.environ.get("TP_HEALTH_PORT", "8082"))
    )
    # A client not heard from for this long loses its session and its engagements
    # (the engine says `remain` every 10 s). TP_SESSION_TIMEOUT lets a manifest set it.
    parser.add_argument(
        "--session-timeout",
        type=float,
        default=float(os.environ.get("TP_SESSION_TIMEOUT", "30")),
    )
    parser.add_argument("--log-level", default=os.environ.get("TP_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from manager.server import Manager, ManagerSettings

    settings = ManagerSettings(
        namespace=args.namespace,
        tunnel_port=args.tunnel_port,
        health_port=args.health_port,
        session_timeout=args.session_timeout,
        agent_image=os.environ.get("TP_AGENT_IMAGE", "tpengine/tpengine"),
    )

    async def run() -> None:
        import kr8s.asyncio

        api = await kr8s.asyncio.api()
        await Manager(settings, api).run()

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
