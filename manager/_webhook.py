"""The agent-injector: a mutating admission webhook served by the manager.

The API server POSTs an ``AdmissionReview`` (admission.k8s.io/v1) for each pod CREATE to
``https://agent-injector.<ns>.svc:443/inject``, verifying our certificate against the
``caBundle`` of the MutatingWebhookConfiguration. The reply carries the request's
``uid``, ``allowed: true`` and, for pods of engaged workloads, a base64 JSONPatch. The
manager makes its own CA at start and keeps the configuration's caBundle current.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
from collections.abc import Callable
from typing import Any

import h11
import trio

from manager._inject import AgentSpec, agent_patch
from tpengine.kube.injector import (
    SERVICE,
    WEBHOOK_PORT,
    WebhookTls,
    generate_tls,
    webhook_configuration,
)

log = logging.getLogger(__name__)

MAX_BODY = 8 * 1024 * 1024

Decide = Callable[[dict[str, Any], str], AgentSpec | None]

__all__ = [
    "SERVICE",
    "WebhookTls",
    "generate_tls",
    "review_response",
    "serve_webhook",
    "webhook_configuration",
]


def review_response(review: dict[str, Any], decide: Decide) -> dict[str, Any]:
    """The AdmissionReview answer to ``review`` (never refuses a pod: failures allow it
    unchanged and are logged)."""
    request = review.get("request") or {}
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
    try:
        pod = request.get("object") or {}
        if request.get("kind", {}).get("kind") == "Pod" and request.get("operation") == "CREATE":
            spec = decide(pod, request.get("namespace", ""))
            if spec is not None:
                ops = agent_patch(pod, spec)
                if ops:
                    response["patchType"] = "JSONPatch"
                    response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("not injecting into %s: %s", request.get("name") or "a pod", exc)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


async def serve_webhook(
    tls: WebhookTls,
    decide: Decide,
    *,
    port: int = WEBHOOK_PORT,
    host: str | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    context = tls.server_context()

    async def handle(stream: trio.SocketStream) -> None:
        ssl_stream = trio.SSLStream(stream, context, server_side=True)
        try:
            with trio.move_on_after(30):
                await _serve_one(ssl_stream, decide)
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            h11.RemoteProtocolError,
            ssl.SSLError,
        ) as exc:
            log.debug("webhook connection ended: %s", exc)
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(ssl_stream)

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def _serve_one(stream: trio.abc.Stream, decide: Decide) -> None:
    conn = h11.Connection(h11.SERVER)
    body = bytearray()
    target = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(event, h11.Request):
            target = event.target
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                await _reply(stream, conn, 413, {"message": "too large"})
                return
        elif isinstance(event, h11.EndOfMessage):
            if target.split(b"?")[0] != b"/inject":
                await _reply(stream, conn, 404, {"message": "not found"})
            else:
                try:
                    review = json.loads(body)
                except ValueError:
                    await _reply(stream, conn, 400, {"message": "not JSON"})
                    return
                await _reply(stream, conn, 200, review_response(review, decide))
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
            body, target = bytearray(), b""
        else:
            return


async def _reply(
    stream: trio.abc.Stream, conn: h11.Connection, status: int, payload: dict[str, Any]
) -> None:
    data = json.dumps(payload).encode()
    out = (
        conn.send(
            h11.Response(
                status_code=status,
                headers=[("content-type", "application/json"), ("content-length", str(len(data)))],
            )
        )
        or b""
    )
    out += conn.send(h11.Data(data=data)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(out)
