"""The agent-injector: a mutating admission webhook served by the manager.

The API server POSTs an ``AdmissionReview`` (admission.k8s.io/v1) for each pod CREATE to
``https://agent-injector.<ns>.svc:443/inject``, verifying our certificate against the
``caBundle`` of the MutatingWebhookConfiguration. The reply carries the request's
``uid``, ``allowed: true`` and, for pods of engaged workloads, a base64 JSONPatch. The
manager makes its own CA at start and keeps the configuration's caBundle current.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from manager._inject import AgentSpec, agent_patch

log = logging.getLogger(__name__)

SERVICE = "agent-injector"
WEBHOOK_PORT = 8443
MAX_BODY = 8 * 1024 * 1024

Decide = Callable[[dict[str, Any], str], AgentSpec | None]


@dataclass(frozen=True)
class WebhookTls:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def server_context(self) -> ssl.SSLContext:
        import os
        import tempfile

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
            with open(cert, "wb") as f:
                f.write(self.cert_pem)
            with open(key, "wb") as f:
                f.write(self.key_pem)
            context.load_cert_chain(cert, key)
        return context


def generate_tls(namespace: str, *, days: int = 365) -> WebhookTls:
    """A CA and a server certificate for ``agent-injector.<ns>.svc`` (the name the API
    server verifies, per the admission webhook documentation)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"tpengine agent-injector CA ({namespace})")]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [
        f"{SERVICE}.{namespace}.svc",
        f"{SERVICE}.{namespace}.svc.cluster.local",
        f"{SERVICE}.{namespace}",
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return WebhookTls(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def webhook_configuration(namespace: str, ca_pem: bytes) -> dict[str, Any]:
    """The MutatingWebhookConfiguration ``agent-injector-<ns>`` for pod CREATE."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": f"{SERVICE}-{namespace}",
            "labels": {"app.kubernetes.io/part-of": "tpengine"},
        },
        "webhooks": [
            {
                "name": f"{SERVICE}.{namespace}.tpengine.io",
                "clientConfig": {
                    "service": {
                        "name": SERVICE,
                        "namespace": namespace,
                        "path": "/inject",
                        "port": 443,
                    },
                    "caBundle": base64.b64encode(ca_pem).decode(),
                },
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                # Pods must still start when the manager is down: injection is best effort.
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
                "reinvocationPolicy": "IfNeeded",
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": ["kube-system", namespace],
                        }
                    ]
                },
            }
        ],
    }


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
