"""Telepresence's text formats for engagements."""

from __future__ import annotations

from tpengine.cli._engage_cmd import describe, render_block, render_list

ENGAGEMENT = {
    "kind": "intercept",
    "name": "web",
    "state": "ACTIVE",
    "workload": "web",
    "workload_kind": "Deployment",
    "filter": {"headers": [["x-user", "susan"]]},
    "pods": [{"name": "web-1", "ip": "10.244.0.13"}],
    "local_ports": [{"local": 8080, "container_port": 8080, "protocol": "TCP", "service_port": 80}],
    "address": "127.0.0.1",
    "service": "web",
}


def test_intercept_block_as_telepresence_prints_it() -> None:
    assert render_block(describe(ENGAGEMENT)).splitlines() == [
        "   Intercept name: web",
        "   State         : ACTIVE",
        "   Workload kind : Deployment",
        "   Intercepting  : 10.244.0.13 -> 127.0.0.1",
        "       8080 -> 8080 TCP",
        "   Intercepting  : HTTP requests with header 'x-user: susan'",
    ]


def test_service_less_engagement_shows_its_address() -> None:
    lines = render_block(describe({**ENGAGEMENT, "service": None, "filter": {}})).splitlines()
    assert "   Address       : 10.244.0.13:8080" in lines


def test_list() -> None:
    data = {
        "workloads": [
            {"kind": "Deployment", "name": "echo-no-svc", "agent_installed": False},
            {"kind": "Deployment", "name": "web", "agent_installed": True},
        ],
        "engagements": [ENGAGEMENT],
    }
    lines = render_list(data).splitlines()
    assert lines[0] == "deployment echo-no-svc: ready to engage (traffic-agent not yet installed)"
    assert lines[1] == "deployment web        : intercepted"
    assert render_list({"workloads": []}) == "No Workloads (Deployments, StatefulSets, ReplicaSets)"
