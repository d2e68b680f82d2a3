"""The write verbs, scale, and the watch stream, on top of the store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import trio
import yaml

from . import _patch
from ._errors import (
    BadRequest,
    Conflict,
    Gone,
    MethodNotAllowed,
    NotFound,
    StoreError,
    UnsupportedMediaType,
    invalid,
)
from ._http import Request
from ._resources import ResourceInfo
from ._selectors import selector_from_object
from ._store import Store
from ._tables import to_table

Obj = dict[str, Any]
DEFAULT_WATCH_TIMEOUT = 1800.0
ACCEPTED = "application/json, application/yaml"


def _media(req: Request) -> str:
    return req.header("content-type", "application/json").split(";")[0].strip().lower()


def decode_body(req: Request) -> Obj:
    """A create/update body as a dict: JSON or YAML; protobuf and others are 415."""
    media = _media(req)
    if media not in ("application/json", "application/yaml", "", "*/*"):
        raise UnsupportedMediaType(
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{ACCEPTED}"
        )
    try:
        text = req.body.decode("utf-8")
        body = yaml.safe_load(text) if media == "application/yaml" else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise BadRequest(f"couldn't get version/kind; json parse error: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("couldn't get version/kind; json parse error: the body is not an object")
    if "kind" not in body:
        raise BadRequest(
            f"Object 'Kind' is missing in '{req.body[:200].decode('utf-8', 'replace')}'"
        )
    return body


def _check_kind(info: ResourceInfo, body: Obj) -> None:
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if kind and kind != info.kind:
        raise BadRequest(
            f"the kind in the data ({kind}) does not match the expected kind ({info.kind})"
        )
    if api_version and api_version != info.api_version:
        raise BadRequest(
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version ({info.api_version})"
        )


def _options(req: Request) -> Obj:
    if not req.body:
        return {}
    try:
        body = json.loads(req.body)
    except ValueError as exc:
        raise BadRequest(f"couldn't get version/kind; json parse error: {exc}") from None
    return body if isinstance(body, dict) else {}


def _int_arg(req: Request, name: str) -> int | None:
    value = req.arg(name)
    if value in (None, ""):
        return None
    try:
        return int(str(value))
    except ValueError:
        raise BadRequest(f"invalid value for {name}: {value!r}") from None


@dataclass(eq=False, kw_only=True)
class Verbs:
    store: Store
    bookmark_interval: float

    async def update(
        self, req: Request, info: ResourceInfo, ns: str | None, name: str, sub: str | None
    ) -> Obj:
        body = decode_body(req)
        _check_kind(info, body)
        meta = body.setdefault("metadata", {})
        if meta.get("name") not in (None, name):
            raise BadRequest("the name of the object does not match the name on the URL")
        meta["name"] = name
        dry_run = "All" in req.args("dryRun")
        if sub == "status":
            current = self.store.get(info.name, ns, name)
            wanted = meta.get("resourceVersion")
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                raise _conflict(info, name)
            if dry_run:
                return current | {"status": body.get("status") or {}}
            return await self.store.update_status(info.name, ns, name, body.get("status") or {})
        return await self.store.update(info.name, ns, body, dry_run=dry_run)

    async def patch(
        self, req: Request, info: ResourceInfo, ns: str | None, name: str, sub: str | None
    ) -> tuple[Obj, bool]:
        media = _media(req)
        if media == _patch.APPLY_PATCH and not req.arg("fieldManager"):
            raise BadRequest("fieldManager is required for apply requests")
        if media == _patch.APPLY_PATCH:
            applied = _patch.parse_body(req.body, yaml_ok=True)
            if isinstance(applied, dict):
                _check_kind(info, applied)
        return await self.store.patch_ex(
            info.name,
            ns,
            name,
            media,
            req.body,
            subresource=sub,
            dry_run="All" in req.args("dryRun"),
            field_manager=req.arg("fieldManager"),
        )

    async def delete(self, req: Request, info: ResourceInfo, ns: str | None, name: str) -> Obj:
        options = _options(req)
        policy = req.arg("propagationPolicy") or options.get("propagationPolicy")
        if options.get("orphanDependents") is True:
            policy = "Orphan"
        if "All" in req.args("dryRun") or "All" in (options.get("dryRun") or []):
            return self.store.get(info.name, ns, name)  # validated, nothing deleted
        grace = _int_arg(req, "gracePeriodSeconds")
        if grace is None and options.get("gracePeriodSeconds") is not None:
            grace = int(options["gracePeriodSeconds"])
        return await self.store.delete(
            info.name,
            ns,
            name,
            propagation_policy=policy,
            grace_period_seconds=grace,
            preconditions=options.get("preconditions"),
        )

    async def delete_collection(self, req: Request, info: ResourceInfo, ns: str | None) -> Obj:
        items, _ = self.store.list(
            info.name,
            ns,
            label_selector=req.arg("labelSelector"),
            field_selector=req.arg("fieldSelector"),
        )
        deleted = []
        for item in items:
            meta = item["metadata"]
            try:
                deleted.append(await self.delete(req, info, meta.get("namespace"), meta["name"]))
            except NotFound:
                continue
        return {
            "kind": info.list_kind,
            "apiVersion": info.api_version,
            "metadata": {"resourceVersion": self.store.resource_version},
            "items": deleted,
        }

    # ---- /scale (autoscaling/v1 Scale) --------------------------------------------------

    async def scale(
        self, req: Request, info: ResourceInfo, ns: str | None, name: str
    ) -> tuple[Obj, int]:
        obj = self.store.get(info.name, ns, name)
        if req.method == "GET":
            return _scale_of(obj), 200
        if req.method == "PUT":
            body = decode_body(req)
        elif req.method == "PATCH":
            body = _patch.apply_patch(_scale_of(obj), _media(req), req.body)
        else:
            raise MethodNotAllowed(
                "the server does not allow this method on the requested resource"
            )
        replicas = (body.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise _invalid_scale(replicas, name)
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if req.method == "PUT" and wanted and wanted != obj["metadata"]["resourceVersion"]:
            raise _conflict(info, name)
        obj["spec"]["replicas"] = replicas
        updated = await self.store.update(info.name, ns, obj)
        return _scale_of(updated), 200

    # ---- watch ----------------------------------------------------------------------------

    def _bookmark(self, info: ResourceInfo) -> Obj:
        # Every event up to the current version has been delivered to an idle watcher.
        return {
            "kind": info.kind,
            "apiVersion": info.api_version,
            "metadata": {"resourceVersion": self.store.resource_version},
        }

    async def watch_stream(
        self,
        req: Request,
        info: ResourceInfo,
        ns: str | None,
        *,
        table: bool,
        partial: bool = False,
    ) -> AsyncIterator[bytes]:
        timeout = _int_arg(req, "timeoutSeconds")
        deadline = trio.current_time() + (timeout if timeout is not None else DEFAULT_WATCH_TIMEOUT)
        bookmarks = req.arg("allowWatchBookmarks") in ("true", "1")
        include = req.arg("includeObject", "Metadata") or "Metadata"
        try:
            manager = self.store.watch(
                info.name,
                ns,
                resource_version=req.arg("resourceVersion"),
                label_selector=req.arg("labelSelector"),
                field_selector=req.arg("fieldSelector"),
            )
            events = await manager.__aenter__()
        except (Gone, BadRequest) as exc:
            # A real API server opens the watch and sends one ERROR event with the Status.
            yield _line({"type": "ERROR", "object": exc.status()})
            return
        try:
            iterator = events.__aiter__()
            while True:
                wake = min(deadline, trio.current_time() + self.bookmark_interval)
                event = None
                with trio.move_on_at(wake):
                    try:
                        event = await iterator.__anext__()
                    except StopAsyncIteration:
                        return  # the store closed a watcher that fell too far behind
                if event is None:
                    if trio.current_time() >= deadline:
                        return
                    if bookmarks:
                        yield _line({"type": "BOOKMARK", "object": self._bookmark(info)})
                    continue
                obj = _event_object(
                    info, event.object, table=table, partial=partial, include=include
                )
                yield _line({"type": event.type, "object": obj})
        finally:
            with trio.CancelScope(shield=True):
                await manager.__aexit__(None, None, None)


def _event_object(info: ResourceInfo, obj: Obj, *, table: bool, partial: bool, include: str) -> Obj:
    """A watch event's object in the form the client asked for."""
    if partial:
        return {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata") or {},
        }
    if table:
        rv = obj["metadata"].get("resourceVersion", "")
        return to_table(info.name, [obj], include=include, resource_version=rv)
    return obj


def _line(event: Obj) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def _scale_of(obj: Obj) -> Obj:
    meta = obj["metadata"]
    selector = selector_from_object((obj.get("spec") or {}).get("selector"))
    text = ",".join(
        f"{r.key}={r.values[0]}" if r.op == "=" else f"{r.key} {r.op} ({','.join(r.values)})"
        for r in selector
    )
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": text},
    }


def _conflict(info: ResourceInfo, name: str) -> StoreError:
    qualified = f"{info.name}.{info.group}" if info.group else info.name
    return Conflict(
        f'Operation cannot be fulfilled on {qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        details={"name": name, "group": info.group, "kind": info.name},
    )


def _invalid_scale(replicas: Any, name: str) -> StoreError:
    return invalid(
        "Scale",
        name,
        "autoscaling",
        [
            (
                "spec.replicas",
                "FieldValueInvalid",
                f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0",
            )
        ],
    )


__all__ = ["Verbs", "decode_body"]
