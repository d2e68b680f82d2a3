"""The sans-IO core on its own: a connected pair, hand-driven time, no sockets."""

from __future__ import annotations

import struct

import pytest

from tpengine.tunnel import (
    ConnectionTerminated,
    CreditAvailable,
    DatagramReceived,
    DataReceived,
    Destination,
    ErrorCode,
    GoAwayReceived,
    HandshakeCompleted,
    LocalProtocolError,
    MuxConfig,
    MuxConnection,
    PongReceived,
    Proto,
    PushReceived,
    RejectReason,
    RequestReceived,
    ResponseReceived,
    Role,
    StreamAccepted,
    StreamDialed,
    StreamEnded,
    StreamRejected,
    StreamReset,
    StreamState,
)

DEST = Destination(host="10.96.12.7", port=80, proto=Proto.TCP, tag=b"route-1")


def open_pair_stream(pair, dest=DEST):  # type: ignore[no-untyped-def]
    sid = pair.client.open_stream(dest)
    pair.pump()
    [dialed] = pair.drain(pair.server)
    assert dialed == StreamDialed(stream_id=sid, destination=dest)
    pair.server.accept_stream(sid)
    pair.pump()
    assert pair.drain(pair.client) == [StreamAccepted(stream_id=sid)]
    return sid


def test_handshake_reports_version_and_settings() -> None:
    client = MuxConnection(Role.CLIENT, now=0.0)
    server = MuxConnection(Role.SERVER, MuxConfig(stream_window=4096), now=0.0)
    server.receive_data(client.data_to_send(), 0.0)
    client.receive_data(server.data_to_send(), 0.0)
    [event] = [client.next_event()]
    assert isinstance(event, HandshakeCompleted)
    assert event.peer_version == (1, 0)
    assert event.peer_settings["stream_window"] == 4096


def test_connected_pair_exchanges_stream_events(pair_cls) -> None:  # type: ignore[no-untyped-def]
    pair = pair_cls()
    sid = open_pair_stream(pair)
    assert sid == 1  # client streams are odd
    assert pair.client.send_data(sid, b"GET / HTTP/1.1\r\n\r\n") == 18
    pair.client.send_eof(sid)
    pair.pump()
    assert pair.drain(pair.server) == [
        DataReceived(stream_id=sid, data=b"GET / HTTP/1.1\r\n\r\n"),
        StreamEnded(stream_id=sid),
    ]
    assert pair.server.stream_state(sid) is StreamState.REMOTE_CLOSED
    pair.server.send_data(sid, b"HTTP/1.1 200 OK\r\n\r\n")
    pair.server.send_eof(sid)
    pair.pump()
    assert pair.drain(pair.client) == [
        DataReceived(stream_id=sid, data=b"HTTP/1.1 200 OK\r\n\r\n"),
        StreamEnded(stream_id=sid),
    ]
    assert pair.client.stream_state(sid) is StreamState.CLOSED
    assert pair.client.open_streams == pair.server.open_streams == 0


def test_server_dials_client_with_even_ids(pair_cls) -> None:  # type: ignore[no-untyped-def]
    pair = pair_cls()
    sid = pair.server.open_stream(Destination(host="127.0.0.1", port=8080))
    assert sid == 2
    pair.pump()
    [dialed] = pair.drain(pair.client)
    assert isinstance(dialed, StreamDialed) and dialed.destination.port == 8080
    pair.client.reject_stream(sid, RejectReason.REFUSED, "connection refused")
    pair.pump()
    assert pair.drain(pair.server) == [
        StreamRejected(stream_id=sid, reason=RejectReason.REFUSED, message="connection refused")
    ]


@pytest.mark.parametrize("reason", list(RejectReason))
def test_every_reject_reason_arrives_with_its_message(pair_cls, reason) -> None:  # type: ignore[no-untyped-def]
    pair = pair_cls()
    sid = pair.client.open_stream(DEST)
    pair.pump()
    pair.drain(pair.server)
    pair.server.reject_stream(sid, reason, f"because {reason.name}")
    pair.pump()
    assert pair.drain(pair.client) == [
        StreamRejected(stream_id=sid, reason=reason, message=f"because {reason.name}")
    ]


def test_reset_ends_the_stream_on_both_sides(pair_cls) -> None:  # type: ignore[no-untyped-def]
    pair = pair_cls()
    sid = open_pair_stream(pair)
    pair.server.reset_stream(sid, ErrorCode.CANCEL, "upstream reset")
    pair.pump()
    assert pair.drain(pair.client) == [
        StreamReset(stream_id=sid, code=ErrorCode.CANCEL, message="upstream reset")
    ]
    assert pair.client.stream_state(sid) is StreamState.CLOSED
    # Data in flight for the closed stream is ignored, not an error (RFC 9113 §5.1).
    with pytest.raises(LocalProtocolError):
        pair.client.send_data(sid, b"late")


