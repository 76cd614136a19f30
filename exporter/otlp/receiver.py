"""The OTLP/HTTP side of an ``otlp`` source: ``POST /v1/logs`` and ``POST /v1/metrics``.

Served by the exporter's own server machinery (:class:`exporter.expose.http.HttpServer`:
uvicorn's h11 protocol, the whole-request deadline, the web config's TLS and headers) on the
source's own ``listen`` address (OTLP/HTTP's port 4318 by default). Who may send: with a
``token_env``/``token_file`` on the source, ``Authorization: Bearer <token>``
(``OTEL_EXPORTER_OTLP_HEADERS``); else, when the web config has users, basic auth; else
anyone. A token that is configured but cannot be read refuses every request with 503.

A request is answered as OTLP/HTTP says: 200 with an ``Export*ServiceResponse`` in the
request's own encoding once everything it carried is committed (``partial_success`` counts
the events and points rejected, and names why); 400 with a ``google.rpc.Status`` for a body
that is not such a request; 413 for a body over ``max_body_bytes`` (as sent, or four times
that unpacked); 415 for another content type or encoding; 503 with ``Retry-After`` when the
commit failed (a full disk): the sender retries, and nothing of the request was kept.
"""

from __future__ import annotations

import asyncio
import hmac
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]  # generated, no stubs
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from exporter.logsetup import get_logger
from exporter.config import BreakerWebhookConfig, SourceConfig, parse_listen
from exporter.config.web import BasicAuth, TokenUnavailable, WebConfig, WebhookToken
from exporter.expose.http import REALM, AsgiApp, BodyError, Gone, Headers, HttpServer, Request
from exporter.otlp.decode import (JSON, LOGS, MALFORMED, METRICS, PROTOBUF, TOO_LARGE, Decoded, Refused, decode,
                                  unpack)
from exporter.otlp.sink import Sink

__all__ = ["PATHS", "ListenError", "OtlpReceiver", "OtlpToken"]

log = get_logger()

PATHS = {"/v1/logs": LOGS, "/v1/metrics": METRICS}
RETRY_AFTER = "5"  # seconds, when a commit failed: the SDKs wait at least this long anyway
ROUTE_THREADS = 8  # decoding; a request then waits for its commit on the event loop, not in a thread


class ListenError(OSError):
    """An otlp source's listen address cannot be bound (taken, not this machine's)."""

    def __init__(self, source: str, listen: str, exc: OSError) -> None:
        super().__init__(exc.errno, f"sources[{source}].listen {listen}: {exc.strerror or exc}")
        self.listen = listen


class OtlpToken(WebhookToken):
    """The bearer token an otlp source requires: read, re-read on rotation and refused when unusable
    like the webhook's, said in the log as ``otlp_token_unreadable`` / ``otlp_token_readable``."""

    def __init__(self, source: SourceConfig) -> None:
        cfg = source.otlp
        assert cfg is not None
        super().__init__(BreakerWebhookConfig(token_env=cfg.token_env, token_file=cfg.token_file))
        self.source = source.name

    @property
    def path(self) -> str:
        return f"sources[{self.source}].{'token_file' if self.token_file is not None else 'token_env'}"

    def _note(self, got: str | TokenUnavailable) -> None:
        ok = not isinstance(got, TokenUnavailable)
        if ok == self._ok:
            return
        if isinstance(got, TokenUnavailable):
            log.warning("otlp_token_unreadable", source=self.source, path=got.path, reason=got.reason,
                        hint="every OTLP request to this source is refused with 503 until the token can be read")
        elif self._ok is not None:
            log.info("otlp_token_readable", source=self.source, path=self.path)
        self._ok = ok


