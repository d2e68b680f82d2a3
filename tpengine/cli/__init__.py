"""The ``tp`` command line (typer).

Each command lives in its own module; ``main`` is the console-script entry point.
"""

from tpengine.cli._app import app, main

__all__ = ["app", "main"]