def test_closed_stream_answers_late_data_with_reset(pair_cls) -> None:  # type: ignore[no-untyped-def]
    pair = pair_cls()
    sid = open_pair_stream(pair)
    pair.client.close_stream(sid)  # FIN; the app no longer reads
    pair.pump()
    assert pair.drain(pair.server) == [StreamEnded(stream_id=sid)]
    pair.server.send_data(sid, b"nobody reads this")
    pair.pump()
    assert pair.drain(pair.client) == []
    [reset] = pair.drain(pair.server)
    assert isinstance(reset, StreamReset) and reset.code is ErrorCode.CANCEL


def test_api_misuse_is_a_local_error(pair_cls) -> None:  # type: ignore[no-untyped-def]
    pair = pair_cls()
    sid = pair.client.open_stream(DEST)
    with pytest.raises(LocalProtocolError, match="can't send DATA on stream 1 in state DIALING"):
        pair.client.send_data(sid, b"too early")
    pair.pump()
    pair.drain(pair.server)
    pair.server.accept_stream(sid)
    pair.pump()
    pair.client.send_eof(sid)
    with pytest.raises(LocalProtocolError, match="LOCAL_CLOSED"):
        pair.client.send_data(sid, b"after eof")
    fresh = MuxConnection(Role.CLIENT, now=0.0)
    with pytest.raises(LocalProtocolError, match="handshake"):
        fresh.open_stream(DEST)


def test_udp_flow_carries_datagrams(pair_cls) -> None:  # type: ignore[no-untyped-def]
    pair = pair_cls()
    sid = open_pair_stream(pair, Destination(host="10.96.0.10", port=53, proto=Proto.UDP))
    assert pair.client.send_datagram(sid, b"query-1")
    assert pair.client.send_datagram(sid, b"query-2")
    pair.pump()
    assert pair.drain(pair.server) == [
        DatagramReceived(stream_id=sid, data=b"query-1"),
        DatagramReceived(stream_id=sid, data=b"query-2"),
    ]
    too_big = b"x" * (MuxConfig().max_frame_size + 1)
    assert not pair.client.send_datagram(sid, too_big)


def test_ping_measures_rtt_with_the_time_passed_in(pair_cls) -> None:  # type: ignore[no-untyped-def]
    pair = pair_cls()
    pair.client.send_ping(100.0)
    pair.server.receive_data(pair.client.data_to_send(), 100.01)
    pair.client.receive_data(pair.server.data_to_send(), 100.25)
    assert pair.drain(pair.client) == [PongReceived(rtt=pytest.approx(0.25))]
    assert pair.client.rtt == pytest.approx(0.25)


def test_requests_responses_and_pushes(pair_cls) -> None:  # type: ignore[no-untyped-def]
    pair = pair_cls()
    rid = pair.client.send_request("session.info", {"name": "laptop"})
    pair.pump()
    assert pair.drain(pair.server) == [
        RequestReceived(request_id=rid, method="session.info", payload={"name": "laptop"})
    ]
    pair.server.send_response(rid, {"ok": True})
    rid2 = pair.client.send_request("engage", [1, 2])
    pair.pump()
    [req2] = pair.drain(pair.server)
    pair.server.send_response(req2.request_id, error="conflict with susan's intercept")
    pair.server.send_push("agents", {"added": ["web-1"]})
    pair.pump()
    assert pair.drain(pair.client) == [
        ResponseReceived(request_id=rid, payload={"ok": True}, error=None),
        ResponseReceived(request_id=rid2, payload=None, error="conflict with susan's intercept"),
        PushReceived(topic="agents", payload={"added": ["web-1"]}),
    ]
    with pytest.raises(LocalProtocolError):
        pair.server.send_response(rid, None)  # already answered


def test_graceful_goaway_lets_open_streams_finish(pair_cls) -> None:  # type: ignore[no-untyped-def]
    pair = pair_cls()
    sid = open_pair_stream(pair)
    pair.server.close(ErrorCode.NO_ERROR, "manager restarting")
    pair.pump()
    assert pair.drain(pair.client) == [
        GoAwayReceived(last_stream_id=sid, message="manager restarting")
    ]
    with pytest.raises(LocalProtocolError, match="going away"):
        pair.client.open_stream(DEST)
    pair.client.send_data(sid, b"still flows")
    pair.pump()
    assert pair.drain(pair.server) == [DataReceived(stream_id=sid, data=b"still flows")]
    pair.client.receive_eof()
    [done] = pair.drain(pair.client)
    assert done == ConnectionTerminated(
        code=ErrorCode.NO_ERROR, message="connection closed", by_peer=True
    )


def test_error_close_reaches_the_peer_with_its_code(pair_cls) -> None:  # type: ignore[no-untyped-def]
    pair = pair_cls()
    pair.client.close(ErrorCode.INTERNAL_ERROR, "engine shutting down")
    pair.pump()
    [event] = pair.drain(pair.server)
    assert isinstance(event, ConnectionTerminated)
    assert event.code is ErrorCode.INTERNAL_ERROR and event.by_peer
    assert "engine shutting down" in event.message


def test_abrupt_eof_is_connection_lost(pair_cls) -> None:  # type: ignore[no-untyped-def]
    pair = pair_cls()
    pair.server.receive_eof()
    [event] = pair.drain(pair.server)
    assert isinstance(event, ConnectionTerminated) and event.code is ErrorCode.CONNECTION_LOST


