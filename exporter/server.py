"""The HTTP side: /metrics, the status page, /healthz, the breakers and Alertmanager's webhook.

A ThreadingHTTPServer is enough: every GET reads the current snapshot and never waits
on a log folder or the Admin API. Sockets time out so slow clients cannot pin threads.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

log = structlog.get_logger()
MAX_BODY_BYTES = 1 << 20
SOCKET_TIMEOUT = 10.0


@dataclass
class Routes:
    """What the server needs from the rest of the exporter; each piece is a plain callable."""

    registry: CollectorRegistry
    healthy: Callable[[], tuple[bool, str]]
    status_page: Callable[[], str]
    breaker: Callable[[str], tuple[int, dict[str, Any]]] | None = None  # pool -> (HTTP status, JSON)
    webhook: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]] | None = None
    webhook_token: Callable[[], str | None] = lambda: None
    extra_get: dict[str, Callable[[], tuple[int, str, bytes]]] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    routes: Routes
    server_version = "claude-budget-exporter"
    sys_version = ""
    timeout = SOCKET_TIMEOUT
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # one structlog event per request would drown the log at a 15 s scrape interval

    def _send(self, code: int, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, "application/json", json.dumps(obj, indent=1).encode() + b"\n")

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        r = self.routes
        if path == "/metrics":
            encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, ctype, encoder(r.registry))
        elif path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", r.status_page().encode())
        elif path == "/healthz":
            ok, why = r.healthy()
            self._send(200 if ok else 503, "text/plain; charset=utf-8", (why + "\n").encode())
        elif path.startswith("/breaker/") and r.breaker is not None:
            code, body = r.breaker(unquote(path[len("/breaker/"):]))
            self._json(code, body)
        elif path in r.extra_get:
            code, ctype, body = r.extra_get[path]()
            self._send(code, ctype, body)
        else:
            self._json(404, {"error": f"no such page: {path}"})

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        r = self.routes
        if path != "/alertmanager/webhook" or r.webhook is None:
            self._json(404, {"error": f"no such endpoint: {path}"})
            return
        token = r.webhook_token()
        if token is not None:
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                self._json(401, {"error": "missing or wrong bearer token"})
                return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._json(411, {"error": "Content-Length required"})
            return
        if length > MAX_BODY_BYTES or length < 0:
            self.close_connection = True
            self._json(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            return
        raw = self.rfile.read(length)
        try:
            payload = json.loads(raw)
            if not isinstance(payload, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            self._json(400, {"error": f"not an Alertmanager webhook payload: {exc}"})
            return
        code, body = r.webhook(payload)
        self._json(code, body)


class ExporterServer:
    def __init__(self, host: str, port: int, routes: Routes) -> None:
        handler = type("Handler", (_Handler,), {"routes": routes})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.5)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


__all__ = ["ExporterServer", "HTTPStatus", "Routes"]
