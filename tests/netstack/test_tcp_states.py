"""TCP endpoint: handshake, the state table, close and reset paths (sans-IO, hand-driven time)."""

from __future__ import annotations

import pytest

from tests.netstack.tcp_peer import OUR_ISS, PEER_ISS, Peer, endpoint_in, handshake
from tpengine.netstack import (
    ACK,
    FIN,
    RST,
    SYN,
    Closed,
    ConnectionReset,
    Established,
    LocalProtocolError,
    Readable,
    RemoteClosed,
    TcpConfig,
    TcpEndpoint,
    TcpState,
)
from tpengine.netstack._state import TRANSITIONS, Trigger, next_state


def events(ep: TcpEndpoint) -> list[object]:
    out = []
    while (ev := ep.next_event()) is not None:
        out.append(ev)
    return out


@pytest.mark.parametrize("state", [s for s in TcpState if s is not TcpState.LISTEN])
def test_a_constructor_per_state(state: TcpState) -> None:
    ep, _ = endpoint_in(state)
    assert ep.state is state


def test_missing_transition_says_what_and_where() -> None:
    assert Trigger.ACCEPT not in TRANSITIONS[TcpState.ESTABLISHED]
    with pytest.raises(LocalProtocolError, match="can't handle accept in state ESTABLISHED"):
        next_state(TcpState.ESTABLISHED, Trigger.ACCEPT)


def test_handshake_negotiates_options() -> None:
    peer = Peer(mss=1400, wscale=7, sack=True, timestamps=True)
    ep = TcpEndpoint(peer.syn(), iss=OUR_ISS, now=0.0, config=TcpConfig(receive_buffer=1 << 20))
    assert ep.state is TcpState.PENDING
    assert ep.segments_to_send(0.0) == []  # nothing until the engine decides
    ep.accept(0.0)
    (synack,) = ep.segments_to_send(0.0)
    assert synack.flags == SYN | ACK
    assert synack.seq == OUR_ISS and synack.ack == PEER_ISS + 1
    assert synack.mss == 1460 and synack.wscale == 5  # 1 MiB fits 65535 << 5
    assert synack.sack_permitted and synack.timestamps is not None
    assert synack.timestamps[1] == 100  # echoes the SYN's TSval
    peer.take([synack])
    ep.receive(peer.segment(), 0.01)
    assert ep.state is TcpState.ESTABLISHED
    assert events(ep) == [Established()]
    assert ep.send_mss == 1400 - 12  # the peer's MSS minus the timestamp option


def test_handshake_without_options_uses_rfc_defaults() -> None:
    peer = Peer(mss=None, wscale=None, sack=False, timestamps=False)
    ep = TcpEndpoint(peer.syn(), iss=OUR_ISS, now=0.0)
    ep.accept(0.0)
    (synack,) = ep.segments_to_send(0.0)
    assert synack.wscale is None and not synack.sack_permitted and synack.timestamps is None
    assert ep.send_mss == 536  # RFC 9293 §3.7.1 default


def test_refuse_answers_rst_ack() -> None:
    peer = Peer()
    ep = TcpEndpoint(peer.syn(), iss=OUR_ISS, now=0.0)
    ep.refuse()
    (rst,) = ep.segments_to_send(0.0)
    assert rst.flags == RST | ACK and rst.ack == PEER_ISS + 1
    assert ep.state is TcpState.CLOSED
    assert events(ep) == [Closed()]


def test_retransmitted_syn_in_syn_received_resends_syn_ack() -> None:
    ep, peer = endpoint_in(TcpState.SYN_RECEIVED)
    ep.receive(Peer().syn(), 0.5)
    (again,) = ep.segments_to_send(0.5)
    assert again.flags == SYN | ACK and again.seq == OUR_ISS


def test_bad_ack_in_syn_received_gets_rst() -> None:
    ep, peer = endpoint_in(TcpState.SYN_RECEIVED)
    ep.receive(peer.segment(ack=OUR_ISS + 99), 0.0)
    (rst,) = ep.segments_to_send(0.0)
    assert rst.flags == RST and rst.seq == OUR_ISS + 99
    assert ep.state is TcpState.SYN_RECEIVED


