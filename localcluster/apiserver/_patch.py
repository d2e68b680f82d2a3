"""PATCH bodies: JSON merge (RFC 7386), JSON patch (RFC 6902), strategic merge, apply.

Strategic merge follows k8s.io/apimachinery/pkg/util/strategicpatch for the fields the
usual clients touch: lists of objects merged by their patchMergeKey (containers by name,
container ports by containerPort, Service ports by port, …), ``$patch: delete|replace``,
``$retainKeys``, ``$deleteFromPrimitiveList/<f>`` and ``$setElementOrder/<f>`` (which
kubectl's client-side apply sends; it only orders, so it is applied as an ordering hint).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import yaml

from ._errors import BadRequest, Invalid, UnsupportedMediaType

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (MERGE_PATCH, JSON_PATCH, STRATEGIC_PATCH, APPLY_PATCH)

# field name -> merge key (Kubernetes' patchMergeKey struct tags).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "webhooks": "name",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "secrets": "name",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
}
# Lists of scalars with patchStrategy=merge (set union).
MERGE_SCALAR_LISTS = {"finalizers"}


def _merge_key(field: str, path: tuple[str, ...]) -> str | None:
    if field == "ports":
        # Container ports merge by containerPort, Service ports by port.
        return (
            "containerPort" if any(p in path for p in ("containers", "initContainers")) else "port"
        )
    return MERGE_KEYS.get(field)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_list(field: str, path: tuple[str, ...], original: Any, patch: list[Any]) -> list[Any]:
    key = _merge_key(field, path)
    if not isinstance(original, list):
        original = []
    if field in MERGE_SCALAR_LISTS:
        return list(original) + [v for v in patch if v not in original]
    if key is None or not all(isinstance(p, dict) for p in patch):
        return [_strip_directives(v) for v in patch]
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [_strip_directives(p) for p in patch if p.get("$patch") != "replace"]
    result = [copy.deepcopy(o) for o in original]
    for item in patch:
        ident = item.get(key)
        index = next(
            (i for i, o in enumerate(result) if isinstance(o, dict) and o.get(key) == ident), None
        )
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
            continue
        if index is None:
            result.append(_strip_directives(item))
        else:
            result[index] = strategic_merge(result[index], item, (*path, field))
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _order(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """Apply a $setElementOrder hint: listed elements first in that order, the rest after."""

    def ident(v: Any) -> Any:
        return json.dumps(v.get(key) if key and isinstance(v, dict) else v, sort_keys=True)

    rank = {ident(o): i for i, o in enumerate(order)}
    return sorted(items, key=lambda v: rank.get(ident(v), len(rank)))


def strategic_merge(original: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    if not isinstance(patch, dict):
        return _strip_directives(copy.deepcopy(patch))
    if patch.get("$patch") == "replace":
        return _strip_directives({k: v for k, v in patch.items() if k != "$patch"})
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    retain = patch.get("$retainKeys")
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value if isinstance(value, list) else []
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, path, result.get(key), value)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value, (*path, key))
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = value
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _order(result[field], order, _merge_key(field, path))
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def parse_body(body: bytes | dict[str, Any] | list[Any], *, yaml_ok: bool) -> Any:
    if isinstance(body, dict | list):
        return body
    try:
        if yaml_ok:
            return yaml.safe_load(body.decode("utf-8"))
        return json.loads(body)
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BadRequest(f"error decoding patch: {exc}") from None


def apply_patch(
    original: dict[str, Any], patch_type: str, body: bytes | dict[str, Any] | list[Any]
) -> dict[str, Any]:
    """The patched object (a new dict); raises BadRequest / UnsupportedMediaType / Invalid."""
    if patch_type not in PATCH_TYPES:
        raise UnsupportedMediaType(
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{', '.join(PATCH_TYPES)}"
        )
    patch = parse_body(body, yaml_ok=patch_type == APPLY_PATCH)
    if patch_type == JSON_PATCH:
        if not isinstance(patch, list):
            raise BadRequest("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        try:
            result = jsonpatch.JsonPatch(patch).apply(copy.deepcopy(original))
        except (
            jsonpatch.JsonPatchException,
            jsonpatch.JsonPointerException,
            TypeError,
            KeyError,
        ) as exc:
            raise Invalid(
                f"the server rejected our request due to an error in our request: {exc}"
            ) from None
    elif not isinstance(patch, dict):
        raise BadRequest(
            "json: cannot unmarshal array into Go value of type map[string]interface {}"
        )
    elif patch_type == MERGE_PATCH:
        result = merge_patch(original, patch)
    else:
        result = strategic_merge(original, patch)
    if not isinstance(result, dict):
        raise BadRequest("the patch does not produce an object")
    return result


def removals(applied_before: Any, applied_now: Any, path: tuple[str, ...] = ()) -> Any:
    """A strategic merge patch deleting what one apply configuration dropped since its last
    apply (server-side apply removes fields its manager no longer sets; without field
    ownership tracking, the manager's previous configuration stands in for what it owns,
    as kubectl's last-applied-configuration does for client-side apply)."""
    if not isinstance(applied_before, dict) or not isinstance(applied_now, dict):
        return {}
    patch: dict[str, Any] = {}
    for key, old in applied_before.items():
        if key not in applied_now:
            patch[key] = None
            continue
        new = applied_now[key]
        if isinstance(old, dict) and isinstance(new, dict):
            sub = removals(old, new, (*path, key))
            if sub:
                patch[key] = sub
        elif isinstance(old, list) and isinstance(new, list):
            items = _list_removals(key, path, old, new)
            if items:
                patch[key] = items
    return patch


def _list_removals(field: str, path: tuple[str, ...], old: list[Any], new: list[Any]) -> list[Any]:
    key = _merge_key(field, path)
    if key is None or not all(isinstance(i, dict) for i in old + new):
        return []  # atomic lists are replaced by the new configuration anyway
    by_key = {json.dumps(i.get(key), sort_keys=True): i for i in new}
    out: list[Any] = []
    for item in old:
        ident = item.get(key)
        match = by_key.get(json.dumps(ident, sort_keys=True))
        if match is None:
            out.append({key: ident, "$patch": "delete"})
        else:
            sub = removals(item, match, (*path, field))
            if sub:
                out.append({key: ident, **sub})
    return out
