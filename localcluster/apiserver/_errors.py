"""Store errors, each one a Kubernetes ``Status`` reason with its HTTP code."""

from __future__ import annotations

from typing import Any


class StoreError(Exception):
    code: int = 500
    reason: str = "InternalError"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def status(self) -> dict[str, Any]:
        """This error as a ``metav1.Status`` body."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


class BadRequest(StoreError):
    code, reason = 400, "BadRequest"


class Forbidden(StoreError):
    code, reason = 403, "Forbidden"


class NotFound(StoreError):
    code, reason = 404, "NotFound"


class MethodNotAllowed(StoreError):
    code, reason = 405, "MethodNotAllowed"


class NotAcceptable(StoreError):
    code, reason = 406, "NotAcceptable"


class AlreadyExists(StoreError):
    code, reason = 409, "AlreadyExists"


class Conflict(StoreError):
    code, reason = 409, "Conflict"


class Gone(StoreError):
    code, reason = 410, "Expired"


class UnsupportedMediaType(StoreError):
    code, reason = 415, "UnsupportedMediaType"


class Invalid(StoreError):
    code, reason = 422, "Invalid"


class InternalError(StoreError):
    code, reason = 500, "InternalError"


class Timeout(StoreError):
    code, reason = 504, "Timeout"


def not_found(resource: str, name: str, group: str = "") -> NotFound:
    qualified = f"{resource}.{group}" if group else resource
    return NotFound(
        f'{qualified} "{name}" not found',
        details={"name": name, "group": group, "kind": resource}
        if group
        else {"name": name, "kind": resource},
    )


def invalid(kind: str, name: str, group: str, causes: list[tuple[str, str, str]]) -> Invalid:
    """causes: (field, reason, message) — message like 'Required value' or 'Invalid value: ...'."""
    texts = [f"{field}: {message}" for field, _, message in causes]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return Invalid(
        f'{kind} "{name}" is invalid: {summary}',
        details={
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [
                {"reason": reason, "message": message, "field": field}
                for field, reason, message in causes
            ],
        },
    )
