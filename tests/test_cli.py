"""The ``tp`` command line, run as a user runs it: as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

from tpengine import __version__


def tp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from tpengine.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_the_commands() -> None:
    result = tp("--help")
    assert result.returncode == 0
    for command in ("connect", "intercept", "version", "quit"):
        assert command in result.stdout


def test_version_text_and_json() -> None:
    text = tp("version")
    assert text.returncode == 0
    assert f"Client         : v{__version__}" in text.stdout
    structured = tp("version", "-o", "json")
    assert json.loads(structured.stdout)["client"] == f"v{__version__}"


def test_unknown_output_format_is_refused() -> None:
    result = tp("version", "-o", "xml")
    assert result.returncode == 2
    assert "xml" in result.stderr
