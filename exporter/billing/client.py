"""Client for Anthropic's Admin API usage and cost reports.

Only what the exporter needs: the daily cost report, the messages usage report and,
optionally, the Claude Code usage report, each paged to the end and parsed into typed,
exact rows (``Decimal`` dollars, never float).

Whatever answers is bounded: amounts and token counts per row, rows and bytes per
response (the body is streamed and refused past the cap), pages per query, and time per
request (an overall deadline, not only a timeout per read). An answer past a bound is
refused, counted by reason (:meth:`AdminApiClient.refusal_counts`), and raised as an
:class:`AdminApiError`, never as whatever the parsing of it happened to raise.

The admin key is sensitive: it is held in an object whose repr hides it, sent by an
httpx auth hook, and scrubbed from every exception message, so that neither a log
line, an error nor a traceback's locals can show it.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from exporter.logsetup import get_logger

from exporter import __version__
from exporter.billing.wire import (
    ANALYTICS_BETA,
    ANALYTICS_FANOUT,
    ANALYTICS_MAX_GROUPS,
    ANALYTICS_MAX_LIMIT,
    API_VERSION,
    SPEND_LIMIT_PERIODS,
    SPEND_LIMIT_SCOPE_IDS,
    SPEND_LIMIT_SCOPES,
    SPEND_LIMITS_BETA,
    BUCKET_LIMITS,
    CLAUDE_CODE_MAX_LIMIT,
)
from exporter.core.records import Tokens

USER_AGENT = f"claude-budget-exporter/{__version__}"

COST_PATH = "/v1/organizations/cost_report"
USAGE_PATH = "/v1/organizations/usage_report/messages"
CLAUDE_CODE_PATH = "/v1/organizations/usage_report/claude_code"
ANALYTICS_COST_PATH = "/v1/organizations/analytics/cost"
ANALYTICS_USAGE_PATH = "/v1/organizations/analytics/usage"
SPEND_LIMITS_PATH = "/v1/organizations/spend_limits"
EFFECTIVE_PATH = "/v1/organizations/spend_limits/effective"
ENDPOINTS = {"cost_report": COST_PATH, "usage_report": USAGE_PATH, "claude_code_report": CLAUDE_CODE_PATH,
             "analytics_cost": ANALYTICS_COST_PATH, "analytics_usage": ANALYTICS_USAGE_PATH,
             "spend_limits": SPEND_LIMITS_PATH, "spend_limits_effective": EFFECTIVE_PATH}
#: headers only some endpoints take: the analytics API is a beta
ENDPOINT_HEADERS = {"analytics_cost": {"anthropic-beta": ANALYTICS_BETA},
                    "analytics_usage": {"anthropic-beta": ANALYTICS_BETA},
                    "spend_limits": {"anthropic-beta": SPEND_LIMITS_BETA}}
#: cost rows a page may hold per row asked for: the fan-out by cost_type and token_type does not
#: count toward ``limit`` (five token types and three other components at most)
ANALYTICS_FANOUT_ROWS = 8
#: the mark a cursor-only page gets once checked (a key no JSON object from the API can hold)
CURSOR_ONLY = "\x00cursor_only"

COST_GROUP_BY = ("workspace_id", "description")
USAGE_GROUP_BY = ("model", "workspace_id", "api_key_id", "service_tier", "context_window")
CLAUDE_CODE_LIMIT = CLAUDE_CODE_MAX_LIMIT

RETRY_STATUSES = frozenset({408, 500, 502, 503, 504, 529})

# Bounds on what an answer may hold. Each is far past what a real organisation or the API's own
# limits produce, so only a broken or hostile server reaches one; past one, the answer is refused.
#: one row's amount: 10^12 cents ($10 billion) is no organisation's bill, and keeps every sum and
#: rounding of billed USD far inside Decimal's 28 digits
MAX_AMOUNT_CENTS = Decimal(10) ** 12
MAX_AMOUNT_USD = MAX_AMOUNT_CENTS / 100
#: one row's token count: 10^15 tokens in one hour or day is past any organisation's traffic, and
#: keeps sums inside SQLite's 64-bit integers
MAX_TOKENS_PER_ROW = 10**15
#: pages of one query: a month is 1-2 pages of the cost report (31 days a page) and 5 of the hourly
#: usage report (168 hours a page); a thousand is for row-paged answers, and ends a server that
#: hands out a new next_page forever
MAX_PAGES_PER_QUERY = 1000
#: one response body, read as it streams and refused past this: about 50,000 rows of the richest
#: report, where a real page holds at most 31 days or 168 hours of buckets
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: rows in one response, and JSON objects (a usage row is three, its bucket one more) and numbers
#: written as floats (at most the one amount of a row) before a body is even parsed
MAX_ROWS_PER_RESPONSE = 100_000
MAX_OBJECTS_PER_RESPONSE = 4 * MAX_ROWS_PER_RESPONSE + 1_000
#: rows kept over all pages of one query: an hourly month of about 650 groups an hour, a few hundred
#: MB at most in memory
MAX_ROWS_PER_QUERY = 500_000
#: seconds one request may take from connect to the last body byte: the timeout alone bounds each
#: read, so a body trickled a byte at a time would hold a poll without end
REQUEST_DEADLINE = 60.0
#: an error body past this is not parsed: the real one is a few hundred bytes
MAX_ERROR_BODY_BYTES = 64 * 1024
#: a longer retry-after is taken as this: an absurd one (or 1e400) would block the client for good
MAX_RETRY_AFTER = 86_400.0
#: seconds: with a retry budget, a last retry shorter than this is not worth making
MIN_LAST_RETRY = 0.5
#: a next_page token past this is not one (it goes back into the URL)
MAX_PAGE_TOKEN_CHARS = 8 * 1024
#: API-supplied text (error type, message, request id) kept for errors and logs
MAX_API_TEXT_CHARS = 500

#: why an answer was refused: the ``reason`` of ``claude_admin_api_refused_total``
REFUSAL_REASONS = ("malformed", "out_of_bounds", "body_too_large", "too_many_rows", "too_many_pages", "deadline")

_Row = TypeVar("_Row")

log = get_logger()


# --------------------------------------------------------------------------- errors


class AdminApiError(Exception):
    """Any failure to get a report; its text never contains the admin key.

    ``reason`` names the kind of failure for logs and counts.
    """

    reason = "error"

    def __init__(self, endpoint: str, message: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"{endpoint}: {message}")


class AdminApiHTTPError(AdminApiError):
    """The API answered with an error status (after retries, for retryable ones)."""

    reason = "http"

    def __init__(self, endpoint: str, status: int, error_type: str, message: str, request_id: str | None) -> None:
        self.status = status
        self.error_type = error_type
        self.api_message = message
        self.request_id = request_id
        rid = f" (request_id {request_id})" if request_id else ""
        super().__init__(endpoint, f"HTTP {status} {error_type}: {message}{rid}")


class AdminApiRateLimited(AdminApiHTTPError):
    """429, and the wait the API asked for is longer than this client will block."""

    reason = "rate_limited"

    def __init__(self, endpoint: str, retry_after: float, message: str = "rate limited",
                 request_id: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(endpoint, 429, "rate_limit_error", f"{message}; retry after {retry_after:g}s", request_id)


class AdminApiTransportError(AdminApiError):
    """Timeout, refused or reset connection: no usable HTTP answer."""

    reason = "transport"


class AdminApiDeadlineExceeded(AdminApiTransportError):
    """One request took longer than its overall deadline (connect to the last body byte); not retried."""

    reason = "deadline"


class AdminApiBadResponse(AdminApiError):
    """A 2xx answer whose body is not a report (truncated, not JSON, wrong shape, a value out of bounds).

    ``reason`` is one of :data:`REFUSAL_REASONS`.
    """

    def __init__(self, endpoint: str, message: str, reason: str = "malformed") -> None:
        self.reason = reason
        super().__init__(endpoint, message)


class AdminApiRefused(AdminApiBadResponse):
    """An answer past one of the size caps (body, rows, pages): the same query would get it again,
    so it is not retried."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class CostRow:
    """One cost-report line: a day, a workspace (None = default) and a billed amount in USD."""

    day: date
    workspace_id: str | None
    description: str | None
    model: str | None
    cost_type: str | None
    token_type: str | None
    service_tier: str | None
    context_window: str | None
    amount_usd: Decimal
    product: str | None = None  # the analytics API's product surface; the legacy report has none
    list_usd: Decimal | None = None  # the analytics API's list price; the legacy report has none


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One usage-report line: billed tokens in one bucket for one group."""

    start: datetime
    end: datetime
    workspace_id: str | None
    api_key_id: str | None
    model: str | None
    service_tier: str | None
    context_window: str | None
    inference_geo: str | None
    tokens: Tokens

    @property
    def day(self) -> date:
        return self.start.astimezone(UTC).date()


@dataclass(frozen=True, slots=True)
class ClaudeCodeRow:
    """Claude Code usage of one actor and model on one day, with its estimated cost."""

    day: date
    actor_type: str
    actor: str  # email address or API key name; a user label, expose only when allowed
    model: str
    estimated_cost_usd: Decimal
    tokens: Tokens


@dataclass(frozen=True, slots=True)
class Actor:
    """Whom analytics usage is attributed to: ``kind`` is the API's actor type (``user_actor``,
    ``service_account_actor``, ``api_actor``, ``federated_actor``), ``id`` its tagged id (``user_...``,
    ``svac_...``, ``apikey_...``; the subject for a federated one), ``email`` a user's address."""

    kind: str
    id: str | None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class AnalyticsCostRow:
    """One analytics cost row: one bucket (or the whole range) and one combination of the grouped
    dimensions (None where not grouped, or null in the answer); ``amount_usd`` after discounts and
    before credits, ``list_usd`` at list price, both exact. ``requests`` is None on fanned-out rows."""

    start: datetime
    end: datetime
    workspace_id: str | None
    api_key_id: str | None
    model: str | None
    product: str | None
    actor: Actor | None
    cost_type: str | None
    token_type: str | None
    amount_usd: Decimal
    list_usd: Decimal
    currency: str
    requests: int | None


