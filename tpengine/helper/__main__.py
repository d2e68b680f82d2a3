"""Entry point of ``tp-helper``: ``tp-helper --fd N``.

Started by ``tp connect`` (as root, or through sudo) with one end of a SOCK_SEQPACKET
socketpair as file descriptor N; the engine holds the other end. It never prompts, never
runs a shell, and exits (undoing everything) when that connection ends.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from typing import Any, NoReturn

from tpengine.helper._resolvconf import ResolvConf
from tpengine.helper._server import Helper, peer_uid


def _open_tun(name: str) -> tuple[int, dict[str, Any]]:
    from tpengine.helper._tun import open_tun_for_engine

    return open_tun_for_engine(name)


def _exit_on_signal(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tp-helper", description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="the engine's socket")
    parser.add_argument("--uid", type=int, default=None, help="the only uid allowed to talk to it")
    parser.add_argument("--log-file", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        filename=args.log_file,
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if os.geteuid() != 0:
        print("tp-helper: must run as root (tp connect starts it with sudo)", file=sys.stderr)
        sys.exit(1)
    try:
        sock = socket.socket(fileno=args.fd)
    except OSError as exc:
        print(f"tp-helper: --fd {args.fd} is not a socket: {exc}", file=sys.stderr)
        sys.exit(2)
    allowed = args.uid if args.uid is not None else int(os.environ.get("SUDO_UID", "0"))
    if peer_uid(sock) not in (allowed, 0):
        print("tp-helper: the peer is not the user who started tp connect", file=sys.stderr)
        sys.exit(1)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_on_signal)
    # The terminal that ran tp connect may close: only the engine's socket ends the helper.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    Helper(sock, open_tun=_open_tun, resolv=ResolvConf()).serve()


if __name__ == "__main__":
    main()
