"""The HTTP side: /metrics, the status page, /healthz, the breakers and Alertmanager's webhook.

A ThreadingHTTPServer is enough: every GET reads the current snapshot and never waits
on a log folder or the Admin API. What keeps hostile or broken clients from hurting
the scrapes:

- each request (line, headers and body) must arrive within ``request_timeout`` in all,
  not just one byte per socket timeout, so a client dribbling headers is cut off;
- the TLS handshake runs in the connection's own thread, never in the accept loop;
- at most ``max_connections`` connections are served at once; beyond that new ones are
  closed at once rather than piling up threads;
- the webhook body is read only after authentication, and only up to 1 MiB
  (Content-Length or chunked); anything larger is answered 413 and the connection closed.

With a web config, every endpoint but ``/healthz`` needs basic auth (so that liveness
probes and container health checks work without credentials; it tells only "ok" or
"starting"/"stale"). The webhook takes the breaker bearer token instead when one is
configured, because Alertmanager sends a single Authorization header. A token that is
configured but cannot be read refuses every webhook call with 503: it never falls back to
letting anyone in.
"""

from __future__ import annotations

import gzip
import hmac
import io
import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import structlog
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from exporter.config.web import BasicAuth, TokenUnavailable, WebConfig

log = structlog.get_logger()
MAX_BODY_BYTES = 1 << 20
SOCKET_TIMEOUT = 10.0  # one read or write
REQUEST_TIMEOUT = 10.0  # a whole request, from waiting for its first byte to the end of its body
MAX_CONNECTIONS = 512
GZIP_LEVEL = 1  # a 1 MB exposition shrinks tenfold at level 1; higher levels cost more than they save
PRERENDER_POLL = 0.1
MAX_LAG = 1.0  # how long a new snapshot may be answered with the previous one's bytes while it renders
OPEN_PATHS = frozenset({"/healthz"})
REALM = "claude-budget-exporter"


class Routes(Protocol):
    """What the server answers from (the app's :class:`exporter.app.Service`)."""

    registry: CollectorRegistry

    def healthy(self) -> tuple[bool, str]: ...

    def status_page(self) -> str: ...

    def breaker(self, pool: str) -> tuple[int, dict[str, Any]]:
        """The pool's breaker: (HTTP status, JSON)."""
        ...

    def webhook(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]: ...

    def webhook_token(self) -> str | None:
        """The bearer token the webhook requires, None for none; raises TokenUnavailable when one
        is configured and cannot be read (the call is then refused)."""
        ...

    def webhook_answered(self, code: int) -> None: ...

    def metrics_version(self) -> tuple[Any, ...]:
        """What /metrics depends on: (snapshot, urgent, *rest). The snapshot is compared by
        identity, the rest by value. A change of ``urgent`` (breaker webhooks) is rendered
        before the next scrape is answered; a new snapshot or a change in the rest may be
        answered with the previous bytes for up to MAX_LAG seconds while it renders."""
        ...


class MetricsCache:
    """The encoded exposition, rendered once per metrics version and format, not once per scrape.

    The snapshot is immutable, so the bytes only change when the version does (a new
    snapshot, a breaker webhook, the clock passing a coarse step). Rendering 10k series
    takes tens of milliseconds, so it happens off the scrape path: the prerender thread
    renders the formats scrapers asked for as soon as the version moves, and a scrape
    that comes first is answered from the previous bytes (at most MAX_LAG seconds behind)
    unless a breaker webhook changed them. One render runs at a time; scrapes that must
    wait for one share its bytes. Gzip is done once per render too.
    """

    def __init__(self, registry: CollectorRegistry, version: Callable[[], tuple[Any, ...]],
                 *, max_lag: float = MAX_LAG) -> None:
        self.registry = registry
        self.version = version
        self.max_lag = max_lag
        self.wake = threading.Event()  # set when a scrape found the bytes out of date
        self._lock = threading.Lock()  # held while rendering
        self._entries: dict[str, tuple[tuple[Any, ...], bytes, bytes | None]] = {}  # ctype -> (version, raw, gzip)
        self._encoders: dict[str, Callable[[CollectorRegistry], bytes]] = {}
        self._behind: tuple[tuple[Any, ...], float] | None = None  # (version first seen unrendered, when)
        self.renders = 0

    @staticmethod
    def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
        return a[0] is b[0] and a[1:] == b[1:]

    def get(self, encoder: Callable[[CollectorRegistry], bytes], ctype: str, gzip_ok: bool) -> tuple[bytes, bool]:
        """(body, gzipped) for the current version, or for the previous one while it renders."""
        version = self.version()
        entry = self._entries.get(ctype)
        if entry is None or not self._same(entry[0], version):
            if entry is not None and entry[0][1:2] == version[1:2] and self._lag(version) < self.max_lag:
                self.wake.set()
            else:
                with self._lock:
                    self._encoders.setdefault(ctype, encoder)
                    entry = self._entries.get(ctype)
                    version = self.version()
                    if entry is None or not self._same(entry[0], version):
                        entry = self._render(ctype, encoder, version)
        if gzip_ok and entry[2] is not None:
            return entry[2], True
        return entry[1], False

    def _lag(self, version: tuple[Any, ...]) -> float:
        """Seconds since this version was first seen without its bytes."""
        now = time.monotonic()
        behind = self._behind
        if behind is None or not self._same(behind[0], version):
            self._behind = behind = (version, now)
        return now - behind[1]

    def _render(self, ctype: str, encoder: Callable[[CollectorRegistry], bytes],
                version: tuple[Any, ...]) -> tuple[tuple[Any, ...], bytes, bytes | None]:
        raw = encoder(self.registry)
        entry = (version, raw, gzip.compress(raw, compresslevel=GZIP_LEVEL) if len(raw) > 1024 else None)
        self._entries[ctype] = entry
        self.renders += 1
        return entry

    def prerender(self) -> None:
        """Render every format already asked for whose bytes are out of date."""
        version = self.version()
        if all(self._same(e[0], version) for e in self._entries.values()):
            return
        with self._lock:
            version = self.version()
            for ctype, encoder in list(self._encoders.items()):
                entry = self._entries.get(ctype)
                if entry is None or not self._same(entry[0], version):
                    self._render(ctype, encoder, version)


