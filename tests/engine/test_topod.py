"""``--to-pod`` forwards over a real tunnel to the agent's real pod-dial handler: TCP and
UDP reach "the pod's localhost" (127.0.0.2 here, so the laptop side can bind the same
port on 127.0.0.1), replies go to the local peer that asked, refusals are resets."""

from __future__ import annotations

import functools

import pytest
import trio

from agent._topod import serve_pod_dial
from tpengine.engine._topod import open_to_pod_sockets, serve_to_pod
from tpengine.engine._topod_spec import ToPodError, ToPodPort
from tpengine.tunnel import MuxDatagramFlow, MuxSession, MuxStream, Role, open_mux_over_stream

POD = "127.0.0.2"


def test_port_specs() -> None:
    assert ToPodPort.parse("9100") == ToPodPort(port=9100, protocol="TCP")
    assert ToPodPort.parse("53/udp") == ToPodPort(port=53, protocol="UDP")
    assert str(ToPodPort.parse("8080/TCP")) == "8080/TCP"
    for bad in ("", "http", "0", "70000", "80/SCTP", "-1"):
        with pytest.raises(ToPodError, match="give PORT, PORT/TCP or PORT/UDP"):
            ToPodPort.parse(bad)


def free_port(kind: int) -> int:
    import socket

    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((POD, 0))
        return int(probe.getsockname()[1])


async def udp_echo(port: int, task_status: trio.TaskStatus[None]) -> None:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind((POD, port))
        task_status.started()
        while True:
            data, peer = await sock.recvfrom(2048)
            await sock.sendto(b"pod got " + data, peer)


async def with_tunnel(nursery: trio.Nursery) -> MuxSession:
    """A client session whose dials the agent's handler serves (pod = 127.0.0.2)."""

    async def serve(stream: trio.SocketStream) -> None:
        async with open_mux_over_stream(
            stream,
            role=Role.SERVER,
            dial_handler=functools.partial(serve_pod_dial, app_host=POD),
        ) as session:
            await session.wait_closed()

    [listener] = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
    tcp = await trio.open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
    send, receive = trio.open_memory_channel[MuxSession](1)

    async def client() -> None:
        async with open_mux_over_stream(tcp, role=Role.CLIENT) as session:
            await send.send(session)
            await trio.sleep_forever()

    nursery.start_soon(client)
    return await receive.receive()


async def test_udp_and_tcp_reach_the_pods_localhost() -> None:
    udp_port, tcp_port = free_port(trio.socket.SOCK_DGRAM), free_port(trio.socket.SOCK_STREAM)
    async with trio.open_nursery() as nursery:
        await nursery.start(udp_echo, udp_port)
        session = await with_tunnel(nursery)

        async def dial(port: int, proto: str) -> MuxStream | MuxDatagramFlow:
            if proto == "udp":
                return await session.open_stream("127.0.0.1", port, "udp")
            return await session.open_stream("127.0.0.1", port)

        bound = await open_to_pod_sockets(
            [ToPodPort(port=udp_port, protocol="UDP"), ToPodPort(port=tcp_port)]
        )
        nursery.start_soon(serve_to_pod, bound, dial)

        # Two local peers: each gets only its own replies.
        peers = [trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) for _ in range(2)]
        for i, peer in enumerate(peers):
            await peer.connect(("127.0.0.1", udp_port))
            await peer.send(f"ping {i}".encode())
        with trio.fail_after(5):
            assert [await peer.recv(2048) for peer in peers] == [
                b"pod got ping 0",
                b"pod got ping 1",
            ]

        # Nothing listens on the pod's TCP port: the local connection is reset.
        local = await trio.open_tcp_stream("127.0.0.1", tcp_port)
        with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
            while await local.receive_some():
                pass
        for peer in peers:
            peer.close()
        nursery.cancel_scope.cancel()


async def test_a_taken_local_port_fails_before_anything_is_bound() -> None:
    udp_port = free_port(trio.socket.SOCK_DGRAM)
    taken = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    with taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        tcp_port = taken.getsockname()[1]
        with pytest.raises(ToPodError, match=f"--to-pod {tcp_port}/TCP: Address already in use"):
            await open_to_pod_sockets(
                [ToPodPort(port=udp_port, protocol="UDP"), ToPodPort(port=tcp_port)]
            )
    # The UDP port bound first was released again.
    again = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with again:
        await again.bind(("127.0.0.1", udp_port))