def test_data_both_ways_and_half_close_from_peer() -> None:
    ep, peer = handshake()
    ep.receive(peer.segment(b"hello"), 0.0)
    assert ep.receive_data() == b"hello"
    (ack,) = ep.segments_to_send(0.0)
    assert ack.ack == PEER_ISS + 1 + 5
    ep.receive(peer.segment(flags=FIN | ACK), 0.0)
    assert ep.state is TcpState.CLOSE_WAIT and ep.at_eof
    # half-closed: we can still send
    assert ep.send(b"reply") == 5
    out = ep.segments_to_send(0.0)
    peer.take(out)
    assert peer.received == b"reply"
    ep.close()
    assert ep.state is TcpState.LAST_ACK
    (fin,) = ep.segments_to_send(0.0)
    assert fin.flags & FIN
    peer.take([fin])
    ep.receive(peer.segment(), 0.0)
    assert ep.state is TcpState.CLOSED
    assert [type(e) for e in events(ep)] == [Established, Readable, RemoteClosed, Closed]


def test_half_close_from_our_side_then_time_wait_expires() -> None:
    config = TcpConfig(msl=5.0)
    ep, peer = handshake(config=config)
    ep.send(b"bye")
    ep.close()
    assert ep.state is TcpState.FIN_WAIT_1
    out = ep.segments_to_send(1.0)
    assert out[-1].flags & FIN and out[-1].payload == b"bye"
    peer.take(out)
    ep.receive(peer.segment(), 1.0)
    assert ep.state is TcpState.FIN_WAIT_2
    ep.receive(peer.segment(b"still talking"), 1.0)  # the peer may still send
    assert ep.receive_data() == b"still talking"
    ep.receive(peer.segment(flags=FIN | ACK), 2.0)
    assert ep.state is TcpState.TIME_WAIT
    (ack_of_fin,) = ep.segments_to_send(2.0)
    assert ack_of_fin.flags == ACK
    assert ep.get_timer() == 2.0 + 2 * 5.0
    ep.handle_timer(11.9)
    assert ep.state is TcpState.TIME_WAIT
    ep.handle_timer(12.0)
    assert ep.state is TcpState.CLOSED


def test_simultaneous_close_goes_through_closing() -> None:
    ep, peer = endpoint_in(TcpState.CLOSING)
    fin_ack = peer.segment()  # now ACKs our FIN
    ep.receive(fin_ack, 0.0)
    assert ep.state is TcpState.TIME_WAIT


def test_rst_exactly_at_rcv_nxt_resets() -> None:
    ep, peer = handshake()
    ep.receive(peer.segment(flags=RST, advance=False), 0.0)
    assert ep.state is TcpState.CLOSED
    assert events(ep)[-2:] == [ConnectionReset(reason="connection reset by peer"), Closed()]


def test_rst_inside_window_gets_challenge_ack() -> None:
    """RFC 5961 §3.2: an in-window RST that is not exactly RCV.NXT is challenged."""
    ep, peer = handshake()
    ep.receive(peer.segment(flags=RST, seq=peer.snd_nxt + 100), 0.0)
    assert ep.state is TcpState.ESTABLISHED
    (challenge,) = ep.segments_to_send(0.0)
    assert challenge.flags == ACK and challenge.ack == PEER_ISS + 1


def test_rst_outside_window_is_ignored() -> None:
    ep, peer = handshake()
    ep.receive(peer.segment(flags=RST, seq=peer.snd_nxt + (1 << 30)), 0.0)
    assert ep.state is TcpState.ESTABLISHED
    assert ep.segments_to_send(0.0) == []


def test_syn_on_established_gets_challenge_ack() -> None:
    ep, peer = handshake()
    ep.receive(peer.segment(flags=SYN, seq=peer.snd_nxt + 5), 0.0)
    assert ep.state is TcpState.ESTABLISHED
    (challenge,) = ep.segments_to_send(0.0)
    assert challenge.flags == ACK


