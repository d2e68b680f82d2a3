"""``tp config view``, and the configuration file for the commands that use it."""

from __future__ import annotations

import typer

from tpengine.cli._output import OUTPUT_OPTION, OutputFormat, emit_structured, fail
from tpengine.config import Config, ConfigError, config_path, load_config

app = typer.Typer(help="The client configuration (~/.config/tpengine/config.yml).")


def load_config_or_fail() -> Config:
    try:
        return load_config()
    except ConfigError as exc:
        fail(str(exc))


@app.command("view")
def view(output: OutputFormat = OUTPUT_OPTION) -> None:
    """Show the settings in effect: the file's over the defaults (TP_IMAGE over both)."""
    import yaml

    config = load_config_or_fail()
    shape = config.to_yaml_shape()
    if output is not OutputFormat.text:
        emit_structured(shape, output)
        return
    source = config.path or f"{config_path()} (not present: defaults)"
    typer.echo(f"# {source}")
    typer.echo(yaml.safe_dump(shape, sort_keys=False).rstrip())
