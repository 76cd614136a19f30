"""The HTTP side: /metrics, the status page, /healthz, the breakers and Alertmanager's webhook.

The server is uvicorn's h11 protocol on an asyncio loop in a thread of its own, serving a
small ASGI app written here. h11 parses HTTP/1.1 strictly (one framing per message, exact
chunk sizes, no body read as a request), and a connection costs about 10 KB, not a
thread, so thousands of idle or slow ones leave the scrapes alone. What else keeps hostile
or broken clients from hurting the scrapes:

- a connection must deliver a whole request (line, headers and body) within
  ``request_timeout`` of connecting or of its previous answer, and read that answer in the
  same time, or it is dropped: a client dribbling headers, or holding a connection idle,
  is cut off (uvicorn alone bounds neither); a TLS handshake has the same time;
- a request head still incomplete at 16 KiB, or with over 100 header lines, is refused
  (431); so is one that gives both Content-Length and Transfer-Encoding (400);
- nothing that can take more than a moment runs on the event loop: bcrypt checks run in
  threads of their own (more of them than BasicAuth lets wait for bcrypt, so a scrape
  whose credentials are cached never queues behind a password flood), and the routes
  (a /metrics render, the status page, breakers, the webhook) in a small pool; /healthz
  and /metrics bytes already rendered are answered on the loop;
- the webhook body is read only after authentication, and only up to 1 MiB
  (Content-Length or chunked); anything larger is answered 413 and the connection closed,
  as is every connection whose request body was not read;
- the soft limit on open files is raised to the hard one at the start, as Go programs do.

With a web config, every endpoint but ``/healthz`` needs basic auth (so that liveness
probes and container health checks work without credentials; it tells only "ok" or
"starting"/"stale"). The webhook takes the breaker bearer token instead when one is
configured, because Alertmanager sends a single Authorization header. A token that is
configured but cannot be read refuses every webhook call with 503: it never falls back to
letting anyone in.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hmac
import json
import logging
import math
import resource
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import h11
from exporter.logsetup import get_logger
import uvicorn
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from exporter.config.web import AUTH_MAX_WAITING, BasicAuth, TokenUnavailable, WebConfig

log = get_logger()
MAX_BODY_BYTES = 1 << 20
REQUEST_TIMEOUT = 10.0  # a whole request, from connecting or the previous answer to the end of its body
MAX_HEAD_BYTES = 16 * 1024  # request line and headers
MAX_HEADERS = 100
AUTH_THREADS = AUTH_MAX_WAITING + 8  # at most AUTH_MAX_WAITING block in bcrypt; the rest answer from its cache
ROUTE_THREADS = 16
SHUTDOWN_GRACE = 3  # seconds for answers in flight at shutdown
BACKLOG = 2048  # a burst of scrapers (or an attacker) should queue in the kernel, not be refused
GZIP_LEVEL = 1  # a 1 MB exposition shrinks tenfold at level 1; higher levels cost more than they save
PRERENDER_POLL = 0.1
MAX_LAG = 1.0  # how long a new snapshot may be answered with the previous one's bytes while it renders
OPEN_PATHS = frozenset({"/healthz"})
REALM = "claude-budget-exporter"
SERVER = b"claude-budget-exporter"
_T = TypeVar("_T")


class Routes(Protocol):
    """What the server answers from (the app's :class:`exporter.app.Service`)."""

    registry: CollectorRegistry

    def healthy(self) -> tuple[bool, str]:
        """Called on the event loop: it must not block (read the current snapshot, no more)."""
        ...

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
        """What /metrics depends on: (snapshot, urgent, *rest); read on the event loop, so it
        must not block. The snapshot is compared by identity, the rest by value. A change of
        ``urgent`` (breaker webhooks) is rendered before the next scrape is answered; a new
        snapshot or a change in the rest may be answered with the previous bytes for up to
        MAX_LAG seconds while it renders."""
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
        got = self.cached(ctype, gzip_ok)
        if got is not None:
            return got
        with self._lock:
            self._encoders.setdefault(ctype, encoder)
            entry = self._entries.get(ctype)
            version = self.version()
            if entry is None or not self._same(entry[0], version):
                entry = self._render(ctype, encoder, version)
        return self._pick(entry, gzip_ok)

    def cached(self, ctype: str, gzip_ok: bool) -> tuple[bytes, bool] | None:
        """What :meth:`get` answers when it needs no render, without ever waiting; None when it does."""
        version = self.version()
        entry = self._entries.get(ctype)
        if entry is None or not self._same(entry[0], version):
            if entry is None or entry[0][1:2] != version[1:2] or self._lag(version) >= self.max_lag:
                return None
            self.wake.set()
        return self._pick(entry, gzip_ok)

    @staticmethod
    def _pick(entry: tuple[tuple[Any, ...], bytes, bytes | None], gzip_ok: bool) -> tuple[bytes, bool]:
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


# --------------------------------------------------------------------------- the ASGI app

# a scraper sends the same Accept header every time: parse it once
_choose_encoder = functools.lru_cache(maxsize=64)(choose_encoder)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


class _Gone(Exception):
    """The client went away, or was cut off at its deadline, before its request was in."""


class _BodyError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Request:
    """One request's head, and what has been done with its body and its answer."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.method: str = scope["method"]
        # the path as sent (uvicorn's scope["path"] is already unquoted)
        self.path = urlsplit(scope["raw_path"].decode("latin-1")).path
        self.headers: Headers = scope["headers"]  # names in lower case
        client = scope.get("client")
        self.client_ip: str = client[0] if client else ""
        self.receive = receive
        self.send = send
        length = self.header("content-length")
        # h11 has checked the framing: one Content-Length of digits, Transfer-Encoding chunked or none
        self.body_read = self.header("transfer-encoding") is None and (length is None or int(length) == 0)
        self.close = False  # answer with Connection: close
        self.started = False

    def header(self, name: str) -> str | None:
        key = name.encode()
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None


class AsgiApp:
    """What every ASGI app served here shares: the framing checks, answers, basic auth, a bounded
    body, and a thread pool for anything that may take more than a moment. A subclass answers
    :meth:`_get` and :meth:`_post`."""

    def __init__(self, auth: BasicAuth | None, headers: Headers, auth_pool: ThreadPoolExecutor,
                 pool: ThreadPoolExecutor, *, max_body: int = MAX_BODY_BYTES) -> None:
        self.auth = auth
        self.headers = headers  # on every answer: Server, Cache-Control and the web config's
        self._auth_pool = auth_pool
        self._pool = pool
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no lifespan, no websockets: uvicorn is told so
            return
        req = _Request(scope, receive, send)
        try:
            await self._handle(req)
        except _Gone:
            return
        except Exception as exc:  # noqa: BLE001 - a bug must still get an answer, not a dropped connection
            log.error("http_request_failed", method=req.method, error=f"{type(exc).__name__}: {exc}")
            if not req.started:
                req.close = True
                await self._json(req, 500, {"error": "internal error; see the exporter's log"})

    async def _off(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _send(self, req: _Request, code: int, ctype: bytes, body: bytes, extra: Headers | None = None) -> None:
        headers = [(b"Content-Type", ctype), (b"Content-Length", b"%d" % len(body)), *self.headers, *(extra or ())]
        if req.close or not req.body_read:
            # a body left unread is not parsed as a request (h11 would skip it), nor waited for
            headers.append((b"Connection", b"close"))
        req.started = True
        await req.send({"type": "http.response.start", "status": code, "headers": headers})
        await req.send({"type": "http.response.body", "body": body})  # uvicorn leaves it out for HEAD

    async def _json(self, req: _Request, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await self._send(req, code, b"application/json", json.dumps(obj, indent=1).encode() + b"\n", extra)

    async def _basic_ok(self, req: _Request) -> bool:
        """True when no basic auth is configured or the request carries a valid user and password."""
        if self.auth is None:
            return True
        return await asyncio.get_running_loop().run_in_executor(
            self._auth_pool, self.auth.check, req.header("authorization"), req.client_ip)

    async def _unauthorized(self, req: _Request) -> None:
        await self._json(req, 401, {"error": "authentication required"},
                         {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})

    async def _handle(self, req: _Request) -> None:
        if req.header("transfer-encoding") is not None and req.header("content-length") is not None:
            # ambiguous framing is how requests get smuggled: refuse it (h11 would let chunked win)
            req.close = True
            await self._json(req, 400, {"error": "both Content-Length and Transfer-Encoding given"})
        elif len(req.headers) > MAX_HEADERS:
            req.close = True
            await self._json(req, 431, {"error": f"more than {MAX_HEADERS} header lines"})
        elif req.method in ("GET", "HEAD"):
            await self._get(req)
        elif req.method == "POST":
            await self._post(req)
        else:
            req.close = True
            await self._json(req, 501, {"error": f"method {req.method} not supported"})

    async def _get(self, req: _Request) -> None:
        req.close = True
        await self._json(req, 405, {"error": f"{req.method} not allowed on {req.path}"}, {"Allow": "POST"})

    async def _post(self, req: _Request) -> None:
        req.close = True
        await self._json(req, 405, {"error": f"POST not allowed on {req.path}"}, {"Allow": "GET"})

    async def _read_body(self, req: _Request) -> bytes:
        """The request body, at most ``max_body`` bytes; raises _BodyError with the status to answer."""
        limit = self.max_body
        if req.header("transfer-encoding") is None:  # h11 refused any coding but chunked
            length = req.header("content-length")
            if length is None:
                raise _BodyError(411, "Content-Length required")
            if int(length) > limit:
                raise _BodyError(413, f"body over {limit} bytes")
        parts: list[bytes] = []
        total = 0
        while True:
            message = await req.receive()
            if message["type"] != "http.request":
                raise _Gone
            part = message.get("body", b"")
            total += len(part)
            if total > limit:
                raise _BodyError(413, f"body over {limit} bytes")
            parts.append(part)
            if not message.get("more_body", False):
                req.body_read = True
                return b"".join(parts)


class _App(AsgiApp):
    """The exporter's routes over ASGI."""

    def __init__(self, routes: Routes, auth: BasicAuth | None, cache: MetricsCache, headers: Headers,
                 auth_pool: ThreadPoolExecutor, pool: ThreadPoolExecutor) -> None:
        super().__init__(auth, headers, auth_pool, pool)
        self.routes = routes
        self.cache = cache

    async def _get(self, req: _Request) -> None:
        path = req.path
        r = self.routes
        if path not in OPEN_PATHS and not await self._basic_ok(req):
            await self._unauthorized(req)
        elif path == "/metrics":
            encoder, ctype = _choose_encoder(req.header("accept") or "")
            gzip_ok = "gzip" in (req.header("accept-encoding") or "")
            # the bytes already rendered are answered here; a render (tens of ms) happens in the pool
            got = self.cache.cached(ctype, gzip_ok)
            if got is None:
                got = await self._off(self.cache.get, encoder, ctype, gzip_ok)
            body, gzipped = got
            await self._send(req, 200, ctype.encode(), body, [(b"Content-Encoding", b"gzip")] if gzipped else None)
        elif path in ("/", "/index.html"):
            page = await self._off(r.status_page)
            await self._send(req, 200, b"text/html; charset=utf-8", page.encode())
        elif path == "/healthz":
            ok, why = r.healthy()
            await self._send(req, 200 if ok else 503, b"text/plain; charset=utf-8", (why + "\n").encode())
        elif path.startswith("/breaker/"):
            code, answer = await self._off(r.breaker, unquote(path[len("/breaker/"):]))
            await self._json(req, code, answer)
        else:
            await self._json(req, 404, {"error": f"no such page: {path}"})

    async def _post(self, req: _Request) -> None:
        # until the body is read, the connection cannot serve another request
        req.close = True
        if req.path != "/alertmanager/webhook":
            if not await self._basic_ok(req):
                await self._unauthorized(req)
            else:
                await self._json(req, 404, {"error": f"no such endpoint: {req.path}"})
            return
        try:
            code, body, headers = await self._webhook(req)
        except _Gone:  # cut off at the deadline, or gone: nobody to answer
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must still get an answer, not a dropped connection
            log.error("alertmanager_webhook_failed", error=f"{type(exc).__name__}: {exc}")
            req.close = True
            code, body, headers = 500, {"error": "internal error handling the webhook; see the exporter's log"}, None
        await self._json(req, code, body, headers)
        self.routes.webhook_answered(code)

    async def _webhook(self, req: _Request) -> tuple[int, dict[str, Any], dict[str, str] | None]:
        """(status, JSON body, headers) for a call to the Alertmanager webhook."""
        r = self.routes
        try:
            token = await self._off(r.webhook_token)
        except TokenUnavailable as exc:
            # the body is never read: whatever it says is not applied
            return 503, {"error": f"{exc.path} cannot be used: {exc.public}; every webhook call is refused "
                                  "until it can be read (see the exporter's log)"}, {"Retry-After": "60"}
        if token is not None:
            given = req.header("authorization") or ""
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return 401, {"error": "missing or wrong bearer token"}, {"WWW-Authenticate": "Bearer"}
        elif not await self._basic_ok(req):
            return 401, {"error": "authentication required"}, {
                "WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}
        try:
            raw = await self._read_body(req)
        except _BodyError as exc:
            return exc.code, {"error": str(exc)}, None
        req.close = False
        code, body = await self._off(self._apply, raw)
        return code, body, None

    def _apply(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        try:
            payload = json.loads(raw)
            if not isinstance(payload, dict):
                raise ValueError("the body must be a JSON object")
        except RecursionError:
            return 400, {"error": "not an Alertmanager webhook payload: JSON nested too deeply"}
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            return 400, {"error": f"not an Alertmanager webhook payload: {exc}"}
        return self.routes.webhook(payload)


# --------------------------------------------------------------------------- uvicorn, adapted


class _Config(uvicorn.Config):
    """uvicorn's config as used here, plus what the protocol and the server read from it."""

    def __init__(self, app: AsgiApp, *, tls: ssl.SSLContext | None, request_timeout: float) -> None:
        super().__init__(
            app, http=_Protocol, loop="asyncio", ws="none", lifespan="off", interface="asgi3",
            log_config=None, access_log=False, proxy_headers=False, server_header=False, backlog=BACKLOG,
            timeout_keep_alive=max(1, math.ceil(request_timeout)), timeout_graceful_shutdown=SHUTDOWN_GRACE,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES)
        self.tls = tls
        self.request_timeout = request_timeout
        self.answer_headers = app.headers

    def load(self) -> None:
        super().load()
        # the web config's context as it is (client certificates, TLS versions), not one uvicorn builds
        self.ssl = self.tls


class _Connection(h11.Connection):
    """h11's connection, keeping what it refused (so that the answer carries h11's status for it)
    and holding an answer's head back to go out with its body."""

    refused: h11.RemoteProtocolError | None = None
    _head = b""

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.refused = exc
            raise

    def send(self, event: h11.Event) -> bytes | None:  # type: ignore[override]  # h11 has overloads by event
        # uvicorn writes the head and the body apart: two system calls, after each of which the event
        # loop may wait a switch interval for the GIL while a render holds it. One write waits once.
        data = super().send(event)
        if type(event) is h11.Response:
            self._head = data or b""
            return b""
        if self._head:
            data, self._head = self._head + (data or b""), b""
        return data


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline on each request.

    uvicorn bounds nothing before a connection's first request, and after an answer only
    silence (any byte restarts its keep-alive clock), so a client sending a header byte every
    few seconds, or nothing at all, would hold its connection for ever. Here a connection has
    ``request_timeout`` from connecting or from its previous answer to deliver a whole request
    and to read that answer; past it, it is dropped.
    """

    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, _Config)
        self.request_timeout = config.request_timeout
        self.answer_headers = config.answer_headers
        self.conn = self._h11 = _Connection(h11.SERVER, MAX_HEAD_BYTES)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # asyncio sets this only on sockets it made itself: without it, a delayed ACK holds the
            # body (written after the head) back 40 ms
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.request_timeout, self._expired)

    def _expired(self) -> None:
        answering = (self.cycle is not None and not self.cycle.response_complete
                     and self.conn.their_state in (h11.DONE, h11.MUST_CLOSE))
        if answering and not self.transport.get_write_buffer_size():
            self._arm()  # the request is in and its answer is being made (the routes bound their own waits)
        else:
            self.transport.abort()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers 400 to all that h11 refuses; h11 knows better (431 for a long head, 501 for a coding)
        refused = self._h11.refused
        status = refused.error_status_hint if refused is not None else 400
        body = json.dumps({"error": f"bad request: {refused or msg}"}).encode() + b"\n"
        headers = [(b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(body)),
                   *self.answer_headers, (b"Connection", b"close")]
        try:
            head = h11.Response(status_code=status, headers=headers, reason=STATUS_PHRASES[status])
            for event in (head, h11.Data(data=body), h11.EndOfMessage()):
                data = self.conn.send(event)
                if data:
                    self.transport.write(data)
        except h11.LocalProtocolError:  # an answer was already under way
            pass
        self.transport.close()
        if self.cycle is not None and not self.cycle.response_complete:
            # the request being answered (its body was refused) must not try to answer too
            self.cycle.disconnected = True
            self.cycle.message_event.set()

    def shutdown(self) -> None:
        try:
            super().shutdown()
        except h11.LocalProtocolError:
            self.transport.abort()


class _Server(uvicorn.Server):
    """uvicorn's server on a socket bound beforehand (so that a busy port is an error at once)."""

    def __init__(self, config: _Config, sock: socket.socket) -> None:
        super().__init__(config)
        self.sock = sock
        self.listening = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's own startup would leave asyncio's 60 s for a TLS handshake
        config = self.config
        assert isinstance(config, _Config)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_loop_error)

        def protocol() -> asyncio.Protocol:
            return _Protocol(config, self.server_state, {}, loop)

        self.servers = [await loop.create_server(
            protocol, sock=self.sock, ssl=config.ssl, backlog=config.backlog,
            ssl_handshake_timeout=config.request_timeout if config.ssl is not None else None)]
        self.started = True
        self.listening.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        for conn in list(self.server_state.connections):  # what the grace period left open
            if isinstance(conn, _Protocol) and conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)


_accept_failures = 0


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    global _accept_failures
    exc = context.get("exception")
    error = f"{type(exc).__name__}: {exc}" if exc is not None else None
    if isinstance(exc, OSError) and "accept" in str(context.get("message", "")):
        # out of file descriptors (asyncio retries in a second): worth saying, not once a second
        _accept_failures += 1
        if _accept_failures in (1, 10, 100) or _accept_failures % 1000 == 0:
            log.warning("http_accept_failed", failures=_accept_failures, error=error,
                        hint="too many open connections: a client is holding them open, or raise the open files limit")
        return
    log.debug("http_loop_error", message=context.get("message"), error=error)


class _ToStructlog(logging.Handler):
    """uvicorn's own log records as debug events: no tracebacks or access lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc = record.exc_info[1] if record.exc_info else None
            log.debug("http_server_log", logger=record.name, message=record.getMessage(),
                      error=f"{type(exc).__name__}: {exc}" if exc is not None else None)
        except Exception:  # noqa: BLE001 - a log line must never break a connection
            pass


def _quiet_uvicorn() -> None:
    logger = logging.getLogger("uvicorn")
    if not any(isinstance(h, _ToStructlog) for h in logger.handlers):
        logger.addHandler(_ToStructlog())
    logger.propagate = False


def _raise_open_files_limit() -> None:
    """Every connection holds a file descriptor: raise the soft limit to the hard one, as Go programs do."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log.debug("open_files_limit_raised", before=soft, now=hard)
    except (ValueError, OSError) as exc:
        log.debug("open_files_limit_kept", error=str(exc))


# --------------------------------------------------------------------------- the server


class HttpServer:
    """uvicorn's h11 protocol on a socket bound here (a busy port is an OSError at once), in a thread
    of its own, serving the ASGI app ``make_app`` builds with the web config's TLS, basic auth and
    headers, and this server's thread pools: ``make_app(auth, headers, auth_pool, pool)``."""

    thread_name = "http"

    def __init__(self, host: str, port: int, make_app: Callable[[BasicAuth | None, Headers, ThreadPoolExecutor,
                                                                 ThreadPoolExecutor], AsgiApp],
                 web: WebConfig | None = None, *, request_timeout: float = REQUEST_TIMEOUT,
                 route_threads: int = ROUTE_THREADS) -> None:
        web = web or WebConfig()
        self.web = web
        self.request_timeout = request_timeout
        self.auth = BasicAuth(web.users) if web.auth_required else None
        tls = web.tls.context() if web.tls is not None else None
        _quiet_uvicorn()
        self._sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                          backlog=BACKLOG)
        self._port: int = self._sock.getsockname()[1]
        self._auth_pool = ThreadPoolExecutor(AUTH_THREADS, thread_name_prefix=f"{self.thread_name}-auth")
        self._pool = ThreadPoolExecutor(route_threads, thread_name_prefix=f"{self.thread_name}-route")
        headers: Headers = [(b"Server", SERVER), (b"Cache-Control", b"no-store"),
                            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in web.headers.items())]
        app = make_app(self.auth, headers, self._auth_pool, self._pool)
        self._server = _Server(_Config(app, tls=tls, request_timeout=request_timeout), self._sock)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def port(self) -> int:
        return self._port

    @property
    def scheme(self) -> str:
        return "https" if self.web.tls is not None else "http"

    @property
    def connections(self) -> int:
        """Connections open now (past their TLS handshake)."""
        return len(self._server.server_state.connections)

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` is called from another thread."""
        _raise_open_files_limit()
        self._server.run()

    def start(self) -> None:
        """Serve in background threads; returns once listening."""
        self._thread = threading.Thread(target=self.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        while not self._server.listening.wait(0.05):
            if not self._thread.is_alive():
                raise RuntimeError("the HTTP server stopped before it listened")

    def shutdown(self) -> None:
        self._stop.set()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(SHUTDOWN_GRACE + 5)
        self._sock.close()
        self._auth_pool.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=False, cancel_futures=True)


class ExporterServer(HttpServer):
    """The exporter's own endpoints: /metrics (rendered ahead of the scrapes), /, /healthz,
    /breaker/<pool> and the Alertmanager webhook."""

    def __init__(self, host: str, port: int, routes: Routes, web: WebConfig | None = None, *,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.routes = routes
        self.metrics_cache = MetricsCache(routes.registry, routes.metrics_version)

        def make_app(auth: BasicAuth | None, headers: Headers, auth_pool: ThreadPoolExecutor,
                     pool: ThreadPoolExecutor) -> AsgiApp:
            return _App(routes, auth, self.metrics_cache, headers, auth_pool, pool)

        super().__init__(host, port, make_app, web, request_timeout=request_timeout)

    def start(self) -> None:
        super().start()
        threading.Thread(target=self._prerender_loop, name="metrics-render", daemon=True).start()

    def _prerender_loop(self) -> None:
        while not self._stop.is_set():
            self.metrics_cache.wake.wait(PRERENDER_POLL)
            self.metrics_cache.wake.clear()
            try:
                self.metrics_cache.prerender()
            except Exception as exc:  # noqa: BLE001 - a scrape renders for itself then, and says why
                log.warning("metrics_prerender_failed", error=f"{type(exc).__name__}: {exc}")


__all__ = ["REALM", "AsgiApp", "ExporterServer", "Headers", "HttpServer", "MetricsCache", "Request", "Routes",
           "BodyError", "Gone"]

# the names an AsgiApp in another module uses
Request = _Request
BodyError = _BodyError
Gone = _Gone
