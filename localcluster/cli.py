"""``tp local-cluster up | down | status | kubeconfig | exec``: the cluster's lifecycle.

Everything one cluster makes is named after it and recorded in its state dir
``$XDG_CONFIG_HOME/tpengine/local-cluster/<name>/`` (default ``~/.config/...``)::

    kubeconfig        the admin kubeconfig (written by the daemon)
    pki/              CA, server certificate, token
    server.pid        the daemon's pid          server.log  its log
    laptop.pid        the laptop holder's pid   laptop.log  its log
    laptop<k>.pid     laptop k's holder (k ≥ 2, ``up --laptops N``), laptop<k>.log
    laptop<k>-cache/  XDG_CACHE_HOME of laptop k's commands (tp's logs of that developer)
    ready             written by the daemon once the API serves
    audit.log         the API server's audit log (JSON lines)
    pids/<pod uid>    pids of each pod's sandbox (for `down` after a daemon crash)
    pods/…            per pod: resolv.conf, hosts, volumes, container logs
    created-paths     mount points made on the host for pods (removed by `down`)
    merged            present when `up --merge` added the cluster to ~/.kube/config

``down`` reads these, stops what is recorded (by pid, checking it is ours), deletes the
namespaces (their veths and the nft table go with them) and the files, and says what it
removed. ``up`` after a crash does the same first.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"[a-z0-9]{1,6}")
Echo = Callable[[str], None]


class CliError(Exception):
    """A failure the user can act on: one or two lines, exit code 1."""


def validate_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise CliError(
            f"invalid cluster name {name!r}: use 1 to 6 lowercase letters or digits "
            "(it names network namespaces and veths, which must fit 15 characters)"
        )
    return name


def require_root() -> None:
    if os.geteuid() != 0:
        raise CliError(
            "tp local-cluster needs root (it creates network namespaces): run it as root or with sudo"
        )


def state_root() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tpengine" / "local-cluster"


def state_dir(name: str) -> Path:
    return state_root() / name


def kubeconfig_path(name: str) -> Path:
    return state_dir(name) / "kubeconfig"


# ----------------------------------------------------------------------- processes


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_ours(pid: int, *markers: str) -> bool:
    cmd = _cmdline(pid)
    return bool(cmd) and all(any(m in part for part in cmd) for m in markers)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _daemon_pid(name: str) -> int | None:
    pid = _read_pid(state_dir(name) / "server.pid")
    return pid if pid and _is_ours(pid, "localcluster.server", str(state_dir(name))) else None


def _laptop_file(index: int, suffix: str) -> str:
    return f"laptop.{suffix}" if index == 1 else f"laptop{index}.{suffix}"


def _laptop_pid(name: str, index: int = 1) -> int | None:
    """The holder of laptop ``index`` when the recorded pid is still that process."""
    from localcluster._names import ClusterNames

    ns = ClusterNames(name=name).laptop_ns_of(index)
    pid = _read_pid(state_dir(name) / _laptop_file(index, "pid"))
    return pid if pid and _is_ours(pid, "localcluster.node._laptop", f"/etc/netns/{ns}/") else None


def _recorded_laptops(name: str) -> list[int]:
    """Laptops with a pid file in the state dir (alive or not)."""
    found = {1} if (state_dir(name) / "laptop.pid").exists() else set()
    for path in state_dir(name).glob("laptop*.pid"):
        digits = path.stem.removeprefix("laptop")
        if digits.isdigit():
            found.add(int(digits))
    return sorted(found)


def processes_in_netns(path: str) -> list[int]:
    """Pids whose network namespace is the one bound at ``path`` (a read-only scan)."""
    try:
        target = os.stat(path).st_ino
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}/ns/net").st_ino == target:
                    pids.append(int(entry))
    return pids


def _stop_pid(pid: int, *, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return
        time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


# -------------------------------------------------------------------------- status


@dataclass(frozen=True, kw_only=True)
class Laptop:
    index: int
    netns: str
    address: str
    pid: int | None  # its holder (mount namespace and resolver); None: not running

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "netns": self.netns, "address": self.address, "pid": self.pid}


@dataclass(frozen=True, kw_only=True)
class Status:
    name: str
    state: str  # "running", "stopped" or "broken" (leftovers of a crashed run)
    daemon_pid: int | None
    laptop_pid: int | None
    namespaces: list[str]
    kubeconfig: str
    api_server: str
    state_dir: str
    laptops: list[Laptop]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "api_server": self.api_server,
            "kubeconfig": self.kubeconfig,
            "daemon_pid": self.daemon_pid,
            "laptop_pid": self.laptop_pid,
            "laptops": [laptop.as_dict() for laptop in self.laptops],
            "namespaces": self.namespaces,
            "state_dir": self.state_dir,
        }


def status(name: str) -> Status:
    from localcluster._names import NODE_IP, ClusterNames, existing_namespaces, laptop_link

    names = ClusterNames(name=name)
    namespaces = existing_namespaces(names)
    daemon, laptop = _daemon_pid(name), _laptop_pid(name)
    sd = state_dir(name)
    indexes = sorted(
        {i for ns in namespaces if (i := names.laptop_index(ns))} | set(_recorded_laptops(name))
    )
    laptops = [
        Laptop(
            index=i,
            netns=names.laptop_ns_of(i),
            address=laptop_link(i)[1],
            pid=_laptop_pid(name, i),
        )
        for i in indexes
    ]
    # Running: the daemon serves and every laptop has both its netns and its holder.
    healthy = (
        daemon is not None
        and laptop is not None
        and names.node_ns in namespaces
        and all(lt.pid is not None and lt.netns in namespaces for lt in laptops)
        and (sd / "ready").exists()
    )
    leftovers = (
        daemon or laptop or namespaces or sd.exists() or names.etc_netns(names.laptop_ns).exists()
    )
    state = "running" if healthy else ("broken" if leftovers else "stopped")
    return Status(
        name=name,
        state=state,
        daemon_pid=daemon,
        laptop_pid=laptop,
        namespaces=namespaces,
        kubeconfig=str(kubeconfig_path(name)),
        api_server=f"https://{NODE_IP}:6443",
        state_dir=str(sd),
        laptops=laptops,
    )


# ------------------------------------------------------------------------------ up


def _wait_for(
    what: str, check: Callable[[], bool], timeout: float, alive: Callable[[], bool]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not alive():
            raise CliError(f"{what}: the process exited")
        time.sleep(0.05)
    raise CliError(f"{what}: no answer after {timeout:.0f}s")


def _api_answers(name: str, laptop: int = 1) -> bool:
    """GET /version from inside a laptop's netns, as a client would (the daemon has
    already seen the default ServiceAccount before it wrote ``ready``)."""
    from localcluster._names import ClusterNames
    from localcluster.node._ns import call_in_netns

    sd = state_dir(name)
    ca = sd / "pki" / "ca.crt"
    token = (sd / "pki" / "token").read_text().strip()
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(
        "https://198.18.0.1:6443/version",
        headers={"Authorization": f"Bearer {token}"},
    )

    def get() -> bool:
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    return call_in_netns(f"/run/netns/{ClusterNames(name=name).laptop_ns_of(laptop)}", get)


def _start_laptop(name: str, sd: Path, index: int = 1) -> int:
    from localcluster.node import LAPTOP_DNS_IP, ClusterNames
    from localcluster.node._topology import laptop_link, write_netns_resolv

    names = ClusterNames(name=name)
    ns = names.laptop_ns_of(index)
    resolv = write_netns_resolv(names, ns, f"nameserver {LAPTOP_DNS_IP}\noptions ndots:1\n")
    log = sd / _laptop_file(index, "log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{ns}",
                "--",
                "unshare",
                "--mount",
                "--uts",  # its own host name: the developer's machine, in client names
                "--propagation",
                "slave",
                "--",
                sys.executable,
                "-m",
                "localcluster.node._laptop",
                "--resolv",
                str(resolv),
                "--address",
                laptop_link(index)[1],
                "--hostname",
                ns,
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd="/",
        )
    (sd / _laptop_file(index, "pid")).write_text(f"{proc.pid}\n")
    _wait_for(
        f"the resolver of laptop {index}",
        lambda: b"ready" in log.read_bytes(),
        20,
        lambda: proc.poll() is None,
    )
    return proc.pid


def _add_laptops(name: str, sd: Path, wanted: range, echo: Echo) -> None:
    """Laptops ``wanted`` (k ≥ 2): netns, link, holder; each must reach the API server."""
    from localcluster.node._topology import ClusterNames, add_laptop, laptop_link

    names = ClusterNames(name=name)
    for index in wanted:
        ns = names.laptop_ns_of(index)
        echo(f"Adding laptop {index}: network namespace {ns} ({laptop_link(index)[1]}/30)")
        add_laptop(names, index)
        holder = _start_laptop(name, sd, index)
        _wait_for(
            f"the API server from laptop {index}",
            functools.partial(_api_answers, name, index),
            30,
            functools.partial(_is_ours, holder, "localcluster.node._laptop"),
        )


def _start_daemon(name: str, sd: Path) -> subprocess.Popen[bytes]:
    with open(sd / "server.log", "ab") as out:
        proc = subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{name}-node",
                "--",
                sys.executable,
                "-m",
                "localcluster.server",
                "--name",
                name,
                "--state-dir",
                str(sd),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd="/",
        )
    (sd / "server.pid").write_text(f"{proc.pid}\n")
    return proc


def up(
    name: str, *, merge: bool = False, echo: Echo = print, timeout: float = 90, laptops: int = 1
) -> None:
    from localcluster._names import MAX_LAPTOPS, ClusterNames
    from localcluster.node import create_cluster

    require_root()
    validate_name(name)
    if not 1 <= laptops <= MAX_LAPTOPS:
        raise CliError(f"--laptops {laptops}: a cluster has 1 to {MAX_LAPTOPS} laptops")
    started = time.monotonic()
    current = status(name)
    if current.state == "running":
        have = max((lt.index for lt in current.laptops), default=1)
        if laptops > have:
            # More laptops for a running cluster: added beside the others, nothing restarts.
            _add_laptops(name, state_dir(name), range(have + 1, laptops + 1), echo)
        echo(
            f"Local cluster {name} is already up with {max(have, laptops)} laptop(s) "
            f"(kubeconfig: {current.kubeconfig})"
        )
        return
    if current.state == "broken":
        foreign = processes_in_netns(f"/run/netns/{name}-node")
        if foreign and not state_dir(name).exists():
            # Live, but not from this state dir (another HOME, e.g. a test session):
            # tearing it down would pull it from under whoever runs it.
            raise CliError(
                f"local cluster {name} is running from another state dir (pid {foreign[0]}); "
                f"run `tp local-cluster down --name {name}` with the HOME that started it"
            )
        echo(f"Cleaning up what an earlier run of local cluster {name} left behind")
        # It comes back with at least the laptops it had (a second developer's included).
        laptops = max(laptops, *(lt.index for lt in current.laptops))
        down(name, echo=lambda _line: None)
    names = ClusterNames(name=name)
    sd = state_dir(name)
    sd.mkdir(parents=True, exist_ok=True)
    try:
        echo(f"Creating network namespaces {names.laptop_ns} and {names.node_ns} (198.18.0.0/30)")
        create_cluster(names)
        echo(f"Starting the laptop's mount namespace and resolver in {names.laptop_ns}")
        _start_laptop(name, sd)
        echo(
            f"Starting the cluster daemon in {names.node_ns} (API server, controllers, kubelet, proxy, DNS)"
        )
        proc = _start_daemon(name, sd)
        echo("Waiting for the API server at https://198.18.0.1:6443")
        _wait_for(
            "the cluster daemon",
            lambda: (sd / "ready").exists(),
            timeout,
            lambda: proc.poll() is None,
        )
        _wait_for("the API server", lambda: _api_answers(name), 30, lambda: proc.poll() is None)
        _add_laptops(name, sd, range(2, laptops + 1), echo)
    except BaseException as exc:
        tail = ""
        with contextlib.suppress(OSError):
            tail = "\n".join((sd / "server.log").read_text(errors="replace").splitlines()[-5:])
        down(name, echo=lambda _line: None)
        if isinstance(exc, CliError | OSError):
            hint = f"\n{tail}" if tail else ""
            raise CliError(f"local cluster {name} did not come up: {exc}{hint}") from exc
        raise
    if merge:
        merge_kubeconfig(name)
        echo(f"Merged context tp-{name} into {Path.home() / '.kube' / 'config'}")
    took = time.monotonic() - started
    echo(f"Local cluster {name} is up ({took:.1f}s). Kubeconfig: {kubeconfig_path(name)}")
    echo("The laptop is a network namespace with no route to the cluster until `tp connect`.")
    echo(
        f"Try: tp local-cluster exec{'' if name == 'tp' else f' --name {name}'} -- kubectl get pods -A"
    )


def merge_kubeconfig(name: str) -> None:
    """Add this cluster's cluster/user/context to ~/.kube/config (only with --merge)."""
    import yaml

    ours = yaml.safe_load(kubeconfig_path(name).read_text())
    target = Path.home() / ".kube" / "config"
    theirs: dict[str, Any] = {}
    if target.exists():
        theirs = yaml.safe_load(target.read_text()) or {}
    for key in ("clusters", "users", "contexts"):
        mine = {e["name"] for e in ours[key]}
        theirs[key] = [e for e in theirs.get(key) or [] if e.get("name") not in mine] + ours[key]
    theirs.setdefault("apiVersion", "v1")
    theirs.setdefault("kind", "Config")
    theirs.setdefault("current-context", ours["current-context"])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(theirs, sort_keys=False))
    os.chmod(target, 0o600)
    (state_dir(name) / "merged").write_text(str(target) + "\n")


