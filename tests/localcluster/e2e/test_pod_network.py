"""From inside a pod: Services by ClusterIP and name, headless StatefulSets, UDP, DNS."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest

pytestmark = [pytest.mark.root, pytest.mark.e2e]

NS = "e2e-net"

MANIFESTS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: jmalloc/echo-server
        env: [{{name: PORT, value: "8081"}}]
        ports: [{{containerPort: 8081, name: http}}]
        readinessProbe: {{tcpSocket: {{port: 8081}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {NS}}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{name: http, port: 8080}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: {NS}}}
spec:
  serviceName: db
  replicas: 2
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      containers:
      - name: db
        image: ghcr.io/telepresenceio/echo-server
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: udp, namespace: {NS}, labels: {{app: udp}}}}
spec:
  containers:
  - name: udp
    image: busybox
    command:
    - python3
    - -c
    - |
      import socket
      s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
      s.bind(("0.0.0.0", 5353))
      while True:
          data, peer = s.recvfrom(2048)
          s.sendto(b"pong:" + data, peer)
    ports: [{{containerPort: 5353, protocol: UDP, name: dgram}}]
---
apiVersion: v1
kind: Service
metadata: {{name: udp, namespace: {NS}}}
spec:
  selector: {{app: udp}}
  ports: [{{name: dgram, port: 9999, targetPort: dgram, protocol: UDP}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {NS}}}
spec:
  containers:
  - {{name: client, image: busybox, command: [sleep, "3600"]}}
"""

HTTP_SPREAD = """
import collections, sys, urllib.request
seen = collections.Counter()
for _ in range(int(sys.argv[2])):
    body = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
    seen[body.splitlines()[0]] += 1
for line, n in seen.items():
    print(n, line)
"""

UDP_PING = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(b"ping", (sys.argv[1], 9999))
print(s.recvfrom(2048)[0].decode())
"""

DNS_TCP = f"""
import dns.message, dns.query
reply = dns.query.tcp(dns.message.make_query("web.{NS}.svc.cluster.local", "A"), "10.96.0.10", timeout=5)
print(*[r.to_text() for rrset in reply.answer for r in rrset])
"""

RESOLVE = """
import socket, sys
for name in sys.argv[1:]:
    try:
        print(name, sorted(socket.gethostbyname_ex(name)[2]))
    except OSError as exc:
        print(name, "error", exc.errno)
