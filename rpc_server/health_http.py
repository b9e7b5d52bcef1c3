"""``GET /health`` over plain HTTP, for load balancers (HAProxy, Kubernetes probes).

A balancer cannot speak zerorpc, so ``expertd serve --health-port PORT``
answers ``GET /health`` with 200 and a small JSON body while the server takes
calls, and 503 while it starts, drains or retires. Workers of one supervisor
share the port (``SO_REUSEPORT``), like they share the RPC port. The server
runs in a native thread (the standard library's ``http.server``), so a busy
gevent loop does not make the check time out.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

log = logging.getLogger("expertd.health")

#: ``() -> (healthy, body)``: what the endpoint reports right now.
StatusFunction = Callable[[], "tuple[bool, dict]"]


class _HealthHTTPServer(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


class _SharedPortServer(_HealthHTTPServer):
    allow_reuse_port = True


def _handler(status: StatusFunction) -> type[BaseHTTPRequestHandler]:
    class HealthHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            if self.path.split("?", 1)[0] != "/health":
                self._reply(404, {"error": "not found; ask GET /health"})
                return
            try:
                healthy, body = status()
            except Exception as exc:  # a check that fails says "unhealthy", never crashes
                healthy, body = False, {"status": "error", "error": type(exc).__name__}
            self._reply(200 if healthy else 503, body)

        def _reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            pass  # balancers check every second or two: not worth a log line each

    return HealthHandler


class HealthServer:
    """``GET /health`` on ``host:port`` in a background thread."""

    def __init__(self, host: str, port: int, status: StatusFunction, shared: bool = False) -> None:
        """Bind now (an ``OSError`` if the port is taken); ``shared``: workers share the port."""
        server_class = _SharedPortServer if shared else _HealthHTTPServer
        self.httpd = server_class((host, port), _handler(status))
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="health-http",
                                       daemon=True)
        self.thread.start()
        log.info("health checks on http://%s:%d/health", host, port)

    def close(self) -> None:
        """Stop answering and release the port."""
        self.httpd.shutdown()
        self.httpd.server_close()
