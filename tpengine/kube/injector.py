"""The agent-injector's certificate and webhook configuration (made by ``tp install``).

``tp install`` generates a CA and a certificate for ``agent-injector.<ns>.svc`` (the
name the API server verifies, per the admission webhook documentation), stores them in
the Secret the manager mounts, and puts the CA in the MutatingWebhookConfiguration's
``caBundle``. The manager then needs no right to touch either.
"""

from __future__ import annotations

import base64
import datetime
import ssl
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SERVICE = "agent-injector"
WEBHOOK_PORT = 8443
TLS_SECRET = "agent-injector-tls"
TLS_ENV = {"TP_INJECTOR_CA": "ca.crt", "TP_INJECTOR_CERT": "tls.crt", "TP_INJECTOR_KEY": "tls.key"}


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


def tls_secret(namespace: str, tls: WebhookTls) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": TLS_SECRET,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "tpengine"},
        },
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(tls.cert_pem).decode(),
            "tls.key": base64.b64encode(tls.key_pem).decode(),
            "ca.crt": base64.b64encode(tls.ca_pem).decode(),
        },
    }


def tls_from_secret(secret: dict[str, Any]) -> WebhookTls | None:
    data = secret.get("data") or {}
    try:
        return WebhookTls(
            ca_pem=base64.b64decode(data["ca.crt"]),
            cert_pem=base64.b64decode(data["tls.crt"]),
            key_pem=base64.b64decode(data["tls.key"]),
        )
    except (KeyError, ValueError):
        return None


def tls_from_environment() -> WebhookTls | None:
    """The certificate given to the manager's container (see ``TLS_ENV``), or None."""
    import os

    values = {key: os.environ.get(env, "") for env, key in TLS_ENV.items()}
    if not all(values.values()):
        return None
    return WebhookTls(
        ca_pem=values["ca.crt"].encode(),
        cert_pem=values["tls.crt"].encode(),
        key_pem=values["tls.key"].encode(),
    )
