"""UDP flow table: 5-tuple keys, bounded queues, idle expiry (sans-IO, hand-driven time)."""

from __future__ import annotations

from tpengine.netstack import UdpFlowTable

A = (b"\xc0\x00\x02\x01", 5353, b"\x0a\x4d\x00\x35", 53)
B = (b"\xc0\x00\x02\x01", 5354, b"\x0a\x4d\x00\x35", 53)


def test_flows_are_keyed_by_five_tuple() -> None:
    table = UdpFlowTable(idle_timeout=10.0)
    flow_a, new_a = table.datagram_received(A, b"one", 0.0)
    again, new_again = table.datagram_received(A, b"two", 1.0)
    flow_b, new_b = table.datagram_received(B, b"three", 1.0)
    assert new_a and not new_again and new_b
    assert again is flow_a and flow_b is not flow_a
    assert list(flow_a.inbound) == [b"one", b"two"]
    assert len(table) == 2


def test_idle_flows_expire_exactly_on_time() -> None:
    table = UdpFlowTable(idle_timeout=10.0)
    flow, _ = table.datagram_received(A, b"q", 0.0)
    table.datagram_received(B, b"q", 0.0)
    table.datagram_received(A, b"q", 4.0)  # activity moves A's expiry to 14
    table.touch(B, 6.0)  # so does a reply on B: 16
    assert table.get_timer() == 10.0
    assert table.expire(9.99) == []
    assert table.expire(10.0) == []  # both were active since: re-armed
    assert table.get_timer() == 14.0
    (expired,) = table.expire(14.0)
    assert expired is flow and flow.closed
    assert table.get(A) is None and table.get(B) is not None
    assert [f.key for f in table.expire(16.0)] == [B]
    assert table.get_timer() is None


def test_queue_is_bounded_and_drops_count() -> None:
    table = UdpFlowTable(max_queued=2)
    for i in range(5):
        flow, _ = table.datagram_received(A, bytes([i]), 0.0)
    assert list(flow.inbound) == [b"\x00", b"\x01"]
    assert flow.dropped == 3
