"""Real kubectl against the API server (fake node: pods run when the fake kubelet says so)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

from tests.localcluster.api.conftest import Cluster

APP = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}
data: {GREETING: hello}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: ghcr.io/telepresenceio/echo-server:latest
        ports: [{containerPort: 8080, name: http}]
        env: [{name: PORT, value: "8080"}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""

# ../shared beside the repository (as CI lays it out), not a fixed absolute path.
REFERENCE = (
    Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "engagements-cli.md"
)


def yaml_blocks() -> list[str]:
    """The complete manifests among the reference's YAML blocks, unchanged (dedented)."""
    text = REFERENCE.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    return [textwrap.dedent(b) for b in blocks if "apiVersion:" in b]


async def test_version_discovery_and_get_pods(cluster: Cluster) -> None:
    out = await cluster.kubectl("version", "-o", "json")
    assert json.loads(out.stdout)["serverVersion"]["gitVersion"].startswith("v1.32.")
    resources = (await cluster.kubectl("api-resources", "-o", "name")).stdout.decode().split()
    for name in (
        "pods",
        "deployments.apps",
        "endpointslices.discovery.k8s.io",
        "mutatingwebhookconfigurations.admissionregistration.k8s.io",
    ):
        assert name in resources
    out = await cluster.kubectl("get", "ns,sa,svc", "-A")
    text = out.stdout.decode()
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        assert f"namespace/{ns}" in text
    assert re.search(r"default\s+service/kubernetes\s+ClusterIP\s+10\.96\.0\.1\s", text)
    assert re.search(
        r"kube-system\s+service/kube-dns\s+ClusterIP\s+10\.96\.0\.10\s+<none>\s+53/UDP,53/TCP", text
    )
    nodes = (await cluster.kubectl("get", "nodes", "-o", "wide")).stdout.decode()
    assert re.search(r"tpt-node\s+Ready\s+control-plane\s+\S+\s+v1\.32\.0\s+198\.18\.0\.1", nodes)
    out = await cluster.kubectl("get", "pods", "-A")
    assert b"No resources found" in out.stderr


async def test_apply_rollout_restart_scale_wait_delete(cluster: Cluster, tmp_path: Path) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(APP)
    out = await cluster.kubectl("apply", "-f", str(manifest))
    assert out.stdout.decode().split("\n")[:3] == [
        "configmap/web-config created",
        "deployment.apps/web created",
        "service/web created",
    ]
    await cluster.kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    pods, _ = cluster.store.list("pods", "default", label_selector="app=web")
    assert len(pods) == 2 and all("pod-template-hash" in p["metadata"]["labels"] for p in pods)
    svc = (await cluster.kubectl("get", "svc", "web")).stdout.decode()
    assert re.search(r"web\s+ClusterIP\s+10\.\d+\.\d+\.\d+\s+<none>\s+80/TCP", svc)
    # the Service's named targetPort resolves against the container port
    endpoints = cluster.store.get("endpoints", "default", "web")
    assert {a["ip"] for a in endpoints["subsets"][0]["addresses"]} == {
        p["status"]["podIP"] for p in pods
    }
    assert endpoints["subsets"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
    again = await cluster.kubectl("apply", "-f", str(manifest))
    assert b"deployment.apps/web unchanged" in again.stdout

    old_hash = pods[0]["metadata"]["labels"]["pod-template-hash"]
    await cluster.kubectl("rollout", "restart", "deployment/web")
    await cluster.kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    await cluster.wait_for(
        lambda: (
            {
                p["metadata"]["labels"]["pod-template-hash"]
                for p in cluster.store.list("pods", "default", label_selector="app=web")[0]
            }
            - {old_hash}
            and len(cluster.store.list("pods", "default", label_selector="app=web")[0]) == 2
        )
    )

    described = (await cluster.kubectl("describe", "deployment/web")).stdout.decode()
    assert re.search(
        r"Normal\s+ScalingReplicaSet\s+\S+\s+deployment-controller\s+Scaled up replica set web-",
        described,
    )
    await cluster.kubectl("scale", "deployment/web", "--replicas=3")
    await cluster.kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    await cluster.kubectl("wait", "--for=condition=Ready", "pod", "-l", "app=web", "--timeout=20s")
    table = (await cluster.kubectl("get", "deploy", "web")).stdout.decode()
    assert re.search(r"web\s+3/3\s+3\s+3\s", table)

    manifest.write_text(APP.replace("replicas: 2", "replicas: 1"))
    out = await cluster.kubectl("apply", "--server-side", "-f", str(manifest))
    assert b"deployment.apps/web serverside-applied" in out.stdout
    await cluster.kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    assert cluster.store.get("deployments", "default", "web")["spec"]["replicas"] == 1

    await cluster.kubectl("delete", "-f", str(manifest))
    await cluster.wait_for(lambda: not cluster.store.list("pods", "default")[0])
    assert not cluster.store.list("replicasets", "default")[0]
    assert [s["metadata"]["name"] for s in cluster.store.list("services", "default")[0]] == [
        "kubernetes"
    ]
    verbs = {(e["verb"], e["resource"]) for e in cluster.audit()}
    assert {("create", "deployments"), ("patch", "deployments"), ("delete", "services")} <= verbs


async def test_reference_manifests_apply_unchanged(cluster: Cluster, tmp_path: Path) -> None:
    blocks = yaml_blocks()
    assert len(blocks) == 2
    for i, block in enumerate(blocks):
        path = tmp_path / f"block{i}.yaml"
        path.write_text(block)
        await cluster.kubectl("apply", "-f", str(path))
        await cluster.kubectl("apply", "--server-side", "-f", str(path))
    await cluster.kubectl("rollout", "status", "statefulset/my-headless", "--timeout=20s")
    await cluster.kubectl("rollout", "status", "deployment/echo-no-svc", "--timeout=20s")
    svc = cluster.store.get("services", "default", "my-headless")
    assert svc["spec"]["clusterIP"] == "None"
    pod = cluster.store.get("pods", "default", "my-headless-0")
    assert pod["spec"]["hostname"] == "my-headless" + "-0"
    assert pod["spec"]["subdomain"] == "my-headless"
    await cluster.wait_for(
        lambda: "subsets" in cluster.store.get("endpoints", "default", "my-headless")
    )
    address = cluster.store.get("endpoints", "default", "my-headless")["subsets"][0]["addresses"][0]
    assert address["hostname"] == "my-headless-0"
    template = cluster.store.get("deployments", "default", "echo-no-svc")["spec"]["template"]
    assert template["metadata"]["annotations"] == {"telepresence.io/inject-container-ports": "http"}


async def test_statefulset_scales_in_order(cluster: Cluster, tmp_path: Path) -> None:
    path = tmp_path / "sts.yaml"
    path.write_text(yaml_blocks()[0].replace("replicas: 1", "replicas: 3"))
    await cluster.kubectl("apply", "-f", str(path))
    await cluster.kubectl("rollout", "status", "statefulset/my-headless", "--timeout=20s")
    names = sorted(p["metadata"]["name"] for p in cluster.store.list("pods", "default")[0])
    assert names == ["my-headless-0", "my-headless-1", "my-headless-2"]
    created = [
        cluster.store.get("pods", "default", n)["metadata"]["resourceVersion"] for n in names
    ]
    assert [int(v) for v in created] == sorted(int(v) for v in created)
    await cluster.kubectl("scale", "statefulset/my-headless", "--replicas=1")
    await cluster.wait_for(
        lambda: (
            [p["metadata"]["name"] for p in cluster.store.list("pods", "default")[0]]
            == ["my-headless-0"]
        )
    )
