"""The netstack against the real peer: Linux's own TCP, in a namespace, through a TUN.

Each test opens a fresh namespace with a TUN routed to ``10.77.0.0/16`` and
``fd77::/64``, runs ``open_netstack`` on it, and plays the engine: port 1 is refused,
port 2 unreachable, everything else accepted and handed to a per-test handler. Kernel
sockets are made inside the namespace and driven from trio.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio.testing

from tests.netstack._netns import in_netns, open_test_tun
from tpengine import wire
from tpengine.netstack import Netstack, NetstackConfig, TcpConfig, TcpStream, open_netstack

pytestmark = pytest.mark.root

Handler = Callable[[TcpStream], Awaitable[None]]
REFUSED_PORT = 1
UNREACHABLE_PORT = 2


class Env:
    def __init__(self, stack: Netstack, netns: str) -> None:
        self.stack = stack
        self.netns = netns
        self.handler: Handler = echo_handler
        self.accepted: list[TcpStream] = []

    async def kernel_socket(
        self,
        family: socket.AddressFamily = socket.AF_INET,
        kind: int = socket.SOCK_STREAM,
        proto: int = 0,
    ) -> trio.socket.SocketType:
        def make() -> socket.socket:
            with in_netns(self.netns):
                return socket.socket(family, kind, proto)

        return trio.socket.from_stdlib_socket(await trio.to_thread.run_sync(make))

    async def connect(self, host: str = "10.77.1.1", port: int = 80) -> trio.SocketStream:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = await self.kernel_socket(family)
        try:
            await sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)


async def echo_handler(stream: TcpStream) -> None:
    async with stream:
        while data := await stream.receive_some():
            await stream.send_all(data)


async def _serve(env: Env, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    async with trio.open_nursery() as nursery:
        task_status.started()
        async for pending in env.stack.pending_connections():
            port = pending.destination[1]
            if port == REFUSED_PORT:
                pending.refuse()
            elif port == UNREACHABLE_PORT:
                pending.unreachable()
            else:
                nursery.start_soon(_accept_and_handle, env, pending)


async def _accept_and_handle(env: Env, pending: object) -> None:
    try:
        stream = await pending.accept()  # type: ignore[attr-defined]
    except trio.BrokenResourceError:
        return
    env.accepted.append(stream)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await env.handler(stream)


@contextlib.asynccontextmanager
async def serving(config: NetstackConfig | None = None) -> AsyncIterator[Env]:
    async with open_test_tun() as (tun, netns), open_netstack(tun, config=config) as stack:
        env = Env(stack, netns)
        async with trio.open_nursery() as nursery:
            await nursery.start(_serve, env)
            yield env
            nursery.cancel_scope.cancel()


def pattern(n: int, seed: int) -> bytes:
    block = hashlib.sha256(seed.to_bytes(4, "big")).digest() * 2048  # 64 KiB
    reps = n // len(block) + 1
    return (block * reps)[:n]


async def receive_all(stream: trio.abc.ReceiveStream, limit: int | None = None) -> bytes:
    out = bytearray()
    while data := await stream.receive_some(1 << 20):
        out += data
        if limit is not None and len(out) >= limit:
            break
    return bytes(out)


# ---------------------------------------------------------------------- transfers


async def _upload_then_download(env: Env, size: int) -> None:
    """Kernel sends ``size`` bytes and FIN; the stack's side reads them all, then answers
    ``size`` other bytes and closes: both directions, half-close from the kernel side."""
    up, down = pattern(size, 1), pattern(size, 2)
    got_up = trio.Event()
    received = bytearray()

    async def handler(stream: TcpStream) -> None:
        async with stream:
            received.extend(await receive_all(stream))
            got_up.set()
            await stream.send_all(down)

    env.handler = handler
    client = await env.connect()
    async with client:
        await client.send_all(up)
        await client.send_eof()
        answer = await receive_all(client)
    await got_up.wait()
    assert bytes(received) == up
    assert answer == down


@pytest.mark.parametrize("size", [0, 1, 65536])
async def test_transfers_intact_both_ways(size: int) -> None:
    async with serving() as env:
        await _upload_then_download(env, size)


async def test_large_transfer_both_ways_at_once() -> None:
    """100 MB each way concurrently, verified by digest (the big one of the suite)."""
    size = 100 * 1000 * 1000
    chunk = pattern(1 << 20, 3)
    async with serving() as env:
        digests: dict[str, str] = {}

        async def send_stream(stream: trio.abc.SendStream) -> None:
            sent = 0
            while sent < size:
                piece = chunk[: size - sent]
                await stream.send_all(piece)
                sent += len(piece)

        async def digest_stream(stream: trio.abc.ReceiveStream, name: str) -> None:
            h = hashlib.sha256()
            n = 0
            while data := await stream.receive_some(1 << 20):
                h.update(data)
                n += len(data)
            digests[name] = f"{n}:{h.hexdigest()}"

        server_done = trio.Event()

        async def handler(stream: TcpStream) -> None:
            async with stream, trio.open_nursery() as nursery:
                nursery.start_soon(digest_stream, stream, "up")
                await send_stream(stream)
                await stream.send_eof()
            server_done.set()

        env.handler = handler
        client = await env.connect()
        async with client, trio.open_nursery() as nursery:
            nursery.start_soon(digest_stream, client, "down")
            await send_stream(client)
            await client.send_eof()
        await server_done.wait()
        expected = hashlib.sha256()
        for off in range(0, size, len(chunk)):
            expected.update(chunk[: size - off])
        want = f"{size}:{expected.hexdigest()}"
        assert digests == {"up": want, "down": want}


async def test_ipv6_transfer() -> None:
    async with serving() as env:
        client = await env.connect("fd77::5", 8080)
        async with client:
            await client.send_all(b"over v6")
            assert await client.receive_some(100) == b"over v6"
        assert env.accepted[0].destination == ("fd77::5", 8080)


async def test_original_destination_and_source() -> None:
    async with serving() as env:
        client = await env.connect("10.77.3.4", 4321)
        async with client:
            await client.send_all(b"hi")
            await client.receive_some(10)
            (stream,) = env.accepted
            assert stream.destination == ("10.77.3.4", 4321)
            assert stream.source == client.socket.getsockname()


# ---------------------------------------------------------------------- closing


async def test_half_close_from_the_stack_side() -> None:
    """We send and FIN first; the kernel app still sends afterwards, and we read it."""
    late = trio.Event()
    got: list[bytes] = []

    async def handler(stream: TcpStream) -> None:
        await stream.send_all(b"here is everything")
        await stream.send_eof()
        got.append(await receive_all(stream))
        late.set()
        await stream.aclose()

    async with serving() as env:
        env.handler = handler
        client = await env.connect()
        async with client:
            assert await receive_all(client) == b"here is everything"
            await client.send_all(b"and a late reply")
            await client.send_eof()
            await late.wait()
        assert got == [b"and a late reply"]


async def test_rst_from_kernel_breaks_our_stream() -> None:
    outcome: list[str] = []
    ready = trio.Event()
    done = trio.Event()

    async def handler(stream: TcpStream) -> None:
        ready.set()
        try:
            await stream.receive_some()
            await stream.receive_some()
        except trio.BrokenResourceError:
            outcome.append("broken")
        done.set()

    async with serving() as env:
        env.handler = handler
        client = await env.connect()
        await ready.wait()
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.socket.close()
        with trio.fail_after(5):
            await done.wait()
    assert outcome == ["broken"]


async def test_abort_from_stack_resets_kernel_socket() -> None:
    async def handler(stream: TcpStream) -> None:
        await stream.receive_some()
        stream.abort()

    async with serving() as env:
        env.handler = handler
        client = await env.connect()
        await client.send_all(b"x")
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.receive_some(10)
        assert isinstance(info.value.__cause__, ConnectionResetError)
        await client.aclose()


@pytest.mark.parametrize("host", ["10.77.1.1", "fd77::1"])
async def test_refused_and_unreachable_destinations(host: str) -> None:
    async with serving() as env:
        with pytest.raises(ConnectionRefusedError):
            await env.connect(host, port=REFUSED_PORT)
        with pytest.raises(OSError) as info:
            await env.connect(host, port=UNREACHABLE_PORT)
        assert info.value.errno == errno.EHOSTUNREACH


async def test_thousand_concurrent_connections() -> None:
    count = 1000
    async with serving() as env:
        results: list[bytes] = []
        streams: list[trio.SocketStream] = []

        async def one(i: int) -> None:
            client = await env.connect(f"10.77.{i % 7}.{1 + i % 250}", 1000 + i)
            streams.append(client)
            await client.send_all(b"%05d" % i)
            results.append(await client.receive_some(10))

        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(one, i)
        assert sorted(results) == [b"%05d" % i for i in range(count)]
        assert env.stack.connection_count == count  # all open at once
        for s in streams:
            await s.aclose()
        for _ in range(200):  # every connection finishes, nothing leaks
            if not env.stack.connection_count:
                break
            await trio.sleep(0.05)
        assert env.stack.connection_count == 0


async def test_closed_connections_are_not_kept_in_memory() -> None:
    """An all-day session opens connections by the hundred thousand: once closed, none
    stays in memory. Each is accepted a little after its SYN, as the engine does once the
    manager's dial answered, so its pending timeout (a minute ahead) was armed."""
    from tpengine.netstack._stack import Connection

    def alive() -> int:
        gc.collect()
        return sum(isinstance(o, Connection) for o in gc.get_objects())

    async def accept_late(stack: Netstack, nursery: trio.Nursery) -> None:
        async for pending in stack.pending_connections():
            nursery.start_soon(echo_once, pending)

    async def echo_once(pending: object) -> None:
        await trio.sleep(0.005)  # the dial's round trip
        async with await pending.accept() as stream:  # type: ignore[attr-defined]
            while data := await stream.receive_some():
                await stream.send_all(data)

    async with open_test_tun() as (tun, netns), open_netstack(tun) as stack:
        env = Env(stack, netns)
        async with trio.open_nursery() as server:
            server.start_soon(accept_late, stack, server)

            async def client(first: int) -> None:
                for i in range(first, 2000, 4):
                    async with await env.connect("10.77.3.3", 2000 + i % 50) as sock:
                        await sock.send_all(b"%05d" % i)
                        assert await sock.receive_some(10) == b"%05d" % i

            # One connection stays open all along, its keepalive timer the earliest.
            async with await env.connect("10.77.3.4", 80) as keeper:
                await keeper.send_all(b"hi")
                assert await keeper.receive_some(10) == b"hi"
                async with trio.open_nursery() as clients:
                    for first in range(4):
                        clients.start_soon(client, first)
                for _ in range(200):
                    if stack.connection_count == 1:
                        break
                    await trio.sleep(0.05)
                assert stack.connection_count == 1
                # of 2,001 (a task's last one may linger in its frame)
                assert alive() <= 5
            server.cancel_scope.cancel()


