"""The real helper process, in a network namespace made for the test."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tpengine.helper import HelperClient, HelperError, start_helper
from tpengine.helper._resolvconf import nameservers_of

ORIGINAL = b"search corp.example\nnameserver 192.0.2.53\n"


@pytest.fixture
def netns() -> Iterator[tuple[str, Path]]:
    name = f"tph-{os.getpid() % 100000}"
    etc = Path("/etc/netns") / name
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_bytes(ORIGINAL)
        yield name, etc / "resolv.conf"
    finally:
        shutil.rmtree(etc, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", name], check=False)


async def wait_exit(process: subprocess.Popen[bytes]) -> int:
    with trio.fail_after(10):
        return await trio.to_thread.run_sync(process.wait, abandon_on_cancel=True)


@pytest.mark.root
async def test_dns_pointed_at_engine_and_restored_when_the_engine_goes(
    netns: tuple[str, Path],
) -> None:
    name, resolv_conf = netns
    sock, process = start_helper(netns_argv=["ip", "netns", "exec", name])
    try:
        client = HelperClient(sock)
        hello = await client.hello()
        assert hello["pid"] > 0
        await client.set_dns(["198.19.0.2"])
        assert nameservers_of(resolv_conf.read_text()) == ["198.19.0.2"]
        assert "search corp.example" in resolv_conf.read_text()
        with pytest.raises(HelperError, match="not a device this helper created"):
            await client.add_routes("lo", ["10.96.0.0/12"])
        with pytest.raises(HelperError, match="too wide"):
            await client.add_routes("lo", ["0.0.0.0/0"])
        # The engine dies without a word: the kernel closes its end of the socket.
        sock.close()
        assert await wait_exit(process) == 0
        assert resolv_conf.read_bytes() == ORIGINAL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.root
async def test_the_first_request_must_be_hello(netns: tuple[str, Path]) -> None:
    name, resolv_conf = netns
    sock, process = start_helper(netns_argv=["ip", "netns", "exec", name])
    client = HelperClient(sock)
    try:
        with pytest.raises(HelperError, match="first request must be hello"):
            await client.set_dns(["198.19.0.2"])
        assert resolv_conf.read_bytes() == ORIGINAL
        await client.aclose()
        assert await wait_exit(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.root
async def test_tun_routes_and_cleanup_when_the_engine_dies(netns: tuple[str, Path]) -> None:
    from tpengine.netstack.tun import TunDevice, TunOffloads

    name, _ = netns
    sock, process = start_helper(netns_argv=["ip", "netns", "exec", name])
    try:
        client = HelperClient(sock)
        await client.hello()
        fd, info = await client.create_tun("tpt%d", mtu=65000, addresses=["198.19.0.1/32"])
        device = TunDevice.from_fd(fd, offloads=TunOffloads.from_flags(info["offloads"]))
        assert device.name == info["name"] and device.name.startswith("tpt")
        assert device.offloads.tso4  # the kernel hands us large segments
        await client.add_routes(device.name, ["10.96.0.0/12", "10.244.0.0/16"])
        udp, tcp = await client.bind_dns("198.19.0.1")  # port 53 for an unprivileged engine
        assert udp.getsockname() == ("198.19.0.1", 53) and tcp.getsockname() == ("198.19.0.1", 53)
        udp.close()
        tcp.close()
        with pytest.raises(HelperError, match="not an address of a TUN"):
            await client.bind_dns("192.0.2.1")
        shown = await trio.run_process(
            ["ip", "-n", name, "route", "show", "dev", device.name], capture_stdout=True
        )
        routes = shown.stdout.decode()
        assert "10.96.0.0/12" in routes and "10.244.0.0/16" in routes
        # The engine dies: its socket and its TUN descriptor close with it.
        device.close()
        sock.close()
        assert await wait_exit(process) == 0
        links = (
            await trio.run_process(["ip", "-n", name, "-o", "link"], capture_stdout=True)
        ).stdout.decode()
        assert "tpt" not in links
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
