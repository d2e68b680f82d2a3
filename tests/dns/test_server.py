"""The trio UDP/TCP drivers on loopback, queried by dnspython as any client would."""

from __future__ import annotations

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import trio

from tests.dns.test_resolver import FakeWorld, make
from tpengine.dns import ClusterAnswer, NamePolicy, Resolver, UdpUpstream, serve_dns


async def test_udp_and_tcp_queries(nursery: trio.Nursery) -> None:
    host, port = await nursery.start(serve_dns, make(FakeWorld()), "127.0.0.1", 0)
    query = dns.message.make_query("web.shop", "A")
    udp = await dns.asyncquery.udp(query, host, port=port, timeout=5)
    assert udp.answer[0][0].to_text() == "10.96.0.8"
    tcp = await dns.asyncquery.tcp(query, host, port=port, timeout=5)
    assert tcp.answer[0][0].to_text() == "10.96.0.8"


async def test_big_answer_is_truncated_over_udp_and_complete_over_tcp(
    nursery: trio.Nursery,
) -> None:
    many = tuple(f"10.244.{i // 250}.{i % 250 + 1}" for i in range(200))

    async def lookup(fqdn: str, rdtype: int) -> ClusterAnswer:
        return ClusterAnswer(rcode=dns.rcode.NOERROR, records=many)

    resolver = Resolver(
        NamePolicy(namespace="default"),
        cluster_lookup=lookup,
        upstream=None,
        clock=trio.current_time,
    )
    host, port = await nursery.start(serve_dns, resolver, "127.0.0.1", 0)
    query = dns.message.make_query("big", "A")
    udp = await dns.asyncquery.udp(query, host, port=port, timeout=5, ignore_trailing=True)
    assert udp.flags & dns.flags.TC
    tcp = await dns.asyncquery.tcp(query, host, port=port, timeout=5)
    assert len(tcp.answer[0]) == 200


async def test_forwarding_to_a_previous_resolver(nursery: trio.Nursery) -> None:
    # The "previous resolver" is a second server on loopback that answers public names.
    upstream_host, upstream_port = await nursery.start(serve_dns, make(FakeWorld()), "127.0.0.2", 0)
    world = FakeWorld()
    resolver = Resolver(
        NamePolicy(namespace="default"),
        cluster_lookup=world.lookup,
        upstream=UdpUpstream([upstream_host], port=upstream_port, timeout=2),
        clock=trio.current_time,
    )
    host, port = await nursery.start(serve_dns, resolver, "127.0.0.1", 0)
    reply = await dns.asyncquery.udp(
        dns.message.make_query("example.com", "A"), host, port=port, timeout=5
    )
    assert reply.answer[0][0].to_text() == "192.0.2.1"
    assert world.cluster_calls == []


async def test_unreachable_upstream_is_servfail(nursery: trio.Nursery) -> None:
    world = FakeWorld()
    resolver = Resolver(
        NamePolicy(namespace="default"),
        cluster_lookup=world.lookup,
        upstream=UdpUpstream(["127.0.0.3"], port=9, timeout=0.5),
        clock=trio.current_time,
    )
    host, port = await nursery.start(serve_dns, resolver, "127.0.0.1", 0)
    reply = await dns.asyncquery.udp(
        dns.message.make_query("example.com", "A"), host, port=port, timeout=5
    )
    assert reply.rcode() == dns.rcode.SERVFAIL
