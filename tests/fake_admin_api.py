"""A fake of Anthropic's Admin API usage and cost reports, served over real HTTP.

It behaves like the real endpoints where the exporter depends on them: ``x-api-key`` and
``anthropic-version`` checks with the real error body, RFC 3339 bounds that snap to the
bucket start (``ending_at`` exclusive), per-width ``limit`` caps, ``group_by[]`` (with
brackets; ``group_by=`` is rejected), opaque ``next_page`` tokens, amounts in cents as
decimal strings with fractional cents, ``workspace_id: null`` for the default
workspace, a movable clock with a partial current day, revisions, a request log, and a
queue of injectable faults.

In-process use::

    with FakeAdminApi(key="sk-ant-admin01-test", now=datetime(2026, 3, 10, 12, tzinfo=UTC)) as fake:
        fake.add_spend(datetime(2026, 3, 9, 8, tzinfo=UTC), "123.45", workspace_id=None,
                       model="claude-sonnet-4-5-20250929", token_type="output_tokens", tokens=1000)
        fake.inject("429", retry_after=2)      # the next request gets a 429
        fake.set_now(datetime(2026, 3, 10, 13, tzinfo=UTC))
        ... point a client at fake.url ...
        fake.count("cost_report")              # requests seen per endpoint

As a process (for end-to-end tests)::

    python -m tests.fake_admin_api --port 0 --key sk-ant-admin01-test --dataset data.json

prints ``FAKE_ADMIN_API_URL=http://127.0.0.1:PORT`` once listening. The dataset file is
JSON: ``{"now": "2026-03-10T12:00:00Z", "spend": [{"at": ..., "amount_cents": "1.5",
...add_spend keywords...}], "claude_code": [{...add_claude_code keywords...}]}``. A process
is steered over HTTP without a key: ``POST /_fake/now {"now": ...}``, ``POST /_fake/inject
{"kind": "500", "count": 2}``, ``POST /_fake/clear``, ``POST /_fake/spend {...}``,
``GET /_fake/requests``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from exporter.billing.wire import (
    COST_GROUPS,
    USAGE_GROUPS,
    WIDTHS,
    PageTokens,
    WireError,
    check_report_query,
    error_body,
    iso,
    parse_rfc3339,
)

DEFAULT_KEY = "sk-ant-admin01-fake-key-for-tests-only"
API_VERSION = "2023-06-01"

PATHS = {
    "/v1/organizations/cost_report": "cost_report",
    "/v1/organizations/usage_report/messages": "usage_report",
    "/v1/organizations/usage_report/claude_code": "claude_code_report",
}
# cost-report token_type -> where the usage report puts the count
USAGE_FIELD = {
    "uncached_input_tokens": "uncached_input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_input_tokens": "cache_read_input_tokens",
    "cache_creation.ephemeral_5m_input_tokens": "ephemeral_5m_input_tokens",
    "cache_creation.ephemeral_1h_input_tokens": "ephemeral_1h_input_tokens",
}
FAULT_KINDS = ("429", "500", "529", "slow", "truncated", "short_body", "reset", "not_report", "echo_key")


@dataclass(frozen=True)
class SpendEntry:
    """Spend accrued at one moment: it shows in the reports once ``now`` has passed ``at``.

    ``cost_type="tokens"`` entries carry ``tokens`` of ``token_type`` (cost-report naming)
    and feed the usage report too; ``cost_type="web_search"`` entries carry the number of
    searches in ``tokens``.
    """

    id: int
    at: datetime
    amount_cents: Decimal
    workspace_id: str | None = None
    api_key_id: str | None = "apikey_01Default"
    model: str = "claude-sonnet-4-5-20250929"
    cost_type: str = "tokens"
    token_type: str | None = "uncached_input_tokens"
    tokens: int = 0
    service_tier: str = "standard"
    context_window: str = "0-200k"
    inference_geo: str = "global"
    description: str | None = None

    def describe(self) -> str:
        if self.description:
            return self.description
        if self.cost_type == "web_search":
            return "Web Search"
        return f"{self.model} Usage - {self.token_type}"


@dataclass(frozen=True)
class ClaudeCodeEntry:
    day: date
    actor_email: str
    model: str
    cost_cents: Decimal
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour; ``endpoint`` None matches any report endpoint."""

    kind: str
    retry_after: str = "1"
    seconds: float = 1.0
    endpoint: str | None = None


