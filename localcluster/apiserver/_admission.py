"""Mutating admission webhooks, called on pod CREATE as kube-apiserver calls them.

k8s.io/apiserver/pkg/admission/plugin/webhook/mutating: configurations in name order,
webhooks in list order; each matching webhook (rules, namespaceSelector, objectSelector)
gets an ``admission.k8s.io/v1`` AdmissionReview over HTTPS, verified against its
``caBundle`` with the server name ``<svc>.<ns>.svc``, within ``timeoutSeconds``; a JSONPatch
answer is applied; ``failurePolicy`` decides what a failed call means;
``reinvocationPolicy: IfNeeded`` webhooks run once more when a later webhook changed the
object.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import h11
import jsonpatch
import trio

from ._errors import InternalError, NotFound, StoreError
from ._selectors import SelectorError, labels_match, selector_from_object

if TYPE_CHECKING:
    from ._store import Store

Obj = dict[str, Any]
# (namespace, service, port) -> (address, port) to connect to.
Resolver = Callable[["Store", str, str, int], Awaitable[tuple[str, int]]]
MAX_RESPONSE = 8 * 1024 * 1024


class WebhookError(Exception):
    """A webhook call failed (connection, TLS, timeout, HTTP status or a malformed reply)."""


async def cluster_ip_resolver(
    store: Store, namespace: str, name: str, port: int
) -> tuple[str, int]:
    """Connect to the Service's ClusterIP (the daemon's node netns DNATs it to a pod)."""
    try:
        svc = store.get("services", namespace, name)
    except NotFound:
        raise WebhookError(f'service "{name}" not found') from None
    ip = svc.get("spec", {}).get("clusterIP")
    if not ip or ip == "None":
        raise WebhookError(f"service {namespace}/{name} has no cluster IP")
    return str(ip), port


def _rule_matches(rule: Obj, operation: str) -> bool:
    def has(key: str, value: str) -> bool:
        values = rule.get(key) or []
        return "*" in values or value in values

    scope = rule.get("scope", "*")
    return (
        has("operations", operation)
        and has("apiGroups", "")
        and has("apiVersions", "v1")
        and has("resources", "pods")
        and scope in ("*", "Namespaced")
    )


def _selected(store: Store, hook: Obj, pod: Obj) -> bool:
    try:
        ns_selector = selector_from_object(hook.get("namespaceSelector"))
        obj_selector = selector_from_object(hook.get("objectSelector"))
    except SelectorError:
        return False
    try:
        ns_obj = store.get("namespaces", None, pod["metadata"]["namespace"])
    except NotFound:
        ns_obj = {"metadata": {}}
    return labels_match(ns_selector, ns_obj["metadata"].get("labels")) and labels_match(
        obj_selector, pod["metadata"].get("labels")
    )


def _review(pod: Obj, operation: str) -> Obj:
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": pod["metadata"].get("name", ""),
            "namespace": pod["metadata"].get("namespace", ""),
            "operation": operation,
            "userInfo": {"username": "admin", "groups": ["system:masters", "system:authenticated"]},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


async def _http_post(
    stream: trio.abc.Stream, host: str, target: str, body: bytes
) -> tuple[int, bytes]:
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="POST",
        target=target,
        headers=[
            ("Host", host),
            ("Content-Type", "application/json"),
            ("Accept", "application/json, */*"),
            ("Content-Length", str(len(body))),
            ("User-Agent", "kube-apiserver-admission"),
        ],
    )
    await stream.send_all(
        conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    )
    status, chunks, size = 0, [], 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_RESPONSE:
                raise WebhookError("webhook response too large")
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return status, b"".join(chunks)


async def _dial(address: str, port: int) -> trio.SocketStream:
    try:
        return await trio.open_tcp_stream(address, port)
    except OSError as exc:
        # Go's wording: "dial tcp 10.96.3.4:443: connect: connection refused".
        cause = exc.__cause__
        inner = cause.exceptions[0] if isinstance(cause, BaseExceptionGroup) else cause
        errno = getattr(inner, "errno", None) or exc.errno
        text = os.strerror(errno) if errno else str(exc)
        raise OSError(f"dial tcp {address}:{port}: connect: {text.lower()}") from None


def _endpoint(config: Obj) -> tuple[str, str, int, str]:
    """(url, TLS server name, port, path) of a webhook's clientConfig."""
    svc = config.get("service")
    if isinstance(svc, dict):
        server_name = f"{svc.get('name')}.{svc.get('namespace')}.svc"
        port = int(svc.get("port") or 443)
        path = str(svc.get("path") or "/")
        return f"https://{server_name}:{port}{path}", server_name, port, path
    if config.get("url"):
        url = str(config["url"])
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return url, parts.hostname or "", parts.port or 443, path
    raise WebhookError("webhook has neither service nor url")


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__) or exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        # Go's wording, which clients and people search for.
        return f"tls: failed to verify certificate: x509: {cause.verify_message}"
    return str(cause) or type(cause).__name__


