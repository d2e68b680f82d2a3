"""The TLS listener: one task per connection, each serving HTTP/1.1 requests."""

from __future__ import annotations

import logging
import ssl
import tempfile
from pathlib import Path

import trio

from ..pki import Pki
from ..runtime_api import NodeRuntime
from ._app import ApiServer, AuditLog
from ._http import serve_connection
from ._store import Store

log = logging.getLogger(__name__)
HANDSHAKE_TIMEOUT = 10.0


def server_ssl_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # HTTP/1.1 only: kubectl then speaks HTTP/1.1, which websocket upgrades need.
    context.set_alpn_protocols(["http/1.1"])
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        cert.write_bytes(pki.server_cert_pem + pki.ca_cert_pem)
        key.write_bytes(pki.server_key_pem)
        context.load_cert_chain(cert, key)
    return context


async def _serve_one(tcp: trio.SocketStream, context: ssl.SSLContext, app: ApiServer) -> None:
    try:
        host, port = tcp.socket.getpeername()[:2]
        peer = f"{host}:{port}"
    except OSError:
        peer = ""
    stream = trio.SSLStream(tcp, context, server_side=True, https_compatible=True)
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            await stream.do_handshake()
    except (trio.BrokenResourceError, trio.TooSlowError, trio.ClosedResourceError):
        await trio.aclose_forcefully(tcp)
        return
    try:
        await serve_connection(stream, app.handle, peer=peer)
    except Exception:  # one broken connection never takes the server down
        log.exception("connection from %s failed", peer)
        await trio.aclose_forcefully(stream)


async def serve_apiserver(
    store: Store,
    runtime: NodeRuntime,
    *,
    host: str,
    port: int,
    pki: Pki,
    audit_log: Path | None = None,
    bookmark_interval: float = 10.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the Kubernetes API over HTTPS on host:port (port 0: any; the port is started)."""
    context = server_ssl_context(pki)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    app = ApiServer(
        store=store,
        runtime=runtime,
        token=pki.token,
        server_address=f"{host}:{bound}",
        audit=AuditLog(Path(audit_log)) if audit_log else None,
        bookmark_interval=bookmark_interval,
    )
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(_accept_loop, listener, context, app)
            task_status.started(bound)
    finally:
        if app.audit is not None:
            app.audit.close()


async def _accept_loop(
    listener: trio.SocketListener, context: ssl.SSLContext, app: ApiServer
) -> None:
    async with listener, trio.open_nursery() as nursery:
        while True:
            try:
                tcp = await listener.accept()
            except OSError as exc:  # EMFILE and friends: back off, keep serving
                log.warning("accept failed: %s", exc)
                await trio.sleep(0.1)
                continue
            nursery.start_soon(_serve_one, tcp, context, app)