async def _clog(sender: trio.abc.SendStream, full: Callable[[], bool]) -> None:
    """Send until the sender blocks and ``full()`` says the window on the way is shut."""
    while True:
        with trio.move_on_after(0.2) as blocked:
            await sender.send_all(b"c" * 8192)
        if blocked.cancelled_caught and full():
            return


async def test_check_half_closeable_stream() -> None:
    small = TcpConfig(receive_buffer=32768, send_buffer=32768)
    async with serving(NetstackConfig(tcp=small)) as env:
        queue_send, queue_recv = trio.open_memory_channel[TcpStream](1)

        async def handler(stream: TcpStream) -> None:
            await queue_send.send(stream)
            await trio.sleep_forever()

        env.handler = handler

        async def maker() -> tuple[TcpStream, trio.SocketStream]:
            client = await env.connect()
            for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                client.socket.setsockopt(socket.SOL_SOCKET, opt, 4096)
            return await queue_recv.receive(), client

        async def reversed_maker() -> tuple[trio.SocketStream, TcpStream]:
            ours, client = await maker()
            return client, ours

        async def clogged_maker() -> tuple[TcpStream, trio.SocketStream]:
            ours, client = await maker()
            # both directions: check_two_way_stream flips the pair
            await _clog(ours, lambda: ours.send_buffered == small.send_buffer)
            await _clog(client, lambda: ours.receive_buffered > small.receive_buffer - 4096)
            return ours, client

        with trio.fail_after(60):
            await trio.testing.check_half_closeable_stream(maker, clogged_maker)
            # the kernel's end sends its EOF first; the clogged checks (both directions,
            # check_two_way_stream flips the pair) already ran above
            await trio.testing.check_half_closeable_stream(reversed_maker, None)


