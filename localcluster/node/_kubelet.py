"""The kubelet: runs the Store's pods on this node and implements the NodeRuntime.

It watches every pod (all of them are scheduled here: the Store sets ``nodeName``),
starts one ``PodWorker`` per pod uid, hands it later versions of the pod (deletion sets
``deletionTimestamp``; Kubernetes "Termination of Pods"), and serves exec, logs and
port-forward for the API server.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import trio

from localcluster.node import _podspec as ps
from localcluster.node import _topology as topo
from localcluster.node._events import Recorder
from localcluster.node._exec import ProcessExecSession, open_exec
from localcluster.node._logs import read_log
from localcluster.node._ns import call_in_netns
from localcluster.node._pod import PodWorker

log = logging.getLogger(__name__)


class Kubelet:
    def __init__(
        self,
        store: Any,
        *,
        names: topo.ClusterNames,
        state_dir: Path,
        token: str,
        ca_pem: bytes,
        venv_bin: str,
    ) -> None:
        self.store = store
        self.names = names
        self.state_dir = state_dir
        self.token = token
        self.ca_pem = ca_pem
        self.venv_bin = venv_bin
        self.workers: dict[str, PodWorker] = {}
        self._next_index = 1
        self._used: set[int] = set()
        self._nursery: trio.Nursery | None = None
        self.events = Recorder(store, names.node_ns)
        # Paths containers must still see when the pod's private /tmp covers /tmp.
        project = Path(__file__).resolve().parents[2]
        self.keep_under_tmp = sorted(
            {str(p) for p in (Path(sys.prefix).resolve(), project) if str(p).startswith("/tmp/")}
        )
        (state_dir / "pids").mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ the loop

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.events.run)
            try:
                started = False
                while True:
                    try:
                        async with self.store.watch("pods") as events:
                            if not started:
                                task_status.started()
                                started = True
                            async for event in events:
                                self._handle(event.type, event.object)
                    except Exception:
                        # A watch that ends (410 Gone, a bug) is re-opened: the fresh
                        # list replays every pod, and known uids only get an update.
                        log.exception("pod watch ended; re-listing")
                        await trio.sleep(0.5)
                    self._forget_vanished()
            finally:
                with trio.CancelScope(shield=True):
                    await self.shutdown()

    def _handle(self, kind: str, pod: dict[str, Any]) -> None:
        if kind == "BOOKMARK":
            return
        uid = pod["metadata"].get("uid")
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.request_stop(0)
            return
        if worker is None:
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            assert self._nursery is not None
            self._nursery.start_soon(self._run_worker, worker)
        worker.update(pod)

    def _forget_vanished(self) -> None:
        """Pods removed while no watch was open: their DELETED event was never seen."""
        pods, _ = self.store.list("pods")
        alive = {p["metadata"].get("uid") for p in pods}
        for uid, worker in list(self.workers.items()):
            if uid not in alive:
                worker.request_stop(0)

    async def _run_worker(self, worker: PodWorker) -> None:
        try:
            await worker.run()
        except Exception:
            log.exception("pod %s/%s", worker.namespace, worker.name)
        finally:
            self.workers.pop(worker.uid, None)

    async def shutdown(self, grace: float = 2.0) -> None:
        """Stop every pod (the daemon is going away): SIGTERM, grace, SIGKILL."""
        for worker in list(self.workers.values()):
            worker.request_stop(grace)
        for worker in list(self.workers.values()):
            with trio.move_on_after(grace + 10):
                await worker.finished.wait()

    # ----------------------------------------------------------- helpers for workers

    def allocate_index(self) -> int:
        while self._next_index in self._used:
            self._next_index += 1
        index = self._next_index
        self._used.add(index)
        self._next_index = index + 1 if index < 60000 else 1
        return index

    def release_index(self, index: int) -> None:
        self._used.discard(index)

    def create_pod_network(self, index: int) -> tuple[str, str]:
        return topo.create_pod_network(self.names, index)

    def remove_pod_network(self, index: int) -> None:
        topo.remove_pod_network(self.names, index)

    def lookup(self, resource: str, namespace: str, name: str) -> dict | None:
        from localcluster.store import NotFound

        try:
            return dict(self.store.get(resource, namespace, name))
        except NotFound:
            return None

    def service_env(self, namespace: str, spec: dict[str, Any]) -> dict[str, str]:
        # The kubernetes Service's variables are always set; the namespace's Services'
        # only with enableServiceLinks (default true).
        services: list[dict] = []
        if spec.get("enableServiceLinks", True):
            services, _ = self.store.list("services", namespace)
        services = [
            s
            for s in services
            if not (
                s["metadata"].get("namespace") == "default"
                and s["metadata"]["name"] == "kubernetes"
            )
        ]
        kube = self.lookup("services", "default", "kubernetes")
        if kube is not None:
            services.append(kube)
        return ps.service_env(services)

    def record_pids(self, worker: PodWorker, pids: list[int]) -> None:
        """Pids `down` kills should the daemon die without cleaning up."""
        (self.state_dir / "pids" / worker.uid).write_text("".join(f"{p}\n" for p in pids))

    def forget_pids(self, worker: PodWorker) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "pids" / worker.uid).unlink()

    def store_has(self, worker: PodWorker) -> bool:
        pod = self.lookup("pods", worker.namespace, worker.name)
        return bool(
            pod
            and pod["metadata"].get("uid") == worker.uid
            and pod["metadata"].get("deletionTimestamp")
        )

    # ------------------------------------------------------------------- NodeRuntime

    def _worker(self, namespace: str, pod: str) -> PodWorker:
        from localcluster.runtime_api import PodNotRunning

        for worker in self.workers.values():
            if worker.namespace == namespace and worker.name == pod and not worker.stop.is_set():
                return worker
        raise PodNotRunning(f'pod "{pod}" not found on this node')

    def _running(self, namespace: str, pod: str) -> PodWorker:
        from localcluster.runtime_api import PodNotRunning

        worker = self._worker(namespace, pod)
        if worker.sandbox is None:
            raise PodNotRunning(f"pod {pod} does not have a host assigned")
        return worker

    async def open_pod_port(self, namespace: str, pod: str, port: int) -> trio.abc.Stream:
        worker = self._running(namespace, pod)

        def connect() -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.setblocking(False)
            return sock

        if worker.netns is None:
            sock = await trio.to_thread.run_sync(connect)
        else:
            sock = await trio.to_thread.run_sync(call_in_netns, worker.netns, connect)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        return stream

    async def exec(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        command: list[str],
        *,
        stdin: bool,
        tty: bool,
    ) -> ProcessExecSession:
        from localcluster.runtime_api import PodNotRunning

        worker = self._running(namespace, pod)
        runner = worker.runner(container)
        if "running" not in runner.state:
            raise PodNotRunning(f"container {runner.name} is not running")
        if not command:
            raise PodNotRunning("you must specify at least one command for the container")
        spec = worker.launch_spec(runner.spec, list(command), tty=tty)
        return await open_exec(spec, stdin=stdin, tty=tty)

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
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        from localcluster.runtime_api import PodNotRunning

        worker = self._worker(namespace, pod)
        runner = worker.runner(container)
        count = runner.restart_count
        if previous:
            if count == 0:
                raise PodNotRunning(
                    f'previous terminated container "{runner.name}" in pod "{pod}" not found'
                )
            # After n restarts the current run is n.log and the previous one (n-1).log.
            index = count - 1
            run = None
        else:
            if runner.log_run is None:
                reason = runner.state.get("waiting", {}).get("reason", "ContainerCreating")
                raise PodNotRunning(
                    f'container "{runner.name}" in pod "{pod}" is waiting to start: {reason}'
                )
            index = count  # the latest run, running or (in back-off) terminated
            run = runner.log_run
        path = worker.dir / "logs" / runner.name / f"{index}.log"
        return read_log(path, run, follow=follow, tail_lines=tail_lines, timestamps=timestamps)
