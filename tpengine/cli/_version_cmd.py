"""``tp version``."""

from __future__ import annotations

import platform

import typer

from tpengine import __version__
from tpengine.cli._output import OUTPUT_OPTION, OutputFormat, emit_structured, key_value_block


def version(output: OutputFormat = OUTPUT_OPTION) -> None:
    info = {
        "client": f"v{__version__}",
        "engine": "not running",
        "traffic_manager": "not connected",
        "python": platform.python_version(),
    }
    if output is not OutputFormat.text:
        emit_structured(info, output)
        return
    typer.echo(
        key_value_block(
            [
                ("Client", info["client"]),
                ("Engine", info["engine"]),
                ("Traffic Manager", info["traffic_manager"]),
            ]
        )
    )
