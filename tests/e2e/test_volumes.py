"""Remote volumes, end to end in the local cluster: ``tp intercept`` mounts the engaged
container's configMap, secret and emptyDir volumes on the laptop (FUSE), files written
there reach the app, read-only volumes refuse writes, big files and many files read
intact, and a deleted agent pod gives the reader EIO instead of a hang."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e._support import tp

pytestmark = [pytest.mark.root, pytest.mark.e2e]

NS = "default"
APP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: tpv-settings, namespace: default}
data: {settings.ini: "[web]\\ngreeting = hello from the configMap\\n"}
---
apiVersion: v1
kind: Secret
metadata: {name: tpv-secret, namespace: default}
stringData: {token: s3cr3t-t0ken}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: tpv-vol, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: tpv-vol}}
  template:
    metadata: {labels: {app: tpv-vol}}
    spec:
      containers:
      - name: web
        image: ghcr.io/telepresenceio/echo-server:latest
        ports: [{name: http, containerPort: 8080}]
        volumeMounts:
        - {name: settings, mountPath: /etc/tpv, readOnly: true}
        - {name: secret, mountPath: /var/run/secrets/tpv}
        - {name: scratch, mountPath: /var/tpv-data}
      volumes:
      - {name: settings, configMap: {name: tpv-settings, defaultMode: 0444}}
      - {name: secret, secret: {secretName: tpv-secret, defaultMode: 0604}}
      - {name: scratch, emptyDir: {}}
---
apiVersion: v1
kind: Service
metadata: {name: tpv-vol, namespace: default}
spec:
  selector: {app: tpv-vol}
  ports: [{name: http, port: 80, targetPort: http}]
"""

# Runs on the laptop: what a developer's process sees under $TELEPRESENCE_ROOT.
FILE_FACTS = """
import errno, hashlib, json, os, stat, sys
root = sys.argv[1]
def mode(p):
    return oct(stat.S_IMODE(os.stat(root + p).st_mode))
facts = {
    "settings": open(root + "/etc/tpv/settings.ini").read(),
    "settings_mode": mode("/etc/tpv/settings.ini"),
    "token": open(root + "/var/run/secrets/tpv/token").read(),
    "token_mode": mode("/var/run/secrets/tpv/token"),
    "top": sorted(os.listdir(root)),
}
try:
    open(root + "/etc/tpv/new.ini", "w")
    facts["readonly_write"] = "allowed"
except OSError as exc:
    facts["readonly_write"] = errno.errorcode[exc.errno]
with open(root + "/var/tpv-data/from-laptop.txt", "w") as f:
    f.write("written on the laptop")
print(json.dumps(facts))
"""

MAKE_DATA = """
import os, random
random.seed(8)
with open("/var/tpv-data/big.bin", "wb") as f:
    for _ in range(100):
        f.write(random.randbytes(1 << 20))
os.mkdir("/var/tpv-data/many")
for i in range(1000):
    with open(f"/var/tpv-data/many/f{i:04}.txt", "w") as f:
        f.write(f"file {i}\\n" * (i % 7 + 1))
"""

DIGESTS = """
import hashlib, os, sys
root = sys.argv[1]
h = hashlib.sha256()
with open(root + "/var/tpv-data/big.bin", "rb") as f:
    while chunk := f.read(1 << 20):
        h.update(chunk)
many = hashlib.sha256()
names = sorted(os.listdir(root + "/var/tpv-data/many"))
for name in names:
    with open(root + "/var/tpv-data/many/" + name, "rb") as f:
        many.update(name.encode() + f.read())
print(h.hexdigest(), len(names), many.hexdigest())
"""

# Reads the big file slowly until it ends or fails; says how.
SLOW_READER = """
import errno, sys, time
with open(sys.argv[1] + "/var/tpv-data/big.bin", "rb", buffering=0) as f:
    print("reading", flush=True)
    try:
        while f.read(1 << 20):
            time.sleep(0.15)
    except OSError as exc:
        print(errno.errorcode.get(exc.errno, exc.errno), flush=True)
        sys.exit(0)
print("finished", flush=True)
"""


