"""tpengine.tunnel — one multiplexed stream protocol for engine, manager and agents.

A sans-IO core (:class:`MuxConnection`: bytes in, frames and events out, time passed in)
and thin trio drivers (:func:`open_mux_session` over any carrier, websocket helpers).

Wire format (version 1.0)
=========================
The protocol runs over any ordered, reliable carrier: a websocket (binary messages whose
boundaries are irrelevant: frames may span or share messages) or a plain byte stream.
All integers are big-endian (network order).

Preamble, sent once by each end before anything else::

    "TPMUX" (5 bytes) | major u8 | minor u8

Ends with different *major* versions refuse each other: the one that notices sends
GOAWAY(VERSION_MISMATCH, "this end speaks 1.0, the peer speaks 2.0; …") and closes.
A peer whose first bytes are not the magic is told it is not speaking this protocol.
Minor versions only add frame types, settings or codes that older ends ignore.

Then frames, each a 10-byte header and a payload::

    length u32 | type u8 | flags u8 | stream id u32 | payload (length bytes)

``length`` never exceeds the receiver's ``max_frame_size`` (FRAME_SIZE_ERROR otherwise).

==  =============  ====================================================================
#   type           payload; stream id meaning
==  =============  ====================================================================
0   HELLO          JSON settings {stream_window, connection_window, max_frame_size,
                   max_streams, max_requests}; stream 0; must be the first frame
1   DIAL           proto u8 (6 tcp, 17 udp) | port u16 | host len u8 | host (ASCII name
                   or IP literal) | routing tag (rest, opaque); opens the stream
2   ACCEPT         empty; the dialed end connected
3   REJECT         reason u8 (1 refused, 2 unreachable, 3 timeout, 4 forbidden,
                   5 going away) | UTF-8 message
4   DATA           bytes; flag 0x1 FIN = the sender half-closed (TCP FIN)
5   WINDOW_UPDATE  increment u32 (non-zero); stream 0 = connection window
6   RESET          code u8 | UTF-8 message; the stream ends at once (TCP RST)
7   DATAGRAM       one UDP datagram on the UDP stream (flow) with this id
8   PING           8 opaque bytes; flag 0x1 ACK = the pong echoing them
9   GOAWAY         last peer stream id u32 | code u8 | UTF-8 message; stream 0.
                   Code 0: graceful (no new streams, open ones finish); else error close
10  REQUEST        name len u8 | method | JSON; stream id field = request id
11  RESPONSE       JSON; id = the request's; flag 0x1 ERROR = payload is a message
12  PUSH           name len u8 | topic | JSON; one-way
==  =============  ====================================================================

Streams: the end that opened the carrier (CLIENT) numbers its streams odd, the other
even, so both may dial at once (as HTTP/2, RFC 9113 §5.1.1). Frames for a stream that
existed and is closed are ignored; frames for a never-opened id are a protocol error.
The stream state machine is the table in ``_state.py``.

Flow control: each end announces in HELLO the window it grants per stream and for the
connection. A DATA payload consumes both; the receiver returns stream credit with
WINDOW_UPDATE as the application reads (in batches of half a window) and connection
credit as soon as the data reached its stream buffer, as long as the unread bytes of all
streams stay within its ``receive_budget`` (past it, when the application reads; see
``_flow.py``). So a stream's receive buffer never holds more than its window, a stalled
reader stops only its own stream, the connection window bounds what is in transit, and
at most budget + connection window wait for the application. Exceeding a window is
FLOW_CONTROL_ERROR.
The core never queues more DATA than the credit allows (``send_data`` returns how much
it took). Datagrams are not flow controlled: they are dropped when queues are full.

Liveness: each end pings every ``keepalive_interval`` (the pong gives the RTT) and
declares the peer dead after ``keepalive_timeout`` without any frame. Reconnecting is
the caller's policy.

Using it (engine, manager, agent)
=================================
Engine (client)::

    async with open_mux_websocket_url("ws://manager:8081/", request_handler=on_call) as mux:
        # or raw over a byte stream (the engine, through its port-forward, which is a
        # websocket already: no second websocket layer and masking on top):
        # async with open_pod_port_forward(api, pod, 8081, namespace=ns) as pf,
        #            open_mux_over_stream(pf, role=Role.CLIENT) as mux:
        stream = await mux.open_stream("10.96.12.7", 80, "tcp", tag=b"")  # MuxStream
        flow = await mux.open_stream("10.96.0.10", 53, "udp")            # MuxDatagramFlow
        info = await mux.request("cluster_info", {})                     # JSON in, JSON out
        async with mux.subscribe("cluster_info") as pushes: ...
        mux.rtt; await mux.ping(); await mux.wait_closed()

Manager/agent (server)::

    async def on_dial(dial: IncomingDial) -> None:        # one task per dial from the peer
        try:
            upstream = await trio.open_tcp_stream(dial.destination.host, dial.destination.port)
        except OSError:
            await dial.reject(RejectReason.REFUSED, "connection refused")
            return
        stream = await dial.accept_stream()                # closed when the handler returns
        ...

    await serve_mux_websocket(on_session, host, port, dial_handler=on_dial,
                              request_handler=on_request)

One port may serve both carriers: :func:`sniff_raw_mux` reads until the first bytes
show the preamble's ``TPMUX`` (raw tunnel) or anything else (a websocket's ``GET``) and
returns the stream with those bytes put back (the manager does this on 8081).

Either end may dial the other (intercepts: the manager dials the engine). A
:class:`MuxStream` is a trio ``HalfCloseableStream`` (``reset()`` aborts it); session calls
raise :class:`DialRejected`, :class:`RemoteError` and :class:`TunnelClosed` (a
``trio.BrokenResourceError``). ``aclose(drain=…)`` lets open streams finish. Reconnecting
after :meth:`MuxSession.wait_closed` returns is the caller's policy.

Errors by blame: :class:`ProtocolViolation` (the peer's fault: GOAWAY with its code, the
connection ends) and :class:`LocalProtocolError` (API misuse here). Public trio streams
raise only trio's ClosedResourceError / BrokenResourceError / BusyResourceError.
"""

