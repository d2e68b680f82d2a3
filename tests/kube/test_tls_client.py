"""The port-forward's TLS client stream against trio's TLS server on loopback."""

from __future__ import annotations

import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from localcluster.pki import issue_server_cert, make_ca
from tpengine.kube._tls import TlsClientStream

Handler = Callable[[trio.SSLStream[trio.SocketStream]], Awaitable[None]]


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context for 127.0.0.1, client context trusting its CA)."""
    ca_cert, ca_key = make_ca("test-ca")
    cert, key = issue_server_cert(ca_cert, ca_key, ["127.0.0.1", "api.test"])
    d = tmp_path_factory.mktemp("pki")
    (d / "cert.pem").write_bytes(cert)
    (d / "key.pem").write_bytes(key)
    (d / "ca.pem").write_bytes(ca_cert)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(d / "cert.pem", d / "key.pem")
    client = ssl.create_default_context(cafile=str(d / "ca.pem"))
    return server, client


@asynccontextmanager
async def tls_server(server_ctx: ssl.SSLContext, handler: Handler) -> AsyncIterator[int]:
    async def serve(tcp: trio.SocketStream) -> None:
        tls = trio.SSLStream(tcp, server_ctx, server_side=True)
        try:
            await handler(tls)
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        yield int(listener.socket.getsockname()[1])
        nursery.cancel_scope.cancel()


async def _client(port: int, ctx: ssl.SSLContext, name: str = "127.0.0.1") -> TlsClientStream:
    tls = TlsClientStream(await trio.open_tcp_stream("127.0.0.1", port), ctx, name)
    await tls.do_handshake()
    return tls


async def _echo(tls: trio.SSLStream[trio.SocketStream]) -> None:
    while data := await tls.receive_some(65536):
        await tls.send_all(data)
    await tls.aclose()


async def test_bytes_both_ways(contexts) -> None:  # type: ignore[no-untyped-def]
    server_ctx, client_ctx = contexts
    payload = random.Random(7).randbytes(3_000_000)
    async with tls_server(server_ctx, _echo) as port:
        tls = await _client(port, client_ctx)
        got = bytearray()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tls.send_all, payload)
            while len(got) < len(payload):
                got += await tls.receive_some()
        assert bytes(got) == payload
        await tls.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await tls.send_all(b"x")


async def test_records_already_here_come_out_in_one_receive(contexts) -> None:  # type: ignore[no-untyped-def]
    server_ctx, client_ctx = contexts
    blob = random.Random(8).randbytes(1_000_000)

    async def blob_then_close(tls: trio.SSLStream[trio.SocketStream]) -> None:
        await tls.receive_some()
        await tls.send_all(blob)
        await tls.aclose()

    async with tls_server(server_ctx, blob_then_close) as port:
        tls = await _client(port, client_ctx)
        await tls.send_all(b"go")
        await trio.testing.wait_all_tasks_blocked()  # the server filled the socket buffers
        first = await tls.receive_some()
        assert len(first) > 16384  # more than one TLS record (RFC 8446 §5.1: ≤ 16 KiB each)
        got = bytearray(first)
        while chunk := await tls.receive_some():
            got += chunk
        assert bytes(got) == blob
        await tls.aclose()


async def test_the_servers_close_notify_is_end_of_stream(contexts) -> None:  # type: ignore[no-untyped-def]
    server_ctx, client_ctx = contexts

    async def hello_and_close(tls: trio.SSLStream[trio.SocketStream]) -> None:
        await tls.send_all(b"hello")
        await tls.aclose()

    async with tls_server(server_ctx, hello_and_close) as port:
        tls = await _client(port, client_ctx)
        got = b""
        while chunk := await tls.receive_some(2):
            assert len(chunk) <= 2
            got += chunk
        assert got == b"hello"
        await tls.aclose()


async def test_a_wrong_name_or_an_untrusted_server_fails_the_handshake(contexts) -> None:  # type: ignore[no-untyped-def]
    server_ctx, client_ctx = contexts
    async with tls_server(server_ctx, _echo) as port:
        with pytest.raises(trio.BrokenResourceError, match="TLS handshake failed"):
            await _client(port, client_ctx, name="other.test")
        with pytest.raises(trio.BrokenResourceError, match="TLS handshake failed"):
            await _client(port, ssl.create_default_context(), name="api.test")
        tls = await _client(port, client_ctx, name="api.test")  # a SAN it has: fine
        await tls.send_all(b"ok")
        assert await tls.receive_some() == b"ok"
        await tls.aclose()


async def test_it_is_a_trio_stream(contexts) -> None:  # type: ignore[no-untyped-def]
    """trio's generic stream checks (busy detection, close semantics) on an echo pair."""
    server_ctx, client_ctx = contexts
    async with tls_server(server_ctx, _echo) as port:
        tls = await _client(port, client_ctx)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tls.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await tls.receive_some()
            await tls.send_all(b"x")
        await tls.aclose()
