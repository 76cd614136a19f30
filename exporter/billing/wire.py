"""The Admin API report endpoints' wire rules: what the client sends and what a stand-in refuses.

The client and the simulated Admin API (the demo's, which the tests use too) must agree on
the ``anthropic-version`` they speak and the per-width ``limit`` caps, so both import them
from here and nowhere else spells them. The simulated API also refuses here what the real
one refuses (``group_by`` without brackets, unknown groups, a ``limit`` past the bucket
width's cap, bad RFC 3339 bounds, a Claude Code day that is not a date) and pages with
opaque tokens bound to their query.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

__all__ = [
    "ANALYTICS_BETA", "ANALYTICS_COST_GROUPS", "ANALYTICS_FANOUT", "ANALYTICS_MAX_GROUPS", "ANALYTICS_MAX_LIMIT",
    "ANALYTICS_DEFAULT_LIMIT", "ANALYTICS_PRODUCTS", "API_TOKEN_TYPES", "ANALYTICS_MAX_SPAN", "ANALYTICS_EARLIEST", "ANALYTICS_USAGE_GROUPS", "AnalyticsQuery",
    "check_analytics_query", "API_VERSION", "SPEND_LIMITS_BETA", "SPEND_LIMIT_PERIODS", "SPEND_LIMIT_SCOPES",
    "SPEND_LIMIT_SCOPE_IDS", "SPEND_LIMITS_DEFAULT_LIMIT", "spend_limit_period_start", "BUCKET_LIMITS", "CLAUDE_CODE_DEFAULT_LIMIT", "CLAUDE_CODE_MAX_LIMIT", "COST_GROUPS",
    "DEFAULT_LIMIT", "USAGE_GROUPS", "WIDTHS", "PageTokens", "ReportQuery", "WireError", "check_claude_code_query", "check_report_query",
    "error_body", "floor", "iso", "parse_rfc3339",
]

#: the ``anthropic-version`` header every request carries
API_VERSION = "2023-06-01"
WIDTHS = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
#: largest ``limit`` (buckets per page) the API accepts per bucket width
BUCKET_LIMITS = {"1m": 1440, "1h": 168, "1d": 31}
#: buckets per page when the query sends no ``limit``
DEFAULT_LIMIT = {"1m": 60, "1h": 24, "1d": 7}
#: largest ``limit`` (rows per page) of the Claude Code report, and its default
CLAUDE_CODE_MAX_LIMIT = 1000
CLAUDE_CODE_DEFAULT_LIMIT = 20
COST_GROUPS = ("workspace_id", "description")
#: the cost reports' token_type values (legacy and analytics alike), in Tokens order: the exposed
#: token_type label is the word of exporter.core.records.TOKEN_TYPES at the same place, so billed
#: and estimated series share one vocabulary
API_TOKEN_TYPES = ("uncached_input_tokens", "output_tokens", "cache_read_input_tokens",
                   "cache_creation.ephemeral_5m_input_tokens", "cache_creation.ephemeral_1h_input_tokens")
USAGE_GROUPS = ("api_key_id", "workspace_id", "model", "service_tier", "context_window", "inference_geo")


# ---- the Usage and Cost Analytics API (beta since 2026-10-29)
#: the ``anthropic-beta`` value both analytics endpoints require beside ``anthropic-version``
ANALYTICS_BETA = "analytics-usage-cost-2026-08-24"
#: rows per page: 1..1000, 20 when not given; cost's cost_type/token_type fan-out rows do not count
ANALYTICS_MAX_LIMIT = 1000
ANALYTICS_DEFAULT_LIMIT = 20
#: ``group_by[]`` values each endpoint takes (the subset the exporter and its stand-in speak)
ANALYTICS_USAGE_GROUPS = ("actor", "actor_type", "api_key_id", "context_window", "inference_geo", "model",
                          "product", "service_tier", "speed", "workspace_id")
ANALYTICS_FANOUT = ("cost_type", "token_type")
ANALYTICS_COST_GROUPS = ANALYTICS_USAGE_GROUPS + ANALYTICS_FANOUT
#: the product surfaces the API documents; a label takes any other as "other"
ANALYTICS_PRODUCTS = ("cc_security_autopatch", "chat", "chat_cowork_unified", "claude_code", "claude_console",
                      "claude_design", "claude_in_chrome", "claude_tag", "cowork", "managed_agents_api",
                      "message_batches_api", "messages_api", "office_agent", "other")
#: at most this many ``group_by[]`` values, not counting the fan-out
ANALYTICS_MAX_GROUPS = 5
#: longest range: 31 days, 24 hours at the 1m width
ANALYTICS_MAX_SPAN = {"1d": timedelta(days=31), "1h": timedelta(days=31), "1m": timedelta(hours=24)}
#: no ``starting_at`` before this, nor more than 365 days back
ANALYTICS_EARLIEST = datetime(2026, 1, 1, tzinfo=UTC)


# ---- spend limits (beta)
#: the ``anthropic-beta`` value the list of limits requires (the effective report takes none)
SPEND_LIMITS_BETA = "spend-limit-reads-2026-09-26"
SPEND_LIMIT_PERIODS = ("daily", "weekly", "monthly")
SPEND_LIMIT_SCOPES = ("organization", "organization_service", "rbac_group", "seat_tier", "usage_tier", "user",
                      "workspace")
#: the id field each scope type carries (organization and usage_tier carry none)
SPEND_LIMIT_SCOPE_IDS = {"organization_service": "service", "rbac_group": "rbac_group_id", "seat_tier": "seat_tier",
                         "user": "user_id", "workspace": "workspace_id"}
#: limits (or members, on the effective report) per page when the query sends no ``limit``
SPEND_LIMITS_DEFAULT_LIMIT = 20


def spend_limit_period_start(period: str, now: datetime) -> datetime:
    """The start of a spend limit's current period: the UTC day, ISO week (Monday) or calendar month."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


