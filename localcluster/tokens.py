"""Service-account identities for the local cluster's bearer tokens.

A real cluster gives each pod a token that authenticates as
``system:serviceaccount:<namespace>:<name>``. Here the token is derived from the
cluster's secret (HMAC-SHA256), so the API server checks it without any state and the
audit log names the service account that made each call — which is what the RBAC
end-to-end test reads. (RBAC itself is not enforced.)
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "sa."


def service_account_token(secret: str, namespace: str, name: str) -> str:
    mac = hmac.new(secret.encode(), f"{namespace}/{name}".encode(), hashlib.sha256).hexdigest()
    return f"{PREFIX}{namespace}.{name}.{mac}"


def user_of(secret: str, token: str) -> str | None:
    """The user a bearer token authenticates as, or None when it is not valid."""
    if hmac.compare_digest(token.encode(), secret.encode()):
        return "admin"
    if not token.startswith(PREFIX):
        return None
    try:
        namespace, name, _mac = token[len(PREFIX) :].split(".")
    except ValueError:
        return None
    if hmac.compare_digest(token.encode(), service_account_token(secret, namespace, name).encode()):
        return f"system:serviceaccount:{namespace}:{name}"
    return None
