"""``tp connect``, ``tp status``, ``tp quit``: start, show and stop the engine."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import typer

from tpengine.cli._config_cmd import load_config_or_fail
from tpengine.cli._output import OUTPUT_OPTION, OutputFormat, emit_structured, fail, key_value_block
from tpengine.config import is_namespace_name
from tpengine.engine._control_client import ControlError, EngineNotRunning, call_engine_sync
from tpengine.engine._paths import logs_dir

ENGINE_START_TIMEOUT = 15.0
ENGINE_EXIT_TIMEOUT = 10.0  # a failed engine undoing what it made


def engine_call(
    method: str, params: dict[str, Any] | None = None, *, on_progress: Any = None
) -> Any:
    """Call the engine from synchronous CLI code; EngineNotRunning when there is none."""
    return call_engine_sync(method, params, on_progress=on_progress)


def connect(
    namespace: str = typer.Option(
        None, "--namespace", "-n", help="Namespace of engagements and of short DNS names."
    ),
    kubeconfig: str = typer.Option(None, "--kubeconfig", help="Path to the kubeconfig file."),
    context: str = typer.Option(None, "--context", help="The kubeconfig context to use."),
    manager_namespace: str = typer.Option(
        None,
        "--manager-namespace",
        help="Namespace of the traffic-manager (default: the config's, else tpengine).",
    ),
    also_proxy: list[str] = typer.Option(
        [], "--also-proxy", help="Also route this CIDR to the cluster (repeatable)."
    ),
    never_proxy: list[str] = typer.Option(
        [], "--never-proxy", help="Never route this CIDR to the cluster (repeatable)."
    ),
    mapped_namespaces: list[str] = typer.Option(
        [],
        "--mapped-namespaces",
        help="Resolve only these namespaces' names through the cluster (comma-separated; "
        "default: all).",
    ),
    allow_conflicting: list[str] = typer.Option(
        [],
        "--allow-conflicting-subnets",
        help="Route cluster subnets inside this CIDR even where a route of this machine "
        "(a VPN, a bridge) uses them (repeatable).",
    ),
    image: str = typer.Option(
        None, "--image", envvar="TP_IMAGE", help="Image of the traffic-manager to install."
    ),
    pcap: str = typer.Option(
        None, "--pcap", help="Record every packet through the TUN into this pcap file."
    ),
    output: OutputFormat = OUTPUT_OPTION,
    command: list[str] = typer.Argument(None, help="Run this command while connected, then quit."),
) -> None:
    """Connect the laptop to the cluster's network."""
    try:
        status = engine_call("status")
    except EngineNotRunning:
        status = None
    if status is not None and status.get("failure"):
        status = _wait_for_failed_engine(status)
    if status is None:
        # Flags first, then ~/.config/tpengine/config.yml (TP_IMAGE over its image).
        config = load_config_or_fail()
        also_proxy = also_proxy or list(config.also_proxy)
        never_proxy = never_proxy or list(config.never_proxy)
        allow_conflicting = allow_conflicting or list(config.allow_conflicting_subnets)
        _validate(also_proxy, never_proxy, allow_conflicting, kubeconfig, context, namespace)
        args = [
            ("--namespace", namespace),
            ("--kubeconfig", kubeconfig),
            ("--context", context),
            ("--manager-namespace", manager_namespace or config.manager_namespace),
            ("--image", image or config.image),
            ("--pcap", pcap),
            ("--log-level", config.engine_log_level),
            *(("--also-proxy", v) for v in also_proxy),
            *(("--never-proxy", v) for v in never_proxy),
            *(("--allow-conflicting-subnets", v) for v in allow_conflicting),
            *(
                ("--mapped-namespace", v)
                for v in _namespaces(mapped_namespaces) or config.mapped_namespaces
            ),
        ]
        status = _start_engine(
            [arg for flag, value in args if value for arg in (flag, value)],
            quiet=output is not OutputFormat.text,
        )
        prefix = "Connected to"
    else:
        prefix = "Already connected to"
    engine = status["engine"]
    if output is not OutputFormat.text:
        emit_structured(status, output)
    else:
        typer.echo(
            f"{prefix} context {engine.get('kubernetes_context')}, namespace {engine.get('namespace')} "
            f"({engine.get('kubernetes_server')})"
        )
    if command:
        code = subprocess.call(command)
        _quit_engine(quiet=True)
        raise typer.Exit(code)


def _namespaces(values: list[str]) -> list[str]:
    """``--mapped-namespaces a,b --mapped-namespaces c`` as names, each checked as a
    Kubernetes namespace name (an RFC 1123 label)."""
    names = [n.strip() for value in values for n in value.split(",") if n.strip()]
    for name in names:
        if not is_namespace_name(name):
            fail(
                f"--mapped-namespaces {name!r} is not a namespace name "
                "(lower-case letters, digits and '-', at most 63)"
            )
    return names


def _validate(
    also: list[str],
    never: list[str],
    allow_conflicting: list[str],
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
) -> None:
    # Imported here: the commands that only talk to a running engine stay light.
    from tpengine.engine._routes import CidrError, RoutingRules
    from tpengine.kube.kubeconfig import KubeconfigError, resolve_target

    try:
        RoutingRules.parse(also, never, allow_conflicting)  # as the engine will
        resolve_target(kubeconfig=kubeconfig, context=context, namespace=namespace)
    except (CidrError, KubeconfigError) as exc:
        fail(str(exc))


