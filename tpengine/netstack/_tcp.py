"""The sans-IO TCP endpoint: the passive side of one connection (RFC 9293).

Input: ``receive(segment, now)``, ``handle_timer(now)`` and the application calls
(``send``, ``receive_data``, ``close``, ``abort``; ``accept``/``refuse``/``unreachable``
while the connection is PENDING). Output: ``segments_to_send(now)``, ``get_timer()`` and
``next_event()``. It never reads a clock or touches a socket.

The receive path follows RFC 9293 §3.10.7.4 step by step (sequence check, RST, SYN,
ACK, text, FIN); the state changes go through the table in ``_state``. The send path
and the timers live in ``_output.py`` (``TcpOutput``), the base class.
"""

from __future__ import annotations

from ._config import TcpConfig
from ._errors import LocalProtocolError, ProtocolViolation
from ._events import ConnectionReset, Established, Readable, RemoteClosed, Writable
from ._output import TcpOutput
from ._segment import ACK, FIN, RST, SYN, TcpSegment
from ._seq import SEQ_MASK, unwrap
from ._state import RECEIVING, SENDING, TcpState, Trigger

S = TcpState
_HALF = 1 << 31
_CHALLENGE_ACKS_PER_SECOND = 10
_RENEGING_DELAY = 0.01  # Linux: max(SRTT/2, 10 ms) before resending reneged data


def _ts_before(a: int, b: int) -> bool:
    """Timestamp ``a`` is older than ``b`` (RFC 7323 §5.2, modulo 2**32)."""
    return ((a - b) & SEQ_MASK) >= _HALF


