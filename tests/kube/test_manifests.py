"""deploy/ and the objects tp install applies are the same."""

from __future__ import annotations

from pathlib import Path

import yaml

from tpengine.kube.manifests import DEFAULT_IMAGE, manager_manifests

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def key(obj: dict) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def test_deploy_directory_matches_rendered_manifests() -> None:
    on_disk = [
        doc
        for path in sorted((DEPLOY / "manager").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    rendered = manager_manifests()
    assert sorted(on_disk, key=key) == sorted(rendered, key=key), (
        "deploy/ is out of date: run python -m tpengine.kube.manifests deploy/manager"
    )
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["images"][0]["newTag"] == DEFAULT_IMAGE.split(":")[1]
    assert sorted(kustomization["resources"]) == sorted(
        f"manager/{p.name}" for p in (DEPLOY / "manager").glob("*.yaml")
    )


def test_namespace_and_image_are_parameters() -> None:
    objs = manager_manifests("tp-other", "registry.example/tpengine:dev")
    assert all(
        o["metadata"].get("namespace", "tp-other") == "tp-other"
        for o in objs
        if o["kind"] not in ("ClusterRole", "ClusterRoleBinding")
    )
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    assert (
        deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.example/tpengine:dev"
    )
    binding = next(o for o in objs if o["kind"] == "ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == "tp-other"
    assert binding["metadata"]["name"] == "traffic-manager-tp-other"
