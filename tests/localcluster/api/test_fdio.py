"""The relay's lean TLS stream against a real TLS client on loopback: it takes over the
server's trio.SSLStream after the handshake and keeps the bytes, their order and the end
intact, with concurrent senders."""

from __future__ import annotations

import random
import ssl

import trio

from localcluster.apiserver._fdio import LeanTLS, lean_tls, read_fd, write_fd
from localcluster.apiserver._server import server_ssl_context
from localcluster.pki import Pki
from tests._tcp import trio_tcp_pair


async def _tls_pair(pki: Pki) -> tuple[trio.SSLStream[trio.SocketStream], trio.abc.Stream]:
    client_tcp, server_tcp = trio_tcp_pair()
    client_ctx = ssl.create_default_context(cadata=pki.ca_cert_pem.decode())
    client = trio.SSLStream(client_tcp, client_ctx, server_hostname="127.0.0.1")
    server = trio.SSLStream(
        server_tcp, server_ssl_context(pki), server_side=True, https_compatible=True
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    await client.send_all(b"GET / HTTP/1.1\r\n\r\n")
    assert await server.receive_some() == b"GET / HTTP/1.1\r\n\r\n"  # trio's, before
    return client, lean_tls(server)


async def test_bytes_both_ways_with_two_senders_and_the_end(pki: Pki) -> None:
    client, server = await _tls_pair(pki)
    assert isinstance(server, LeanTLS)
    rng = random.Random(3)
    up = rng.randbytes(3_000_000)
    messages = [bytes([i]) * rng.randrange(1, 200_000) for i in range(2, 40)]
    got: dict[str, bytes] = {}

    async def upload() -> None:
        await client.send_all(up)
        await client.aclose()  # https_compatible: the end, with or without close_notify

    async def server_reads() -> None:
        data = bytearray()
        while chunk := await server.receive_some(100_000):
            data += chunk
        got["up"] = bytes(data)

    async def sender(mine: list[bytes]) -> None:
        for message in mine:
            await server.send_all(message)

    async def client_reads() -> None:
        data = bytearray()
        want = sum(map(len, messages))
        while len(data) < want:
            data += await client.receive_some(1 << 20)
        got["down"] = bytes(data)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_reads)
            nursery.start_soon(sender, messages[0::2])
            nursery.start_soon(sender, messages[1::2])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(upload)
            nursery.start_soon(server_reads)
    assert got["up"] == up
    # Each message arrives whole (never interleaved with the other sender's), in order.
    down, pos, evens, odds = got["down"], 0, messages[0::2], messages[1::2]
    while pos < len(down):
        mine = evens if evens and down[pos] == evens[0][0] else odds
        message = mine.pop(0)
        assert down[pos : pos + len(message)] == message
        pos += len(message)
    assert not evens and not odds
    await server.aclose()


async def test_a_plain_stream_is_left_as_it_is() -> None:
    a, b = trio_tcp_pair()
    assert lean_tls(a) is a
    await write_fd(a.socket.fileno(), b"x" * 10)
    assert await read_fd(b.socket.fileno()) == b"x" * 10
    await a.aclose()
    assert await read_fd(b.socket.fileno()) == b""
    await b.aclose()
