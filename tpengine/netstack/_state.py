"""The TCP connection state machine: every transition, as data, in one table.

Theory of operation
-------------------
The netstack is only ever the *passive* side: the laptop's kernel opens a connection
towards an address routed to the TUN, and we answer for that address. RFC 9293 §3.3.2
draws the full diagram; the part we use starts in LISTEN. One change: a SYN does not
get its SYN-ACK at once. It parks the connection in PENDING (a LISTEN that has
recorded the peer's SYN) until the engine knows whether the cluster side can be
reached; then it ACCEPTs (SYN-ACK, on to SYN-RECEIVED), REFUSEs (RST: the application
sees "connection refused") or declares the destination UNREACHABLE (the driver sends
ICMP). Everything after that is RFC 9293's diagram, driven by the triggers below.

The endpoint (``_tcp.py``) decides *when* a trigger happened — e.g. an acceptable ACK
that covers our FIN is FIN_ACKED, processed before the FIN bit of the same segment — and
asks this table *where* it leads. A trigger a state has no entry for is a bug in the
endpoint, never the peer's doing (the receive path filters what the peer can send
first), so it raises ``LocalProtocolError("can't handle X in state Y")``.

  LISTEN --RECV_SYN--> PENDING --ACCEPT--> SYN_RECEIVED --SYN_ACKED--> ESTABLISHED
  ESTABLISHED --RECV_FIN--> CLOSE_WAIT --APP_CLOSE--> LAST_ACK --FIN_ACKED--> CLOSED
  ESTABLISHED --APP_CLOSE--> FIN_WAIT_1 --FIN_ACKED--> FIN_WAIT_2 --RECV_FIN--> TIME_WAIT
  FIN_WAIT_1 --RECV_FIN--> CLOSING --FIN_ACKED--> TIME_WAIT --TIMEOUT--> CLOSED
  any --RECV_RST / ABORT / TIMEOUT--> CLOSED   (TIMEOUT: retransmission or keepalive gave up)
"""

from __future__ import annotations

import enum

from ._errors import LocalProtocolError


class TcpState(enum.Enum):
    LISTEN = "LISTEN"
    PENDING = "PENDING"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSING = "CLOSING"
    TIME_WAIT = "TIME-WAIT"
    CLOSE_WAIT = "CLOSE-WAIT"
    LAST_ACK = "LAST-ACK"
    CLOSED = "CLOSED"


class Trigger(enum.Enum):
    RECV_SYN = "SYN"
    ACCEPT = "accept"
    REFUSE = "refuse"
    UNREACHABLE = "unreachable"
    SYN_ACKED = "ACK of our SYN"
    RECV_FIN = "FIN"
    APP_CLOSE = "close"
    FIN_ACKED = "ACK of our FIN"
    RECV_RST = "RST"
    ABORT = "abort"
    TIMEOUT = "timeout"


S = TcpState
T = Trigger

# Every state but LISTEN and CLOSED can be reset, aborted or time out.
_BREAK = {T.RECV_RST: S.CLOSED, T.ABORT: S.CLOSED, T.TIMEOUT: S.CLOSED}

TRANSITIONS: dict[TcpState, dict[Trigger, TcpState]] = {
    S.LISTEN: {T.RECV_SYN: S.PENDING},
    S.PENDING: {
        T.ACCEPT: S.SYN_RECEIVED,
        T.REFUSE: S.CLOSED,
        T.UNREACHABLE: S.CLOSED,
        **_BREAK,
    },
    # RFC 9293 §3.10.4: CLOSE in SYN-RECEIVED with data queued waits for ESTABLISHED;
    # the endpoint defers APP_CLOSE until SYN_ACKED, so it has no entry here.
    S.SYN_RECEIVED: {T.SYN_ACKED: S.ESTABLISHED, **_BREAK},
    S.ESTABLISHED: {T.RECV_FIN: S.CLOSE_WAIT, T.APP_CLOSE: S.FIN_WAIT_1, **_BREAK},
    S.FIN_WAIT_1: {T.FIN_ACKED: S.FIN_WAIT_2, T.RECV_FIN: S.CLOSING, **_BREAK},
    S.FIN_WAIT_2: {T.RECV_FIN: S.TIME_WAIT, **_BREAK},
    S.CLOSING: {T.FIN_ACKED: S.TIME_WAIT, **_BREAK},
    # A retransmitted FIN in TIME-WAIT restarts the 2 MSL timeout (RFC 9293 §3.10.7.4).
    S.TIME_WAIT: {T.RECV_FIN: S.TIME_WAIT, **_BREAK},
    S.CLOSE_WAIT: {T.APP_CLOSE: S.LAST_ACK, **_BREAK},
    S.LAST_ACK: {T.FIN_ACKED: S.CLOSED, **_BREAK},
    S.CLOSED: {},
}

# State sets are tuples: membership compares identity, while a frozenset would call
# Enum.__hash__ (Python code) on every packet.
# States in which our SYN has been acknowledged and data may flow out.
SYNCHRONIZED = (
    S.ESTABLISHED,
    S.FIN_WAIT_1,
    S.FIN_WAIT_2,
    S.CLOSING,
    S.TIME_WAIT,
    S.CLOSE_WAIT,
    S.LAST_ACK,
)
# States in which the peer may still send us data (RFC 9293 §3.10.7.4, "seventh").
RECEIVING = (S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2)
# States in which the application may still queue data to send.
SENDING = (S.SYN_RECEIVED, S.ESTABLISHED, S.CLOSE_WAIT)


def next_state(state: TcpState, trigger: Trigger) -> TcpState:
    try:
        return TRANSITIONS[state][trigger]
    except KeyError:
        raise LocalProtocolError(f"can't handle {trigger.value} in state {state.value}") from None
