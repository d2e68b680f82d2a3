"""Cluster DNS answers, and the server core's handling of malformed queries."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
from hypothesis import given
from hypothesis import strategies as st

from localcluster.node._clusterdns import build_records, make_answerer
from localcluster.node._dnsserver import respond

SERVICES = [
    {
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "clusterIP": "10.96.5.5",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        },
    },
    {
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]},
    },
]
ENDPOINTS = [
    {
        "metadata": {"name": "db", "namespace": "shop"},
        "subsets": [
            {
                "addresses": [{"ip": "10.244.0.3", "hostname": "db-0"}],
                "ports": [{"name": "pg", "port": 5432}],
            }
        ],
    },
]
PODS = [
    {
        "metadata": {"name": "db-0", "namespace": "shop"},
        "spec": {"hostname": "db-0", "subdomain": "db"},
        "status": {"podIP": "10.244.0.3", "conditions": [{"type": "Ready", "status": "True"}]},
    },
    {
        "metadata": {"name": "db-1", "namespace": "shop"},
        "spec": {"hostname": "db-1", "subdomain": "db"},
        "status": {"podIP": "10.244.0.4", "conditions": [{"type": "Ready", "status": "False"}]},
    },
]

answer = make_answerer(lambda: build_records(SERVICES, ENDPOINTS, PODS))


def ask(name: str, rdtype: str = "A") -> dns.message.Message:
    return answer(dns.message.make_query(name, rdtype))


def values(reply: dns.message.Message) -> list[str]:
    return sorted(r.to_text() for rrset in reply.answer for r in rrset)


def test_cluster_ip_service() -> None:
    reply = ask("web.shop.svc.cluster.local")
    assert reply.rcode() == dns.rcode.NOERROR and values(reply) == ["10.96.5.5"]
    assert reply.flags & dns.flags.AA


def test_headless_service_answers_ready_pods_and_pod_names() -> None:
    assert values(ask("db.shop.svc.cluster.local")) == ["10.244.0.3"]  # db-1 is not ready
    assert values(ask("db-0.db.shop.svc.cluster.local")) == ["10.244.0.3"]
    assert ask("db-1.db.shop.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN


def test_srv_for_named_ports() -> None:
    assert values(ask("_http._tcp.web.shop.svc.cluster.local", "SRV")) == [
        "0 100 80 web.shop.svc.cluster.local."
    ]
    assert values(ask("_pg._tcp.db.shop.svc.cluster.local", "SRV")) == [
        "0 100 5432 db-0.db.shop.svc.cluster.local."
    ]


def test_ptr_for_services_and_pods() -> None:
    assert values(ask("5.5.96.10.in-addr.arpa", "PTR")) == ["web.shop.svc.cluster.local."]
    assert values(ask("3.0.244.10.in-addr.arpa", "PTR")) == ["db-0.db.shop.svc.cluster.local."]
    assert values(ask("4.0.244.10.in-addr.arpa", "PTR")) == ["10-244-0-4.shop.pod.cluster.local."]


def test_unknown_and_outside_names_are_nxdomain_never_forwarded() -> None:
    for name in (
        "nope.shop.svc.cluster.local",
        "example.com",
        "web.shop.svc.cluster.local.example.com",
    ):
        reply = ask(name)
        assert reply.rcode() == dns.rcode.NXDOMAIN and not reply.answer
        assert not reply.flags & dns.flags.RA


def test_existing_name_other_type_is_nodata() -> None:
    reply = ask("web.shop.svc.cluster.local", "AAAA")
    assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
    assert ask("svc.cluster.local").rcode() == dns.rcode.NOERROR


def test_respond_over_wire() -> None:
    query = dns.message.make_query("web.shop.svc.cluster.local", "A")
    wire = respond(query.to_wire(), answer, udp=True)
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.id == query.id and values(reply) == ["10.96.5.5"]


def test_garbage_gets_formerr_or_is_dropped() -> None:
    assert respond(b"\x01\x02", answer, udp=True) is None
    wire = respond(b"\xab\xcd" + b"\xff" * 20, answer, udp=True)
    assert wire is not None and wire[:2] == b"\xab\xcd" and wire[3] & 0x0F == dns.rcode.FORMERR


@given(st.binary(max_size=600))
def test_any_bytes_never_crash_the_server_core(data: bytes) -> None:
    reply = respond(data, answer, udp=True)
    assert reply is None or len(reply) >= 12
