"""``/healthz`` and ``/readyz`` for the kubelet's probes (plain trio + h11)."""

from __future__ import annotations

from collections.abc import Callable

import h11
import trio


async def serve_health(
    port: int,
    is_ready: Callable[[], bool],
    *,
    host: str | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            try:
                with trio.move_on_after(5):
                    while True:
                        event = conn.next_event()
                        if event is h11.NEED_DATA:
                            conn.receive_data(await stream.receive_some(4096))
                            continue
                        if isinstance(event, h11.Request):
                            await _respond(stream, conn, event.target, is_ready())
                        return
            except (h11.RemoteProtocolError, trio.BrokenResourceError):
                return

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def _respond(
    stream: trio.SocketStream, conn: h11.Connection, target: bytes, ready: bool
) -> None:
    path = target.split(b"?")[0]
    if path == b"/healthz":
        status, body = 200, b"ok\n"
    elif path == b"/readyz":
        status, body = (200, b"ready\n") if ready else (503, b"not ready\n")
    else:
        status, body = 404, b"not found\n"
    headers = [
        ("content-type", "text/plain"),
        ("content-length", str(len(body))),
        ("connection", "close"),
    ]
    data = conn.send(h11.Response(status_code=status, headers=headers))
    data = (
        (data or b"")
        + (conn.send(h11.Data(data=body)) or b"")
        + (conn.send(h11.EndOfMessage()) or b"")
    )
    await stream.send_all(data)
