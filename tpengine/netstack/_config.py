"""Tunables of a TCP endpoint, fixed for its lifetime."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class TcpConfig:
    """Per-connection settings; the defaults suit a local TUN peer."""

    #: MSS we announce (RFC 9293 §3.7.1): the TUN's MTU minus 40 (IPv4) or 60 (IPv6).
    mss: int = 1460
    #: Bytes of in-order plus out-of-order data we hold for the local reader at most.
    receive_buffer: int = 1 << 20
    #: Bytes of unacknowledged plus unsent data we take from the local writer at most.
    send_buffer: int = 1 << 20
    #: Largest payload of one emitted segment. 0 means one MSS; a driver that can write
    #: GSO super-segments raises it (e.g. 65000) and the kernel splits them at the MSS.
    max_segment_payload: int = 0
    #: An ACK for less than two full segments waits this long for data to ride on
    #: (RFC 9293 §3.8.6.3, RFC 5681 §4.2: under 0.5 s, at least every second segment).
    delayed_ack: float = 0.002
    initial_rto: float = 1.0  # RFC 6298 (2.1)
    min_rto: float = 0.2  # RFC 6298 (2.4) says 1 s; Linux uses 200 ms
    max_rto: float = 60.0  # RFC 6298 (2.5)
    #: Consecutive retransmission timeouts before giving up (Linux tcp_retries2 = 15).
    max_retransmissions: int = 15
    #: SYN-ACK retransmissions before giving up (Linux tcp_synack_retries = 5).
    max_syn_retransmissions: int = 5
    #: A connection left PENDING this long (the engine never decided) is forgotten.
    pending_timeout: float = 60.0
    #: TIME-WAIT lasts 2*MSL (RFC 9293 §3.4.2). Our peer is the local kernel across a
    #: TUN, where no segment lingers for long, and a busy engine closes thousands of
    #: connections a second: a short MSL keeps TIME-WAIT state bounded (a new SYN may
    #: reuse the 4-tuple anyway, RFC 6191).
    msl: float = 2.0
    #: An orphaned FIN-WAIT-2 (both directions closed locally) ends after this long
    #: (Linux tcp_fin_timeout).
    fin_wait_2_timeout: float = 60.0
    #: Idle time before keepalive probes (RFC 9293 §3.8.4); None disables them.
    keepalive_idle: float | None = 120.0
    keepalive_interval: float = 15.0
    keepalive_count: int = 4
    window_scaling: bool = True  # RFC 7323 §2
    sack: bool = True  # RFC 2018
    timestamps: bool = True  # RFC 7323 §3
