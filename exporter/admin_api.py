"""Client for Anthropic's Admin API usage and cost reports.

Only what the exporter needs: the daily cost report, the messages usage report and,
optionally, the Claude Code usage report, each paged to the end and parsed into typed,
exact rows (``Decimal`` dollars, never float).

The admin key is sensitive: it is held in an object whose repr hides it, sent by an
httpx auth hook, and scrubbed from every exception message, so that neither a log
line, an error nor a traceback's locals can show it.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import structlog

from exporter import __version__
from exporter.usage import Tokens

API_VERSION = "2023-06-01"
USER_AGENT = f"claude-budget-exporter/{__version__}"

COST_PATH = "/v1/organizations/cost_report"
USAGE_PATH = "/v1/organizations/usage_report/messages"
CLAUDE_CODE_PATH = "/v1/organizations/usage_report/claude_code"
ENDPOINTS = {"cost_report": COST_PATH, "usage_report": USAGE_PATH, "claude_code_report": CLAUDE_CODE_PATH}

#: largest ``limit`` (buckets per page) the API accepts per bucket width
BUCKET_LIMITS = {"1m": 1440, "1h": 168, "1d": 31}
COST_GROUP_BY = ("workspace_id", "description")
USAGE_GROUP_BY = ("model", "workspace_id", "api_key_id", "service_tier", "context_window")
CLAUDE_CODE_LIMIT = 1000

RETRY_STATUSES = frozenset({408, 500, 502, 503, 504, 529})

_Row = TypeVar("_Row")

log = structlog.get_logger()


# --------------------------------------------------------------------------- errors


class AdminApiError(Exception):
    """Any failure to get a report; its text never contains the admin key."""

    def __init__(self, endpoint: str, message: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"{endpoint}: {message}")


class AdminApiHTTPError(AdminApiError):
    """The API answered with an error status (after retries, for retryable ones)."""

    def __init__(self, endpoint: str, status: int, error_type: str, message: str, request_id: str | None) -> None:
        self.status = status
        self.error_type = error_type
        self.api_message = message
        self.request_id = request_id
        rid = f" (request_id {request_id})" if request_id else ""
        super().__init__(endpoint, f"HTTP {status} {error_type}: {message}{rid}")


class AdminApiRateLimited(AdminApiHTTPError):
    """429, and the wait the API asked for is longer than this client will block."""

    def __init__(self, endpoint: str, retry_after: float, message: str = "rate limited",
                 request_id: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(endpoint, 429, "rate_limit_error", f"{message}; retry after {retry_after:g}s", request_id)


class AdminApiTransportError(AdminApiError):
    """Timeout, refused or reset connection: no usable HTTP answer."""


class AdminApiBadResponse(AdminApiError):
    """A 2xx answer whose body is not a report (truncated, not JSON, wrong shape)."""


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

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
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


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r}")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


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
        raise ValueError(f"not a token count: {value!r}")
    return value


def _cents_to_usd(value: Any) -> Decimal:
    """``"123.45"`` cents -> ``Decimal("1.2345")`` dollars, exactly."""
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise ValueError(f"amount is not a decimal string: {value!r}")
    try:
        cents = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"amount is not a decimal string: {value!r}") from None
    if not cents.is_finite():
        raise ValueError(f"amount is not finite: {value!r}")
    return cents / 100


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(0.0, seconds) if seconds == seconds else None  # NaN guard


# --------------------------------------------------------------------------- client


class AdminApiClient:
    """Synchronous, thread-compatible (one caller at a time) Admin API client.

    ``sleep`` and ``clock`` are injectable so tests can assert waits without spending
    them; ``rng`` drives the backoff jitter. Every HTTP answer (and every transport
    failure, as code ``"error"``) is counted in :meth:`request_counts`.
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
    ) -> None:
        if not key:
            raise ValueError("an admin key is required")
        self.base_url = base_url.rstrip("/")
        self._secret = _Secret(key)
        self._sleep = sleep
        self._clock = clock
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retry_after = max_retry_after
        self._rng = rng or random.Random()
        self._not_before = 0.0  # monotonic time before which nothing may be sent (429)
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._http = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            timeout=httpx.Timeout(timeout),
            headers={"anthropic-version": API_VERSION, "user-agent": USER_AGENT, "accept": "application/json"},
            auth=_KeyAuth(self._secret),
            follow_redirects=False,
            trust_env=False,
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

    # ------------------------------------------------------------------ reports

    def cost_report(self, starting_at: datetime | date, ending_at: datetime | date, *,
                    limit: int = BUCKET_LIMITS["1d"]) -> list[CostRow]:
        """Daily billed cost grouped by workspace and description, every page."""
        params = [("starting_at", _rfc3339(starting_at)), ("ending_at", _rfc3339(ending_at)),
                  ("bucket_width", "1d"), ("limit", str(limit))]
        params += [("group_by[]", g) for g in COST_GROUP_BY]
        return self._pages("cost_report", params, _parse_cost_page)

    def usage_report(self, starting_at: datetime | date, ending_at: datetime | date,
                     bucket_width: str = "1h", *, group_by: tuple[str, ...] = USAGE_GROUP_BY,
                     limit: int | None = None) -> list[UsageRow]:
        """Billed tokens per bucket and group, every page."""
        if bucket_width not in BUCKET_LIMITS:
            raise ValueError(f"bucket_width must be one of {', '.join(BUCKET_LIMITS)}")
        if len(group_by) > 5:
            raise ValueError("the usage report takes at most 5 group_by dimensions")
        params = [("starting_at", _rfc3339(starting_at)), ("ending_at", _rfc3339(ending_at)),
                  ("bucket_width", bucket_width), ("limit", str(limit or BUCKET_LIMITS[bucket_width]))]
        params += [("group_by[]", g) for g in group_by]
        return self._pages("usage_report", params, _parse_usage_page)

    def claude_code_report(self, day: date) -> list[ClaudeCodeRow]:
        """Claude Code usage of one UTC day, per actor and model, estimated cost in USD."""
        params = [("starting_at", day.isoformat()), ("limit", str(CLAUDE_CODE_LIMIT))]
        return self._pages("claude_code_report", params, lambda body: _parse_claude_code_page(body, day))

    # ------------------------------------------------------------------ paging

    def _pages(self, endpoint: str, params: list[tuple[str, str]],
               parse: Callable[[Any], list[_Row]]) -> list[_Row]:
        """Repeat the same query with ``page=<next_page>`` while ``has_more``."""
        rows: list[_Row] = []
        page: str | None = None
        seen: set[str] = set()
        for _ in range(10_000):
            query = params + ([("page", page)] if page is not None else [])
            body, page_rows = self._get(endpoint, query, parse)
            rows.extend(page_rows)
            if not body["has_more"]:
                return rows
            page = body["next_page"]
            if not isinstance(page, str) or not page or page in seen:
                # a server that hands back a page it already gave would be polled without end
                raise AdminApiBadResponse(endpoint, "has_more without a new next_page")
            seen.add(page)
        raise AdminApiBadResponse(endpoint, "pagination does not end")

    # ------------------------------------------------------------------ one GET, with retries

    def _get(self, endpoint: str, query: list[tuple[str, str]],
             parse: Callable[[Any], list[_Row]]) -> tuple[dict[str, Any], list[_Row]]:
        """One page: retried on 429 (after retry-after), 5xx/529, transport errors and non-report bodies."""
        url = f"{ENDPOINTS[endpoint]}?{build_query(query)}"
        page = "next" if any(k == "page" for k, _ in query) else "first"
        attempt = 0
        while True:
            self._wait_rate_limit(endpoint)
            started = self._clock()
            event: str
            fields: dict[str, Any] = {}
            try:
                response = self._http.get(url)
            except httpx.HTTPError as exc:
                self._count(endpoint, "error")
                detail = self._scrub(str(exc)) or "no detail"
                failure: AdminApiError = AdminApiTransportError(endpoint, f"{type(exc).__name__}: {detail}")
                event, fields = "admin_api.transport_error", {"error": str(failure)}
            else:
                status = response.status_code
                self._count(endpoint, str(status))
                elapsed_ms = round((self._clock() - started) * 1000)
                if 200 <= status < 300:
                    problem, body, rows = self._decode(response.content, parse)
                    if problem is None:
                        log.debug("admin_api.response", endpoint=endpoint, page=page, code=status,
                                  rows=len(rows), elapsed_ms=elapsed_ms)
                        return body, rows
                    failure = AdminApiBadResponse(endpoint, f"HTTP {status} but not a report: {problem}")
                    event, fields = "admin_api.bad_response", {"code": status, "error": str(failure)}
                else:
                    error_type, message, request_id = self._error_fields(response.content)
                    if status == 429:
                        wait = _retry_after(response.headers.get("retry-after"))
                        wait = self._backoff(attempt) if wait is None else wait
                        self._not_before = max(self._not_before, self._clock() + wait)
                        give_up = wait > self.max_retry_after or attempt >= self.max_retries
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
            if attempt >= self.max_retries:
                log.error(event, endpoint=endpoint, attempt=attempt + 1, will_retry=False, **fields)
                raise failure
            delay = self._backoff(attempt)
            log.warning(event, endpoint=endpoint, attempt=attempt + 1, will_retry=True,
                        retry_in_s=round(delay, 3), **fields)
            self._sleep(delay)
            attempt += 1

    def _wait_rate_limit(self, endpoint: str) -> None:
        """Block until a 429's retry-after has passed; never send before it."""
        while (remaining := self._not_before - self._clock()) > 0:
            if remaining > self.max_retry_after:
                raise AdminApiRateLimited(endpoint, remaining)
            self._sleep(remaining)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: between half and all of base * 2**attempt, capped."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** attempt))
        return ceiling * (0.5 + 0.5 * self._rng.random())

    def _count(self, endpoint: str, code: str) -> None:
        with self._lock:
            self._counts[(endpoint, code)] += 1

    def _scrub(self, text: str) -> str:
        key = self._secret.reveal()
        return text.replace(key, "<redacted>") if key else text

    def _decode(self, raw: bytes, parse: Callable[[Any], list[_Row]]) -> tuple[str | None, Any, list[_Row]]:
        """(problem, body, rows): a body that is not a whole report is a problem, never zero spend."""
        try:
            body = json.loads(raw, parse_float=Decimal)  # exact, should a number ever come as a float
        except (ValueError, UnicodeDecodeError):
            return f"body is not JSON ({len(raw)} bytes)", None, []
        problem = _check_page_envelope(body)
        if problem:
            return problem, body, []
        try:
            rows = parse(body)
        except (KeyError, TypeError, ValueError, AttributeError, InvalidOperation) as exc:
            return self._scrub(f"malformed report: {type(exc).__name__}: {exc}"), body, []
        return None, body, rows

    def _error_fields(self, raw: bytes) -> tuple[str, str, str | None]:
        try:
            body = json.loads(raw)
            err = body["error"]
            return (self._scrub(str(err.get("type") or "error")), self._scrub(str(err.get("message") or "")),
                    body.get("request_id") if isinstance(body.get("request_id"), str) else None)
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            return "error", f"unexpected error body ({len(raw)} bytes)", None


