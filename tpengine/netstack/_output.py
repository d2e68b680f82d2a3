"""The endpoint's state, its send path and its timers (base class of ``TcpEndpoint``).

Sending (RFC 9293 §3.8.6, RFC 5681, RFC 6675): retransmissions first while in loss
recovery, then new data as far as ``min(cwnd - pipe, peer window)`` allows, in segments of
up to ``max_segment_payload`` (GSO super-segments when the driver can write them).
Timers (RFC 6298 retransmission, zero-window persist, keepalive, TIME-WAIT) are plain
deadlines; ``get_timer()`` returns the earliest and ``handle_timer(now)`` fires the due ones.
"""

from __future__ import annotations

from ._buffers import ReceiveBuffer, SackScoreboard, SendBuffer
from ._config import TcpConfig
from ._congestion import CongestionControl
from ._events import Closed, ConnectionReset, Event
from ._rtt import RttEstimator
from ._segment import ACK, FIN, PSH, RST, SYN, TcpSegment
from ._seq import SEQ_MASK, wrap
from ._state import SENDING, SYNCHRONIZED, TcpState, Trigger, next_state

S = TcpState

_MAX_WSCALE = 14  # RFC 7323 §2.3
_DEFAULT_MSS = 536  # RFC 9293 §3.7.1 when the SYN carries no MSS option
_NO_ACK_STATES = (S.PENDING, S.CLOSED, S.LISTEN)
_KEEPALIVE_STATES = (S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_2)


