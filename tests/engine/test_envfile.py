"""Each --env-syntax read back by the tool it is for."""

from __future__ import annotations

import json
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpengine.engine._envfile import EnvSyntaxError, render_env

ENV = {"DB_URL": "postgres://u:p@db:5432/x", "GREETING": 'it\'s a "test" $HOME', "EMPTY": ""}


def test_sh_round_trips_through_a_real_shell() -> None:
    script = render_env(ENV, "sh") + 'printf "%s\\0" "$DB_URL" "$GREETING" "$EMPTY"'
    out = subprocess.run(["sh", "-c", script], capture_output=True, check=True).stdout
    assert out.split(b"\0")[:3] == [
        v.encode() for v in (ENV["DB_URL"], ENV["GREETING"], ENV["EMPTY"])
    ]


@given(
    st.dictionaries(
        st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True),
        st.text(
            alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
            max_size=30,
        ),
        max_size=5,
    )
)
def test_sh_quoting_is_exact_for_any_value(env: dict[str, str]) -> None:
    names = sorted(env)
    script = render_env(env, "sh") + "".join(f'printf "%s\\0" "${n}";' for n in names)
    out = subprocess.run(["sh", "-c", script], capture_output=True, check=True).stdout
    assert out.split(b"\0")[: len(names)] == [env[n].encode() for n in names]


def test_other_syntaxes() -> None:
    assert json.loads(render_env(ENV, "json")) == ENV
    assert "DB_URL=postgres://u:p@db:5432/x\n" in render_env(ENV, "docker")
    assert 'GREETING="it\'s a \\"test\\" $$HOME"' in render_env(ENV, "compose")
    assert "setenv EMPTY ''" in render_env(ENV, "csh")
    assert "set DB_URL=postgres://u:p@db:5432/x" in render_env(ENV, "cmd")


def test_refusals() -> None:
    with pytest.raises(EnvSyntaxError, match="choose one of"):
        render_env(ENV, "yaml")
    with pytest.raises(EnvSyntaxError, match="cannot hold a newline"):
        render_env({"A": "x\ny"}, "docker")
