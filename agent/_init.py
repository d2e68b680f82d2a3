"""``tp-agent init``: the init container's REDIRECT rules (numeric target ports).

For each ``PROTO:APP_PORT:AGENT_PORT`` it makes the kernel deliver what was meant for the
app's port to the agent's: traffic arriving from outside the pod (nat prerouting) and
traffic the pod's own processes send over loopback (nat output: a sidecar calling
localhost, or the pod's own IP, which Linux routes through ``lo``). The agent's own
connections to the app are exempt by uid (``meta skuid``), or they would loop back to it.
Everything lives in one table, ``inet tpengine``, replaced whole in one ``nft -f``
transaction, so running init again gives the same rules (idempotent). Without ``nft``,
iptables (and ip6tables when present) get the same rules in chains ``TPENGINE-*``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

TABLE = "tpengine"


class InitError(Exception):
    """A bad argument or a failed rule install; the message is one line."""


@dataclass(frozen=True, kw_only=True)
class Redirect:
    proto: str  # "tcp" or "udp"
    app_port: int
    agent_port: int


def parse_redirect(spec: str) -> Redirect:
    parts = spec.split(":")
    if len(parts) != 3:
        raise InitError(f"{spec!r}: expected PROTO:APP_PORT:AGENT_PORT (e.g. tcp:8080:9900)")
    proto, app, agent = parts
    proto = proto.lower()
    if proto not in ("tcp", "udp"):
        raise InitError(f"{spec!r}: protocol must be tcp or udp, not {parts[0]!r}")
    ports = []
    for text in (app, agent):
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise InitError(f"{spec!r}: {text!r} is not a port number (1-65535)")
        ports.append(int(text))
    if ports[0] == ports[1]:
        raise InitError(f"{spec!r}: the app port and the agent port must differ")
    return Redirect(proto=proto, app_port=ports[0], agent_port=ports[1])


def nft_script(redirects: Sequence[Redirect], exempt_uid: int) -> str:
    """One atomic transaction: create-then-delete makes the delete safe on a first run."""
    inbound = [
        f"        {r.proto} dport {r.app_port} redirect to :{r.agent_port}" for r in redirects
    ]
    outbound = [
        f'        oifname "lo" {r.proto} dport {r.app_port} redirect to :{r.agent_port}'
        for r in redirects
    ]
    return "\n".join(
        [
            f"table inet {TABLE} {{}}",
            f"delete table inet {TABLE}",
            f"table inet {TABLE} {{",
            "    chain prerouting {",
            "        type nat hook prerouting priority dstnat; policy accept;",
            *inbound,
            "    }",
            "    chain output {",
            "        type nat hook output priority -100; policy accept;",
            f"        meta skuid {exempt_uid} return",
            *outbound,
            "    }",
            "}",
            "",
        ]
    )


def iptables_commands(
    redirects: Sequence[Redirect], exempt_uid: int, binary: str = "iptables"
) -> list[list[str]]:
    pre, out = "TPENGINE-PREROUTING", "TPENGINE-OUTPUT"
    commands: list[list[str]] = []
    for chain in (pre, out):
        commands.append([binary, "-w", "-t", "nat", "-N", chain])  # may exist: checked
        commands.append([binary, "-w", "-t", "nat", "-F", chain])
    commands.append(
        [
            binary,
            "-w",
            "-t",
            "nat",
            "-A",
            out,
            "-m",
            "owner",
            "--uid-owner",
            str(exempt_uid),
            "-j",
            "RETURN",
        ]
    )
    for r in redirects:
        target = ["-j", "REDIRECT", "--to-ports", str(r.agent_port)]
        match = ["-p", r.proto, "--dport", str(r.app_port)]
        commands.append([binary, "-w", "-t", "nat", "-A", pre, *match, *target])
        commands.append([binary, "-w", "-t", "nat", "-A", out, "-o", "lo", *match, *target])
    return commands


def _run(
    command: list[str], stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        raise InitError(f"{' '.join(command[:4])} failed: {why[0] if why else done.returncode}")
    return done


def _install_iptables(redirects: Sequence[Redirect], exempt_uid: int) -> None:
    for binary in ("iptables", "ip6tables"):
        if shutil.which(binary) is None:
            if binary == "iptables":
                raise InitError("neither nft nor iptables is installed in this image")
            continue
        for command in iptables_commands(redirects, exempt_uid, binary):
            _run(command, check="-N" not in command)  # -N fails when the chain exists
        for hook, chain in (("PREROUTING", "TPENGINE-PREROUTING"), ("OUTPUT", "TPENGINE-OUTPUT")):
            jump = ["-t", "nat", "-C", hook, "-j", chain]
            if _run([binary, "-w", *jump], check=False).returncode != 0:
                _run([binary, "-w", "-t", "nat", "-A", hook, "-j", chain])


def install(redirects: Sequence[Redirect], exempt_uid: int) -> str:
    """Install the rules; returns which tool did it."""
    if shutil.which("nft") is not None:
        _run(["nft", "-f", "-"], stdin=nft_script(redirects, exempt_uid))
        return "nft"
    _install_iptables(redirects, exempt_uid)
    return "iptables"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, as every failure of init (argparse would add the usage)."""
        self.exit(2, f"tp-agent init: {message} (see tp-agent init --help)\n")


def init_main(argv: Sequence[str]) -> int:
    parser = _Parser(
        prog="tp-agent init",
        description="Redirect an app's ports to the traffic-agent (run as an init container with NET_ADMIN).",
    )
    parser.add_argument(
        "--exempt-uid",
        type=int,
        required=True,
        help="the agent's uid, whose connections reach the app",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the nftables rules instead of installing them"
    )
    parser.add_argument("redirects", nargs="*", metavar="PROTO:APP_PORT:AGENT_PORT")
    args = parser.parse_args(list(argv))
    try:
        if not 0 <= args.exempt_uid < 2**32 - 1:
            raise InitError(f"--exempt-uid {args.exempt_uid} is not a uid")
        if not args.redirects:
            raise InitError("no redirects given (PROTO:APP_PORT:AGENT_PORT ...)")
        redirects = [parse_redirect(spec) for spec in args.redirects]
        if args.dry_run:
            sys.stdout.write(nft_script(redirects, args.exempt_uid))
            return 0
        tool = install(redirects, args.exempt_uid)
    except InitError as exc:
        print(f"tp-agent init: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tp-agent init: {exc}", file=sys.stderr)
        return 1
    shown = ", ".join(f"{r.proto}/{r.app_port} -> {r.agent_port}" for r in redirects)
    print(f"tp-agent init: redirected {shown} ({tool}); uid {args.exempt_uid} exempt")
    return 0
