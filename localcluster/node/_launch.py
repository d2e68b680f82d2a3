"""Pod sandbox and container launcher (run as a script; standard library only).

The kubelet starts this file with the daemon's Python, by path, so no package import
slows a container's start. Two modes, each taking one JSON argument:

``sandbox``  — the pod's "pause" process. Enters the pod's netns, unshares a mount, UTS,
IPC and PID namespace, and forks PID 1 of the pod: it mounts a fresh /proc and /sys,
sets the hostname, bind-mounts the pod's resolv.conf, hosts and hostname files, then
only reaps orphans. Killing PID 1 ends every process of the pod (pid_namespaces(7)).
The first line on stdout is PID 1's pid as seen from the host.

``container`` — one container process (or a ``kubectl exec``). Joins the namespaces of
the pod's PID 1, unshares a private copy of the pod's mount namespace, bind-mounts the
container's volumes at their mountPath (read-only when asked), changes directory, user,
group and capabilities (via setpriv), and execs the command. The launcher itself stays
in the host PID namespace as the parent: it writes the child's host pid to the fd named
in ``pid_fd``, forwards SIGTERM/SIGINT/SIGHUP, and exits with the child's status
(128+signal when killed), the way a container runtime reports it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import json
import os
import signal
import sys
import termios

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _setns_path(path: str, nstype: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, nstype), f"setns {path}")
    finally:
        os.close(fd)


def _mount(src: str, dst: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            src.encode(),
            dst.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {src} on {dst}",
    )


def _bind(src: str, dst: str, readonly: bool = False) -> None:
    _mount(src, dst, None, MS_BIND | MS_REC)
    if readonly:
        # A read-only bind needs a second, remounting call (mount(8): "bind,ro").
        _mount("none", dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_REC)


def _make_slave() -> None:
    # Mounts of the host keep propagating in; the pod's own never leak out.
    _mount("none", "/", None, MS_REC | MS_SLAVE)


def _sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


# ----------------------------------------------------------------------------- sandbox


def _sandbox_pid1(spec: dict, ready_w: int) -> None:
    _sethostname(spec["hostname"])
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if spec.get("netns"):
        # /sys/class/net must show the pod's own links (what `ip netns exec` does too).
        try:
            _libc.umount2(b"/sys", MNT_DETACH)
            _mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError:
            pass
    # Each pod has its own /dev/shm (64 MiB, as a container runtime gives a pod).
    try:
        _mount(
            "shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k"
        )
    except OSError:
        pass
    for src, dst in spec.get("binds", []):
        _bind(src, dst)
    os.write(ready_w, b"ok\n")
    os.close(ready_w)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        try:
            os.wait()
        except ChildProcessError:
            signal.pause()
        except InterruptedError:
            continue


def sandbox(spec: dict) -> int:
    if spec.get("netns"):
        _setns_path(spec["netns"], CLONE_NEWNET)
    _unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID)
    _make_slave()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        try:
            _sandbox_pid1(spec, ready_w)
        except BaseException as exc:
            os.write(2, f"pod sandbox: {exc}\n".encode())
        os._exit(1)
    os.close(ready_w)
    answer = os.read(ready_r, 16)
    os.close(ready_r)
    if answer != b"ok\n":
        os.waitpid(pid, 0)
        return 1
    sys.stdout.write(f"{pid}\n")
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        except InterruptedError:
            continue


# --------------------------------------------------------------------------- container


def _record_created(spec: dict, path: str) -> None:
    log = spec.get("created_log")
    if log:
        with open(log, "a") as fh:
            fh.write(path + "\n")


def _ensure_mountpoint(spec: dict, dst: str, is_file: bool, scratch: list) -> None:
    """Make ``dst`` exist in this container's view without touching the host's tree.

    The deepest existing ancestor gets a private overlay (upper layer in the pod's state
    dir) and the missing path is made inside it. Directly under "/" no overlay is
    possible (it would hide /proc, /dev, ...): the directory is made on the host and
    recorded so `down` removes it. Below a directory already made private either way
    (``scratch[1]``), paths are simply made: a second overlay inside the first is
    refused by the kernel (EINVAL), and several mountPaths often share a new top
    directory (``/tel_app_mounts/etc/web``, ``/tel_app_mounts/var/run/…``).
    """
    if os.path.lexists(dst):
        return
    parent = os.path.dirname(dst)
    while not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    private: set[str] = scratch[1]
    if any(_under(parent, done) for done in private):
        pass
    elif parent == "/":
        top = "/" + dst.strip("/").split("/")[0]
        if not os.path.exists(top):
            os.makedirs(top, exist_ok=True)
            _record_created(spec, top)
            private.add(top)
    else:
        n = scratch[0]
        scratch[0] += 1
        upper = os.path.join(spec["scratch"], f"upper{n}")
        work = os.path.join(spec["scratch"], f"work{n}")
        os.makedirs(upper, exist_ok=True)
        os.makedirs(work, exist_ok=True)
        _mount(
            "overlay", parent, "overlay", 0, f"lowerdir={parent},upperdir={upper},workdir={work}"
        )
        private.add(parent)
    if is_file:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    else:
        os.makedirs(dst, exist_ok=True)


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def _prepare_container(spec: dict) -> None:
    """This container's own view: private /tmp of the pod, volumes at their mountPath.

    Sources are opened (O_PATH) before anything is mounted over them, and bound through
    /proc/self/fd: the pod's state dir may itself live under /tmp, which the pod's
    private /tmp then hides.
    """
    _unshare(CLONE_NEWNS)
    _make_slave()
    scratch: list = [0, set()]
    mounts = [
        (m["src"], os.path.realpath(m["dst"]), bool(m.get("ro"))) for m in spec.get("mounts", [])
    ]
    binds = [(src, dst) for src, dst in spec.get("pod_binds", [])]
    fds = {src: os.open(src, os.O_PATH | os.O_CLOEXEC) for src, *_ in [*mounts, *binds]}
    tmp = spec.get("tmp")
    tmp_fd = os.open(tmp, os.O_PATH | os.O_CLOEXEC) if tmp else None
    workdir = spec.get("workdir")
    wanted = [(dst, os.path.isfile(src)) for src, dst, _ in mounts]
    if workdir and not os.path.isdir(workdir):
        # The kubelet creates a missing workingDir; here only in this container's view.
        wanted.append((os.path.realpath(workdir), False))
    for dst, is_file in wanted:
        if not (tmp and _under(dst, "/tmp")):
            _ensure_mountpoint(spec, dst, is_file, scratch)
    keep = [(path, os.open(path, os.O_PATH | os.O_CLOEXEC)) for path in spec.get("keep", [])]
    if tmp_fd is not None:
        _bind(f"/proc/self/fd/{tmp_fd}", "/tmp")
        # The project and its environment may live under /tmp (a CI checkout): they
        # stay visible at their own paths inside the pod's private /tmp.
        for path, fd in keep:
            os.makedirs(path, exist_ok=True)
            _bind(f"/proc/self/fd/{fd}", path)
        for dst, is_file in wanted:
            if _under(dst, "/tmp") and not os.path.lexists(dst):
                os.makedirs(dst if not is_file else os.path.dirname(dst), exist_ok=True)
                if is_file:
                    open(dst, "a").close()
    # Overlays hide the sandbox's file binds below them: put those back first.
    for src, dst in binds:
        _bind(f"/proc/self/fd/{fds[src]}", dst)
    for src, dst, ro in mounts:
        _bind(f"/proc/self/fd/{fds[src]}", dst, ro)


def _exec_container(spec: dict) -> None:
    argv = list(spec["argv"])
    env = dict(spec["env"])
    uid, gid = spec.get("uid"), spec.get("gid")
    caps = [c.lower() for c in spec.get("caps", [])]
    if (uid not in (None, 0)) or (gid not in (None, 0)):
        # setpriv keeps the asked-for capabilities across the uid change as ambient
        # capabilities (capabilities(7)), so NET_ADMIN works for a non-root user.
        pre = ["/usr/bin/setpriv"]
        if uid is not None:
            pre.append(f"--reuid={uid}")
        pre.append(f"--regid={gid if gid is not None else (uid or 0)}")
        pre.append("--clear-groups")
        if caps:
            capset = ",".join(f"+{c}" for c in caps)
            pre += [f"--inh-caps={capset}", f"--ambient-caps={capset}"]
        argv = [*pre, "--", *argv]
    os.chdir(spec.get("workdir") or "/")
    if spec.get("tty"):
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        os.write(2, f"exec {argv[0]}: {exc.strerror}\n".encode())
        os._exit(127 if isinstance(exc, FileNotFoundError) else 126)


def container(spec: dict) -> int:
    target = spec["target_pid"]
    order = [("ipc", CLONE_NEWIPC), ("uts", CLONE_NEWUTS), ("net", CLONE_NEWNET)]
    order += [("pid", CLONE_NEWPID), ("mnt", CLONE_NEWNS)]
    for name, flag in order:
        _setns_path(f"/proc/{target}/ns/{name}", flag)
    os.chdir("/")
    pid = os.fork()
    if pid == 0:
        if spec.get("pid_fd") is not None:
            os.close(spec["pid_fd"])
        try:
            _prepare_container(spec)
            _exec_container(spec)
        except BaseException as exc:
            os.write(2, f"container start: {exc}\n".encode())
        os._exit(128)
    if spec.get("pid_fd") is not None:
        os.write(spec["pid_fd"], f"{pid}\n".encode())
        os.close(spec["pid_fd"])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return (
                os.waitstatus_to_exitcode(status)
                if os.WIFEXITED(status)
                else 128 + os.WTERMSIG(status)
            )
        except InterruptedError:
            continue


def main() -> None:
    mode, raw = sys.argv[1], sys.argv[2]
    spec = json.loads(raw)
    try:
        code = sandbox(spec) if mode == "sandbox" else container(spec)
    except OSError as exc:
        sys.stderr.write(f"{mode}: {exc}\n")
        code = 128
    sys.exit(code)


if __name__ == "__main__":
    main()
