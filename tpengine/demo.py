"""``./dev demo``: the laptop joins a cluster's network.

Brings the local cluster ``tp`` up, deploys a web Deployment + Service (echo-server
image) with kubectl from the laptop, shows that the laptop cannot reach it, runs
``tp connect`` in the laptop, reaches the Service by short name, full name and ClusterIP
and a pod by IP, shows ``tp status``, quits, shows that nothing is left, and takes the
cluster down again — also when a step fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

NAME = "tp"
TP = [sys.executable, "-c", "from tpengine.cli import main; main()"]

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: ghcr.io/telepresenceio/echo-server:latest
        ports: [{containerPort: 8080, name: http}]
        readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: curl}
spec:
  containers:
  - {name: curl, image: busybox, command: [sleep, "3600"]}
"""

HANDLER = """
import http.server, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"Reply from the laptop (Susan's local build)\\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 8080), H)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

FROM_POD = (
    "import urllib.request\n"
    "for user in ('susan', 'bob'):\n"
    "    r = urllib.request.Request('http://web.default.svc.cluster.local/', headers={'x-user': user})\n"
    "    print(user, '->', urllib.request.urlopen(r, timeout=10).read().decode().splitlines()[0])\n"
)


def start_handler() -> subprocess.Popen[str]:
    """The local handler, in the laptop; it ends when its stdin closes."""
    print(
        "laptop$ python3 handler.py  # answers 'Reply from the laptop' on 127.0.0.1:8080",
        flush=True,
    )
    handler = subprocess.Popen(
        [*TP, "local-cluster", "exec", "--", "python3", "-c", HANDLER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert handler.stdout is not None
    handler.stdout.readline()
    return handler


CURL = (
    "import urllib.request; "
    "print(urllib.request.urlopen('http://web.default.svc.cluster.local/', timeout=5).read().decode())"
)


def step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def tp(*args: str, input: str | None = None) -> None:
    print("$ tp " + " ".join(args), flush=True)
    subprocess.run([*TP, *args], input=input, text=True, check=True)


def kubectl(*args: str, input: str | None = None) -> None:
    tp("local-cluster", "exec", "--", "kubectl", *args, input=input)


def laptop(*argv: str, check: bool = True) -> str:
    """Run a command in the laptop (its network and mount namespace); show and return its output."""
    shown = ["tp", *argv[len(TP) :]] if list(argv[: len(TP)]) == TP else list(argv)
    print("laptop$ " + " ".join(shown), flush=True)
    result = subprocess.run(
        [*TP, "local-cluster", "exec", "--", *argv], text=True, capture_output=True
    )
    output = (result.stdout + result.stderr).rstrip()
    if output:
        print(output, flush=True)
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(
            result.returncode, [*TP, "local-cluster", "exec", "--", *argv]
        )
    return result.stdout


def kubectl_output(*args: str) -> str:
    return subprocess.run(
        [*TP, "local-cluster", "exec", "--", "kubectl", *args],
        text=True,
        capture_output=True,
        check=True,
    ).stdout


def main() -> None:
    if os.geteuid() != 0:
        sys.exit(
            "tpengine demo: the local cluster needs root (network namespaces): run ./dev demo as root"
        )
    started = time.monotonic()
    try:
        step("Bring up the local cluster (network namespaces, API server, kubelet, DNS)")
        tp("local-cluster", "up")
        step("Deploy a web Deployment + Service with kubectl, from the laptop")
        kubectl("apply", "-f", "-", input=APP)
        kubectl("rollout", "status", "deploy/web", "--timeout=60s")
        kubectl("wait", "--for=condition=Ready", "pod/curl", "--timeout=60s")
        step("Show it")
        kubectl("get", "pods,svc,endpoints", "-o", "wide")
        step("Call the Service by name from a pod")
        kubectl("exec", "curl", "--", "python3", "-c", CURL)
        step("The laptop is outside the cluster's network: no name, no route")
        laptop("curl", "-sS", "--max-time", "2", "http://web/", check=False)
        step("tp connect: the laptop joins the cluster's network")
        laptop(*TP, "connect", "-n", "default")
        cluster_ip = kubectl_output("get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}")
        pod_ip = kubectl_output(
            "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].status.podIP}"
        )
        for url in (
            "http://web/",
            "http://web.default.svc.cluster.local/",
            f"http://{cluster_ip}/",
            f"http://{pod_ip}:8080/",
        ):
            step(f"curl {url} from the laptop")
            laptop("curl", "-sS", "--max-time", "10", url)
        step("tp status")
        laptop(*TP, "status")
        step("A developer's handler on the laptop, and tp intercept with a header filter")
        handler = start_handler()
        try:
            laptop(*TP, "intercept", "web", "--port", "8080:http", "--http-header", "x-user=susan")
            kubectl("rollout", "status", "deploy/web", "--timeout=60s")
            step("Susan's request reaches the laptop; everyone else's the cluster")
            laptop("curl", "-sS", "--max-time", "10", "-H", "x-user: susan", "http://web/")
            laptop("curl", "-sS", "--max-time", "10", "http://web/")
            step("The same from inside the cluster, through the Service")
            kubectl("exec", "curl", "--", "python3", "-c", FROM_POD)
            step("tp list")
            laptop(*TP, "list")
            step("tp leave: all traffic back to the cluster")
            laptop(*TP, "leave", "web")
            laptop("curl", "-sS", "--max-time", "10", "-H", "x-user: susan", "http://web/")
        finally:
            handler.communicate("", timeout=20)
        step("tp quit: the TUN device, routes and DNS change are gone")
        laptop(*TP, "quit")
        laptop("ip", "-brief", "link")
        laptop("cat", "/etc/resolv.conf")
    except subprocess.CalledProcessError as exc:
        print(
            f"\ntpengine demo: step failed (exit {exc.returncode}): {' '.join(map(str, exc.cmd[3:]))}",
            file=sys.stderr,
        )
        code = 1
    else:
        code = 0
    finally:
        step("Take the local cluster down")
        subprocess.run(
            [*TP, "local-cluster", "exec", "--", *TP, "quit"], check=False, capture_output=True
        )
        subprocess.run([*TP, "local-cluster", "down"], check=False)
    print(
        f"\ntpengine demo: {'done' if code == 0 else 'FAILED'} in {time.monotonic() - started:.1f}s"
    )
    sys.exit(code)


if __name__ == "__main__":
    main()
