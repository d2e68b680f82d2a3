"""The engine process: ``python -m tpengine.engine`` (started by ``tp connect``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import AsyncIterator

import trio

from tpengine.config import LEVELS
from tpengine.engine._daemon import Engine, EngineOptions, helper_from_fd
from tpengine.engine._paths import logs_dir


def parse_args(argv: list[str] | None) -> tuple[EngineOptions, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="tpengine.engine")
    parser.add_argument("--namespace")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--context")
    parser.add_argument("--manager-namespace", default="tpengine")
    parser.add_argument("--also-proxy", action="append", default=[])
    parser.add_argument("--never-proxy", action="append", default=[])
    parser.add_argument("--allow-conflicting-subnets", action="append", default=[])
    parser.add_argument("--mapped-namespace", action="append", default=[])
    parser.add_argument("--image")
    parser.add_argument("--helper-fd", type=int)
    parser.add_argument("--pcap")
    parser.add_argument("--log-file")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    options = EngineOptions(
        namespace=args.namespace,
        kubeconfig=args.kubeconfig,
        context=args.context,
        manager_namespace=args.manager_namespace,
        also_proxy=args.also_proxy,
        never_proxy=args.never_proxy,
        allow_conflicting_subnets=args.allow_conflicting_subnets,
        mapped_namespaces=args.mapped_namespace,
        image=args.image,
        pcap=args.pcap,
    )
    return options, args


def main(argv: list[str] | None = None) -> None:
    options, args = parse_args(argv)
    logging.basicConfig(
        filename=args.log_file or str(logs_dir() / "engine.log"),
        level=LEVELS.get(args.log_level, logging.INFO),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    engine = Engine(options, helper_from_fd(args.helper_fd))

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_quit_on_signal, signals, nursery.cancel_scope)
                await engine.run()
                nursery.cancel_scope.cancel()
        if engine.helper is not None:
            await engine.helper.aclose()

    trio.run(run)
    sys.exit(1 if engine.failure else 0)


async def _quit_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for signum in signals:
        logging.getLogger("tp-engine").info("signal %d: quitting", signum)
        scope.cancel()
        return


if __name__ == "__main__":
    main()
