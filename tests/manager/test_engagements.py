"""Conflict rules of engagements (the reference's table)."""

from __future__ import annotations

import pytest

from manager._engagements import (
    Engagement,
    EngagementConflict,
    EngagementRegistry,
    Kind,
    filters_overlap,
)
from tpengine.httpfilter import parse_filter


def eng(
    name: str,
    kind: Kind = Kind.INTERCEPT,
    session: str = "s1",
    headers: tuple[str, ...] = (),
    ports: tuple[str, ...] = ("80",),
    container: str = "app",
) -> Engagement:
    return Engagement(
        id="",
        name=name,
        kind=kind,
        session_id=session,
        client=f"{session}@laptop",
        namespace="default",
        workload="web",
        container=container,
        ports=ports,
        filter=parse_filter(list(headers)),
    )


def test_two_unfiltered_intercepts_of_a_port_conflict() -> None:
    registry = EngagementRegistry()
    registry.add(eng("web"))
    with pytest.raises(EngagementConflict, match="already intercepted by s1@laptop"):
        registry.add(eng("web-2", session="s2"))
    registry.add(eng("web-3", session="s2", ports=("8443",)))  # another port is free


def test_different_header_values_coexist_and_subsets_conflict() -> None:
    registry = EngagementRegistry()
    registry.add(eng("susan", headers=("x-user=susan",)))
    registry.add(eng("bob", session="s2", headers=("x-user=bob",)))
    with pytest.raises(EngagementConflict, match="x-user: susan"):
        registry.add(eng("susan-dev", session="s3", headers=("x-user=susan", "x-env=dev")))
    with pytest.raises(EngagementConflict):
        registry.add(eng("everyone", session="s3"))


def test_wiretaps_and_ingests_never_conflict() -> None:
    registry = EngagementRegistry()
    registry.add(eng("web"))
    registry.add(eng("tap", Kind.WIRETAP, session="s2"))
    registry.add(eng("tap2", Kind.WIRETAP, session="s3"))
    registry.add(eng("in", Kind.INGEST, session="s2", ports=()))
    registry.add(eng("in2", Kind.INGEST, session="s3", ports=()))
    assert len(registry.all()) == 5


def test_replace_takes_the_whole_container() -> None:
    registry = EngagementRegistry()
    registry.add(eng("r", Kind.REPLACE, ports=("80", "9090")))
    with pytest.raises(EngagementConflict, match="replace 'r'"):
        registry.add(eng("i", session="s2", ports=("9090",), headers=("x-user=bob",)))
    registry.add(eng("other", session="s2", container="sidecar"))


def test_same_engagement_again_is_an_update_and_sessions_clean_up() -> None:
    registry = EngagementRegistry()
    first = registry.add(eng("web", ports=("80",)))
    again = registry.add(eng("web", ports=("8080",)))
    assert again.id == first.id and len(registry.all()) == 1
    registry.add(eng("other", session="s2", ports=("81",)))
    assert [e.name for e in registry.remove_session("s1")] == ["web"]
    assert [e.name for e in registry.all()] == ["other"]


def test_overlap_rules() -> None:
    assert not filters_overlap(parse_filter(["x-user=a"]), parse_filter(["x-user=b"]))
    assert filters_overlap(parse_filter(["x-user=a.*"]), parse_filter(["x-user=b"]))
    assert filters_overlap(parse_filter(["x-user=a"]), parse_filter(["x-team=b"]))
    assert not filters_overlap(parse_filter(path_prefix="/api"), parse_filter(path_prefix="/web"))
