"""The Service proxy's nftables ruleset."""

from __future__ import annotations

import os
import subprocess

import pytest

from localcluster.node import render_ruleset


def svc(name: str, ip: str, ports: list[dict]) -> dict:
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"clusterIP": ip, "ports": ports},
    }


def eps(name: str, subsets: list[dict]) -> dict:
    return {"metadata": {"name": name, "namespace": "ns"}, "subsets": subsets}


SERVICES = [
    svc("web", "10.96.1.1", [{"name": "http", "port": 80, "targetPort": "http"}]),
    svc(
        "dns",
        "10.96.1.2",
        [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53}],
    ),
    svc("headless", "None", [{"port": 80}]),
    svc("empty", "10.96.1.3", [{"port": 80}]),
]
ENDPOINTS = [
    eps(
        "web",
        [
            {
                "addresses": [{"ip": "10.244.0.2"}, {"ip": "10.244.0.3"}],
                "ports": [{"name": "http", "port": 8080}],
            }
        ],
    ),
    eps(
        "dns",
        [
            {
                "addresses": [{"ip": "10.244.0.4"}],
                "ports": [
                    {"name": "dns", "port": 5353, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 5354},
                ],
            }
        ],
    ),
    eps("headless", [{"addresses": [{"ip": "10.244.0.5"}], "ports": [{"port": 80}]}]),
]

SCRIPT = render_ruleset("tp-unit", SERVICES, ENDPOINTS)


def test_cluster_ip_is_load_balanced_to_named_target_ports() -> None:
    assert (
        "ip daddr 10.96.1.1 tcp dport 80 dnat ip to numgen random mod 2 map "
        "{ 0 : 10.244.0.2 . 8080, 1 : 10.244.0.3 . 8080 }" in SCRIPT
    )


def test_udp_and_tcp_ports_map_separately() -> None:
    assert (
        "ip daddr 10.96.1.2 udp dport 53 dnat ip to numgen random mod 1 map { 0 : 10.244.0.4 . 5353 }"
        in SCRIPT
    )
    assert (
        "ip daddr 10.96.1.2 tcp dport 53 dnat ip to numgen random mod 1 map { 0 : 10.244.0.4 . 5354 }"
        in SCRIPT
    )


def test_hairpin_masquerade_per_endpoint_and_none_for_headless() -> None:
    for ip in ("10.244.0.2", "10.244.0.3", "10.244.0.4"):
        assert f"ip saddr {ip} ip daddr {ip} masquerade" in SCRIPT
    assert "10.244.0.5" not in SCRIPT
    assert "10.96.1.3" not in SCRIPT  # no endpoints: rejected by the catch-all instead


def test_the_table_is_replaced_in_one_transaction() -> None:
    lines = SCRIPT.splitlines()
    assert lines[:3] == ["table ip tp-unit {}", "delete table ip tp-unit", "table ip tp-unit {"]


@pytest.mark.root
def test_nft_accepts_the_ruleset() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    # --check parses and validates against the kernel without changing anything.
    result = subprocess.run(
        ["nft", "--check", "-f", "-"],
        input=SCRIPT.replace("delete table ip tp-unit\n", ""),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
