"""Malformed input never escapes as an exception: HTTP bytes, requests, websocket frames."""

from __future__ import annotations

import json

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from localcluster.apiserver import ApiServer
from localcluster.apiserver._http import Request, Response, serve_connection
from localcluster.apiserver._websocket import WebSocket
from localcluster.controllers import bootstrap
from localcluster.store import Store

TOKEN = "t0ken"
SEGMENTS = st.sampled_from(
    [
        "api",
        "apis",
        "v1",
        "apps",
        "namespaces",
        "default",
        "pods",
        "deployments",
        "x",
        "status",
        "scale",
        "log",
        "exec",
        "portforward",
        "watch",
        "",
        "..",
        "%00",
        "kube-system",
        "p",
    ]
)


async def _handler(req: Request) -> Response:
    return Response(body=b"ok")


@settings(max_examples=60)
@given(st.binary(max_size=600))
def test_http_layer_survives_any_bytes(data: bytes) -> None:
    async def main() -> None:
        client, server = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_connection, server, _handler)
            try:
                await client.send_all(data)
                await client.send_eof()
                with trio.move_on_after(1):
                    while await client.receive_some(65536):
                        pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    trio.run(main)


@settings(max_examples=150)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
    segments=st.lists(SEGMENTS, max_size=7),
    query=st.dictionaries(
        st.sampled_from(
            [
                "watch",
                "labelSelector",
                "fieldSelector",
                "resourceVersion",
                "timeoutSeconds",
                "dryRun",
                "ports",
                "command",
                "container",
            ]
        ),
        st.lists(st.text(max_size=12), min_size=1, max_size=2),
        max_size=3,
    ),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/yaml",
            "application/merge-patch+json",
            "application/json-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
            "application/vnd.kubernetes.protobuf",
            "text/plain",
        ]
    ),
    body=st.one_of(
        st.binary(max_size=80),
        st.builds(
            lambda o: json.dumps(o).encode(),
            st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
        ),
    ),
    accept=st.sampled_from(
        [
            "application/json",
            "application/yaml",
            "application/json;as=Table;v=v1;g=meta.k8s.io",
            "application/vnd.kubernetes.protobuf",
            "*/*",
        ]
    ),
)
def test_api_answers_every_request_with_a_status(
    method: str,
    segments: list[str],
    query: dict[str, list[str]],
    content_type: str,
    body: bytes,
    accept: str,
) -> None:
    async def main() -> None:
        store = Store(node_name="n")
        await bootstrap(store)
        app = ApiServer(store=store, runtime=None, token=TOKEN, bookmark_interval=0.01)  # type: ignore[arg-type]
        request = Request(
            method=method,
            path="/" + "/".join(segments),
            query={"timeoutSeconds": ["0"], **query},
            headers={
                "authorization": f"Bearer {TOKEN}",
                "content-type": content_type,
                "accept": accept,
            },
            body=body,
        )
        with trio.fail_after(5):
            response = await app.handle(request)
            if response.stream is not None:
                async for _ in response.stream:
                    break
                await response.stream.aclose()  # type: ignore[attr-defined]
        assert 100 <= response.status < 600
        if response.status >= 400:
            status = json.loads(response.body)
            assert status["kind"] == "Status" and status["code"] == response.status

    trio.run(main)


@settings(max_examples=60)
@given(st.binary(max_size=300))
def test_websocket_reader_survives_any_frames(data: bytes) -> None:
    async def main() -> None:
        client, server = trio.testing.memory_stream_pair()
        ws = WebSocket(server)
        await client.send_all(data)
        await client.send_eof()
        with trio.fail_after(2):
            while await ws.receive() is not None:
                pass

    trio.run(main)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.sampled_from(["", "x", "name", "$patch", "delete", "replace"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "metadata",
                    "spec",
                    "containers",
                    "name",
                    "image",
                    "env",
                    "ports",
                    "labels",
                    "$patch",
                    "$retainKeys",
                    "$setElementOrder/containers",
                    "$deleteFromPrimitiveList/finalizers",
                    "finalizers",
                    "x-unknown",
                    "status",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200)
@given(
    st.sampled_from(
        [
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/json-patch+json",
            "application/apply-patch+yaml",
        ]
    ),
    JSON,
)
def test_patches_only_raise_store_errors(patch_type: str, body: object) -> None:
    from localcluster.store import StoreError

    async def main() -> None:
        store = Store(node_name="n")
        await bootstrap(store)
        pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
        await store.create("pods", "default", pod)
        try:
            await store.patch("pods", "default", "p", patch_type, json.dumps(body).encode())
        except StoreError:
            pass
        assert store.get("pods", "default", "p")["spec"]["containers"]

    trio.run(main)


FIELDS = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 70000)
    | st.sampled_from(["", "x", "TCP", "None", "10.96.5.5", "25%", "http"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "spec",
                    "containers",
                    "name",
                    "image",
                    "ports",
                    "port",
                    "targetPort",
                    "protocol",
                    "selector",
                    "matchLabels",
                    "template",
                    "metadata",
                    "labels",
                    "replicas",
                    "strategy",
                    "rollingUpdate",
                    "maxSurge",
                    "clusterIP",
                    "type",
                    "data",
                    "webhooks",
                    "rules",
                    "clientConfig",
                    "service",
                    "volumes",
                    "env",
                    "readinessProbe",
                    "httpGet",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=16,
)


@settings(max_examples=200)
@given(
    st.sampled_from(
        [
            "pods",
            "deployments",
            "statefulsets",
            "services",
            "configmaps",
            "secrets",
            "mutatingwebhookconfigurations",
        ]
    ),
    st.dictionaries(
        st.sampled_from(["spec", "data", "webhooks", "stringData", "status", "type"]),
        FIELDS,
        max_size=3,
    ),
)
def test_creates_only_raise_store_errors(resource: str, fields: dict[str, object]) -> None:
    from localcluster.store import StoreError

    async def main() -> None:
        store = Store(node_name="n")
        await bootstrap(store)
        namespace = None if resource == "mutatingwebhookconfigurations" else "default"
        try:
            created = await store.create(resource, namespace, {"metadata": {"name": "x"}, **fields})
        except StoreError:
            return
        await store.update(resource, namespace, created)
        await store.delete(resource, namespace, "x", grace_period_seconds=0)

    trio.run(main)
