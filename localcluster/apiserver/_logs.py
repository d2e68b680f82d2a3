"""``pods/log``: the container's log from the NodeRuntime, streamed (``follow``).

The runtime does ``tailLines``, ``previous`` and ``timestamps``; this layer adds
``sinceSeconds``/``sinceTime`` (asking the runtime for timestamps and filtering lines by
them, as the kubelet filters its CRI log) and ``limitBytes``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import trio

from ..runtime_api import PodNotRunning
from ._errors import BadRequest, MethodNotAllowed
from ._http import Request, Response
from ._streams import _container, _flag, _pod

if TYPE_CHECKING:
    from ._app import ApiServer, Target


def _int(req: Request, name: str) -> int | None:
    value = req.arg(name)
    if value in (None, ""):
        return None
    try:
        number = int(str(value))
    except ValueError:
        raise BadRequest(f"invalid {name} {value!r}") from None
    if number < 0:
        raise BadRequest(f"{name} must be >= 0")
    return number


def parse_time(text: str) -> datetime | None:
    """RFC 3339 with up to nanoseconds (Go's RFC3339Nano trims trailing zeros)."""
    text = text.strip()
    if not text.endswith("Z"):
        return None
    base, _, fraction = text[:-1].partition(".")
    try:
        stamp = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    if fraction.isdigit():
        stamp += timedelta(microseconds=int(fraction[:6].ljust(6, "0")))
    return stamp


def _cutoff(req: Request) -> datetime | None:
    seconds = _int(req, "sinceSeconds")
    if seconds is not None:
        return datetime.now(UTC) - timedelta(seconds=seconds)
    since = req.arg("sinceTime")
    if since:
        stamp = parse_time(since)
        if stamp is None:
            raise BadRequest(f"invalid sinceTime {since!r}")
        return stamp
    return None


async def _since(
    chunks: AsyncIterator[bytes], cutoff: datetime, keep_timestamps: bool
) -> AsyncIterator[bytes]:
    """Whole timestamped lines at or after ``cutoff``; the stamp removed unless wanted."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = [kept for line in lines if (kept := _keep(line, cutoff, keep_timestamps)) is not None]
        if out:
            yield b"".join(kept + b"\n" for kept in out)
    if pending and (kept := _keep(pending, cutoff, keep_timestamps)) is not None:
        yield kept


def _keep(line: bytes, cutoff: datetime, keep_timestamps: bool) -> bytes | None:
    stamp, _, rest = line.partition(b" ")
    when = parse_time(stamp.decode("ascii", "replace"))
    if when is None:
        return line  # not a timestamped line: pass it through unchanged
    if when < cutoff:
        return None
    return line if keep_timestamps else rest


async def handle_log(app: ApiServer, req: Request, target: Target) -> Response:
    if req.method != "GET":
        raise MethodNotAllowed("the server does not allow this method on the requested resource")
    pod = _pod(app, target)
    container = _container(pod, req.arg("container"))
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    tail_lines, limit = _int(req, "tailLines"), _int(req, "limitBytes")
    cutoff, timestamps = _cutoff(req), _flag(req, "timestamps")
    status = pod.get("status", {})
    if status.get("phase") == "Pending" and not status.get("containerStatuses"):
        raise BadRequest(
            f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating'
        )
    manager = app.runtime.logs(
        ns,
        name,
        container,
        follow=_flag(req, "follow"),
        tail_lines=tail_lines,
        previous=_flag(req, "previous"),
        timestamps=timestamps or cutoff is not None,
    )
    try:
        chunks = await manager.__aenter__()
    except PodNotRunning as exc:
        raise BadRequest(str(exc)) from None
    source = chunks if cutoff is None else _since(chunks, cutoff, timestamps)

    async def body() -> AsyncIterator[bytes]:
        left = limit
        try:
            async for chunk in source:
                if left is not None:
                    chunk, left = chunk[:left], left - len(chunk[:left])
                yield chunk
                if left == 0:
                    return  # ?limitBytes=N: the first N bytes only
        finally:
            with trio.CancelScope(shield=True):
                await manager.__aexit__(None, None, None)

    return Response(headers=[("Content-Type", "text/plain")], stream=body())