def _check_page_envelope(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "top level is not an object"
    if not isinstance(body.get("data"), list):
        return "no data list"
    if not isinstance(body.get("has_more"), bool):
        return "no has_more flag"
    if body["has_more"] and not isinstance(body.get("next_page"), str):
        return "has_more without next_page"
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


def _parse_usage_page(body: dict[str, Any]) -> list[UsageRow]:
    rows = []
    for start, end, results in _buckets(body):
        for r in results:
            cache = r.get("cache_creation") or {}
            tools = r.get("server_tool_use") or {}
            rows.append(UsageRow(
                start=start, end=end,
                workspace_id=_opt_str(r.get("workspace_id")),
                api_key_id=_opt_str(r.get("api_key_id")),
                model=_opt_str(r.get("model")),
                service_tier=_opt_str(r.get("service_tier")),
                context_window=_opt_str(r.get("context_window")),
                inference_geo=_opt_str(r.get("inference_geo")),
                tokens=Tokens(
                    input=_int(r.get("uncached_input_tokens")),
                    output=_int(r.get("output_tokens")),
                    cache_read=_int(r.get("cache_read_input_tokens")),
                    cache_write_5m=_int(cache.get("ephemeral_5m_input_tokens")),
                    cache_write_1h=_int(cache.get("ephemeral_1h_input_tokens")),
                    web_search_requests=_int(tools.get("web_search_requests")),
                ),
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
    "AdminApiBadResponse", "AdminApiClient", "AdminApiError", "AdminApiHTTPError", "AdminApiRateLimited",
    "AdminApiTransportError", "ClaudeCodeRow", "CostRow", "UsageRow", "build_query", "day_start", "days_between",
    "BUCKET_LIMITS", "COST_GROUP_BY", "USAGE_GROUP_BY",
]