class _OtlpApp(AsgiApp):
    def __init__(self, source: SourceConfig, sink: Sink, token: OtlpToken, auth: BasicAuth | None,
                 headers: Headers, auth_pool: ThreadPoolExecutor, pool: ThreadPoolExecutor) -> None:
        cfg = source.otlp
        assert cfg is not None
        super().__init__(auth, headers, auth_pool, pool, max_body=cfg.max_body_bytes)
        self.source = source.name
        self.attributes = cfg.attributes
        self.sink = sink
        self.token = token

    async def _get(self, req: Request) -> None:
        req.close = True
        if req.path.rstrip("/") in PATHS:
            await self._json(req, 405, {"error": "OTLP/HTTP takes POST"}, {"Allow": "POST"})
        else:
            await self._json(req, 404, {"error": f"no such page: {req.path}; OTLP/HTTP is POST /v1/logs and "
                                                 "/v1/metrics"})

    async def _post(self, req: Request) -> None:
        req.close = True  # until the body is read, the connection cannot serve another request
        signal = PATHS.get(req.path.rstrip("/"))
        ctype = (req.header("content-type") or "").split(";", 1)[0].strip().lower()
        encoding = ctype if ctype in (PROTOBUF, JSON) else JSON
        try:
            code, body, headers, refused = await self._export(req, signal, encoding)
        except Gone:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must still get an answer, not a dropped connection
            log.error("otlp_request_failed", source=self.source, error=f"{type(exc).__name__}: {exc}")
            req.close = True
            code, body, headers, refused = 500, _status(encoding, "internal error; see the exporter's log"), {}, None
        await self._send(req, code, encoding.encode(), body, [(k.encode(), v.encode()) for k, v in headers.items()])
        if signal is not None:
            self.sink.answered(self.source, signal, code, refused)

    async def _export(self, req: Request, signal: str | None, encoding: str
                      ) -> tuple[int, bytes, dict[str, str], str | None]:
        """(status, body, headers, the refusal reason to count) for one request."""
        try:
            token = await self._off(self.token.current)
        except TokenUnavailable as exc:
            return 503, _status(encoding, f"{exc.path} cannot be used: {exc.public}"), {"Retry-After": "60"}, None
        if token is not None:
            given = req.header("authorization") or ""
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return 401, _status(encoding, "missing or wrong bearer token"), {"WWW-Authenticate": "Bearer"}, None
        elif not await self._basic_ok(req):
            return 401, _status(encoding, "authentication required"), {
                "WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}, None
        if signal is None:
            return 404, _status(encoding, f"no such endpoint: {req.path}; OTLP/HTTP is /v1/logs and /v1/metrics"), \
                {}, None
        try:
            raw = await self._read_body(req)
        except BodyError as exc:
            return exc.code, _status(encoding, str(exc)), {}, TOO_LARGE if exc.code == 413 else MALFORMED
        req.close = False
        try:
            decoded = await self._off(self._decode, signal, raw, req.header("content-type"),
                                      req.header("content-encoding"))
        except Refused as exc:
            return exc.status, _status(encoding, str(exc)), {}, exc.reason
        try:
            await asyncio.wrap_future(self.sink.submit(self.source, decoded))
        except Exception as exc:  # noqa: BLE001 - the commit failed: nothing of it was kept, the sender retries
            return 503, _status(encoding, f"not stored ({type(exc).__name__}); retry"), \
                {"Retry-After": RETRY_AFTER}, None
        return 200, _answer(decoded, encoding), {}, None

    def _decode(self, signal: str, raw: bytes, ctype: str | None, coding: str | None) -> Decoded:
        data, kind = unpack(raw, ctype, coding, self.max_body)
        return decode(signal, data, kind, self.attributes, self.sink.clock())


def _encode(message: Message, encoding: str) -> bytes:
    if encoding == PROTOBUF:
        return bytes(message.SerializeToString())
    return json_format.MessageToJson(message, indent=None).encode() + b"\n"


def _status(encoding: str, message: str) -> bytes:
    return _encode(status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message), encoding)


def _answer(decoded: Decoded, encoding: str) -> bytes:
    rejected = decoded.rejected
    why = "; ".join(decoded.errors)
    if decoded.signal == LOGS:
        logs = ExportLogsServiceResponse()
        if rejected:
            logs.partial_success.rejected_log_records = rejected
            logs.partial_success.error_message = why
        return _encode(logs, encoding)
    metrics = ExportMetricsServiceResponse()
    if rejected:
        metrics.partial_success.rejected_data_points = rejected
        metrics.partial_success.error_message = why
    return _encode(metrics, encoding)


class OtlpReceiver(HttpServer):
    """One otlp source's listener."""

    thread_name = "otlp"

    def __init__(self, source: SourceConfig, sink: Sink, web: WebConfig | None = None) -> None:
        cfg = source.otlp
        assert cfg is not None
        self.source = source
        self.token = OtlpToken(source)
        self.token.ready()  # a token that cannot be read is said at the start, not at the first request
        host, port = parse_listen(cfg.listen)

        def make_app(auth: BasicAuth | None, headers: Headers, auth_pool: ThreadPoolExecutor,
                     pool: ThreadPoolExecutor) -> AsgiApp:
            return _OtlpApp(source, sink, self.token, auth, headers, auth_pool, pool)

        try:
            super().__init__(host, port, make_app, web, route_threads=ROUTE_THREADS)
        except OSError as exc:
            raise ListenError(source.name, cfg.listen, exc) from None

    def describe(self) -> dict[str, Any]:
        return {"source": self.source.name, "address": f"{self._sock.getsockname()[0]}:{self.port}",
                "auth": "bearer" if self.token.configured else ("basic" if self.auth is not None else "none"),
                "tls": self.web.tls is not None}
