"""The laptop's holder process: keeps its mount namespace alive and serves its resolver.

Started by ``tp local-cluster up`` inside ``<name>-laptop`` and a new mount namespace
(``unshare --mount --propagation slave``: host mounts still propagate in, the laptop's
own never leak out). It bind-mounts the cluster-owned ``/etc/netns/<name>-laptop/
resolv.conf`` over ``/etc/resolv.conf``, then answers a few test names on
127.0.0.53:53 (``laptop.test``, ``node.test``) and NXDOMAIN for everything else: the
laptop has no uplink, so there is nothing to forward to. ``tp local-cluster exec``
enters this process's netns and mount namespace.

    python -m localcluster.node._laptop --resolv FILE
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import trio

from localcluster.node._dnsserver import serve_dns
from localcluster.node._topology import LAPTOP_DNS_IP, LAPTOP_IP, NODE_IP

TEST_NAMES = {"laptop.test": LAPTOP_IP, "node.test": NODE_IP}


def answer(query: dns.message.Message) -> dns.message.Message:
    reply = dns.message.make_response(query)
    if len(query.question) != 1:
        reply.set_rcode(dns.rcode.FORMERR)
        return reply
    q = query.question[0]
    name = q.name.to_text(omit_final_dot=True).lower()
    if name not in TEST_NAMES:
        reply.set_rcode(dns.rcode.NXDOMAIN)
    elif q.rdtype == dns.rdatatype.A:
        reply.answer.append(dns.rrset.from_text(q.name, 60, "IN", "A", TEST_NAMES[name]))
    return reply


async def main_async() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_dns, LAPTOP_DNS_IP, 53, answer)
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            async for _ in signals:
                nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resolv", required=True)
    args = parser.parse_args()
    # In place of /etc/resolv.conf for every process of the laptop (DESIGN.md, "the laptop").
    subprocess.run(["mount", "--bind", args.resolv, "/etc/resolv.conf"], check=True)
    trio.run(main_async)


if __name__ == "__main__":
    main()
