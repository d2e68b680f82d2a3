"""HTTP filters of an intercept: which requests go to the laptop.

Telepresence's rules: ``--http-header K=V`` (or ``"K: V"``) matches when the request has
header K (case-insensitive, RFC 9110 §5.1) whose value matches the regular expression V
in full; several headers are ANDed; ``--http-path-equal``, ``--http-path-prefix`` and
``--http-path-regex`` match the request's path (the target without its query).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


class FilterError(ValueError):
    """A filter flag that does not parse; the message names it and shows the form."""


@dataclass(frozen=True, kw_only=True)
class HttpFilter:
    headers: tuple[tuple[str, str], ...] = ()  # (lowercase name, regular expression)
    path_equal: str | None = None
    path_prefix: str | None = None
    path_regex: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.headers or self.path_equal or self.path_prefix or self.path_regex)

    def matches(
        self, target: bytes | str, headers: Iterable[tuple[bytes | str, bytes | str]]
    ) -> bool:
        path = _text(target).split("?", 1)[0]
        if self.path_equal is not None and path != self.path_equal:
            return False
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        if self.path_regex is not None and not _compiled(self.path_regex).fullmatch(path):
            return False
        if not self.headers:
            return True
        seen: dict[str, list[str]] = {}
        for name, value in headers:
            seen.setdefault(_text(name).lower(), []).append(_text(value).strip())
        return all(
            any(_compiled(pattern).fullmatch(value) for value in seen.get(name, ()))
            for name, pattern in self.headers
        )

    def describe(self) -> list[str]:
        """Lines as ``tp intercept`` prints them (Telepresence's wording)."""
        lines = [f"HTTP requests with header '{name}: {value}'" for name, value in self.headers]
        if self.path_equal is not None:
            lines.append(f"HTTP requests with path '{self.path_equal}'")
        if self.path_prefix is not None:
            lines.append(f"HTTP requests with path prefix '{self.path_prefix}'")
        if self.path_regex is not None:
            lines.append(f"HTTP requests with path matching '{self.path_regex}'")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "headers": [list(h) for h in self.headers],
            "path_equal": self.path_equal,
            "path_prefix": self.path_prefix,
            "path_regex": self.path_regex,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HttpFilter:
        return cls(
            headers=tuple((str(n), str(v)) for n, v in data.get("headers") or []),
            path_equal=data.get("path_equal"),
            path_prefix=data.get("path_prefix"),
            path_regex=data.get("path_regex"),
        )


def parse_filter(
    headers: Sequence[str] = (),
    *,
    path_equal: str | None = None,
    path_prefix: str | None = None,
    path_regex: str | None = None,
) -> HttpFilter:
    parsed = []
    for spec in headers:
        name, value = _split_header(spec)
        _check_regex(value, f"--http-header {spec!r}")
        parsed.append((name.lower(), value))
    if path_regex is not None:
        _check_regex(path_regex, f"--http-path-regex {path_regex!r}")
    for flag, path in (("--http-path-equal", path_equal), ("--http-path-prefix", path_prefix)):
        if path is not None and not path.startswith("/"):
            raise FilterError(f"{flag} {path!r} must start with '/'")
    return HttpFilter(
        headers=tuple(sorted(parsed)),
        path_equal=path_equal,
        path_prefix=path_prefix,
        path_regex=path_regex,
    )


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 §5.6.2 token


def _split_header(spec: str) -> tuple[str, str]:
    """``K=V`` or ``K: V`` (Telepresence accepts both)."""
    colon, equals = spec.find(":"), spec.find("=")
    cut = colon if colon != -1 and (equals == -1 or colon < equals) else equals
    if cut <= 0:
        raise FilterError(f"--http-header {spec!r}: expected NAME=VALUE or 'NAME: VALUE'")
    name, value = spec[:cut].strip(), spec[cut + 1 :].strip()
    if not _TOKEN.match(name):
        raise FilterError(f"--http-header {spec!r}: {name!r} is not a valid header name")
    return name, value


def _check_regex(pattern: str, what: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise FilterError(f"{what}: not a regular expression ({exc})") from None


_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    found = _CACHE.get(pattern)
    if found is None:
        found = _CACHE[pattern] = re.compile(pattern)
    return found


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value