class WireError(Exception):
    """An error the API answers with its error body: ``{"type":"error","error":{type, message}}``."""

    def __init__(self, status: int, error_type: str, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message, self.error_code = status, error_type, message, error_code


def error_body(error_type: str, message: str, error_code: str | None = None) -> bytes:
    """The API's error body, with a fresh ``request_id`` (and ``details.error_code`` when given)."""
    error: dict[str, object] = {"type": error_type, "message": message}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    return json.dumps({"type": "error", "error": error, "request_id": f"req_{secrets.token_hex(12)}"}).encode()


def _bad(message: str) -> WireError:
    return WireError(400, "invalid_request_error", message)


def parse_rfc3339(text: str | None, name: str) -> datetime:
    """``text`` as an aware UTC moment (naive means UTC), or the 400 the API answers for ``name``."""
    if not text:
        raise _bad(f"{name}: field required")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"{name}: invalid datetime format") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def floor(moment: datetime, width: str) -> datetime:
    """The start of the bucket ``moment`` falls in: ``starting_at`` snaps to it."""
    if width == "1d":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if width == "1h":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)


def iso(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, to the second, as the API writes bucket bounds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _groups(query: list[tuple[str, str]], allowed: tuple[str, ...]) -> list[str]:
    """The query's ``group_by[]`` values: each allowed, none twice."""
    groups = [v for k, v in query if k == "group_by[]"]
    for g in groups:
        if g not in allowed:
            raise _bad(f"group_by[]: {g!r} is not one of {', '.join(allowed)}")
    if len(set(groups)) != len(groups):
        raise _bad("group_by[]: values must be unique")
    return groups


@dataclass(frozen=True)
class ReportQuery:
    """A report query the API accepts."""

    start: datetime  # snapped to its bucket
    end: datetime  # exclusive
    width: str
    limit: int
    groups: list[str]


def check_report_query(query: list[tuple[str, str]], allowed_groups: tuple[str, ...], *, widths: tuple[str, ...],
                       max_groups: int, now: datetime) -> ReportQuery:
    """The query's bounds, width, page size and groups, or the WireError the API would answer."""
    if any(k == "group_by" for k, _ in query):
        raise _bad("group_by: Input should be a valid list (send arrays as group_by[]=...)")
    width = next((v for k, v in query if k == "bucket_width"), "1d")
    if width not in widths:
        raise _bad(f"bucket_width: Input should be {' or '.join(repr(w) for w in widths)}")
    limit_text = next((v for k, v in query if k == "limit"), None)
    if limit_text is None:
        limit = DEFAULT_LIMIT[width]
    else:
        try:
            limit = int(limit_text)
        except ValueError:
            raise _bad("limit: Input should be a valid integer") from None
        if not 1 <= limit <= BUCKET_LIMITS[width]:
            raise _bad(f"limit: must be between 1 and {BUCKET_LIMITS[width]} for bucket_width {width}")
    groups = _groups(query, allowed_groups)
    if len(groups) > max_groups:
        raise _bad(f"group_by[]: at most {max_groups} values")
    start = parse_rfc3339(next((v for k, v in query if k == "starting_at"), None), "starting_at")
    end_text = next((v for k, v in query if k == "ending_at"), None)
    end = parse_rfc3339(end_text, "ending_at") if end_text else None
    if end is not None and end <= start:
        raise _bad("ending_at must be after starting_at")
    if start > now:
        raise _bad("starting_at must not be in the future")
    snapped = floor(start, width)
    return ReportQuery(snapped, end if end is not None else snapped + WIDTHS[width] * limit, width, limit, groups)


@dataclass(frozen=True)
class AnalyticsQuery:
    """An analytics query the API accepts: buckets of ``width`` (None: one row for the range)."""

    start: datetime  # snapped down to the hour, or to the bucket with a width
    end: datetime  # exclusive
    width: str | None
    limit: int
    groups: list[str]  # without the fan-out
    fanout: list[str]  # cost_type / token_type, as asked


def check_analytics_query(query: list[tuple[str, str]], allowed_groups: tuple[str, ...], *,
                          now: datetime) -> AnalyticsQuery:
    """The analytics query's range, width, page size and groups, or the WireError the API would answer."""
    if any(k == "group_by" for k, _ in query):
        raise _bad("group_by: Input should be a valid list (send arrays as group_by[]=...)")
    width = next((v for k, v in query if k == "time_bucket_width"), None)
    if width is not None and width not in WIDTHS:
        raise _bad("time_bucket_width: Input should be '1d', '1h' or '1m'")
    limit_text = next((v for k, v in query if k == "limit"), None)
    limit = ANALYTICS_DEFAULT_LIMIT
    if limit_text is not None:
        if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= ANALYTICS_MAX_LIMIT:
            raise _bad(f"limit: must be between 1 and {ANALYTICS_MAX_LIMIT}")
        limit = int(limit_text)
    groups = _groups(query, allowed_groups)
    fanout = [g for g in groups if g in ANALYTICS_FANOUT]
    dims = [g for g in groups if g not in ANALYTICS_FANOUT]
    if len(dims) > ANALYTICS_MAX_GROUPS:
        raise _bad(f"group_by[]: at most {ANALYTICS_MAX_GROUPS} values, not counting cost_type and token_type")
    start = parse_rfc3339(next((v for k, v in query if k == "starting_at"), None), "starting_at")
    if start < ANALYTICS_EARLIEST or start < now - timedelta(days=365):
        raise _bad("starting_at: must be within the last 365 days and no earlier than 2026-01-01T00:00:00Z")
    if start > now:
        raise _bad("starting_at must not be in the future")
    end_text = next((v for k, v in query if k == "ending_at"), None)
    if width is not None and not end_text:
        raise _bad("ending_at: required when time_bucket_width is set")
    end = parse_rfc3339(end_text, "ending_at") if end_text else min(now, start + ANALYTICS_MAX_SPAN["1d"])
    if end <= start:
        raise _bad("ending_at must be after starting_at")
    if end - start > ANALYTICS_MAX_SPAN[width or "1d"]:
        raise _bad("the range may span at most 24 hours with time_bucket_width 1m"
                   if width == "1m" else "the range may span at most 31 days")
    snapped = floor(start, width or "1h")
    return AnalyticsQuery(snapped, end if width else floor(end, "1h"), width, limit, dims, fanout)


def check_claude_code_query(query: list[tuple[str, str]], *, now: datetime) -> tuple[date, int]:
    """(day, limit) of a Claude Code report query, or the WireError the API would answer.

    One UTC day per call, ``starting_at=YYYY-MM-DD``, not in the future.
    """
    text = next((v for k, v in query if k == "starting_at"), None)
    try:
        day = date.fromisoformat(text or "")
    except ValueError:
        raise _bad("starting_at: must be a date YYYY-MM-DD") from None
    if day > now.date():
        raise _bad("starting_at must not be in the future")
    limit_text = next((v for k, v in query if k == "limit"), str(CLAUDE_CODE_DEFAULT_LIMIT))
    if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= CLAUDE_CODE_MAX_LIMIT:
        raise _bad(f"limit: must be between 1 and {CLAUDE_CODE_MAX_LIMIT}")
    return day, int(limit_text)


class PageTokens:
    """Opaque ``next_page`` tokens: an offset bound to this server and to the exact query."""

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(4)

    @staticmethod
    def _digest(query: list[tuple[str, str]]) -> str:
        return hashlib.sha256(json.dumps(sorted((k, v) for k, v in query if k != "page")).encode()).hexdigest()[:16]

    def bounds(self, query: list[tuple[str, str]], n: int, limit: int) -> tuple[int, int]:
        """[first, end) of the items the query's page holds."""
        token = next((v for k, v in query if k == "page"), None)
        first = 0
        if token is not None:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode() + b"=="))
                first, nonce, digest = int(decoded["o"]), decoded["n"], decoded["q"]
            except (ValueError, KeyError, TypeError):
                raise _bad("page: invalid page token") from None
            if nonce != self.nonce or digest != self._digest(query) or not 0 <= first <= n:
                raise _bad("page: token does not belong to this query")
        return first, min(n, first + limit)

    def next(self, query: list[tuple[str, str]], offset: int) -> str:
        """The token of the page that starts at ``offset``, for this query."""
        raw = json.dumps({"o": offset, "n": self.nonce, "q": self._digest(query)}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")