class TcpOutput:
    """Connection state shared by the receive path (``TcpEndpoint``) and the send path."""

    # Slots: thousands of connections live at once (RFC-named fields, see __init__).
    __slots__ = (
        "_ack_due",
        "_cc",
        "_challenge_count",
        "_challenge_since",
        "_close_at",
        "_close_requested",
        "_ctrl",
        "_delack_at",
        "_dupacks",
        "_events",
        "_fin_queued",
        "_fin_received",
        "_fin_sent",
        "_force_rxt",
        "_in_recovery",
        "_input_closed",
        "_keepalive_probes",
        "_last_ack_sent",
        "_last_rx",
        "_max_payload",
        "_persist_at",
        "_persist_backoff",
        "_persist_unanswered",
        "_rcv_edge",
        "_rcv_fin_seq",
        "_rcvbuf",
        "_recovery_after_timeout",
        "_recovery_point",
        "_retries",
        "_rto_at",
        "_rtt",
        "_rxt_end",
        "_rxt_next",
        "_scoreboard",
        "_send_blocked",
        "_sndbuf",
        "_syn_due",
        "_timed_at",
        "_timed_seq",
        "_ts_offset",
        "config",
        "irs",
        "iss",
        "local_port",
        "max_snd_wnd",
        "peer_mss",
        "rcv_wscale",
        "remote_port",
        "reset_reason",
        "sack_ok",
        "send_mss",
        "snd_max",
        "snd_una",
        "snd_wl1",
        "snd_wl2",
        "snd_wnd",
        "snd_wscale",
        "state",
        "ts_ok",
        "ts_recent",
        "wscale_ok",
    )

    def __init__(self, syn: TcpSegment, *, iss: int, now: float, config: TcpConfig) -> None:
        self.config = config
        self.state = S.LISTEN
        self.local_port = syn.dst_port
        self.remote_port = syn.src_port
        self.reset_reason: str | None = None
        self.irs = syn.seq
        self.iss = iss
        self._negotiate(syn, config)
        # Send side. Sequence numbers are unwrapped ints (see _seq); SND.UNA starts at ISS.
        self.snd_una = self.snd_max = iss
        self.snd_wnd = syn.window  # a SYN's window is never scaled (RFC 7323 §2.2)
        self.max_snd_wnd = syn.window
        self.snd_wl1, self.snd_wl2 = self.irs, iss
        self._sndbuf = SendBuffer(config.send_buffer, iss + 1)
        self._scoreboard = SackScoreboard()
        self._rtt = RttEstimator(
            initial_rto=config.initial_rto, min_rto=config.min_rto, max_rto=config.max_rto
        )
        self._cc = CongestionControl(self.send_mss)
        self._fin_queued = self._fin_sent = self._close_requested = False
        self._send_blocked = False
        # Receive side.
        self._rcvbuf = ReceiveBuffer(config.receive_buffer, self.irs + 1)
        self._rcv_edge = self.irs + 1 + min(config.receive_buffer, 0xFFFF)
        self._rcv_fin_seq: int | None = None
        self._fin_received = self._input_closed = False
        self._last_ack_sent = self.irs + 1
        # Loss recovery (RFC 6675 / RFC 6582) and timers.
        self._in_recovery = self._recovery_after_timeout = self._force_rxt = False
        self._recovery_point = self._rxt_next = self._rxt_end = iss
        self._dupacks = self._retries = 0
        self._timed_seq: int | None = None
        self._timed_at = 0.0
        self._rto_at: float | None = None
        self._persist_at: float | None = None
        self._persist_backoff = self._persist_unanswered = 0
        self._close_at: float | None = None
        self._delack_at: float | None = None
        self._last_rx = now
        self._keepalive_probes = 0
        # Output queue and events.
        self._ctrl: list[TcpSegment] = []
        self._ack_due = self._syn_due = False
        self._events: list[Event] = []  # a few at a time: a list is 500 B smaller

    def _negotiate(self, syn: TcpSegment, config: TcpConfig) -> None:
        """Options from the SYN (RFC 9293 §3.7.1, RFC 7323 §2–3, RFC 2018 §2)."""
        self.wscale_ok = config.window_scaling and syn.wscale is not None
        self.snd_wscale = min(syn.wscale or 0, _MAX_WSCALE) if self.wscale_ok else 0
        rcv_wscale = 0
        if self.wscale_ok:
            while (config.receive_buffer >> rcv_wscale) > 0xFFFF and rcv_wscale < _MAX_WSCALE:
                rcv_wscale += 1
        self.rcv_wscale = rcv_wscale
        self.sack_ok = config.sack and syn.sack_permitted
        self.ts_ok = config.timestamps and syn.timestamps is not None
        self.ts_recent = syn.timestamps[0] if syn.timestamps is not None else 0
        self._ts_offset = (self.iss * 2654435761) & SEQ_MASK  # RFC 7323 §5.4: per connection
        self.peer_mss = syn.mss if syn.mss else _DEFAULT_MSS
        # The payload per segment is the MSS minus our TCP options (RFC 6691 §3).
        self.send_mss = max(min(self.peer_mss, config.mss) - (12 if self.ts_ok else 0), 64)
        limit = config.max_segment_payload or self.send_mss
        self._max_payload = max(self.send_mss, limit - limit % self.send_mss)

    # ------------------------------------------------------------------ small queries

    @property
    def rcv_nxt(self) -> int:
        return self._rcvbuf.nxt + self._fin_received

    @property
    def receive_buffered(self) -> int:
        """In-order bytes waiting for ``receive_data``."""
        return len(self._rcvbuf)

    @property
    def at_eof(self) -> bool:
        """The peer's FIN arrived and every byte before it was read."""
        return self._fin_received and not self._rcvbuf

    @property
    def send_free(self) -> int:
        """Bytes ``send`` would take now."""
        if self._close_requested or self.state not in SENDING:
            return 0
        return self._sndbuf.free

    @property
    def send_unacknowledged(self) -> int:
        """Bytes given to ``send`` that the peer has not acknowledged yet."""
        return len(self._sndbuf)

    @property
    def _fin_seq(self) -> int:
        return self._sndbuf.end

    def output_pending(self, armed: float | None) -> bool:
        """Whether a flush would send something now or move the timer armed at ``armed``
        earlier (a cheap check for the driver after application reads)."""
        if self._ack_due or self._ctrl:
            return True
        delack = self._delack_at
        return delack is not None and (armed is None or delack < armed)

    def next_event(self) -> Event | None:
        return self._events.pop(0) if self._events else None

    def _transition(self, trigger: Trigger) -> TcpState:
        self.state = next_state(self.state, trigger)
        return self.state

    def _ts_clock(self, now: float) -> int:
        """Our timestamp clock: milliseconds (RFC 7323 §5.4), offset per connection."""
        return (int(now * 1000) + self._ts_offset) & SEQ_MASK

    def _sws_threshold(self) -> int:
        return min(self.config.receive_buffer // 2, self.config.mss)

    def _release_buffers(self) -> None:
        self._sndbuf = SendBuffer(0, self._sndbuf.start)
        self._scoreboard.clear()

    # ------------------------------------------------------------------ building segments

    def _advertise(self) -> int:
        """The window field to send, never moving the right edge left (RFC 7323 §2.4)."""
        shift = self.rcv_wscale
        nxt = self.rcv_nxt
        free = min(max(self._rcvbuf.free, 0), 0xFFFF << shift)
        edge = nxt + free
        if edge - self._rcv_edge < self._sws_threshold():
            edge = max(self._rcv_edge, nxt)  # receiver SWS avoidance (RFC 9293 §3.8.6.2.2)
        field = min((edge - nxt + (1 << shift) - 1) >> shift, 0xFFFF)
        self._rcv_edge = max(self._rcv_edge, nxt + (field << shift))
        return field

    def _segment(
        self, seq: int, flags: int, now: float, payload: bytes | memoryview = b""
    ) -> TcpSegment:
        nxt = self.rcv_nxt
        self._last_ack_sent = nxt
        self._ack_due = False
        self._delack_at = None
        return TcpSegment(
            src_port=self.local_port,
            dst_port=self.remote_port,
            seq=seq & SEQ_MASK,
            ack=nxt & SEQ_MASK,
            flags=flags | ACK,
            window=self._advertise(),
            timestamps=(self._ts_clock(now), self.ts_recent) if self.ts_ok else None,
            payload=payload,
        )

    def _pure_ack(self, now: float, seq: int | None = None) -> TcpSegment:
        if seq is None:
            # SND.NXT, unless that lies beyond the peer's window (it shrank, or the peer
            # dropped data it had room for): then the window's end, which the peer
            # accepts — an unacceptable sequence number would make it ignore the ACK
            # field too (RFC 9293 §3.10.7.4; Linux tcp_acceptable_seq).
            seq = min(self.snd_max, self.snd_una + self.snd_wnd)
        seg = self._segment(seq, 0, now)
        if self.sack_ok and self._rcvbuf.ooo_bytes:
            blocks = self._rcvbuf.sack_blocks(3 if self.ts_ok else 4)
            seg.sack_blocks = tuple((wrap(s), wrap(e)) for s, e in blocks)
        return seg

    def _queue_ack(self, now: float) -> None:
        """An ACK that must go out now, not coalesced (dup ACKs, challenge ACKs)."""
        if self.state not in _NO_ACK_STATES:
            self._ctrl.append(self._pure_ack(now))

    def _queue_rst(self) -> None:
        self._ctrl.append(
            TcpSegment(
                src_port=self.local_port,
                dst_port=self.remote_port,
                seq=wrap(self.snd_max),
                ack=wrap(self.rcv_nxt),
                flags=RST | ACK,
            )
        )

    def _syn_ack(self, now: float) -> TcpSegment:
        self._last_ack_sent = self.irs + 1
        return TcpSegment(
            src_port=self.local_port,
            dst_port=self.remote_port,
            seq=wrap(self.iss),
            ack=wrap(self.irs + 1),
            flags=SYN | ACK,
            window=min(self.config.receive_buffer, 0xFFFF),  # unscaled in a SYN
            mss=self.config.mss,
            wscale=self.rcv_wscale if self.wscale_ok else None,
            sack_permitted=self.sack_ok,
            timestamps=(self._ts_clock(now), self.ts_recent) if self.ts_ok else None,
        )

    def _emit_range(self, start: int, end: int, now: float) -> TcpSegment:
        """The segment covering ``[start, end)`` of our sequence space (SYN/data/FIN)."""
        if start == self.iss:
            return self._syn_ack(now)
        data_end = self._sndbuf.end
        stop = min(end, data_end)
        payload = self._sndbuf.peek(start, stop - start) if stop > start else b""
        flags = PSH if stop == data_end and payload else 0
        if self._fin_queued and end > data_end:
            flags |= FIN
        return self._segment(start, flags, now, payload)

    # ------------------------------------------------------------------ the send path

    def segments_to_send(self, now: float) -> list[TcpSegment]:
        """Everything due now: control segments, SYN-ACK, retransmissions, data, ACKs."""
        out = self._ctrl
        self._ctrl = []
        state = self.state
        if state is S.SYN_RECEIVED:
            if self._syn_due:
                self._syn_due = False
                out.append(self._syn_ack(now))
                self.snd_max = max(self.snd_max, self.iss + 1)
                if self._rto_at is None:
                    self._rto_at = now + self._rtt.rto
                if self._timed_seq is None and self._retries == 0:
                    self._timed_seq, self._timed_at = self.iss + 1, now
        elif state in SYNCHRONIZED and state is not S.TIME_WAIT:
            if self._in_recovery:
                self._send_retransmissions(out, now)
            self._send_new_data(out, now)
        if self._ack_due and state in SYNCHRONIZED:
            out.append(self._pure_ack(now))
        return out

    def _pipe(self) -> int:
        """RFC 6675 §4 "pipe": bytes we believe are still in the network."""
        outstanding = self.snd_max - self.snd_una - self._scoreboard.sacked_bytes
        if self._in_recovery:
            outstanding -= self._scoreboard.unsacked_between(self._rxt_next, self._rxt_end)
        return outstanding

    def _send_retransmissions(self, out: list[TcpSegment], now: float) -> None:
        """Resend the holes below ``_rxt_end`` once each (RFC 6675 §5 NextSeg rule 1)."""
        while self._rxt_next < self._rxt_end:
            hole = self._scoreboard.next_hole(max(self._rxt_next, self.snd_una), self._rxt_end)
            if hole is None:
                self._rxt_next = self._rxt_end
                return
            start, end = hole
            room = self._cc.cwnd - self._pipe()
            forced = self._force_rxt
            # The peer's window bounds retransmissions too (RFC 9293 §3.8.6); the forced
            # first one goes out regardless, one segment at most, like a window probe.
            wnd_end = self.snd_una + self.snd_wnd
            if (room < self.send_mss or start >= wnd_end) and not forced:
                return
            self._force_rxt = False  # the fast retransmit itself ignores cwnd (RFC 5681 §3.2)
            hole_end = end
            end = min(end, start + min(self._max_payload, max(room, self.send_mss)))
            end = min(end, max(wnd_end, start + self.send_mss) if forced else wnd_end)
            if not forced and end - start < min(self.send_mss, hole_end - start):
                return  # sender SWS avoidance (RFC 9293 §3.8.6.2.1): no runt segments
            out.append(self._emit_range(start, end, now))
            self._rxt_next = end
            self._timed_seq = None  # Karn: never time a retransmission
            if self._rto_at is None:
                self._rto_at = now + self._rtt.rto

    def _send_new_data(self, out: list[TcpSegment], now: float) -> None:
        data_end = self._sndbuf.end
        while True:
            start = self.snd_max
            fin_pending = self._fin_queued and not self._fin_sent
            if start >= data_end and not fin_pending:
                break
            wnd_room = self.snd_una + self.snd_wnd - start
            n = min(data_end - start, wnd_room, self._cc.cwnd - self._pipe(), self._max_payload)
            if start < data_end:
                if n <= 0:
                    break
                if (
                    n < min(data_end - start, self.send_mss)
                    and n < self.max_snd_wnd // 2
                    and self.snd_max > self.snd_una
                ):
                    break  # sender SWS avoidance (RFC 9293 §3.8.6.2.1): wait for the ACK
            elif wnd_room < 1:
                break  # a FIN needs one byte of window like data
            else:
                n = 0
            end = start + n + (1 if fin_pending and start + n == data_end else 0)
            out.append(self._emit_range(start, end, now))
            self.snd_max = end
            if end > data_end:
                self._fin_sent = True
            if self._timed_seq is None and not self.ts_ok:
                self._timed_seq, self._timed_at = end, now
            if self._rto_at is None:
                self._rto_at = now + self._rtt.rto  # RFC 6298 (5.1)
        unsent = data_end > self.snd_max or (self._fin_queued and not self._fin_sent)
        if unsent and self.snd_max == self.snd_una and self._persist_at is None:
            # Zero window, nothing in flight: probe it (RFC 9293 §3.8.6.1).
            self._persist_at = now + self._persist_interval()

    def _persist_interval(self) -> float:
        return min(self._rtt.rto * (2**self._persist_backoff), self.config.max_rto)

    def _enter_fast_recovery(self) -> None:
        """Fast retransmit and recovery (RFC 5681 §3.2, RFC 6675 §5, RFC 6582)."""
        flight = self.snd_max - self.snd_una
        self._in_recovery = True
        self._recovery_after_timeout = False
        self._recovery_point = self.snd_max
        self._cc.on_fast_loss(flight)
        self._rxt_next = self.snd_una
        if self.sack_ok and self._scoreboard:
            self._rxt_end = max(self._scoreboard.highest or 0, self.snd_una + self.send_mss)
        else:
            self._rxt_end = self.snd_una + self.send_mss
            self._cc.cwnd = self._cc.ssthresh + 3 * self.send_mss  # RFC 6582 §3.2 (2)
        self._force_rxt = True
        self._timed_seq = None

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """The earliest deadline at which ``handle_timer`` has something to do."""
        deadline = self._rto_at
        for t in (self._delack_at, self._persist_at, self._close_at, self._keepalive_deadline()):
            if t is not None and (deadline is None or t < deadline):
                deadline = t
        return deadline

    def _keepalive_deadline(self) -> float | None:
        idle = self.config.keepalive_idle
        if idle is None or self.state not in _KEEPALIVE_STATES:
            return None
        if self.snd_max != self.snd_una or self._persist_at is not None:
            return None
        return self._last_rx + idle + self._keepalive_probes * self.config.keepalive_interval

    def handle_timer(self, now: float) -> None:
        if self._close_at is not None and now >= self._close_at:
            self._transition(Trigger.TIMEOUT)  # TIME-WAIT or orphaned FIN-WAIT-2 ends
            self._finish(None)
            return
        if self._delack_at is not None and now >= self._delack_at:
            self._delack_at = None
            self._ack_due = True
        if self._rto_at is not None and now >= self._rto_at:
            self._on_retransmission_timeout(now)
        if self._persist_at is not None and now >= self._persist_at:
            self._on_persist_timeout(now)
        keepalive = self._keepalive_deadline()
        if keepalive is not None and now >= keepalive:
            self._on_keepalive_timeout(now)

    def _on_retransmission_timeout(self, now: float) -> None:
        self._retries += 1
        if self.state is S.SYN_RECEIVED:
            if self._retries > self.config.max_syn_retransmissions:
                self._reset("handshake timed out", send_rst=False)
                return
            self._syn_due = True
        elif self._retries > self.config.max_retransmissions and not (
            self.snd_wnd == 0 and now - self._last_rx < self._rtt.rto
        ):
            # A peer that shrank its window to zero below our data and answers each
            # retransmission is probed like any zero window: indefinitely while it
            # answers (RFC 9293 §3.8.6.1; Linux tcp_retransmit_timer does the same).
            self._reset("retransmission timed out", send_rst=True)
            return
        else:
            # RFC 5681 (4)/(5): everything outstanding counts as lost; resend it in
            # order starting from cwnd=1. RFC 6675 §5.1, RFC 2018 §8: the timeout may
            # mean the peer reneged on its SACKs, so they are forgotten (skipping
            # "SACKed" bytes the peer dropped would stall the connection for good).
            self._scoreboard.clear()
            self._cc.on_timeout(self.snd_max - self.snd_una)
            self._in_recovery = self._recovery_after_timeout = True
            self._recovery_point = self.snd_max
            self._rxt_next, self._rxt_end = self.snd_una, self.snd_max
            self._dupacks = 0
            self._force_rxt = True
        self._timed_seq = None
        self._rtt.back_off()  # RFC 6298 (5.5)
        self._rto_at = now + self._rtt.rto  # (5.6)

    def _on_persist_timeout(self, now: float) -> None:
        # Linux-style window probe: an ACK one below SND.UNA, which the peer must answer
        # with its current window. RFC 9293 §3.8.6.1: never give up while it answers.
        self._persist_unanswered += 1
        if self._persist_unanswered > self.config.max_retransmissions:
            self._reset("zero-window probes unanswered", send_rst=True)
            return
        self._ctrl.append(self._pure_ack(now, seq=self.snd_una - 1))
        self._persist_backoff += 1
        self._persist_at = now + self._persist_interval()

    def _on_keepalive_timeout(self, now: float) -> None:
        # RFC 9293 §3.8.4: a keepalive is a segment with SEG.SEQ = SND.NXT-1 and no data.
        if self._keepalive_probes >= self.config.keepalive_count:
            self._reset("keepalive timed out", send_rst=True)
            return
        self._keepalive_probes += 1
        self._ctrl.append(self._pure_ack(now, seq=self.snd_una - 1))

    def _reset(self, reason: str, *, send_rst: bool) -> None:
        if self.state is S.CLOSED:
            return
        if send_rst:
            self._queue_rst()
        self._transition(Trigger.ABORT if send_rst else Trigger.TIMEOUT)
        self._finish(ConnectionReset(reason=reason))

    def _finish(self, reset: ConnectionReset | None) -> None:
        """Reached CLOSED: report it and free the buffers."""
        if reset is not None:
            self.reset_reason = reset.reason
            self._events.append(reset)
        self._events.append(Closed())
        self._rto_at = self._persist_at = self._close_at = self._delack_at = None
        self._ack_due = self._syn_due = False
        self._release_buffers()
