"""``./dev demo``: the built-in local cluster with a small sample application.

Brings the local cluster ``tp`` up, deploys a web Deployment + Service (echo-server
image) with kubectl from the laptop, shows it, sends a request to the Service from a
pod (the laptop has no route to the cluster until ``tp connect`` exists), and takes the
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
        step("Call the Service by name from a pod (the laptop has no route until `tp connect`)")
        kubectl("exec", "curl", "--", "python3", "-c", CURL)
        kubectl("logs", "deploy/web", "--tail=3")
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
        subprocess.run([*TP, "local-cluster", "down"], check=False)
    print(
        f"\ntpengine demo: {'done' if code == 0 else 'FAILED'} in {time.monotonic() - started:.1f}s"
    )
    sys.exit(code)


if __name__ == "__main__":
    main()
