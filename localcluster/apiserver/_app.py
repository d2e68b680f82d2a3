"""Request routing: authentication, discovery, the verbs, subresources, audit log.

URL layout (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go):
``/api/v1[/watch][/namespaces/{ns}]/{resource}[/{name}[/{subresource}]]`` and the same under
``/apis/{group}/{version}``. Anything else is 404 with a ``Status`` body.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from ..runtime_api import NodeRuntime
from ..tokens import user_of
from . import _discovery, _logs, _streams
from ._errors import BadRequest, MethodNotAllowed, NotAcceptable, NotFound, StoreError
from ._http import Request, Response
from ._resources import ResourceInfo, lookup
from ._reviews import review
from ._selectors import SelectorError, make_matcher
from ._store import Store
from ._tables import to_table
from ._verbs import Verbs, decode_body

log = logging.getLogger(__name__)

JSON = "application/json"
NOT_FOUND_MESSAGE = "the server could not find the requested resource"
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(obj: Any, status: int = 200, content_type: str = JSON) -> Response:
    return Response(status=status, headers=[("Content-Type", content_type)], body=dumps(obj))


def status_response(error: StoreError) -> Response:
    return json_response(error.status(), error.code)


@dataclass(frozen=True, kw_only=True)
class Target:
    """A parsed resource URL."""

    info: ResourceInfo
    namespace: str | None
    name: str | None
    subresource: str | None
    watch_path: bool  # the deprecated /watch/ prefix


@dataclass(eq=False)
class AuditLog:
    path: Path
    _file: TextIO | None = None

    def write(self, entry: dict[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(eq=False)
class ApiServer:
    store: Store
    runtime: NodeRuntime
    token: str
    server_address: str = "127.0.0.1:6443"
    audit: AuditLog | None = None
    bookmark_interval: float = 10.0
    user: str = "admin"
    verbs: Verbs = field(init=False)

    def __post_init__(self) -> None:
        self.verbs = Verbs(store=self.store, bookmark_interval=self.bookmark_interval)

    # ---- entry point --------------------------------------------------------------------

    async def handle(self, req: Request) -> Response:
        audit: dict[str, Any] = {
            "verb": req.method.lower(),
            "resource": "",
            "subresource": "",
            "namespace": "",
            "name": "",
        }
        try:
            response = await self._dispatch(req, audit)
        except StoreError as exc:
            response = status_response(exc)
            audit["message"] = exc.message  # failures say why, for whoever reads the log
        except Exception:  # a bug must not take the server down; answer 500 as a real one
            log.exception("internal error serving %s %s", req.method, req.path)
            response = status_response(
                StoreError("an error on the server has prevented the request from succeeding")
            )
        self._audit(req, audit, response)
        return response

    def _audit(self, req: Request, audit: dict[str, Any], response: Response) -> None:
        if self.audit is None:
            return
        entry = {
            "ts": time.time(),
            "user": audit.pop("user", self.user),
            **audit,
            "code": response.code_for_audit or response.status,
            "path": req.path,
            "peer": req.peer,
            "userAgent": req.header("user-agent"),
        }
        try:
            self.audit.write(entry)
        except OSError:
            log.warning("cannot write the audit log", exc_info=True)

    def _authenticated(self, req: Request, audit: dict[str, Any]) -> bool:
        """Bearer tokens: the admin token, or a pod's service-account token (see
        ``localcluster.tokens``); the audit entry records who it is."""
        auth = req.header("authorization")
        if not auth.lower().startswith("bearer "):
            return False
        user = user_of(self.token, auth[7:].strip())
        if user is None:
            return False
        audit["user"] = user
        return True

    async def _dispatch(self, req: Request, audit: dict[str, Any]) -> Response:
        path = req.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return Response(headers=[("Content-Type", "text/plain")], body=b"ok")
        if path == "/version":
            return json_response(_discovery.VERSION_INFO)
        if not self._authenticated(req, audit):
            audit["user"] = "system:anonymous"
            return json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": "Unauthorized",
                    "reason": "Unauthorized",
                    "code": 401,
                },
                401,
            )
        if path.startswith("/openapi"):
            return self._openapi(path)
        segments = [s for s in path.split("/") if s]
        if not segments or segments[0] not in ("api", "apis"):
            raise NotFound(NOT_FOUND_MESSAGE)
        if segments == ["api"] or segments == ["apis"]:
            return self._discovery(req, core=segments == ["api"])
        if segments[0] == "api":
            group, version, rest = "", segments[1], segments[2:]
        elif len(segments) == 2:
            found = _discovery.api_group(segments[1])
            if found is None:
                raise NotFound(NOT_FOUND_MESSAGE)
            return json_response(found)
        else:
            group, version, rest = segments[1], segments[2], segments[3:]
        if not rest:
            listing = _discovery.resource_list(group, version)
            if listing is None:
                raise NotFound(NOT_FOUND_MESSAGE)
            return json_response(listing)
        target = _parse_target(group, version, rest)
        audit.update(
            resource=target.info.name,
            subresource=target.subresource or "",
            namespace=target.namespace or "",
            name=target.name or "",
        )
        return await self._resource(req, target, audit)

    def _discovery(self, req: Request, *, core: bool) -> Response:
        chosen = _discovery.negotiate_discovery(req.header("accept", "application/json"))
        if chosen is not None:
            return json_response(
                _discovery.aggregated(core, chosen), content_type=_discovery.AGGREGATED[chosen]
            )
        if core:
            return json_response(_discovery.api_versions(self.server_address))
        return json_response(_discovery.api_group_list())

    def _openapi(self, path: str) -> Response:
        segments = [s for s in path.split("/") if s]
        if segments == ["openapi", "v3"]:
            return json_response(_discovery.openapi_root())
        if segments[:2] == ["openapi", "v3"] and len(segments) >= 4:
            if segments[2] == "api" and len(segments) == 4:
                doc = _discovery.openapi_document("", segments[3])
            elif segments[2] == "apis" and len(segments) == 5:
                doc = _discovery.openapi_document(segments[3], segments[4])
            else:
                doc = None
            if doc is not None:
                return json_response(doc)
        raise NotFound(NOT_FOUND_MESSAGE)

    # ---- resources ----------------------------------------------------------------------

    async def _resource(self, req: Request, target: Target, audit: dict[str, Any]) -> Response:
        watching = target.watch_path or req.arg("watch", "") in ("true", "1")
        if target.name is None:
            return await self._collection(req, target, audit, watching)
        sub = target.subresource
        if sub in ("exec", "attach", "portforward"):
            audit["verb"] = "create" if req.method == "POST" else "get"
            return await _streams.handle(self, req, target)
        if sub == "log":
            audit["verb"] = "get"
            return await _logs.handle_log(self, req, target)
        audit["verb"] = {
            "GET": "watch" if watching else "get",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }.get(req.method, req.method.lower())
        if req.method == "GET" and watching and sub is None:
            # GET .../pods/NAME?watch=true watches that one object (fieldSelector on name).
            selector = ",".join(
                filter(None, [req.arg("fieldSelector"), f"metadata.name={target.name}"])
            )
            query = {**req.query, "fieldSelector": [selector]}
            return self._watch(dataclasses.replace(req, query=query), target)
        if sub == "scale":
            return json_response(
                *await self.verbs.scale(req, target.info, target.namespace, target.name)
            )
        if sub not in (None, "status"):
            raise NotFound(NOT_FOUND_MESSAGE)
        return await self._object(req, target)

    async def _collection(
        self, req: Request, target: Target, audit: dict[str, Any], watching: bool
    ) -> Response:
        """GET (list, watch), POST (create) and DELETE (deletecollection) on a collection."""
        audit["verb"] = {
            "GET": "watch" if watching else "list",
            "POST": "create",
            "DELETE": "deletecollection",
        }.get(req.method, req.method.lower())
        if target.info.review:
            if req.method != "POST":
                raise MethodNotAllowed(
                    "the server does not allow this method on the requested resource"
                )
            body = decode_body(req)
            return json_response(review(target.info, body, self.user, self.token), 201)
        if req.method == "GET":
            return self._watch(req, target) if watching else self._list(req, target)
        if req.method == "POST":
            body = decode_body(req)
            meta = body.get("metadata")
            meta = meta if isinstance(meta, dict) else {}
            audit["name"] = str(meta.get("name") or meta.get("generateName") or "")
            obj = await self.store.create(
                target.info.name, target.namespace, body, dry_run=_dry_run(req)
            )
            audit["name"] = obj["metadata"]["name"]
            return json_response(obj, 201)
        if req.method == "DELETE":
            return json_response(
                await self.verbs.delete_collection(req, target.info, target.namespace)
            )
        raise MethodNotAllowed("the server does not allow this method on the requested resource")

    async def _object(self, req: Request, target: Target) -> Response:
        """GET, PUT, PATCH, DELETE on one object or its status."""
        info, ns, name, sub = target.info, target.namespace, target.name, target.subresource
        assert name is not None
        if req.method == "GET":
            obj = self.store.get(info.name, ns, name)
            form = _representation(req)
            if form == "table":
                return json_response(
                    to_table(
                        info.name,
                        [obj],
                        resource_version=obj["metadata"].get("resourceVersion", ""),
                        include=req.arg("includeObject", "Metadata") or "Metadata",
                    )
                )
            return _render(req, _partial(obj) if form == "partial" else obj)
        if req.method == "PUT":
            return json_response(await self.verbs.update(req, info, ns, name, sub))
        if req.method == "PATCH":
            obj, created = await self.verbs.patch(req, info, ns, name, sub)
            return json_response(obj, 201 if created else 200)
        if req.method == "DELETE" and sub is None:
            return json_response(await self.verbs.delete(req, info, ns, name))
        raise MethodNotAllowed("the server does not allow this method on the requested resource")

    def _list(self, req: Request, target: Target) -> Response:
        items, rv = self.store.list(
            target.info.name,
            target.namespace,
            label_selector=req.arg("labelSelector"),
            field_selector=req.arg("fieldSelector"),
        )
        form = _representation(req)
        if form == "table":
            return json_response(
                to_table(
                    target.info.name,
                    items,
                    resource_version=rv,
                    include=req.arg("includeObject", "Metadata") or "Metadata",
                )
            )
        if form == "partial":
            return json_response(
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": {"resourceVersion": rv},
                    "items": [_partial(item) for item in items],
                }
            )
        for item in items:  # list items carry no kind/apiVersion in a real list
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return _render(
            req,
            {
                "kind": target.info.list_kind,
                "apiVersion": target.info.api_version,
                "metadata": {"resourceVersion": rv},
                "items": items,
            },
        )

    def _watch(self, req: Request, target: Target) -> Response:
        form = _representation(req)
        # Bad selectors and versions are a 400 before the stream starts, as on a real server.
        try:
            make_matcher(target.info.name, req.arg("labelSelector"), req.arg("fieldSelector"))
        except SelectorError as exc:
            raise BadRequest(str(exc)) from None
        version = req.arg("resourceVersion")
        if version and not version.isdigit():
            raise BadRequest(f"invalid resource version: {version}")
        stream = self.verbs.watch_stream(
            req, target.info, target.namespace, table=form == "table", partial=form == "partial"
        )
        return Response(
            headers=[("Content-Type", JSON), ("Cache-Control", "no-cache, private")],
            stream=stream,
        )


def _dry_run(req: Request) -> bool:
    return "All" in req.args("dryRun")


def _representation(req: Request) -> str:
    """'table', 'partial', 'json' or 'yaml': the first form the client's Accept allows."""
    for media, params in _discovery.parse_accept(req.header("accept", JSON)):
        kind = params.get("as")
        if kind == "Table" and params.get("v") in ("v1", "v1beta1"):
            return "table"
        if kind in ("PartialObjectMetadata", "PartialObjectMetadataList"):
            if params.get("v") in ("v1", "v1beta1"):
                return "partial"
            continue
        if kind is not None:
            continue
        if media in ("application/json", "*/*", "application/*"):
            return "json"
        if media == "application/yaml":
            return "yaml"
    raise NotAcceptable(
        "only the following media types are accepted: application/json, application/yaml"
    )


def _wants_table(req: Request) -> bool:
    return _representation(req) == "table"


def _partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def _render(req: Request, body: dict[str, Any]) -> Response:
    if _representation(req) == "yaml":
        text = yaml.safe_dump(body, sort_keys=False).encode()
        return Response(headers=[("Content-Type", "application/yaml")], body=text)
    return json_response(body)


def _parse_target(group: str, version: str, rest: list[str]) -> Target:
    watch_path = False
    if rest and rest[0] == "watch":
        watch_path, rest = True, rest[1:]
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        inner = lookup(group, version, rest[2])
        if inner is not None and inner.namespaced:
            namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise NotFound(NOT_FOUND_MESSAGE)
    info = lookup(group, version, rest[0])
    if info is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if info.namespaced and name is not None and namespace is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    if sub is not None and sub not in {s[0] for s in info.subresources}:
        raise NotFound(NOT_FOUND_MESSAGE)
    return Target(info=info, namespace=namespace, name=name, subresource=sub, watch_path=watch_path)


__all__ = ["ApiServer", "AuditLog"]
