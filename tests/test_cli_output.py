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


def test_status_counts_the_engagements_and_lists_them() -> None:
    from tpengine.cli._connect_cmd import render_status

    info = {
        "engine": {
            "version": "v0.1.0",
            "status": "Connected",
            "namespace": "default",
            "engagements": [
                {"name": "web", "kind": "intercept", "namespace": "default"},
                {"name": "db", "kind": "replace", "namespace": "shop", "problem": "port taken"},
            ],
        },
        "network": {"tun": "tp0", "dns": "198.19.0.1", "subnets": ["10.96.0.0/12"]},
    }
    lines = render_status(info).splitlines()
    at = lines.index("  Engagements       : 2 total")
    assert lines[at + 1 : at + 3] == [
        "    web: intercept in default",
        "    db: replace in shop (port taken)",
    ]
