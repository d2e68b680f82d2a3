"""The pure decisions of the installer (the e2e tests install into the local cluster)."""

from __future__ import annotations

from tpengine.kube.install import _differs
from tpengine.kube.objects import rolled_out


def test_server_added_fields_do_not_count_as_a_difference() -> None:
    wanted = {
        "kind": "Service",
        "metadata": {"name": "a", "labels": {"x": "1"}},
        "spec": {"ports": [{"port": 80}]},
    }
    current = {
        "kind": "Service",
        "metadata": {"name": "a", "labels": {"x": "1"}, "uid": "u", "resourceVersion": "7"},
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.96.0.5"},
        "status": {},
    }
    assert not _differs(current, wanted)
    current["metadata"]["labels"]["x"] = "2"
    assert _differs(current, wanted)


def test_rollout_complete_like_kubectl_rollout_status() -> None:
    deployment = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "availableReplicas": 1,
        },
    }
    assert not rolled_out(deployment)
    deployment["status"]["observedGeneration"] = 2
    assert rolled_out(deployment)
    deployment["status"]["replicas"] = 2  # an old pod still running
    assert not rolled_out(deployment)


def test_statefulset_rollout_compares_revisions() -> None:
    sts = {
        "kind": "StatefulSet",
        "metadata": {"generation": 1},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 1,
            "readyReplicas": 2,
            "currentRevision": "a",
            "updateRevision": "b",
        },
    }
    assert not rolled_out(sts)
    sts["status"]["currentRevision"] = "b"
    assert rolled_out(sts)
