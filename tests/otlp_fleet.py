"""Simulated Claude Code processes with telemetry on, sending over the real OpenTelemetry SDK.

Each :class:`ClaudeCodeProcess` is what ``CLAUDE_CODE_ENABLE_TELEMETRY=1`` with
``OTEL_METRICS_EXPORTER=otlp``, ``OTEL_LOGS_EXPORTER=otlp`` and
``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`` makes of one Claude Code process: a
``MeterProvider`` with the counters ``claude_code.token.usage`` (attribute ``type``: input,
output, cacheRead, cacheCreation) and ``claude_code.cost.usage``, and a ``LoggerProvider``
emitting one ``claude_code.api_request`` event per request, both exported by the SDK's own
OTLP/HTTP exporters (their retries included), with Claude Code's attribute names: the standard
``session.id``, ``user.account_uuid``, ``user.email``, ``organization.id``, ``terminal.type`` and
``app.entrypoint``, and the resource attributes of ``OTEL_RESOURCE_ATTRIBUTES`` (``team=...``).

:class:`Truth` sums what was sent, priced with the corpus generator's own table
(``tests.corpus.price_request``): the figures a receiver must report, computed independently of
the exporter's pricing. Exports happen when a test calls :meth:`ClaudeCodeProcess.flush` (the
periodic reader's interval is set far out), so what is in flight is known.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import requests
from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from tests.corpus import MODELS, price_request

SONNET, OPUS, HAIKU = MODELS
NEVER_MS = 3_600_000.0  # the periodic reader's interval: exports happen on flush()
_seq = itertools.count(1)


class DuplicatingSession(requests.Session):
    """A session that sends every request twice (a proxy or a Collector retrying after a lost
    answer): the receiver sees each batch two times."""

    def request(self, method: str | bytes, url: str | bytes, *args: Any,  # type: ignore[override]
                **kwargs: Any) -> requests.Response:
        super().request(method, url, *args, **kwargs)
        return super().request(method, url, *args, **kwargs)


@dataclass
class Totals:
    requests: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # input, output, cache_read, cache_write
    usd: Decimal = Decimal(0)


class Truth:
    """What was sent, by source, team and user: the independent figures a test compares with."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.all = Totals()
        self.by_team: dict[str, Totals] = defaultdict(Totals)
        self.by_user: dict[str, Totals] = defaultdict(Totals)
        self.by_model: dict[str, Totals] = defaultdict(Totals)

    def add(self, team: str, user: str, model: str, inp: int, out: int, cr: int, cw: int) -> Decimal:
        usd = price_request(model, inp, out, cr, cw, 0)
        with self._lock:
            for t in (self.all, self.by_team[team], self.by_user[user], self.by_model[MODELS[model]]):
                t.requests += 1
                t.usd += usd
                for k, n in (("input", inp), ("output", out), ("cache_read", cr), ("cache_write_5m", cw)):
                    t.tokens[k] += n
        return usd