@dataclass(frozen=True)
class RequestRecord:
    endpoint: str
    path: str
    query: tuple[tuple[str, str], ...]
    status: int | None  # None: the connection was reset or cut
    fault: str | None
    fake_now: datetime
    wall: float
    headers: tuple[tuple[str, str], ...] = ()  # every header except x-api-key

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.query if k == name), None)

    def params(self, name: str) -> list[str]:
        return [v for k, v in self.query if k == name]


def _cents(value: Decimal) -> str:
    return f"{value:f}"


class FakeAdminApi:
    """The fake server. Thread-safe; every public method may be called while it serves."""

    def __init__(self, *, key: str = DEFAULT_KEY, now: datetime | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.key = key
        self._now = (now or datetime.now(UTC)).astimezone(UTC)
        self._host, self._port = host, port
        self._lock = threading.RLock()
        self._spend: dict[int, SpendEntry] = {}
        self._claude_code: list[ClaudeCodeEntry] = []
        self._faults: list[tuple[Fault, int | None]] = []  # (fault, remaining uses; None = forever)
        self._log: list[RequestRecord] = []
        self._ids = 0
        self._pages = PageTokens()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.on_request: Callable[[RequestRecord], None] | None = None  # called as each request arrives

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeAdminApi:
        fake = self

        class Handler(_Handler):
            api = fake

        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-admin-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeAdminApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    # ------------------------------------------------------------------ clock

    @property
    def now(self) -> datetime:
        with self._lock:
            return self._now

    @now.setter
    def now(self, moment: datetime) -> None:
        self.set_now(moment)

    def set_now(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        with self._lock:
            self._now = moment.astimezone(UTC)

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now

    # ------------------------------------------------------------------ data

    def add_spend(self, at: datetime, amount_cents: Decimal | str | int, **fields: Any) -> int:
        """Add spend accrued at ``at``; returns its id for :meth:`revise`. Fields: see SpendEntry."""
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        with self._lock:
            self._ids += 1
            entry = SpendEntry(id=self._ids, at=at.astimezone(UTC), amount_cents=Decimal(str(amount_cents)),
                               **fields)
            self._spend[entry.id] = entry
            return entry.id

    def revise(self, entry_id: int, *, amount_cents: Decimal | str | int | None = None,
               tokens: int | None = None) -> None:
        """Change an entry after the fact, as the API revises recent buckets."""
        with self._lock:
            entry = self._spend[entry_id]
            if amount_cents is not None:
                entry = replace(entry, amount_cents=Decimal(str(amount_cents)))
            if tokens is not None:
                entry = replace(entry, tokens=tokens)
            self._spend[entry_id] = entry

    def remove_spend(self, entry_id: int) -> None:
        with self._lock:
            del self._spend[entry_id]

    def spend(self) -> list[SpendEntry]:
        with self._lock:
            return list(self._spend.values())

    def add_claude_code(self, day: date, actor_email: str, model: str, cost_cents: Decimal | str | int,
                        **tokens: int) -> None:
        with self._lock:
            self._claude_code.append(ClaudeCodeEntry(day, actor_email, model, Decimal(str(cost_cents)), **tokens))

    # ------------------------------------------------------------------ faults

    def inject(self, kind: str, *, count: int | None = 1, retry_after: float | str = 1, seconds: float = 1.0,
               endpoint: str | None = None) -> None:
        """Queue a fault for the next ``count`` matching requests (``count=None``: until cleared).

        Kinds: ``429`` (with ``retry-after: <retry_after>``), ``500``, ``529`` (overloaded_error),
        ``slow`` (answer normally after ``seconds``), ``truncated`` (200 whose JSON body is cut,
        with a matching Content-Length), ``short_body`` (Content-Length promises more than is
        sent, then the connection closes), ``reset`` (TCP reset, no answer), ``not_report``
        (200 with a JSON body that is not a report), ``echo_key`` (a 400 whose message and
        ``request_id`` echo the ``x-api-key`` it was sent, as a careless proxy might).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULT_KINDS)}")
        if endpoint is not None and endpoint not in PATHS.values():
            raise ValueError(f"unknown endpoint {endpoint!r}")
        with self._lock:
            self._faults.append((Fault(kind, str(retry_after), seconds, endpoint), count))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            for i, (fault, remaining) in enumerate(self._faults):
                if fault.endpoint not in (None, endpoint):
                    continue
                if remaining is not None:
                    if remaining <= 1:
                        del self._faults[i]
                    else:
                        self._faults[i] = (fault, remaining - 1)
                return fault
        return None

    # ------------------------------------------------------------------ request log

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def count(self, endpoint: str | None = None, status: int | None = None) -> int:
        """Requests received (for one endpoint, with one status), faults included."""
        return sum(1 for r in self.requests
                   if (endpoint is None or r.endpoint == endpoint) and (status is None or r.status == status))

    def counts(self) -> Counter[str]:
        return Counter(r.endpoint for r in self.requests)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)
        if self.on_request is not None:
            self.on_request(record)

    # ------------------------------------------------------------------ reports

    def _check_common(self, query: list[tuple[str, str]], allowed_groups: tuple[str, ...], *,
                      widths: tuple[str, ...], max_groups: int) -> tuple[datetime, datetime, str, int, list[str]]:
        q = check_report_query(query, allowed_groups, widths=widths, max_groups=max_groups, now=self.now)
        return q.start, q.end, q.width, q.limit, q.groups

    def _buckets(self, start: datetime, end: datetime, width: str) -> list[tuple[datetime, datetime]]:
        out = []
        step = WIDTHS[width]
        now = self.now
        b = start
        while b < end and b < now:
            out.append((b, b + step))
            b += step
        return out

    def _paged(self, query: list[tuple[str, str]], buckets: list[tuple[datetime, datetime]], limit: int,
               results_for: Callable[[datetime, datetime], list[dict[str, Any]]]) -> dict[str, Any]:
        lo, hi = self._pages.bounds(query, len(buckets), limit)
        data = [{"starting_at": iso(s), "ending_at": iso(e), "results": results_for(s, e)}
                for s, e in buckets[lo:hi]]
        has_more = hi < len(buckets)
        return {"data": data, "has_more": has_more, "next_page": self._pages.next(query, hi) if has_more else None}

    def _accrued(self, s: datetime, e: datetime) -> list[SpendEntry]:
        now = self.now
        with self._lock:
            return [x for x in self._spend.values() if s <= x.at < e and x.at < now]

    def cost_report(self, query: list[tuple[str, str]]) -> dict[str, Any]:
        start, end, width, limit, groups = self._check_common(query, COST_GROUPS, widths=("1d",), max_groups=2)
        by_desc = "description" in groups
        by_ws = "workspace_id" in groups

        def results(s: datetime, e: datetime) -> list[dict[str, Any]]:
            sums: dict[tuple, Decimal] = {}
            for x in self._accrued(s, e):
                key = (
                    x.workspace_id if by_ws else None,
                    x.describe() if by_desc else None,
                    x.model if by_desc and x.cost_type == "tokens" else None,
                    x.cost_type if by_desc else None,
                    x.token_type if by_desc and x.cost_type == "tokens" else None,
                    x.service_tier if by_desc else None,
                    x.context_window if by_desc else None,
                )
                sums[key] = sums.get(key, Decimal(0)) + x.amount_cents
            return [{"currency": "USD", "amount": _cents(amount), "workspace_id": k[0], "description": k[1],
                     "model": k[2], "cost_type": k[3], "token_type": k[4], "service_tier": k[5],
                     "context_window": k[6]}
                    for k, amount in sorted(sums.items(), key=lambda kv: tuple(str(p) for p in kv[0]))]

        return self._paged(query, self._buckets(start, end, width), limit, results)

    def usage_report(self, query: list[tuple[str, str]]) -> dict[str, Any]:
        start, end, width, limit, groups = self._check_common(
            query, USAGE_GROUPS, widths=("1m", "1h", "1d"), max_groups=5)

        def results(s: datetime, e: datetime) -> list[dict[str, Any]]:
            sums: dict[tuple, Counter[str]] = {}
            for x in self._accrued(s, e):
                key = tuple(getattr(x, g) if g in groups else None for g in USAGE_GROUPS)
                c = sums.setdefault(key, Counter())
                if x.cost_type == "tokens" and x.token_type in USAGE_FIELD:
                    c[USAGE_FIELD[x.token_type]] += x.tokens
                elif x.cost_type == "web_search":
                    c["web_search_requests"] += x.tokens
            out = []
            for key, c in sorted(sums.items(), key=lambda kv: tuple(str(p) for p in kv[0])):
                row: dict[str, Any] = dict(zip(USAGE_GROUPS, key, strict=True))
                row.update({
                    "uncached_input_tokens": c["uncached_input_tokens"],
                    "cache_read_input_tokens": c["cache_read_input_tokens"],
                    "cache_creation": {"ephemeral_5m_input_tokens": c["ephemeral_5m_input_tokens"],
                                       "ephemeral_1h_input_tokens": c["ephemeral_1h_input_tokens"]},
                    "output_tokens": c["output_tokens"],
                    "server_tool_use": {"web_search_requests": c["web_search_requests"]},
                })
                out.append(row)
            return out

        return self._paged(query, self._buckets(start, end, width), limit, results)

    def claude_code_report(self, query: list[tuple[str, str]]) -> dict[str, Any]:
        text = next((v for k, v in query if k == "starting_at"), None)
        try:
            day = date.fromisoformat(text or "")
        except ValueError:
            raise WireError(400, "invalid_request_error", "starting_at: must be a date YYYY-MM-DD") from None
        if day > self.now.date():
            raise WireError(400, "invalid_request_error", "starting_at must not be in the future")
        limit_text = next((v for k, v in query if k == "limit"), "20")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
            raise WireError(400, "invalid_request_error", "limit: must be between 1 and 1000")
        with self._lock:
            entries = [e for e in self._claude_code if e.day == day]
        actors: dict[str, list[ClaudeCodeEntry]] = {}
        for e in entries:
            actors.setdefault(e.actor_email, []).append(e)
        items = [{
            "date": iso(datetime(day.year, day.month, day.day, tzinfo=UTC)),
            "actor": {"type": "user_actor", "email_address": email},
            "organization_id": "org_fake", "customer_type": "api", "terminal_type": "cli",
            "core_metrics": {"num_sessions": 1, "lines_of_code": {"added": 0, "removed": 0},
                             "commits_by_claude_code": 0, "pull_requests_by_claude_code": 0},
            "model_breakdown": [{
                "model": e.model,
                "tokens": {"input": e.input_tokens, "output": e.output_tokens, "cache_read": e.cache_read_tokens,
                           "cache_creation": e.cache_creation_tokens},
                "estimated_cost": {"currency": "USD", "amount": _cents(e.cost_cents)},
            } for e in es],
        } for email, es in sorted(actors.items())]
        limit = int(limit_text)
        lo, hi = self._pages.bounds(query, len(items), limit)
        has_more = hi < len(items)
        return {"data": items[lo:hi], "has_more": has_more,
                "next_page": self._pages.next(query, hi) if has_more else None}

    # ------------------------------------------------------------------ dataset files

    def load_dataset(self, data: dict[str, Any]) -> None:
        if data.get("now"):
            self.set_now(parse_rfc3339(data["now"], "now"))
        for item in data.get("spend", []):
            item = dict(item)
            at = parse_rfc3339(item.pop("at"), "at")
            self.add_spend(at, item.pop("amount_cents"), **item)
        for item in data.get("claude_code", []):
            item = dict(item)
            self.add_claude_code(date.fromisoformat(item.pop("day")), item.pop("actor_email"), item.pop("model"),
                                 item.pop("cost_cents"), **item)


class _Handler(BaseHTTPRequestHandler):
    api: FakeAdminApi
    protocol_version = "HTTP/1.1"
    server_version = "fake-admin-api"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # answer at once: without this, Nagle and delayed ACKs add ~40 ms to every answer
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -------------------------------------------------------------- control endpoints (no key)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        length = int(self.headers.get("content-length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self._send(400, error_body("invalid_request_error", "body is not JSON"))
        api = self.api
        try:
            if path == "/_fake/now":
                api.set_now(parse_rfc3339(body["now"], "now"))
            elif path == "/_fake/advance":
                api.advance(timedelta(seconds=float(body["seconds"])))
            elif path == "/_fake/inject":
                kind = str(body.pop("kind"))
                api.inject(kind, **body)
            elif path == "/_fake/clear":
                api.clear_faults()
            elif path == "/_fake/spend":
                api.load_dataset({"spend": [body]})
            elif path == "/_fake/dataset":
                api.load_dataset(body)
            else:
                return self._send(404, error_body("not_found_error", "no such control endpoint"))
        except (KeyError, TypeError, ValueError, WireError) as exc:
            return self._send(400, error_body("invalid_request_error", f"bad control request: {exc!r}"))
        self._send(200, json.dumps({"ok": True, "now": iso(api.now)}).encode())

    # -------------------------------------------------------------- the API

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/_fake/requests":
            rows = [{**asdict(r), "fake_now": iso(r.fake_now)} for r in self.api.requests]
            return self._send(200, json.dumps(rows, default=str).encode())
        endpoint = PATHS.get(parts.path, "other")
        query = parse_qsl(parts.query, keep_blank_values=True)
        api = self.api
        headers = tuple((k.lower(), v) for k, v in self.headers.items() if k.lower() != "x-api-key")
        fault = api._take_fault(endpoint) if endpoint != "other" else None

        def record(status: int | None) -> None:
            api._record(RequestRecord(endpoint, parts.path, tuple(query), status, fault.kind if fault else None,
                                      api.now, time.monotonic(), headers))

        if fault is not None:
            if fault.kind == "reset":
                record(None)
                return self._reset()
            if fault.kind == "slow":
                if api._stopping.wait(fault.seconds):
                    record(None)
                    return self._reset()
            elif fault.kind == "429":
                record(429)
                return self._send(429, error_body("rate_limit_error", "Number of requests has exceeded your rate limit"),
                                  extra={"retry-after": fault.retry_after})
            elif fault.kind in ("500", "529"):
                status = int(fault.kind)
                err = ("api_error", "Internal server error") if status == 500 else ("overloaded_error", "Overloaded")
                record(status)
                return self._send(status, error_body(*err))
            elif fault.kind == "not_report":
                record(200)
                return self._send(200, b'{"type":"message","content":[]}')
            elif fault.kind == "echo_key":
                sent = self.headers.get("x-api-key", "")
                record(400)
                return self._send(400, json.dumps({
                    "type": "error", "error": {"type": "invalid_request_error", "message": f"bad key {sent}"},
                    "request_id": f"req_{sent}\x1b[2J"}).encode())

        status, body = self._answer(endpoint, parts.path, query)
        if fault is not None and fault.kind == "truncated" and status == 200:
            body = body[: max(1, len(body) // 2)]
        if fault is not None and fault.kind == "short_body" and status == 200:
            record(None)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            return self._reset()
        record(status)
        self._send(status, body)

    def _answer(self, endpoint: str, path: str, query: list[tuple[str, str]]) -> tuple[int, bytes]:
        api = self.api
        if endpoint == "other":
            return 404, error_body("not_found_error", f"Not found: {path}")
        if self.headers.get("x-api-key") is None:
            return 401, error_body("authentication_error", "x-api-key header is required")
        if not secrets.compare_digest(self.headers.get("x-api-key", ""), api.key):
            return 401, error_body("authentication_error", "invalid x-api-key")
        version = self.headers.get("anthropic-version")
        if version is None:
            return 400, error_body("invalid_request_error", "anthropic-version: header is required")
        if version != API_VERSION:
            return 400, error_body("invalid_request_error", f"anthropic-version: {version!r} is not a valid version")
        try:
            report = getattr(api, endpoint)(query)
        except WireError as exc:
            return exc.status, error_body(exc.error_type, exc.message)
        return 200, json.dumps(report).encode()

    def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("request-id", f"req_{secrets.token_hex(8)}")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _reset(self) -> None:
        """Close with a TCP RST: the client sees a reset connection, not an answer."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_admin_api", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", default=DEFAULT_KEY)
    parser.add_argument("--now", help="RFC 3339; default: the dataset's, else the real time")
    parser.add_argument("--dataset", help="JSON file with now/spend/claude_code")
    args = parser.parse_args(list(argv) if argv is not None else None)
    fake = FakeAdminApi(key=args.key, host=args.host, port=args.port)
    if args.dataset:
        with open(args.dataset, encoding="utf-8") as fh:
            fake.load_dataset(json.load(fh))
    if args.now:
        fake.set_now(parse_rfc3339(args.now, "--now"))
    fake.start()
    print(f"FAKE_ADMIN_API_URL={fake.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
