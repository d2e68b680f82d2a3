"""Output helpers shared by every command: text as Telepresence prints it, or JSON/YAML."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import typer


class OutputFormat(enum.StrEnum):
    text = "text"
    json = "json"
    yaml = "yaml"


OUTPUT_OPTION = typer.Option(
    OutputFormat.text, "--output", "-o", help="Output format: text, json or yaml."
)


def emit_structured(data: Any, fmt: OutputFormat) -> None:
    """Print ``data`` as JSON or YAML (for ``-o json|yaml``)."""
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))


def key_value_block(rows: Sequence[tuple[str, str]] | Mapping[str, str], indent: int = 0) -> str:
    """Lines of ``key : value`` with keys padded to the longest one (Telepresence's layout)."""
    items = list(rows.items()) if isinstance(rows, Mapping) else list(rows)
    if not items:
        return ""
    width = max(len(key) for key, _ in items)
    pad = " " * indent
    return "\n".join(f"{pad}{key.ljust(width)}: {value}" for key, value in items)


def fail(message: str, code: int = 1) -> NoReturn:
    """One- or two-line error on stderr and a non-zero exit."""
    typer.echo(f"tp: {message}", err=True)
    raise typer.Exit(code)