@dataclass(eq=False)
class WebhookAdmission:
    """The ``Store.admit`` hook. ``resolve`` maps a webhook Service to an address."""

    resolve: Resolver = cluster_ip_resolver

    async def __call__(self, store: Store, pod: Obj, operation: str) -> Obj:
        configs, _ = store.list("mutatingwebhookconfigurations")
        hooks = [h for c in configs for h in c.get("webhooks") or []]
        pod = copy.deepcopy(pod)
        reinvoke: list[tuple[Obj, int]] = []  # (webhook, object version it last saw)
        changes = 0
        for hook in hooks:
            if not self._matches(store, hook, pod, operation):
                continue
            pod, changed = await self._call(store, hook, pod, operation)
            changes += changed
            if hook.get("reinvocationPolicy") == "IfNeeded":
                reinvoke.append((hook, changes))
        for hook, seen in reinvoke:
            if changes > seen:
                pod, _ = await self._call(store, hook, pod, operation)
        return pod

    def _matches(self, store: Store, hook: Obj, pod: Obj, operation: str) -> bool:
        return any(_rule_matches(r, operation) for r in hook.get("rules") or []) and _selected(
            store, hook, pod
        )

    async def _call(self, store: Store, hook: Obj, pod: Obj, operation: str) -> tuple[Obj, bool]:
        name = str(hook.get("name", ""))
        try:
            response = await self._invoke(store, hook, _review(pod, operation))
        except WebhookError as exc:
            if hook.get("failurePolicy", "Fail") == "Ignore":
                return pod, False
            raise InternalError(
                f'Internal error occurred: failed calling webhook "{name}": {exc}'
            ) from None
        if not response.get("allowed"):
            result = response.get("status") or {}
            error = StoreError(
                f'admission webhook "{name}" denied the request'
                + (f": {result['message']}" if result.get("message") else "")
            )
            error.code = int(result.get("code") or 400)
            error.reason = str(result.get("reason") or "BadRequest")
            raise error
        patch = response.get("patch")
        if not patch:
            return pod, False
        if response.get("patchType") != "JSONPatch":
            raise InternalError(
                f'Internal error occurred: failed calling webhook "{name}": '
                f"unsupported patch type {response.get('patchType')!r}"
            )
        try:
            operations = json.loads(base64.b64decode(patch))
            patched = jsonpatch.JsonPatch(operations).apply(pod)
        except (
            ValueError,
            TypeError,
            jsonpatch.JsonPatchException,
            jsonpatch.JsonPointerException,
        ) as exc:
            raise InternalError(
                f'Internal error occurred: failed calling webhook "{name}": cannot apply the patch: {exc}'
            ) from None
        if not isinstance(patched, dict):
            raise InternalError(f'Internal error occurred: webhook "{name}" patched the pod away')
        return patched, patched != pod

    async def _invoke(self, store: Store, hook: Obj, review: Obj) -> Obj:
        config = hook.get("clientConfig") or {}
        timeout = min(max(int(hook.get("timeoutSeconds") or 10), 1), 30)
        svc = config.get("service")
        url, server_name, port, path = _endpoint(config)
        target = f"{path}{'&' if '?' in path else '?'}timeout={timeout}s"
        context = ssl.create_default_context()
        bundle = config.get("caBundle")
        if bundle:
            try:
                context.load_verify_locations(cadata=base64.b64decode(bundle).decode())
            except (ValueError, ssl.SSLError) as exc:
                raise WebhookError(f"invalid caBundle: {exc}") from None
        context.set_alpn_protocols(["http/1.1"])
        body = json.dumps(review).encode()
        with trio.move_on_after(timeout) as scope:
            try:
                if isinstance(svc, dict):
                    address, dial_port = await self.resolve(
                        store, str(svc.get("namespace")), str(svc.get("name")), port
                    )
                else:
                    address, dial_port = server_name, port
                tcp = await _dial(address, dial_port)
                stream = trio.SSLStream(tcp, context, server_hostname=server_name)
                async with stream:
                    status, raw = await _http_post(stream, f"{server_name}:{port}", target, body)
            except (
                OSError,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                h11.ProtocolError,
            ) as exc:
                raise WebhookError(
                    f'failed to call webhook: Post "{url}?timeout={timeout}s": {_reason(exc)}'
                ) from None
        if scope.cancelled_caught:
            raise WebhookError(
                f'failed to call webhook: Post "{url}?timeout={timeout}s": context deadline exceeded'
            )
        if status != 200:
            raise WebhookError(f"expected webhook response of 200, got {status}")
        try:
            reply = json.loads(raw)
            response = reply["response"]
            if reply.get("kind") != "AdmissionReview" or not isinstance(response, dict):
                raise ValueError("not an AdmissionReview")
        except (ValueError, KeyError, TypeError) as exc:
            raise WebhookError(f"received invalid webhook response: {exc}") from None
        if response.get("uid") != review["request"]["uid"]:
            raise WebhookError(
                f"expected response.uid={review['request']['uid']!r}, got {response.get('uid')!r}"
            )
        return dict(response)
