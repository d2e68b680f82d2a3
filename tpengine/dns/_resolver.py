"""Answering one DNS query: from the cluster (through the manager) or from upstream.

The resolver is transport-free: it takes the query's wire bytes and returns the reply's,
with the two ways of finding an answer injected (``cluster_lookup`` asks the manager,
``upstream`` forwards to the resolver the laptop had before). The clock is injected too,
so the cache is tested with hand-driven time.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from tpengine.dns._cache import TtlCache
from tpengine.dns._policy import NamePolicy, Route

#: Record types the manager looks up in the cluster (design: A, AAAA, PTR, SRV).
CLUSTER_TYPES = frozenset(
    {dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.PTR, dns.rdatatype.SRV}
)


@dataclass(frozen=True, kw_only=True)
class ClusterAnswer:
    """What the cluster knows about one name and type."""

    rcode: int  # dns.rcode.NOERROR, NXDOMAIN or SERVFAIL
    records: tuple[str, ...] = ()  # rdata in presentation format ("10.96.0.7")
    ttl: int = 5


class UpstreamError(Exception):
    """The previous resolver did not answer (timeout, refused)."""


ClusterLookup = Callable[[str, int], Awaitable[ClusterAnswer]]
Upstream = Callable[[bytes], Awaitable[bytes]]


class Resolver:
    """Turns query bytes into reply bytes following a :class:`NamePolicy`."""

    def __init__(
        self,
        policy: NamePolicy,
        *,
        cluster_lookup: ClusterLookup,
        upstream: Upstream | None,
        clock: Callable[[], float],
        max_ttl: int = 10,
        negative_ttl: int = 2,
    ) -> None:
        self.policy = policy
        self._cluster_lookup = cluster_lookup
        self._upstream = upstream
        self._clock = clock
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._cache: TtlCache[tuple[str, int], ClusterAnswer] = TtlCache()
        self._replies: TtlCache[tuple[str, int, int, int, int], bytes] = TtlCache()

    def set_policy(self, policy: NamePolicy) -> None:
        self.policy = policy
        self._cache.clear()
        self._replies.clear()

    async def answer(self, wire: bytes) -> bytes | None:
        """The reply to ``wire``, or None when it is not even a DNS header (dropped)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return format_error(wire)
        if query.flags & dns.flags.QR:
            return None  # a response: answering it could start a loop between resolvers
        if query.opcode() != dns.opcode.QUERY:
            return _reply(query, dns.rcode.NOTIMP).to_wire()
        if len(query.question) != 1:
            return _reply(query, dns.rcode.FORMERR).to_wire()
        question = query.question[0]
        # A repeated question is answered from the rendered reply (only the ID differs):
        # building a dnspython message costs far more than the lookup it caches.
        key = (
            question.name.to_text(),
            question.rdtype,
            query.flags & dns.flags.RD,
            query.edns,
            query.payload,
        )
        rendered = self._replies.get(key, self._clock())
        if rendered is not None:
            return wire[:2] + rendered[2:]
        qname = question.name.to_text(omit_final_dot=True)
        verdict = self.policy.classify(qname)
        if verdict.route is not Route.UPSTREAM and question.rdtype in CLUSTER_TYPES:
            found = await self._ask_cluster(verdict.cluster_names, question.rdtype)
            if found.rcode == dns.rcode.NOERROR or verdict.route is Route.DEFINITE:
                reply = _cluster_reply(query, question, found, self._max_ttl)
                self._replies.put(key, reply, self._cache_ttl(found), self._clock())
                return reply
        elif verdict.route is Route.DEFINITE:
            # A cluster name of a type the cluster does not serve (MX, TXT…): no data.
            return _reply(query, dns.rcode.NOERROR).to_wire()
        return await self._forward(query, wire)

    async def _ask_cluster(self, names: tuple[str, ...], rdtype: int) -> ClusterAnswer:
        answer = ClusterAnswer(rcode=dns.rcode.NXDOMAIN)
        for fqdn in names:
            now = self._clock()
            cached = self._cache.get((fqdn, rdtype), now)
            if cached is None:
                cached = await self._cluster_lookup(fqdn, rdtype)
                ttl = self._cache_ttl(cached)
                self._cache.put((fqdn, rdtype), cached, ttl, self._clock())
            if cached.rcode != dns.rcode.NXDOMAIN:
                return cached
            answer = cached
        return answer

    def _cache_ttl(self, answer: ClusterAnswer) -> float:
        """Positive answers for their TTL (capped); NXDOMAIN and NODATA (no records of
        this type, e.g. AAAA of an IPv4 service) for the negative TTL, as RFC 2308 §5
        allows; failures are not cached."""
        if answer.rcode == dns.rcode.NOERROR and answer.records:
            return min(answer.ttl, self._max_ttl)
        if answer.rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return self._negative_ttl
        return 0

    async def _forward(self, query: dns.message.Message, wire: bytes) -> bytes:
        if self._upstream is None:
            return _reply(query, dns.rcode.NXDOMAIN).to_wire()
        try:
            return await self._upstream(wire)
        except UpstreamError:
            return _reply(query, dns.rcode.SERVFAIL).to_wire()


def _reply(query: dns.message.Message, rcode: int) -> dns.message.Message:
    response = dns.message.make_response(query)
    response.flags |= dns.flags.RA
    response.set_rcode(dns.rcode.Rcode(rcode))
    return response


def _cluster_reply(
    query: dns.message.Message, question: dns.rrset.RRset, found: ClusterAnswer, max_ttl: int
) -> bytes:
    response = _reply(query, found.rcode)
    if found.rcode == dns.rcode.NOERROR and found.records:
        # Answer under the name that was asked (``web``), not the expanded FQDN: the
        # client matches answers to its question by name (RFC 1034 §4.3.2).
        rrset = dns.rrset.from_text_list(
            question.name,
            min(found.ttl, max_ttl),
            dns.rdataclass.IN,
            question.rdtype,
            list(found.records),
        )
        response.answer.append(rrset)
    return response.to_wire()


def format_error(wire: bytes) -> bytes | None:
    """A FORMERR reply (RFC 1035 §4.1.1) for a query that does not parse, else None."""
    if len(wire) < 12:
        return None
    (query_id, flags) = struct.unpack_from("!HH", wire)
    if flags & 0x8000:  # a response, not a query: never answer it
        return None
    reply_flags = 0x8000 | (flags & 0x0100) | dns.rcode.FORMERR
    return struct.pack("!HHHHHH", query_id, reply_flags, 0, 0, 0, 0)