class TcpEndpoint(TcpOutput):
    """One TCP connection, created from the peer's SYN in state PENDING."""

    __slots__ = ()

    def __init__(
        self, syn: TcpSegment, *, iss: int, now: float, config: TcpConfig | None = None
    ) -> None:
        if syn.flags & (SYN | ACK | RST | FIN) != SYN:
            raise LocalProtocolError("an endpoint starts from a bare SYN")
        super().__init__(syn, iss=iss, now=now, config=config or TcpConfig())
        self._transition(Trigger.RECV_SYN)
        self._close_at = now + self.config.pending_timeout  # bounded wait for the engine
        self._challenge_since = now
        self._challenge_count = 0

    # ------------------------------------------------------------------ the engine's decision

    def accept(self, now: float) -> None:
        """Complete the handshake: the SYN-ACK goes out with the next flush."""
        self._transition(Trigger.ACCEPT)
        self._syn_due = True
        self._last_rx = now
        self._close_at = None

    def refuse(self) -> None:
        """Answer the SYN with RST,ACK: the peer sees "connection refused" (RFC 9293 §3.10.7.1)."""
        self._transition(Trigger.REFUSE)
        self._ctrl.append(
            TcpSegment(
                src_port=self.local_port,
                dst_port=self.remote_port,
                seq=0,
                ack=(self.irs + 1) & SEQ_MASK,
                flags=RST | ACK,
            )
        )
        self._finish(None)

    def unreachable(self) -> None:
        """Forget the SYN silently; the driver answers it with ICMP destination unreachable."""
        self._transition(Trigger.UNREACHABLE)
        self._finish(None)

    # ------------------------------------------------------------------ the application side

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue bytes to send; return how many fit in the send buffer (maybe 0)."""
        if self.state not in SENDING or self._close_requested:
            raise LocalProtocolError(f"can't send in state {self.state.value}")
        n = self._sndbuf.write(data)
        if n < len(data):
            self._send_blocked = True
        return n

    def notify_when_writable(self) -> None:
        """Report ``Writable`` when send-buffer space frees up, even if no ``send`` fell short."""
        self._send_blocked = True

    def receive_data(self, max_bytes: int = 1 << 20, now: float | None = None) -> bytes:
        """Take up to ``max_bytes`` of in-order data (b"" when none is buffered)."""
        if not self._rcvbuf or max_bytes <= 0:
            return b""
        data = self._rcvbuf.read(max_bytes)
        # Window update once the right edge can move by a useful amount (RFC 9293
        # §3.8.6.2.2, receiver side of silly window syndrome avoidance). This is what
        # reopens a zero window after a slow local reader catches up. While the peer
        # still has a few segments' room it rides on the next ACK (or the delayed-ACK
        # timer), so a request's first read does not cost a packet of its own.
        if self.rcv_nxt + self._rcvbuf.free - self._rcv_edge >= self._sws_threshold():
            if now is None or self._rcv_edge - self.rcv_nxt < 4 * self.config.mss:
                self._ack_due = True
            elif self._delack_at is None:
                self._delack_at = now + self.config.delayed_ack
        return data

    def close(self) -> None:
        """Half-close: send FIN after the queued data. Idempotent."""
        if self.state is S.PENDING:
            raise LocalProtocolError("refuse or accept a pending connection, don't close it")
        if self._close_requested or self.state not in SENDING:
            return
        self._close_requested = True
        if self.state is S.SYN_RECEIVED:
            return  # RFC 9293 §3.10.4: queued until ESTABLISHED
        self._transition(Trigger.APP_CLOSE)
        self._fin_queued = True

    def close_input(self) -> None:
        """The application will read no more (a full close, like Linux ``close()``).

        Unread data now, or new data later, aborts the connection with RST, as Linux
        does (RFC 9293 §3.10.4 leaves it open; RFC 2525 §2.17 recommends it).
        """
        self._input_closed = True
        if self._rcvbuf and self.state is not S.CLOSED:
            self.abort()
        elif self.state is S.FIN_WAIT_2:
            self._close_at = self._last_rx + self.config.fin_wait_2_timeout

    def abort(self) -> None:
        """Reset the connection: RST out, CLOSED (RFC 9293 §3.10.5)."""
        if self.state is S.CLOSED:
            return
        if self.state is S.PENDING:
            self.refuse()
            return
        self._queue_rst()
        self._transition(Trigger.ABORT)
        self._finish(None)

    # ------------------------------------------------------------------ segment arrival

    def receive(self, segment: TcpSegment, now: float) -> None:
        """Process one segment from the peer (RFC 9293 §3.10.7)."""
        state = self.state
        if state is S.CLOSED:
            return
        if state is S.PENDING:
            self._receive_pending(segment)
            return
        try:
            self._receive_synchronized(segment, now)
        except ProtocolViolation as exc:
            self._reset(str(exc), send_rst=True)

    def _receive_pending(self, segment: TcpSegment) -> None:
        # The peer's SYN is parked. A retransmitted SYN changes nothing; an RST in its
        # window means the peer gave up (e.g. a connect timeout): forget it.
        if segment.flags & RST and unwrap(segment.seq, self.irs) == self.irs + 1:
            self._transition(Trigger.RECV_RST)
            self._finish(ConnectionReset(reason="connection reset by peer"))

    def _receive_synchronized(self, seg: TcpSegment, now: float) -> None:
        self._last_rx = now
        self._keepalive_probes = 0
        self._persist_unanswered = 0
        rcv_nxt = self.rcv_nxt
        seq = unwrap(seg.seq, rcv_nxt)
        flags = seg.flags
        payload = seg.payload
        # PAWS (RFC 7323 §5.3): an old timestamp marks an old duplicate.
        ts = seg.timestamps
        if self.ts_ok and ts is not None and not flags & RST and _ts_before(ts[0], self.ts_recent):
            self._queue_ack(now)
            return
        seg_len = len(payload) + (flags & SYN != 0) + (flags & FIN != 0)
        wnd = self._rcv_edge - rcv_nxt
        if not self._acceptable(seq, seg_len, wnd):
            if wnd == 0 and seq == rcv_nxt and flags & ACK:
                # A zero window accepts no text, but ACKs and RSTs still count (§3.10.7.4);
                # the answer tells the peer the window is still closed.
                payload, flags = b"", flags & ~FIN
                self._ack_due = True
            else:
                self._unacceptable(seg, seq, now)
                return
        if flags & RST:
            self._receive_rst(seq, now)
            return
        if flags & SYN:
            # RFC 5961 §4.2: a SYN in a synchronized connection gets a challenge ACK.
            self._challenge_ack(now)
            return
        if not flags & ACK:
            return  # RFC 9293 §3.10.7.4 fifth: "if the ACK bit is off, drop the segment"
        if self.state is S.SYN_RECEIVED and not self._ack_of_syn(seg, now):
            return
        if not self._process_ack(seg, seq, now) or self.state is S.CLOSED:
            return
        if ts is not None and self.ts_ok and seq <= self._last_ack_sent:
            self.ts_recent = ts[0]  # RFC 7323 §4.3 (2)
        if payload:
            self._receive_text(seq, payload, now)
            if self.state is S.CLOSED:
                return
        if flags & FIN and seq + len(payload) <= self._rcv_edge:
            self._rcv_fin_seq = seq + len(payload)
        self._maybe_consume_fin(now)

    def _acceptable(self, seq: int, seg_len: int, wnd: int) -> bool:
        """The segment acceptability test of RFC 9293 §3.10.7.4 (the four cases)."""
        nxt = self.rcv_nxt
        if seg_len == 0:
            return seq == nxt if wnd == 0 else nxt <= seq < nxt + wnd
        if wnd == 0:
            return False
        last = seq + seg_len - 1
        return nxt <= seq < nxt + wnd or nxt <= last < nxt + wnd

    def _unacceptable(self, seg: TcpSegment, seq: int, now: float) -> None:
        if seg.flags & RST:
            return  # never answer an RST
        if self.state is S.SYN_RECEIVED and seg.flags & SYN and seq == self.irs:
            self._syn_due = True  # the peer lost our SYN-ACK: send it again
            return
        if self.state is S.TIME_WAIT and seg.flags & FIN:
            self._close_at = now + 2 * self.config.msl  # restart 2 MSL (§3.10.7.4 eighth)
        self._queue_ack(now)

    def _receive_rst(self, seq: int, now: float) -> None:
        # RFC 5961 §3.2: only an RST exactly at RCV.NXT resets; one merely inside the
        # window gets a challenge ACK, so a blind attacker must guess the exact number.
        if seq == self.rcv_nxt or self.state is S.SYN_RECEIVED:
            self._transition(Trigger.RECV_RST)
            self._finish(ConnectionReset(reason="connection reset by peer"))
        else:
            self._challenge_ack(now)

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 §7: challenge ACKs are rate-limited, so forged RSTs and SYNs cannot
        turn the endpoint into an ACK amplifier."""
        if now - self._challenge_since >= 1.0:
            self._challenge_since, self._challenge_count = now, 0
        if self._challenge_count < _CHALLENGE_ACKS_PER_SECOND:
            self._challenge_count += 1
            self._queue_ack(now)

    def _ack_of_syn(self, seg: TcpSegment, now: float) -> bool:
        """SYN-RECEIVED: an acceptable ACK completes the handshake (§3.10.7.4 fifth)."""
        ack = unwrap(seg.ack, self.snd_una)
        if not self.snd_una < ack <= self.snd_max:
            self._ctrl.append(
                TcpSegment(
                    src_port=self.local_port, dst_port=self.remote_port, seq=seg.ack, flags=RST
                )
            )
            return False
        self._transition(Trigger.SYN_ACKED)
        self._events.append(Established())
        if self._close_requested:
            self._transition(Trigger.APP_CLOSE)
            self._fin_queued = True
        return True

    def _process_ack(self, seg: TcpSegment, seq: int, now: float) -> bool:
        """The ACK field (RFC 9293 §3.10.7.4 fifth, RFC 5681, RFC 6675). False: drop it."""
        ack = unwrap(seg.ack, self.snd_una)
        if ack > self.snd_max:
            self._queue_ack(now)  # acknowledges something not yet sent
            return False
        if ack < self.snd_una - self.max_snd_wnd:
            self._queue_ack(now)  # RFC 5961 §5.2: far too old
            return False
        window = seg.window << self.snd_wscale
        window_changed = window_opened = False
        # Sent beyond the peer's window as it stands: it shrank the window (RFC 9293
        # §3.8.6 discourages it; a receiver short of buffer memory does it anyway).
        shrunk = self.snd_una + self.snd_wnd < self.snd_max
        if self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack):
            window_changed = window != self.snd_wnd
            window_opened = window > self.snd_wnd
            self.snd_wnd = window
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            self.max_snd_wnd = max(self.max_snd_wnd, window)
            if window:
                self._persist_at = None
                self._persist_backoff = 0
        if seg.sack_blocks and self.sack_ok:
            self._record_sack(seg.sack_blocks, ack)
        if ack > self.snd_una:
            self._on_new_ack(ack, seg, now)
        elif (
            ack == self.snd_una
            and self.snd_max > self.snd_una
            and not seg.payload
            and not seg.flags & (SYN | FIN)
            and (not window_changed or seg.sack_blocks)
        ):
            self._on_duplicate_ack()  # RFC 5681 §2, "DUPLICATE ACKNOWLEDGMENT"
        if window_opened and ack == self.snd_una < self.snd_max and (shrunk or self._retries):
            self._resend_after_stall(now)
        if self._scoreboard and self._scoreboard.is_sacked(self.snd_una):
            self._on_reneging(now)
        self._check_sack_loss()
        return True

    def _resend_after_stall(self, now: float) -> None:
        """The peer's window opens again, acknowledging nothing, while we have data out
        that it had shrunk its window below, or after our timer fired: it dropped that
        data (Linux does when its receive buffer memory runs out, even inside the window
        it advertised). Resend from SND.UNA now, not after an RTO (200 ms, or seconds
        once backed off). Only a window that grew triggers this: the peer's answer to a
        segment it drops carries the same window, so no ACK ping-pong. Receiver memory
        is no congestion: cwnd stays (after a timeout it is one segment already)."""
        if not self._in_recovery:
            self._in_recovery = self._recovery_after_timeout = True
            self._recovery_point = self.snd_max
        self._rxt_next = self.snd_una
        self._rxt_end = max(self._rxt_end, self.snd_max)
        self._force_rxt = True
        self._rto_at = now + self._rtt.rto

    def _on_reneging(self, now: float) -> None:
        """The cumulative ACK stops at data the peer SACKed: it discarded it (RFC 2018
        §8 allows that; Linux prunes its out-of-order queue when the receive buffer
        overflows). Forget every SACK and retransmit from SND.UNA after a short wait,
        as Linux does (tcp_check_sack_reneging), so a late ACK still in flight can
        arrive first. The data stays in our buffer until cumulatively acknowledged."""
        self._scoreboard.clear()
        self._rxt_next = self.snd_una
        srtt = self._rtt.srtt or 0.0
        self._rto_at = now + max(srtt / 2, _RENEGING_DELAY)

    def _record_sack(self, blocks: tuple[tuple[int, int], ...], ack: int) -> None:
        una = max(ack, self.snd_una)
        for left, right in blocks:
            start = unwrap(left, una)
            end = unwrap(right, una)
            # Only blocks inside what we sent and above the cumulative ACK are news
            # (RFC 2018 §3; RFC 6675 §4 ignores the rest).
            if una <= start < end <= self.snd_max:
                self._scoreboard.add(start, end)

    def _on_new_ack(self, ack: int, seg: TcpSegment, now: float) -> None:
        acked = ack - self.snd_una - (self.snd_una == self.iss)  # the SYN is no data
        self._sample_rtt(ack, seg, now)
        self.snd_una = ack
        self._sndbuf.acknowledge(ack)
        self._scoreboard.acknowledge(ack)
        self._retries = 0
        self._dupacks = 0
        if not self._in_recovery or self._recovery_after_timeout:
            # After a timeout, slow start again from one segment (RFC 5681 §3.1, (5)):
            # cwnd grows with each ACK while the rest of the lost flight goes out.
            self._cc.on_ack(acked)
        if self._in_recovery:
            if ack >= self._recovery_point:
                self._in_recovery = False  # full ACK: recovery is over (RFC 6582 §3.2 (3))
                if not self._recovery_after_timeout:
                    self._cc.on_recovery_exit()
            else:
                self._rxt_next = max(self._rxt_next, ack)
                if not self.sack_ok:
                    # NewReno partial ACK (RFC 6582 §3.2 (3)): resend the next hole.
                    self._rxt_next, self._rxt_end = ack, ack + self.send_mss
        # RFC 6298 (5.2), (5.3): stop the timer when all is acknowledged, else restart.
        self._rto_at = None if self.snd_una == self.snd_max else now + self._rtt.rto
        if self._fin_sent and ack == self._fin_seq + 1:
            self._on_fin_acked(now)
        if self._send_blocked and self._sndbuf.free > 0 and self.state in SENDING:
            self._send_blocked = False
            self._events.append(Writable())

    def _sample_rtt(self, ack: int, seg: TcpSegment, now: float) -> None:
        ts = seg.timestamps
        if self.ts_ok and ts is not None and ts[1]:
            # RFC 7323 §4.1: the echoed timestamp dates the acknowledged transmission.
            elapsed = (self._ts_clock(now) - ts[1]) & SEQ_MASK
            if elapsed < _HALF:
                self._rtt.sample(elapsed / 1000)
        elif self._timed_seq is not None and ack >= self._timed_seq:
            self._rtt.sample(now - self._timed_at)  # Karn: never a retransmitted one
            self._timed_seq = None

    def _on_fin_acked(self, now: float) -> None:
        state = self._transition(Trigger.FIN_ACKED)
        if state is S.TIME_WAIT:
            self._enter_time_wait(now)
        elif state is S.CLOSED:
            self._finish(None)
        elif state is S.FIN_WAIT_2 and self._input_closed:
            self._close_at = now + self.config.fin_wait_2_timeout

    def _on_duplicate_ack(self) -> None:
        self._dupacks += 1
        if self._in_recovery:
            if not self.sack_ok:
                self._cc.cwnd += self.send_mss  # RFC 6582 §3.2 (4): inflate per dup ACK
            return
        if self._dupacks >= 3:
            self._enter_fast_recovery()

    def _check_sack_loss(self) -> None:
        """RFC 6675 §5: holes, or three segments' worth SACKed above one, mean loss."""
        if not self._scoreboard:
            return
        highest = self._scoreboard.highest
        assert highest is not None
        if self._in_recovery:
            self._rxt_end = max(self._rxt_end, highest)
        elif self._scoreboard.sacked_bytes >= 3 * self.send_mss:
            self._enter_fast_recovery()

    def _receive_text(self, seq: int, payload: bytes | memoryview, now: float) -> None:
        """Segment text in ESTABLISHED/FIN-WAIT-1/FIN-WAIT-2 (§3.10.7.4 seventh)."""
        if self.state not in RECEIVING or self._fin_received:
            return  # after the peer's FIN there is no more text
        if self._input_closed:
            self._reset("data arrived after the application closed", send_rst=True)
            return
        rcvbuf = self._rcvbuf
        start = max(seq, rcvbuf.nxt)
        end = min(seq + len(payload), self._rcv_edge)
        if self._rcv_fin_seq is not None:
            end = min(end, self._rcv_fin_seq)  # nothing exists beyond the FIN
        if end <= start:
            self._queue_ack(now)
            return
        was_empty = not rcvbuf
        if start != seq or end != seq + len(payload):
            payload = payload[start - seq : end - seq]
        if start > rcvbuf.nxt:
            rcvbuf.insert(start, payload)
            # Out of order: ACK at once with SACK so the peer sees the hole (RFC 5681 §4.2).
            self._queue_ack(now)
            return
        filled_hole = rcvbuf.ooo_bytes > 0
        rcvbuf.insert(start, payload)
        if filled_hole:
            self._queue_ack(now)  # a hole filled: ACK at once too (RFC 5681 §4.2)
        elif self.rcv_nxt - self._last_ack_sent >= 2 * self.config.mss:
            self._ack_due = True  # at least every second full-sized segment (RFC 5681 §4.2)
        elif self._delack_at is None:
            self._delack_at = now + self.config.delayed_ack  # the answer may carry it
        if was_empty and rcvbuf:
            self._events.append(Readable())

    def _maybe_consume_fin(self, now: float) -> None:
        fin_seq = self._rcv_fin_seq
        if fin_seq is None or self._fin_received or self._rcvbuf.nxt != fin_seq:
            return
        if self.state not in RECEIVING:
            return
        self._fin_received = True
        self._ack_due = True
        state = self._transition(Trigger.RECV_FIN)
        self._events.append(RemoteClosed())
        if state is S.TIME_WAIT:
            self._enter_time_wait(now)

    def _enter_time_wait(self, now: float) -> None:
        # RFC 9293 §3.10.7.4: TIME-WAIT holds 2 MSL; nothing else is pending.
        self._rto_at = self._persist_at = None
        self._close_at = now + 2 * self.config.msl
