"""Error types of the tunnel protocol, split by blame (h11/aioquic style).

* :class:`ProtocolViolation` — the *peer* broke the protocol. Raised deep in the frame
  handlers, caught once in :meth:`MuxConnection.receive_data`, and turned into an error
  close (a GOAWAY frame carrying the code) plus a :class:`ConnectionTerminated` event.
* :class:`LocalProtocolError` — *this* side misused the API (sending on a stream it already
  half-closed, opening a stream before the handshake, …). Never sent on the wire.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Connection close (GOAWAY) and stream reset codes, one byte on the wire."""

    NO_ERROR = 0
    PROTOCOL_ERROR = 1
    FLOW_CONTROL_ERROR = 2
    FRAME_SIZE_ERROR = 3
    VERSION_MISMATCH = 4
    KEEPALIVE_TIMEOUT = 5
    INTERNAL_ERROR = 6
    CANCEL = 7
    HANDSHAKE_TIMEOUT = 8
    CONNECTION_LOST = 9

    @classmethod
    def parse(cls, value: int) -> ErrorCode:
        try:
            return cls(value)
        except ValueError:
            # Unknown codes from a newer minor version degrade to a generic error.
            return cls.INTERNAL_ERROR


class RejectReason(enum.IntEnum):
    """Why a dial was refused; the netstack maps these to what the app sees
    (REFUSED → TCP RST, UNREACHABLE → ICMP unreachable, TIMEOUT → SYN timeout)."""

    REFUSED = 1
    UNREACHABLE = 2
    TIMEOUT = 3
    FORBIDDEN = 4
    GOING_AWAY = 5

    @classmethod
    def parse(cls, value: int) -> RejectReason:
        try:
            return cls(value)
        except ValueError:
            return cls.REFUSED


class ProtocolViolation(Exception):
    """The peer sent something the protocol forbids; closes the connection."""

    code: ErrorCode = ErrorCode.PROTOCOL_ERROR

    def __init__(self, reason: str, code: ErrorCode | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code


class FlowControlViolation(ProtocolViolation):
    code = ErrorCode.FLOW_CONTROL_ERROR


class FrameSizeViolation(ProtocolViolation):
    code = ErrorCode.FRAME_SIZE_ERROR


class VersionMismatch(ProtocolViolation):
    code = ErrorCode.VERSION_MISMATCH


class LocalProtocolError(Exception):
    """This side used the API in a way the protocol does not allow."""
