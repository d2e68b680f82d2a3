"""Which container port an intercepted port reaches (the reference's scenarios)."""

from __future__ import annotations

import pytest

from tpengine.kube.workloads import ResolveError, parse_port, pick_service, resolve_ports

WORKLOAD = {
    "kind": "Deployment",
    "metadata": {"name": "multi-echo"},
    "spec": {
        "template": {
            "metadata": {"labels": {"app": "multi-echo"}, "annotations": {}},
            "spec": {
                "containers": [
                    {
                        "name": "echo",
                        "ports": [
                            {"name": "http", "containerPort": 8080},
                            {"name": "grpc", "containerPort": 8443},
                        ],
                    },
                    {"name": "sidecar", "ports": [{"containerPort": 9000}]},
                ]
            },
        }
    },
}


def service(name: str, ports: list[dict], selector: dict | None = None) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {"selector": selector or {"app": "multi-echo"}, "ports": ports},
    }


MULTI = service(
    "multi-echo",
    [
        {"name": "http", "port": 80, "targetPort": "http"},
        {"name": "grpc", "port": 443, "targetPort": "grpc"},
    ],
)
NUMERIC = service("numeric", [{"port": 80, "targetPort": 8080}])


def test_two_ports_by_name() -> None:
    ports = resolve_ports(WORKLOAD, MULTI, [parse_port("8080:http"), parse_port("8443:grpc")], None)
    assert [(p.local, p.service_port, p.container_port, p.symbolic) for p in ports] == [
        (8080, 80, 8080, True),
        (8443, 443, 8443, True),
    ]


def test_numeric_target_port_is_not_symbolic() -> None:
    [port] = resolve_ports(WORKLOAD, NUMERIC, [parse_port("8080")], None)
    assert (port.container, port.container_port, port.container_port_name, port.symbolic) == (
        "echo",
        8080,
        "http",
        False,
    )


def test_choosing_among_services() -> None:
    canary = service("echo-canary", [{"port": 80}])
    with pytest.raises(ResolveError, match="several services .*--service"):
        pick_service([MULTI, canary], WORKLOAD, None)
    assert pick_service([MULTI, canary], WORKLOAD, "echo-canary") is canary
    other = service("other", [{"port": 80}], {"app": "other"})
    assert pick_service([other], WORKLOAD, None) is None
    with pytest.raises(ResolveError, match="does not select"):
        pick_service([other], WORKLOAD, "other")


@pytest.mark.parametrize(
    ("spec", "svc", "message"),
    [
        ("8080", MULTI, "several ports"),
        ("8080:metrics", MULTI, "has no port 'metrics'"),
        ("http", MULTI, "LOCAL must be a port number"),
        ("70000", MULTI, "not a port number"),
        ("8080", None, "no service selects multi-echo"),
    ],
)
def test_errors_name_the_choices(spec: str, svc: dict | None, message: str) -> None:
    with pytest.raises(ResolveError, match=message):
        resolve_ports(WORKLOAD, svc, [parse_port(spec)], None)


def test_service_less_workload_with_the_annotation() -> None:
    annotated = {
        **WORKLOAD,
        "spec": {
            "template": {
                **WORKLOAD["spec"]["template"],
                "metadata": {
                    "labels": {},
                    "annotations": {"telepresence.io/inject-container-ports": "http,9000/UDP"},
                },
            }
        },
    }
    [port] = resolve_ports(annotated, None, [parse_port("8080:http")], None)
    assert (port.service, port.container_port, port.protocol) == (None, 8080, "TCP")
    [udp] = resolve_ports(annotated, None, [parse_port("9000:9000")], None)
    assert (udp.container, udp.protocol) == ("sidecar", "UDP")
    with pytest.raises(ResolveError, match="not in telepresence.io/inject-container-ports"):
        resolve_ports(annotated, None, [parse_port("8080:grpc")], None)
