"""The laptop's holder process: keeps its mount namespace alive and serves its resolver.

Started by ``tp local-cluster up`` inside ``<name>-laptop`` and a new mount namespace
(``unshare --mount --propagation slave``: host mounts still propagate in, the laptop's
own never leak out) and UTS namespace (its host name is its netns name). It bind-mounts the cluster-owned ``/etc/netns/<name>-laptop/
resolv.conf`` over ``/etc/resolv.conf``, then answers a few test names on
127.0.0.53:53 (``laptop.test``: this laptop's own address, ``node.test``) and NXDOMAIN
for everything else: the laptop has no uplink, so there is nothing to forward to.
``tp local-cluster exec [--laptop K]`` enters this process's netns and mount namespace.
Each laptop (``up --laptops N``) has its own holder, resolv.conf and resolver.

    python -m localcluster.node._laptop --resolv FILE [--address 198.18.0.6] [--hostname tp-laptop2]
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import socket
import subprocess
import sys

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import trio

from localcluster.node._dnsserver import serve_dns
from localcluster.node._topology import LAPTOP_DNS_IP, LAPTOP_IP, NODE_IP


def resolved_names(address: str = LAPTOP_IP) -> dict[str, str]:
    return {"laptop.test": address, "node.test": NODE_IP}


def answer(query: dns.message.Message, names: dict[str, str] | None = None) -> dns.message.Message:
    names = resolved_names() if names is None else names
    reply = dns.message.make_response(query)
    if len(query.question) != 1:
        reply.set_rcode(dns.rcode.FORMERR)
        return reply
    q = query.question[0]
    name = q.name.to_text(omit_final_dot=True).lower()
    if name not in names:
        reply.set_rcode(dns.rcode.NXDOMAIN)
    elif q.rdtype == dns.rdatatype.A:
        reply.answer.append(dns.rrset.from_text(q.name, 60, "IN", "A", names[name]))
    return reply


async def main_async(address: str) -> None:
    reply = functools.partial(answer, names=resolved_names(address))
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_dns, LAPTOP_DNS_IP, 53, reply)
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            async for _ in signals:
                nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resolv", required=True)
    parser.add_argument("--address", default=LAPTOP_IP, help="this laptop's own address")
    parser.add_argument("--hostname", help="this laptop's host name (in its own UTS namespace)")
    args = parser.parse_args()
    if args.hostname:
        # A developer's machine has its own name: tp's client names (user@host) tell
        # two laptops apart. Only in a UTS namespace of its own, never the host's name.
        parent = f"/proc/{os.getppid()}/ns/uts"  # tp local-cluster up, in the host's
        if os.stat("/proc/self/ns/uts").st_ino == os.stat(parent).st_ino:
            sys.exit("--hostname needs a UTS namespace of its own (unshare --uts)")
        socket.sethostname(args.hostname)
    # In place of /etc/resolv.conf for every process of the laptop (DESIGN.md, "the laptop").
    subprocess.run(["mount", "--bind", args.resolv, "/etc/resolv.conf"], check=True)
    trio.run(main_async, args.address)


if __name__ == "__main__":
    main()
