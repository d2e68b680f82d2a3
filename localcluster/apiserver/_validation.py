"""The validation a real API server does that clients rely on (422 Invalid)."""

from __future__ import annotations

import json
import re
from typing import Any

from ._errors import BadRequest, invalid
from ._resources import ResourceInfo

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

# k8s.io/apimachinery/pkg/util/validation/validation.go messages, verbatim.
SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)

Cause = tuple[str, str, str]


def _invalid_value(field: str, value: Any, detail: str) -> Cause:
    return (field, "FieldValueInvalid", f"Invalid value: {json.dumps(value)}: {detail}")


def _required(field: str) -> Cause:
    return (field, "FieldValueRequired", "Required value")


def _check_path_segment(name: str) -> list[Cause]:
    # apimachinery path.ValidatePathSegmentName (RBAC names like "system:controller").
    if not name:
        return [_required("metadata.name")]
    if name in (".", ".."):
        return [_invalid_value("metadata.name", name, f"may not be '{name}'")]
    for bad in ("/", "%"):
        if bad in name:
            return [_invalid_value("metadata.name", name, f"may not contain '{bad}'")]
    return []


def check_name(info: ResourceInfo, name: str) -> list[Cause]:
    if info.group == "rbac.authorization.k8s.io":
        return _check_path_segment(name)
    if not name:
        return [
            (
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            )
        ]
    # Namespaces are RFC 1123 labels, Services DNS-1035 labels, the rest subdomains.
    if info.name == "namespaces":
        pattern, msg, limit = _LABEL, LABEL_MSG, 63
    elif info.name == "services":
        pattern, msg, limit = _DNS1035, DNS1035_MSG, 63
    else:
        pattern, msg, limit = _SUBDOMAIN, SUBDOMAIN_MSG, 253
    if len(name) > limit:
        return [_invalid_value("metadata.name", name, f"must be no more than {limit} characters")]
    if not pattern.match(name):
        return [_invalid_value("metadata.name", name, msg)]
    return []


def _check_containers(spec: dict[str, Any], prefix: str) -> list[Cause]:
    causes: list[Cause] = []
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [_required(f"{prefix}.containers")]
    seen: set[str] = set()
    for key in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(key) or []):
            field = f"{prefix}.{key}[{i}]"
            if not isinstance(c, dict):
                causes.append(_invalid_value(field, c, "must be an object"))
                continue
            name = c.get("name")
            if not name:
                causes.append(_required(f"{field}.name"))
            elif not isinstance(name, str) or not _LABEL.match(name):
                causes.append(_invalid_value(f"{field}.name", name, LABEL_MSG))
            elif name in seen:
                causes.append(
                    (f"{field}.name", "FieldValueDuplicate", f"Duplicate value: {json.dumps(name)}")
                )
            else:
                seen.add(name)
            if not c.get("image"):
                causes.append(_required(f"{field}.image"))
    return causes


def _check_workload(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    template = spec.get("template")
    causes: list[Cause] = []
    if not isinstance(selector, dict) or not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    ):
        causes.append(_required("spec.selector"))
    if not isinstance(template, dict):
        return [*causes, _required("spec.template")]
    labels = (template.get("metadata") or {}).get("labels") or {}
    wanted = (selector or {}).get("matchLabels") or {} if isinstance(selector, dict) else {}
    if any(labels.get(k) != v for k, v in wanted.items()):
        causes.append(
            _invalid_value(
                "spec.template.metadata.labels",
                labels,
                "`selector` does not match template `labels`",
            )
        )
    causes += _check_containers(template.get("spec") or {}, "spec.template.spec")
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        causes.append(
            _invalid_value("spec.replicas", replicas, "must be greater than or equal to 0")
        )
    return causes


def _check_service(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    ports = spec.get("ports") or []
    if not ports and spec.get("clusterIP") != "None" and spec.get("type") != "ExternalName":
        causes.append(_required("spec.ports"))
    for i, port in enumerate(ports):
        value = port.get("port") if isinstance(port, dict) else None
        if not isinstance(value, int) or not 0 < value < 65536:
            causes.append(
                _invalid_value(
                    f"spec.ports[{i}].port", value, "must be between 1 and 65535, inclusive"
                )
            )
        if len(ports) > 1 and isinstance(port, dict) and not port.get("name"):
            causes.append(_required(f"spec.ports[{i}].name"))
        proto = port.get("protocol") if isinstance(port, dict) else None
        if proto not in ("TCP", "UDP", "SCTP"):
            causes.append(
                (
                    f"spec.ports[{i}].protocol",
                    "FieldValueNotSupported",
                    f'Unsupported value: {json.dumps(proto)}: supported values: "SCTP", "TCP", "UDP"',
                )
            )
    return causes


def _check_data_keys(obj: dict[str, Any]) -> list[Cause]:
    data = obj.get("data")
    if data is not None and not isinstance(data, dict):
        return [_invalid_value("data", data, "must be an object")]
    return []


def validate(info: ResourceInfo, obj: dict[str, Any]) -> None:
    """Raise Invalid (422) with the real API server's message format."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    causes = check_name(info, name)
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is not None and (
            not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())
        ):
            causes.append(_invalid_value(f"metadata.{key}", value, "values must be strings"))
    if info.name == "pods":
        causes += _check_containers(obj.get("spec") or {}, "spec")
    elif info.name in ("deployments", "replicasets", "statefulsets"):
        causes += _check_workload(obj)
    elif info.name == "services":
        causes += _check_service(obj)
    elif info.name in ("configmaps", "secrets"):
        causes += _check_data_keys(obj)
    if causes:
        raise invalid(info.kind, name, info.group, causes)


_POD_UPDATE_MSG = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)


def _mutable_pod_spec_removed(spec: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(spec))
    for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
        out.pop(key, None)
    for key in ("containers", "initContainers"):
        for container in out.get(key) or []:
            if isinstance(container, dict):
                container.pop("image", None)
    return out


def validate_update(info: ResourceInfo, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Fields a real API server refuses to change (422 Invalid, Forbidden cause)."""
    name = str(new.get("metadata", {}).get("name", ""))
    causes: list[Cause] = []
    if info.name == "pods":
        old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
        if _mutable_pod_spec_removed(old_spec) != _mutable_pod_spec_removed(new_spec):
            causes.append(("spec", "FieldValueForbidden", f"Forbidden: {_POD_UPDATE_MSG}"))
    elif info.name in ("deployments", "replicasets", "statefulsets") and (
        (old.get("spec") or {}).get("selector") != (new.get("spec") or {}).get("selector")
    ):
        selector = (new.get("spec") or {}).get("selector")
        causes.append(_invalid_value("spec.selector", selector, "field is immutable"))
    if causes:
        raise invalid(info.kind, name, info.group, causes)


# ---- shape: what a typed decoder would refuse before validation ----------------------------

_GO_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "bool",
    int: "number",
    float: "number",
}


