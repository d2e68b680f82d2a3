"""Bad input gets the real API server's Status errors, and the server keeps serving."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
import trio

from tests.localcluster.api.conftest import Cluster


def _client(cluster: Cluster) -> httpx.AsyncClient:
    context = ssl.create_default_context(cadata=cluster.pki.ca_cert_pem.decode())
    return httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{cluster.port}",
        verify=context,
        headers={"Authorization": f"Bearer {cluster.pki.token}"},
    )


async def test_status_errors_for_bad_requests(cluster: Cluster) -> None:
    async with _client(cluster) as http:
        cms = "/api/v1/namespaces/default/configmaps"
        r = await http.post(cms, content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        assert r.json()["kind"] == "Status" and r.json()["reason"] == "BadRequest"
        r = await http.post(
            cms, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": 5}}
        )
        assert (
            r.status_code == 400
            and "ObjectMeta.metadata.name of type string" in r.json()["message"]
        )
        r = await http.post(cms, content=b"a: [b", headers={"Content-Type": "application/yaml"})
        assert r.status_code == 400 and r.json()["reason"] == "BadRequest"
        r = await http.post(
            cms,
            content=b"k8s\x00\x0a",
            headers={"Content-Type": "application/vnd.kubernetes.protobuf"},
        )
        assert r.status_code == 415 and r.json()["reason"] == "UnsupportedMediaType"
        r = await http.get("/apis/example.com/v1/namespaces/default/widgets")
        assert (
            r.status_code == 404
            and r.json()["message"] == "the server could not find the requested resource"
        )
        r = await http.get("/api/v1/namespaces/default/pods/nope")
        assert r.status_code == 404 and r.json()["message"] == 'pods "nope" not found'
        assert r.json()["details"] == {"name": "nope", "kind": "pods"}
        r = await http.get("/api/v1/pods", params={"labelSelector": "a in (b"})
        assert r.status_code == 400
        r = await http.get("/api/v1/pods", params={"fieldSelector": "spec.bogus=1"})
        assert (
            r.status_code == 400 and "field label not supported: spec.bogus" in r.json()["message"]
        )
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
        assert (await http.post(cms, json=body)).status_code == 201
        r = await http.post(cms, json=body)
        assert r.status_code == 409 and r.json()["reason"] == "AlreadyExists"
        entry = cluster.audit()[-1]
        assert (entry["verb"], entry["resource"], entry["name"], entry["code"]) == (
            "create",
            "configmaps",
            "x",
            409,
        )
        assert entry["message"] == 'configmaps "x" already exists'

        stale = {**body, "metadata": {"name": "x", "resourceVersion": "1"}}
        r = await http.put(f"{cms}/x", json=stale)
        assert r.status_code == 409 and r.json()["reason"] == "Conflict"
        r = await httpx.AsyncClient(verify=False).get(
            f"https://127.0.0.1:{cluster.port}/api/v1/pods"
        )
        assert r.status_code == 401 and r.json()["reason"] == "Unauthorized"


async def test_invalid_names_are_422_with_the_real_message(
    cluster: Cluster, tmp_path: Path
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "Bad_Name"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    out = await cluster.kubectl("apply", "-f", "-", input=json.dumps(pod).encode(), check=False)
    assert out.returncode != 0
    assert (
        b'The Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase '
        b"RFC 1123 subdomain must consist of lower case alphanumeric characters"
    ) in out.stderr
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "9svc"},
        "spec": {"ports": [{"port": 80}]},
    }
    out = await cluster.kubectl("apply", "-f", "-", input=json.dumps(svc).encode(), check=False)
    assert b"a DNS-1035 label must consist of lower case alphanumeric characters" in out.stderr
    no_image = {**pod, "metadata": {"name": "ok"}, "spec": {"containers": [{"name": "c"}]}}
    out = await cluster.kubectl(
        "apply", "-f", "-", input=json.dumps(no_image).encode(), check=False
    )
    assert b'The Pod "ok" is invalid: spec.containers[0].image: Required value' in out.stderr


async def test_unknown_kinds_and_malformed_manifests(cluster: Cluster, tmp_path: Path) -> None:
    widget = tmp_path / "widget.yaml"
    widget.write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n")
    out = await cluster.kubectl("apply", "-f", str(widget), check=False)
    # kubectl validates unknown kinds against CRDs, which this cluster does not serve (404)
    assert out.returncode != 0 and b"the server could not find the requested resource" in out.stderr
    out = await cluster.kubectl("apply", "--validate=false", "-f", str(widget), check=False)
    assert (
        out.returncode != 0
        and b'no matches for kind "Widget" in version "example.com/v1"' in out.stderr
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [\n")
    out = await cluster.kubectl("apply", "-f", str(broken), check=False)
    assert out.returncode != 0 and b"did not find expected node content" in out.stderr
    assert (await cluster.kubectl("get", "configmaps")).returncode == 0


async def test_garbage_connections_do_not_take_the_server_down(cluster: Cluster) -> None:
    raw = await trio.open_tcp_stream("127.0.0.1", cluster.port)
    await raw.send_all(b"\x16\x03\x01\x00\x05hello garbage that is not TLS" * 10)
    await raw.aclose()
    context = ssl.create_default_context(cadata=cluster.pki.ca_cert_pem.decode())
    tls = trio.SSLStream(
        await trio.open_tcp_stream("127.0.0.1", cluster.port), context, server_hostname="127.0.0.1"
    )
    await tls.send_all(b"NOT HTTP AT ALL\r\n\r\n")
    reply = await tls.receive_some(4096)
    assert reply.startswith(b"HTTP/1.1 400")
    await tls.aclose()
    async with _client(cluster) as http:
        r = await http.get("/api/v1/namespaces")
        assert r.status_code == 200 and len(r.json()["items"]) == 4


async def test_watch_bookmarks_timeout_and_expired(cluster: Cluster) -> None:
    cluster.store.history_limit = 3
    async with _client(cluster) as http:
        cms = "/api/v1/namespaces/default/configmaps"
        created = (
            await http.post(
                cms, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w0"}}
            )
        ).json()
        rv = created["metadata"]["resourceVersion"]
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": rv,
            "timeoutSeconds": "3",  # several bookmark intervals, even on a loaded machine
        }
        events = []
        async with http.stream("GET", cms, params=params) as response:
            assert response.status_code == 200
            await http.post(
                cms, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w1"}}
            )
            async for line in response.aiter_lines():
                events.append(json.loads(line))
        assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "w1"
        bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
        assert (
            bookmarks and int(bookmarks[-1]["object"]["metadata"]["resourceVersion"]) >= int(rv) + 1
        )
        for i in range(5):
            await http.post(
                cms, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"x{i}"}}
            )
        one = {"watch": "1", "timeoutSeconds": "1"}
        async with http.stream("GET", f"{cms}/w1", params=one) as response:
            names = [
                json.loads(line)["object"]["metadata"]["name"]
                async for line in response.aiter_lines()
            ]
        assert names == ["w1"]
        async with http.stream(
            "GET", cms, params={"watch": "1", "resourceVersion": rv}
        ) as response:
            line = await response.aiter_lines().__anext__()
        error = json.loads(line)
        assert error["type"] == "ERROR"
        assert error["object"]["code"] == 410 and error["object"]["reason"] == "Expired"
        assert error["object"]["message"].startswith(f"too old resource version: {rv}")


async def test_content_negotiation(cluster: Cluster) -> None:
    async with _client(cluster) as http:
        partial = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
        r = await http.get("/api/v1/namespaces", headers={"Accept": f"{partial},application/json"})
        assert r.json()["kind"] == "PartialObjectMetadataList"
        assert r.json()["items"][0]["kind"] == "PartialObjectMetadata"
        r = await http.get("/api/v1/namespaces/default", headers={"Accept": "application/yaml"})
        assert r.headers["content-type"] == "application/yaml" and b"name: default" in r.content
        r = await http.get(
            "/api/v1/namespaces", headers={"Accept": "application/vnd.kubernetes.protobuf"}
        )
        assert r.status_code == 406 and r.json()["reason"] == "NotAcceptable"
        r = await http.delete(
            "/api/v1/namespaces/default/serviceaccounts/default", params={"dryRun": "All"}
        )
        assert r.status_code == 200
        assert cluster.store.get("serviceaccounts", "default", "default")


async def test_bad_watch_parameters_are_400(cluster: Cluster) -> None:
    async with _client(cluster) as http:
        r = await http.get("/api/v1/pods", params={"watch": "true", "labelSelector": "a in (b"})
        assert r.status_code == 400 and r.json()["reason"] == "BadRequest"
        r = await http.get("/api/v1/pods", params={"watch": "true", "resourceVersion": "abc"})
        assert r.status_code == 400


async def test_access_reviews_allow_everything(cluster: Cluster) -> None:
    async with _client(cluster) as http:
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": "create",
                    "resource": "pods",
                    "subresource": "portforward",
                }
            },
        }
        r = await http.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", json=body)
        assert r.status_code == 201 and r.json()["status"]["allowed"] is True
        r = await http.get("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
        assert r.status_code == 405
