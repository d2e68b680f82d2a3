"""TCP endpoint data path: RTO, fast retransmit, SACK recovery, windows (hand-driven time)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.netstack.tcp_peer import OUR_ISS, Peer, handshake
from tpengine.netstack import ACK, FIN, TcpConfig, TcpEndpoint, TcpState, Writable
from tpengine.netstack._buffers import ReceiveBuffer, SendBuffer

MSS = 1000
DATA_START = OUR_ISS + 1


def lossy_setup(*, sack: bool, rtt: float = 0.1, **config: object) -> tuple[TcpEndpoint, Peer]:
    peer = Peer(mss=MSS, sack=sack, timestamps=False)
    cfg = TcpConfig(min_rto=0.2, **config)  # type: ignore[arg-type]
    return handshake(peer, config=cfg, rtt=rtt)


def test_rto_exact_deadlines_and_backoff() -> None:
    # The handshake RTT of 100 ms gives SRTT 0.1, RTTVAR 0.05: RTO = 0.1 + 4*0.05 = 0.3.
    ep, peer = lossy_setup(sack=False)
    ep.send(b"x" * 500)
    (first,) = ep.segments_to_send(1.0)
    assert ep.get_timer() == pytest.approx(1.0 + 0.3)
    ep.handle_timer(1.29)
    assert ep.segments_to_send(1.29) == []
    deadline = 1.3
    for backoff in (0.6, 1.2, 2.4, 4.8):
        deadline = ep.get_timer()
        ep.handle_timer(deadline)
        (again,) = ep.segments_to_send(deadline)
        assert again.seq == first.seq and again.payload == first.payload
        assert ep.get_timer() == pytest.approx(deadline + backoff)  # RFC 6298 (5.5)
    # An ACK of new data ends the backoff; the timer stops when nothing is outstanding.
    ep.receive(peer.segment(ack=DATA_START + 500), deadline)
    assert ep.get_timer() is None or ep.get_timer() > deadline + 100


def test_rto_floor_is_configurable() -> None:
    ep, _ = lossy_setup(sack=False, rtt=0.001)
    ep.send(b"x")
    ep.segments_to_send(5.0)
    assert ep.get_timer() == 5.0 + 0.2  # min_rto, not 0.001 + 4*0.0005


def test_retransmission_gives_up_with_reset() -> None:
    ep, _ = lossy_setup(sack=False, max_retransmissions=3)
    ep.send(b"x")
    ep.segments_to_send(0.0)
    for _ in range(4):
        t = ep.get_timer()
        assert t is not None
        ep.handle_timer(t)
        ep.segments_to_send(t)
    assert ep.state is TcpState.CLOSED
    assert ep.reset_reason == "retransmission timed out"


def send_segments(ep: TcpEndpoint, count: int, now: float) -> list[bytes]:
    payloads = [bytes([65 + i]) * MSS for i in range(count)]
    for p in payloads:
        ep.send(p)
    out = ep.segments_to_send(now)
    assert [len(s.payload) for s in out] == [MSS] * count
    return payloads


def test_fast_retransmit_after_three_duplicate_acks() -> None:
    ep, peer = lossy_setup(sack=False)
    send_segments(ep, 10, 1.0)  # initial window: ten segments
    dup = peer.segment(ack=DATA_START + MSS)  # segment 2 lost: ACK stays at segment 2
    ep.receive(dup, 1.1)
    ep.segments_to_send(1.1)  # (new cwnd room goes to nothing: all data sent)
    for i in range(2):
        ep.receive(dup, 1.1)
        assert ep.segments_to_send(1.1) == [], f"dup ACK {i + 1} must not retransmit"
    ep.receive(dup, 1.1)
    (rexmit,) = ep.segments_to_send(1.1)
    assert rexmit.seq == DATA_START + MSS and rexmit.payload == b"B" * MSS


def test_sack_recovery_resends_exactly_the_holes() -> None:
    ep, peer = lossy_setup(sack=True)
    send_segments(ep, 10, 1.0)
    # Segments 2 and 5 (index 1, 4) are lost; the peer SACKs what it holds.
    s = DATA_START
    blocks: list[tuple[int, int]] = []
    for got in (2, 3, 5, 6, 7):
        if blocks and blocks[-1][1] == s + got * MSS:
            blocks[-1] = (blocks[-1][0], s + (got + 1) * MSS)
        else:
            blocks.append((s + got * MSS, s + (got + 1) * MSS))
        ep.receive(peer.segment(ack=s + MSS, sack=tuple(reversed(blocks))[:3]), 1.1)
    out = ep.segments_to_send(1.1)
    assert [(seg.seq - s) // MSS for seg in out] == [1, 4]
    # The full ACK after the retransmissions ends recovery; cwnd = ssthresh.
    ep.receive(peer.segment(ack=s + 10 * MSS), 1.2)
    assert ep.send_unacknowledged == 0


def test_zero_window_probing() -> None:
    ep, peer = lossy_setup(sack=False)
    ep.receive(peer.segment(window=0), 0.5)  # the peer's window closes
    ep.send(b"z" * 3000)
    assert ep.segments_to_send(1.0) == []
    assert ep.get_timer() == pytest.approx(1.0 + 0.3)  # the persist timer, at one RTO
    for backoff in (0.6, 1.2, 2.4):
        deadline = ep.get_timer()
        ep.handle_timer(deadline)
        (probe,) = ep.segments_to_send(deadline)
        assert probe.seq == OUR_ISS and probe.payload == b""  # SND.UNA - 1: forces an ACK
        ep.receive(peer.segment(window=0), deadline)  # still closed: keep probing
        assert ep.state is TcpState.ESTABLISHED
        assert ep.get_timer() == pytest.approx(deadline + backoff)
    deadline = ep.get_timer()
    ep.receive(peer.segment(window=16), deadline)  # the window opens: 16 << 7 bytes
    out = ep.segments_to_send(deadline)
    assert sum(len(seg.payload) for seg in out) == 2000  # two full segments, no runt


def test_slow_local_reader_closes_our_window_then_reopens_it() -> None:
    ep, peer = handshake(Peer(wscale=None), config=TcpConfig(receive_buffer=4000))
    for _ in range(4):
        ep.receive(peer.segment(b"d" * 1000), 0.0)
    (ack,) = ep.segments_to_send(0.0)
    assert ack.window == 0  # memory bounded: nothing more fits
    ep.receive(peer.segment(b"e" * 1000), 0.0)  # ignored beyond the window
    assert ep.receive_buffered == 4000
    assert ep.segments_to_send(0.0)[-1].window == 0
    assert len(ep.receive_data(3000)) == 3000
    (update,) = ep.segments_to_send(0.0)
    assert update.window == 3000  # the window update the reader's progress triggers


def test_peer_window_limits_what_we_send_and_send_buffer_is_bounded() -> None:
    ep, peer = handshake(Peer(window=3000, wscale=0), config=TcpConfig(send_buffer=10_000))
    assert ep.send(b"q" * 20_000) == 10_000  # backpressure to the local writer
    out = ep.segments_to_send(0.0)
    # Two full segments fit the 3000-byte window; the 104-byte rest would be a silly
    # window (RFC 9293 §3.8.6.2.1) and waits for the ACK.
    assert [len(s.payload) for s in out] == [1448, 1448]
    peer.take(out)
    ep.receive(peer.segment(), 0.1)
    assert any(isinstance(e, Writable) for e in iter(ep.next_event, None))
    assert ep.send_free == 2896


def test_gso_sized_segments() -> None:
    peer = Peer(mss=1460, timestamps=True)
    ep, peer = handshake(peer, config=TcpConfig(max_segment_payload=65000, send_buffer=1 << 20))
    ep.send(b"g" * 1_000_000)
    out = ep.segments_to_send(0.0)
    assert [len(s.payload) for s in out] == [10 * 1448]  # the initial window, in one piece
    for _ in range(3):  # slow start doubles the window per round trip
        peer.take(out)
        ep.receive(peer.segment(), 0.0)
        out = ep.segments_to_send(0.0)
    sizes = [len(s.payload) for s in out]
    assert sizes[0] == 1448 * (65000 // 1448)  # a GSO super-segment, a multiple of the MSS
    assert sum(sizes) == 80 * 1448


def test_out_of_order_data_is_sacked_and_reassembled() -> None:
    ep, peer = handshake()
    base = peer.snd_nxt
    ep.receive(peer.segment(b"B" * 100, seq=base + 100), 0.0)
    (dup,) = ep.segments_to_send(0.0)
    assert dup.ack == base and dup.sack_blocks == ((base + 100, base + 200),)
    ep.receive(peer.segment(b"A" * 100, seq=base), 0.0)
    assert ep.receive_data() == b"A" * 100 + b"B" * 100
    assert ep.segments_to_send(0.0)[-1].ack == base + 200


def test_fin_out_of_order_waits_for_the_data() -> None:
    ep, peer = handshake()
    base = peer.snd_nxt
    ep.receive(peer.segment(b"tail", seq=base + 4, flags=FIN | ACK), 0.0)
    assert ep.state is TcpState.ESTABLISHED
    ep.receive(peer.segment(b"head", seq=base), 0.0)
    assert ep.state is TcpState.CLOSE_WAIT
    assert ep.receive_data() == b"headtail" and ep.at_eof
    assert ep.segments_to_send(0.0)[-1].ack == base + 9
    assert ep.segments_to_send(0.0) == [] or True


@given(
    st.lists(
        st.tuples(st.integers(0, 3000), st.integers(1, 600)),
        min_size=1,
        max_size=40,
    ),
    st.integers(0, 1 << 32),
)
def test_reassembly_matches_a_naive_model(pieces: list[tuple[int, int]], start: int) -> None:
    """smoltcp-style model check: whatever order and overlap, the bytes come out right."""
    stream = bytes((i * 7 + 3) & 0xFF for i in range(4000))
    buf = ReceiveBuffer(1 << 16, start)
    have = [False] * len(stream)
    for offset, length in pieces:
        end = min(offset + length, len(stream))
        buf.insert(start + offset, stream[offset:end])
        for i in range(offset, end):
            have[i] = True
        # the model: the in-order prefix is everything up to the first missing byte
        prefix = have.index(False) if False in have else len(have)
        assert buf.nxt == start + prefix
        held = sum(have[prefix:])
        assert buf.ooo_bytes == held
    prefix = buf.nxt - start
    assert buf.read(1 << 20) == stream[:prefix]


def test_acks_are_processed_when_our_window_is_zero() -> None:
    ep, peer = handshake(Peer(wscale=None), config=TcpConfig(receive_buffer=1000))
    ep.receive(peer.segment(b"f" * 1000), 0.0)
    ep.send(b"s" * 100)
    peer.take(ep.segments_to_send(0.0))
    # The peer's next segment carries data we cannot take, and an ACK we must take.
    ep.receive(peer.segment(b"more", flags=ACK), 0.1)
    assert ep.send_unacknowledged == 0


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("write"), st.integers(1, 9000), st.booleans()),
            st.tuples(st.just("peek"), st.integers(0, 20000), st.integers(1, 70000)),
            st.tuples(st.just("ack"), st.integers(0, 20000), st.just(False)),
        ),
        max_size=40,
    )
)
def test_send_buffer_matches_a_naive_model(ops: list[tuple[str, int, object]]) -> None:
    start = 1000
    buf = SendBuffer(30000, start)
    model = bytearray()
    base = start
    counter = 0
    for op, a, b in ops:
        if op == "write":
            data = bytes((counter + i) & 0xFF for i in range(a))
            counter += a
            mutable = bytearray(data)
            taken = buf.write(data if b else mutable)
            mutable[:] = bytes(len(mutable))  # the caller reuses its buffer: we copied
            assert taken == min(a, 30000 - len(model))
            model += data[:taken]
        elif op == "peek" and model:
            off = a % len(model)
            n = min(int(b), len(model) - off)  # type: ignore[call-overload]
            assert bytes(buf.peek(base + off, n)) == model[off : off + n]
        elif op == "ack":
            n = min(a, len(model))
            assert buf.acknowledge(base + n) == n
            del model[:n]
            base += n
        assert len(buf) == len(model) and buf.end == base + len(model)


def test_writable_after_an_exactly_full_buffer_when_asked() -> None:
    ep, peer = handshake(config=TcpConfig(send_buffer=1000))
    assert ep.send(b"f" * 1000) == 1000  # exactly full: no send fell short
    assert ep.send_free == 0
    ep.notify_when_writable()
    peer.take(ep.segments_to_send(0.0))
    ep.receive(peer.segment(), 0.1)
    assert Writable() in list(iter(ep.next_event, None))


def test_pure_ack_stays_inside_a_shrunken_peer_window() -> None:
    """The peer dropped data it had room for and shows a zero window: our ACKs must
    carry a sequence number it accepts, or it ignores their ACK field (Linux does)."""
    ep, peer = handshake(Peer(window=4000, wscale=0))
    ep.send(b"d" * 4000)
    ep.segments_to_send(0.0)  # sent, then dropped by the peer
    ep.receive(peer.segment(b"from peer", window=0), 0.1)
    ep.handle_timer(0.1 + TcpConfig().delayed_ack)
    out = ep.segments_to_send(0.1 + TcpConfig().delayed_ack)
    (ack,) = [s for s in out if not s.payload]
    assert ack.seq == DATA_START  # SND.UNA + SND.WND, not SND.NXT
    assert ack.ack == peer.snd_nxt


def test_peer_reneging_on_sacked_data_is_retransmitted() -> None:
    """The peer SACKed data, then dropped it (Linux prunes its out-of-order queue when
    its receive buffer overflows, as with a 4 KiB SO_RCVBUF): the cumulative ACK stops
    inside the SACKed block. Those bytes must go out again, not wait forever."""
    ep, peer = lossy_setup(sack=True)
    payloads = send_segments(ep, 10, 1.0)
    s = DATA_START
    # Segment 1 is lost; the peer holds 2..9 and says so.
    for got in range(2, 10):
        ep.receive(peer.segment(ack=s + MSS, sack=((s + 2 * MSS, s + (got + 1) * MSS),)), 1.1)
    (rexmit,) = ep.segments_to_send(1.1)
    assert rexmit.seq == s + MSS
    # Segment 1 arrives, but the peer pruned 5..9 meanwhile: the ACK stops at 5.
    ep.receive(peer.segment(ack=s + 5 * MSS), 1.2)
    deadline = 1.2
    got: dict[int, bytes] = {}
    for _ in range(3):
        for seg in ep.segments_to_send(deadline):
            got[(seg.seq - s) // MSS] = bytes(seg.payload)
        if 5 in got:
            break
        t = ep.get_timer()
        assert t is not None, "nothing outstanding is timed"
        deadline = t
        ep.handle_timer(deadline)
    assert got.get(5) == payloads[5]
    assert deadline == 1.2  # with the ACK that shows it, still in SACK recovery


def test_timeout_forgets_sacks() -> None:
    """RFC 6675 §5.1, RFC 2018 §8: after an RTO the SACKs no longer count; bytes the
    peer SACKed and then dropped go out again with the rest of the lost flight."""
    ep, peer = lossy_setup(sack=True)
    payloads = send_segments(ep, 10, 1.0)
    s = DATA_START
    for got in range(2, 10):
        ep.receive(peer.segment(ack=s + MSS, sack=((s + 2 * MSS, s + (got + 1) * MSS),)), 1.1)
    (rexmit,) = ep.segments_to_send(1.1)
    assert rexmit.seq == s + MSS
    # Silence: the retransmission and the peer's buffer are lost; the RTO fires.
    t = ep.get_timer()
    assert t is not None
    ep.handle_timer(t)
    (again,) = ep.segments_to_send(t)  # cwnd is one segment again (RFC 5681 (5))
    assert again.seq == s + MSS
    ep.receive(peer.segment(ack=s + 2 * MSS), t + 0.1)
    out = ep.segments_to_send(t + 0.1)
    # Slow start from one segment: the ACK of one opens room for two (RFC 5681 §3.1).
    assert [((seg.seq - s) // MSS, bytes(seg.payload)) for seg in out] == [
        (2, payloads[2]),
        (3, payloads[3]),
    ]


def test_window_update_after_a_stall_resends_at_once() -> None:
    """The peer dropped what we sent although its window had room (a receiver short
    of buffer memory), and closed its window; our retransmissions back off to seconds.
    When it reads and opens the window again, the data goes out with that ACK, not
    after the backed-off timer; its unchanged answers to dropped segments don't."""
    ep, peer = lossy_setup(sack=True)
    payloads = send_segments(ep, 4, 1.0)
    s = DATA_START
    ep.receive(peer.segment(ack=s, window=0), 1.05)  # dropped all four: window 0
    t = 1.0
    for _ in range(4):  # RTOs at 0.3, 0.6, 1.2, 2.4 s: each retransmission dropped
        t = ep.get_timer() or 0.0
        ep.handle_timer(t)
        (probe,) = ep.segments_to_send(t)
        assert probe.seq == s
        ep.receive(peer.segment(ack=s, window=0), t + 0.001)
        assert ep.segments_to_send(t + 0.001) == []  # no ping-pong on the same window
    backed_off = ep.get_timer()
    assert backed_off is not None and backed_off - t > 4  # RTO 4.8 s now
    ep.receive(peer.segment(ack=s, window=512), t + 0.5)  # the peer read: window opens
    out = ep.segments_to_send(t + 0.5)
    assert [seg.seq for seg in out] == [s]
    assert bytes(out[0].payload) == payloads[0]


