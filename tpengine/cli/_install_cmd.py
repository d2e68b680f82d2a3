"""``tp install``, ``tp uninstall`` and ``tp gather-logs``."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any

import typer

from tpengine.cli._config_cmd import load_config_or_fail
from tpengine.cli._output import OUTPUT_OPTION, OutputFormat, emit_structured, fail
from tpengine.engine._paths import logs_dir


async def _api(kubeconfig: str | None, context: str | None) -> Any:
    from tpengine.engine._kube import open_api

    api, _ = await open_api(kubeconfig=kubeconfig, context=context, namespace="default")
    return api


async def _progress(text: str) -> None:
    import trio

    typer.echo(f"  {text}", err=True)
    await trio.lowlevel.checkpoint()


def install(
    manager_namespace: str = typer.Option(
        None,
        "--manager-namespace",
        help="Namespace of the traffic-manager (default: the config's, else tpengine).",
    ),
    image: str = typer.Option(
        None, "--image", envvar="TP_IMAGE", help="Image of the traffic-manager."
    ),
    kubeconfig: str = typer.Option(None, "--kubeconfig"),
    context: str = typer.Option(None, "--context"),
) -> None:
    """Install (or upgrade) the traffic-manager into the cluster."""
    import trio

    from tpengine.engine._session import SessionError
    from tpengine.kube.install import InstallError, install_manager
    from tpengine.kube.manifests import DEFAULT_IMAGE

    config = load_config_or_fail()
    manager_namespace = manager_namespace or config.manager_namespace
    chosen_image = image or config.image or DEFAULT_IMAGE

    async def run() -> str:
        api = await _api(kubeconfig, context)
        outcome = await install_manager(
            api, namespace=manager_namespace, image=chosen_image, progress=_progress
        )
        return outcome.value

    try:
        outcome = trio.run(run)
    except (SessionError, InstallError) as exc:
        fail(str(exc))
    typer.echo(f"Traffic-manager {outcome} in namespace {manager_namespace}")


def uninstall(
    manager_namespace: str = typer.Option(
        None,
        "--manager-namespace",
        help="Namespace of the traffic-manager (default: the config's, else tpengine).",
    ),
    kubeconfig: str = typer.Option(None, "--kubeconfig"),
    context: str = typer.Option(None, "--context"),
    agent: str = typer.Option(None, "--agent", help="Remove the traffic-agent of this workload."),
    all_agents: bool = typer.Option(
        False, "--all-agents", help="Remove every traffic-agent, in every namespace."
    ),
    namespace: str = typer.Option(
        None, "--namespace", "-n", help="Namespace of --agent's workload (default: the context's)."
    ),
) -> None:
    """Remove the traffic-manager (or, with --agent/--all-agents, agents) from the cluster."""
    import trio

    if agent and all_agents:
        fail("give --agent WORKLOAD or --all-agents, not both")
    if agent or all_agents:
        _uninstall_agents(agent, namespace, kubeconfig, context)
        return

    from tpengine.engine._session import SessionError
    from tpengine.kube.install import InstallError, uninstall_manager

    manager_namespace = manager_namespace or load_config_or_fail().manager_namespace

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


def loglevel(
    level: str = typer.Argument(..., help="error, warning, info, debug or trace."),
    duration: str = typer.Option(
        "30m", "--duration", "-d", help="How long before the start level returns (0: never)."
    ),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Set the engine's log level for a while (Telepresence's loglevel)."""
    from tpengine.engine._control_client import ControlError, EngineNotRunning, call_engine_sync

    try:
        result = call_engine_sync("log_level", {"level": level, "duration": duration})
    except EngineNotRunning:
        fail("no engine is running (run tp connect)")
    except ControlError as exc:
        fail(str(exc))
    if output is not OutputFormat.text:
        emit_structured(result, output)
        return
    until = "until the engine stops" if result["seconds"] is None else f"for {duration}"
    typer.echo(f"Engine log level set to {result['level']} {until}")


def _uninstall_agents(
    agent: str | None, namespace: str | None, kubeconfig: str | None, context: str | None
) -> None:
    """Take our annotations off the workloads' pod templates; their pods restart without
    the traffic-agent (the webhook injects only into marked pods)."""
    import trio

    from tpengine.engine._kube import open_api
    from tpengine.engine._session import SessionError
    from tpengine.kube.agents import (
        AGENT_ANNOTATION,
        AgentRolloutError,
        agent_workloads,
        mark_for_agent,
        wait_rolled_out,
    )
    from tpengine.kube.objects import get_workload

    async def one(api: Any, ns: str, name: str) -> list[dict[str, Any]]:
        found = await get_workload(api, ns, name)
        if found is None:
            raise SessionError(f"no workload named {name!r} in namespace {ns!r}")
        annotations = found["spec"]["template"].get("metadata", {}).get("annotations")
        if AGENT_ANNOTATION not in (annotations or {}):
            raise SessionError(f"{found['kind']} {name} in namespace {ns} has no traffic-agent")
        return [found]

    async def run() -> int:
        api, target = await open_api(kubeconfig=kubeconfig, context=context, namespace=namespace)
        workloads = (
            await one(api, target.namespace, agent) if agent else await agent_workloads(api, None)
        )
        for workload in workloads:
            meta = workload["metadata"]
            await _progress(
                f"Removing the traffic-agent from {workload['kind']} {meta['name']}"
                f" in namespace {meta['namespace']}"
            )
            try:
                if await mark_for_agent(api, workload, None):
                    await wait_rolled_out(api, workload)
            except AgentRolloutError as exc:
                raise SessionError(str(exc)) from None
        return len(workloads)

    try:
        removed = trio.run(run)
    except SessionError as exc:
        fail(str(exc))
    if agent:
        typer.echo(f"Traffic-agent removed from {agent}")
    else:
        typer.echo(
            f"Traffic-agents removed from {removed} workloads" if removed else "Nothing to remove"
        )