"""


@pytest.fixture(scope="module")
def net(cluster: Any) -> Any:
    cluster.kubectl_ok("apply", "-f", "-", input=MANIFESTS)
    cluster.kubectl_ok("rollout", "status", "-n", NS, "deploy/web", "--timeout=60s")
    cluster.kubectl_ok("rollout", "status", "-n", NS, "statefulset/db", "--timeout=60s")
    cluster.kubectl_ok(
        "wait", "-n", NS, "--for=condition=Ready", "pod/client", "pod/udp", "--timeout=60s"
    )
    return cluster


def _ip(cluster: Any, kind: str, name: str) -> str:
    obj = json.loads(cluster.kubectl_ok("get", kind, "-n", NS, name, "-o", "json"))
    return obj["spec"]["clusterIP"] if kind == "svc" else obj["status"]["podIP"]


def _spread(cluster: Any, pod: str, url: str, n: int = 30) -> Counter[str]:
    result = cluster.in_pod(NS, pod, ["python3", "-c", HTTP_SPREAD, url, str(n)])
    assert result.returncode == 0, result.stderr
    counts: Counter[str] = Counter()
    for line in result.stdout.splitlines():
        n_, _, who = line.partition(" ")
        counts[who] = int(n_)
    return counts


def test_service_cluster_ip_and_name_reach_its_pods_load_balanced(net: Any) -> None:
    pods = json.loads(net.kubectl_ok("get", "pods", "-n", NS, "-l", "app=web", "-o", "json"))[
        "items"
    ]
    expected = {f"Request served by {p['metadata']['name']}" for p in pods}
    by_ip = _spread(net, "client", f"http://{_ip(net, 'svc', 'web')}/")
    by_name = _spread(net, "client", f"http://web.{NS}.svc.cluster.local/")
    by_short = _spread(net, "client", "http://web/")
    for counts in (by_ip, by_name, by_short):
        assert set(counts) == expected  # every request answered, by both pods
        assert sum(counts.values()) == 30


def test_a_pod_reaches_itself_through_its_service(net: Any) -> None:
    pod = json.loads(net.kubectl_ok("get", "pods", "-n", NS, "-l", "app=web", "-o", "json"))[
        "items"
    ][0]
    counts = _spread(net, pod["metadata"]["name"], f"http://{_ip(net, 'svc', 'web')}/", n=20)
    assert sum(counts.values()) == 20


def test_headless_statefulset_pods_resolve_by_name(net: Any) -> None:
    ips = {name: _ip(net, "pod", name) for name in ("db-0", "db-1")}
    result = net.in_pod(
        NS, "client", ["python3", "-c", RESOLVE, "db-0.db", f"db-1.db.{NS}.svc.cluster.local", "db"]
    )
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["db-0.db"] == str([ips["db-0"]])
    assert lines[f"db-1.db.{NS}.svc.cluster.local"] == str([ips["db-1"]])
    assert lines["db"] == str(sorted(ips.values()))


def test_udp_service_answers(net: Any) -> None:
    for target in (_ip(net, "svc", "udp"), "udp"):
        result = net.in_pod(NS, "client", ["python3", "-c", UDP_PING, target])
        assert result.stdout.strip() == "pong:ping", result.stderr


def test_cluster_dns_answers_cluster_names_only(net: Any) -> None:
    svc_ip = _ip(net, "svc", "web")
    result = net.in_pod(
        NS,
        "client",
        ["python3", "-c", RESOLVE, "kubernetes.default", "example.com", "nope.svc.cluster.local"],
    )
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["kubernetes.default"] == "['10.96.0.1']"
    assert lines["example.com"].startswith("error")  # never forwarded upstream
    assert lines["nope.svc.cluster.local"].startswith("error")
    ptr = net.in_pod(
        NS,
        "client",
        ["python3", "-c", f"import socket; print(socket.gethostbyaddr('{svc_ip}')[0])"],
    )
    assert ptr.stdout.strip() == f"web.{NS}.svc.cluster.local"
    over_tcp = net.in_pod(NS, "client", [sys.executable, "-c", DNS_TCP])
    assert over_tcp.stdout.split() == [svc_ip], over_tcp.stderr
    resolv = net.in_pod(NS, "client", ["cat", "/etc/resolv.conf"]).stdout
    assert f"search {NS}.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert "options ndots:5" in resolv


def test_the_node_reaches_a_service_cluster_ip(net: Any) -> None:
    # The API server lives in the node netns and calls admission webhooks by ClusterIP.
    url = f"http://{_ip(net, 'svc', 'web')}/"
    result = subprocess.run(
        ["ip", "netns", "exec", f"{net.name}-node", "python3", "-c", HTTP_SPREAD, url, "10"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert sum(int(line.split()[0]) for line in result.stdout.splitlines()) == 10


GATED = f"""
apiVersion: v1
kind: Pod
metadata: {{name: gated, namespace: {NS}, labels: {{app: gated}}}}
spec:
  containers:
  - name: web
    image: ghcr.io/telepresenceio/echo-server
    readinessProbe: {{exec: {{command: [test, -f, /tmp/ready]}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: gated, namespace: {NS}}}
spec:
  selector: {{app: gated}}
  ports: [{{port: 80, targetPort: 8080}}]
"""

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10).close()
    print("connected")
except OSError as exc:
    print(type(exc).__name__)
"""


def test_readiness_gates_the_service_and_unserved_ports_are_refused(net: Any) -> None:
    net.kubectl_ok("apply", "-f", "-", input=GATED)
    net.kubectl_ok(
        "wait", "-n", NS, "--for=condition=PodReadyToStartContainers", "pod/gated", "--timeout=60s"
    )
    ip = _ip(net, "svc", "gated")
    # Not ready: no endpoint, so the ClusterIP refuses at once (kube-proxy's REJECT).
    assert (
        net.in_pod(NS, "client", ["python3", "-c", CONNECT, ip, "80"]).stdout.strip()
        == "ConnectionRefusedError"
    )
    net.kubectl_ok("exec", "-n", NS, "gated", "--", "touch", "/tmp/ready")
    net.kubectl_ok("wait", "-n", NS, "--for=condition=Ready", "pod/gated", "--timeout=60s")
    deadline = time.monotonic() + 20
    while (
        answer := net.in_pod(NS, "client", ["python3", "-c", CONNECT, ip, "80"]).stdout.strip()
    ) != "connected":
        assert time.monotonic() < deadline, answer
        time.sleep(0.2)
    # A port the Service does not serve is refused too, not left to time out.
    assert (
        net.in_pod(NS, "client", ["python3", "-c", CONNECT, ip, "81"]).stdout.strip()
        == "ConnectionRefusedError"
    )
