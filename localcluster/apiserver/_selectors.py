"""Label and field selectors, parsed as the real API server parses them.

Label selector grammar (k8s.io/apimachinery/pkg/labels/selector.go): comma-separated
requirements ``key``, ``!key``, ``key=v``, ``key==v``, ``key!=v``, ``key in (a,b)``,
``key notin (a,b)``, ``key>n``, ``key<n``. Field selectors (fields/selector.go): ``f=v``,
``f==v``, ``f!=v`` with backslash escapes, over a per-resource set of supported fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


class SelectorError(ValueError):
    """A selector that does not parse (the API server answers 400 BadRequest)."""


@dataclass(frozen=True, kw_only=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if not present:
            return False
        try:
            have, want = int(value or ""), int(self.values[0])
        except ValueError:
            return False
        return have > want if self.op == "gt" else have < want


LabelSelector = tuple[Requirement, ...]


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unable to parse requirement: unbalanced ')' in {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise SelectorError(f"unable to parse requirement: unbalanced '(' in {text!r}")
    parts.append("".join(current))
    return parts


def _check_key(key: str) -> str:
    if not key or len(key.rsplit("/", 1)[-1]) > 63 or not _KEY_RE.match(key):
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r}")
    return key


def _check_value(value: str) -> str:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise SelectorError(f"unable to parse requirement: invalid label value: {value!r}")
    return value


_SET_RE = re.compile(r"^\s*(\S+?)\s+(in|notin)\s*\((.*)\)\s*$")
_OP_RE = re.compile(r"^\s*([^!=<>\s]+)\s*(==|!=|=|>|<)\s*(.*?)\s*$")


def _parse_requirement(part: str) -> Requirement:
    text = part.strip()
    if not text:
        raise SelectorError("found '', expected: !, identifier, or 'end of string'")
    match = _SET_RE.match(text)
    if match:
        key, op, inner = match.groups()
        values = tuple(_check_value(v.strip()) for v in inner.split(",")) if inner.strip() else ()
        if not values:
            raise SelectorError(f"for '{op}' operator, values set can't be empty")
        return Requirement(key=_check_key(key), op=op, values=values)
    if text.startswith("!"):
        return Requirement(key=_check_key(text[1:].strip()), op="!")
    match = _OP_RE.match(text)
    if match:
        key, op, value = match.groups()
        if op in (">", "<"):
            if not value.lstrip("-").isdigit():
                raise SelectorError(
                    f"for 'Gt', 'Lt' operators, the value must be an integer: {value!r}"
                )
            return Requirement(key=_check_key(key), op="gt" if op == ">" else "lt", values=(value,))
        norm = "!=" if op == "!=" else "="
        return Requirement(key=_check_key(key), op=norm, values=(_check_value(value),))
    return Requirement(key=_check_key(text), op="exists")


def parse_label_selector(text: str | None) -> LabelSelector:
    if text is None or not text.strip():
        return ()
    return tuple(_parse_requirement(part) for part in _split_top_level(text))


def labels_match(selector: LabelSelector, labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(req.matches(labels) for req in selector)


def selector_from_object(selector: Mapping[str, Any] | None) -> LabelSelector:
    """A metav1.LabelSelector (matchLabels + matchExpressions) as requirements."""
    if not selector:
        return ()
    reqs = [
        Requirement(key=str(k), op="=", values=(str(v),))
        for k, v in (selector.get("matchLabels") or {}).items()
    ]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(str(expr.get("operator")))
        if op is None:
            raise SelectorError(f"{expr.get('operator')!r} is not a valid selector operator")
        reqs.append(
            Requirement(key=str(expr.get("key")), op=op, values=tuple(expr.get("values") or ()))
        )
    return tuple(reqs)


# ---- field selectors -------------------------------------------------------------------

# Fields each resource can be selected by besides metadata.name and metadata.namespace
# (the real registries' GetAttrs / AddFieldLabelConversionFunc lists).
FIELD_LABELS: dict[str, tuple[str, ...]] = {
    "pods": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "events": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "secrets": ("type",),
    "namespaces": ("status.phase",),
    "replicasets": ("status.replicas",),
    "services": ("spec.clusterIP", "spec.type"),
}


@dataclass(frozen=True, kw_only=True)
class FieldRequirement:
    field: str
    value: str
    equal: bool


FieldSelector = tuple[FieldRequirement, ...]


def _split_escaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_field_selector(text: str | None, resource: str) -> FieldSelector:
    if text is None or not text.strip():
        return ()
    allowed = {"metadata.name", "metadata.namespace", *FIELD_LABELS.get(resource, ())}
    reqs = []
    for part in _split_escaped(text, ","):
        if not part.strip():
            continue
        match = re.match(r"^(.*?)(==|!=|=)(.*)$", part)
        if match is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, value = match.group(1).strip(), match.group(2), match.group(3)
        if field not in allowed:
            raise SelectorError(f"field label not supported: {field}")
        reqs.append(FieldRequirement(field=field, value=_unescape(value), equal=op != "!="))
    return tuple(reqs)


def field_value(obj: Mapping[str, Any], field: str) -> str:
    if field == "source":  # events: source.component
        return str(((obj.get("source") or {}).get("component")) or "")
    current: Any = obj
    for key in field.split("."):
        current = current.get(key) if isinstance(current, Mapping) else None
    if current is None:
        return "false" if field == "spec.hostNetwork" else ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def fields_match(selector: FieldSelector, obj: Mapping[str, Any]) -> bool:
    return all((field_value(obj, r.field) == r.value) == r.equal for r in selector)


Matcher = Callable[[Mapping[str, Any]], bool]


def make_matcher(resource: str, label_selector: str | None, field_selector: str | None) -> Matcher:
    """One predicate over whole objects for both selectors (raises SelectorError)."""
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector, resource)

    def matches(obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        return labels_match(labels, meta.get("labels")) and fields_match(fields, obj)

    return matches
