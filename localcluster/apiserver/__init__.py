"""The local cluster's Kubernetes API server (HTTPS, discovery, verbs, subresources).

What real kubectl 1.27–1.33 and kr8s need, on one trio task per connection:

- ``/version``, aggregated discovery (``apidiscovery.k8s.io`` v2 and v2beta1, chosen in the
  client's Accept order) and the legacy ``/api``, ``/apis``, ``/api/v1``,
  ``/apis/<g>/<v>`` documents; ``/openapi/v3`` with one document per group-version whose
  PATCH operations carry ``x-kubernetes-group-version-kind`` and ``fieldValidation``.
- get (JSON, YAML, ``Table``, ``PartialObjectMetadata``), list, watch (chunked JSON lines,
  resourceVersion resume, bookmarks, ``timeoutSeconds``, an ERROR event with 410 Expired
  past the history), create, update, patch (JSON merge, JSON patch, strategic merge, and
  server-side apply as a merge that creates and drops what its manager dropped), delete
  and deletecollection (propagationPolicy, ownerReference garbage collection, graceful pod
  deletion finished by the kubelet), ``dryRun=All``; label and field selectors.
- subresources: status, scale (``autoscaling/v1`` Scale), log (follow, tailLines,
  limitBytes), exec (websocket ``v5``/``v4``… ``channel.k8s.io``), portforward (websocket
  channel protocol, binary and base64; SPDY/3.1 inside a websocket, kubectl 1.31+; and
  ``POST`` + ``Upgrade: SPDY/3.1``) — all through the :class:`~localcluster.runtime_api.NodeRuntime`.
- mutating admission webhooks on pod CREATE (see ``_admission``), an audit log of every
  request (JSON lines: ts, user, verb, resource, subresource, namespace, name, code, and
  message for failures).

Not served (the real server's answer instead): protobuf bodies (415) and protobuf-only
Accept (406), CRDs and any resource not in ``_resources`` (404), attach, exec over SPDY,
pagination (``limit`` is ignored: lists are whole), RBAC enforcement (objects are stored,
every authenticated call is allowed), field ownership (``managedFields``).
"""

from ._admission import WebhookAdmission, cluster_ip_resolver
from ._app import ApiServer, AuditLog
from ._server import serve_apiserver

__all__ = ["ApiServer", "AuditLog", "WebhookAdmission", "cluster_ip_resolver", "serve_apiserver"]
