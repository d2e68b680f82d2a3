"""A fake node for the API server's unit tests: pods "run" when the fake kubelet marks them.

The fake kubelet writes the status a real kubelet writes (phase, podIP, conditions,
containerStatuses) and removes deleted pods; the fake runtime serves exec, logs and
port-forward from in-process objects (a loopback echo target for port-forward).
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from localcluster.runtime_api import PodNotRunning
from localcluster.store import NotFound, Store, StoreError


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def running_status(pod: dict[str, Any], ip: str) -> dict[str, Any]:
    now = _now()
    conds = [
        {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
        for t in (
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        )
    ]
    return {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": "198.18.0.1",
        "hostIPs": [{"ip": "198.18.0.1"}],
        "startTime": now,
        "qosClass": pod.get("status", {}).get("qosClass", "BestEffort"),
        "conditions": conds,
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in pod["spec"]["containers"]
        ],
    }


@dataclass(eq=False)
class FakeKubelet:
    store: Store
    auto_ready: bool = True
    _next_ip: int = 2

    def _ip(self) -> str:
        self._next_ip += 1
        return str(ipaddress.ip_address("10.244.0.0") + self._next_ip)

    async def mark_ready(self, namespace: str, name: str) -> None:
        pod = self.store.get("pods", namespace, name)
        ip = pod.get("status", {}).get("podIP") or self._ip()
        await self.store.update_status("pods", namespace, name, running_status(pod, ip))

    async def run(self) -> None:
        async with self.store.watch("pods") as events:
            async for event in events:
                meta = event.object["metadata"]
                ns, name = meta["namespace"], meta["name"]
                try:
                    if meta.get("deletionTimestamp"):
                        await self.store.remove("pods", ns, name)
                    elif self.auto_ready and event.type == "ADDED":
                        await self.mark_ready(ns, name)
                except StoreError:
                    continue


class _Session:
    """An exec session: ``cat``-like (stdin echoed to stdout), or fixed output and code."""

    def __init__(self, command: list[str], stdin: bool, tty: bool) -> None:
        self.command = command
        self._out, self.stdout = _pipe()
        err_send, err_recv = _pipe()
        self._err = err_send
        self.stderr = None if tty else err_recv
        self.stdin: trio.abc.SendStream | None = None
        self._in_recv: trio.abc.ReceiveStream | None = None
        if stdin:
            self.stdin, self._in_recv = _pipe()
        self._code = 0
        self._done = trio.Event()
        self.resized: list[tuple[int, int]] = []

    async def run(self) -> None:
        try:
            cmd = self.command
            if cmd[:1] == ["cat"] and self._in_recv is not None:
                async for chunk in self._in_recv:
                    await self._out.send_all(chunk)
            elif cmd[:1] == ["echo"]:
                await self._out.send_all((" ".join(cmd[1:]) + "\n").encode())
            elif cmd[:2] == ["sh", "-c"] and cmd[2].startswith("exit "):
                await self._err.send_all(b"exiting\n")
                self._code = int(cmd[2].split()[1])
            else:
                await self._err.send_all(f"{cmd[0]}: not found\n".encode())
                self._code = 127
        finally:
            await self._out.aclose()
            await self._err.aclose()
            self._done.set()

    async def wait(self) -> int:
        await self._done.wait()
        return self._code

    def resize(self, width: int, height: int) -> None:
        self.resized.append((width, height))

    async def aclose(self) -> None:
        await self._out.aclose()
        await self._err.aclose()


def _pipe() -> tuple[Any, Any]:
    from trio.testing import memory_stream_one_way_pair

    send, recv = memory_stream_one_way_pair()
    return send, recv


@dataclass(eq=False)
class FakeRuntime:
    """NodeRuntime over in-process fakes; port-forward goes to ``targets[port]`` on loopback."""

    store: Store
    nursery: trio.Nursery
    targets: dict[int, int] = field(default_factory=dict)  # pod port -> 127.0.0.1 port
    logs_by_pod: dict[str, list[bytes]] = field(default_factory=dict)
    log_stamps_by_pod: dict[str, list[str]] = field(default_factory=dict)

    def _pod(self, namespace: str, pod: str) -> dict[str, Any]:
        try:
            obj = self.store.get("pods", namespace, pod)
        except NotFound:
            raise PodNotRunning(f'pods "{pod}" not found') from None
        if obj.get("status", {}).get("phase") != "Running":
            raise PodNotRunning(f"pod {pod} is not running")
        return obj

    async def open_pod_port(self, namespace: str, pod: str, port: int) -> trio.abc.Stream:
        self._pod(namespace, pod)
        if port not in self.targets:
            raise ConnectionRefusedError(f"connection refused: port {port}")
        return await trio.open_tcp_stream("127.0.0.1", self.targets[port])

    async def exec(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        command: list[str],
        *,
        stdin: bool,
        tty: bool,
    ) -> Any:
        self._pod(namespace, pod)
        session = _Session(command, stdin, tty)
        self.nursery.start_soon(session.run)
        return session

    @asynccontextmanager
    async def _logs(
        self, namespace: str, pod: str, follow: bool, timestamps: bool
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        self._pod(namespace, pod)
        lines = self.logs_by_pod.get(f"{namespace}/{pod}", [])
        stamps = self.log_stamps_by_pod.get(f"{namespace}/{pod}", [])

        async def gen() -> AsyncIterator[bytes]:
            for i, line in enumerate(lines):
                if timestamps:  # the CRI log format: "<RFC 3339 nano> <line>"
                    stamp = stamps[i] if i < len(stamps) else _now().replace("Z", ".5Z")
                    line = stamp.encode() + b" " + line
                yield line
            if follow:
                for i in range(3):
                    await trio.sleep(0.05)
                    yield f"follow {i}\n".encode()

        yield gen()

    def logs(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        *,
        follow: bool,
        tail_lines: int | None = None,
        previous: bool = False,
        timestamps: bool = False,
    ) -> Any:
        return self._logs(namespace, pod, follow, timestamps)
