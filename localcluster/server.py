"""The local cluster's one daemon: API server, controllers, kubelet, Service proxy, DNS.

    python -m localcluster.server --name N --state-dir DIR

``tp local-cluster up`` starts it inside the ``<N>-node`` netns. Everything shares one
in-memory Store inside one trio run. When the API answers and the ``default``
ServiceAccount exists it writes ``DIR/ready``; on SIGTERM/SIGINT it stops every pod
(grace, then SIGKILL), removes the pod namespaces and the nft table, and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
from pathlib import Path

import trio

from localcluster.node import (
    CLUSTER_DNS_IP,
    NODE_IP,
    ClusterNames,
    Kubelet,
    run_cluster_dns,
    run_proxy,
)

log = logging.getLogger("localcluster.server")

API_PORT = 6443


def api_url() -> str:
    return f"https://{NODE_IP}:{API_PORT}"


async def _wait_for_default_serviceaccount(store: object, seconds: float) -> None:
    from localcluster.store import NotFound

    with trio.move_on_after(seconds):
        while True:
            try:
                store.get("serviceaccounts", "default", "default")  # type: ignore[attr-defined]
                return
            except NotFound:
                await trio.sleep(0.05)
    log.warning("no default serviceaccount after %ss", seconds)


async def run_daemon(name: str, state_dir: Path, *, api_port: int = API_PORT) -> None:
    from localcluster.apiserver import serve_apiserver
    from localcluster.pki import ensure_pki, write_kubeconfig
    from localcluster.store import Store

    names = ClusterNames(name=name)
    store = Store(node_name=names.node_ns)
    pki = ensure_pki(state_dir)
    write_kubeconfig(state_dir / "kubeconfig", server=api_url(), pki=pki, cluster_name=f"tp-{name}")
    kubelet = Kubelet(
        store,
        names=names,
        state_dir=state_dir,
        token=pki.token,
        ca_pem=pki.ca_cert_pem,
        venv_bin=str(Path(sys.executable).parent),
    )
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_proxy, store, names.nft_table)
            await nursery.start(run_cluster_dns, store, CLUSTER_DNS_IP)
            await nursery.start(kubelet.run)
            from localcluster.controllers import run_controllers

            nursery.start_soon(
                functools.partial(
                    run_controllers,
                    store,
                    ca_cert_pem=pki.ca_cert_pem,
                    api_host=NODE_IP,
                    api_port=api_port,
                )
            )
            await nursery.start(
                functools.partial(
                    serve_apiserver,
                    store,
                    kubelet,
                    host=NODE_IP,
                    port=api_port,
                    pki=pki,
                    audit_log=state_dir / "audit.log",
                )
            )
            await _wait_for_default_serviceaccount(store, 30)
            (state_dir / "ready").write_text(f"{os.getpid()}\n")
            log.info("local cluster %s is up", name)
            async for signum in signals:
                log.info("signal %s: shutting down", signum)
                nursery.cancel_scope.cancel()
                break
    log.info("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m localcluster.server")
    parser.add_argument("--name", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    trio.run(run_daemon, args.name, args.state_dir)


if __name__ == "__main__":
    main()
