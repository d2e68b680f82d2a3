"""A hand-driven TCP peer for sans-IO tests of ``TcpEndpoint``, and a constructor per state.

``Peer`` plays the kernel's side: it builds the segments a client would send (tracking
its own sequence numbers and what it has received), so tests read like packet traces.
"""

from __future__ import annotations

from dataclasses import replace

from tpengine.netstack import (
    ACK,
    FIN,
    RST,
    SYN,
    TcpConfig,
    TcpEndpoint,
    TcpSegment,
    TcpState,
)

CLIENT_PORT = 40000
SERVER_PORT = 80
PEER_ISS = 1000
OUR_ISS = 5000
MASK = 0xFFFFFFFF


class Peer:
    """The client side, as simple as possible: it ACKs what it is told to."""

    def __init__(
        self,
        *,
        iss: int = PEER_ISS,
        mss: int | None = 1460,
        wscale: int | None = 7,
        sack: bool = True,
        timestamps: bool = True,
        window: int = 65535,
    ) -> None:
        self.iss = iss
        self.snd_nxt = iss
        self.rcv_nxt = 0  # set from the SYN-ACK
        self.mss, self.wscale, self.sack, self.timestamps = mss, wscale, sack, timestamps
        self.window = window  # the raw window field it sends
        self.ts_val = 100
        self.ts_recent = 0
        self.received = bytearray()

    def syn(self) -> TcpSegment:
        seg = TcpSegment(
            src_port=CLIENT_PORT,
            dst_port=SERVER_PORT,
            seq=self.iss & MASK,
            flags=SYN,
            window=min(self.window, 0xFFFF),
            mss=self.mss,
            wscale=self.wscale,
            sack_permitted=self.sack,
            timestamps=(self.ts_val, 0) if self.timestamps else None,
        )
        self.snd_nxt = self.iss + 1
        return seg

    def segment(
        self,
        payload: bytes = b"",
        *,
        flags: int = ACK,
        seq: int | None = None,
        ack: int | None = None,
        window: int | None = None,
        sack: tuple[tuple[int, int], ...] = (),
        advance: bool = True,
    ) -> TcpSegment:
        """A segment from the peer; by default it moves the peer's SND.NXT on."""
        start = self.snd_nxt if seq is None else seq
        seg = TcpSegment(
            src_port=CLIENT_PORT,
            dst_port=SERVER_PORT,
            seq=start & MASK,
            ack=(self.rcv_nxt if ack is None else ack) & MASK,
            flags=flags,
            window=self.window if window is None else window,
            sack_blocks=tuple((s & MASK, e & MASK) for s, e in sack),
            timestamps=(self.ts_val, self.ts_recent) if self.timestamps else None,
            payload=payload,
        )
        if advance and seq is None:
            self.snd_nxt = start + seg.seg_len
        return seg

    def take(self, segments: list[TcpSegment]) -> None:
        """Absorb what the endpoint sent: in-order data, its FIN, its timestamps."""
        for seg in segments:
            if seg.flags & RST:
                continue
            if seg.timestamps is not None:
                self.ts_recent = seg.timestamps[0]
            if seg.flags & SYN:
                self.rcv_nxt = seg.seq + 1
                continue
            if seg.seq == self.rcv_nxt & MASK:
                self.received += seg.payload
                self.rcv_nxt += len(seg.payload) + (1 if seg.flags & FIN else 0)


def handshake(
    peer: Peer | None = None, *, config: TcpConfig | None = None, now: float = 0.0, rtt: float = 0.0
) -> tuple[TcpEndpoint, Peer]:
    """An ESTABLISHED endpoint and its peer (the SYN at ``now``, the ACK ``rtt`` later)."""
    peer = peer or Peer()
    ep = TcpEndpoint(peer.syn(), iss=OUR_ISS, now=now, config=config)
    ep.accept(now)
    synack = ep.segments_to_send(now)
    peer.take(synack)
    peer.ts_val += 1
    ep.receive(peer.segment(), now + rtt)
    assert ep.state is TcpState.ESTABLISHED
    return ep, peer


def endpoint_in(state: TcpState, *, config: TcpConfig | None = None) -> tuple[TcpEndpoint, Peer]:
    """A constructor per TCP state: drive a fresh endpoint there with real segments."""
    peer = Peer()
    config = config or TcpConfig(min_rto=0.2)
    if state in (TcpState.PENDING, TcpState.SYN_RECEIVED, TcpState.CLOSED):
        ep = TcpEndpoint(peer.syn(), iss=OUR_ISS, now=0.0, config=config)
        if state is TcpState.SYN_RECEIVED:
            ep.accept(0.0)
            peer.take(ep.segments_to_send(0.0))
        elif state is TcpState.CLOSED:
            ep.refuse()
        return ep, peer
    ep, peer = handshake(peer, config=config)
    if state is TcpState.ESTABLISHED:
        return ep, peer
    if state in (TcpState.CLOSE_WAIT, TcpState.LAST_ACK):
        ep.receive(peer.segment(flags=FIN | ACK), 0.0)
        peer.take(ep.segments_to_send(0.0))
        if state is TcpState.LAST_ACK:
            ep.close()
            peer.take(ep.segments_to_send(0.0))
        return ep, peer
    ep.close()  # FIN-WAIT-1, FIN-WAIT-2, CLOSING, TIME-WAIT
    fin = ep.segments_to_send(0.0)
    if state is TcpState.FIN_WAIT_1:
        return ep, peer
    if state is TcpState.CLOSING:
        ep.receive(peer.segment(flags=FIN | ACK), 0.0)  # crosses our FIN: not ACKing it
        peer.take(fin)
        return ep, peer
    peer.take(fin)
    ep.receive(peer.segment(), 0.0)  # ACK of our FIN
    if state is TcpState.TIME_WAIT:
        ep.receive(peer.segment(flags=FIN | ACK), 0.0)
    return ep, peer


def with_window(seg: TcpSegment, window: int) -> TcpSegment:
    return replace(seg, window=window)
