"""The resolver with hand-driven time and an in-test cluster (a unit test of one piece)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
from hypothesis import given
from hypothesis import strategies as st

from tpengine.dns import ClusterAnswer, NamePolicy, Resolver, UpstreamError

CLUSTER = {
    ("web.default.svc.cluster.local", dns.rdatatype.A): ("10.96.0.7",),
    ("web.shop.svc.cluster.local", dns.rdatatype.A): ("10.96.0.8",),
    ("_http._tcp.web.default.svc.cluster.local", dns.rdatatype.SRV): (
        "0 100 80 web.default.svc.cluster.local.",
    ),
}


class FakeWorld:
    def __init__(self) -> None:
        self.now = 0.0
        self.cluster_calls: list[tuple[str, int]] = []
        self.upstream_calls = 0
        self.upstream_down = False

    def clock(self) -> float:
        return self.now

    async def lookup(self, fqdn: str, rdtype: int) -> ClusterAnswer:
        self.cluster_calls.append((fqdn, rdtype))
        records = CLUSTER.get((fqdn, rdtype))
        if records is None and (fqdn, dns.rdatatype.A) in CLUSTER:
            return ClusterAnswer(rcode=dns.rcode.NOERROR)  # NODATA: the name has no such type
        if records is None:
            return ClusterAnswer(rcode=dns.rcode.NXDOMAIN)
        return ClusterAnswer(rcode=dns.rcode.NOERROR, records=records, ttl=30)

    async def upstream(self, wire: bytes) -> bytes:
        self.upstream_calls += 1
        if self.upstream_down:
            raise UpstreamError("down")
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.answer.append(
            dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "192.0.2.1")
        )
        return response.to_wire()


def make(world: FakeWorld) -> Resolver:
    return Resolver(
        NamePolicy(namespace="default", namespaces=frozenset({"default", "shop"})),
        cluster_lookup=world.lookup,
        upstream=world.upstream,
        clock=world.clock,
    )


async def ask(resolver: Resolver, name: str, rdtype: str = "A") -> dns.message.Message:
    reply = await resolver.answer(dns.message.make_query(name, rdtype).to_wire())
    assert reply is not None
    return dns.message.from_wire(reply)


async def test_short_name_answers_under_the_asked_name() -> None:
    world = FakeWorld()
    reply = await ask(make(world), "web")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer[0].name.to_text() == "web."
    assert [r.to_text() for r in reply.answer[0]] == ["10.96.0.7"]
    assert reply.answer[0].ttl == 10  # capped: cluster answers must not linger


async def test_namespace_qualified_and_srv() -> None:
    world = FakeWorld()
    resolver = make(world)
    assert (await ask(resolver, "web.shop")).answer[0][0].to_text() == "10.96.0.8"
    srv = await ask(resolver, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert srv.answer[0][0].to_text() == "0 100 80 web.default.svc.cluster.local."


async def test_candidate_falls_back_upstream_but_definite_does_not() -> None:
    world = FakeWorld()
    resolver = make(world)
    assert (await ask(resolver, "printer")).answer[0][0].to_text() == "192.0.2.1"
    assert world.upstream_calls == 1
    missing = await ask(resolver, "nope.default.svc.cluster.local")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert world.upstream_calls == 1


async def test_public_names_never_reach_the_cluster() -> None:
    world = FakeWorld()
    reply = await ask(make(world), "example.com")
    assert reply.answer[0][0].to_text() == "192.0.2.1"
    assert world.cluster_calls == []


async def test_cache_expires_with_time() -> None:
    world = FakeWorld()
    resolver = make(world)
    await ask(resolver, "web")
    world.now = 9.9
    await ask(resolver, "web")
    assert len(world.cluster_calls) == 1
    world.now = 10.0
    await ask(resolver, "web")
    assert len(world.cluster_calls) == 2


async def test_upstream_failure_is_servfail() -> None:
    world = FakeWorld()
    world.upstream_down = True
    reply = await ask(make(world), "example.com")
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert reply.flags & dns.flags.QR


async def test_garbage_gets_formerr_or_nothing() -> None:
    resolver = make(FakeWorld())
    assert await resolver.answer(b"\x01") is None
    reply = await resolver.answer(b"\x12\x34\x01\x00" + b"\xff" * 20)
    assert reply is not None and reply[:2] == b"\x12\x34"
    assert reply[3] & 0x0F == dns.rcode.FORMERR


@given(st.binary(max_size=600))
async def test_fuzz_never_raises(data: bytes) -> None:
    reply = await make(FakeWorld()).answer(data)
    if reply is not None:
        dns.message.from_wire(reply)


async def test_nodata_is_cached_briefly() -> None:
    world = FakeWorld()
    resolver = make(world)
    reply = await ask(resolver, "web", "AAAA")  # the service has no IPv6 address
    assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
    calls = len(world.cluster_calls)
    await ask(resolver, "web", "AAAA")
    assert len(world.cluster_calls) == calls


async def test_repeated_question_is_answered_with_its_own_id() -> None:
    world = FakeWorld()
    resolver = make(world)
    first = dns.message.make_query("web", "A")
    second = dns.message.make_query("web", "A")
    second.id = first.id ^ 0x5A5A  # a different client query id, for certain
    await resolver.answer(first.to_wire())
    reply = await resolver.answer(second.to_wire())
    assert reply is not None
    parsed = dns.message.from_wire(reply)
    assert parsed.id == second.id and parsed.answer[0][0].to_text() == "10.96.0.7"
    assert len(world.cluster_calls) == 1
