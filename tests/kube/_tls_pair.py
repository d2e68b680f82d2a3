"""A TLS connection on a loopback TCP pair: our TLS client (over FdStream, as the
port-forward uses it) and trio's TLS server, for tests of what runs over it."""

from __future__ import annotations

import functools
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from localcluster.pki import issue_server_cert, make_ca
from tests._tcp import trio_tcp_pair
from tpengine.fdstream import FdStream
from tpengine.kube._tls import TlsClientStream

__all__ = ["contexts", "small_buffers", "tls_pair"]

#: Small kernel buffers, so that a socket fills after a few records.
SMALL_BUFFER = 32768


@functools.cache
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context for 127.0.0.1, client context trusting its CA), made once."""
    ca_cert, ca_key = make_ca("test-ca")
    cert, key = issue_server_cert(ca_cert, ca_key, ["127.0.0.1"])
    with tempfile.TemporaryDirectory(prefix="pfn-pki-") as name:
        d = Path(name)
        (d / "cert.pem").write_bytes(cert)
        (d / "key.pem").write_bytes(key)
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(d / "cert.pem", d / "key.pem")
    client = ssl.create_default_context(cadata=ca_cert.decode())
    return server, client


def small_buffers(near: trio.SocketStream, far: trio.SocketStream) -> None:
    near.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    far.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)


@asynccontextmanager
async def tls_pair(
    *, small: bool = True
) -> AsyncIterator[tuple[TlsClientStream, trio.SSLStream[trio.SocketStream], trio.SocketStream]]:
    """(our TLS client over FdStream, trio's TLS server, the server's TCP stream); with
    ``small``, small kernel buffers on the client's direction."""
    server_ctx, client_ctx = contexts()
    near, far = trio_tcp_pair()
    if small:
        small_buffers(near, far)
    client = TlsClientStream(FdStream(near), client_ctx, "127.0.0.1")
    server = trio.SSLStream(far, server_ctx, server_side=True)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            await client.do_handshake()
        yield client, server, far
    finally:
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(far)