@dataclass(frozen=True, slots=True)
class AnalyticsUsageRow:
    """One analytics usage row: billed tokens of one bucket and one combination of dimensions."""

    start: datetime
    end: datetime
    workspace_id: str | None
    api_key_id: str | None
    model: str | None
    product: str | None
    service_tier: str | None
    context_window: str | None
    inference_geo: str | None
    tokens: Tokens
    requests: int | None


@dataclass(frozen=True, slots=True)
class AnalyticsReport:
    """Every page of one analytics query; ``refreshed_at`` is the oldest ``data_refreshed_at`` the
    pages gave (the data is complete up to there), None when they gave none."""

    rows: tuple[Any, ...]
    refreshed_at: datetime | None


@dataclass(frozen=True, slots=True)
class SpendLimit:
    """One of the organisation's spend limits: ``amount`` (None: no numeric cap here) in the billing
    ``currency``'s major unit (dollars for USD), exact; ``scope_id`` the scope's id (None for the
    organisation and the usage tier)."""

    id: str
    scope_type: str
    scope_id: str | None
    period: str
    amount: Decimal | None
    currency: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class MemberSpend:
    """One member's effective limit for one period and their spend so far in it (Enterprise)."""

    user_id: str
    email: str | None
    period: str
    amount: Decimal | None
    spent: Decimal
    currency: str
    spend_limit_id: str
    source_type: str


