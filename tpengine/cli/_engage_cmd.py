"""``tp intercept | replace | wiretap | ingest | leave | list`` (Telepresence's flags and
output formats)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import typer

from tpengine.cli._connect_cmd import engine_call
from tpengine.cli._output import OUTPUT_OPTION, OutputFormat, emit_structured, fail, key_value_block
from tpengine.engine._control_client import ControlError, EngineNotRunning
from tpengine.engine._envfile import SYNTAXES, EnvSyntaxError, render_env
from tpengine.engine._topod_spec import ToPodError, ToPodPort
from tpengine.httpfilter import FilterError, parse_filter

_TITLES = {"intercept": "Intercept", "replace": "Replace", "wiretap": "Wiretap", "ingest": "Ingest"}
_STATES = {
    "intercept": "intercepted",
    "replace": "replaced",
    "wiretap": "wiretapped",
    "ingest": "ingested",
}


def _call(method: str, params: dict[str, Any] | None = None) -> Any:
    try:
        return engine_call(method, params)
    except EngineNotRunning:
        fail("not connected: run tp connect first")
    except ControlError as exc:
        fail(str(exc))


def describe(engagement: dict[str, Any]) -> list[tuple[str, str]]:
    kind = engagement["kind"]
    rows = [
        (f"{_TITLES[kind]} name", engagement["name"]),
        ("State", engagement.get("state", "")),
        ("Workload kind", engagement.get("workload_kind", "")),
    ]
    if engagement.get("message"):
        rows.append(("Message", engagement["message"]))
    if engagement.get("mount_point"):
        rows.append(("Volume Mount Point", engagement["mount_point"]))
    elif engagement.get("mount_error"):
        rows.append(("Volume Mount Error", engagement["mount_error"]))
    pods = engagement.get("pods") or []
    local = engagement.get("local_ports") or []
    if kind != "ingest" and local:
        source = pods[0]["ip"] if pods else "(no pod yet)"
        rows.append(("Intercepting", f"{source} -> {engagement.get('address', '127.0.0.1')}"))
        rows += [("", f"    {p['local']} -> {p['container_port']} {p['protocol']}") for p in local]
        if not engagement.get("service") and pods:
            rows.append(("Address", f"{pods[0]['ip']}:{local[0]['container_port']}"))
    for line in _filter_lines(engagement.get("filter") or {}):
        rows.append(("Intercepting", line))
    return rows


def _filter_lines(data: dict[str, Any]) -> list[str]:
    from tpengine.httpfilter import HttpFilter

    return HttpFilter.from_json(data).describe()


def render_block(rows: list[tuple[str, str]], indent: int = 3) -> str:
    keyed = [(k, v) for k, v in rows if k]
    width = max(len(k) for k, _ in keyed)
    pad = " " * indent
    return "\n".join(f"{pad}{k.ljust(width)}: {v}" if k else f"{pad}{v}" for k, v in rows)


def parse_mount(value: str | None) -> dict[str, Any] | None:
    """``--mount``: true (the default: a fresh temp dir), false, or PATH[:ro]; the
    engine's ``mount`` request, None for false. A relative PATH is taken from here (the
    engine runs elsewhere)."""
    if value is None or value.lower() == "true":
        return {"path": None, "read_only": False}
    if value.lower() == "false":
        return None
    path, read_only = value, False
    if value.endswith(":ro"):
        path, read_only = value[: -len(":ro")], True
    if not path:
        fail("--mount: give true, false or PATH[:ro]", 2)
    return {"path": os.path.abspath(path), "read_only": read_only}


def _write_env(
    env: dict[str, str], env_file: Path | None, syntax: str, env_json: Path | None
) -> None:
    try:
        if env_file is not None:
            env_file.write_text(render_env(env, syntax))
        if env_json is not None:
            env_json.write_text(render_env(env, "json"))
    except EnvSyntaxError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write the environment: {exc.strerror}: {exc.filename}")


def _engage(
    kind: str,
    name: str,
    *,
    port: list[str] | None = None,
    service: str | None = None,
    workload: str | None = None,
    container: str | None = None,
    address: str | None = None,
    http_header: list[str] | None = None,
    http_path_equal: str | None = None,
    http_path_prefix: str | None = None,
    http_path_regex: str | None = None,
    namespace: str | None = None,
    env_file: Path | None = None,
    env_syntax: str = "docker",
    env_json: Path | None = None,
    mount: str | None = None,
    to_pod: list[str] | None = None,
    output: OutputFormat = OutputFormat.text,
    command: list[str] | None = None,
) -> None:
    """What every engagement command does; each passes its own options by name."""
    ports, headers, to_pod = port or [], http_header or [], to_pod or []
    path_equal, path_prefix, path_regex = http_path_equal, http_path_prefix, http_path_regex
    mount_request = parse_mount(mount)
    try:
        to_pod_ports = [str(ToPodPort.parse(p)) for p in to_pod]
    except ToPodError as exc:
        fail(str(exc))
    if env_syntax not in SYNTAXES:
        fail(f"--env-syntax {env_syntax!r}: choose one of {', '.join(SYNTAXES)}")
    try:
        http = parse_filter(
            headers, path_equal=path_equal, path_prefix=path_prefix, path_regex=path_regex
        )
    except FilterError as exc:
        fail(str(exc))
    params = {
        "kind": kind,
        "name": name,
        "workload": workload,
        "namespace": namespace,
        "service": service,
        "container": container,
        "ports": ports or None,
        "address": address,
        "filter": http.to_json(),
        "to_pod": to_pod_ports,
        "mount": mount_request,
    }
    result = _call("engage", params)
    env: dict[str, str] = {}
    if env_file or env_json or command:
        got = _call(
            "workload_env",
            {"namespace": result.get("namespace"), "workload": result.get("workload")},
        )
        env = dict(got.get("env") or {})
        if result.get("mount_point"):
            # Telepresence's variables: the mount point, and the container's mountPaths
            # (each mirrored under it), colon-separated.
            env["TELEPRESENCE_ROOT"] = result["mount_point"]
            env["TELEPRESENCE_MOUNTS"] = ":".join(result.get("mounts") or [])
        _write_env(env, env_file, env_syntax, env_json)
    if output is not OutputFormat.text:
        emit_structured(result, output)
    else:
        typer.echo(f"Using {result.get('workload_kind') or 'workload'} {result.get('workload')}")
        typer.echo(render_block(describe(result)))
    if command:
        code = subprocess.call(command, env={**os.environ, **env})
        _call("leave", {"name": name})
        raise typer.Exit(code)


PORT = typer.Option([], "--port", "-p", help="LOCAL[:SVCPORT] (repeatable); default 8080.")
SERVICE = typer.Option(None, "--service", help="The service, when several select the workload.")
WORKLOAD = typer.Option(None, "--workload", "-w", help="The workload, when its name differs.")
CONTAINER = typer.Option(
    None, "--container", "-c", help="The container (env, mounts; replace: removed)."
)
ADDRESS = typer.Option(
    None, "--address", help="Local address to send traffic to (default 127.0.0.1)."
)
HEADER = typer.Option(
    [], "--http-header", help="Only requests with this header: K=V or 'K: V' (repeatable, ANDed)."
)
PATH_EQUAL = typer.Option(None, "--http-path-equal", help="Only requests with this path.")
PATH_PREFIX = typer.Option(None, "--http-path-prefix", help="Only requests whose path starts so.")
PATH_REGEX = typer.Option(None, "--http-path-regex", help="Only requests whose path matches.")
NAMESPACE = typer.Option(
    None, "--namespace", "-n", help="The workload's namespace (default: the connected one)."
)
ENV_FILE = typer.Option(None, "--env-file", "-e", help="Write the remote environment to this file.")
ENV_SYNTAX = typer.Option("docker", "--env-syntax", help="docker, compose, sh, csh, cmd or json.")
ENV_JSON = typer.Option(None, "--env-json", "-j", help="Write the remote environment as JSON.")
MOUNT = typer.Option(
    None,
    "--mount",
    help="Mount the container's volumes: true (a temp dir, the default), false, or PATH[:ro].",
)
TO_POD = typer.Option(
    [], "--to-pod", help="PORT: localhost:PORT reaches the pod's localhost:PORT (repeatable)."
)
COMMAND = typer.Argument(
    None, help="Run this with the remote environment; the engagement ends when it exits."
)


def intercept(
    name: str,
    port: list[str] = PORT,
    service: str = SERVICE,
    workload: str = WORKLOAD,
    container: str = CONTAINER,
    address: str = ADDRESS,
    http_header: list[str] = HEADER,
    http_path_equal: str = PATH_EQUAL,
    http_path_prefix: str = PATH_PREFIX,
    http_path_regex: str = PATH_REGEX,
    namespace: str = NAMESPACE,
    env_file: Path = ENV_FILE,
    env_syntax: str = ENV_SYNTAX,
    env_json: Path = ENV_JSON,
    mount: str = MOUNT,
    to_pod: list[str] = TO_POD,
    replace: bool = typer.Option(False, "--replace", help="Deprecated: use tp replace."),
    output: OutputFormat = OUTPUT_OPTION,
    command: list[str] = COMMAND,
) -> None:
    """Send a workload's traffic (or only matching HTTP requests) to the laptop."""
    if replace:
        typer.echo("tp intercept --replace is deprecated: use tp replace", err=True)
    options = dict(locals())
    options.pop("name")
    options.pop("replace")
    _engage("replace" if replace else "intercept", name, **options)


