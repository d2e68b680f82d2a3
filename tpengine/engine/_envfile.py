"""Writing the engaged container's environment in the syntax a tool reads (``--env-file``
with ``--env-syntax``, ``--env-json``), as Telepresence does.

- docker: ``KEY=VALUE`` per line, no quoting (``docker run --env-file`` takes the rest of
  the line literally, so values with newlines cannot be expressed and are refused);
- compose: ``KEY=VALUE`` with double quotes and escapes when needed (Compose's .env rules);
- sh: ``export KEY='VALUE'`` (single quotes, ``'`` as ``'\\''``);
- csh: ``setenv KEY 'VALUE'``;
- cmd: ``set KEY=VALUE`` (Windows cmd.exe);
- json: one object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

SYNTAXES = ("docker", "compose", "sh", "csh", "cmd", "json")
_SAFE_COMPOSE = re.compile(r"^[A-Za-z0-9_./:@%+,-]*$")


class EnvSyntaxError(ValueError):
    pass


def render_env(env: Mapping[str, str], syntax: str = "docker") -> str:
    if syntax not in SYNTAXES:
        raise EnvSyntaxError(f"--env-syntax {syntax!r}: choose one of {', '.join(SYNTAXES)}")
    items = sorted(env.items())
    if syntax == "json":
        return json.dumps(dict(items), indent=2) + "\n"
    lines = [_LINE[syntax](key, value) for key, value in items]
    return "".join(line + "\n" for line in lines)


def _docker(key: str, value: str) -> str:
    if "\n" in value:
        raise EnvSyntaxError(
            f"{key}: the docker env-file syntax cannot hold a newline; use --env-syntax compose or json"
        )
    return f"{key}={value}"


def _compose(key: str, value: str) -> str:
    if _SAFE_COMPOSE.match(value):
        return f"{key}={value}"
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("$", "$$")
    )
    return f'{key}="{escaped}"'


def _single_quoted(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


_LINE = {
    "docker": _docker,
    "compose": _compose,
    "sh": lambda k, v: f"export {k}={_single_quoted(v)}",
    "csh": lambda k, v: f"setenv {k} {_single_quoted(v)}",
    "cmd": lambda k, v: f"set {k}={v}",
}
