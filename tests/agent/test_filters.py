from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent._filters import FilterError, HttpFilter, parse_filter

SUSAN = [(b"Host", b"web"), (b"X-User", b"susan")]


def test_header_filters() -> None:
    f = parse_filter(["x-user=susan"])
    assert f.matches(b"/", SUSAN)
    assert not f.matches(b"/", [(b"x-user", b"bob")])
    assert not f.matches(b"/", [])
    assert parse_filter(["X-User: susan"]) == f
    assert parse_filter(["x-user=sus.*"]).matches("/", SUSAN)
    assert not parse_filter(["x-user=sus"]).matches("/", SUSAN)  # full match


def test_headers_are_anded_and_paths_checked() -> None:
    f = parse_filter(["x-user=susan", "x-env=dev"], path_prefix="/api/")
    assert f.matches(b"/api/items?x=1", [*SUSAN, (b"x-env", b"dev")])
    assert not f.matches(b"/api/items", SUSAN)
    assert not f.matches(b"/other", [*SUSAN, (b"x-env", b"dev")])
    assert parse_filter(path_equal="/a").matches(b"/a?q", [])
    assert parse_filter(path_regex=r"/v\d+/.*").matches(b"/v2/x", [])


def test_describe_uses_telepresence_wording() -> None:
    assert parse_filter(["X-User=susan"]).describe() == [
        "HTTP requests with header 'x-user: susan'"
    ]


@pytest.mark.parametrize(
    ("headers", "kwargs", "message"),
    [
        (["nonsense"], {}, "expected NAME=VALUE"),
        (["=x"], {}, "expected NAME=VALUE"),
        (["bad header=x"], {}, "not a valid header name"),
        (["x=("], {}, "not a regular expression"),
        ([], {"path_prefix": "api"}, "must start with '/'"),
        ([], {"path_regex": "("}, "not a regular expression"),
    ],
)
def test_bad_flags(headers: list[str], kwargs: dict, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        parse_filter(headers, **kwargs)


@given(
    st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=40)), max_size=8),
    st.binary(max_size=60),
)
def test_matching_never_raises(headers: list[tuple[bytes, bytes]], target: bytes) -> None:
    f = parse_filter(["x-user=susan"], path_prefix="/")
    assert f.matches(target, headers) in (True, False)


def test_json_round_trip() -> None:
    f = parse_filter(["x-user=susan"], path_regex="/a.*")
    assert HttpFilter.from_json(f.to_json()) == f