def wiretap(
    name: str,
    port: list[str] = PORT,
    service: str = SERVICE,
    workload: str = WORKLOAD,
    container: str = CONTAINER,
    address: str = ADDRESS,
    http_header: list[str] = HEADER,
    http_path_equal: str = PATH_EQUAL,
    http_path_prefix: str = PATH_PREFIX,
    http_path_regex: str = PATH_REGEX,
    namespace: str = NAMESPACE,
    env_file: Path = ENV_FILE,
    env_syntax: str = ENV_SYNTAX,
    env_json: Path = ENV_JSON,
    mount: str = MOUNT,
    output: OutputFormat = OUTPUT_OPTION,
    command: list[str] = COMMAND,
) -> None:
    """Get a read-only copy of a workload's traffic (the cluster's copy still answers)."""
    options = dict(locals())
    options.pop("name")
    _engage("wiretap", name, **options)


def replace(
    name: str,
    port: list[str] = PORT,
    workload: str = WORKLOAD,
    container: str = CONTAINER,
    address: str = ADDRESS,
    namespace: str = NAMESPACE,
    env_file: Path = ENV_FILE,
    env_syntax: str = ENV_SYNTAX,
    env_json: Path = ENV_JSON,
    mount: str = MOUNT,
    to_pod: list[str] = TO_POD,
    output: OutputFormat = OUTPUT_OPTION,
    command: list[str] = COMMAND,
) -> None:
    """Replace a workload's container with a process on the laptop."""
    options = dict(locals())
    options.pop("name")
    _engage("replace", name, **options)


