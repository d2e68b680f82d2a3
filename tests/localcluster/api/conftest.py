"""An in-process API server on 127.0.0.1 with a fake node, driven by real kubectl and kr8s."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from localcluster.apiserver import serve_apiserver
from localcluster.apiserver._admission import WebhookAdmission
from localcluster.controllers import bootstrap, run_controllers
from localcluster.pki import Pki, ensure_pki, write_kubeconfig
from localcluster.store import Store
from tests.localcluster.api.fakenode import FakeKubelet, FakeRuntime

KUBECTL = os.environ.get("KUBECTL", "kubectl")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return ensure_pki(tmp_path_factory.mktemp("pki"), extra_sans=["127.0.0.1"])


@pytest.fixture(scope="session")
def kube_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh HOME for kubectl (its dispatcher caches the server's version there)."""
    return tmp_path_factory.mktemp("home")


async def echo_server(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """A loopback TCP echo target for port-forward; half-closes after the client does."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                async for chunk in stream:
                    await stream.send_all(chunk)
                await stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


@dataclass(eq=False)
class Cluster:
    store: Store
    runtime: FakeRuntime
    kubelet: FakeKubelet
    kubeconfig: Path
    port: int
    audit_log: Path
    home: Path
    pki: Pki
    nursery: trio.Nursery
    webhook_addresses: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }

    async def kubectl(
        self, *args: str, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        result = await trio.run_process(
            [KUBECTL, *args],
            stdin=input,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=self.env,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout.decode()}\n{result.stderr.decode()}"
            )
        return result

    async def wait_for(self, predicate: Any, seconds: float = 15.0) -> None:
        """Poll ``predicate`` (a plain function of the store) until it holds."""
        for _ in range(int(seconds / 0.05)):
            if predicate():
                return
            await trio.sleep(0.05)
        raise AssertionError(f"condition not met within {seconds} s")

    def audit(self) -> list[dict[str, Any]]:
        import json

        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]


@pytest.fixture
async def cluster(
    pki: Pki, kube_home: Path, tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[Cluster]:
    addresses: dict[tuple[str, str], tuple[str, int]] = {}

    async def resolve(store: Store, namespace: str, name: str, port: int) -> tuple[str, int]:
        return addresses[(namespace, name)]

    store = Store(node_name="tpt-node", admit=WebhookAdmission(resolve=resolve))
    await bootstrap(store, ca_cert_pem=pki.ca_cert_pem)
    nursery.start_soon(
        lambda: run_controllers(store, ca_cert_pem=pki.ca_cert_pem, resync_seconds=1)
    )
    kubelet = FakeKubelet(store)
    nursery.start_soon(kubelet.run)
    echo_port = await nursery.start(echo_server)
    runtime = FakeRuntime(store, nursery, targets={8080: echo_port})
    audit = tmp_path / "audit.log"
    port = await nursery.start(
        lambda task_status: serve_apiserver(
            store,
            runtime,
            host="127.0.0.1",
            port=0,
            pki=pki,
            audit_log=audit,
            bookmark_interval=0.5,
            task_status=task_status,
        )
    )
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, server=f"https://127.0.0.1:{port}", pki=pki, cluster_name="tpt")
    yield Cluster(
        store=store,
        runtime=runtime,
        kubelet=kubelet,
        kubeconfig=kubeconfig,
        port=port,
        audit_log=audit,
        home=kube_home,
        pki=pki,
        nursery=nursery,
        webhook_addresses=addresses,
    )


def first_match(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in {text!r}"
    return match.group(1)
