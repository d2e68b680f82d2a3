"""One pod on the node: sandbox, init containers, containers, probes, restarts, status.

Theory of operation: a ``PodWorker.run`` task owns everything of one pod. It builds the
sandbox (netns + PID 1), writes the pod's volumes, runs init containers in order (each
to completion, retried per restartPolicy), then one ``ContainerRunner`` task per
container. Any change marks the status dirty; a writer task sends the whole status with
``Store.update_status`` (Kubernetes "Pod Lifecycle": phase, conditions, container
states). Deletion sets ``stop``; the worker terminates containers with the grace period
(SIGTERM, then SIGKILL), kills PID 1 (which ends every process in the pod's PID
namespace), removes the pod's netns, and calls ``Store.remove``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from localcluster.node import _podspec as ps
from localcluster.node._logs import LogRun, pump
from localcluster.node._probes import run_probe_loop
from localcluster.node._process import ContainerProcess, Sandbox, start_container, start_sandbox
from localcluster.node._runner import ContainerRunner, now_rfc3339
from localcluster.node._topology import NODE_IP
from localcluster.tokens import service_account_token

if TYPE_CHECKING:
    from localcluster.node._kubelet import Kubelet

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0  # the kubelet's is 300 s; a test cluster wants restarts sooner


class PodWorker:
    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        self.kubelet = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta.get("namespace", "default")
        self.name: str = meta["name"]
        self.spec: dict[str, Any] = pod.get("spec", {})
        self.host_network = bool(self.spec.get("hostNetwork"))
        self.dir = kubelet.state_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.stop = trio.Event()
        self.grace = float(self.spec.get("terminationGracePeriodSeconds", 30))
        self.finished = trio.Event()
        self.index: int | None = None
        self.netns: str | None = None
        self.ip: str | None = None
        self.sandbox: Sandbox | None = None
        self.volume_dirs: dict[str, Path] = {}
        self.init_runners = [
            ContainerRunner(spec=c, init=True) for c in self.spec.get("initContainers") or []
        ]
        self.runners = [
            ContainerRunner(spec=c, init=False) for c in self.spec.get("containers") or []
        ]
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time: str | None = None
        self.initialized = not self.init_runners
        self.transitions: dict[str, tuple[bool, str]] = {}
        self._dirty = trio.Event()

    # ------------------------------------------------------------------ public surface

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") is not None:
            self.request_stop(float(meta.get("deletionGracePeriodSeconds", self.grace)))

    def request_stop(self, grace: float) -> None:
        self.grace = min(self.grace, grace) if self.stop.is_set() else grace
        self.stop.set()

    def runner(self, container: str | None) -> ContainerRunner:
        from localcluster.runtime_api import PodNotRunning

        if container is None:
            if not self.runners:
                raise PodNotRunning(f"pod {self.name} has no containers")
            return self.runners[0]
        for r in self.runners + self.init_runners:
            if r.name == container:
                return r
        raise PodNotRunning(f"container {container} is not valid for pod {self.name}")

    def mark_dirty(self) -> None:
        self._dirty.set()

    # ---------------------------------------------------------------------- main task

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._status_writer)
                with trio.CancelScope() as life:
                    nursery.start_soon(self._cancel_on_stop, life)
                    await self._lifecycle()
                self.mark_dirty()
                await self.stop.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._teardown()
                self.finished.set()

    async def _cancel_on_stop(self, scope: trio.CancelScope) -> None:
        await self.stop.wait()
        scope.cancel()

    async def _lifecycle(self) -> None:
        refused = ps.refuse_reason(self.pod)
        if refused is not None:
            self._fail(refused.reason, refused.message)
            return
        try:
            await self._setup_sandbox()
        except (OSError, ps.PodRefused) as exc:
            reason = exc.reason if isinstance(exc, ps.PodRefused) else "SandboxFailed"
            self._fail(reason, str(exc))
            return
        for runner in self.init_runners:
            ok = await self._run_init(runner)
            if not ok:
                self.phase = "Failed"
                self.mark_dirty()
                return
        self.initialized = True
        for runner in self.runners:
            runner.state = {"waiting": {"reason": "ContainerCreating"}}
        self.mark_dirty()
        async with trio.open_nursery() as nursery:
            for runner in self.runners:
                nursery.start_soon(self._run_container, runner)
        self._settle_phase()

    def _fail(self, reason: str, message: str) -> None:
        log.warning("pod %s/%s refused: %s", self.namespace, self.name, message)
        self.kubelet.events.emit(self.pod, "Warning", reason, message)
        self.phase, self.reason, self.message = "Failed", reason, message
        for r in self.init_runners + self.runners:
            r.state = {"waiting": {"reason": reason, "message": message}}
        self.mark_dirty()

    async def _setup_sandbox(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.host_network:
            self.ip = NODE_IP
        else:
            self.index = self.kubelet.allocate_index()
            self.netns, self.ip = await trio.to_thread.run_sync(
                self.kubelet.create_pod_network, self.index
            )
        self.start_time = now_rfc3339()
        files = ps.pod_files(self.pod, self.ip or NODE_IP)
        binds = []
        for fname, text in files.items():
            (self.dir / fname).write_text(text)
            binds.append([str(self.dir / fname), f"/etc/{fname}"])
        self.pod_binds = binds
        self.sandbox = await start_sandbox(
            {"netns": self.netns, "hostname": files["hostname"].strip()[:63], "binds": binds},
            self.dir / "sandbox.log",
        )
        self.kubelet.record_pids(self, [self.sandbox.pid1, self.sandbox.process.pid])
        log.info(
            "pod %s/%s: sandbox pid %d, ip %s",
            self.namespace,
            self.name,
            self.sandbox.pid1,
            self.ip,
        )
        self.kubelet.events.emit(
            self.pod,
            "Normal",
            "Scheduled",
            f"Successfully assigned {self.namespace}/{self.name} to {self.kubelet.names.node_ns}",
        )
        self.mark_dirty()
        ctx = ps.VolumeContext(
            pod=self.pod,
            lookup=self.kubelet.lookup,
            token=service_account_token(
                self.kubelet.token, self.namespace, self.spec.get("serviceAccountName") or "default"
            ),
            ca_pem=self.kubelet.ca_pem,
        )
        while True:
            try:
                for vol in self.spec.get("volumes") or []:
                    self.volume_dirs[vol["name"]] = ps.materialize_volume(
                        ctx, vol, self.dir / "volumes"
                    )
                return
            except ps.ContainerConfigError as exc:
                for r in self.init_runners + self.runners:
                    r.state = {
                        "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
                    }
                self.mark_dirty()
                with trio.move_on_after(2):
                    await self.stop.wait()
                if self.stop.is_set():
                    raise OSError("pod deleted while waiting for its volumes") from exc

    # ------------------------------------------------------------------- containers

    def launch_spec(
        self, container: dict[str, Any], argv: list[str], *, tty: bool = False
    ) -> dict[str, Any]:
        assert self.sandbox is not None
        env = ps.container_env(
            self.pod_with_status(),
            container,
            self.kubelet.lookup,
            service_env=self.kubelet.service_env(self.namespace, self.spec),
            path=ps.path_for(container, venv_bin=self.kubelet.venv_bin),
        )
        argv = [ps.expand(a, env) for a in argv]
        sc = {
            **(self.spec.get("securityContext") or {}),
            **(container.get("securityContext") or {}),
        }
        caps = list((sc.get("capabilities") or {}).get("add") or [])
        scratch = self.dir / "scratch" / container.get("name", "c")
        scratch.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "tmp"  # the pod's own /tmp, shared by its containers, gone with it
        if not tmp.exists():
            tmp.mkdir(parents=True)
            tmp.chmod(0o1777)
        return {
            "target_pid": self.sandbox.pid1,
            "argv": argv,
            "env": env,
            "workdir": container.get("workingDir") or "/",
            "uid": sc.get("runAsUser"),
            "gid": sc.get("runAsGroup"),
            "caps": [c.upper().removeprefix("CAP_") for c in caps],
            "mounts": ps.mounts_for(container, self.volume_dirs),
            "pod_binds": self.pod_binds,
            "scratch": str(scratch),
            "tmp": str(tmp),
            "keep": self.kubelet.keep_under_tmp,
            "created_log": str(self.kubelet.state_dir / "created-paths"),
            "tty": tty,
        }

    def pod_with_status(self) -> dict[str, Any]:
        return {
            **self.pod,
            "status": {
                **(self.pod.get("status") or {}),
                "podIP": self.ip,
                "hostIP": NODE_IP,
                "podIPs": [{"ip": self.ip}],
            },
        }

    async def _start(self, runner: ContainerRunner) -> ContainerProcess | None:
        """One run of a container, or None when it cannot start (status says why)."""
        try:
            argv = ps.command_for(runner.spec)
            spec = self.launch_spec(runner.spec, argv)
        except ps.ImageError as exc:
            self._event_once(runner, "Warning", "Failed", f"Failed to pull image: {exc}")
            runner.state = {"waiting": {"reason": "ErrImagePull", "message": str(exc)}}
            self.mark_dirty()
            return None
        except ps.ContainerConfigError as exc:
            self._event_once(runner, "Warning", "Failed", f"Error: {exc}")
            runner.state = {
                "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
            }
            self.mark_dirty()
            return None
        if runner.runs > 0:
            runner.restart_count += 1  # counted when the new run starts, as the kubelet does
        runner.runs += 1
        run = LogRun(self.dir / "logs" / runner.name / f"{runner.restart_count}.log")
        proc = await start_container(spec, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        runner.proc, runner.log_run = proc, run
        runner.state = {"running": {"startedAt": now_rfc3339()}}
        runner.started = True
        self.mark_dirty()
        image = runner.spec.get("image", "")
        if runner.runs == 1:
            self._event(
                runner, "Normal", "Pulled", f'Container image "{image}" already present on machine'
            )
        self._event(runner, "Normal", "Created", f"Created container {runner.name}")
        self._event(runner, "Normal", "Started", f"Started container {runner.name}")
        return proc

    def _event(self, runner: ContainerRunner, kind: str, reason: str, message: str) -> None:
        self.kubelet.events.emit(self.pod, kind, reason, message, container=runner.name)

    def _event_once(self, runner: ContainerRunner, kind: str, reason: str, message: str) -> None:
        if runner.last_event != (reason, message):
            runner.last_event = (reason, message)
            self._event(runner, kind, reason, message)

    async def _one_run(self, runner: ContainerRunner, proc: ContainerProcess) -> int:
        assert proc.process.stdout is not None and runner.log_run is not None
        started_at = runner.state.get("running", {}).get("startedAt", now_rfc3339())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, proc.process.stdout, runner.log_run)
            async with trio.open_nursery() as probes:
                if not runner.init:
                    self._start_probes(probes, runner, proc)
                code = await proc.wait()
                probes.cancel_scope.cancel()
            # Let the pump drain what is left, unless a leftover process keeps the pipe.
            nursery.cancel_scope.deadline = trio.current_time() + 2
        runner.ready = False
        reason = "Completed" if code == 0 else "Error"
        runner.state = {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "startedAt": started_at,
                "finishedAt": now_rfc3339(),
                "containerID": f"tpengine://{proc.process.pid}",
            }
        }
        self.mark_dirty()
        return code

    def _start_probes(
        self, nursery: trio.Nursery, runner: ContainerRunner, proc: ContainerProcess
    ) -> None:
        nursery.start_soon(self._probe_container, runner, proc)

    async def _probe_container(self, runner: ContainerRunner, proc: ContainerProcess) -> None:
        """startupProbe first (liveness and readiness wait for it), then the others."""
        common = {
            "netns": self.netns,
            "pod_ip": self.ip,
            "container": runner.spec,
            "exec_probe": lambda cmd, t: self.exec_probe(runner, cmd, t),
        }
        startup = runner.spec.get("startupProbe")
        if startup:
            runner.started = False
            started = trio.Event()

            def on_started(ok: bool) -> None:
                if ok:
                    started.set()
                else:
                    self._unhealthy(runner, proc, "Startup")

            async with trio.open_nursery() as inner:
                inner.start_soon(lambda: run_probe_loop(startup, on_started, **common))
                await started.wait()
                inner.cancel_scope.cancel()
            runner.started = True
            self.mark_dirty()
        async with trio.open_nursery() as nursery:
            readiness = runner.spec.get("readinessProbe")
            if readiness:

                def on_ready(ok: bool) -> None:
                    if runner.ready != ok and runner.proc is proc:
                        runner.ready = ok
                        self.mark_dirty()

                nursery.start_soon(lambda: run_probe_loop(readiness, on_ready, **common))
            else:
                runner.ready = True
                self.mark_dirty()
            liveness = runner.spec.get("livenessProbe")
            if liveness:

                def on_live(ok: bool) -> None:
                    if not ok:
                        self._unhealthy(runner, proc, "Liveness")

                nursery.start_soon(lambda: run_probe_loop(liveness, on_live, **common))

    def _unhealthy(self, runner: ContainerRunner, proc: ContainerProcess, kind: str) -> None:
        """A failed liveness/startup probe: the kubelet kills the container (restartPolicy)."""
        log.info(
            "%s probe of %s/%s %s failed: killing it", kind, self.namespace, self.name, runner.name
        )
        self._event(runner, "Warning", "Unhealthy", f"{kind} probe failed")
        self._event(
            runner,
            "Normal",
            "Killing",
            f"Container {runner.name} failed {kind.lower()} probe, will be restarted",
        )
        proc.kill()

    async def exec_probe(self, runner: ContainerRunner, command: list[str], seconds: float) -> int:
        spec = self.launch_spec(runner.spec, command)
        proc = await start_container(spec, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with trio.move_on_after(seconds):
            return await proc.wait()
        proc.kill()
        return 1

    def _should_restart(self, code: int, init: bool) -> bool:
        policy = self.spec.get("restartPolicy", "Always")
        if init:
            return code != 0 and policy != "Never"
        return policy == "Always" or (policy == "OnFailure" and code != 0)

    async def _backoff(self, runner: ContainerRunner) -> None:
        delay = min(MAX_BACKOFF, 2.0**runner.restart_count)
        runner.last_state = runner.state
        runner.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {int(delay)}s restarting failed container={runner.name} pod={self.name}_{self.namespace}({self.uid})",
            }
        }
        self.mark_dirty()
        self._event(
            runner,
            "Warning",
            "BackOff",
            f"Back-off restarting failed container {runner.name} in pod {self.name}_{self.namespace}({self.uid})",
        )
        await trio.sleep(delay)

    async def _run_init(self, runner: ContainerRunner) -> bool:
        while True:
            proc = await self._start(runner)
            if proc is None:
                await trio.sleep(2)
                continue
            code = await self._one_run(runner, proc)
            if code == 0:
                runner.done = True
                return True
            if not self._should_restart(code, True):
                runner.done = True
                return False
            await self._backoff(runner)

    async def _run_container(self, runner: ContainerRunner) -> None:
        while True:
            proc = await self._start(runner)
            if proc is None:
                if runner.state["waiting"]["reason"] == "ErrImagePull":
                    self._settle_phase()
                    return
                await trio.sleep(2)
                continue
            code = await self._one_run(runner, proc)
            if not self._should_restart(code, False):
                runner.done = True
                self._settle_phase()
                return
            await self._backoff(runner)

    def _settle_phase(self) -> None:
        runners = self.runners
        if runners and all(r.done for r in runners):
            codes = [r.state.get("terminated", {}).get("exitCode", 1) for r in runners]
            self.phase = "Succeeded" if all(c == 0 for c in codes) else "Failed"
        for r in runners:
            waiting = r.state.get("waiting") or {}
            if waiting.get("reason") == "ErrImagePull":
                # No image will ever appear: fail the pod with the reason in its status.
                self.phase, self.reason = "Failed", "ImageUnknown"
                self.message = waiting.get("message")
        self.mark_dirty()

    # ------------------------------------------------------------------- status

    def _condition(self, kind: str, ok: bool, now: str) -> dict[str, Any]:
        prev = self.transitions.get(kind)
        if prev is None or prev[0] != ok:
            self.transitions[kind] = (ok, now)
        cond: dict[str, Any] = {
            "type": kind,
            "status": "True" if ok else "False",
            "lastProbeTime": None,
            "lastTransitionTime": self.transitions[kind][1],
        }
        if not ok and kind in ("Ready", "ContainersReady"):
            names = [r.name for r in self.runners if not r.ready]
            cond["reason"] = (
                "ContainersNotReady"
                if self.phase not in ("Succeeded", "Failed")
                else "PodCompleted"
            )
            cond["message"] = f"containers with unready status: [{' '.join(names)}]"
        return cond

    def status(self) -> dict[str, Any]:
        now = now_rfc3339()
        if (
            self.phase == "Pending"
            and self.initialized
            and self.runners
            and all(r.runs > 0 for r in self.runners)
        ):
            self.phase = "Running"
        ready = self.phase == "Running" and all(r.ready for r in self.runners)
        status: dict[str, Any] = {
            "phase": self.phase,
            "hostIP": NODE_IP,
            "hostIPs": [{"ip": NODE_IP}],
            "qosClass": (self.pod.get("status") or {}).get("qosClass", "BestEffort"),
            "conditions": [
                self._condition("PodReadyToStartContainers", self.sandbox is not None, now),
                self._condition("Initialized", self.initialized, now),
                self._condition("Ready", ready, now),
                self._condition("ContainersReady", ready, now),
                self._condition("PodScheduled", True, now),
            ],
            "containerStatuses": [r.status() for r in self.runners],
        }
        if self.init_runners:
            status["initContainerStatuses"] = [r.status() for r in self.init_runners]
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        if self.start_time:
            status["startTime"] = self.start_time
        if self.reason:
            status["reason"], status["message"] = self.reason, self.message
        return status

    async def _status_writer(self) -> None:
        from localcluster.store import NotFound

        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            try:
                current = self.kubelet.store.get("pods", self.namespace, self.name)
                if current["metadata"].get("uid") != self.uid:
                    return
                await self.kubelet.store.update_status(
                    "pods", self.namespace, self.name, self.status()
                )
            except NotFound:
                return
            except Exception:
                # Never leave a stale status behind (a pod that stays "not ready"
                # forever): try again shortly.
                log.exception("writing the status of %s/%s", self.namespace, self.name)
                self._dirty.set()
                await trio.sleep(0.5)
            await trio.sleep(0.05)

    # ------------------------------------------------------------------- teardown

    async def _teardown(self) -> None:
        log.info("pod %s/%s: stopping (grace %ss)", self.namespace, self.name, self.grace)
        for r in self.init_runners + self.runners:
            if r.proc is not None and r.proc.process.returncode is None:
                self._event(r, "Normal", "Killing", f"Stopping container {r.name}")
        procs = [r.proc for r in self.init_runners + self.runners if r.proc is not None]
        if procs:
            async with trio.open_nursery() as nursery:
                for proc in procs:
                    nursery.start_soon(proc.stop, self.grace)
        if self.sandbox is not None:
            await self.sandbox.aclose()
            self.sandbox = None
        if self.index is not None:
            await trio.to_thread.run_sync(self.kubelet.remove_pod_network, self.index)
            self.kubelet.release_index(self.index)
            self.index = None
        self.kubelet.forget_pids(self)
        if self.kubelet.store_has(self):
            from localcluster.store import NotFound

            try:
                await self.kubelet.store.remove("pods", self.namespace, self.name)
            except NotFound:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
