"""Errors the trio drivers raise from session calls (streams raise only trio's own)."""

from __future__ import annotations

import trio

from ._errors import ErrorCode, RejectReason


class TunnelError(Exception):
    """Base of the errors the trio drivers raise from session calls."""


class TunnelClosed(TunnelError, trio.BrokenResourceError):
    """The tunnel is gone (closed, failed, or the peer went silent)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"tunnel closed ({code.name}): {message}")
        self.code = code
        self.message = message


class DialRejected(TunnelError):
    """The peer refused to open the stream; ``reason`` says why, truthfully."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(f"dial rejected ({reason.name.lower()}): {message}")
        self.reason = reason
        self.message = message


class RemoteError(TunnelError):
    """The peer's request handler answered with an error."""
