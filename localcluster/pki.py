"""The local cluster's CA, API server certificate, bearer token and kubeconfig."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# DESIGN.md: the API server's certificate names.
DESIGN_SANS = (
    "198.18.0.1",
    "10.96.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
_VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class Pki:
    ca_cert_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes
    token: str
    ca_key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def make_ca(common_name: str = "tpengine-local-cluster-ca") -> tuple[bytes, bytes]:
    """A new self-signed CA: (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue_server_cert(
    ca_cert_pem: bytes, ca_key_pem: bytes, names: Sequence[str], common_name: str | None = None
) -> tuple[bytes, bytes]:
    """A TLS server certificate for ``names`` signed by the CA: (cert PEM, key PEM)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cn = common_name or (names[0] if names else "server")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _cert_sans(cert_pem: bytes) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(
        ext.get_values_for_type(x509.DNSName)
    )


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_pki(state_dir: Path, *, extra_sans: Sequence[str] = ()) -> Pki:
    """Load or create ``<state_dir>/pki``; reissue the server cert when SANs are missing."""
    pki_dir = Path(state_dir) / "pki"
    paths = {
        name: pki_dir / name
        for name in ("ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "token")
    }
    if not (paths["ca.crt"].exists() and paths["ca.key"].exists()):
        ca_cert, ca_key = make_ca()
        _write_private(paths["ca.key"], ca_key)
        _write_private(paths["ca.crt"], ca_cert)
        for stale in ("apiserver.crt", "apiserver.key"):
            paths[stale].unlink(missing_ok=True)
    ca_cert, ca_key = paths["ca.crt"].read_bytes(), paths["ca.key"].read_bytes()
    names = [*DESIGN_SANS, *extra_sans]
    have = paths["apiserver.crt"].exists() and paths["apiserver.key"].exists()
    if not have or not set(names) <= _cert_sans(paths["apiserver.crt"].read_bytes()):
        cert, key = issue_server_cert(ca_cert, ca_key, names, common_name="kube-apiserver")
        _write_private(paths["apiserver.key"], key)
        _write_private(paths["apiserver.crt"], cert)
    if not paths["token"].exists():
        _write_private(paths["token"], secrets.token_urlsafe(32).encode())
    return Pki(
        ca_cert_pem=ca_cert,
        server_cert_pem=paths["apiserver.crt"].read_bytes(),
        server_key_pem=paths["apiserver.key"].read_bytes(),
        token=paths["token"].read_text().strip(),
        ca_key_pem=ca_key,
    )


def kubeconfig_dict(*, server: str, pki: Pki, cluster_name: str) -> dict[str, object]:
    user = f"{cluster_name}-admin"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(pki.ca_cert_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": pki.token}}],
        "contexts": [
            {
                "name": cluster_name,
                "context": {"cluster": cluster_name, "user": user, "namespace": "default"},
            }
        ],
        "current-context": cluster_name,
        "preferences": {},
    }


def write_kubeconfig(path: Path, *, server: str, pki: Pki, cluster_name: str) -> None:
    """Write a kubeconfig (mode 0600) for the cluster's admin token."""
    config = kubeconfig_dict(server=server, pki=pki, cluster_name=cluster_name)
    _write_private(Path(path), yaml.safe_dump(config, sort_keys=False).encode())
