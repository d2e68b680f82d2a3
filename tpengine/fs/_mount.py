"""Mounting an engagement's volumes on the laptop, and taking them down again.

Decision (issue #8): the engine mounts with pyfuse3 itself, in its own mount namespace
(the laptop's, when started by ``tp local-cluster exec``). As root, libfuse mounts
directly; unprivileged, libfuse runs the setuid ``fusermount3`` that Debian's fuse3
installs, so the helper is not needed for mounting. The helper is told about every mount
point *before* it is mounted (``register_mount``): if the engine dies (even SIGKILL) the
helper unmounts it lazily, so no dead "Transport endpoint is not connected" directory is
left behind; ``unmount`` after a clean unmount only makes it forget the path.

pyfuse3 serves one file system per process, so ``VolumeMounts`` holds one mount at a
time (another says why it cannot); the engine runs each mount in a child process of
its own (``tpengine.fs._process``), which uses ``VolumeMounts`` inside.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import trio

from tpengine.fs._client import Connect, VolumeClient
from tpengine.fs._protocol import VOLUMES_HOST, VOLUMES_PORT

log = logging.getLogger(__name__)

Register = Callable[[str], Awaitable[None]]
#: Sets a mount's kernel read-ahead (KiB) where this process may not: the helper's.
Tune = Callable[[str, int], Awaitable[None]]
#: How long a new mount waits for the agent's first answer (the pod is ready by then).
FIRST_CONTACT = 10.0
#: Streams to the agent per mount: reads take turns on them, so more than one stream
#: window of data is on its way at once (the tunnel's per-stream flow control).
STREAMS = 3
#: The mount's kernel read-ahead in KiB. The kernel gives a FUSE mount 128 KiB, and a
#: sequential reader then waits for one 128 KiB READ at a time; with more, it sends READs
#: of up to 1 MiB (libfuse's max_write makes max_pages 256), several at once. Setting it
#: takes root (sysfs); unprivileged, the default stays and reads are slower.
READ_AHEAD_KB = 2048
#: pyfuse3 worker tasks kept waiting for requests: with its default (one), a task is
#: started and another ended for almost every request of a lone reader.
IDLE_WORKERS = 8


def agent_connector(
    current_mux: Callable[[], Awaitable[Any]], namespace: str, name: str
) -> Connect:
    """Dials the volumes of engagement ``name``'s agent through the manager (tag
    ``agent:<ns>/<pod>``), asking the manager each time which pod is current, so a
    replaced pod's agent is found again."""

    async def connect() -> trio.abc.Stream:
        try:
            mux = await current_mux()
            engagements = await mux.request("engagements", {})
            pods = next((e.get("pods") or [] for e in engagements if e.get("name") == name), [])
            if not pods:
                raise OSError(errno.EHOSTUNREACH, f"no traffic-agent pod for {name} (yet)")
            tag = f"agent:{namespace}/{pods[0]['name']}".encode()
            stream: trio.abc.Stream = await mux.open_stream(VOLUMES_HOST, VOLUMES_PORT, tag=tag)
            return stream
        except OSError:
            raise
        except Exception as exc:  # no tunnel, a refused dial: the agent is unreachable
            raise OSError(errno.EHOSTUNREACH, str(exc) or type(exc).__name__) from None

    return connect


class MountError(Exception):
    """The volumes cannot be mounted; the message says why, for the user."""


@dataclass(kw_only=True)
class VolumeMount:
    name: str
    mount_point: str
    read_only: bool
    client: VolumeClient
    created: bool
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    finished: trio.Event = field(default_factory=trio.Event)
    mounts: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "mount_point": self.mount_point,
            "read_only": self.read_only,
            "mounts": [str(m.get("path", "")) for m in self.mounts],
        }


def fuse_options(read_only: bool) -> set[str]:
    import pyfuse3

    options = set(pyfuse3.default_options) | {
        "fsname=tpengine",
        "subtype=tpengine",
    }
    if read_only:
        options.add("ro")
    return options


M = TypeVar("M")


class MountHost(Generic[M]):
    """What every holder of mounts shares: the helper's (un)registration and tuning
    callbacks, its mounts by name (``active``) and the nursery that ``run`` keeps, in
    which each mount is one task."""

    def __init__(
        self,
        *,
        register: Register | None = None,
        unregister: Register | None = None,
        tune: Tune | None = None,
    ) -> None:
        self._register = register
        self._unregister = unregister
        self._tune = tune
        self._nursery: trio.Nursery | None = None
        self.active: dict[str, M] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None


