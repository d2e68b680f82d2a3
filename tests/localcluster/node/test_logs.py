"""Container logs: partial lines, tail, timestamps, follow until the run ends."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from localcluster.node._logs import LogRun, read_log


async def collect(path: Path, run: LogRun | None, **kw: object) -> bytes:
    out = b""
    async with read_log(path, run, **kw) as chunks:  # type: ignore[arg-type]
        async for chunk in chunks:
            out += chunk
    return out


async def test_lines_tail_and_timestamps(tmp_path: Path) -> None:
    run = LogRun(tmp_path / "0.log")
    run.feed(b"one\ntw")
    run.feed(b"o\nthree")
    run.finish()
    assert (
        await collect(run.path, None, follow=False, tail_lines=None, timestamps=False)
        == b"one\ntwo\nthree\n"
    )
    assert (
        await collect(run.path, None, follow=False, tail_lines=2, timestamps=False)
        == b"two\nthree\n"
    )
    assert await collect(run.path, None, follow=False, tail_lines=0, timestamps=False) == b""
    stamped = await collect(run.path, None, follow=False, tail_lines=1, timestamps=True)
    stamp, _, line = stamped.partition(b" ")
    assert line == b"three\n" and stamp.endswith(b"Z") and b"T" in stamp


async def test_follow_streams_until_the_run_ends(tmp_path: Path) -> None:
    run = LogRun(tmp_path / "0.log")
    run.feed(b"first\n")
    seen: list[bytes] = []

    async def follow() -> None:
        async with read_log(
            run.path, run, follow=True, tail_lines=None, timestamps=False
        ) as chunks:
            async for chunk in chunks:
                seen.append(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow)
        await trio.testing.wait_all_tasks_blocked()
        assert seen == [b"first\n"]
        run.feed(b"second\n")
        await trio.testing.wait_all_tasks_blocked()
        assert seen == [b"first\n", b"second\n"]
        run.feed(b"unterminated")
        run.finish()
    assert b"".join(seen) == b"first\nsecond\nunterminated\n"


async def test_a_run_that_never_wrote_reads_empty(tmp_path: Path) -> None:
    assert (
        await collect(
            tmp_path / "c" / "3.log", None, follow=True, tail_lines=None, timestamps=False
        )
        == b""
    )
