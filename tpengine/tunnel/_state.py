"""The per-stream state machine, as one transition table (h11 ``_state.py`` style).

Theory of operation
-------------------
A stream is born when one end sends DIAL (``DIALING`` at the dialer, ``DIALED`` at the
peer). The dialed end answers ACCEPT (both move to ``OPEN``) or REJECT (``CLOSED``).
Each direction then half-closes independently with a DATA frame carrying FIN — the
TCP FIN of the proxied connection (RFC 9293 §3.6): ``LOCAL_CLOSED`` means we sent FIN and
may still receive, ``REMOTE_CLOSED`` the reverse; both FINs make ``CLOSED``. RESET from
either side, in any state before ``CLOSED``, ends the stream at once (a TCP RST).
WINDOW_UPDATE is legal in every live state and is not an input of this table.

A missing entry is an error whose blame depends on who acted: a ``SEND_*`` input raises
:class:`LocalProtocolError` ("can't send DATA in state DIALING"), a ``RECV_*`` input
raises :class:`ProtocolViolation`, which closes the connection.
"""

from __future__ import annotations

import enum

from ._errors import LocalProtocolError, ProtocolViolation


class StreamState(enum.Enum):
    DIALING = "DIALING"
    DIALED = "DIALED"
    OPEN = "OPEN"
    LOCAL_CLOSED = "LOCAL_CLOSED"
    REMOTE_CLOSED = "REMOTE_CLOSED"
    CLOSED = "CLOSED"


class Input(enum.Enum):
    SEND_ACCEPT = "SEND_ACCEPT"
    RECV_ACCEPT = "RECV_ACCEPT"
    SEND_REJECT = "SEND_REJECT"
    RECV_REJECT = "RECV_REJECT"
    SEND_DATA = "SEND_DATA"
    RECV_DATA = "RECV_DATA"
    SEND_FIN = "SEND_FIN"
    RECV_FIN = "RECV_FIN"
    SEND_RESET = "SEND_RESET"
    RECV_RESET = "RECV_RESET"


S = StreamState
I = Input  # noqa: E741

TRANSITIONS: dict[StreamState, dict[Input, StreamState]] = {
    S.DIALING: {
        I.RECV_ACCEPT: S.OPEN,
        I.RECV_REJECT: S.CLOSED,
        I.SEND_RESET: S.CLOSED,  # the dialer gave up (its own connect timeout)
        I.RECV_RESET: S.CLOSED,
    },
    S.DIALED: {
        I.SEND_ACCEPT: S.OPEN,
        I.SEND_REJECT: S.CLOSED,
        I.RECV_RESET: S.CLOSED,  # the dialer gave up before we answered
        I.SEND_RESET: S.CLOSED,
    },
    S.OPEN: {
        I.SEND_DATA: S.OPEN,
        I.RECV_DATA: S.OPEN,
        I.SEND_FIN: S.LOCAL_CLOSED,
        I.RECV_FIN: S.REMOTE_CLOSED,
        I.SEND_RESET: S.CLOSED,
        I.RECV_RESET: S.CLOSED,
    },
    S.LOCAL_CLOSED: {
        I.RECV_DATA: S.LOCAL_CLOSED,
        I.RECV_FIN: S.CLOSED,
        I.SEND_RESET: S.CLOSED,
        I.RECV_RESET: S.CLOSED,
    },
    S.REMOTE_CLOSED: {
        I.SEND_DATA: S.REMOTE_CLOSED,
        I.SEND_FIN: S.CLOSED,
        I.SEND_RESET: S.CLOSED,
        I.RECV_RESET: S.CLOSED,
    },
    S.CLOSED: {},
}


def transition(state: StreamState, event: Input, stream_id: int) -> StreamState:
    """Return the next state or raise the error whose blame ``event`` implies."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        action = event.value.split("_", 1)
        msg = f"can't {action[0].lower()} {action[1]} on stream {stream_id} in state {state.value}"
        if action[0] == "SEND":
            raise LocalProtocolError(msg) from None
        raise ProtocolViolation(msg) from None