class ClaudeCodeProcess:
    """One Claude Code process: its telemetry providers and OTLP/HTTP exporters."""

    def __init__(self, endpoint: str, truth: Truth, *, session_id: str | None = None, user: str = "dev@example.com",
                 team: str = "platform", org: str = "org-1", entrypoint: str = "cli",
                 temporality: str = "delta", events: bool = True, metrics: bool = True,
                 headers: Mapping[str, str] | None = None, timeout: float = 30.0, duplicate: bool = False,
                 compression: bool = True, session_attribute_in_metrics: bool = True) -> None:
        self.truth = truth
        self.session_id = session_id or str(uuid.uuid4())
        self.user = user
        self.team = team
        self.account_uuid = str(uuid.uuid5(uuid.NAMESPACE_DNS, user))
        self.standard = {"user.account_uuid": self.account_uuid, "user.email": user, "organization.id": org,
                         "terminal.type": "xterm-256color", "app.entrypoint": entrypoint}
        self.metric_standard = dict(self.standard)
        if session_attribute_in_metrics:
            self.metric_standard["session.id"] = self.session_id
        resource = Resource.create({"service.name": "claude-code", "service.version": "2.1.0",
                                    "os.type": "linux", "host.arch": "amd64", "team": team})
        kw: dict[str, Any] = {"headers": dict(headers or {}), "timeout": timeout,
                              "compression": Compression.Gzip if compression else Compression.NoCompression}
        self.events = events
        self.metrics = metrics
        self.meters: MeterProvider | None = None
        self.logs: LoggerProvider | None = None
        if metrics:
            exporter = OTLPMetricExporter(
                endpoint=f"{endpoint}/v1/metrics", session=DuplicatingSession() if duplicate else None,
                preferred_temporality={Counter: AggregationTemporality.DELTA if temporality == "delta"
                                       else AggregationTemporality.CUMULATIVE}, **kw)
            self.reader = PeriodicExportingMetricReader(exporter, export_interval_millis=NEVER_MS)
            self.meters = MeterProvider(resource=resource, metric_readers=[self.reader], shutdown_on_exit=False)
            meter = self.meters.get_meter("com.anthropic.claude_code", "2.1.0")
            self.token_counter = meter.create_counter("claude_code.token.usage", unit="tokens",
                                                      description="Number of tokens used")
            self.cost_counter = meter.create_counter("claude_code.cost.usage", unit="USD",
                                                     description="Cost of the Claude Code session")
        if events:
            log_exporter = OTLPLogExporter(endpoint=f"{endpoint}/v1/logs",
                                           session=DuplicatingSession() if duplicate else None, **kw)
            self.logs = LoggerProvider(resource=resource, shutdown_on_exit=False)
            self.logs.add_log_record_processor(BatchLogRecordProcessor(
                log_exporter, schedule_delay_millis=NEVER_MS, max_export_batch_size=512, max_queue_size=100_000))
            self.logger = self.logs.get_logger("com.anthropic.claude_code.events", "2.1.0")

    def request(self, model: str, inp: int, out: int, cache_read: int = 0, cache_creation: int = 0, *,
                query_source: str = "main", speed: str = "normal", when: datetime | None = None,
                numbers_as_strings: bool = False) -> Decimal:
        """One API request, as Claude Code reports it: the event and the two counters."""
        usd = self.truth.add(self.team, self.user, model, inp, out, cache_read, cache_creation)
        if self.metrics:
            common = {**self.metric_standard, "model": model, "query_source": query_source, "speed": speed}
            for kind, n in (("input", inp), ("output", out), ("cacheRead", cache_read),
                            ("cacheCreation", cache_creation)):
                if n:
                    self.token_counter.add(n, {**common, "type": kind})
            self.cost_counter.add(float(usd), common)
        if self.events:
            at = when or datetime.now(UTC)
            ns = int(at.timestamp() * 1e9)

            def num(n: int) -> int | str:
                return str(n) if numbers_as_strings else n

            self.logger.emit(LogRecord(
                timestamp=ns, observed_timestamp=ns, body="claude_code.api_request",
                attributes={**self.standard, "session.id": self.session_id, "event.name": "api_request",
                            "event.timestamp": at.isoformat().replace("+00:00", "Z"), "event.sequence": next(_seq),
                            "model": model, "input_tokens": num(inp), "output_tokens": num(out),
                            "cache_read_tokens": num(cache_read), "cache_creation_tokens": num(cache_creation),
                            "cost_usd": float(usd), "cost_usd_micros": int(usd * 1_000_000),
                            "duration_ms": 1234, "request_id": f"req_{uuid.uuid4().hex}", "speed": speed,
                            "query_source": query_source}))
        return usd

    def flush(self) -> bool:
        ok = True
        if self.logs is not None:
            ok = self.logs.force_flush(60_000) and ok
        if self.meters is not None:
            ok = self.meters.force_flush(60_000) and ok
        return ok

    def shutdown(self) -> None:
        """The process exits: what it holds is sent first, as Claude Code's own shutdown does."""
        if self.logs is not None:
            self.logs.shutdown()
        if self.meters is not None:
            self.meters.shutdown()