# --------------------------------------------------------------------------- helpers


class _Secret:
    """Holds the key; its repr and str never show it (safe in tracebacks with locals)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


class _KeyAuth(httpx.Auth):
    """Adds the admin key at send time, so it is not in the client's default headers."""

    def __init__(self, secret: _Secret) -> None:
        self._secret = secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["x-api-key"] = self._secret.reveal()
        yield request

    def __repr__(self) -> str:
        return "<admin key auth>"


def _rfc3339(moment: datetime | date) -> str:
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    if moment.tzinfo is None:
        raise ValueError("report bounds must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_query(params: list[tuple[str, str]]) -> str:
    """Encode a query, keeping ``group_by[]`` brackets literal as the API requires."""
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in params)


class _OutOfBounds(ValueError):
    """A well-formed value past the bounds above: refused like a malformed one, counted apart."""


class _TooManyFloats(ValueError):
    pass


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {_short(value)}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+05:00 is before the first representable UTC instant
        raise ValueError(f"timestamp out of range: {value[:40]!r}") from None


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"not a string: {value!r}")
    return value


def _int(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"not a token count: {_short(value)}")
    if not 0 <= value <= MAX_TOKENS_PER_ROW:
        raise _OutOfBounds(f"token count out of bounds (0..{MAX_TOKENS_PER_ROW}): {_short(value)}")
    return value


