"""Token and self-subject reviews: who am I (``kubectl auth whoami``) and may I (``auth can-i``).

The local cluster has one user, the admin, and does not enforce RBAC: every
authenticated request is allowed, and the reviews say so.
"""

from __future__ import annotations

import hmac
from typing import Any

from ._resources import ResourceInfo

GROUPS = ["system:masters", "system:authenticated"]


def review(info: ResourceInfo, body: dict[str, Any], user: str, token: str) -> dict[str, Any]:
    """The review object with its status filled in (never stored)."""
    answer: dict[str, Any] = {
        "kind": info.kind,
        "apiVersion": info.api_version,
        "metadata": {"creationTimestamp": None},
        "spec": body.get("spec") or {},
    }
    if info.name == "tokenreviews":
        given = str((body.get("spec") or {}).get("token") or "")
        ok = hmac.compare_digest(given.encode(), token.encode())
        answer["status"] = (
            {"authenticated": True, "user": {"username": user, "groups": GROUPS}}
            if ok
            else {"authenticated": False, "error": "invalid bearer token"}
        )
    elif info.name == "selfsubjectreviews":
        answer.pop("spec")
        answer["status"] = {"userInfo": {"username": user, "groups": GROUPS}}
    elif info.name == "selfsubjectaccessreviews":
        answer["status"] = {
            "allowed": True,
            "reason": "the local cluster does not enforce RBAC",
        }
    else:
        answer["status"] = {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
    return answer