def _json_type(value: Any) -> str:
    return "null" if value is None else _GO_TYPES.get(type(value), type(value).__name__)


def _expect(value: Any, kind: type, where: str, errors: list[str]) -> bool:
    if value is None or isinstance(value, kind):
        return isinstance(value, kind)
    errors.append(
        f"json: cannot unmarshal {_json_type(value)} into Go struct field {where} of type "
        f"{'map' if kind is dict else 'slice'}"
    )
    return False


def _check_pod_spec(spec: Any, where: str, errors: list[str]) -> None:
    if not _expect(spec, dict, where, errors):
        return
    for key in ("containers", "initContainers", "ephemeralContainers", "volumes", "tolerations"):
        items = spec.get(key)
        if _expect(items, list, f"{where}.{key}", errors):
            for item in items:
                if not isinstance(item, dict):
                    _expect(item, dict, f"{where}.{key}", errors)
                elif key.endswith("ontainers"):
                    for sub in ("ports", "env", "envFrom", "volumeMounts", "command", "args"):
                        _expect(item.get(sub), list, f"{where}.{key}.{sub}", errors)
                    for sub in ("command", "args"):
                        for word in item.get(sub) or [] if isinstance(item.get(sub), list) else []:
                            if not isinstance(word, str):  # []string in the Go type
                                errors.append(
                                    f"json: cannot unmarshal {_json_type(word)} into Go struct "
                                    f"field Container.{where}.{key}.{sub} of type string"
                                )
                    for sub in ("resources", "securityContext", "readinessProbe", "livenessProbe"):
                        _expect(item.get(sub), dict, f"{where}.{key}.{sub}", errors)
                    for entry in (item.get("ports") or []) + (item.get("env") or []):
                        _expect(entry, dict, f"{where}.{key}", errors)


def check_shape(info: ResourceInfo, obj: dict[str, Any]) -> None:
    """Raise BadRequest (400) for values of the wrong JSON type where the API has a schema,
    as the real server's decoder does, so later stages can trust the shape."""
    errors: list[str] = []
    meta: Any = obj.get("metadata")
    if _expect(meta, dict, f"{info.kind}.metadata", errors):
        for key in ("labels", "annotations"):
            _expect(meta.get(key), dict, f"ObjectMeta.{key}", errors)
        for key in ("ownerReferences", "finalizers"):
            _expect(meta.get(key), list, f"ObjectMeta.{key}", errors)
        for key in ("name", "generateName", "namespace"):
            value = meta.get(key)
            if value is not None and not isinstance(value, str):
                errors.append(
                    f"json: cannot unmarshal {_json_type(value)} into Go struct field "
                    f"ObjectMeta.metadata.{key} of type string"
                )
    for key in ("spec", "status"):
        _expect(obj.get(key), dict, f"{info.kind}.{key}", errors)
    spec: Any = obj.get("spec")
    if info.name == "pods":
        _check_pod_spec(spec, "Pod.spec", errors)
    elif isinstance(spec, dict) and info.name in ("deployments", "replicasets", "statefulsets"):
        template: Any = spec.get("template")
        if _expect(template, dict, f"{info.kind}.spec.template", errors):
            _expect(template.get("metadata"), dict, "PodTemplateSpec.metadata", errors)
            _check_pod_spec(template.get("spec"), "PodTemplateSpec.spec", errors)
        _expect(spec.get("selector"), dict, f"{info.kind}.spec.selector", errors)
        _expect(spec.get("strategy"), dict, f"{info.kind}.spec.strategy", errors)
    elif isinstance(spec, dict) and info.name == "services":
        ports: Any = spec.get("ports")
        if _expect(ports, list, "Service.spec.ports", errors):
            for port in ports:
                _expect(port, dict, "Service.spec.ports", errors)
        _expect(spec.get("selector"), dict, "Service.spec.selector", errors)
    if info.name in ("configmaps", "secrets"):
        _expect(obj.get("data"), dict, f"{info.kind}.data", errors)
        _expect(obj.get("stringData"), dict, f"{info.kind}.stringData", errors)
    if info.name == "mutatingwebhookconfigurations":
        hooks: Any = obj.get("webhooks")
        if _expect(hooks, list, "MutatingWebhookConfiguration.webhooks", errors):
            for hook in hooks:
                _expect(hook, dict, "MutatingWebhookConfiguration.webhooks", errors)
    if errors:
        raise BadRequest(errors[0])