def _unmerge_kubeconfig(name: str) -> str | None:
    import yaml

    marker = state_dir(name) / "merged"
    if not marker.exists():
        return None
    target = Path(marker.read_text().strip())
    if not target.exists():
        return None
    data = yaml.safe_load(target.read_text()) or {}
    names = {f"tp-{name}", f"tp-{name}-admin"}
    for key in ("clusters", "users", "contexts"):
        data[key] = [e for e in data.get(key) or [] if e.get("name") not in names]
    if data.get("current-context") == f"tp-{name}":
        data["current-context"] = ""
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return f"context tp-{name} from {target}"


# ---------------------------------------------------------------------------- down


def down(name: str, *, echo: Echo = print) -> list[str]:
    """Remove everything this cluster made; returns (and echoes) what was removed."""
    from localcluster._names import ClusterNames, named_namespaces
    from localcluster.node import remove_cluster

    require_root()
    validate_name(name)
    names = ClusterNames(name=name)
    sd = state_dir(name)
    foreign = processes_in_netns(f"/run/netns/{names.node_ns}")
    if foreign and not sd.exists():
        raise CliError(
            f"local cluster {name} is running from another state dir (pid {foreign[0]}); "
            f"run `tp local-cluster down --name {name}` with the HOME that started it"
        )
    removed: list[str] = []
    namespaces = _namespace_inodes(names)  # before the daemon's shutdown removes pods'
    daemon = _daemon_pid(name)
    if daemon:
        _stop_pid(daemon, grace=30)
        removed.append(f"cluster daemon (pid {daemon}) and its pods")
    pids_dir = sd / "pids"
    if pids_dir.is_dir():
        for record in pids_dir.iterdir():
            for line in record.read_text().split():
                pid = int(line)
                if _is_ours(pid, "_launch.py"):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    removed.append(f"pod process (pid {pid})")
    for index in _recorded_laptops(name) or [1]:
        laptop = _laptop_pid(name, index)
        if laptop:
            _stop_pid(laptop, grace=5)
            which = "laptop" if index == 1 else f"laptop {index}"
            removed.append(f"{which} holder and resolver (pid {laptop}) with its mount namespace")
    removed += _kill_strays(names, namespaces)
    if names.node_ns in named_namespaces():
        removed.append(f"nftables table ip {names.nft_table} (in {names.node_ns})")
    removed += remove_cluster(names)
    created = sd / "created-paths"
    if created.exists():
        for line in sorted(set(created.read_text().split()), reverse=True):
            # Only empty directories go (mount points the launcher made); a file someone
            # put there keeps its directory.
            for root, _dirs, _files in os.walk(line, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(root)
            if not os.path.exists(line):
                removed.append(f"mount point {line}")
    merged = _unmerge_kubeconfig(name)
    if merged:
        removed.append(merged)
    if sd.exists():
        shutil.rmtree(sd, ignore_errors=True)
        removed.append(f"directory {sd}")
    for line in removed:
        echo(f"Removed {line}")
    if not removed:
        echo(f"Local cluster {name} is not up: nothing to remove")
    return removed


def _namespace_inodes(names: Any) -> dict[int, str]:
    """The node's and pods' network namespaces (laptops are the user's), by inode."""
    from localcluster._names import existing_namespaces

    found = {}
    for ns in existing_namespaces(names):
        if names.laptop_index(ns) is None:
            with contextlib.suppress(OSError):
                found[os.stat(f"/run/netns/{ns}").st_ino] = ns
    return found


def _kill_strays(names: Any, namespaces: dict[int, str]) -> list[str]:
    """Processes still inside one of ``namespaces`` once the daemon and the recorded pod
    processes are gone: a pod started while the cluster was going down (its pid not
    recorded yet) would otherwise outlive it, orphaned in a namespace whose name the
    daemon already removed (a process keeps its namespace, and so its inode, alive).
    An inode now named by another cluster's namespace is not ours any more."""
    from localcluster._names import existing_namespaces, named_namespaces

    ours = set(existing_namespaces(names))
    for ns in named_namespaces():
        if ns not in ours:
            with contextlib.suppress(OSError):
                namespaces.pop(os.stat(f"/run/netns/{ns}").st_ino, None)
    removed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            where = namespaces.get(os.stat(f"/proc/{entry}/ns/net").st_ino)
        except OSError:
            continue
        if where is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry), signal.SIGKILL)
            removed.append(f"stray process (pid {entry}) in {where}")
    return removed