def test_abort_sends_rst() -> None:
    ep, peer = handshake()
    ep.send(b"x" * 10)
    ep.segments_to_send(0.0)
    ep.abort()
    (rst,) = ep.segments_to_send(0.0)
    assert rst.flags & RST and rst.seq == OUR_ISS + 1 + 10
    assert ep.state is TcpState.CLOSED


def test_data_after_full_close_resets() -> None:
    ep, peer = handshake()
    ep.close()
    ep.close_input()
    peer.take(ep.segments_to_send(0.0))
    ep.receive(peer.segment(b"late"), 0.0)
    assert ep.state is TcpState.CLOSED
    assert any(s.flags & RST for s in ep.segments_to_send(0.0))


def test_send_after_close_is_local_error() -> None:
    ep, _ = handshake()
    ep.close()
    with pytest.raises(LocalProtocolError):
        ep.send(b"x")


def test_sequence_numbers_wrap() -> None:
    peer = Peer(iss=0xFFFFFFF0)
    ep = TcpEndpoint(peer.syn(), iss=0xFFFFFFFA, now=0.0)
    ep.accept(0.0)
    peer.take(ep.segments_to_send(0.0))
    ep.receive(peer.segment(), 0.0)
    ep.receive(peer.segment(b"a" * 40), 0.0)
    ep.send(b"b" * 40)
    out = ep.segments_to_send(0.0)
    peer.take(out)
    assert ep.receive_data() == b"a" * 40
    assert peer.received == b"b" * 40
    assert out[-1].ack == (0xFFFFFFF0 + 1 + 40) & 0xFFFFFFFF
    ep.receive(peer.segment(), 0.0)
    assert ep.send_unacknowledged == 0


def test_keepalive_probes_then_gives_up() -> None:
    config = TcpConfig(keepalive_idle=10.0, keepalive_interval=2.0, keepalive_count=2)
    ep, peer = handshake(config=config)
    assert ep.get_timer() == 10.0
    ep.handle_timer(10.0)
    (probe,) = ep.segments_to_send(10.0)
    assert probe.seq == OUR_ISS and probe.payload == b""  # SND.UNA - 1
    assert ep.get_timer() == 12.0
    ep.receive(peer.segment(), 11.0)  # the peer answers: idle again from 11
    assert ep.get_timer() == 21.0
    for t in (21.0, 23.0, 25.0):
        ep.handle_timer(t)
    assert ep.state is TcpState.CLOSED
    assert ep.reset_reason == "keepalive timed out"


def test_pending_connection_forgotten_on_rst() -> None:
    peer = Peer()
    ep = TcpEndpoint(peer.syn(), iss=OUR_ISS, now=0.0)
    ep.receive(peer.segment(flags=RST, ack=0), 0.0)
    assert ep.state is TcpState.CLOSED


def test_undecided_pending_connection_is_forgotten() -> None:
    ep = TcpEndpoint(Peer().syn(), iss=OUR_ISS, now=0.0, config=TcpConfig(pending_timeout=30.0))
    assert ep.get_timer() == 30.0
    ep.handle_timer(30.0)
    assert ep.state is TcpState.CLOSED
    assert events(ep) == [Closed()]
    assert ep.segments_to_send(30.0) == []


def test_challenge_acks_are_rate_limited() -> None:
    """RFC 5961 §7: a flood of in-window RSTs gets a bounded number of challenge ACKs."""
    ep, peer = handshake()
    for i in range(50):
        ep.receive(peer.segment(flags=RST, seq=peer.snd_nxt + 10 + i), 5.0)
    assert len(ep.segments_to_send(5.0)) == 10
    ep.receive(peer.segment(flags=RST, seq=peer.snd_nxt + 10), 6.0)  # a second later
    assert len(ep.segments_to_send(6.0)) == 1
    assert ep.state is TcpState.ESTABLISHED
