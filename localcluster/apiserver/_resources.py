"""The resources this API server serves: names, kinds, groups, scope, verbs.

One table drives discovery (aggregated and legacy), the OpenAPI document, URL routing and
the store. Anything not listed here is a 404, as on a real API server.
"""

from __future__ import annotations

from dataclasses import dataclass

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, kw_only=True)
class ResourceInfo:
    name: str  # plural, lowercase: the URL segment and the store key
    singular: str
    kind: str
    group: str  # "" for the core group
    version: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # subresource name -> (group, version, kind) of its body, and its verbs
    subresources: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    has_generation: bool = False
    has_status: bool = False
    verbs: tuple[str, ...] = ALL_VERBS
    review: bool = False  # create-only, answered at once and never stored (access reviews)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


_STATUS = ("status", "", ("get", "patch", "update"))

RESOURCES: tuple[ResourceInfo, ...] = (
    ResourceInfo(
        name="namespaces",
        singular="namespace",
        kind="Namespace",
        group="",
        version="v1",
        namespaced=False,
        short_names=("ns",),
        subresources=(_STATUS,),
        has_status=True,
    ),
    ResourceInfo(
        name="nodes",
        singular="node",
        kind="Node",
        group="",
        version="v1",
        namespaced=False,
        short_names=("no",),
        subresources=(_STATUS,),
        has_status=True,
    ),
    ResourceInfo(
        name="pods",
        singular="pod",
        kind="Pod",
        group="",
        version="v1",
        namespaced=True,
        short_names=("po",),
        categories=("all",),
        subresources=(
            _STATUS,
            ("log", "Pod", ("get",)),
            ("exec", "PodExecOptions", ("create", "get")),
            ("portforward", "PodPortForwardOptions", ("create", "get")),
        ),
        has_status=True,
    ),
    ResourceInfo(
        name="services",
        singular="service",
        kind="Service",
        group="",
        version="v1",
        namespaced=True,
        short_names=("svc",),
        categories=("all",),
        subresources=(_STATUS,),
        has_status=True,
    ),
    ResourceInfo(
        name="endpoints",
        singular="endpoints",
        kind="Endpoints",
        group="",
        version="v1",
        namespaced=True,
        short_names=("ep",),
    ),
    ResourceInfo(
        name="configmaps",
        singular="configmap",
        kind="ConfigMap",
        group="",
        version="v1",
        namespaced=True,
        short_names=("cm",),
    ),
    ResourceInfo(
        name="secrets",
        singular="secret",
        kind="Secret",
        group="",
        version="v1",
        namespaced=True,
    ),
    ResourceInfo(
        name="serviceaccounts",
        singular="serviceaccount",
        kind="ServiceAccount",
        group="",
        version="v1",
        namespaced=True,
        short_names=("sa",),
    ),
    ResourceInfo(
        name="events",
        singular="event",
        kind="Event",
        group="",
        version="v1",
        namespaced=True,
        short_names=("ev",),
    ),
    ResourceInfo(
        name="deployments",
        singular="deployment",
        kind="Deployment",
        group="apps",
        version="v1",
        namespaced=True,
        short_names=("deploy",),
        categories=("all",),
        subresources=(_STATUS, ("scale", "Scale", ("get", "patch", "update"))),
        has_generation=True,
        has_status=True,
    ),
    ResourceInfo(
        name="replicasets",
        singular="replicaset",
        kind="ReplicaSet",
        group="apps",
        version="v1",
        namespaced=True,
        short_names=("rs",),
        categories=("all",),
        subresources=(_STATUS, ("scale", "Scale", ("get", "patch", "update"))),
        has_generation=True,
        has_status=True,
    ),
    ResourceInfo(
        name="statefulsets",
        singular="statefulset",
        kind="StatefulSet",
        group="apps",
        version="v1",
        namespaced=True,
        short_names=("sts",),
        categories=("all",),
        subresources=(_STATUS, ("scale", "Scale", ("get", "patch", "update"))),
        has_generation=True,
        has_status=True,
    ),
    ResourceInfo(
        name="endpointslices",
        singular="endpointslice",
        kind="EndpointSlice",
        group="discovery.k8s.io",
        version="v1",
        namespaced=True,
    ),
    ResourceInfo(
        name="mutatingwebhookconfigurations",
        singular="mutatingwebhookconfiguration",
        kind="MutatingWebhookConfiguration",
        group="admissionregistration.k8s.io",
        version="v1",
        namespaced=False,
        categories=("api-extensions",),
        has_generation=True,
    ),
)

# RBAC objects are stored and served (so manifests with least-privilege roles apply as on
# a real cluster) but not enforced: the local cluster authorizes every authenticated call.
RBAC_RESOURCES: tuple[ResourceInfo, ...] = tuple(
    ResourceInfo(
        name=name,
        singular=name[:-1],
        kind=kind,
        group="rbac.authorization.k8s.io",
        version="v1",
        namespaced=namespaced,
    )
    for name, kind, namespaced in (
        ("roles", "Role", True),
        ("rolebindings", "RoleBinding", True),
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
    )
)
RESOURCES = RESOURCES + RBAC_RESOURCES

# Who am I and may I: answered for the one admin user, who may do everything.
REVIEW_RESOURCES: tuple[ResourceInfo, ...] = tuple(
    ResourceInfo(
        name=name,
        singular=name[:-1],
        kind=kind,
        group=group,
        version="v1",
        namespaced=namespaced,
        verbs=("create",),
        review=True,
    )
    for name, kind, group, namespaced in (
        ("tokenreviews", "TokenReview", "authentication.k8s.io", False),
        ("selfsubjectreviews", "SelfSubjectReview", "authentication.k8s.io", False),
        ("selfsubjectaccessreviews", "SelfSubjectAccessReview", "authorization.k8s.io", False),
        ("selfsubjectrulesreviews", "SelfSubjectRulesReview", "authorization.k8s.io", False),
    )
)
RESOURCES = RESOURCES + REVIEW_RESOURCES

BY_NAME: dict[str, ResourceInfo] = {info.name: info for info in RESOURCES}


def group_versions() -> list[tuple[str, str]]:
    """The (group, version) pairs served, core first, in a stable order."""
    seen: list[tuple[str, str]] = []
    for info in RESOURCES:
        gv = (info.group, info.version)
        if gv not in seen:
            seen.append(gv)
    return seen


def resources_of(group: str, version: str) -> list[ResourceInfo]:
    return [r for r in RESOURCES if r.group == group and r.version == version]


def lookup(group: str, version: str, name: str) -> ResourceInfo | None:
    info = BY_NAME.get(name)
    if info is None or info.group != group or info.version != version:
        return None
    return info
