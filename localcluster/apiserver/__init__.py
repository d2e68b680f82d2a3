"""The local cluster's Kubernetes API server (HTTPS, discovery, verbs, subresources)."""

from ._app import ApiServer, AuditLog
from ._server import serve_apiserver

__all__ = ["ApiServer", "AuditLog", "serve_apiserver"]
