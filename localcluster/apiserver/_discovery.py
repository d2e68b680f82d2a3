"""/version, discovery (aggregated v2/v2beta1 and legacy) and a minimal /openapi/v3."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ._resources import ResourceInfo, group_versions, resources_of

VERSION_INFO = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "gitCommit": "tpengine-local-cluster",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z",
    "goVersion": "go1.23.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}

AGGREGATED = {
    "v2": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
    "v2beta1": "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
}


def parse_accept(accept: str) -> list[tuple[str, dict[str, str]]]:
    """Media types in the client's order, each with its parameters (q is ignored)."""
    out = []
    for part in accept.split(","):
        bits = [b.strip() for b in part.split(";")]
        if not bits[0]:
            continue
        params = {}
        for bit in bits[1:]:
            if "=" in bit:
                key, value = bit.split("=", 1)
                params[key.strip()] = value.strip()
        out.append((bits[0].lower(), params))
    return out or [("*/*", {})]


def negotiate_discovery(accept: str) -> str | None:
    """'v2', 'v2beta1' (aggregated, first the client offers) or None (legacy JSON)."""
    for media, params in parse_accept(accept):
        if media == "application/json" and params.get("g") == "apidiscovery.k8s.io":
            if params.get("as") == "APIGroupDiscoveryList" and params.get("v") in AGGREGATED:
                return params["v"]
            continue
        if media in ("application/json", "*/*", "application/*") and "as" not in params:
            return None
    return None


def _verbs(info: ResourceInfo) -> list[str]:
    return sorted(info.verbs)


def _sub_kind(info: ResourceInfo, kind: str) -> dict[str, str]:
    if kind == "Scale":
        return {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    return {"group": info.group, "version": info.version, "kind": kind or info.kind}


def _aggregated_resource(info: ResourceInfo) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": info.name,
        "responseKind": {"group": info.group, "version": info.version, "kind": info.kind},
        "scope": "Namespaced" if info.namespaced else "Cluster",
        "singularResource": info.singular,
        "verbs": _verbs(info),
    }
    if info.short_names:
        entry["shortNames"] = list(info.short_names)
    if info.categories:
        entry["categories"] = list(info.categories)
    if info.subresources:
        entry["subresources"] = [
            {"subresource": name, "responseKind": _sub_kind(info, kind), "verbs": list(verbs)}
            for name, kind, verbs in info.subresources
        ]
    return entry


def aggregated(core: bool, version: str) -> dict[str, Any]:
    items = []
    for group, ver in group_versions():
        if (group == "") != core:
            continue
        items.append(
            {
                "metadata": {"name": group} if group else {},
                "versions": [
                    {
                        "version": ver,
                        "resources": [_aggregated_resource(r) for r in resources_of(group, ver)],
                        "freshness": "Current",
                    }
                ],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{version}",
        "metadata": {},
        "items": items,
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def api_group(group: str) -> dict[str, Any] | None:
    versions = [v for g, v in group_versions() if g == group and g]
    if not versions:
        return None
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": gvs,
        "preferredVersion": gvs[0],
    }


def api_group_list() -> dict[str, Any]:
    groups: list[dict[str, Any]] = []
    for group, _ in group_versions():
        found = api_group(group) if group else None
        if found is not None and all(g["name"] != group for g in groups):
            groups.append({k: v for k, v in found.items() if k not in ("kind", "apiVersion")})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    infos = resources_of(group, version)
    if not infos:
        return None
    resources: list[dict[str, Any]] = []
    for info in infos:
        entry: dict[str, Any] = {
            "name": info.name,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": _verbs(info),
        }
        if info.short_names:
            entry["shortNames"] = list(info.short_names)
        if info.categories:
            entry["categories"] = list(info.categories)
        resources.append(entry)
        for name, kind, verbs in info.subresources:
            sub = _sub_kind(info, kind)
            item: dict[str, Any] = {
                "name": f"{info.name}/{name}",
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": sub["kind"],
                "verbs": list(verbs),
            }
            if sub["group"] != info.group:
                item["group"], item["version"] = sub["group"], sub["version"]
            resources.append(item)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


# ---- OpenAPI v3 --------------------------------------------------------------------------


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _param(name: str, where: str = "query", required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required,
        "schema": {"type": "string", "uniqueItems": True},
    }


def _operations(info: ResourceInfo) -> dict[str, Any]:
    gvk = {"group": info.group, "version": info.version, "kind": info.kind}
    base = f"/{_gv_path(info.group, info.version)}"
    prefix = f"{base}/namespaces/{{namespace}}" if info.namespaced else base
    common = [_param("dryRun"), _param("fieldManager"), _param("fieldValidation"), _param("pretty")]
    path_params = [_param("name", "path", True)]
    if info.namespaced:
        path_params.append(_param("namespace", "path", True))
    ref = {"$ref": f"#/components/schemas/{_schema_name(info)}"}
    content = {"application/json": {"schema": ref}}
    patch_body = {
        "content": {
            t: {"schema": {"type": "object"}}
            for t in (
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            )
        },
        "required": True,
    }

    def op(verb: str, action: str, **extra: Any) -> dict[str, Any]:
        return {
            "operationId": f"{verb}{info.kind}",
            "parameters": common,
            "responses": {"200": {"description": "OK", "content": content}},
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            **extra,
        }

    return {
        f"{prefix}/{info.name}": {
            "post": op("create", "post", requestBody={"content": content, "required": True}),
            "get": op("list", "list"),
        },
        f"{prefix}/{info.name}/{{name}}": {
            "parameters": path_params,
            "get": op("read", "get"),
            "put": op("replace", "put", requestBody={"content": content, "required": True}),
            "patch": op("patch", "patch", requestBody=patch_body),
            "delete": op("delete", "delete"),
        },
    }


def _schema_name(info: ResourceInfo) -> str:
    group = {"": "core", "apps": "apps", "discovery.k8s.io": "discovery"}.get(
        info.group, info.group.split(".")[0]
    )
    return f"io.k8s.api.{group}.{info.version}.{info.kind}"


def openapi_document(group: str, version: str) -> dict[str, Any] | None:
    infos = resources_of(group, version)
    if not infos:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for info in infos:
        paths.update(_operations(info))
        schemas[_schema_name(info)] = {
            "type": "object",
            "description": f"{info.kind} (schema elided by the local cluster).",
            "additionalProperties": True,
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": VERSION_INFO["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def openapi_root() -> dict[str, Any]:
    paths = {}
    for group, version in group_versions():
        doc = json.dumps(openapi_document(group, version), sort_keys=True).encode()
        digest = hashlib.sha512(doc).hexdigest()[:64].upper()
        gv = _gv_path(group, version)
        paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
    return {"paths": paths}