# ---------------------------------------------------------------------------- exec


def exec_argv(
    name: str, command: list[str], *, laptop: int = 1
) -> tuple[list[str], dict[str, str]]:
    """argv and env that run ``command`` in laptop ``laptop``'s netns and mount namespace."""
    from localcluster._names import ClusterNames

    require_root()
    validate_name(name)
    if not command:
        raise CliError(
            "nothing to run: give a command after --, e.g. tp local-cluster exec -- kubectl get pods -A"
        )
    current = status(name)
    if current.state != "running":
        raise CliError(
            f"local cluster {name} is not up: run `tp local-cluster up{'' if name == 'tp' else f' --name {name}'}` first"
        )
    holder = _laptop_pid(name, laptop)
    if holder is None:
        raise CliError(
            f"local cluster {name} has no laptop {laptop} ({len(current.laptops)} laptop(s)): "
            f"run `tp local-cluster up{'' if name == 'tp' else f' --name {name}'} --laptops {laptop}`"
        )
    argv = [
        "nsenter",
        f"--net=/run/netns/{ClusterNames(name=name).laptop_ns_of(laptop)}",
        f"--mount=/proc/{holder}/ns/mnt",
        f"--uts=/proc/{holder}/ns/uts",
        f"--wd={os.getcwd()}",
        "--",
        *command,
    ]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig_path(name))}
    # The project's own environment (tp, tp-helper, and kubectl when ./dev installed the
    # wheel) is found even when it is not activated; anything earlier on PATH wins.
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = os.pathsep.join(p for p in (env.get("PATH"), venv_bin) if p)
    if laptop != 1:
        # Another developer's machine keeps its own logs (tp's engine.log, helper.log):
        # two engines appending to one file would be one confusing story.
        cache = state_dir(name) / f"laptop{laptop}-cache"
        cache.mkdir(parents=True, exist_ok=True)
        env["XDG_CACHE_HOME"] = str(cache)
    return argv, env
