"""``tp-agent init`` in a throwaway network namespace: after it, a connection to the app
port from the pod's processes lands on the agent, except the agent's own (uid 7777)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

APP_PORT, AGENT_PORT, EXEMPT = 8080, 9900, 7777
IP = shutil.which("ip") or "/usr/sbin/ip"
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"

# Listens on both ports inside the namespace and tells each caller which one took it.
SERVER = textwrap.dedent(
    f"""
    import socket, selectors, sys
    sel = selectors.DefaultSelector()
    for port, name in (({APP_PORT}, b"app"), ({AGENT_PORT}, b"agent")):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port)); s.listen(16); sel.register(s, selectors.EVENT_READ, name)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            conn, _ = key.fileobj.accept(); conn.sendall(key.data); conn.close()
    """
)

CLIENT = (
    f"import socket; s = socket.create_connection(('127.0.0.1', {APP_PORT}), timeout=5); "
    "print(s.recv(16).decode())"
)


def _ns(ns: str, *command: str, uid: int | None = None, **kwargs: object) -> str:
    prefix = [IP, "netns", "exec", ns]
    if uid is not None:
        prefix += [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    done = subprocess.run(
        [*prefix, *command], capture_output=True, text=True, timeout=30, check=False, **kwargs
    )  # type: ignore[call-overload]
    assert done.returncode == 0, done.stderr
    return str(done.stdout)


@pytest.fixture
def netns() -> Iterator[str]:
    """The pod's namespace (SERVER listening on both ports) and, linked to it by a veth
    pair, a caller's namespace ``<pod>-c`` (198.51.100.2 → the pod at 198.51.100.1)."""
    token = secrets.token_hex(3)
    name, caller = f"tpa-{token}", f"tpa-{token}-c"
    server = None
    try:
        for ns in (name, caller):
            subprocess.run([IP, "netns", "add", ns], check=True)
            subprocess.run([IP, "-n", ns, "link", "set", "lo", "up"], check=True)
        veth = [IP, "-n", name, "link", "add", f"tpa{token}p", "type", "veth"]
        subprocess.run([*veth, "peer", "name", f"tpa{token}c", "netns", caller], check=True)
        for ns, dev, addr in ((name, "p", "198.51.100.1"), (caller, "c", "198.51.100.2")):
            subprocess.run(
                [IP, "-n", ns, "addr", "add", f"{addr}/24", "dev", f"tpa{token}{dev}"], check=True
            )
            subprocess.run([IP, "-n", ns, "link", "set", f"tpa{token}{dev}", "up"], check=True)
        server = subprocess.Popen(
            [IP, "netns", "exec", name, "/usr/bin/python3", "-c", SERVER],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield name
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for ns in (name, caller):  # deleting a namespace deletes its end of the veth
            subprocess.run([IP, "netns", "del", ns], check=False)


def _init(ns: str, env: dict[str, str] | None = None) -> str:
    return _ns(
        ns,
        sys.executable,
        "-m",
        "agent",
        "init",
        "--exempt-uid",
        str(EXEMPT),
        f"tcp:{APP_PORT}:{AGENT_PORT}",
        env=env,
    )


def _who_answers(ns: str, uid: int, host: str = "127.0.0.1") -> str:
    client = CLIENT.replace("127.0.0.1", host)
    return _ns(ns, "/usr/bin/python3", "-c", client, uid=uid).strip()


def _from_outside(ns: str) -> str:
    """A connection from another pod to the pod's IP and the app port (prerouting)."""
    return _who_answers(f"{ns}-c", 0, "198.51.100.1")


@pytest.mark.root
def test_init_redirects_the_app_port_except_for_the_agent(netns: str) -> None:
    assert _who_answers(netns, 1234) == "app"  # before: nothing redirected
    assert _from_outside(netns) == "app"
    assert "redirected tcp/8080 -> 9900" in _init(netns)
    _init(netns)  # again: the same rules, not twice as many
    rules = _ns(netns, "nft", "list", "table", "inet", "tpengine")
    assert rules.count(f"redirect to :{AGENT_PORT}") == 2  # prerouting and output
    assert _who_answers(netns, 1234) == "agent"
    assert _who_answers(netns, EXEMPT) == "app"
    assert _from_outside(netns) == "agent"


@pytest.mark.root
def test_init_falls_back_to_iptables_without_nft(netns: str, tmp_path: Path) -> None:
    for tool in ("iptables", "ip6tables"):
        found = shutil.which(tool)
        if found is None:
            pytest.fail(f"{tool} is not installed (./dev installs it)")
        (tmp_path / tool).symlink_to(found)
    env = {**os.environ, "PATH": str(tmp_path)}
    assert "(iptables)" in _init(netns, env)
    _init(netns, env)
    rules = _ns(netns, "iptables", "-t", "nat", "-S")
    assert rules.count(f"--to-ports {AGENT_PORT}") == 2
    assert rules.count("-j TPENGINE-OUTPUT") == 1
    assert _who_answers(netns, 1234) == "agent"
    assert _who_answers(netns, EXEMPT) == "app"
    assert _from_outside(netns) == "agent"