def _start_engine(engine_args: list[str], *, quiet: bool) -> dict[str, Any]:
    """Start the helper and the engine (given ``engine_args``); return its status once
    the network is ready, or fail with its reason."""
    from tpengine.helper import start_helper

    logs = logs_dir()
    try:
        helper_socket, helper = start_helper(log_file=str(logs / "helper.log"))
    except OSError as exc:
        fail(
            f"cannot start the privileged helper (tp-helper): {exc.strerror or exc}; run as root or allow sudo"
        )
    argv = [sys.executable, "-m", "tpengine.engine", "--helper-fd", str(helper_socket.fileno())]
    argv += ["--log-file", str(logs / "engine.log"), *engine_args]
    with open(logs / "engine.out", "ab") as out:
        engine = subprocess.Popen(
            argv,
            pass_fds=[helper_socket.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,  # the engine outlives this command and its terminal
        )
    helper_socket.close()  # the engine holds it now; the helper ends when the engine does
    del helper

    def progress(line: str) -> None:
        if not quiet:
            typer.echo(f"  {line}", err=True)

    deadline = time.monotonic() + ENGINE_START_TIMEOUT
    while True:
        try:
            status: dict[str, Any] = engine_call("wait_ready", on_progress=progress)
            return status
        except EngineNotRunning:
            if engine.poll() is not None:
                fail(
                    f"the engine exited at start (code {engine.returncode}); see {logs / 'engine.out'}"
                )
            if time.monotonic() > deadline:
                engine.terminate()
                fail(
                    f"the engine did not start within {ENGINE_START_TIMEOUT:g} s; see {logs / 'engine.log'}"
                )
            time.sleep(0.05)
        except ControlError as exc:
            # The engine failed and is taking down what it made (the helper undoes the
            # rest when it is gone): return once it has, so nothing outlives the command.
            try:
                engine.wait(timeout=ENGINE_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                engine.kill()
            fail(str(exc))


def _wait_for_failed_engine(status: dict[str, Any]) -> dict[str, Any] | None:
    """A failed engine stays a moment for its ``tp connect`` to read why: wait for it to
    end rather than call it connected. None once gone, else its (new) status."""
    deadline = time.monotonic() + ENGINE_EXIT_TIMEOUT
    while status.get("failure") and time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            status = engine_call("status")
        except EngineNotRunning:
            return None
    return status


def status(output: OutputFormat = OUTPUT_OPTION) -> None:
    """Show the engine, network and manager status."""
    try:
        info = engine_call("status")
    except EngineNotRunning:
        info = None
    if output is not OutputFormat.text:
        emit_structured(info or {"engine": {"status": "Not running"}}, output)
        return
    if info is None:
        typer.echo("Engine: Not running")
        return
    typer.echo(render_status(info))


def render_status(info: dict[str, Any]) -> str:
    engine, network = info["engine"], info["network"]
    lines = [f"Engine: {'Running' if not info.get('failure') else 'Failed'}"]
    lines.append(
        key_value_block(
            [
                ("Version", engine.get("version", "")),
                ("Status", engine.get("status", "")),
                ("Kubernetes server", engine.get("kubernetes_server") or ""),
                ("Kubernetes context", engine.get("kubernetes_context") or ""),
                ("Namespace", engine.get("namespace") or ""),
                ("Manager namespace", engine.get("manager_namespace") or ""),
                *(
                    [("Mapped namespaces", ", ".join(engine["mapped_namespaces"]))]
                    if engine.get("mapped_namespaces")
                    else []
                ),
                ("Reconnects", str(engine.get("reconnects", 0))),
                *([("Last error", engine["last_error"])] if engine.get("last_error") else []),
                ("Engagements", f"{len(engine.get('engagements') or [])} total"),
            ],
            indent=2,
        )
    )
    # Telepresence lists each intercept under its count, four spaces in.
    for item in engine.get("engagements") or []:
        problem = f" ({item['problem']})" if item.get("problem") else ""
        lines.append(f"    {item['name']}: {item['kind']} in {item['namespace']}{problem}")
    subnets = network.get("subnets") or []
    dns = network.get("dns") or "not configured"
    if network.get("dns_upstream"):
        dns += f" (then {', '.join(network['dns_upstream'])})"
    lines.append(f"Network: {'Ready' if network.get('tun') else 'Not ready'}")
    lines.append(
        key_value_block(
            [
                ("TUN device", network.get("tun") or "none"),
                ("DNS", dns),
                ("Subnets", f"({len(subnets)} subnets)"),
            ],
            indent=2,
        )
    )
    lines += [f"    - {subnet}" for subnet in subnets]
    lines += [f"  Not routed: {conflict}" for conflict in network.get("conflicts") or []]
    manager_version = engine.get("manager_version")
    lines.append(
        f"Traffic Manager: {'Connected' if engine.get('status') == 'Connected' else 'Not connected'}"
    )
    lines.append(
        key_value_block(
            [
                ("Version", f"v{manager_version}" if manager_version else "unknown"),
                ("RTT", f"{engine['rtt_ms']} ms" if engine.get("rtt_ms") else "unknown"),
            ],
            indent=2,
        )
    )
    return "\n".join(lines)


def _quit_engine(*, quiet: bool) -> bool:
    def progress(text: str) -> None:
        if not quiet:
            typer.echo(f"  {text}", err=True)

    try:
        engine_call("quit", on_progress=progress)  # replaced workloads are restored first
    except EngineNotRunning:
        return False
    except ControlError:
        pass  # it went away while answering: that is what quit asked for
    # Wait until the control socket is gone: the engine and its helper have cleaned up.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            engine_call("status")
        except (EngineNotRunning, ControlError):
            return True
        time.sleep(0.05)
    if not quiet:
        typer.echo("tp quit: the engine is still shutting down", err=True)
    return True


def quit_() -> None:
    """Disconnect and stop the engine."""
    if _quit_engine(quiet=False):
        typer.echo("Disconnected")
    else:
        typer.echo("Not connected")
