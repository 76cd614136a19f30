"""The billed days in the state database: tables ``billed_*``, written by the poller, read by
``report`` and at start.

A stored value is checked as it is read, with the client's own bounds: a day holding one
out of bounds (a database written before the bounds existed, or edited by hand) is left
out whole, said once in the log, and read again from the Admin API.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from exporter.logsetup import get_logger

from exporter.billing.client import (
    MAX_AMOUNT_USD,
    MAX_TOKENS_PER_ROW,
    Actor,
    AnalyticsCostRow,
    AnalyticsUsageRow,
    CostRow,
    UsageRow,
)
from exporter.core.records import Tokens

__all__ = ["ANALYTICS_COST", "ANALYTICS_COST_COLUMNS", "ANALYTICS_USAGE", "ANALYTICS_USAGE_COLUMNS",
           "analytics_cost_values", "analytics_usage_values", "load_analytics_cost", "load_analytics_usage",
           "DEFAULT_WORKSPACE", "SCHEMA", "STORED_REASON", "billed_daily_totals", "ensure_schema",
           "load_cost_rows", "load_cost_rows_refused", "load_usage_rows", "settled_days", "stored_billed_by_day", "stored_state",
           "workspace_filter"]

log = get_logger()

_R = TypeVar("_R")
#: ``billed_days.report`` of the analytics API's days (the legacy reports' are 'cost' and 'usage')
ANALYTICS_COST = "analytics_cost"
ANALYTICS_USAGE = "analytics_usage"
DEFAULT_WORKSPACE = "default"  # what config and labels call workspace_id null
#: the refusal reason of a stored day whose values are out of bounds or unreadable (a database
#: written before the bounds existed, or edited by hand): the day is read again from the API
STORED_REASON = "stored_out_of_bounds"

SCHEMA = """
CREATE TABLE IF NOT EXISTS billed_days (
    report TEXT NOT NULL,            -- 'cost' or 'usage'
    day TEXT NOT NULL,               -- UTC date, ISO
    fetched_at TEXT NOT NULL,        -- when the stored rows were read (RFC 3339)
    settled INTEGER NOT NULL,        -- 1: read after the day had been over a full day; never re-read
    PRIMARY KEY (report, day)
);
CREATE TABLE IF NOT EXISTS billed_cost (
    day TEXT NOT NULL,
    workspace_id TEXT, description TEXT, model TEXT, cost_type TEXT, token_type TEXT,
    service_tier TEXT, context_window TEXT,
    amount_usd TEXT NOT NULL         -- exact Decimal string, dollars
);
CREATE INDEX IF NOT EXISTS billed_cost_day ON billed_cost (day);
CREATE TABLE IF NOT EXISTS billed_usage (
    day TEXT NOT NULL,
    start TEXT NOT NULL, "end" TEXT NOT NULL,
    workspace_id TEXT, api_key_id TEXT, model TEXT, service_tier TEXT, context_window TEXT, inference_geo TEXT,
    input INTEGER NOT NULL, output INTEGER NOT NULL, cache_read INTEGER NOT NULL,
    cache_write_5m INTEGER NOT NULL, cache_write_1h INTEGER NOT NULL, web_search_requests INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS billed_usage_day ON billed_usage (day);
CREATE TABLE IF NOT EXISTS billed_analytics_cost (
    day TEXT NOT NULL,               -- UTC date of the bucket's start
    start TEXT NOT NULL, "end" TEXT NOT NULL, -- the bucket: an hour, or a whole day for older days
    workspace_id TEXT, api_key_id TEXT, model TEXT, product TEXT,
    actor_kind TEXT, actor_id TEXT, actor_email TEXT, cost_type TEXT, token_type TEXT,
    amount_usd TEXT NOT NULL, list_usd TEXT NOT NULL, -- exact Decimal strings, dollars
    currency TEXT NOT NULL, requests INTEGER
);
CREATE INDEX IF NOT EXISTS billed_analytics_cost_day ON billed_analytics_cost (day);
CREATE TABLE IF NOT EXISTS billed_analytics_usage (
    day TEXT NOT NULL,
    start TEXT NOT NULL, "end" TEXT NOT NULL,
    workspace_id TEXT, api_key_id TEXT, model TEXT, product TEXT,
    input INTEGER NOT NULL, output INTEGER NOT NULL, cache_read INTEGER NOT NULL,
    cache_write_5m INTEGER NOT NULL, cache_write_1h INTEGER NOT NULL, web_search_requests INTEGER NOT NULL,
    requests INTEGER
);
CREATE INDEX IF NOT EXISTS billed_analytics_usage_day ON billed_analytics_usage (day);
CREATE TABLE IF NOT EXISTS billed_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def workspace_filter(workspaces: Iterable[str] | None) -> Callable[[str | None], bool]:
    """A predicate on workspace_id; ``"default"`` in the list means workspace_id null."""
    if workspaces is None:
        return lambda _ws: True
    wanted = set(workspaces)
    want_default = DEFAULT_WORKSPACE in wanted
    return lambda ws: (want_default if ws is None else ws in wanted)



def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the ``billed_*`` tables if missing (statement by statement: no implicit commit)."""
    for statement in _statements(SCHEMA):
        conn.execute(statement)


def _statements(script: str) -> list[str]:
    lines = [ln.split("--", 1)[0] for ln in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class _StoredValueError(ValueError):
    """A stored value out of bounds or unreadable."""


def _stored_day(value: Any) -> date:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise _StoredValueError(f"day {value!r}") from None


def _stored_amount(value: Any) -> Decimal:
    """A stored amount in USD, within the bounds the client applies to every amount it accepts."""
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise _StoredValueError("amount is not a number") from None
    # compared, never rounded: arithmetic on 1E+398 or NaN is what raised on every render
    if not amount.is_finite() or amount.copy_abs() > MAX_AMOUNT_USD:
        raise _StoredValueError(f"amount out of bounds (at most {MAX_AMOUNT_USD:f} USD a row)")
    return amount


def _stored_count(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_TOKENS_PER_ROW:
        raise _StoredValueError("token count out of bounds")
    return value


def _text(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _StoredValueError("a label is not text")
    return value


def _cost_from_db(row: tuple[Any, ...]) -> CostRow:
    t = [_text(v) for v in row[1:8]]
    return CostRow(_stored_day(row[0]), t[0], t[1], t[2], t[3], t[4], t[5], t[6], amount_usd=_stored_amount(row[8]))


def _usage_from_db(row: tuple[Any, ...]) -> UsageRow:
    try:
        start, end = datetime.fromisoformat(row[1]), datetime.fromisoformat(row[2])
    except (TypeError, ValueError):
        raise _StoredValueError("bucket bounds") from None
    return UsageRow(
        start=start, end=end,
        workspace_id=_text(row[3]), api_key_id=_text(row[4]), model=_text(row[5]), service_tier=_text(row[6]),
        context_window=_text(row[7]), inference_geo=_text(row[8]),
        tokens=Tokens(*(_stored_count(v) for v in row[9:15])),
    )


def _stored_time(value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise _StoredValueError("bucket bounds") from None
    if moment.tzinfo is None:
        raise _StoredValueError("bucket bounds")
    return moment


def _analytics_cost_from_db(row: tuple[Any, ...]) -> AnalyticsCostRow:
    t = [_text(v) for v in row[3:12]]
    actor = Actor(t[4], t[5], t[6]) if t[4] is not None else None
    return AnalyticsCostRow(
        start=_stored_time(row[1]), end=_stored_time(row[2]), workspace_id=t[0], api_key_id=t[1], model=t[2],
        product=t[3], actor=actor, cost_type=t[7], token_type=t[8], amount_usd=_stored_amount(row[12]),
        list_usd=_stored_amount(row[13]), currency=_text(row[14]) or "USD",
        requests=None if row[15] is None else _stored_count(row[15]))


def _analytics_usage_from_db(row: tuple[Any, ...]) -> AnalyticsUsageRow:
    t = [_text(v) for v in row[3:7]]
    return AnalyticsUsageRow(
        start=_stored_time(row[1]), end=_stored_time(row[2]), workspace_id=t[0], api_key_id=t[1], model=t[2],
        product=t[3], service_tier=None, context_window=None, inference_geo=None,
        tokens=Tokens(*(_stored_count(v) for v in row[7:13])),
        requests=None if row[13] is None else _stored_count(row[13]))


ANALYTICS_COST_COLUMNS = ('day, start, "end", workspace_id, api_key_id, model, product, actor_kind, actor_id,'
                          ' actor_email, cost_type, token_type, amount_usd, list_usd, currency, requests')
ANALYTICS_USAGE_COLUMNS = ('day, start, "end", workspace_id, api_key_id, model, product, input, output, cache_read,'
                           ' cache_write_5m, cache_write_1h, web_search_requests, requests')


def analytics_cost_values(r: AnalyticsCostRow) -> tuple[Any, ...]:
    """A row as stored (see :data:`ANALYTICS_COST_COLUMNS`)."""
    a = r.actor
    return (r.start.date().isoformat(), r.start.isoformat(), r.end.isoformat(), r.workspace_id, r.api_key_id,
            r.model, r.product, a.kind if a else None, a.id if a else None, a.email if a else None, r.cost_type,
            r.token_type, str(r.amount_usd), str(r.list_usd), r.currency, r.requests)


def analytics_usage_values(r: AnalyticsUsageRow) -> tuple[Any, ...]:
    return (r.start.date().isoformat(), r.start.isoformat(), r.end.isoformat(), r.workspace_id, r.api_key_id,
            r.model, r.product, *r.tokens.as_tuple(), r.requests)


def _load_rows(conn: sqlite3.Connection, report: str, table: str, columns: str, start: date, end: date,
               parse: Callable[[tuple[Any, ...]], _R]) -> tuple[dict[date, list[_R]], set[date]]:
    """(rows per fetched day, days refused) of one ``billed_*`` table; a day with a bad row is left out whole."""
    ensure_schema(conn)
    bounds = (start.isoformat(), end.isoformat())
    out: dict[date, list[_R]] = {}
    refused: dict[str, str] = {}
    for (d,) in conn.execute("SELECT day FROM billed_days WHERE report = ? AND day >= ? AND day < ?",
                             (report, *bounds)):
        try:
            out[_stored_day(d)] = []
        except _StoredValueError as exc:
            refused[str(d)] = str(exc)
    for row in conn.execute(f"SELECT {columns} FROM {table} WHERE day >= ? AND day < ? ORDER BY rowid", bounds):
        try:
            day = _stored_day(row[0])
            r = parse(row)
        except _StoredValueError as exc:
            refused.setdefault(str(row[0]), str(exc))
            continue
        if day in out:
            out[day].append(r)
    refused_days = _refused_days(refused)
    for day in refused_days:
        out.pop(day, None)
    _log_refused(report, refused)
    return out, refused_days


def load_analytics_cost(conn: sqlite3.Connection, start: date, end: date
                        ) -> tuple[dict[date, list[AnalyticsCostRow]], set[date]]:
    """(stored analytics cost rows per fetched day in ``[start, end)``, days refused)."""
    return _load_rows(conn, ANALYTICS_COST, "billed_analytics_cost", ANALYTICS_COST_COLUMNS, start, end,
                      _analytics_cost_from_db)


def load_analytics_usage(conn: sqlite3.Connection, start: date, end: date
                         ) -> tuple[dict[date, list[AnalyticsUsageRow]], set[date]]:
    """(stored analytics usage rows per fetched day in ``[start, end)``, days refused)."""
    return _load_rows(conn, ANALYTICS_USAGE, "billed_analytics_usage", ANALYTICS_USAGE_COLUMNS, start, end,
                      _analytics_usage_from_db)


def _refused_days(refused: dict[str, str]) -> set[date]:
    """The days of ``refused`` (day text -> problem) that are dates: those are read again."""
    days = set()
    for d in refused:
        try:
            days.add(date.fromisoformat(d))
        except ValueError:
            continue
    return days


def _log_refused(report: str, refused: dict[str, str]) -> None:
    if refused:
        days = sorted(refused)
        log.error("billing.stored_value_refused", report=report, days=len(days), first=days[0], last=days[-1],
                  problem=refused[days[0]], hint="these days are left out and read again from the Admin API")


def load_cost_rows_refused(conn: sqlite3.Connection, start: date, end: date) -> tuple[dict[date, list[CostRow]], set[date]]:
    """(stored cost rows per fetched day, days refused): a day with any row out of bounds or unreadable
    is left out whole, as if it had never been fetched, and said once in the log."""
    ensure_schema(conn)
    bounds = (start.isoformat(), end.isoformat())
    out: dict[date, list[CostRow]] = {}
    refused: dict[str, str] = {}
    for (d,) in conn.execute("SELECT day FROM billed_days WHERE report = 'cost' AND day >= ? AND day < ?", bounds):
        try:
            out[_stored_day(d)] = []
        except _StoredValueError as exc:
            refused[str(d)] = str(exc)
    for row in conn.execute(
        "SELECT day, workspace_id, description, model, cost_type, token_type, service_tier, context_window,"
        " amount_usd FROM billed_cost WHERE day >= ? AND day < ? ORDER BY rowid", bounds,
    ):
        try:
            r = _cost_from_db(row)
        except _StoredValueError as exc:
            refused.setdefault(str(row[0]), str(exc))
            continue
        out.setdefault(r.day, []).append(r)
    refused_days = _refused_days(refused)
    for day in refused_days:
        out.pop(day, None)
    _log_refused("cost", refused)
    return out, refused_days


def load_cost_rows(conn: sqlite3.Connection, start: date, end: date) -> dict[date, list[CostRow]]:
    """Stored cost rows for the fetched days in ``[start, end)`` (a fetched day without spend maps to []).

    A day holding a value out of bounds (or unreadable) is left out, logged, and so not covered.
    """
    return load_cost_rows_refused(conn, start, end)[0]


def billed_daily_totals(conn: sqlite3.Connection, start: date, end: date,
                        workspaces: Iterable[str] | None = None) -> dict[date, Decimal]:
    """Billed USD per stored day in ``[start, end)``: what ``report`` shows next to the estimates.

    A day the analytics API answered for is taken from it, any other from the legacy cost report.
    """
    keep = workspace_filter(workspaces)
    totals = {d: sum((r.amount_usd for r in rows if keep(r.workspace_id)), Decimal(0))
              for d, rows in load_cost_rows(conn, start, end).items()}
    analytics, _refused = load_analytics_cost(conn, start, end)
    totals.update({d: sum((r.amount_usd for r in rows if keep(r.workspace_id)), Decimal(0))
                   for d, rows in analytics.items()})
    return dict(sorted(totals.items()))


def stored_billed_by_day(conn: sqlite3.Connection, workspaces: Iterable[str] | None = None) -> dict[date, Decimal]:
    """Billed USD per UTC day over every day the poller ever stored (what ``report`` shows)."""
    return billed_daily_totals(conn, date.min, date.max, workspaces)


def load_usage_rows(conn: sqlite3.Connection, start: date, end: date) -> tuple[list[UsageRow], set[date]]:
    """(stored usage rows, days refused): as :func:`load_cost_rows_refused`, a day with a bad row is left out."""
    rows: list[UsageRow] = []
    refused: dict[str, str] = {}
    for row in conn.execute(
        'SELECT day, start, "end", workspace_id, api_key_id, model, service_tier, context_window, inference_geo,'
        " input, output, cache_read, cache_write_5m, cache_write_1h, web_search_requests"
        " FROM billed_usage WHERE day >= ? AND day < ? ORDER BY rowid",
        (start.isoformat(), end.isoformat()),
    ):
        try:
            rows.append(_usage_from_db(row))
        except _StoredValueError as exc:
            refused.setdefault(str(row[0]), str(exc))
    refused_days = _refused_days(refused)
    _log_refused("usage", refused)
    return [r for r in rows if r.day not in refused_days], refused_days


def settled_days(conn: sqlite3.Connection, report: str) -> set[date]:
    out = set()
    for (d,) in conn.execute("SELECT day FROM billed_days WHERE report = ? AND settled = 1", (report,)):
        try:
            out.add(date.fromisoformat(d))
        except (TypeError, ValueError):
            continue  # unreadable: not settled, so read again
    return out


def stored_state(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT name, value FROM billed_state"))
