"""What the agent is told (TP_AGENT_CONFIG, engagements, init arguments) and how it
refuses bad input: one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.__main__ import main as agent_main
from agent._config import ConfigError, load_config
from agent._engagements import parse_engagements, plan_for
from agent._init import init_main, nft_script, parse_redirect
from agent._streams import H2_PREFACE, Sniffed, classify

GOOD: dict[str, Any] = {
    "workload": "web",
    "namespace": "default",
    "container": "web",
    "manager_url": "ws://traffic-manager.tpengine:8081",
    "ports": [{"agent_port": 9900, "app_port": 8080, "name": "http", "protocol": "TCP"}],
}


def test_config_from_the_webhooks_env() -> None:
    config = load_config(
        {
            "TP_AGENT_CONFIG": json.dumps(GOOD),
            "TP_POD_NAME": "web-7f9c",
            "TP_POD_IP": "10.244.0.13",
            "TP_APP_ENV_DATABASE_URL": "postgres://db/x",
            "TP_APP_ENV_PATH": "/usr/bin",
            "TP_APP_ENV_HOSTNAME": "web-7f9c",
            "PATH": "/agent/bin",
        }
    )
    assert (config.pod, config.pod_ip, config.ports[0].app_port) == (
        "web-7f9c",
        "10.244.0.13",
        8080,
    )
    payload = config.arrive_payload()
    assert payload["env"] == {"DATABASE_URL": "postgres://db/x", "TELEPRESENCE_CONTAINER": "web"}
    assert payload["ports"] == GOOD["ports"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"manager_url": "http://x"}, "manager_url"),
        ({"workload": ""}, "workload"),
        ({"ports": "8080"}, "ports must be a list"),
        ({"ports": [{"agent_port": 0, "app_port": 8080}]}, "ports[0] agent_port"),
        ({"ports": [{"agent_port": 9900, "app_port": 8080, "protocol": "SCTP"}]}, "protocol"),
        (
            {"ports": [{"agent_port": 9900, "app_port": 1}, {"agent_port": 9900, "app_port": 2}]},
            "twice",
        ),
    ],
)
def test_bad_config_is_named(change: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("[", r"\[").replace("]", r"\]")):
        load_config({"TP_AGENT_CONFIG": json.dumps({**GOOD, **change})})


@pytest.mark.parametrize(
    ("raw", "says"),
    [(None, "TP_AGENT_CONFIG is not set"), ("{nope", "not valid JSON"), ("[1]", "JSON object")],
)
def test_tp_agent_exits_with_one_clear_line(
    raw: str | None, says: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TP_AGENT_CONFIG", raising=False)
    if raw is not None:
        monkeypatch.setenv("TP_AGENT_CONFIG", raw)
    with pytest.raises(SystemExit) as exited:
        agent_main([])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tp-agent: ") and says in err


def test_the_tp_agent_command_refuses_a_bad_config() -> None:
    env = {"PATH": "/usr/bin:/bin", "TP_AGENT_CONFIG": json.dumps({**GOOD, "ports": [{}]})}
    done = subprocess.run(
        [sys.executable, "-m", "agent"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr == (
        "tp-agent: TP_AGENT_CONFIG ports[0] agent_port must be a port number 1-65535, not None\n"
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["tcp:8080"], "expected PROTO:APP_PORT:AGENT_PORT"),
        (["sctp:8080:9900"], "protocol must be tcp or udp"),
        (["tcp:80800:9900"], "not a port number"),
        (["tcp:8080:8080"], "must differ"),
        ([], "no redirects given"),
    ],
)
def test_init_refuses_bad_arguments(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert init_main(["--exempt-uid", "7777", *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err


def test_init_usage_errors_are_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        init_main(["tcp:8080:9900"])  # --exempt-uid missing
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--exempt-uid" in err


def test_init_rules_redirect_inbound_and_local_except_the_agent() -> None:
    script = nft_script([parse_redirect("tcp:8080:9900"), parse_redirect("UDP:53:9901")], 7777)
    assert "tcp dport 8080 redirect to :9900" in script
    assert 'oifname "lo" udp dport 53 redirect to :9901' in script
    assert "meta skuid 7777 return" in script
    assert script.index("meta skuid") < script.index('oifname "lo"')  # exempt first


@given(st.binary(max_size=64))
def test_classify_never_fails_and_only_calls_http_what_is(data: bytes) -> None:
    verdict = classify(data)
    if verdict is Sniffed.H2C:
        assert data.startswith(H2_PREFACE)
    if verdict is Sniffed.HTTP1:
        assert data.split(b" ", 1)[0].isalpha()


def test_classify_examples() -> None:
    assert classify(b"GET / HTTP/1.1\r\n") is Sniffed.HTTP1
    assert classify(b"GE") is None  # more bytes needed
    assert classify(H2_PREFACE[:10]) is None
    assert classify(H2_PREFACE) is Sniffed.H2C
    assert classify(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(20)) is Sniffed.OTHER


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(JSONISH)
def test_malformed_engagements_are_dropped_never_raised(data: Any) -> None:
    for eng in parse_engagements(data):
        plan_for([eng], 8080)
    parse_engagements([data, {"id": 1, "kind": "intercept", "session_id": "s"}])


def test_engagements_plan_per_port() -> None:
    def eng(
        id: str, kind: str, headers: list[list[str]] | None = None, port: int = 8080
    ) -> dict[str, Any]:
        return {
            "id": id,
            "kind": kind,
            "session_id": "s",
            "ports": [port],
            "filter": {"headers": headers or []},
        }

    parsed = parse_engagements(
        [
            eng("1", "intercept", [["x-user", "susan"]]),
            eng("2", "wiretap"),
            eng("3", "ingest"),
            eng("4", "replace", port=9090),
            eng("5", "intercept", [["x-user", "(unclosed"]]),  # a bad regex: dropped
            {"id": "6", "kind": "teleport", "session_id": "s"},
        ]
    )
    assert [e.id for e in parsed] == ["1", "2", "3", "4"]
    plan = plan_for(parsed, 8080)
    assert plan.takeover is None and [e.id for e in plan.filtered] == ["1"]
    assert [e.id for e in plan.wiretaps] == ["2"] and plan.needs_sniff
    assert plan_for(parsed, 9090).takeover is not None
    assert parsed[0].target(8080) == ("127.0.0.1", 8080)  # no target given: same port


def test_tp_agent_listens_without_a_manager_and_stops_on_sigterm() -> None:
    """The readiness probe (a tcpSocket on the first agent port) passes as soon as the
    agent runs, manager or not; SIGTERM from the kubelet ends it cleanly."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        agent_port = probe.getsockname()[1]
    config = {
        **GOOD,
        "manager_url": "ws://127.0.0.1:9/",  # nothing there: the agent keeps retrying
        "ports": [{"agent_port": agent_port, "app_port": 9, "name": "", "protocol": "TCP"}],
    }
    env = {"TP_AGENT_CONFIG": json.dumps(config), "TP_AGENT_LISTEN_HOST": "127.0.0.1"}
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", agent_port), timeout=5).close()
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and agent.poll() is None, "never listened"
                time.sleep(0.05)
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=20)
        assert agent.returncode == 0, stderr
        assert "stopping on SIGTERM" in stderr
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def test_engagement_ports_by_number_or_container_port_name() -> None:
    entry = {
        "id": "1",
        "kind": "intercept",
        "session_id": "s",
        "ports": ["http", 9090, "9091"],
        "targets": {"http": ["127.0.0.1", 3000]},
    }
    [eng] = parse_engagements([entry], {"http": 8080})
    assert eng.ports == {8080, 9090, 9091}
    assert eng.target(8080) == ("127.0.0.1", 3000)
    assert parse_engagements([{**entry, "ports": ["grpc"]}], {"http": 8080}) == []