class _RequestTimeout(TimeoutError):
    pass


class _DeadlineReader(io.RawIOBase):
    """The socket's read side, refusing to wait past the handler's current deadline."""

    def __init__(self, sock: socket.socket, handler: _Handler) -> None:
        self._sock = sock
        self._handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        remaining = self._handler.deadline - time.monotonic()
        if remaining <= 0:
            raise _RequestTimeout("request not received in time")
        self._sock.settimeout(min(remaining, SOCKET_TIMEOUT))
        return self._sock.recv_into(buf)


class _BodyError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Handler(BaseHTTPRequestHandler):
    routes: Routes
    web: WebConfig
    auth: BasicAuth | None
    metrics_cache: MetricsCache
    request_timeout: float = REQUEST_TIMEOUT
    server_version = "claude-budget-exporter"
    sys_version = ""
    timeout = SOCKET_TIMEOUT
    protocol_version = "HTTP/1.1"
    deadline = 0.0

    def setup(self) -> None:
        super().setup()
        self.deadline = time.monotonic() + self.request_timeout
        self.rfile.close()
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self))

    def handle_one_request(self) -> None:
        self.deadline = time.monotonic() + self.request_timeout
        try:
            super().handle_one_request()
        except TimeoutError:  # mid-headers or mid-body: the base class only catches it on the first line
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one structlog event per request would drown the log at a 15 s scrape interval

    def _send(self, code: int, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.connection.settimeout(SOCKET_TIMEOUT)  # the read deadline does not bound the answer
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in self.web.headers.items():
            self.send_header(k, v)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(code, "application/json", json.dumps(obj, indent=1).encode() + b"\n", headers)

    def _basic_ok(self) -> bool:
        """True when no basic auth is configured or the request carries a valid user and password."""
        return self.auth is None or self.auth.check(self.headers.get("Authorization"), self.client_address[0])

    def _unauthorized(self, why: str = "authentication required") -> None:
        self._json(401, {"error": why}, {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        r = self.routes
        if path not in OPEN_PATHS and not self._basic_ok():
            self._unauthorized()
            return
        if path == "/metrics":
            encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
            gzip_ok = "gzip" in self.headers.get("Accept-Encoding", "")
            body, gzipped = self.metrics_cache.get(encoder, ctype, gzip_ok)
            self._send(200, ctype, body, {"Content-Encoding": "gzip"} if gzipped else None)
        elif path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", r.status_page().encode())
        elif path == "/healthz":
            ok, why = r.healthy()
            self._send(200 if ok else 503, "text/plain; charset=utf-8", (why + "\n").encode())
        elif path.startswith("/breaker/"):
            code, answer = r.breaker(unquote(path[len("/breaker/"):]))
            self._json(code, answer)
        else:
            self._json(404, {"error": f"no such page: {path}"})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        r = self.routes
        # until the body is read, the connection cannot serve another request
        client_closes = self.close_connection
        self.close_connection = True
        if path != "/alertmanager/webhook":
            if not self._basic_ok():
                self._unauthorized()
                return
            self._json(404, {"error": f"no such endpoint: {path}"})
            return
        try:
            code, body, headers = self._webhook(r, client_closes)
        except OSError:  # timeouts and vanished clients: nobody to answer
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must still get an answer, not a dropped connection
            log.error("alertmanager_webhook_failed", error=f"{type(exc).__name__}: {exc}")
            self.close_connection = True
            code, body, headers = 500, {"error": "internal error handling the webhook; see the exporter's log"}, None
        self._json(code, body, headers)
        r.webhook_answered(code)

    def _webhook(self, r: Routes, client_closes: bool) -> tuple[int, dict[str, Any], dict[str, str] | None]:
        """(status, JSON body, headers) for a call to the Alertmanager webhook."""
        try:
            token = r.webhook_token()
        except TokenUnavailable as exc:
            # the body is never read: whatever it says is not applied
            return 503, {"error": f"{exc.path} cannot be used: {exc.public}; every webhook call is refused "
                                  "until it can be read (see the exporter's log)"}, {"Retry-After": "60"}
        if token is not None:
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return 401, {"error": "missing or wrong bearer token"}, {"WWW-Authenticate": "Bearer"}
        elif not self._basic_ok():
            return 401, {"error": "authentication required"}, {
                "WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}
        try:
            raw = self._read_body()
        except _BodyError as exc:
            return exc.code, {"error": str(exc)}, None
        self.close_connection = client_closes
        try:
            payload = json.loads(raw)
            if not isinstance(payload, dict):
                raise ValueError("the body must be a JSON object")
        except RecursionError:
            return 400, {"error": "not an Alertmanager webhook payload: JSON nested too deeply"}, None
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            return 400, {"error": f"not an Alertmanager webhook payload: {exc}"}, None
        code, body = r.webhook(payload)
        return code, body, None

    def _read_body(self) -> bytes:
        """The request body, at most MAX_BODY_BYTES; raises _BodyError with the status to answer."""
        te = self.headers.get("Transfer-Encoding")
        cl = self.headers.get("Content-Length")
        if te is not None:
            if cl is not None:  # ambiguous framing is how requests get smuggled: refuse it
                raise _BodyError(400, "both Content-Length and Transfer-Encoding given")
            if te.strip().lower() != "chunked":
                raise _BodyError(501, f"Transfer-Encoding {te!r} not supported")
            return self._read_chunked()
        if cl is None:
            raise _BodyError(411, "Content-Length required")
        if not cl.strip().isdigit():
            raise _BodyError(400, "Content-Length must be a non-negative integer")
        length = int(cl)
        if length > MAX_BODY_BYTES:
            raise _BodyError(413, f"body over {MAX_BODY_BYTES} bytes")
        raw = self.rfile.read(length)
        if len(raw) < length:
            raise _BodyError(400, "body shorter than Content-Length")
        return raw

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1026)
            if not line.endswith(b"\n"):
                raise _BodyError(400, "bad chunk size line")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError(400, "bad chunk size line") from None
            if size < 0:
                raise _BodyError(400, "bad chunk size line")
            if size == 0:
                for _ in range(64):  # trailers, up to the empty line
                    if self.rfile.readline(8194) in (b"\r\n", b"\n", b""):
                        return b"".join(parts)
                raise _BodyError(400, "too many trailer lines")
            total += size
            if total > MAX_BODY_BYTES:
                raise _BodyError(413, f"body over {MAX_BODY_BYTES} bytes")
            data = self.rfile.read(size)
            if len(data) < size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise _BodyError(400, "chunk shorter than its size")
            parts.append(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # a burst of scrapers (or an attacker) should queue in the kernel, not be refused
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[_Handler], *, tls: ssl.SSLContext | None,
                 max_connections: int) -> None:
        self.tls = tls
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                log.warning("http_connections_refused", refused=self.refused,
                            hint="too many open connections: a client is holding them open, or raise the limit")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(SOCKET_TIMEOUT)
        # headers and body go out in separate writes; with Nagle on, a keep-alive client's
        # delayed ACK would hold the body back 40 ms
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is None:
            self.RequestHandlerClass(request, client_address, self)  # type: ignore[arg-type]  # the stub wants Self
            return
        # the handshake happens here, in this connection's thread, within the socket timeout
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("tls_handshake_failed", client=client_address[0], error=str(exc))
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)  # type: ignore[arg-type]  # the stub wants Self
        finally:
            conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that vanished or timed out mid-request is routine, not a traceback on stderr
        exc = sys.exc_info()[1]
        log.debug("http_connection_error", client=client_address[0] if client_address else None,
                  error=f"{type(exc).__name__}: {exc}")


class ExporterServer:
    def __init__(self, host: str, port: int, routes: Routes, web: WebConfig | None = None, *,
                 request_timeout: float = REQUEST_TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> None:
        web = web or WebConfig()
        self.web = web
        self.auth = BasicAuth(web.users) if web.auth_required else None
        self.metrics_cache = MetricsCache(routes.registry, routes.metrics_version)
        handler = type("Handler", (_Handler,), {"routes": routes, "web": web, "auth": self.auth,
                                                "metrics_cache": self.metrics_cache,
                                                "request_timeout": request_timeout})
        tls = web.tls.context() if web.tls is not None else None
        self.httpd = _Server((host, port), handler, tls=tls, max_connections=max_connections)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def scheme(self) -> str:
        return "https" if self.web.tls is not None else "http"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.5)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        self._thread.start()
        threading.Thread(target=self._prerender_loop, name="metrics-render", daemon=True).start()

    def _prerender_loop(self) -> None:
        while not self._stop.is_set():
            self.metrics_cache.wake.wait(PRERENDER_POLL)
            self.metrics_cache.wake.clear()
            try:
                self.metrics_cache.prerender()
            except Exception as exc:  # noqa: BLE001 - a scrape renders for itself then, and says why
                log.warning("metrics_prerender_failed", error=f"{type(exc).__name__}: {exc}")

    def shutdown(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


__all__ = ["ExporterServer", "MetricsCache", "Routes"]