def pod_name(cluster: Any) -> str:
    pods = json.loads(
        cluster.kubectl_ok("get", "pods", "-n", NS, "-l", "app=tpv-vol", "-o", "json")
    )["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return str(live[0]["metadata"]["name"])


def in_app(cluster: Any, *argv: str) -> str:
    return str(cluster.kubectl_ok("exec", "-n", NS, pod_name(cluster), "-c", "web", "--", *argv))


@pytest.fixture(scope="module")
def mounted(cluster: Any) -> Iterator[tuple[Any, str]]:
    cluster.kubectl_ok("apply", "-f", "-", input=APP)
    try:
        cluster.kubectl_ok("rollout", "status", "deployment/tpv-vol", "--timeout=90s")
        connect = tp(cluster, "connect", "-n", NS)
        assert connect.returncode == 0, connect.stderr
        engaged = tp(
            cluster,
            "intercept",
            "tpv-vol",
            "--port",
            "8080:http",
            "--env-file",
            "/tmp/tpv-vol.env",
        )
        assert engaged.returncode == 0, engaged.stderr
        found = re.search(r"Volume Mount Point\s*: (\S+)", engaged.stdout)
        assert found, engaged.stdout
        yield cluster, found.group(1)
    finally:
        tp(cluster, "quit")
        cluster.laptop("rm", "-f", "/tmp/tpv-vol.env")
        cluster.laptop("rmdir", "/tmp/tpv-ingest")  # made by the last test's --mount PATH
        cluster.kubectl("delete", "-f", "-", input=APP)


def test_volumes_appear_with_contents_and_modes(mounted: tuple[Any, str]) -> None:
    cluster, root = mounted
    result = cluster.laptop("python3", "-c", FILE_FACTS, root)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["settings"] == "[web]\ngreeting = hello from the configMap\n"
    assert facts["token"] == "s3cr3t-t0ken"
    in_pod = in_app(
        cluster, "stat", "-L", "-c", "%a", "/etc/tpv/settings.ini", "/var/run/secrets/tpv/token"
    ).split()
    assert [facts["settings_mode"], facts["token_mode"]] == [f"0o{m}" for m in in_pod]
    assert facts["top"] == ["etc", "var"]
    assert facts["readonly_write"] == "EROFS"
    # The file written on the laptop is the app's to read.
    assert in_app(cluster, "cat", "/var/tpv-data/from-laptop.txt") == "written on the laptop"
    env = cluster.laptop("cat", "/tmp/tpv-vol.env").stdout
    assert f"TELEPRESENCE_ROOT={root}" in env.splitlines()
    mounts = next(x for x in env.splitlines() if x.startswith("TELEPRESENCE_MOUNTS="))
    assert set(mounts.partition("=")[2].split(":")) >= {
        "/etc/tpv",
        "/var/run/secrets/tpv",
        "/var/tpv-data",
    }


def test_a_big_file_and_many_small_files_read_intact(mounted: tuple[Any, str]) -> None:
    cluster, root = mounted
    in_app(cluster, "python3", "-c", MAKE_DATA)
    expected = in_app(cluster, "python3", "-c", DIGESTS, "")
    got = cluster.laptop("python3", "-c", DIGESTS, root, timeout=120)
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == expected.split()
    assert got.stdout.split()[1] == "1000"


def test_agent_pod_deleted_mid_read_gives_eio_then_recovers(mounted: tuple[Any, str]) -> None:
    import subprocess

    cluster, root = mounted
    old = pod_name(cluster)
    reader = subprocess.Popen(
        cluster.laptop_argv("python3", "-c", SLOW_READER, root),
        env=cluster.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
        cluster.kubectl_ok("delete", "pod", "-n", NS, old, "--wait=false")
        outcome, _ = reader.communicate(timeout=30)  # EIO promptly, not a hang
        assert outcome.strip() == "EIO"
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    cluster.kubectl_ok("rollout", "status", "deployment/tpv-vol", "--timeout=90s")
    # The mount follows the engagement to the new pod's agent.
    retry = (
        "import sys, time\n"
        "for _ in range(60):\n"
        "    try:\n"
        "        print(open(sys.argv[1] + '/etc/tpv/settings.ini').read()); break\n"
        "    except OSError:\n"
        "        time.sleep(0.5)\n"
    )
    again = cluster.laptop("python3", "-c", retry, root)
    assert "hello from the configMap" in again.stdout
    left = tp(cluster, "leave", "tpv-vol")
    assert left.returncode == 0, left.stderr
    mounts = cluster.laptop("cat", "/proc/self/mounts").stdout
    assert root not in mounts
    assert cluster.laptop("test", "-e", root).returncode != 0  # the temp dir is gone too


def test_two_mounts_at_once_and_a_killed_engine_leaves_none(mounted: tuple[Any, str]) -> None:
    cluster, _ = mounted
    intercepted = tp(cluster, "intercept", "tpv-vol", "--port", "8080:http")
    assert intercepted.returncode == 0, intercepted.stderr
    found = re.search(r"Volume Mount Point\s*: (\S+)", intercepted.stdout)
    assert found, intercepted.stdout
    temp = found.group(1)
    engaged = tp(
        cluster, "ingest", "tpv-ingest", "--workload", "tpv-vol", "--mount", "/tmp/tpv-ingest"
    )
    assert engaged.returncode == 0, engaged.stderr
    assert "Volume Mount Point: /tmp/tpv-ingest" in engaged.stdout
    # ingest mounts read-only; both mounts serve the pod's files
    write = cluster.laptop("sh", "-c", "echo x > /tmp/tpv-ingest/var/tpv-data/nope")
    assert "Read-only file system" in write.stderr
    for root in (temp, "/tmp/tpv-ingest"):
        settings = cluster.laptop("cat", f"{root}/etc/tpv/settings.ini").stdout
        assert "hello from the configMap" in settings
    status = json.loads(tp(cluster, "status", "--output", "json").stdout)
    cluster.laptop("kill", "-9", str(status["engine"]["pid"]))
    # The mount processes and the helper see the engine go: no mount is left, and the
    # temp dir the engine made is gone too.
    gone = (
        "import os, sys, time\n"
        "for _ in range(50):\n"
        "    mounts = open('/proc/self/mounts').read()\n"
        "    if not any(p in mounts for p in sys.argv[1:]) and not os.path.exists(sys.argv[1]):\n"
        "        print('gone'); break\n"
        "    time.sleep(0.2)\n"
    )
    assert cluster.laptop("python3", "-c", gone, temp, "/tmp/tpv-ingest").stdout.strip() == "gone"
