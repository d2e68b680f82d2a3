"""The injector's JSONPatch, applied with jsonpatch as the API server applies it."""

from __future__ import annotations

import json

import jsonpatch
import pytest

from manager._inject import AGENT_CONTAINER, INIT_CONTAINER, AgentSpec, InterceptedPort, agent_patch

POD = {
    "metadata": {"name": "web-1", "labels": {"app": "web"}},
    "spec": {
        "containers": [
            {
                "name": "web",
                "image": "ghcr.io/telepresenceio/echo-server",
                "env": [
                    {"name": "DB", "value": "postgres"},
                    {"name": "URL", "value": "$(DB):5432"},
                    {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                ],
                "envFrom": [{"configMapRef": {"name": "settings"}}],
                "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 9090}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
            }
        ]
    },
}


def spec(*ports: InterceptedPort) -> AgentSpec:
    return AgentSpec(
        workload="web",
        namespace="default",
        container="web",
        ports=ports,
        image="tpengine/tpengine:0.1.0",
        manager_url="ws://traffic-manager.tpengine:8081",
    )


def apply(pod: dict, ops: list[dict]) -> dict:
    return jsonpatch.apply_patch(json.loads(json.dumps(pod)), ops)


def test_symbolic_port_is_renamed_and_the_agent_takes_the_name() -> None:
    patched = apply(POD, agent_patch(POD, spec(InterceptedPort(container_port=8080, name="http"))))
    app, agent = patched["spec"]["containers"]
    assert app["ports"][0]["name"] == "tm-http"
    assert app["readinessProbe"]["httpGet"]["port"] == "tm-http"
    assert agent["name"] == AGENT_CONTAINER
    assert agent["ports"] == [{"name": "http", "containerPort": 9900, "protocol": "TCP"}]
    assert "initContainers" not in patched["spec"]
    env = {e["name"]: e for e in agent["env"]}
    assert env["TP_APP_ENV_URL"]["value"] == "$(TP_APP_ENV_DB):5432"
    assert env["TP_APP_ENV_SECRET"]["valueFrom"] == {"secretKeyRef": {"name": "s", "key": "k"}}
    assert agent["envFrom"] == [{"configMapRef": {"name": "settings"}, "prefix": "TP_APP_ENV_"}]
    config = json.loads(env["TP_AGENT_CONFIG"]["value"])
    assert config["ports"] == [
        {"agent_port": 9900, "app_port": 8080, "name": "http", "protocol": "TCP"}
    ]


def test_numeric_port_gets_an_init_container_with_net_admin() -> None:
    patched = apply(
        POD, agent_patch(POD, spec(InterceptedPort(container_port=9090, name="", symbolic=False)))
    )
    [init] = patched["spec"]["initContainers"]
    assert init["name"] == INIT_CONTAINER
    assert init["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
    assert "tcp:9090:9900" in init["command"]
    assert patched["spec"]["containers"][0]["ports"] == POD["spec"]["containers"][0]["ports"]


def test_injecting_twice_changes_nothing() -> None:
    once = apply(POD, agent_patch(POD, spec(InterceptedPort(container_port=8080, name="http"))))
    assert agent_patch(once, spec(InterceptedPort(container_port=8080, name="http"))) == []


def test_unknown_container_is_refused() -> None:
    bad = AgentSpec(
        workload="web", namespace="default", container="nope", ports=(), image="i", manager_url="u"
    )
    with pytest.raises(ValueError, match="no container 'nope'"):
        agent_patch(POD, bad)


def test_rename_is_at_most_15_characters() -> None:
    pod = json.loads(json.dumps(POD))
    pod["spec"]["containers"][0]["ports"][0]["name"] = "verylongname-ab"
    patched = apply(
        pod, agent_patch(pod, spec(InterceptedPort(container_port=8080, name="verylongname-ab")))
    )
    assert len(patched["spec"]["containers"][0]["ports"][0]["name"]) <= 15


def test_replace_leaves_the_app_container_out() -> None:
    replacing = AgentSpec(
        workload="web",
        namespace="default",
        container="web",
        ports=(InterceptedPort(container_port=8080, name="http"),),
        image="tpengine/tpengine:0.1.0",
        manager_url="ws://traffic-manager.tpengine:8081",
        replace=True,
    )
    patched = apply(POD, agent_patch(POD, replacing))
    [agent] = patched["spec"]["containers"]
    assert agent["name"] == AGENT_CONTAINER
    assert agent["ports"][0]["name"] == "http"  # the Service's named target port reaches the agent
    assert {e["name"] for e in agent["env"]} >= {"TP_APP_ENV_DB", "TP_APP_ENV_URL"}
