"""The in-memory object store: what etcd plus the registry strategies are in a real cluster.

Theory of operation: every object is a plain JSON dict kept per resource under
(namespace, name). One global counter gives every write its resourceVersion (as etcd's
revision does), so a watcher can resume from any version still in the change history and
gets 410 Gone ("too old resource version") past it. All methods run inside one trio run;
writes are synchronous between awaits, so a watcher registered together with its snapshot
never misses or duplicates a change. Stored dicts are never mutated in place: a write
replaces the dict, and readers get deep copies.
"""

from __future__ import annotations

import builtins
import copy
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import _patch
from ._admission import WebhookAdmission
from ._allocator import ServiceAllocator, keep_cluster_ip
from ._defaults import apply_defaults
from ._errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    StoreError,
    not_found,
)
from ._resources import BY_NAME, ResourceInfo
from ._selectors import Matcher, SelectorError, make_matcher
from ._validation import check_shape, validate, validate_update
from ._watch import Change, WatchEvent, WatchHub

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)
Admit = Callable[["Store", Obj, str], Awaitable[Obj]]


def now_rfc3339(delta: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _generate_suffix() -> str:
    # apiserver/pkg/storage/names: 5 chars from an alphabet without vowels and look-alikes.
    return "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))


def _resource_info(resource: str) -> ResourceInfo:
    info = BY_NAME.get(resource)
    if info is None:
        raise NotFound(f"the server could not find the requested resource ({resource})")
    return info


@dataclass(eq=False)
class Store:
    """The cluster's objects, with watches. ``node_name`` is written into every pod."""

    node_name: str = "node"
    history_limit: int = 10_000
    # Mutating admission for pods on CREATE (webhooks); None turns admission off.
    admit: Admit | None = field(default_factory=WebhookAdmission)
    _objects: dict[str, dict[Key, Obj]] = field(default_factory=dict)
    _by_uid: dict[str, tuple[str, Key]] = field(default_factory=dict)
    _rv: int = 1
    _hub: WatchHub = field(default_factory=WatchHub)
    # (uid, field manager) -> that manager's last server-side apply configuration
    _applied: dict[tuple[str, str], Obj] = field(default_factory=dict)
    _services: ServiceAllocator = field(default_factory=ServiceAllocator)

    # ---- reads ------------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def _table(self, resource: str) -> dict[Key, Obj]:
        _resource_info(resource)
        return self._objects.setdefault(resource, {})

    def _key(self, info: ResourceInfo, namespace: str | None, name: str) -> Key:
        return ((namespace or "default") if info.namespaced else "", name)

    def get(self, resource: str, namespace: str | None, name: str) -> Obj:
        info = _resource_info(resource)
        obj = self._table(resource).get(self._key(info, namespace, name))
        if obj is None:
            raise not_found(resource, name, info.group)
        return copy.deepcopy(obj)

    def get_by_uid(self, uid: str) -> Obj | None:
        where = self._by_uid.get(uid)
        if where is None:
            return None
        obj = self._objects.get(where[0], {}).get(where[1])
        return copy.deepcopy(obj) if obj is not None else None

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
        matches = self._matcher(resource, label_selector, field_selector)
        table = self._table(resource)
        items = [
            copy.deepcopy(obj)
            for key, obj in sorted(table.items())
            if (namespace is None or key[0] == namespace) and matches(obj)
        ]
        return items, str(self._rv)

    def _matcher(self, resource: str, labels: str | None, fields: str | None) -> Matcher:
        try:
            return make_matcher(resource, labels, fields)
        except SelectorError as exc:
            raise BadRequest(str(exc)) from None

    # ---- change plumbing ----------------------------------------------------------------

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _emit(self, resource: str, kind: str, obj: Obj, old: Obj | None) -> None:
        self._hub.record(
            Change(rv=self._rv, resource=resource, type=kind, object=obj, old=old),
            limit=self.history_limit,
        )

    def watch(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[WatchEvent]]:
        """Changes from ``resource_version`` on ("0"/None: current objects as ADDED first).

        Raises BadRequest for a bad selector or version, Gone (410) for a compacted one.
        """
        matches = self._matcher(resource, label_selector, field_selector)
        if resource_version in (None, "", "0"):
            snapshot, _ = self.list(resource, namespace)
            return self._hub.open(resource, namespace, matches, since=None, snapshot=snapshot)
        try:
            since = int(str(resource_version))
        except ValueError:
            raise BadRequest(f"invalid resource version: {resource_version}") from None
        return self._hub.open(resource, namespace, matches, since=since, snapshot=[])

    # ---- writes -------------------------------------------------------------------------

    def _namespace_for(self, info: ResourceInfo, namespace: str | None, obj: Obj) -> str:
        meta = obj["metadata"]
        if not info.namespaced:
            meta.pop("namespace", None)
            return ""
        given = meta.get("namespace")
        if namespace and given and given != namespace:
            raise BadRequest(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        ns = namespace or given or "default"
        meta["namespace"] = ns
        return ns

    def _check_namespace_open(self, ns: str) -> None:
        found = self._objects.get("namespaces", {}).get(("", ns))
        if found is None:
            raise not_found("namespaces", ns)
        if found.get("metadata", {}).get("deletionTimestamp"):
            raise Forbidden(
                f"unable to create new content in namespace {ns} because it is being terminated",
                details={"name": ns, "kind": "namespaces"},
            )

    async def create(
        self, resource: str, namespace: str | None, obj: Obj, *, dry_run: bool = False
    ) -> Obj:
        info = _resource_info(resource)
        if not isinstance(obj, dict):
            raise BadRequest("the body of the request must be a JSON object")
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise BadRequest("metadata must be an object")
        obj["apiVersion"], obj["kind"] = info.api_version, info.kind
        ns = self._namespace_for(info, namespace, obj)
        if info.namespaced:
            self._check_namespace_open(ns)
        for stale in ("uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(stale, None)
        check_shape(info, obj)
        apply_defaults(resource, obj, node_name=self.node_name, creating=True)
        self._reset_status(info, obj)
        generated = not meta.get("name") and bool(meta.get("generateName"))
        if not generated:
            validate(info, obj)
            if (ns, str(meta["name"])) in self._table(resource):
                raise self._exists(info, str(meta["name"]))
        if resource == "pods" and self.admit is not None:
            # Webhooks see the defaulted pod; a generateName pod has no name yet
            # (the registry's BeforeCreate names it after admission).
            obj = await self.admit(self, obj, "CREATE")
            check_shape(info, obj)  # a webhook's patch can break the shape too
            apply_defaults(resource, obj, node_name=self.node_name, creating=False)
            meta = obj.setdefault("metadata", {})
            meta["namespace"] = ns
        if generated:
            meta["name"] = str(meta["generateName"]) + _generate_suffix()
        validate(info, obj)
        key = (ns, str(meta["name"]))
        if key in self._table(resource):
            raise self._exists(info, key[1])
        if resource == "services":
            self._services.allocate(obj)
            if dry_run:
                self._services.release(obj)
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if info.has_generation:
            meta["generation"] = 1
        if dry_run:
            return obj
        meta["resourceVersion"] = str(self._next_rv())
        self._table(resource)[key] = obj
        self._by_uid[meta["uid"]] = (resource, key)
        self._emit(resource, "ADDED", obj, None)
        return copy.deepcopy(obj)

    def _exists(self, info: ResourceInfo, name: str) -> AlreadyExists:
        qualified = f"{info.name}.{info.group}" if info.group else info.name
        return AlreadyExists(
            f'{qualified} "{name}" already exists',
            details={"name": name, "group": info.group, "kind": info.name},
        )

    def _reset_status(self, info: ResourceInfo, obj: Obj) -> None:
        # Registry PrepareForCreate: clients cannot set status on create.
        if info.name == "pods":
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj)}
        elif info.name in ("deployments", "replicasets", "statefulsets"):
            obj["status"] = {}

    async def update(
        self,
        resource: str,
        namespace: str | None,
        obj: Obj,
        *,
        dry_run: bool = False,
    ) -> Obj:
        """Replace an object; status is kept (use update_status); spec changes bump generation."""
        info = _resource_info(resource)
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
            raise BadRequest("the body of the request must be an object with metadata")
        new = copy.deepcopy(obj)
        ns = self._namespace_for(info, namespace, new)
        key = (ns, str(new["metadata"].get("name") or ""))
        old = self._table(resource).get(key)
        if old is None:
            raise not_found(resource, key[1], info.group)
        new["apiVersion"], new["kind"] = info.api_version, info.kind
        self._check_version(info, old, new)
        self._carry_metadata(old, new)
        if info.has_status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        check_shape(info, new)
        apply_defaults(resource, new, node_name=self.node_name, creating=False)
        if resource == "pods":
            new["spec"].setdefault("nodeName", old["spec"].get("nodeName"))
        if resource == "services":
            keep_cluster_ip(old, new)
        validate(info, new)
        validate_update(info, old, new)
        return self._commit_update(info, key, old, new, dry_run=dry_run)

    def _check_version(self, info: ResourceInfo, old: Obj, new: Obj) -> None:
        wanted = new["metadata"].get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            qualified = f"{info.name}.{info.group}" if info.group else info.name
            name = old["metadata"]["name"]
            raise Conflict(
                f'Operation cannot be fulfilled on {qualified} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                details={"name": name, "group": info.group, "kind": info.name},
            )

    def _carry_metadata(self, old: Obj, new: Obj) -> None:
        for key in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if key in old["metadata"]:
                new["metadata"][key] = old["metadata"][key]
            else:
                new["metadata"].pop(key, None)

    def _commit_update(
        self, info: ResourceInfo, key: Key, old: Obj, new: Obj, *, dry_run: bool = False
    ) -> Obj:
        meta = new["metadata"]
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if info.has_generation and _spec_of(new) != _spec_of(old):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if new == old or dry_run:
            return copy.deepcopy(new)  # a no-op write keeps its resourceVersion, like etcd
        meta["resourceVersion"] = str(self._next_rv())
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and info.name != "pods":
            self._drop(info.name, key)
            self._emit(info.name, "DELETED", new, old)
            return copy.deepcopy(new)
        self._table(info.name)[key] = new
        self._emit(info.name, "MODIFIED", new, old)
        return copy.deepcopy(new)

    async def update_status(
        self, resource: str, namespace: str | None, name: str, status: Obj
    ) -> Obj:
        """Replace ``.status`` only (the /status subresource); no generation bump."""
        info = _resource_info(resource)
        key = self._key(info, namespace, name)
        old = self._table(resource).get(key)
        if old is None:
            raise not_found(resource, name, info.group)
        new = dict(old)
        new["status"] = copy.deepcopy(status)
        new["metadata"] = copy.deepcopy(old["metadata"])
        return self._commit_update(info, key, old, new)

    async def patch(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        patch_type: str,
        body: bytes | Obj,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        obj, _ = await self.patch_ex(
            resource, namespace, name, patch_type, body, subresource=subresource, dry_run=dry_run
        )
        return obj

    async def patch_ex(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        patch_type: str,
        body: bytes | Obj,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> tuple[Obj, bool]:
        """Patch; returns (object, created) — server-side apply creates a missing object."""
        info = _resource_info(resource)
        key = self._key(info, namespace, name)
        old = self._table(resource).get(key)
        if old is None:
            if patch_type != _patch.APPLY_PATCH or subresource:
                raise not_found(resource, name, info.group)
            applied = _patch.parse_body(body, yaml_ok=True)
            if not isinstance(applied, dict):
                raise BadRequest("the apply configuration must be an object")
            applied.setdefault("metadata", {}).setdefault("name", name)
            if applied["metadata"]["name"] != name:
                raise BadRequest("the name of the object does not match the name on the URL")
            created = await self.create(resource, namespace, applied, dry_run=dry_run)
            if not dry_run:
                self._applied[(created["metadata"]["uid"], field_manager or "")] = copy.deepcopy(
                    applied
                )
            return created, True
        if patch_type == _patch.APPLY_PATCH and not subresource:
            return await self._apply(info, key, old, body, field_manager or "", dry_run)
        patched = _patch.apply_patch(copy.deepcopy(old), patch_type, body)
        if subresource == "status":
            status = patched.get("status")
            new = dict(old)
            new["metadata"] = copy.deepcopy(old["metadata"])
            new["status"] = copy.deepcopy(status) if isinstance(status, dict) else {}
            return self._commit_update(info, key, old, new, dry_run=dry_run), False
        meta = patched.get("metadata")
        if not isinstance(meta, dict) or meta.get("name") != name:
            raise BadRequest("the patch must not change the object's name")
        if patch_type == _patch.APPLY_PATCH or not meta.get("resourceVersion"):
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        return await self.update(resource, namespace, patched, dry_run=dry_run), False

    async def _apply(
        self, info: ResourceInfo, key: Key, old: Obj, body: bytes | Obj, manager: str, dry_run: bool
    ) -> tuple[Obj, bool]:
        """Server-side apply onto an existing object: drop what this manager's configuration
        no longer holds, then merge the configuration in."""
        applied = _patch.parse_body(body, yaml_ok=True)
        if not isinstance(applied, dict):
            raise BadRequest("the apply configuration must be an object")
        uid = old["metadata"]["uid"]
        before = self._applied.get((uid, manager), {})
        pruned = _patch.strategic_merge(copy.deepcopy(old), _patch.removals(before, applied))
        patched = _patch.strategic_merge(pruned, applied)
        meta = patched.get("metadata")
        if not isinstance(meta, dict) or meta.get("name") != old["metadata"]["name"]:
            raise BadRequest("the apply configuration must not change the object's name")
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        updated = await self.update(info.name, key[0] or None, patched, dry_run=dry_run)
        if not dry_run:
            self._applied[(uid, manager)] = copy.deepcopy(applied)
        return updated, False

    # ---- deletion -----------------------------------------------------------------------

    async def delete(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        *,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
        preconditions: Obj | None = None,
    ) -> Obj:
        """Delete: graceful for pods (the kubelet calls ``remove``), then GC of dependents."""
        info = _resource_info(resource)
        key = self._key(info, namespace, name)
        old = self._table(resource).get(key)
        if old is None:
            raise not_found(resource, name, info.group)
        self._check_preconditions(info, old, preconditions or {})
        policy = propagation_policy or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise BadRequest(f"propagationPolicy {policy!r} is not supported")
        uid = old["metadata"]["uid"]
        if policy == "Foreground" and resource != "pods" and self._dependents(uid):
            # The owner waits, with the foregroundDeletion finalizer, until its
            # dependents are gone (the garbage collector's foreground mode).
            marked = self._mark_deleting(info, key, old, 0, finalizer="foregroundDeletion")
            for dep_resource, dep_key in self._dependents(uid):
                try:
                    await self.delete(
                        dep_resource,
                        dep_key[0] or None,
                        dep_key[1],
                        propagation_policy="Foreground",
                    )
                except StoreError:
                    continue
            await self._finish_foreground(uid)
            return marked
        if resource == "pods":
            grace = self._pod_grace(old, grace_period_seconds)
            if grace > 0:
                return self._mark_deleting(info, key, old, grace)
        elif old["metadata"].get("finalizers") or resource == "namespaces":
            marked = self._mark_deleting(info, key, old, 0)
            if resource == "namespaces":
                await self._empty_namespace(name)
            return marked
        if policy == "Orphan":
            await self._orphan(old["metadata"]["uid"])
        return await self._remove(info, key)

    def _check_preconditions(self, info: ResourceInfo, old: Obj, pre: Obj) -> None:
        meta = old["metadata"]
        for field_name in ("uid", "resourceVersion"):
            if pre.get(field_name) and pre[field_name] != meta.get(field_name):
                raise Conflict(
                    f"Precondition failed: {field_name.upper() if field_name == 'uid' else 'ResourceVersion'} "
                    f"in precondition: {pre[field_name]}, {field_name} in object meta: {meta.get(field_name)}",
                    details={"name": meta["name"], "kind": info.name},
                )

    def _pod_grace(self, pod: Obj, requested: int | None) -> int:
        # pod strategy CheckGracefulDelete: unscheduled or terminal pods go at once.
        spec, status = pod.get("spec", {}), pod.get("status", {})
        if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
            return 0
        if requested is not None:
            return max(0, int(requested))
        existing = pod["metadata"].get("deletionGracePeriodSeconds")
        if existing is not None:
            return int(existing)
        return int(spec.get("terminationGracePeriodSeconds", 30))

    def _mark_deleting(
        self, info: ResourceInfo, key: Key, old: Obj, grace: int, finalizer: str | None = None
    ) -> Obj:
        meta = old["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if finalizer and finalizer not in finalizers:
            finalizers.append(finalizer)
        elif meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds", 0) <= grace:
            return copy.deepcopy(old)
        new = dict(old)
        new["metadata"] = {
            **copy.deepcopy(meta),
            "deletionTimestamp": meta.get("deletionTimestamp") or now_rfc3339(grace),
            "deletionGracePeriodSeconds": min(grace, meta.get("deletionGracePeriodSeconds", grace)),
        }
        if finalizers:
            new["metadata"]["finalizers"] = finalizers
        if info.name == "namespaces":
            new["status"] = {**old.get("status", {}), "phase": "Terminating"}
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        self._table(info.name)[key] = new
        self._emit(info.name, "MODIFIED", new, old)
        return copy.deepcopy(new)

    async def remove(self, resource: str, namespace: str | None, name: str) -> None:
        """The final removal of an object (the kubelet's, after a pod has terminated)."""
        info = _resource_info(resource)
        key = self._key(info, namespace, name)
        if key not in self._table(resource):
            return
        await self._remove(info, key)

    def _drop(self, resource: str, key: Key) -> Obj | None:
        obj = self._table(resource).pop(key, None)
        if obj is None:
            return None
        uid = obj["metadata"].get("uid", "")
        self._by_uid.pop(uid, None)
        for applied in [k for k in self._applied if k[0] == uid]:
            del self._applied[applied]
        if resource == "services":
            self._services.release(obj)
        return obj

    async def _remove(self, info: ResourceInfo, key: Key) -> Obj:
        old = self._drop(info.name, key)
        if old is None:
            raise not_found(info.name, key[1], info.group)
        gone = dict(old)
        gone["metadata"] = {**old["metadata"], "resourceVersion": str(self._next_rv())}
        self._emit(info.name, "DELETED", gone, old)
        await self._collect(old["metadata"]["uid"])
        for ref in old["metadata"].get("ownerReferences") or []:
            await self._finish_foreground(str(ref.get("uid", "")))
        if key[0]:
            await self._finish_namespace(key[0])
        return copy.deepcopy(gone)

    def _dependents(self, owner_uid: str) -> builtins.list[tuple[str, Key]]:
        return [
            (resource, key)
            for resource, table in self._objects.items()
            for key, obj in table.items()
            if any(r.get("uid") == owner_uid for r in obj["metadata"].get("ownerReferences") or [])
        ]

    async def _finish_foreground(self, uid: str) -> None:
        """A foreground-deleted owner goes once its last dependent is gone."""
        where = self._by_uid.get(uid)
        if where is None:
            return
        resource, key = where
        obj = self._objects[resource].get(key)
        if obj is None or not obj["metadata"].get("deletionTimestamp"):
            return
        finalizers = obj["metadata"].get("finalizers") or []
        if "foregroundDeletion" not in finalizers or self._dependents(uid):
            return
        rest = [f for f in finalizers if f != "foregroundDeletion"]
        if not rest:
            await self._remove(BY_NAME[resource], key)
            return
        new = copy.deepcopy(obj)
        new["metadata"]["finalizers"] = rest
        self._commit_update(BY_NAME[resource], key, obj, new)

    async def _collect(self, owner_uid: str) -> None:
        """Garbage collection: delete objects whose owners are all gone."""
        for resource, table in list(self._objects.items()):
            for key, obj in list(table.items()):
                refs = obj["metadata"].get("ownerReferences") or []
                if not any(r.get("uid") == owner_uid for r in refs):
                    continue
                alive = [
                    r for r in refs if r.get("uid") != owner_uid and r.get("uid") in self._by_uid
                ]
                try:
                    if alive:
                        new = copy.deepcopy(obj)
                        new["metadata"]["ownerReferences"] = alive
                        self._commit_update(BY_NAME[resource], key, obj, new)
                    else:
                        await self.delete(resource, key[0] or None, key[1])
                except StoreError:
                    continue  # already gone or changed under us: the next pass will see it

    async def _orphan(self, owner_uid: str) -> None:
        for resource, table in list(self._objects.items()):
            for key, obj in list(table.items()):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == owner_uid for r in refs):
                    new = copy.deepcopy(obj)
                    new["metadata"]["ownerReferences"] = [
                        r for r in refs if r.get("uid") != owner_uid
                    ]
                    if not new["metadata"]["ownerReferences"]:
                        del new["metadata"]["ownerReferences"]
                    self._commit_update(BY_NAME[resource], key, obj, new)

    async def _empty_namespace(self, ns: str) -> None:
        for resource, table in list(self._objects.items()):
            if not BY_NAME[resource].namespaced:
                continue
            for key in [k for k in table if k[0] == ns]:
                try:
                    await self.delete(resource, ns, key[1])
                except StoreError:
                    continue
        await self._finish_namespace(ns)

    async def _finish_namespace(self, ns: str) -> None:
        # The namespace controller: a terminating namespace goes once it is empty.
        found = self._objects.get("namespaces", {}).get(("", ns))
        if found is None or not found["metadata"].get("deletionTimestamp"):
            return
        for resource, table in self._objects.items():
            if BY_NAME[resource].namespaced and any(k[0] == ns for k in table):
                return
        await self._remove(BY_NAME["namespaces"], ("", ns))


def _spec_of(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _qos_class(pod: Obj) -> str:
    containers = pod.get("spec", {}).get("containers") or []
    resources = [c.get("resources") or {} for c in containers if isinstance(c, dict)]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    if all(
        r.get("limits") and r.get("requests", r.get("limits")) == r.get("limits") for r in resources
    ):
        return "Guaranteed"
    return "Burstable"