def ingest(
    name: str,
    workload: str = WORKLOAD,
    container: str = CONTAINER,
    namespace: str = NAMESPACE,
    env_file: Path = ENV_FILE,
    env_syntax: str = ENV_SYNTAX,
    env_json: Path = ENV_JSON,
    mount: str = MOUNT,
    to_pod: list[str] = TO_POD,
    output: OutputFormat = OUTPUT_OPTION,
    command: list[str] = COMMAND,
) -> None:
    """Borrow a workload's environment and volumes without moving traffic."""
    options = dict(locals())
    options.pop("name")
    _engage("ingest", name, **options)


def leave(name: str) -> None:
    """End an engagement."""
    _call("leave", {"name": name})
    typer.echo(f"Left {name}")


def list_(
    namespace: str = typer.Option(
        None, "--namespace", "-n", help="Another namespace than the connected one."
    ),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """List the namespace's workloads and their engagements (Telepresence's format)."""
    data = _call("list", {"namespace": namespace})
    if output is not OutputFormat.text:
        emit_structured(data, output)
        return
    typer.echo(render_list(data))


def render_list(data: dict[str, Any]) -> str:
    workloads = data.get("workloads") or []
    if not workloads:
        return "No Workloads (Deployments, StatefulSets, ReplicaSets)"
    by_workload: dict[str, list[dict[str, Any]]] = {}
    for engagement in data.get("engagements") or []:
        by_workload.setdefault(engagement["workload"], []).append(engagement)
    heads = [f"{w['kind'].lower()} {w['name']}" for w in workloads]
    width = max(len(h) for h in heads)
    lines = []
    for head, workload in zip(heads, workloads, strict=True):
        engaged = by_workload.get(workload["name"], [])
        if engaged:
            states = sorted({_STATES[e["kind"]] for e in engaged})
            lines.append(f"{head.ljust(width)}: {', '.join(states)}")
            for engagement in engaged:
                lines.append(render_block(describe(engagement)))
        else:
            installed = "already installed" if workload["agent_installed"] else "not yet installed"
            if workload.get("unable"):
                agent = "installed" if workload["agent_installed"] else "not installed"
                state = f"unable to engage (traffic-agent {agent}): {workload['unable']}"
            else:
                state = f"ready to engage (traffic-agent {installed})"
            lines.append(f"{head.ljust(width)}: {state}")
    return "\n".join(lines)


__all__ = ["ingest", "intercept", "json", "key_value_block", "leave", "list_", "replace", "wiretap"]
