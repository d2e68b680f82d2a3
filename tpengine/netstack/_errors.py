"""Errors split by blame (h11 style): the peer's fault versus misuse of the API."""

from __future__ import annotations


class ProtocolViolation(Exception):
    """The peer broke the protocol. Caught once on the receive path; the connection resets."""


class LocalProtocolError(Exception):
    """The local user of the endpoint called something the current state does not allow."""