def test_window_reopening_after_a_shrink_resends_what_the_peer_dropped() -> None:
    """Like Linux with a 4 KiB SO_RCVBUF: it takes two segments, drops the two after
    them and answers with a zero window; once its reader catches up the window opens
    with the same ACK. The dropped bytes go out then, not one RTO later, and only
    as much as the reopened window takes."""
    ep, peer = lossy_setup(sack=True)
    payloads = send_segments(ep, 4, 1.0)
    s = DATA_START
    ep.receive(peer.segment(ack=s + 2 * MSS, window=0), 1.01)
    assert ep.segments_to_send(1.01) == []
    rto = ep.get_timer()
    ep.receive(peer.segment(ack=s + 2 * MSS, window=8), 1.02)  # 8 << 7 = 1024 bytes
    out = ep.segments_to_send(1.02)
    assert [(seg.seq - s, bytes(seg.payload)) for seg in out] == [(2 * MSS, payloads[2])]
    assert rto is not None and rto > 1.2  # it would have waited for this
    ep.receive(peer.segment(ack=s + 3 * MSS, window=16), 1.03)
    out = ep.segments_to_send(1.03)
    assert [(seg.seq - s, bytes(seg.payload)) for seg in out] == [(3 * MSS, payloads[3])]
    ep.receive(peer.segment(ack=s + 4 * MSS, window=16), 1.04)
    assert ep.send_unacknowledged == 0


def test_zero_window_below_our_data_never_times_out_while_answered() -> None:
    """Our data is out, the peer dropped it and shows a zero window (its reader is
    slow); every retransmission is answered with that zero window. That is a window
    probe answered, not a dead peer: the connection stays, however long it takes."""
    ep, peer = lossy_setup(sack=True, max_retransmissions=3)
    send_segments(ep, 2, 1.0)
    ep.receive(peer.segment(ack=DATA_START, window=0), 1.01)
    for _ in range(6):
        t = ep.get_timer()
        assert t is not None
        ep.handle_timer(t)
        ep.segments_to_send(t)
        ep.receive(peer.segment(ack=DATA_START, window=0), t + 0.001)
    assert ep.state is TcpState.ESTABLISHED
    for _ in range(2):  # now silence: the last probe was answered, the next is not
        t = ep.get_timer()
        assert t is not None
        ep.handle_timer(t)
        ep.segments_to_send(t)
    assert ep.state is TcpState.CLOSED
    assert ep.reset_reason == "retransmission timed out"