def _short(value: Any) -> str:
    """A value for an error message: its repr, cut (a hostile one may be megabytes long)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**40:
        return "a very large integer"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _cents_to_usd(value: Any) -> Decimal:
    """``"123.45"`` cents -> ``Decimal("1.2345")`` dollars, exactly; bounded by :data:`MAX_AMOUNT_CENTS`."""
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise ValueError(f"amount is not a decimal string: {_short(value)}")
    try:
        cents = Decimal(value)  # exact: no context applies, so nothing here overflows
    except (InvalidOperation, ValueError):
        raise ValueError(f"amount is not a decimal string: {_short(value)}") from None
    if not cents.is_finite():
        raise ValueError(f"amount is not finite: {_short(value)}")
    # compared before any arithmetic: dividing "1e999999999" would raise decimal.Overflow
    if cents.copy_abs() > MAX_AMOUNT_CENTS:  # copy_abs: exact, where abs() rounds and overflows
        raise _OutOfBounds(f"amount out of bounds (at most {MAX_AMOUNT_CENTS:f} cents a row): {_short(value)}")
    return cents / 100


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds != seconds:  # NaN
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def _api_text(value: Any) -> str:
    """Text the API (or a proxy) wrote, fit for a log line or a terminal: no control characters, cut."""
    text = value if isinstance(value, str) else str(value)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else "?" for ch in text[:MAX_API_TEXT_CHARS + 1])
    return text if len(text) <= MAX_API_TEXT_CHARS else text[:MAX_API_TEXT_CHARS - 3] + "..."


class _Cutoff:
    """The overall deadline of one request: a timer that shuts the request's socket down.

    A read timeout bounds each read only, so a server that trickles its headers or body a byte at
    a time would hold the request for as long as it likes. The socket comes from httpx's ``trace``
    extension as the connection is made (connections are not kept alive, so every request makes
    its own); shutting it down makes the blocked read return at once.
    """

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._done = False
        self.fired = False
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sockets.append(sock)
            late = self.fired
        if late:
            _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)

    def __enter__(self) -> _Cutoff:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    try:
        # the plain socket's shutdown, also for a TLS socket: it only ends the connection
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


# --------------------------------------------------------------------------- client


class AdminApiClient:
    """Synchronous, thread-compatible (one caller at a time) Admin API client.

    ``sleep`` and ``clock`` are injectable so tests can assert waits without spending
    them; ``rng`` drives the backoff jitter. Every HTTP answer (and every transport
    failure, as code ``"error"``) is counted in :meth:`request_counts`, every refused
    answer in :meth:`refusal_counts`. ``timeout`` bounds each read, ``request_deadline``
    a whole request; the ``max_*`` caps default to the module's bounds.
    """

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        max_retry_after: float = 300.0,
        rng: random.Random | None = None,
        retry_for: float | None = None,
        request_deadline: float = REQUEST_DEADLINE,
        max_pages: int = MAX_PAGES_PER_QUERY,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_rows_per_response: int = MAX_ROWS_PER_RESPONSE,
        max_rows_per_query: int = MAX_ROWS_PER_QUERY,
    ) -> None:
        if not key:
            raise ValueError("an admin key is required")
        self.base_url = base_url.rstrip("/")
        self._secret = _Secret(key)
        self._sleep = sleep
        self._clock = clock
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retry_after = max_retry_after
        # a one-shot command's patience: retry for this long from the first failure, however many
        # attempts that takes, instead of max_retries (see _may_retry)
        self.retry_for = retry_for
        self._retry_deadline: float | None = None
        self.request_deadline = request_deadline
        self.max_pages = max_pages
        self.max_response_bytes = max_response_bytes
        self.max_rows_per_response = max_rows_per_response
        self.max_rows_per_query = max_rows_per_query
        self._rng = rng or random.Random()
        self._not_before = 0.0  # monotonic time before which nothing may be sent (429)
        self._counts: Counter[tuple[str, str]] = Counter()
        self._refusals: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._http = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            timeout=httpx.Timeout(min(timeout, request_deadline)),
            headers={"anthropic-version": API_VERSION, "user-agent": USER_AGENT, "accept": "application/json"},
            auth=_KeyAuth(self._secret),
            follow_redirects=False,
            trust_env=False,
            # a connection per request: the deadline cuts the socket that request opened, and a poll
            # makes a few requests a minute at most
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def __repr__(self) -> str:
        return f"AdminApiClient(base_url={self.base_url!r}, key=<redacted>)"

    def __enter__(self) -> AdminApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request_counts(self) -> dict[tuple[str, str], int]:
        """``{(endpoint, code): count}`` of every answer so far; code is the status or "error"."""
        with self._lock:
            return dict(self._counts)

    def refusal_counts(self) -> dict[tuple[str, str], int]:
        """``{(endpoint, reason): count}`` of every answer refused so far (see :data:`REFUSAL_REASONS`)."""
        with self._lock:
            return dict(self._refusals)

    # ------------------------------------------------------------------ reports

    def cost_report(self, starting_at: datetime | date, ending_at: datetime | date, *,
                    limit: int = BUCKET_LIMITS["1d"]) -> list[CostRow]:
        """Daily billed cost grouped by workspace and description, every page."""
        params = [("starting_at", _rfc3339(starting_at)), ("ending_at", _rfc3339(ending_at)),
                  ("bucket_width", "1d"), ("limit", str(limit))]
        params += [("group_by[]", g) for g in COST_GROUP_BY]
        return self._pages("cost_report", params, _parse_cost_page, max_items=limit)

    def usage_report(self, starting_at: datetime | date, ending_at: datetime | date,
                     bucket_width: str = "1h", *, group_by: tuple[str, ...] = USAGE_GROUP_BY,
                     limit: int | None = None) -> list[UsageRow]:
        """Billed tokens per bucket and group, every page."""
        if bucket_width not in BUCKET_LIMITS:
            raise ValueError(f"bucket_width must be one of {', '.join(BUCKET_LIMITS)}")
        if len(group_by) > 5:
            raise ValueError("the usage report takes at most 5 group_by dimensions")
        limit = limit or BUCKET_LIMITS[bucket_width]
        params = [("starting_at", _rfc3339(starting_at)), ("ending_at", _rfc3339(ending_at)),
                  ("bucket_width", bucket_width), ("limit", str(limit))]
        params += [("group_by[]", g) for g in group_by]
        return self._pages("usage_report", params, _parse_usage_page, max_items=limit)

    def claude_code_report(self, day: date) -> list[ClaudeCodeRow]:
        """Claude Code usage of one UTC day, per actor and model, estimated cost in USD."""
        params = [("starting_at", day.isoformat()), ("limit", str(CLAUDE_CODE_LIMIT))]
        return self._pages("claude_code_report", params, lambda body: _parse_claude_code_page(body, day),
                           max_items=CLAUDE_CODE_LIMIT)

    def analytics_cost(self, starting_at: datetime, ending_at: datetime, width: str | None, *,
                       group_by: tuple[str, ...], fanout: tuple[str, ...] = ANALYTICS_FANOUT,
                       limit: int = ANALYTICS_MAX_LIMIT) -> AnalyticsReport:
        """Billed cost per ``width`` bucket (None: one row for the range) and group, every page."""
        params = self._analytics_params(starting_at, ending_at, width, group_by + fanout, limit, len(group_by))
        refreshed: list[datetime] = []
        rows = self._pages("analytics_cost", params, lambda body: _parse_analytics_cost(body, refreshed),
                           max_items=limit * (ANALYTICS_FANOUT_ROWS if fanout else 1))
        return AnalyticsReport(tuple(rows), min(refreshed) if refreshed else None)

    def analytics_usage(self, starting_at: datetime, ending_at: datetime, width: str | None, *,
                        group_by: tuple[str, ...], limit: int = ANALYTICS_MAX_LIMIT) -> AnalyticsReport:
        """Billed tokens per ``width`` bucket and group, every page."""
        params = self._analytics_params(starting_at, ending_at, width, group_by, limit, len(group_by))
        refreshed: list[datetime] = []
        rows = self._pages("analytics_usage", params, lambda body: _parse_analytics_usage(body, refreshed),
                           max_items=limit)
        return AnalyticsReport(tuple(rows), min(refreshed) if refreshed else None)

    def spend_limits(self) -> list[SpendLimit]:
        """Every spend limit of the organisation (the API's default page size: it documents no maximum)."""
        return self._pages("spend_limits", [], _parse_spend_limits, max_items=self.max_rows_per_response)

    def member_spend(self) -> list[MemberSpend]:
        """Each member's effective limits and period-to-date spend; a 400 for a Console organisation."""
        return self._pages("spend_limits_effective", [], _parse_member_spend, max_items=self.max_rows_per_response)

    @staticmethod
    def _analytics_params(starting_at: datetime, ending_at: datetime, width: str | None, groups: tuple[str, ...],
                          limit: int, dims: int) -> list[tuple[str, str]]:
        if dims > ANALYTICS_MAX_GROUPS:
            raise ValueError(f"the analytics API takes at most {ANALYTICS_MAX_GROUPS} group_by dimensions")
        if not 1 <= limit <= ANALYTICS_MAX_LIMIT:
            raise ValueError(f"limit must be 1..{ANALYTICS_MAX_LIMIT}")
        params = [("starting_at", _rfc3339(starting_at)), ("ending_at", _rfc3339(ending_at))]
        if width is not None:
            params.append(("time_bucket_width", width))
        params += [("group_by[]", g) for g in groups]
        params += [("limit", str(limit)), ("order_by", "time"), ("order", "asc")]
        return params

    # ------------------------------------------------------------------ paging

    def _pages(self, endpoint: str, params: list[tuple[str, str]],
               parse: Callable[[Any], list[_Row]], *, max_items: int) -> list[_Row]:
        """Repeat the same query with ``page=<next_page>`` while ``has_more``, within the caps."""
        rows: list[_Row] = []
        page: str | None = None
        seen: set[str] = set()
        for _ in range(self.max_pages):
            query = params + ([("page", page)] if page is not None else [])
            body, page_rows = self._get(endpoint, query, parse, max_items)
            rows.extend(page_rows)
            if len(rows) > self.max_rows_per_query:
                raise self._refuse(endpoint, "too_many_rows",
                                   f"more than {self.max_rows_per_query} rows in one query")
            if not body["has_more"]:
                return rows
            page = body["next_page"]
            if not isinstance(page, str) or not page or page in seen:
                # a server that hands back a page it already gave would be polled without end
                raise AdminApiBadResponse(endpoint, "has_more without a new next_page")
            seen.add(page)
        raise self._refuse(endpoint, "too_many_pages", f"more than {self.max_pages} pages in one query")

    # ------------------------------------------------------------------ one GET, with retries

    def _get(self, endpoint: str, query: list[tuple[str, str]],
             parse: Callable[[Any], list[_Row]], max_items: int) -> tuple[dict[str, Any], list[_Row]]:
        """One page: retried on 429 (after retry-after), 5xx/529, transport errors and malformed bodies.

        Not retried: an answer past a size cap or the deadline (the same query would get it again,
        and retries would multiply the time a poll is held), and 4xx errors.
        """
        url = f"{ENDPOINTS[endpoint]}?{build_query(query)}"
        page = "next" if any(k == "page" for k, _ in query) else "first"
        attempt = 0
        while True:
            self._wait_rate_limit(endpoint)
            started = self._clock()
            event: str
            fields: dict[str, Any] = {}
            try:
                status, headers, raw = self._send(endpoint, url)
            except httpx.HTTPError as exc:
                self._count(endpoint, "error")
                detail = self._scrub(str(exc)) or "no detail"
                failure: AdminApiError = AdminApiTransportError(endpoint, f"{type(exc).__name__}: {detail}")
                event, fields = "admin_api.transport_error", {"error": str(failure)}
            else:
                self._count(endpoint, str(status))
                elapsed_ms = round((self._clock() - started) * 1000)
                if 200 <= status < 300:
                    problem, reason, body, rows = self._decode(endpoint, raw, parse, max_items)
                    if problem is None:
                        log.debug("admin_api.response", endpoint=endpoint, page=page, code=status,
                                  rows=len(rows), elapsed_ms=elapsed_ms)
                        return body, rows
                    self._count_refusal(endpoint, reason)
                    failure = AdminApiBadResponse(endpoint, f"HTTP {status} but not a report: {problem}", reason)
                    event, fields = "admin_api.bad_response", {"code": status, "reason": reason,
                                                               "error": str(failure)}
                else:
                    error_type, message, request_id = self._error_fields(raw)
                    if status == 429:
                        wait = _retry_after(headers.get("retry-after"))
                        wait = self._backoff(attempt) if wait is None else wait
                        if self.retry_for is not None:  # a budget is not spent on retry-after: 0 in a loop
                            wait = max(wait, self._backoff(attempt))
                        self._not_before = max(self._not_before, self._clock() + wait)
                        give_up = self._retry_wait(attempt, wait) is None
                        log.warning("admin_api.rate_limited", endpoint=endpoint, attempt=attempt + 1,
                                    retry_after_s=wait, will_retry=not give_up, request_id=request_id)
                        if give_up:
                            raise AdminApiRateLimited(endpoint, wait, message, request_id)
                        attempt += 1
                        continue  # _wait_rate_limit sleeps until retry-after has passed
                    failure = AdminApiHTTPError(endpoint, status, error_type, message, request_id)
                    if status not in RETRY_STATUSES:
                        log.error("admin_api.request_failed", endpoint=endpoint, code=status,
                                  error_type=error_type, error=message, request_id=request_id)
                        raise failure
                    event, fields = "admin_api.server_error", {"code": status, "error_type": error_type,
                                                               "request_id": request_id}
            delay = self._retry_wait(attempt, self._backoff(attempt), cut=True)
            if delay is None:
                log.error(event, endpoint=endpoint, attempt=attempt + 1, will_retry=False, **fields)
                raise failure
            log.warning(event, endpoint=endpoint, attempt=attempt + 1, will_retry=True,
                        retry_in_s=round(delay, 3), **fields)
            self._sleep(delay)
            attempt += 1

    def _send(self, endpoint: str, url: str) -> tuple[int, httpx.Headers, bytes]:
        """One request within its deadline; the body streamed and refused past the byte cap.

        Raises httpx.HTTPError for a transport failure, AdminApiDeadlineExceeded past the deadline
        and AdminApiRefused for a body past the cap (both counted here).
        """
        deadline = self._clock() + self.request_deadline
        cutoff = _Cutoff(self.request_deadline)
        try:
            with cutoff, self._http.stream("GET", url, headers=ENDPOINT_HEADERS.get(endpoint),
                                           extensions={"trace": cutoff.trace}) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_response_bytes:
                    self._count(endpoint, str(response.status_code))
                    raise self._refuse(endpoint, "body_too_large",
                                       f"a {declared}-byte body is over the cap of {self.max_response_bytes}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self.max_response_bytes:
                        self._count(endpoint, str(response.status_code))
                        raise self._refuse(endpoint, "body_too_large",
                                           f"body over the cap of {self.max_response_bytes} bytes")
                    if self._clock() > deadline:
                        break
                if self._clock() > deadline or cutoff.fired:
                    raise self._deadline(endpoint)
                return response.status_code, response.headers, bytes(body)
        except httpx.HTTPError:
            if cutoff.fired:
                raise self._deadline(endpoint) from None
            raise

    def _deadline(self, endpoint: str) -> AdminApiDeadlineExceeded:
        self._count(endpoint, "error")
        self._count_refusal(endpoint, "deadline")
        return AdminApiDeadlineExceeded(endpoint, f"no whole answer within the {self.request_deadline:g}s deadline")

    def _refuse(self, endpoint: str, reason: str, message: str) -> AdminApiRefused:
        self._count_refusal(endpoint, reason)
        return AdminApiRefused(endpoint, message, reason)

    def _retry_wait(self, attempt: int, wait: float, *, cut: bool = False) -> float | None:
        """How long to wait before trying a failed request again; None: give up.

        At most ``max_retries`` times, never after a retry-after past ``max_retry_after``. With
        ``retry_for``: as often as it takes while the wait ends within that many seconds of the
        client's first failure; ``cut`` (a backoff, not a retry-after) shortens the last wait to
        what is left of them.
        """
        if self.retry_for is None:
            return wait if attempt < self.max_retries and wait <= self.max_retry_after else None
        now = self._clock()
        if self._retry_deadline is None:
            self._retry_deadline = now + self.retry_for
        left = self._retry_deadline - now
        if wait <= left:
            return wait
        return left if cut and left >= MIN_LAST_RETRY else None

    def _wait_rate_limit(self, endpoint: str) -> None:
        """Block until a 429's retry-after has passed; never send before it."""
        while (remaining := self._not_before - self._clock()) > 0:
            limit = self.max_retry_after if self.retry_for is None else self.retry_for
            if remaining > limit:
                raise AdminApiRateLimited(endpoint, remaining)
            self._sleep(remaining)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: between half and all of base * 2**attempt, capped."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** attempt))
        return float(ceiling * (0.5 + 0.5 * self._rng.random()))

    def _count(self, endpoint: str, code: str) -> None:
        with self._lock:
            self._counts[(endpoint, code)] += 1

    def _count_refusal(self, endpoint: str, reason: str) -> None:
        with self._lock:
            self._refusals[(endpoint, reason)] += 1

    def _scrub(self, text: str) -> str:
        key = self._secret.reveal()
        return text.replace(key, "<redacted>") if key else text

    def _decode(self, endpoint: str, raw: bytes, parse: Callable[[Any], list[_Row]],
                max_items: int) -> tuple[str | None, str, Any, list[_Row]]:
        """(problem, reason, body, rows): a body that is not a whole report is a problem, never zero spend.

        A body past the row caps raises AdminApiRefused instead (retrying would get it again).
        """
        # counted before parsing: a small body of empty objects or floats would parse into far more memory
        if raw.count(b"{") > MAX_OBJECTS_PER_RESPONSE:
            raise self._refuse(endpoint, "too_many_rows", f"more than {MAX_OBJECTS_PER_RESPONSE} objects in one page")
        floats = 0

        def exact(text: str) -> Decimal:
            nonlocal floats
            floats += 1
            if floats > self.max_rows_per_response:
                raise _TooManyFloats
            return Decimal(text)  # exact, should a number ever come as a float

        try:
            body = json.loads(raw, parse_float=exact)
        except _TooManyFloats:
            raise self._refuse(endpoint, "too_many_rows",
                               f"more than {self.max_rows_per_response} numbers in one page") from None
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[... nested too deep
            return f"body is not JSON ({len(raw)} bytes)", "malformed", None, []
        problem = _check_page_envelope(body)
        if problem:
            return problem, "malformed", body, []
        if len(body["data"]) > max_items:
            raise self._refuse(endpoint, "too_many_rows",
                               f"{len(body['data'])} buckets in a page asked for at most {max_items}")
        try:
            rows = parse(body)
        except _OutOfBounds as exc:
            return self._scrub(f"value out of bounds: {exc}"), "out_of_bounds", body, []
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError, RecursionError) as exc:
            # ArithmeticError: decimal.Overflow, InvalidOperation, and OverflowError from a date
            return self._scrub(f"malformed report: {type(exc).__name__}: {_short(str(exc))}"), "malformed", body, []
        if len(rows) > self.max_rows_per_response:
            raise self._refuse(endpoint, "too_many_rows", f"more than {self.max_rows_per_response} rows in one page")
        return None, "", body, rows

    def _error_fields(self, raw: bytes) -> tuple[str, str, str | None]:
        """(type, message, request_id) of an error body, scrubbed of the key and of control characters."""
        if len(raw) > MAX_ERROR_BODY_BYTES:
            return "error", f"unexpected error body ({len(raw)} bytes)", None
        try:
            body = json.loads(raw)
            err = body["error"]
            rid = body.get("request_id")
            return (self._clean(err.get("type") or "error"), self._clean(err.get("message") or ""),
                    self._clean(rid) if isinstance(rid, str) and rid else None)
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError):
            return "error", f"unexpected error body ({len(raw)} bytes)", None

    def _clean(self, value: Any) -> str:
        # scrubbed before and after the cut, so that no part of the key is left at the edge
        return self._scrub(_api_text(self._scrub(value if isinstance(value, str) else str(value))))


def _check_page_envelope(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "top level is not an object"
    if not isinstance(body.get("data"), list):
        return "no data list"
    if CURSOR_ONLY in body:
        return "a reserved key in the body"
    if "has_more" not in body and (body.get("next_page") is None or isinstance(body.get("next_page"), str)):
        # the spend-limit endpoints page by the cursor alone: more while next_page is set
        body[CURSOR_ONLY] = True
        body["has_more"] = bool(body.get("next_page"))
    if not isinstance(body.get("has_more"), bool):
        return "no has_more flag"
    if body["has_more"] and not isinstance(body.get("next_page"), str):
        return "has_more without next_page"
    if body["has_more"] and len(body["next_page"]) > MAX_PAGE_TOKEN_CHARS:
        return "next_page token too long"
    return None


def _buckets(body: dict[str, Any]) -> Iterator[tuple[datetime, datetime, list[dict[str, Any]]]]:
    for bucket in body["data"]:
        results = bucket["results"]
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            raise ValueError("a bucket's results is not a list of objects")
        yield _parse_time(bucket["starting_at"]), _parse_time(bucket["ending_at"]), results


def _parse_cost_page(body: dict[str, Any]) -> list[CostRow]:
    rows = []
    for start, _end, results in _buckets(body):
        for r in results:
            rows.append(CostRow(
                day=start.date(),
                workspace_id=_opt_str(r.get("workspace_id")),
                description=_opt_str(r.get("description")),
                model=_opt_str(r.get("model")),
                cost_type=_opt_str(r.get("cost_type")),
                token_type=_opt_str(r.get("token_type")),
                service_tier=_opt_str(r.get("service_tier")),
                context_window=_opt_str(r.get("context_window")),
                amount_usd=_cents_to_usd(r["amount"]),
            ))
    return rows


def _usage_tokens(u: dict[str, Any]) -> Tokens:
    """The token counts of a usage row, legacy report or analytics API alike (the same field names)."""
    cache = u.get("cache_creation") or {}
    tools = u.get("server_tool_use") or {}
    return Tokens(
        input=_int(u.get("uncached_input_tokens")), output=_int(u.get("output_tokens")),
        cache_read=_int(u.get("cache_read_input_tokens")),
        cache_write_5m=_int(cache.get("ephemeral_5m_input_tokens")),
        cache_write_1h=_int(cache.get("ephemeral_1h_input_tokens")),
        web_search_requests=_int(tools.get("web_search_requests")),
    )


def _parse_usage_page(body: dict[str, Any]) -> list[UsageRow]:
    rows = []
    for start, end, results in _buckets(body):
        for r in results:
            rows.append(UsageRow(
                start=start, end=end,
                workspace_id=_opt_str(r.get("workspace_id")),
                api_key_id=_opt_str(r.get("api_key_id")),
                model=_opt_str(r.get("model")),
                service_tier=_opt_str(r.get("service_tier")),
                context_window=_opt_str(r.get("context_window")),
                inference_geo=_opt_str(r.get("inference_geo")),
                tokens=_usage_tokens(r),
            ))
    return rows


def _parse_claude_code_page(body: dict[str, Any], day: date) -> list[ClaudeCodeRow]:
    rows = []
    for item in body["data"]:
        actor = item.get("actor") or {}
        who = actor.get("email_address") or actor.get("api_key_name") or ""
        item_day = _parse_time(item["date"]).date() if item.get("date") else day
        for m in item.get("model_breakdown") or []:
            tokens = m.get("tokens") or {}
            cost = m.get("estimated_cost") or {}
            rows.append(ClaudeCodeRow(
                day=item_day,
                actor_type=str(actor.get("type") or ""),
                actor=str(who),
                model=str(m.get("model") or ""),
                estimated_cost_usd=_cents_to_usd(cost.get("amount", 0)),
                tokens=Tokens(
                    input=_int(tokens.get("input")),
                    output=_int(tokens.get("output")),
                    cache_read=_int(tokens.get("cache_read")),
                    cache_write_5m=_int(tokens.get("cache_creation")),
                ),
            ))
    return rows


def _actor(value: Any) -> Actor | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"actor is not an object: {_short(value)}")
    kind = value["type"]
    if kind == "user_actor":
        return Actor(kind, _opt_str(value["user_id"]), _opt_str(value.get("email_address")))
    if kind == "service_account_actor":
        return Actor(kind, _opt_str(value["service_account_id"]))
    if kind == "api_actor":
        return Actor(kind, _opt_str(value["api_key_id"]))
    if kind == "federated_actor":
        return Actor(kind, _opt_str(value.get("subject")))
    raise ValueError(f"unknown actor type: {_short(kind)}")


def _analytics_rows(body: dict[str, Any], refreshed: list[datetime]
                    ) -> Iterator[tuple[datetime, datetime, dict[str, Any], dict[str, Any]]]:
    """(start, end, group, item) of each row; notes the page's ``data_refreshed_at``."""
    if body.get("data_refreshed_at") is not None:
        refreshed.append(_parse_time(body["data_refreshed_at"]))
    for item in body["data"]:
        if not isinstance(item, dict):
            raise ValueError("a row is not an object")
        group = item.get("group") or {}
        if not isinstance(group, dict):
            raise ValueError("a row's group is not an object")
        yield _parse_time(item["starting_at"]), _parse_time(item["ending_at"]), group, item


def _opt_count(value: Any) -> int | None:
    return None if value is None else _int(value)


def _parse_analytics_cost(body: dict[str, Any], refreshed: list[datetime]) -> list[AnalyticsCostRow]:
    rows = []
    for start, end, g, item in _analytics_rows(body, refreshed):
        cost = item["cost"]
        currency = cost["currency"]
        if not isinstance(currency, str) or not (currency.isascii() and currency.isalpha() and len(currency) == 3):
            raise ValueError(f"not a currency code: {_short(currency)}")
        rows.append(AnalyticsCostRow(
            start=start, end=end,
            workspace_id=_opt_str(g.get("workspace_id")), api_key_id=_opt_str(g.get("api_key_id")),
            model=_opt_str(g.get("model")), product=_opt_str(g.get("product")), actor=_actor(g.get("actor")),
            cost_type=_opt_str(g.get("cost_type")), token_type=_opt_str(g.get("token_type")),
            amount_usd=_cents_to_usd(cost["amount"]), list_usd=_cents_to_usd(cost["list_amount"]),
            currency=currency.upper(), requests=_opt_count(cost.get("requests")),
        ))
    return rows


def _parse_analytics_usage(body: dict[str, Any], refreshed: list[datetime]) -> list[AnalyticsUsageRow]:
    rows = []
    for start, end, g, item in _analytics_rows(body, refreshed):
        u = item["usage"]
        rows.append(AnalyticsUsageRow(
            start=start, end=end,
            workspace_id=_opt_str(g.get("workspace_id")), api_key_id=_opt_str(g.get("api_key_id")),
            model=_opt_str(g.get("model")), product=_opt_str(g.get("product")),
            service_tier=_opt_str(g.get("service_tier")), context_window=_opt_str(g.get("context_window")),
            inference_geo=_opt_str(g.get("inference_geo")),
            tokens=_usage_tokens(u),
            requests=_opt_count(u.get("requests")),
        ))
    return rows


def _currency(value: Any) -> str:
    if not isinstance(value, str) or not (value.isascii() and value.isalpha() and len(value) == 3):
        raise ValueError(f"not a currency code: {_short(value)}")
    return value.upper()


def _minor(value: Any, *, whole: bool = False) -> Decimal:
    """A decimal string in minor units (cents) -> major units, exact and bounded; ``whole`` wants an integer."""
    if not isinstance(value, str):
        raise ValueError(f"amount is not a decimal string: {_short(value)}")
    amount = _cents_to_usd(value)
    if amount < 0 or (whole and amount * 100 != (amount * 100).to_integral_value()):
        raise ValueError(f"not a non-negative {'integer ' if whole else ''}amount: {_short(value)}")
    return amount


def _scope(value: Any) -> tuple[str, str | None]:
    if not isinstance(value, dict) or value.get("type") not in SPEND_LIMIT_SCOPES:
        raise ValueError(f"unknown scope: {_short(value)}")
    kind = value["type"]
    return kind, _opt_str(value[SPEND_LIMIT_SCOPE_IDS[kind]]) if kind in SPEND_LIMIT_SCOPE_IDS else None


def _period(value: Any) -> str:
    if value not in SPEND_LIMIT_PERIODS:
        raise ValueError(f"unknown period: {_short(value)}")
    return str(value)


def _parse_spend_limits(body: dict[str, Any]) -> list[SpendLimit]:
    rows = []
    for item in body["data"]:
        kind, scope_id = _scope(item["scope"])
        amount = item.get("amount")
        rows.append(SpendLimit(
            id=str(_opt_str(item["id"])), scope_type=kind, scope_id=scope_id, period=_period(item["period"]),
            amount=None if amount is None else _minor(amount, whole=True), currency=_currency(item["currency"]),
            enabled=item["is_enabled"] is True))
    return rows


def _parse_member_spend(body: dict[str, Any]) -> list[MemberSpend]:
    rows = []
    for item in body["data"]:
        actor = item["actor"]
        if not isinstance(actor, dict) or actor.get("type") != "user_actor":
            continue  # a scoped API key acting for the organisation: not a member
        amount = item.get("amount")
        rows.append(MemberSpend(
            user_id=str(_opt_str(actor["user_id"])), email=_opt_str(actor.get("email_address")),
            period=_period(item["period"]), amount=None if amount is None else _minor(amount, whole=True),
            spent=_minor(item["period_to_date_spend"]), currency=_currency(item["currency"]),
            spend_limit_id=str(_opt_str(item["spend_limit_id"])), source_type=_scope(item["source"])[0]))
    return rows


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def days_between(start: date, end: date) -> Iterator[date]:
    """Each day in ``[start, end)``."""
    d = start
    while d < end:
        yield d
        d += timedelta(days=1)


__all__ = [
    "MemberSpend", "SpendLimit", "Actor", "AnalyticsCostRow", "AnalyticsReport", "AnalyticsUsageRow", "AdminApiBadResponse", "AdminApiClient", "AdminApiDeadlineExceeded", "AdminApiError", "AdminApiHTTPError",
    "AdminApiRateLimited", "AdminApiRefused", "AdminApiTransportError", "ClaudeCodeRow", "CostRow", "UsageRow",
    "build_query", "day_start", "days_between", "BUCKET_LIMITS", "COST_GROUP_BY", "USAGE_GROUP_BY",
    "MAX_AMOUNT_CENTS", "MAX_AMOUNT_USD", "MAX_PAGES_PER_QUERY", "MAX_RESPONSE_BYTES", "MAX_ROWS_PER_QUERY",
    "MAX_ROWS_PER_RESPONSE", "MAX_TOKENS_PER_ROW", "REFUSAL_REASONS", "REQUEST_DEADLINE",
]


