"""Random API calls on both ends: only misuse raises (LocalProtocolError), the connection
never breaks, and once everything is delivered both ends agree on every stream's state."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tpengine.tunnel import (
    ConnectionTerminated,
    Destination,
    ErrorCode,
    LocalProtocolError,
    MuxConfig,
    RejectReason,
    StreamState,
)

S = StreamState
MIRROR = {
    S.OPEN: S.OPEN,
    S.LOCAL_CLOSED: S.REMOTE_CLOSED,
    S.REMOTE_CLOSED: S.LOCAL_CLOSED,
    S.CLOSED: S.CLOSED,
    S.DIALING: S.DIALED,
    S.DIALED: S.DIALING,
}

actions = st.lists(
    st.tuples(
        st.sampled_from(
            ["open", "accept", "reject", "data", "eof", "reset", "close", "pump", "read"]
        ),
        st.booleans(),  # which end acts: True = client
        st.integers(0, 7),  # which stream (index into the ids opened so far)
    ),
    max_size=40,
)


@settings(max_examples=200)
@given(actions)
def test_both_ends_agree_after_any_sequence(pair_cls, steps) -> None:  # type: ignore[no-untyped-def]
    pair = pair_cls(MuxConfig(stream_window=4096, max_frame_size=1024, connection_window=8192))
    ids: list[int] = []
    for action, client_acts, index in steps:
        end = pair.client if client_acts else pair.server
        sid = ids[index % len(ids)] if ids else 0
        try:
            if action == "open":
                ids.append(end.open_stream(Destination(host="10.0.0.1", port=80)))
            elif action == "accept" and ids:
                end.accept_stream(sid)
            elif action == "reject" and ids:
                end.reject_stream(sid, RejectReason.UNREACHABLE, "no route")
            elif action == "data" and ids:
                end.send_data(sid, b"d" * 3000)
            elif action == "eof" and ids:
                end.send_eof(sid)
            elif action == "reset" and ids:
                end.reset_stream(sid, ErrorCode.CANCEL, "")
            elif action == "close" and ids:
                end.close_stream(sid)
            elif action == "pump":
                pair.pump()
            elif action == "read" and ids:
                end.acknowledge_received(sid, 3000)
        except LocalProtocolError:
            pass  # misuse is refused locally and changes nothing
        for e in (pair.client, pair.server):
            events = pair.drain(e)
            assert not any(isinstance(ev, ConnectionTerminated) for ev in events), events
    pair.pump()
    for e in (pair.client, pair.server):
        assert not any(isinstance(ev, ConnectionTerminated) for ev in pair.drain(e))
    for sid in ids:
        c, s = pair.client.stream_state(sid), pair.server.stream_state(sid)
        assert MIRROR[c] is s, (sid, c, s)