from ._api_errors import DialRejected, RemoteError, TunnelClosed, TunnelError
from ._backoff import ReconnectBackoff
from ._config import MuxConfig, PeerSettings, Role
from ._driver import DialHandler, MuxSession, RequestHandler, Transport, open_mux_session
from ._errors import (
    ErrorCode,
    FlowControlViolation,
    FrameSizeViolation,
    LocalProtocolError,
    ProtocolViolation,
    RejectReason,
    VersionMismatch,
)
from ._events import (
    ConnectionTerminated,
    CreditAvailable,
    DatagramReceived,
    DataReceived,
    Destination,
    Event,
    GoAwayReceived,
    HandshakeCompleted,
    PongReceived,
    PushReceived,
    RequestReceived,
    ResponseReceived,
    StreamAccepted,
    StreamDialed,
    StreamEnded,
    StreamRejected,
    StreamReset,
)
from ._frames import FrameType, Proto
from ._mux import MuxConnection
from ._state import StreamState
from ._streams import IncomingDial, MuxDatagramFlow, MuxStream
from ._transports import (
    SUBPROTOCOL,
    ReplayStream,
    StreamTransport,
    WebSocketTransport,
    open_mux_over_stream,
    open_mux_over_websocket,
    open_mux_url,
    open_mux_websocket_url,
    serve_mux_websocket,
    sniff_raw_mux,
    wrap_mux_client_stream,
)

__all__ = [
    "ReconnectBackoff",
    "SUBPROTOCOL",
    "ConnectionTerminated",
    "CreditAvailable",
    "DataReceived",
    "DatagramReceived",
    "Destination",
    "DialHandler",
    "DialRejected",
    "ErrorCode",
    "Event",
    "FlowControlViolation",
    "FrameSizeViolation",
    "FrameType",
    "GoAwayReceived",
    "HandshakeCompleted",
    "IncomingDial",
    "LocalProtocolError",
    "MuxConfig",
    "MuxConnection",
    "MuxDatagramFlow",
    "MuxSession",
    "MuxStream",
    "PeerSettings",
    "PongReceived",
    "Proto",
    "ProtocolViolation",
    "PushReceived",
    "RejectReason",
    "ReplayStream",
    "RemoteError",
    "RequestHandler",
    "RequestReceived",
    "ResponseReceived",
    "Role",
    "StreamAccepted",
    "StreamDialed",
    "StreamEnded",
    "StreamRejected",
    "StreamReset",
    "StreamState",
    "StreamTransport",
    "Transport",
    "TunnelClosed",
    "TunnelError",
    "VersionMismatch",
    "WebSocketTransport",
    "open_mux_over_stream",
    "open_mux_over_websocket",
    "open_mux_session",
    "open_mux_url",
    "open_mux_websocket_url",
    "serve_mux_websocket",
    "sniff_raw_mux",
    "wrap_mux_client_stream",
]
