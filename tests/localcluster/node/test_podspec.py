"""Pod spec → launcher inputs: image rules, environment, volumes, refusals."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest

from localcluster.node import _podspec as ps


def pod(**spec: object) -> dict:
    return {
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": "tp-node", **spec},
        "status": {"podIP": "10.244.0.7"},
    }


OBJECTS = {
    ("configmaps", "shop", "cfg"): {"data": {"greeting": "hello", "file.ini": "[x]\n"}},
    ("secrets", "shop", "sec"): {"data": {"password": base64.b64encode(b"s3cret").decode()}},
}


def lookup(resource: str, namespace: str, name: str) -> dict | None:
    return OBJECTS.get((resource, namespace, name))


@pytest.mark.parametrize(
    ("image", "repo", "name"),
    [
        (
            "ghcr.io/telepresenceio/echo-server:0.1",
            "ghcr.io/telepresenceio/echo-server",
            "echo-server",
        ),
        ("localhost:5000/tpengine/tpengine:0.1.0", "localhost:5000/tpengine/tpengine", "tpengine"),
        ("tpengine@sha256:abc", "tpengine", "tpengine"),
        ("busybox", "busybox", "busybox"),
    ],
)
def test_image_names(image: str, repo: str, name: str) -> None:
    assert ps.image_repository(image) == repo
    assert ps.image_name(image) == name


def test_echo_images_run_the_builtin_echo_server() -> None:
    for image in ("ghcr.io/telepresenceio/echo-server:latest", "jmalloc/echo-server"):
        argv = ps.command_for({"image": image})
        assert argv == [sys.executable, ps.ECHO_SCRIPT]
        assert Path(argv[1]).name == "echo.py"


def test_tpengine_images_run_from_the_venv() -> None:
    container = {"image": "tpengine/tpengine:0.1.0", "command": ["tp-manager"], "args": ["--x"]}
    assert ps.command_for(container) == ["tp-manager", "--x"]
    assert ps.path_for(container, venv_bin="/v/bin").startswith("/v/bin:")
    assert not ps.path_for({"image": "busybox"}, venv_bin="/v/bin").startswith("/v/bin")


def test_an_image_without_command_cannot_run() -> None:
    with pytest.raises(ps.ImageError, match="nginx"):
        ps.command_for({"image": "nginx:1.27"})
    assert ps.command_for({"image": "busybox", "args": ["sleep", "1"]}) == ["sleep", "1"]


def test_variable_expansion_follows_kubernetes() -> None:
    env = {"A": "1", "B": "two"}
    assert ps.expand("$(A)-$(B)", env) == "1-two"
    assert ps.expand("$(MISSING)", env) == "$(MISSING)"
    assert ps.expand("$$(A)", env) == "$(A)"


def test_environment_from_values_refs_and_fields() -> None:
    container = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "G", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
            {"name": "P", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "MSG", "value": "$(G) from $(IP)"},
            {
                "name": "O",
                "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}},
            },
        ],
    }
    env = ps.container_env(
        pod(), container, lookup, service_env={"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, path="/bin"
    )
    assert env["G"] == "hello" and env["P"] == "s3cret" and env["IP"] == "10.244.0.7"
    assert env["APP"] == "web" and env["MSG"] == "hello from 10.244.0.7"
    assert env["CFG_greeting"] == "hello" and env["HOSTNAME"] == "web-1"
    assert env["HOME"] == "/tmp"  # the pod's private /tmp, never the host's /root
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" and "O" not in env


def test_a_missing_config_map_is_a_config_error() -> None:
    container = {
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]
    }
    with pytest.raises(ps.ContainerConfigError, match='configmap "nope" not found'):
        ps.container_env(pod(), container, lookup, service_env={}, path="/bin")


def test_service_links() -> None:
    svc = {
        "metadata": {"name": "my-web"},
        "spec": {"clusterIP": "10.96.3.4", "ports": [{"name": "http", "port": 80}]},
    }
    env = ps.service_env(
        [
            svc,
            {
                "metadata": {"name": "headless"},
                "spec": {"clusterIP": "None", "ports": [{"port": 1}]},
            },
        ]
    )
    assert env["MY_WEB_SERVICE_HOST"] == "10.96.3.4"
    assert env["MY_WEB_SERVICE_PORT_HTTP"] == "80"
    assert env["MY_WEB_PORT_80_TCP"] == "tcp://10.96.3.4:80"
    assert not any(k.startswith("HEADLESS") for k in env)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"hostPID": True}, "HostPIDNotSupported"),
        ({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, "HostPathNotSupported"),
        (
            {"containers": [{"name": "c", "securityContext": {"privileged": True}}]},
            "PrivilegedNotSupported",
        ),
    ],
)
def test_refused_pods(spec: dict, reason: str) -> None:
    refused = ps.refuse_reason(pod(**spec))
    assert refused is not None and refused.reason == reason
    assert "not supported" in refused.message


def test_a_plain_pod_is_not_refused() -> None:
    assert ps.refuse_reason(pod(hostNetwork=True)) is None


def test_volumes_are_written(tmp_path: Path) -> None:
    ctx = ps.VolumeContext(pod=pod(), lookup=lookup, token="tok", ca_pem=b"CA")
    cm = ps.materialize_volume(
        ctx,
        {
            "name": "cm",
            "configMap": {
                "name": "cfg",
                "items": [{"key": "file.ini", "path": "sub/settings.ini"}],
            },
        },
        tmp_path,
    )
    assert (cm / "sub" / "settings.ini").read_text() == "[x]\n"
    assert not (cm / "greeting").exists()
    sec = ps.materialize_volume(
        ctx, {"name": "s", "secret": {"secretName": "sec", "defaultMode": 0o400}}, tmp_path
    )
    assert (sec / "password").read_bytes() == b"s3cret"
    assert (sec / "password").stat().st_mode & 0o777 == 0o400
    projected = {
        "name": "kube-api-access-x",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ]
        },
    }
    sa = ps.materialize_volume(ctx, projected, tmp_path)
    assert (sa / "token").read_text() == "tok"
    assert (sa / "ca.crt").read_bytes() == b"CA"
    assert (sa / "namespace").read_text() == "shop"
    empty = ps.materialize_volume(ctx, {"name": "e", "emptyDir": {}}, tmp_path)
    assert empty.is_dir()
    with pytest.raises(ps.PodRefused):
        ps.materialize_volume(
            ctx, {"name": "p", "persistentVolumeClaim": {"claimName": "x"}}, tmp_path
        )


def test_mounts_honour_sub_path_and_read_only(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    container = {
        "volumeMounts": [
            {"name": "v", "mountPath": "/etc/web", "readOnly": True},
            {"name": "v", "mountPath": "/data", "subPath": "d"},
        ]
    }
    mounts = ps.mounts_for(container, {"v": tmp_path / "v"})
    assert mounts == [
        {"src": str(tmp_path / "v"), "dst": "/etc/web", "ro": True},
        {"src": str(tmp_path / "v" / "d"), "dst": "/data", "ro": False},
    ]


def test_pod_files() -> None:
    files = ps.pod_files(pod(hostname="db-0", subdomain="db"), "10.244.0.9")
    assert files["resolv.conf"] == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\noptions ndots:5\n"
    )
    assert "10.244.0.9\tdb-0.db.shop.svc.cluster.local db-0" in files["hosts"]
    assert files["hostname"] == "db-0\n"


def test_kubelet_event_shape() -> None:
    from localcluster.node._events import make_event

    event = make_event(
        pod(), "Warning", "BackOff", "Back-off restarting", node="tp-node", container="c"
    )
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "web-1",
        "namespace": "shop",
        "uid": "u-1",
        "resourceVersion": None,
        "fieldPath": "spec.containers{c}",
    }
    assert (
        event["metadata"]["name"].startswith("web-1.") and event["metadata"]["namespace"] == "shop"
    )
    assert event["source"] == {"component": "kubelet", "host": "tp-node"}
    assert (event["type"], event["reason"], event["count"]) == ("Warning", "BackOff", 1)


def test_resource_field_refs() -> None:
    spec = pod()
    container = {"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}}

    def value(resource: str, divisor: str | None = None) -> str:
        ref = {"resource": resource, **({"divisor": divisor} if divisor else {})}
        return ps.resource_field_value(spec, container, ref)

    assert value("limits.cpu") == "1"  # rounded up to whole cores
    assert value("limits.cpu", "1m") == "500"
    assert value("limits.memory") == str(128 * 2**20)
    assert value("limits.memory", "1Mi") == "128"
    assert value("requests.memory", "1Mi") == "128"  # requests default to limits
    assert int(ps.resource_field_value(spec, {"name": "c"}, {"resource": "limits.cpu"})) >= 1
    assert ps.parse_quantity("1.5Gi") == 1.5 * 2**30
