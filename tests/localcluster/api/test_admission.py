"""Mutating admission webhooks served by a test HTTPS server (the Service resolves to it)."""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
from pathlib import Path
from typing import Any

import trio

from localcluster.apiserver._http import Request, Response, serve_connection
from localcluster.pki import issue_server_cert, make_ca
from tests.localcluster.api.conftest import Cluster

SIDECAR = {"name": "traffic-agent", "image": "tpengine/tpengine:0.1.0", "command": ["tp-agent"]}


def _server_context(names: list[str]) -> tuple[ssl.SSLContext, bytes]:
    ca_cert, ca_key = make_ca("webhook-ca")
    cert, key = issue_server_cert(ca_cert, ca_key, names)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "c").write_bytes(cert)
        (Path(tmp) / "k").write_bytes(key)
        context.load_cert_chain(Path(tmp) / "c", Path(tmp) / "k")
    return context, ca_cert


async def webhook_server(
    mode: str, reviews: list[dict[str, Any]], task_status: trio.TaskStatus[tuple[int, bytes]]
) -> None:
    context, ca = _server_context(["agent-injector.tpengine.svc"])

    async def handle(req: Request) -> Response:
        review = json.loads(req.body)
        reviews.append(review)
        if mode == "slow":
            await trio.sleep(5)
        if mode == "garbage":
            return Response(headers=[("Content-Type", "application/json")], body=b"{not json")
        patch = [{"op": "add", "path": "/spec/containers/-", "value": SIDECAR}]
        body = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {
                "uid": review["request"]["uid"],
                "allowed": True,
                "patchType": "JSONPatch",
                "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
            },
        }
        return Response(
            headers=[("Content-Type", "application/json")], body=json.dumps(body).encode()
        )

    async def serve(tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, context, server_side=True)
        try:
            await serve_connection(stream, handle)
        except trio.BrokenResourceError:
            pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started((listeners[0].socket.getsockname()[1], ca))
    await trio.serve_listeners(serve, listeners)


async def _install(cluster: Cluster, mode: str, policy: str = "Fail") -> list[dict[str, Any]]:
    reviews: list[dict[str, Any]] = []
    port, ca = await cluster.nursery.start(webhook_server, mode, reviews)
    cluster.webhook_addresses[("tpengine", "agent-injector")] = ("127.0.0.1", port)
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "agent-injector-tpengine"},
        "webhooks": [
            {
                "name": "agent-injector-tpengine.tpengine.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": policy,
                "timeoutSeconds": 1,
                "clientConfig": {
                    "caBundle": base64.b64encode(ca).decode(),
                    "service": {
                        "name": "agent-injector",
                        "namespace": "tpengine",
                        "path": "/traffic-agent",
                    },
                },
                "objectSelector": {"matchLabels": {"inject": "yes"}},
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                    }
                ],
            }
        ],
    }
    await cluster.kubectl("apply", "-f", "-", input=json.dumps(config).encode())
    return reviews


def _pod(name: str, inject: bool) -> bytes:
    labels = {"inject": "yes"} if inject else {}
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "app", "image": "jmalloc/echo-server"}]},
        }
    ).encode()


async def test_webhook_adds_a_container(cluster: Cluster) -> None:
    reviews = await _install(cluster, "ok")
    await cluster.kubectl("apply", "-f", "-", input=_pod("plain", inject=False))
    await cluster.kubectl("apply", "-f", "-", input=_pod("injected", inject=True))
    assert len(reviews) == 1
    request = reviews[0]["request"]
    assert request["operation"] == "CREATE" and request["namespace"] == "default"
    assert request["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    seen = request["object"]["spec"]
    assert seen["serviceAccountName"] == "default"  # webhooks see the defaulted pod
    assert seen["containers"][0]["imagePullPolicy"] == "Always"
    pod = cluster.store.get("pods", "default", "injected")
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app", "traffic-agent"]
    assert pod["spec"]["containers"][1]["terminationMessagePath"] == "/dev/termination-log"
    plain = cluster.store.get("pods", "default", "plain")
    assert [c["name"] for c in plain["spec"]["containers"]] == ["app"]
    await cluster.kubectl("wait", "--for=condition=Ready", "pod/injected", "--timeout=10s")


async def test_webhook_timeout_fails_the_create_and_server_keeps_serving(cluster: Cluster) -> None:
    await _install(cluster, "slow")
    out = await cluster.kubectl("apply", "-f", "-", input=_pod("slow", inject=True), check=False)
    assert out.returncode != 0
    message = out.stderr.decode()
    assert (
        'Internal error occurred: failed calling webhook "agent-injector-tpengine.tpengine.io"'
        in message
    )
    assert "context deadline exceeded" in message
    assert (await cluster.kubectl("get", "pods")).returncode == 0


async def test_webhook_garbage_reply(cluster: Cluster) -> None:
    await _install(cluster, "garbage")
    out = await cluster.kubectl("apply", "-f", "-", input=_pod("bad", inject=True), check=False)
    assert out.returncode != 0 and b"received invalid webhook response" in out.stderr


async def test_webhook_failure_ignored_by_policy(cluster: Cluster) -> None:
    await _install(cluster, "garbage", policy="Ignore")
    await cluster.kubectl("apply", "-f", "-", input=_pod("tolerated", inject=True))
    pod = cluster.store.get("pods", "default", "tolerated")
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app"]


async def test_webhook_that_refuses_connections(cluster: Cluster) -> None:
    await _install(cluster, "ok")
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    closed_port = listener.getsockname()[1]
    listener.close()
    cluster.webhook_addresses[("tpengine", "agent-injector")] = ("127.0.0.1", closed_port)
    out = await cluster.kubectl("apply", "-f", "-", input=_pod("refused", inject=True), check=False)
    assert out.returncode != 0
    assert f"dial tcp 127.0.0.1:{closed_port}: connect: connection refused".encode() in out.stderr


async def test_webhook_with_the_wrong_ca_is_refused(cluster: Cluster) -> None:
    await _install(cluster, "ok")
    config = cluster.store.get("mutatingwebhookconfigurations", None, "agent-injector-tpengine")
    config["webhooks"][0]["clientConfig"]["caBundle"] = base64.b64encode(
        cluster.pki.ca_cert_pem
    ).decode()
    await cluster.store.update("mutatingwebhookconfigurations", None, config)
    out = await cluster.kubectl(
        "apply", "-f", "-", input=_pod("untrusted", inject=True), check=False
    )
    assert out.returncode != 0 and b"tls: failed to verify certificate" in out.stderr