# ---------------------------------------------------------------------- UDP


async def test_udp_flow_round_trip() -> None:
    async with serving() as env:
        sock = await env.kernel_socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            await sock.connect(("10.77.0.53", 53))
            await sock.send(b"query 1")
            flow = await env.stack.udp_flows().receive()
            assert flow.destination == ("10.77.0.53", 53)
            assert flow.source == sock.getsockname()
            assert await flow.receive() == b"query 1"
            await flow.send(b"answer 1")
            assert await sock.recv(100) == b"answer 1"
            await sock.send(b"query 2")  # same 5-tuple: same flow
            assert await flow.receive() == b"query 2"


async def test_pcap_flag_records_the_conversation(tmp_path: object) -> None:
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "trace.pcap"
    async with open_test_tun() as (tun, netns), open_netstack(tun, pcap=str(path)) as stack:
        env = Env(stack, netns)
        async with trio.open_nursery() as nursery:
            await nursery.start(_serve, env)
            client = await env.connect()
            async with client:
                await client.send_all(b"traced")
                assert await client.receive_some(10) == b"traced"
            nursery.cancel_scope.cancel()
    data = path.read_bytes()
    assert data[:4] == struct.pack("=I", 0xA1B2C3D4)
    assert data.count(b"traced") >= 2  # once each way


