"""``tp install``, ``tp uninstall`` and ``tp gather-logs``."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any

import trio
import typer

from tpengine.cli._output import fail
from tpengine.engine._paths import logs_dir


async def _api(kubeconfig: str | None, context: str | None) -> Any:
    from tpengine.engine._kube import open_api

    api, _ = await open_api(kubeconfig=kubeconfig, context=context, namespace="default")
    return api


async def _progress(text: str) -> None:
    typer.echo(f"  {text}", err=True)
    await trio.lowlevel.checkpoint()


def install(
    manager_namespace: str = typer.Option(
        "tpengine", "--manager-namespace", help="Namespace of the traffic-manager."
    ),
    image: str = typer.Option(
        None, "--image", envvar="TP_IMAGE", help="Image of the traffic-manager."
    ),
    kubeconfig: str = typer.Option(None, "--kubeconfig"),
    context: str = typer.Option(None, "--context"),
) -> None:
    """Install (or upgrade) the traffic-manager into the cluster."""

    from tpengine.engine._session import SessionError
    from tpengine.kube.install import InstallError, install_manager
    from tpengine.kube.manifests import DEFAULT_IMAGE

    async def run() -> str:
        api = await _api(kubeconfig, context)
        outcome = await install_manager(
            api, namespace=manager_namespace, image=image or DEFAULT_IMAGE, progress=_progress
        )
        return outcome.value

    try:
        outcome = trio.run(run)
    except (SessionError, InstallError) as exc:
        fail(str(exc))
    typer.echo(f"Traffic-manager {outcome} in namespace {manager_namespace}")


def uninstall(
    manager_namespace: str = typer.Option(
        "tpengine", "--manager-namespace", help="Namespace of the traffic-manager."
    ),
    kubeconfig: str = typer.Option(None, "--kubeconfig"),
    context: str = typer.Option(None, "--context"),
    agent: str = typer.Option(None, "--agent", help="Remove the traffic-agent of this workload."),
    all_agents: bool = typer.Option(False, "--all-agents", help="Remove every traffic-agent."),
) -> None:
    """Remove the traffic-manager (or, with --agent/--all-agents, agents) from the cluster."""
    if agent or all_agents:
        typer.echo(
            "tp uninstall: removing agents is not available yet in this version of tpengine",
            err=True,
        )
        raise typer.Exit(2)

    from tpengine.engine._session import SessionError
    from tpengine.kube.install import InstallError, uninstall_manager

    async def run() -> list[str]:
        api = await _api(kubeconfig, context)
        return await uninstall_manager(api, namespace=manager_namespace, progress=_progress)

    try:
        removed = trio.run(run)
    except (SessionError, InstallError) as exc:
        fail(str(exc))
    typer.echo(
        f"Traffic-manager removed from namespace {manager_namespace}"
        if removed
        else "Nothing to remove"
    )


def gather_logs(
    output_file: Path = typer.Option(None, "--output-file", "-o", help="Where to write the zip."),
) -> None:
    """Zip the logs of every tpengine process on this machine."""
    logs = logs_dir()
    target = output_file or Path(f"tpengine-logs-{time.strftime('%Y%m%dT%H%M%S')}.zip")
    files = sorted(p for p in logs.iterdir() if p.is_file())
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, arcname=path.name)
    typer.echo(f"Wrote {len(files)} log files from {logs} to {target}")
