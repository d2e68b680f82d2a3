"""Connected TCP pairs on loopback for tests of stream code (a reset needs TCP:
socketpair(2) has none), and the two reads such tests keep doing."""

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


async def receive_all(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything ``stream`` gives until its end."""
    out = bytearray()
    while chunk := await stream.receive_some():
        out += chunk
    return bytes(out)


async def receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    """The next ``n`` bytes of ``stream``; fails if it ends first."""
    got = bytearray()
    while len(got) < n:
        chunk = await stream.receive_some(n - len(got))
        assert chunk, f"end of stream after {len(got)} of {n} bytes"
        got += chunk
    return bytes(got)
