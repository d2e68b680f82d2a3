"""The helper's loop: one engine connection, one request at a time, everything undone at
the end.

The helper serves exactly one engine over a SOCK_SEQPACKET socket it inherits. When that
connection ends for any reason (``bye``, the engine exiting or being killed: the kernel
closes its end), the helper removes every route, restores DNS, unmounts what was
registered, deletes the TUN devices it created and exits. It is synchronous on purpose:
it is small enough to read in one sitting, and it does one thing at a time.
"""

from __future__ import annotations

import array
import functools
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from tpengine.helper import _system
from tpengine.helper._protocol import (
    PROTOCOL_VERSION,
    BadRequest,
    BindDns,
    Bye,
    CreateTun,
    Hello,
    Mount,
    ReadAhead,
    Request,
    RestoreDns,
    Routes,
    SetDns,
    encode,
    parse_request,
)
from tpengine.helper._resolvconf import ResolvConf

log = logging.getLogger("tp-helper")

OpenTun = Callable[[str], tuple[int, dict[str, Any]]]  # name -> (fd, info)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end (SO_PEERCRED, unix(7))."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class Helper:
    def __init__(self, sock: socket.socket, *, open_tun: OpenTun, resolv: ResolvConf) -> None:
        self._sock = sock
        self._open_tun = open_tun
        self._resolv = resolv
        self._tuns: list[str] = []
        self._tun_addresses: set[str] = set()
        self._routes: set[tuple[str, Any]] = set()
        self._mounts: set[str] = set()
        self._greeted = False
        self._peer_uid: int | None = None

    def serve(self) -> None:
        try:
            while True:
                try:
                    data = self._sock.recv(65536)
                except (ConnectionResetError, BrokenPipeError):
                    return
                if not data:
                    return
                reply, fds = self._handle(data)
                self._send(reply, fds)
                for fd in fds:
                    os.close(fd)  # the engine holds the TUN now; it dies with the engine
                if reply.get("bye"):
                    return
        finally:
            self.undo_all()

    def _send(self, reply: dict[str, Any], fds: list[int]) -> None:
        ancillary = []
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        try:
            self._sock.sendmsg([encode(reply)], ancillary)
        except OSError as exc:
            log.warning("cannot reply to the engine: %s", exc)

    def _handle(self, data: bytes) -> tuple[dict[str, Any], list[int]]:
        try:
            request = parse_request(data)
            if not self._greeted and not isinstance(request, Hello):
                raise BadRequest("the first request must be hello")
            return self._dispatch(request)
        except BadRequest as exc:
            return {"ok": False, "error": str(exc)}, []
        except OSError as exc:
            log.warning("request failed: %s", exc)
            return {"ok": False, "error": f"{exc.strerror or exc}"}, []

    def _dispatch(self, request: Request) -> tuple[dict[str, Any], list[int]]:
        match request:
            case Hello(version=version):
                if version != PROTOCOL_VERSION:
                    raise BadRequest(
                        f"helper speaks protocol {PROTOCOL_VERSION}, engine {version}: "
                        "install matching versions of tp and tp-helper"
                    )
                self._greeted = True
                restored = self._resolv.restore_stale()
                return {
                    "ok": True,
                    "version": PROTOCOL_VERSION,
                    "pid": os.getpid(),
                    "restored_dns": restored,
                }, []
            case CreateTun(name=name, mtu=mtu, addresses=addresses):
                fd, info = self._open_tun(name)
                self._tuns.append(info.get("name", name))
                self._tun_addresses.update(str(a.ip) for a in addresses)
                try:
                    _system.configure_link(info.get("name", name), mtu, addresses)
                except OSError:
                    os.close(fd)
                    raise
                return {"ok": True, **info}, [fd]
            case Routes(add=add, device=device, cidrs=cidrs):
                if device not in self._tuns:
                    raise BadRequest(f"{device} is not a device this helper created")
                for cidr in cidrs:
                    if add:
                        _system.add_route(device, cidr)
                        self._routes.add((device, cidr))
                    else:
                        _system.remove_route(device, cidr)
                        self._routes.discard((device, cidr))
                return {"ok": True}, []
            case BindDns(address=address):
                if str(address) not in self._tun_addresses:
                    raise BadRequest(f"{address} is not an address of a TUN this helper created")
                return {"ok": True}, _system.bind_dns_sockets(str(address))
            case SetDns(nameservers=servers):
                self._resolv.apply(servers)
                return {"ok": True}, []
            case RestoreDns():
                self._resolv.restore()
                return {"ok": True}, []
            case Mount(register=True, path=path):
                self._mounts.add(path)
                return {"ok": True}, []
            case Mount(register=False, path=path):
                if path not in self._mounts:
                    raise BadRequest(f"{path} was not registered by this engine")
                self._mounts.discard(path)
                _system.unmount(path, uid=self._engine_uid())
                return {"ok": True}, []
            case ReadAhead(path=path, kb=kb):
                if path not in self._mounts:
                    raise BadRequest(f"{path} was not registered by this engine")
                _system.set_read_ahead(path, kb, uid=self._engine_uid())
                return {"ok": True}, []
            case Bye():
                # Undo before answering: the engine waits for this reply, so when it
                # exits (and tp quit returns) nothing of the session is left.
                self.undo_all()
                return {"ok": True, "bye": True}, []
        raise BadRequest("unhandled request")  # pragma: no cover - the match is exhaustive

    def _engine_uid(self) -> int | None:
        """Whose FUSE mounts may be unmounted: the engine's (None when unknown: then any
        FUSE mount on a registered path, and still nothing else)."""
        if self._peer_uid is None:
            try:
                self._peer_uid = peer_uid(self._sock)
            except OSError:
                return None
        return self._peer_uid

    def undo_all(self) -> None:
        """Remove everything this helper made, newest first; log and go on past failures."""
        steps: list[tuple[str, Callable[[], None]]] = []
        steps += [
            (f"unmount {p}", functools.partial(_system.unmount, p, uid=self._engine_uid()))
            for p in sorted(self._mounts)
        ]
        steps.append(("restore DNS", self._resolv.restore))
        steps += [
            (f"route {c} via {d}", functools.partial(_system.remove_route, d, c))
            for d, c in sorted(self._routes, key=str)
        ]
        steps += [
            (f"delete {t}", functools.partial(_system.delete_link, t)) for t in reversed(self._tuns)
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # cleanup must go on past one failure
                log.warning("cleanup: %s failed: %s", what, exc)
        self._mounts.clear()
        self._routes.clear()
        self._tuns.clear()
