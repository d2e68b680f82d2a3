"""The control socket between tp and the engine, on a real abstract unix socket."""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from tpengine.engine._control import (
    ControlError,
    EngineNotRunning,
    Progress,
    open_control_client,
    serve_control,
)
from tpengine.engine._control_client import MAX_LINE, LineBuffer


def unique_name() -> str:
    return f"\0tpengine-test-{os.getpid()}-{id(object())}"


async def test_request_progress_and_result(nursery: trio.Nursery) -> None:
    async def connect(params: dict[str, Any], progress: Progress) -> Any:
        await progress("Launching")
        await progress("Connected")
        return {"namespace": params["namespace"]}

    async def broken(params: dict[str, Any], progress: Progress) -> Any:
        raise ControlError("namespace nope does not exist", "not-found")

    name = unique_name()
    await nursery.start(
        lambda task_status: serve_control(
            {"connect": connect, "broken": broken}, name=name, task_status=task_status
        )
    )
    seen: list[str] = []
    async with open_control_client(name) as client:
        assert await client.call("connect", {"namespace": "shop"}, on_progress=seen.append) == {
            "namespace": "shop"
        }
        assert seen == ["Launching", "Connected"]
        with pytest.raises(ControlError, match="does not exist") as caught:
            await client.call("broken")
        assert caught.value.code == "not-found"
        with pytest.raises(ControlError, match="unknown method"):
            await client.call("format")


async def test_no_engine() -> None:
    with pytest.raises(EngineNotRunning):
        async with open_control_client(unique_name()):
            pass


async def test_second_engine_cannot_take_the_socket(nursery: trio.Nursery) -> None:
    name = unique_name()
    await nursery.start(lambda task_status: serve_control({}, name=name, task_status=task_status))
    with pytest.raises(OSError):
        await serve_control({}, name=name)


@given(
    lines=st.lists(st.binary(max_size=50).map(lambda b: b.replace(b"\n", b"")), max_size=10),
    cuts=st.lists(st.integers(0, 600), max_size=8),
)
def test_line_buffer_gives_back_the_lines_however_the_bytes_arrive(
    lines: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(line + b"\n" for line in lines)
    buffer, got = LineBuffer(), []
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    for start, end in itertools.pairwise(bounds):
        buffer.feed(data[start:end])
        while (line := buffer.next_line()) is not None:
            got.append(line)
    assert got == lines


def test_line_buffer_refuses_an_endless_line() -> None:
    buffer = LineBuffer()
    buffer.feed(b"x" * (MAX_LINE + 1))
    with pytest.raises(ValueError, match="longer than"):
        buffer.next_line()
