"""``tp local-cluster``: the built-in single-node cluster in network namespaces.

``localcluster`` is imported inside each command only: nothing else in ``tp`` pays for
it, and the product never depends on it (DESIGN.md, import direction).
"""

from __future__ import annotations

import os
from types import ModuleType

import typer

from tpengine.cli._output import OUTPUT_OPTION, OutputFormat, emit_structured, fail, key_value_block

app = typer.Typer(
    name="local-cluster",
    help="A single-node Kubernetes-API-compatible cluster in network namespaces (needs root).",
    no_args_is_help=True,
)

NAME_OPTION = typer.Option(
    "tp", "--name", "-n", help="Cluster name: 1-6 lowercase letters or digits."
)


def _cli() -> ModuleType:
    from localcluster import cli

    return cli


@app.command("up")
def up(
    name: str = NAME_OPTION,
    merge: bool = typer.Option(False, "--merge", help="Also add the cluster to ~/.kube/config."),
    laptops: int = typer.Option(
        1,
        "--laptops",
        help="How many laptops (one per developer, each its own netns); "
        "on a running cluster, adds the missing ones.",
    ),
) -> None:
    """Create the cluster (idempotent; cleans up after a crashed earlier run)."""
    cli = _cli()
    try:
        cli.up(name, merge=merge, echo=typer.echo, laptops=laptops)
    except cli.CliError as exc:
        fail(str(exc))


@app.command("down")
def down(name: str = NAME_OPTION) -> None:
    """Remove every namespace, process, nft table, mount and file the cluster made."""
    cli = _cli()
    try:
        cli.down(name, echo=typer.echo)
    except cli.CliError as exc:
        fail(str(exc))


@app.command("status")
def status(name: str = NAME_OPTION, output: OutputFormat = OUTPUT_OPTION) -> None:
    """Whether the cluster is running, and where its pieces are."""
    cli = _cli()
    try:
        cli.validate_name(name)
        st = cli.status(name)
    except cli.CliError as exc:
        fail(str(exc))
    if output is not OutputFormat.text:
        emit_structured(st.as_dict(), output)
        return
    rows = [
        ("Local cluster", f"{st.name}: {st.state}"),
        ("API server", st.api_server),
        ("Kubeconfig", st.kubeconfig),
        ("Daemon pid", str(st.daemon_pid or "-")),
        ("Laptop pid", str(st.laptop_pid or "-")),
        *(
            (
                f"Laptop {lt.index}",
                f"{lt.netns} {lt.address}, holder pid {lt.pid or '- (not running)'}",
            )
            for lt in st.laptops
        ),
        ("Namespaces", ", ".join(st.namespaces) or "-"),
    ]
    typer.echo(key_value_block(rows))


@app.command("kubeconfig")
def kubeconfig(name: str = NAME_OPTION) -> None:
    """Print the path of the cluster's kubeconfig."""
    cli = _cli()
    try:
        cli.validate_name(name)
    except cli.CliError as exc:
        fail(str(exc))
    typer.echo(str(cli.kubeconfig_path(name)))


@app.command(
    "exec",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def exec_(
    command: list[str] = typer.Argument(None, help="The command, after --."),
    name: str = NAME_OPTION,
    laptop: int = typer.Option(1, "--laptop", help="Which laptop (see up --laptops)."),
) -> None:
    """Run a command on a laptop (its netns and mount namespace) with KUBECONFIG set."""
    cli = _cli()
    try:
        argv, env = cli.exec_argv(name, list(command or []), laptop=laptop)
    except cli.CliError as exc:
        fail(str(exc))
    os.execvpe(argv[0], argv, env)
