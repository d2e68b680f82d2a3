"""The manager's dials report a peer that never answers as a timeout, after the
configured time (trio's virtual clock), and close the socket they tried with."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from manager._dialer import DialError, DialFailure, dial_tcp_socket


async def test_a_peer_that_never_answers_is_a_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A listener whose accept queue is full drops further SYNs (loopback, no answer).
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        queued.connect(listener.getsockname())
        host, port = listener.getsockname()
        start = trio.current_time()
        with pytest.raises(DialError) as caught:
            await dial_tcp_socket(host, port, connect_timeout=7)
        assert caught.value.failure is DialFailure.TIMEOUT
        assert trio.current_time() - start == pytest.approx(7)


async def test_a_connected_socket_is_nonblocking_and_nodelay() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        sock = await dial_tcp_socket(*listener.getsockname())
        with sock:
            assert sock.getblocking() is False
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert sock.getpeername() == listener.getsockname()
