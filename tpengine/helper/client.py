"""The engine's side of the helper: start it, and ask it for things (trio)."""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import trio

from tpengine.helper._protocol import PROTOCOL_VERSION


class HelperError(Exception):
    """The helper refused a request or went away."""


def helper_command(fd: int, *, uid: int, log_file: str | None = None) -> list[str]:
    """The argv that starts the helper on ``fd``: directly as root, else through sudo."""
    argv = [sys.executable, "-m", "tpengine.helper", "--fd", str(fd), "--uid", str(uid)]
    if log_file:
        argv += ["--log-file", log_file]
    if os.geteuid() != 0:
        # -C keeps our descriptor open across sudo (sudoers needs closefrom_override),
        # otherwise sudo closes every descriptor above 2.
        argv = ["sudo", "-C", str(fd + 1), "--", *argv]
    return argv


def start_helper(
    *, log_file: str | None = None, netns_argv: Sequence[str] = ()
) -> tuple[socket.socket, subprocess.Popen[bytes]]:
    """Start ``tp-helper`` in the foreground's terminal session (sudo may prompt there) and
    return the engine's end of its socket. The helper gets a session of its own, so closing
    the terminal does not end it: only the engine's socket closing does."""
    engine_end, helper_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # The helper outlives this command: it must not hold our stdout/stderr open (a
    # caller reading them would wait for it). sudo prompts on /dev/tty, not on these.
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    try:
        argv = [
            *netns_argv,
            *helper_command(helper_end.fileno(), uid=os.getuid(), log_file=log_file),
        ]
        process = subprocess.Popen(
            argv,
            pass_fds=[helper_end.fileno()],
            stdin=subprocess.DEVNULL if os.geteuid() == 0 else None,
            stdout=output,
            stderr=output,
            start_new_session=os.geteuid() == 0,
        )
    except OSError:
        engine_end.close()
        raise
    finally:
        helper_end.close()
        if not isinstance(output, int):
            output.close()
    return engine_end, process


class HelperClient:
    """Requests over the helper's SOCK_SEQPACKET socket, one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = trio.socket.from_stdlib_socket(sock)
        self._lock = trio.Lock()
        self._closed = False

    async def request(self, op: str, **fields: Any) -> tuple[dict[str, Any], list[int]]:
        async with self._lock:
            try:
                await self._sock.send(json.dumps({"op": op, **fields}).encode())
                data, ancdata, _flags, _addr = await self._sock.recvmsg(
                    65536, socket.CMSG_SPACE(16)
                )
            except OSError as exc:
                raise HelperError(f"the helper went away: {exc}") from None
        if not data:
            raise HelperError("the helper went away")
        fds = _received_fds(ancdata)
        reply = json.loads(data)
        if not reply.get("ok"):
            for fd in fds:
                os.close(fd)
            raise HelperError(f"helper refused {op}: {reply.get('error')}")
        return reply, fds

    async def hello(self) -> dict[str, Any]:
        reply, _ = await self.request("hello", version=PROTOCOL_VERSION)
        return reply

    async def create_tun(
        self, name: str, *, mtu: int, addresses: Sequence[str]
    ) -> tuple[int, dict[str, Any]]:
        reply, fds = await self.request("create_tun", name=name, mtu=mtu, addresses=list(addresses))
        if len(fds) != 1:
            raise HelperError("the helper did not pass the TUN descriptor")
        return fds[0], reply

    async def add_routes(self, device: str, cidrs: Sequence[str]) -> None:
        await self.request("add_routes", device=device, cidrs=list(cidrs))

    async def remove_routes(self, device: str, cidrs: Sequence[str]) -> None:
        await self.request("remove_routes", device=device, cidrs=list(cidrs))

    async def bind_dns(self, address: str) -> tuple[socket.socket, socket.socket]:
        """UDP and listening TCP sockets on ``address``:53 (UDP first)."""
        _, fds = await self.request("bind_dns", address=address)
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            raise HelperError("the helper did not pass the DNS sockets")
        return socket.socket(fileno=fds[0]), socket.socket(fileno=fds[1])

    async def set_dns(self, nameservers: Sequence[str]) -> None:
        await self.request("set_dns", nameservers=list(nameservers))

    async def restore_dns(self) -> None:
        await self.request("restore_dns")

    async def register_mount(self, path: str) -> None:
        await self.request("register_mount", path=path)

    async def unmount(self, path: str) -> None:
        await self.request("unmount", path=path)

    async def set_read_ahead(self, path: str, kb: int) -> None:
        await self.request("set_read_ahead", path=path, kb=kb)

    async def aclose(self) -> None:
        """Say goodbye (the helper undoes everything) and close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            with trio.move_on_after(5):
                await self.request("bye")
        except HelperError:
            pass
        finally:
            self._sock.close()


def _received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(array.array("i", payload[:usable]))
    return fds
