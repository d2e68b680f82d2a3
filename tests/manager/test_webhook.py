"""The agent-injector over real TLS on loopback, verified against its own CA as the API
server verifies it (server name agent-injector.<ns>.svc)."""

from __future__ import annotations

import base64
import functools
import json
import ssl
from typing import Any

import httpx
import jsonpatch
import trio

from manager._inject import AgentSpec, InterceptedPort
from manager._webhook import generate_tls, review_response, serve_webhook, webhook_configuration

POD = {
    "metadata": {"name": "web-1", "labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}]},
}


def decide(pod: dict[str, Any], namespace: str) -> AgentSpec | None:
    if pod["metadata"].get("labels", {}).get("app") != "web":
        return None
    return AgentSpec(
        workload="web",
        namespace=namespace,
        container="web",
        ports=(InterceptedPort(container_port=8080, name="http"),),
        image="tpengine/tpengine:0.1.0",
        manager_url="ws://traffic-manager.tpengine:8081",
    )


def review(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "abc-123",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "default",
            "object": pod,
        },
    }


async def test_injects_over_verified_tls(nursery: trio.Nursery) -> None:
    tls = generate_tls("tpengine")
    port = await nursery.start(
        functools.partial(serve_webhook, tls, decide, port=0, host="127.0.0.1")
    )
    context = ssl.create_default_context(cadata=tls.ca_pem.decode())
    # The API server connects to the Service IP but verifies the service's DNS name.
    async with httpx.AsyncClient(verify=context) as client:
        response = await client.post(
            f"https://127.0.0.1:{port}/inject",
            json=review(POD),
            extensions={"sni_hostname": "agent-injector.tpengine.svc"},
            headers={"host": "agent-injector.tpengine.svc"},
        )
    assert response.status_code == 200
    answer = response.json()["response"]
    assert answer["uid"] == "abc-123" and answer["allowed"] is True
    patched = jsonpatch.apply_patch(POD, json.loads(base64.b64decode(answer["patch"])))
    assert [c["name"] for c in patched["spec"]["containers"]] == ["web", "traffic-agent"]


def test_other_pods_and_garbage_are_allowed_unchanged() -> None:
    other = {"metadata": {"name": "db"}, "spec": {"containers": [{"name": "db"}]}}
    assert "patch" not in review_response(review(other), decide)["response"]
    broken = review(
        {
            "metadata": {"name": "x", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "other"}]},
        }
    )
    answer = review_response(broken, decide)["response"]
    assert answer["allowed"] is True and "patch" not in answer
    assert review_response({}, decide)["response"]["allowed"] is True


def test_configuration_carries_the_ca() -> None:
    tls = generate_tls("tpengine")
    config = webhook_configuration("tpengine", tls.ca_pem)
    hook = config["webhooks"][0]
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == tls.ca_pem
    assert hook["clientConfig"]["service"] == {
        "name": "agent-injector",
        "namespace": "tpengine",
        "path": "/inject",
        "port": 443,
    }
