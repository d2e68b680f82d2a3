"""The typer application: global wiring and the commands that are not built yet."""

from __future__ import annotations

from collections.abc import Callable

import typer

from tpengine.cli import _connect_cmd, _install_cmd, _version_cmd

app = typer.Typer(
    name="tp",
    help="tpengine: join a Kubernetes cluster's network and engage its workloads.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("version", help="Show the version of the client, the engine and the manager.")(
    _version_cmd.version
)
app.add_typer(__import__("tpengine.cli._local_cluster_cmd", fromlist=["app"]).app)
app.command(
    "connect",
    context_settings={"allow_interspersed_args": False},
)(_connect_cmd.connect)
app.command("status")(_connect_cmd.status)
app.command("quit")(_connect_cmd.quit_)
app.command("install")(_install_cmd.install)
app.command("uninstall")(_install_cmd.uninstall)
app.command("gather-logs")(_install_cmd.gather_logs)

# Commands whose issue has not landed yet. Each says so in one line and exits 2, so a
# script can tell "not built" from "failed".
_NOT_YET = {
    "list": "List workloads and their engagements.",
    "intercept": "Send a workload's traffic (or matching requests) to the laptop.",
    "replace": "Replace a workload's container with a local process.",
    "wiretap": "Get a read-only copy of a workload's traffic.",
    "ingest": "Borrow a workload's environment and volumes.",
    "leave": "End an engagement.",
}


def _not_yet(name: str) -> Callable[[typer.Context], None]:
    def command(ctx: typer.Context) -> None:
        typer.echo(f"tp {name}: not available yet in this version of tpengine", err=True)
        raise typer.Exit(2)

    command.__name__ = name.replace("-", "_")
    return command


for _name, _help in _NOT_YET.items():
    app.command(
        _name,
        help=f"{_help} (not available yet)",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(_not_yet(_name))


def main() -> None:
    """Console-script entry point of ``tp``."""
    app()