def test_incompatible_version_is_refused_with_a_clear_message() -> None:
    server = MuxConnection(Role.SERVER, now=0.0)
    future_peer = struct.pack("!5sBB", b"TPMUX", 2, 3)
    server.receive_data(future_peer, 0.0)
    [event] = [server.next_event()]
    assert isinstance(event, ConnectionTerminated)
    assert event.code is ErrorCode.VERSION_MISMATCH
    assert "this end speaks 1.0, the peer speaks 2.3" in event.message
    # ... and the peer is told so in a GOAWAY it can display.
    client = MuxConnection(Role.CLIENT, now=0.0)
    client.receive_data(
        future_peer.replace(b"\x02\x03", b"\x01\x00") + _hello_then_rest(server), 0.0
    )
    events = _drain_events(client)
    assert isinstance(events[-1], ConnectionTerminated)
    assert events[-1].code is ErrorCode.VERSION_MISMATCH and events[-1].by_peer


def _hello_then_rest(end: MuxConnection) -> bytes:
    data = end.data_to_send()
    return data[7:]  # without the server's own preamble


def _drain_events(end: MuxConnection) -> list[object]:
    out = []
    while (event := end.next_event()) is not None:
        out.append(event)
    return out


def test_not_a_tunnel_peer() -> None:
    server = MuxConnection(Role.SERVER, now=0.0)
    server.receive_data(b"GET / HTTP/1.1\r\n", 0.0)
    [event] = [server.next_event()]
    assert isinstance(event, ConnectionTerminated) and event.code is ErrorCode.PROTOCOL_ERROR
    assert "not speaking the tpengine tunnel protocol" in event.message


def test_keepalive_pings_on_schedule_and_declares_silence_dead() -> None:
    cfg = MuxConfig(keepalive_interval=5.0, keepalive_timeout=15.0)
    client = MuxConnection(Role.CLIENT, cfg, now=0.0)
    server = MuxConnection(Role.SERVER, cfg, now=0.0)
    server.receive_data(client.data_to_send(), 1.0)
    client.receive_data(server.data_to_send(), 1.0)
    client.next_event()
    assert client.get_timer() == 6.0  # first ping 5 s after the handshake
    client.handle_timer(6.0)
    server.receive_data(client.data_to_send(), 6.1)
    client.receive_data(server.data_to_send(), 6.2)
    assert client.next_event() == PongReceived(rtt=pytest.approx(0.2))
    assert client.get_timer() == 11.0
    # From now on the server is silent: pings go out at 11, 16, 21; death at 6.2 + 15.
    for at in (11.0, 16.0, 21.0):
        assert client.get_timer() == at
        client.handle_timer(at)
    assert client.get_timer() == pytest.approx(21.2)
    client.handle_timer(21.1)
    assert client.next_event() is None
    client.handle_timer(21.2)
    event = client.next_event()
    assert isinstance(event, ConnectionTerminated) and event.code is ErrorCode.KEEPALIVE_TIMEOUT
    assert client.get_timer() is None


def test_handshake_timeout() -> None:
    client = MuxConnection(Role.CLIENT, MuxConfig(handshake_timeout=3.0), now=10.0)
    assert client.get_timer() == 13.0
    client.handle_timer(13.0)
    event = client.next_event()
    assert isinstance(event, ConnectionTerminated) and event.code is ErrorCode.HANDSHAKE_TIMEOUT


def test_send_credit_limits_and_window_updates(pair_cls) -> None:  # type: ignore[no-untyped-def]
    pair = pair_cls(MuxConfig(stream_window=4096, connection_window=1 << 20))
    sid = open_pair_stream(pair)
    assert pair.client.send_data(sid, b"a" * 10_000) == 4096
    assert pair.client.send_data(sid, b"a") == 0
    pair.pump()
    [data] = pair.drain(pair.server)
    assert len(data.data) == 4096
    pair.server.acknowledge_received(sid, 1000)  # below half a window: no update yet
    pair.pump()
    assert pair.drain(pair.client) == []
    pair.server.acknowledge_received(sid, 1048)
    pair.pump()
    assert pair.drain(pair.client) == [CreditAvailable(stream_id=sid)]
    assert pair.client.send_credit(sid) == 2048


def test_a_peer_that_floods_pings_without_reading_is_closed(pair_cls) -> None:  # type: ignore[no-untyped-def]
    cfg = MuxConfig(
        connection_window=64 * 1024, max_frame_size=16 * 1024, control_backlog=16 * 1024
    )
    pair = pair_cls(cfg)
    ping = struct.pack("!IBBIQ", 8, 8, 0, 0, 1)
    for _ in range(6000):  # 108 KB of pongs would queue; nobody drains the output
        pair.server.receive_data(ping, 0.0)
        if pair.server.closed:
            break
    [event] = pair.drain(pair.server)
    assert isinstance(event, ConnectionTerminated) and "does not read" in event.message
    assert pair.server.pending_output <= 64 * 1024 + 16 * 1024 + 256  # + the GOAWAY
