"""Connected TCP pairs on loopback for tests of stream code (a reset needs TCP:
socketpair(2) has none)."""

from __future__ import annotations

import socket

import trio


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected, nonblocking stdlib sockets."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        near = socket.create_connection(listener.getsockname())
        far, _ = listener.accept()
    near.setblocking(False)
    far.setblocking(False)
    return near, far


def trio_tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """The same as two trio SocketStreams."""
    near, far = tcp_pair()
    return (
        trio.SocketStream(trio.socket.from_stdlib_socket(near)),
        trio.SocketStream(trio.socket.from_stdlib_socket(far)),
    )
