"""Unit tests of the API server's pieces: selectors, patches, store semantics, SPDY framing."""

from __future__ import annotations

import functools
import struct
import zlib

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from localcluster.apiserver import _patch, _spdy
from localcluster.apiserver._selectors import (
    SelectorError,
    make_matcher,
    parse_field_selector,
    parse_label_selector,
)
from localcluster.store import AlreadyExists, BadRequest, Conflict, Gone, Invalid, NotFound, Store

POD = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def _obj(labels: dict[str, str]) -> dict[str, object]:
    return {"metadata": {"name": "x", "namespace": "ns", "labels": labels}}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "db"}, False),
        ("app!=web", {}, True),
        ("app in (web, db),tier", {"app": "db", "tier": "x"}, True),
        ("app notin (web,db)", {"app": "db"}, False),
        ("app notin (web,db)", {}, True),
        ("!canary", {"canary": "1"}, False),
        ("!canary,app", {"app": "a"}, True),
        ("example.com/role=x,count>2", {"example.com/role": "x", "count": "3"}, True),
        ("", {"anything": "goes"}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert make_matcher("pods", selector, None)(_obj(labels)) is expected


def test_field_selectors() -> None:
    pod = {"metadata": {"name": "p1", "namespace": "a"}, "status": {"phase": "Running"}, "spec": {}}
    assert make_matcher("pods", None, "metadata.name=p1,metadata.name=p1")(pod)
    assert make_matcher("pods", None, "status.phase!=Pending,spec.hostNetwork=false")(pod)
    assert not make_matcher("pods", None, "metadata.namespace==b")(pod)
    with pytest.raises(SelectorError, match="field label not supported: spec.bogus"):
        parse_field_selector("spec.bogus=1", "pods")


@given(st.text(max_size=40))
def test_selector_parsers_only_raise_selector_error(text: str) -> None:
    for parse in (parse_label_selector, lambda t: parse_field_selector(t, "pods")):
        try:
            parse(text)
        except SelectorError:
            pass


def test_strategic_merge_merges_lists_by_key() -> None:
    original = {
        "spec": {
            "containers": [
                {
                    "name": "a",
                    "image": "1",
                    "env": [{"name": "X", "value": "1"}],
                    "ports": [{"containerPort": 80}],
                },
                {"name": "b", "image": "2"},
            ],
            "finalizers": ["one"],
        }
    }
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [
                {
                    "name": "a",
                    "env": [{"name": "Y", "value": "2"}],
                    "ports": [{"containerPort": 81}],
                },
                {"name": "b", "$patch": "delete"},
            ],
            "finalizers": ["two"],
        }
    }
    result = _patch.strategic_merge(original, patch)
    (a,) = result["spec"]["containers"]
    assert a["image"] == "1"
    assert a["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]
    assert a["ports"] == [{"containerPort": 80}, {"containerPort": 81}]
    assert result["spec"]["finalizers"] == ["one", "two"]
    svc = _patch.strategic_merge(
        {"spec": {"ports": [{"port": 80, "name": "h"}]}},
        {"spec": {"ports": [{"port": 80, "name": "http"}]}},
    )
    assert svc["spec"]["ports"] == [{"port": 80, "name": "http"}]


def test_merge_and_json_patch() -> None:
    assert _patch.merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {
        "a": {"c": 2, "d": 3}
    }
    body = b'[{"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}]'
    assert _patch.apply_patch({"metadata": {}}, _patch.JSON_PATCH, body)["metadata"]["labels"] == {
        "x": "y"
    }
    with pytest.raises(Invalid):
        _patch.apply_patch({}, _patch.JSON_PATCH, b'[{"op": "remove", "path": "/nope"}]')
    with pytest.raises(BadRequest):
        _patch.apply_patch({}, _patch.MERGE_PATCH, b"{oops")


async def _store() -> Store:
    store = Store(node_name="n")
    await store.create("namespaces", None, {"metadata": {"name": "default"}})
    return store


async def test_store_metadata_defaults_generation_and_noop_updates() -> None:
    store = await _store()
    dep = await store.create(
        "deployments",
        "default",
        {
            "metadata": {"name": "d"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": POD["spec"]},
                "x-unknown": {"kept": True},
            },
        },
    )
    meta = dep["metadata"]
    assert meta["generation"] == 1 and meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert dep["spec"]["x-unknown"] == {"kept": True}
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": "25%", "maxSurge": "25%"}
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "Always"
    same = await store.update("deployments", "default", dep)
    assert same["metadata"]["resourceVersion"] == meta["resourceVersion"]
    dep["spec"]["replicas"] = 4
    changed = await store.update("deployments", "default", dep)
    assert changed["metadata"]["generation"] == 2
    with pytest.raises(Conflict):
        await store.update("deployments", "default", dep)  # stale resourceVersion
    status = await store.update_status("deployments", "default", "d", {"replicas": 4})
    assert status["metadata"]["generation"] == 2


async def test_store_pod_defaults_and_service_ips() -> None:
    store = await _store()
    pod = await store.create("pods", "default", POD)
    spec = pod["spec"]
    assert (spec["nodeName"], spec["restartPolicy"], spec["dnsPolicy"]) == (
        "n",
        "Always",
        "ClusterFirst",
    )
    assert spec["serviceAccountName"] == "default" and pod["status"]["phase"] == "Pending"
    assert any(v["name"].startswith("kube-api-access-") for v in spec["volumes"])
    ips = set()
    for i in range(20):
        svc = await store.create(
            "services",
            "default",
            {"metadata": {"name": f"s{i}"}, "spec": {"ports": [{"port": 80}]}},
        )
        ips.add(svc["spec"]["clusterIP"])
        assert svc["spec"]["clusterIP"] not in ("10.96.0.1", "10.96.0.10")
    assert len(ips) == 20
    with pytest.raises(Invalid, match="provided IP is already allocated"):
        await store.create(
            "services",
            "default",
            {
                "metadata": {"name": "dup"},
                "spec": {"clusterIP": next(iter(ips)), "ports": [{"port": 1}]},
            },
        )
    with pytest.raises(NotFound):
        await store.create("pods", "elsewhere", POD)


async def test_watch_resume_selectors_and_gone() -> None:
    store = Store(node_name="n", history_limit=5)
    await store.create("namespaces", None, {"metadata": {"name": "default"}})
    first = await store.create(
        "configmaps", "default", {"metadata": {"name": "a", "labels": {"k": "v"}}}
    )
    rv = first["metadata"]["resourceVersion"]
    await store.patch(
        "configmaps", "default", "a", _patch.MERGE_PATCH, {"metadata": {"labels": {"k": "w"}}}
    )
    async with store.watch(
        "configmaps", "default", resource_version=rv, label_selector="k=v"
    ) as events:
        event = await events.__anext__()
        assert event.type == "DELETED"  # it left the selection
    for i in range(10):
        await store.create("configmaps", "default", {"metadata": {"name": f"c{i}"}})
    with pytest.raises(Gone, match="too old resource version"):
        async with store.watch("configmaps", resource_version=rv):
            pass
    async with store.watch("configmaps", resource_version="0") as events:
        names = set()
        with trio.move_on_after(0.1):
            async for event in events:
                names.add(event.object["metadata"]["name"])
        assert {"a", "c9"} <= names


async def test_garbage_collection_and_orphaning() -> None:
    store = await _store()
    owner = await store.create("configmaps", "default", {"metadata": {"name": "owner"}})
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    await store.create(
        "configmaps", "default", {"metadata": {"name": "child", "ownerReferences": [ref]}}
    )
    await store.create(
        "pods", "default", {**POD, "metadata": {"name": "p", "ownerReferences": [ref]}}
    )
    await store.delete("configmaps", "default", "owner")
    with pytest.raises(NotFound):
        store.get("configmaps", "default", "child")
    assert store.get("pods", "default", "p")["metadata"][
        "deletionTimestamp"
    ]  # graceful: kubelet ends it
    await store.remove("pods", "default", "p")
    owner = await store.create("configmaps", "default", {"metadata": {"name": "owner"}})
    ref["uid"] = owner["metadata"]["uid"]
    await store.create(
        "configmaps", "default", {"metadata": {"name": "kept", "ownerReferences": [ref]}}
    )
    await store.delete("configmaps", "default", "owner", propagation_policy="Orphan")
    assert "ownerReferences" not in store.get("configmaps", "default", "kept")["metadata"]


def _syn(conn_deflate: zlib._Compress, stream_id: int, headers: dict[str, str]) -> bytes:
    raw = struct.pack(">I", len(headers)) + b"".join(
        struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
        for k, v in headers.items()
    )
    block = conn_deflate.compress(raw) + conn_deflate.flush(zlib.Z_SYNC_FLUSH)
    body = struct.pack(">IIH", stream_id, 0, 0) + block
    return struct.pack(">HHI", 0x8003, 1, len(body)) + body


def test_spdy_frames_byte_by_byte() -> None:
    assert zlib.adler32(_spdy.DICTIONARY) == 0xE3C6A7C2  # the SPDY/3 dictionary's checksum
    client = zlib.compressobj(zdict=_spdy.DICTIONARY)
    wire = _syn(client, 1, {"streamtype": "error", "port": "80", "requestid": "0"})
    wire += _syn(client, 3, {"streamtype": "data", "port": "80", "requestid": "0"})
    wire += struct.pack(">II", 3, (1 << 24) | 5) + b"hello"
    wire += struct.pack(">HHII", 0x8003, 6, 4, 7)
    conn = _spdy.SpdyConnection()
    frames = [f for i in range(len(wire)) for f in conn.receive_data(wire[i : i + 1])]
    assert frames == [
        _spdy.SynStream(
            stream_id=1, headers={"streamtype": "error", "port": "80", "requestid": "0"}, fin=False
        ),
        _spdy.SynStream(
            stream_id=3, headers={"streamtype": "data", "port": "80", "requestid": "0"}, fin=False
        ),
        _spdy.Data(stream_id=3, data=b"hello", fin=True),
        _spdy.Ping(ping_id=7),
    ]
    reply = conn.syn_reply(3)
    assert reply[:4] == b"\x80\x03\x00\x02"


@given(st.binary(max_size=200))
def test_spdy_parser_only_raises_protocol_errors(data: bytes) -> None:
    try:
        _spdy.SpdyConnection().receive_data(data)
    except _spdy.SpdyProtocolError:
        pass


async def test_foreground_deletion_waits_for_dependents() -> None:
    store = await _store()
    owner = await store.create("configmaps", "default", {"metadata": {"name": "owner"}})
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    await store.create(
        "pods", "default", {**POD, "metadata": {"name": "p", "ownerReferences": [ref]}}
    )
    marked = await store.delete("configmaps", "default", "owner", propagation_policy="Foreground")
    assert marked["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert store.get("pods", "default", "p")["metadata"]["deletionTimestamp"]
    assert store.get("configmaps", "default", "owner")["metadata"]["deletionTimestamp"]
    await store.remove("pods", "default", "p")  # the kubelet finishes the pod
    with pytest.raises(NotFound):
        store.get("configmaps", "default", "owner")


async def test_pod_spec_and_selectors_are_immutable() -> None:
    store = await _store()
    pod = await store.create("pods", "default", POD)
    pod["spec"]["containers"][0]["image"] = "busybox:2"  # allowed
    pod["metadata"]["labels"] = {"new": "label"}
    pod = await store.update("pods", "default", pod)
    pod["spec"]["containers"][0]["env"] = [{"name": "X", "value": "1"}]
    with pytest.raises(Invalid, match="pod updates may not change fields other than"):
        await store.update("pods", "default", pod)


async def test_server_side_apply_removes_what_the_manager_dropped() -> None:
    store = await _store()
    first = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "labels": {"a": "1", "b": "2"}},
        "data": {"x": "1", "y": "2"},
    }
    _, created = await store.patch_ex(
        "configmaps", "default", "c", _patch.APPLY_PATCH, first, field_manager="me"
    )
    assert created
    await store.patch("configmaps", "default", "c", _patch.MERGE_PATCH, {"data": {"other": "kept"}})
    second = {**first, "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "1"}}
    obj, created = await store.patch_ex(
        "configmaps", "default", "c", _patch.APPLY_PATCH, second, field_manager="me"
    )
    assert not created
    assert obj["metadata"]["labels"] == {"a": "1"}
    assert obj["data"] == {"x": "1", "other": "kept"}  # another writer's field stays

    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "i",
                            "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
                        }
                    ]
                },
            },
        },
    }
    await store.patch_ex("deployments", "default", "d", _patch.APPLY_PATCH, dep, field_manager="me")
    dep["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "X", "value": "1"}]
    obj, _ = await store.patch_ex(
        "deployments", "default", "d", _patch.APPLY_PATCH, dep, field_manager="me"
    )
    assert obj["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "X", "value": "1"}]
    assert obj["spec"]["strategy"]["type"] == "RollingUpdate"  # defaults stay


OPS = st.lists(
    st.tuples(
        st.sampled_from(["create", "relabel", "delete"]),
        st.integers(min_value=0, max_value=5),
        st.sampled_from(["a", "b"]),
    ),
    max_size=30,
)


@given(OPS, st.integers(min_value=0, max_value=30))
def test_watch_replays_to_the_listed_state(ops: list[tuple[str, int, str]], cut: int) -> None:
    """Model check: a list at any version plus the watch from that version, with a label
    selector, always rebuilds exactly the final list."""

    async def main() -> None:
        store = await _store()
        snapshots: list[tuple[list[dict[str, object]], str]] = [
            store.list("configmaps", "default", label_selector="tier=a")
        ]
        for op, n, tier in ops:
            name = f"c{n}"
            try:
                if op == "create":
                    await store.create(
                        "configmaps",
                        "default",
                        {"metadata": {"name": name, "labels": {"tier": tier}}},
                    )
                elif op == "relabel":
                    await store.patch(
                        "configmaps",
                        "default",
                        name,
                        _patch.MERGE_PATCH,
                        {"metadata": {"labels": {"tier": tier}}},
                    )
                else:
                    await store.delete("configmaps", "default", name)
            except (NotFound, AlreadyExists):
                pass  # the model allows them: deleting the absent, creating the present
            snapshots.append(store.list("configmaps", "default", label_selector="tier=a"))
        items, rv = snapshots[min(cut, len(snapshots) - 1)]
        state = {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in items}
        async with store.watch(
            "configmaps", "default", resource_version=rv, label_selector="tier=a"
        ) as events:
            with trio.move_on_after(0.05):
                async for event in events:
                    name = event.object["metadata"]["name"]
                    if event.type == "DELETED":
                        del state[name]
                    else:
                        state[name] = event.object["metadata"]["resourceVersion"]
        final, _ = store.list("configmaps", "default", label_selector="tier=a")
        assert state == {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in final}

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_endpoint_slices_list_terminating_pods(nursery: trio.Nursery) -> None:
    from localcluster.controllers import bootstrap, run_controllers
    from tests.localcluster.api.fakenode import FakeKubelet

    store = Store(node_name="n")
    await bootstrap(store)
    kubelet = FakeKubelet(store)
    nursery.start_soon(functools.partial(run_controllers, store, resync_seconds=0.2))
    pod = {**POD, "metadata": {"name": "p", "labels": {"app": "x"}}}
    await store.create("pods", "default", pod)
    await kubelet.mark_ready("default", "p")
    svc = {"metadata": {"name": "x"}, "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}
    await store.create("services", "default", svc)

    def conditions() -> list[dict[str, bool]]:
        slices, _ = store.list(
            "endpointslices", "default", label_selector="kubernetes.io/service-name=x"
        )
        return [e["conditions"] for s in slices for e in s["endpoints"]]

    for _ in range(100):
        if conditions():
            break
        await trio.sleep(0.02)
    assert conditions() == [{"ready": True, "serving": True, "terminating": False}]
    await store.delete("pods", "default", "p")  # graceful: the pod is still there
    for _ in range(100):
        if conditions() and conditions()[0]["terminating"]:
            break
        await trio.sleep(0.02)
    assert conditions() == [{"ready": False, "serving": True, "terminating": True}]
    assert "subsets" not in store.get("endpoints", "default", "x")


def test_a_number_in_a_containers_command_is_refused_like_the_real_decoder() -> None:
    from localcluster.apiserver._resources import RESOURCES
    from localcluster.apiserver._validation import check_shape

    [info] = [r for r in RESOURCES if r.name == "deployments"]
    container = {"name": "app", "image": "x", "command": ["python3", "server.py", 8080]}
    deployment = {
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }
    with pytest.raises(BadRequest, match="cannot unmarshal number into Go struct field"):
        check_shape(info, deployment)
    container["command"] = ["python3", "server.py", "8080"]
    check_shape(info, deployment)