async def test_stalled_readers_bound_memory_both_ways() -> None:
    """A reader that stops reading stalls the writer; nobody buffers beyond its window."""
    window = 256 * 1024
    config = NetstackConfig(tcp=TcpConfig(receive_buffer=window, send_buffer=window))
    stalled = trio.Event()
    release = trio.Event()
    streams: list[TcpStream] = []

    async def handler(stream: TcpStream) -> None:
        streams.append(stream)
        stalled.set()
        await release.wait()  # the local reader is stuck

    async with serving(config) as env:
        env.handler = handler
        client = await env.connect()
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        await stalled.wait()
        (ours,) = streams
        sent = 0
        with trio.move_on_after(1.0):  # the kernel app writes until it blocks
            while True:
                await client.send_all(b"k" * 65536)
                sent += 65536
        assert sent < 4 * window  # blocked: the kernel holds at most its own buffers
        assert 0 < ours.receive_buffered <= window  # and we hold at most our window
        # the other way: our writer blocks when the kernel app does not read
        pushed = 0
        with trio.move_on_after(1.0):
            while True:
                await ours.send_all(b"n" * 65536)
                pushed += 65536
        assert 0 < ours.send_buffered <= window
        assert pushed <= window + 512 * 1024  # our buffer plus the kernel's receive queue
        # both resume once the readers read
        data = await client.receive_some(65536)
        assert data and set(data) == {ord("n")}
        assert set(await ours.receive_some(65536)) == {ord("k")}
        release.set()
        client.socket.close()


async def test_ping_is_answered_only_when_asked() -> None:
    for answer in (True, False):
        async with serving(NetstackConfig(answer_ping=answer)) as env:
            sock = await env.kernel_socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            with sock:
                request = bytearray(struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + b"ping")
                struct.pack_into("!H", request, 2, wire.internet_checksum(request))
                await sock.sendto(bytes(request), ("10.77.2.2", 0))
                with trio.move_on_after(5 if answer else 0.3):
                    reply = await sock.recv(100)
                    assert answer and reply[20] == 0 and reply[-4:] == b"ping"
                    continue
                assert not answer


