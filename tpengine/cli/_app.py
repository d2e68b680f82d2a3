"""The typer application: every ``tp`` command, wired to its module."""

from __future__ import annotations

import typer

from tpengine.cli import _config_cmd, _connect_cmd, _engage_cmd, _install_cmd, _version_cmd

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
for _command, _function in (
    ("intercept", _engage_cmd.intercept),
    ("replace", _engage_cmd.replace),
    ("wiretap", _engage_cmd.wiretap),
    ("ingest", _engage_cmd.ingest),
):
    app.command(_command)(_function)
app.command("leave")(_engage_cmd.leave)
app.command("list")(_engage_cmd.list_)
app.command("install")(_install_cmd.install)
app.command("uninstall")(_install_cmd.uninstall)
app.command("gather-logs")(_install_cmd.gather_logs)
app.command("loglevel")(_install_cmd.loglevel)
app.add_typer(_config_cmd.app, name="config")


def main() -> None:
    """Console-script entry point of ``tp``."""
    app()
