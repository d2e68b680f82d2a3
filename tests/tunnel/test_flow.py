"""Flow-control invariants under hypothesis: random interleavings of sends, partial
deliveries, reads and window updates never exceed a window and never deadlock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tpengine.tunnel import (
    ConnectionTerminated,
    CreditAvailable,
    DataReceived,
    Destination,
    HandshakeCompleted,
    MuxConfig,
    MuxConnection,
    Role,
    StreamAccepted,
    StreamDialed,
    StreamEnded,
)

CFG = MuxConfig(stream_window=3000, connection_window=5000, max_frame_size=1024)
STREAMS = 3


class Harness:
    """Client sends on STREAMS streams; the wire delivers in arbitrary pieces; the
    server application reads arbitrary amounts. Checks invariants after every step."""

    def __init__(self, cfg: MuxConfig = CFG) -> None:
        self.cfg = cfg
        self.client = MuxConnection(Role.CLIENT, cfg, now=0.0)
        self.server = MuxConnection(Role.SERVER, cfg, now=0.0)
        self.wire_up = bytearray()  # client → server, not yet delivered
        self.wire_down = bytearray()
        self.to_send = [bytes((i * 37 + k) % 251 for k in range(9000)) for i in range(STREAMS)]
        self.sent = [0] * STREAMS
        self.buffered: list[list[bytes]] = [[] for _ in range(STREAMS)]
        self.received = [bytearray() for _ in range(STREAMS)]
        self.ended = [False] * STREAMS
        self.deliver_all()
        self.sids = [
            self.client.open_stream(Destination(host="h", port=i + 1)) for i in range(STREAMS)
        ]
        self.deliver_all()
        for sid in self.sids:
            self.server.accept_stream(sid)
        self.deliver_all()

    def send(self, i: int, n: int) -> None:
        sid = self.sids[i]
        chunk = self.to_send[i][self.sent[i] : self.sent[i] + n]
        if not chunk:
            return
        credit = self.client.send_credit(sid)
        taken = self.client.send_data(sid, chunk)
        assert taken == min(len(chunk), credit)  # never queues beyond the credit
        self.sent[i] += taken
        if self.sent[i] == len(self.to_send[i]):
            self.client.send_eof(sid)

    def deliver(self, up: int, down: int) -> None:
        self.wire_up += self.client.data_to_send()
        self.wire_down += self.server.data_to_send()
        if up:
            self.server.receive_data(bytes(self.wire_up[:up]), 0.0)
            del self.wire_up[:up]
        if down:
            self.client.receive_data(bytes(self.wire_down[:down]), 0.0)
            del self.wire_down[:down]
        self.collect()

    def deliver_all(self) -> None:
        self.deliver(1 << 30, 1 << 30)
        self.deliver(1 << 30, 1 << 30)

    def read(self, i: int, n: int) -> None:
        buf = self.buffered[i]
        got = 0
        while buf and got < n:
            chunk = buf.pop(0)
            take = chunk[: n - got]
            if len(take) < len(chunk):
                buf.insert(0, chunk[len(take) :])
            self.received[i] += take
            got += len(take)
        if got:
            self.server.acknowledge_received(self.sids[i], got)

    def collect(self) -> None:
        for end in (self.client, self.server):
            while (event := end.next_event()) is not None:
                assert not isinstance(event, ConnectionTerminated), event
                if isinstance(event, DataReceived):
                    self.buffered[self.sids.index(event.stream_id)].append(event.data)
                elif isinstance(event, StreamEnded):
                    self.ended[self.sids.index(event.stream_id)] = True
                else:
                    allowed = (CreditAvailable, HandshakeCompleted, StreamDialed, StreamAccepted)
                    assert isinstance(event, allowed), event
        for buf in self.buffered:  # the receiver never holds more than one window
            assert sum(map(len, buf)) <= self.cfg.stream_window
        # ... nor, over all streams, more than its budget plus the connection window.
        unread = sum(sum(map(len, buf)) for buf in self.buffered)
        assert unread == self.server.unread
        assert unread <= self.cfg.receive_budget + self.cfg.connection_window

    def finish(self) -> None:
        """Liveness: a reader that keeps reading lets every byte through."""
        for _ in range(1000):
            for i in range(STREAMS):
                self.send(i, 1 << 20)
            self.deliver_all()
            for i in range(STREAMS):
                self.read(i, 1 << 20)
            self.deliver_all()
            if all(self.ended) and not any(self.buffered):
                break
        assert [bytes(r) for r in self.received] == self.to_send
        assert all(self.ended)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, STREAMS - 1), st.integers(1, 4000)),
        st.tuples(st.just("deliver"), st.integers(0, 3000), st.integers(0, 200)),
        st.tuples(st.just("read"), st.integers(0, STREAMS - 1), st.integers(1, 2500)),
    ),
    max_size=60,
)


TIGHT = MuxConfig(
    stream_window=3000, connection_window=5000, max_frame_size=1024, receive_budget=4000
)


@settings(max_examples=150)
@given(ops, st.sampled_from([CFG, TIGHT]))
def test_random_interleavings_respect_windows_and_finish(steps, cfg) -> None:  # type: ignore[no-untyped-def]
    h = Harness(cfg)
    for op, a, b in steps:
        if op == "send":
            h.send(a, b)
        elif op == "deliver":
            h.deliver(a, b)
        else:
            h.read(a, b)
        # The sender's queue holds no more than the connection window of DATA.
        assert h.client.pending_output <= CFG.connection_window + 64 * 1024
    h.finish()


def test_stalled_stream_does_not_stall_the_others() -> None:
    h = Harness()
    for _ in range(200):  # stream 0 is never read; 1 and 2 are
        for i in range(STREAMS):
            h.send(i, 1 << 20)
        h.deliver_all()
        h.read(1, 1 << 20)
        h.read(2, 1 << 20)
        h.deliver_all()
    assert h.ended[1] and h.ended[2] and not h.ended[0]
    assert bytes(h.received[1]) == h.to_send[1]
    assert sum(map(len, h.buffered[0])) == CFG.stream_window  # exactly its window, held
    assert h.sent[0] == CFG.stream_window  # and the sender queued nothing more


def test_many_stalled_readers_slow_the_connection_instead_of_growing_memory() -> None:
    h = Harness(TIGHT)
    for _ in range(300):  # streams 0 and 1 are never read: 6000 bytes > the 4000 budget
        for i in range(STREAMS):
            h.send(i, 1 << 20)
        h.deliver_all()
        h.read(2, 1 << 20)
        h.deliver_all()
    assert h.ended[2] and bytes(h.received[2]) == h.to_send[2]  # still flows, read by read
    assert h.server.unread == 2 * TIGHT.stream_window
    h.finish()  # and once the readers wake up, everything arrives