async def test_plain_tun_without_virtio_header() -> None:
    """Without IFF_VNET_HDR every checksum is complete: built in full, verified on input."""
    from tests.netstack._netns import open_test_netns
    from tpengine.netstack.tun import configure_link, create_tun, setns_thread

    async with open_test_netns() as netns:

        def make_tun() -> object:
            with setns_thread(netns):
                tun = create_tun("tpnplain", vnet_hdr=False)
                configure_link(tun.name, addresses=["192.0.2.1/32"], routes=["10.77.0.0/16"])
                return tun

        tun = await trio.to_thread.run_sync(make_tun)
        try:
            async with open_netstack(tun) as stack:
                env = Env(stack, netns)
                async with trio.open_nursery() as nursery:
                    await nursery.start(_serve, env)
                    await _upload_then_download(env, 300_000)
                    nursery.cancel_scope.cancel()
            assert stack.stats.bad_checksum == 0
        finally:
            tun.close()  # type: ignore[attr-defined]


async def test_cancelled_accept_resets_the_connection() -> None:
    async with open_test_tun() as (tun, netns), open_netstack(tun) as stack:
        env = Env(stack, netns)
        sock = await env.kernel_socket()
        refused: list[OSError] = []

        async def connect() -> None:
            try:
                await sock.connect(("10.77.1.2", 80))
            except OSError as exc:
                refused.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(connect)
            pending = await stack.pending_connections().receive()
            # Cancelled at once: the SYN-ACK went out, the handshake never finishes
            # for the engine, so the connection is reset rather than leaked.
            with trio.CancelScope() as scope:
                scope.cancel()
                await pending.accept()
        if not refused:
            with pytest.raises(OSError):
                await sock.send(b"x")
                await sock.recv(10)
        sock.close()
        assert stack.connection_count == 0


async def test_udp_flow_expires_when_idle() -> None:
    async with serving(NetstackConfig(udp_idle_timeout=0.3)) as env:
        sock = await env.kernel_socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            await sock.connect(("10.77.0.53", 5353))
            await sock.send(b"once")
            flow = await env.stack.udp_flows().receive()
            assert await flow.receive() == b"once"
            with trio.fail_after(5), pytest.raises(trio.EndOfChannel):
                await flow.receive()  # nothing more: the flow ends after 0.3 s idle
            await sock.send(b"again")  # the same 5-tuple later is a new flow
            again = await env.stack.udp_flows().receive()
            assert again is not flow and await again.receive() == b"again"


async def test_announced_mss_follows_the_tun_mtu() -> None:
    async with open_test_tun(mtu=9000) as (tun, netns), open_netstack(tun) as stack:
        env = Env(stack, netns)
        async with trio.open_nursery() as nursery:
            await nursery.start(_serve, env)
            client = await env.connect()
            async with client:
                await client.send_all(b"m")
                await client.receive_some(1)
                # the kernel's send MSS: our announced 8960, less its timestamp option
                assert client.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) == 8948
            nursery.cancel_scope.cancel()


async def test_udp_flow_unreachable_refuses_the_socket() -> None:
    async with serving() as env:
        sock = await env.kernel_socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            await sock.connect(("10.77.0.99", 9999))
            await sock.send(b"anyone?" * 200)  # larger than an ICMP error may quote
            flow = await env.stack.udp_flows().receive()
            flow.unreachable()
            with pytest.raises(ConnectionRefusedError):
                with trio.fail_after(5):
                    await sock.recv(100)


async def test_udp_datagrams_larger_than_the_mtu() -> None:
    """The kernel fragments a 4000-byte datagram; the stack reassembles it. A reply as
    large goes back as one packet."""
    async with serving() as env:
        sock = await env.kernel_socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            await sock.connect(("10.77.0.53", 4000))
            big = bytes(range(250)) * 16
            await sock.send(big)
            flow = await env.stack.udp_flows().receive()
            assert await flow.receive() == big
            await flow.send(big[::-1])
            with trio.fail_after(5):
                assert await sock.recv(8000) == big[::-1]