class VolumeMounts(MountHost["VolumeMount"]):
    """The engine's mounts served in this process (one at a time: pyfuse3's limit)."""

    async def mount(
        self, name: str, connect: Connect, *, path: str | None, read_only: bool
    ) -> dict[str, Any]:
        if self._nursery is None:
            raise MountError("volumes are mounted only by an engine that tp connect started")
        try:
            import pyfuse3  # noqa: F401  (the `fuse` extra)
        except ImportError as exc:
            raise MountError(
                f"FUSE is not available ({exc}): install tpengine[fuse] and libfuse3"
            ) from None
        if self.active:
            other = next(iter(self.active))
            raise MountError(
                f"the volumes of {other} are mounted; one engagement at a time can mount"
                " volumes in this version (leave it first, or use --mount false)"
            )
        created = path is None
        if path is None:
            path = tempfile.mkdtemp(prefix="telfs-")
        else:
            if not path.startswith("/"):
                raise MountError(f"the mount point {path!r} must be an absolute path")
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as exc:
                raise MountError(f"cannot make the mount point {path}: {exc.strerror}") from None
        mount = VolumeMount(
            name=name,
            mount_point=path,
            read_only=read_only,
            client=VolumeClient(connect, streams=STREAMS),
            created=created,
        )
        self.active[name] = mount
        try:
            await self._nursery.start(self._serve, mount)
        except BaseException as exc:
            self.active.pop(name, None)
            if created:
                with contextlib.suppress(OSError):
                    os.rmdir(path)
            why = _mount_error(exc)
            if why is not None:
                raise why from None
            raise
        return mount.describe()

    async def unmount(self, name: str) -> bool:
        mount = self.active.get(name)
        if mount is None:
            return False
        mount.scope.cancel()
        await mount.finished.wait()
        return True

    async def unmount_all(self) -> None:
        for name in list(self.active):
            await self.unmount(name)

    async def _serve(self, mount: VolumeMount, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            with mount.scope:
                import pyfuse3

                from tpengine.fs._fuse import RemoteFs

                async with trio.open_nursery() as nursery:
                    await nursery.start(mount.client.run)
                    await _first_contact(mount)
                    if self._register is not None:
                        await self._register(mount.mount_point)
                    fs = RemoteFs(mount.client, nursery)
                    try:
                        pyfuse3.init(fs, mount.mount_point, fuse_options(mount.read_only))
                    except RuntimeError as exc:
                        raise MountError(f"cannot mount {mount.mount_point}: {exc}") from None
                    try:
                        log.info("volumes of %s mounted on %s", mount.name, mount.mount_point)
                        nursery.start_soon(_tune, fs, mount.mount_point, self._tune)
                        task_status.started()
                        # returns when unmounted from outside
                        await pyfuse3.main(min_tasks=IDLE_WORKERS)
                    finally:
                        pyfuse3.close(unmount=True)
                        nursery.cancel_scope.cancel()  # the client's dialling too
        finally:
            await self._cleanup(mount)

    async def _cleanup(self, mount: VolumeMount) -> None:
        with trio.CancelScope(shield=True):
            if self._unregister is not None:
                try:
                    await self._unregister(mount.mount_point)
                except Exception as exc:  # the helper gone: it unmounted everything
                    log.info("volumes: helper unmount of %s: %s", mount.mount_point, exc)
            if mount.created:
                try:
                    os.rmdir(mount.mount_point)
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        log.warning("volumes: cannot remove %s: %s", mount.mount_point, exc)
            self.active.pop(mount.name, None)
            mount.finished.set()
            log.info("volumes of %s unmounted from %s", mount.name, mount.mount_point)


async def _tune(fs: Any, mount_point: str, privileged: Tune | None) -> None:
    """The mount's read-ahead, once the kernel has its INIT answer (which would set it
    back to at most what the kernel offered: 128 KiB). Only root may write it: an
    unprivileged engine asks the helper (``privileged``), else reads stay at 128 KiB."""
    await fs.initialised.wait()
    if set_read_ahead(mount_point, READ_AHEAD_KB) or privileged is None:
        return
    try:
        await privileged(mount_point, READ_AHEAD_KB)
    except Exception as exc:  # the helper refused or is gone: slower reads, nothing worse
        log.info("volumes: the helper did not set the read-ahead of %s: %s", mount_point, exc)


def set_read_ahead(mount_point: str, kb: int) -> bool:
    """The kernel read-ahead of the FUSE mount on ``mount_point`` (the helper's rule:
    its backing device's ``/sys/class/bdi/<major:minor>/read_ahead_kb``, found in
    mountinfo, not by a stat of the mount, which would wait for this process); False,
    logged, when it cannot be set (not root: then the helper is asked)."""
    from tpengine.helper._system import set_read_ahead as set_it

    try:
        set_it(mount_point, kb)
    except OSError as exc:
        log.info("volumes: kernel read-ahead of %s stays as it is: %s", mount_point, exc)
        return False
    return True


async def _first_contact(mount: VolumeMount) -> None:
    client = mount.client
    with trio.move_on_after(FIRST_CONTACT):
        while not client.connected:
            await client.wait_changed()
        mount.mounts = client.mounts
        return
    raise MountError(
        f"the traffic-agent does not serve volumes: {client.last_error or 'no answer'}"
    )


def _mount_error(exc: BaseException) -> MountError | None:
    """The MountError inside ``exc`` (nurseries wrap it in exception groups), if any."""
    if isinstance(exc, MountError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _mount_error(inner)
            if found is not None:
                return found
    return None
