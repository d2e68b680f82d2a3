"""The built-in echo server of the echo-server images (standard library only).

Like jmalloc/echo-server: HTTP/1.1 on ``$PORT`` (default 8080), any method and path,
200 with a body that starts ``Request served by <pod name>`` followed by the request
line and the headers, then the request body if there was one. Run by path:
``python .../localcluster/node/echo.py``.
"""

from __future__ import annotations

import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "echo-server"

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        name = os.environ.get("HOSTNAME") or socket.gethostname()
        headers = "".join(f"{k}: {v}\n" for k, v in self.headers.items())
        text = f"Request served by {name}\n\n{self.requestline}\n\n{headers}"
        reply = text.encode() + (b"\n" + body if body else b"")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _echo

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionError:
            pass  # the client went away: nothing to answer, nothing to log

    def log_message(self, format: str, *args: object) -> None:
        sys.stdout.write(f"{self.address_string()} {format % args}\n")
        sys.stdout.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main() -> None:
    port = int(os.environ.get("PORT") or 8080)
    server = _Server(("0.0.0.0", port), EchoHandler)
    sys.stdout.write(f"Echo server listening on port {port}.\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
