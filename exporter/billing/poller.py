"""Billed spend: polls the Admin API on the exporter's schedule and keeps what it learned.

Each cycle fetches the cost report (1d) and the messages usage report (1h) for the days
not yet settled, always including yesterday and today, whose buckets the API still
revises or fills. A day fetched once it had been over for a full day is *settled*: it
is stored in SQLite (tables ``billed_*``) and never fetched again, so a restart does
not re-read a month. A fetched day's rows replace the stored ones, never add to them,
so a retry or a revision can not double count.

Scrapes never wait for the API: :class:`BillingPoller` publishes an immutable
:class:`BillingSnapshot` that the collector reads; a failed cycle keeps the last good
values and marks the snapshot down.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import structlog

from exporter.billing.client import (
    MAX_AMOUNT_USD,
    MAX_TOKENS_PER_ROW,
    AdminApiClient,
    AdminApiError,
    ClaudeCodeRow,
    CostRow,
    UsageRow,
    day_start,
    days_between,
)
from exporter.core.budget import period_bounds
from exporter.config import MIN_POLL_INTERVAL, PeriodConfig
from exporter.core.records import TOKEN_TYPES, Tokens

if TYPE_CHECKING:
    from prometheus_client.core import Metric

log = structlog.get_logger()

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
CREATE TABLE IF NOT EXISTS billed_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

DEFAULT_WORKSPACE = "default"  # what config and labels call workspace_id null
NONE_LABEL = "none"
#: the refusal reason of a stored day whose values are out of bounds or unreadable (a database
#: written before the bounds existed, or edited by hand): the day is read again from the API
STORED_REASON = "stored_out_of_bounds"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def month_start(day: date) -> date:
    return day.replace(day=1)


def period_start(period: PeriodConfig, now: datetime) -> date:
    """The UTC date on which the pool period containing ``now`` began (its reset instant's date).

    Holding every day from there on covers the whole period, whichever side of the reset
    the pool arithmetic assigns the straddling day to.
    """
    start, _end = period_bounds(period, now)
    return start.astimezone(UTC).date()


def earliest_period_start(periods: Iterable[PeriodConfig], now: datetime) -> date | None:
    """The earliest start among the given pool periods (None when there are none)."""
    starts = [period_start(p, now) for p in periods]
    return min(starts) if starts else None


def _workspace_filter(workspaces: Iterable[str] | None) -> Callable[[str | None], bool]:
    """A predicate on workspace_id; ``"default"`` in the list means workspace_id null."""
    if workspaces is None:
        return lambda _ws: True
    wanted = set(workspaces)
    want_default = DEFAULT_WORKSPACE in wanted
    return lambda ws: (want_default if ws is None else ws in wanted)


# --------------------------------------------------------------------------- snapshot


@dataclass(frozen=True)
class BillingSnapshot:
    """What the Admin API said at the last successful poll (immutable; safe to share).

    ``cost_rows`` maps each UTC day the poller holds to its cost-report rows; a day
    present with no rows had no spend. ``usage_rows`` are hourly usage-report rows over
    the same days. ``requests`` counts every Admin API answer by (endpoint, code),
    ``refusals`` every answer (or stored day) refused, by (endpoint, reason).
    """

    cost_rows: Mapping[date, tuple[CostRow, ...]] = field(default_factory=lambda: MappingProxyType({}))
    usage_rows: tuple[UsageRow, ...] = ()
    claude_code_rows: tuple[ClaudeCodeRow, ...] = ()
    complete_through: datetime | None = None
    up: bool = False
    last_success: float | None = None
    requests: Mapping[tuple[str, str], int] = field(default_factory=lambda: MappingProxyType({}))
    error: str | None = None
    refusals: Mapping[tuple[str, str], int] = field(default_factory=lambda: MappingProxyType({}))
    _memo: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    def daily_cost(self) -> Mapping[tuple[date, str | None, str | None, str | None, str | None], Decimal]:
        """Billed USD per (day, workspace_id, model, cost_type, token_type); computed once per snapshot."""
        memo = self._memo.get("cost")
        if memo is None:
            sums: dict[tuple[date, str | None, str | None, str | None, str | None], Decimal] = defaultdict(Decimal)
            for day, rows in self.cost_rows.items():
                for r in rows:
                    sums[(day, r.workspace_id, r.model, r.cost_type, r.token_type)] += r.amount_usd
            memo = self._memo["cost"] = MappingProxyType(dict(sums))
        return memo

    def daily_usage(self) -> Mapping[tuple[date, str | None, str | None], Tokens]:
        """Billed tokens per (day, workspace_id, model); computed once per snapshot."""
        memo = self._memo.get("usage")
        if memo is None:
            counts: dict[tuple[date, str | None, str | None], list[int]] = {}
            for r in self.usage_rows:
                key = (r.day, r.workspace_id, r.model)
                acc = counts.get(key)
                if acc is None:
                    counts[key] = list(r.tokens.as_tuple())
                else:
                    for i, n in enumerate(r.tokens.as_tuple()):
                        acc[i] += n
            memo = self._memo["usage"] = MappingProxyType({k: Tokens(*v) for k, v in counts.items()})
        return memo

    def warm(self) -> BillingSnapshot:
        """Compute the per-day sums now (in the poller's thread), so that a scrape does not."""
        self.daily_cost()
        self.daily_usage()
        return self

    @property
    def days(self) -> frozenset[date]:
        """The days the cost report has answered for (with or without spend)."""
        return frozenset(self.cost_rows)

    def billed_by_day_workspace(self, workspaces: Iterable[str] | None = None) -> dict[tuple[date, str | None], Decimal]:
        """Billed USD per (day, workspace_id), only for the given workspaces ("default" = null)."""
        keep = _workspace_filter(workspaces)
        out: dict[tuple[date, str | None], Decimal] = defaultdict(Decimal)
        for day, rows in self.cost_rows.items():
            for r in rows:
                if keep(r.workspace_id):
                    out[(day, r.workspace_id)] += r.amount_usd
        return dict(out)

    def billed_usd(self, day: date, workspaces: Iterable[str] | None = None) -> Decimal | None:
        """Billed USD on one day for the given workspaces; None when the day is not covered."""
        rows = self.cost_rows.get(day)
        if rows is None:
            return None
        keep = _workspace_filter(workspaces)
        return sum((r.amount_usd for r in rows if keep(r.workspace_id)), Decimal(0))

    def billed_between(self, start: date, end: date, workspaces: Iterable[str] | None = None) -> Decimal:
        """Billed USD over the days in ``[start, end)`` that are covered."""
        keep = _workspace_filter(workspaces)
        return sum((r.amount_usd for day, rows in self.cost_rows.items() if start <= day < end
                    for r in rows if keep(r.workspace_id)), Decimal(0))

    def usage_tokens(self, start: date, end: date, *, workspaces: Iterable[str] | None = None,
                     api_keys: Iterable[str] | None = None) -> dict[tuple[date, str | None], Tokens]:
        """Billed tokens per (day, model) over ``[start, end)`` for the given workspaces and API keys."""
        keep_ws = _workspace_filter(workspaces)
        keys = None if api_keys is None else set(api_keys)
        out: dict[tuple[date, str | None], Tokens] = {}
        for r in self.usage_rows:
            d = r.day
            if start <= d < end and keep_ws(r.workspace_id) and (keys is None or r.api_key_id in keys):
                out[(d, r.model)] = out.get((d, r.model), Tokens()) + r.tokens
        return out


# --------------------------------------------------------------------------- persistence


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
    return CostRow(_stored_day(row[0]), *(_text(v) for v in row[1:8]), amount_usd=_stored_amount(row[8]))


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


def _log_refused(report: str, refused: dict[str, str]) -> None:
    if refused:
        days = sorted(refused)
        log.error("billing.stored_value_refused", report=report, days=len(days), first=days[0], last=days[-1],
                  problem=refused[days[0]], hint="these days are left out and read again from the Admin API")


def _load_cost_rows(conn: sqlite3.Connection, start: date, end: date) -> tuple[dict[date, list[CostRow]], set[date]]:
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
    refused_days = set()
    for d in refused:
        try:
            day = date.fromisoformat(d)
        except ValueError:
            continue
        refused_days.add(day)
        out.pop(day, None)
    _log_refused("cost", refused)
    return out, refused_days


def load_cost_rows(conn: sqlite3.Connection, start: date, end: date) -> dict[date, list[CostRow]]:
    """Stored cost rows for the fetched days in ``[start, end)`` (a fetched day without spend maps to []).

    A day holding a value out of bounds (or unreadable) is left out, logged, and so not covered.
    """
    return _load_cost_rows(conn, start, end)[0]


def billed_daily_totals(conn: sqlite3.Connection, start: date, end: date,
                        workspaces: Iterable[str] | None = None) -> dict[date, Decimal]:
    """Billed USD per stored day in ``[start, end)``: what ``report`` shows next to the estimates."""
    keep = _workspace_filter(workspaces)
    return {d: sum((r.amount_usd for r in rows if keep(r.workspace_id)), Decimal(0))
            for d, rows in sorted(load_cost_rows(conn, start, end).items())}


def stored_billed_by_day(conn: sqlite3.Connection, workspaces: Iterable[str] | None = None) -> dict[date, Decimal]:
    """Billed USD per UTC day over every day the poller ever stored (what ``report`` shows)."""
    return billed_daily_totals(conn, date.min, date.max, workspaces)


def _load_usage_rows(conn: sqlite3.Connection, start: date, end: date) -> tuple[list[UsageRow], set[date]]:
    """(stored usage rows, days refused): as :func:`_load_cost_rows`, a day with a bad row is left out."""
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
    refused_days = set()
    for d in refused:
        try:
            refused_days.add(date.fromisoformat(d))
        except ValueError:
            continue
    _log_refused("usage", refused)
    return [r for r in rows if r.day not in refused_days], refused_days


def _settled_days(conn: sqlite3.Connection, report: str) -> set[date]:
    out = set()
    for (d,) in conn.execute("SELECT day FROM billed_days WHERE report = ? AND settled = 1", (report,)):
        try:
            out.add(date.fromisoformat(d))
        except (TypeError, ValueError):
            continue  # unreadable: not settled, so read again
    return out


def _state(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT name, value FROM billed_state"))


# --------------------------------------------------------------------------- poller


@dataclass(frozen=True)
class _Fetched:
    cost_days: tuple[date, ...]
    cost: list[CostRow]
    usage_days: tuple[date, ...]
    usage: list[UsageRow]
    claude_code: list[ClaudeCodeRow] | None


class BillingPoller:
    """Polls the cost and usage reports and publishes a :class:`BillingSnapshot`.

    ``store`` is a SQLite connection to the exporter's state database; the poller uses it
    only inside :meth:`poll` (give it its own connection, opened with
    ``check_same_thread=False`` if the poller runs in another thread than the one that
    opened it). ``clock`` returns the current time (aware, UTC). ``since`` gives the
    earliest day the poller must hold, from the pool periods (see
    :func:`earliest_period_start`); the window always includes the current calendar month
    and yesterday.
    """

    def __init__(
        self,
        client: AdminApiClient | None,
        store: sqlite3.Connection,
        *,
        clock: Callable[[], datetime] = _utcnow,
        since: Callable[[datetime], date | None] | date | None = None,
        claude_code_report: bool = False,
        cost_page_limit: int = 31,
        wall: Callable[[], float] = time.time,
        settle_after: timedelta = timedelta(hours=6),
    ) -> None:
        self.client = client
        self._db = store
        self._clock = clock
        self._since = since
        self.claude_code_report = claude_code_report
        self.cost_page_limit = cost_page_limit
        self._wall = wall
        # the cost report lags: a day counts as complete only this long after it ended, or the first
        # poll after midnight would swap yesterday's estimate for a partial bill
        self.settle_after = settle_after
        self._poll_lock = threading.Lock()
        ensure_schema(store)
        self._cost: dict[date, tuple[CostRow, ...]] = {}
        self._usage: dict[date, tuple[UsageRow, ...]] = {}
        self._claude_code: tuple[ClaudeCodeRow, ...] = ()
        # stored days refused at restore (out of bounds): read again, settled or not
        self._refetch: dict[str, set[date]] = {"cost": set(), "usage": set()}
        self._stored_refusals: Counter[tuple[str, str]] = Counter()
        self._snapshot = self._restore()

    # ------------------------------------------------------------------ public

    @property
    def snapshot(self) -> BillingSnapshot:
        """The latest snapshot; reading it never waits for the API."""
        return self._snapshot

    def _complete_through(self, now: datetime) -> datetime:
        """The end of the last UTC day the bill is taken as complete for (``settle_after`` past its end)."""
        return day_start((now - self.settle_after).astimezone(UTC).date())

    def window_start(self, now: datetime, since: date | None = None) -> date:
        """First day to hold: the earliest of ``since``, the month start, and yesterday."""
        today = now.astimezone(UTC).date()
        candidates = [month_start(today), today - timedelta(days=1)]
        configured = since if since is not None else self._configured_since(now)
        if configured is not None:
            candidates.append(configured)
        return min(candidates)

    def poll(self, since: date | None = None) -> BillingSnapshot:
        """Run one cycle; on failure keep the last values with ``up=False``.

        Every failure of the API, of an answer (refused as malformed, out of bounds or past a cap)
        or of the database marks the snapshot down and returns it; nothing partial is stored. Any
        other exception is a bug: the snapshot is marked down all the same, and it propagates.
        """
        with self._poll_lock:
            now = self._clock().astimezone(UTC)
            today = now.date()
            start = self.window_start(now, since)
            started = time.monotonic()
            try:
                fetched = self._fetch(start, today)
                self._store(fetched, now, today)
            except (AdminApiError, sqlite3.Error) as exc:
                self._mark_down(exc)
                return self._snapshot
            except Exception as exc:
                self._mark_down(exc, bug=True)
                raise
            self._apply(fetched, start, today)
            for report, days in (("cost", fetched.cost_days), ("usage", fetched.usage_days)):
                self._refetch[report].difference_update(days)
            self._snapshot = BillingSnapshot(
                cost_rows=MappingProxyType(dict(sorted(self._cost.items()))),
                usage_rows=tuple(r for d in sorted(self._usage) for r in self._usage[d]),
                claude_code_rows=self._claude_code,
                complete_through=self._complete_through(now),
                up=True,
                last_success=self._wall(),
                requests=self._requests(),
                refusals=self._refusals(),
            ).warm()
            log.info("billing.poll_ok", cost_days_fetched=len(fetched.cost_days),
                     usage_days_fetched=len(fetched.usage_days), days_held=len(self._cost),
                     elapsed_ms=round((time.monotonic() - started) * 1000))
            return self._snapshot

    def run(self, stop: threading.Event, interval: float) -> None:
        """Poll every ``interval`` seconds (never under a minute) until ``stop`` is set; a cycle that
        fails, however it fails, is followed by the next one on schedule."""
        interval = max(MIN_POLL_INTERVAL, interval)
        while not stop.is_set():
            try:
                self.poll()
            except Exception:  # noqa: BLE001, S110 - poll() marked the snapshot down and logged it
                pass
            stop.wait(interval)

    def _mark_down(self, exc: BaseException, *, bug: bool = False) -> None:
        """Keep the last values, marked down, with the failure; one log line for the failed poll."""
        previous = self._snapshot
        reason = getattr(exc, "reason", "error") if not bug else "internal_error"
        error = str(exc) if isinstance(exc, AdminApiError) else f"{type(exc).__name__}: {exc}"
        try:
            requests, refusals = self._requests(), self._refusals()
        except Exception:  # noqa: BLE001 - marking down must not fail in turn
            requests, refusals = previous.requests, previous.refusals
        self._snapshot = replace(previous, up=False, requests=requests, refusals=refusals, error=error).warm()
        fields = {"reason": reason, "error": error, "kept_days": len(previous.cost_rows),
                  "last_success": previous.last_success}
        if bug:
            log.exception("billing.poll_failed", **fields)
        else:
            log.error("billing.poll_failed", **fields)

    # ------------------------------------------------------------------ internals

    def _configured_since(self, now: datetime) -> date | None:
        if self._since is None or isinstance(self._since, date):
            return self._since
        return self._since(now)

    def _requests(self) -> Mapping[tuple[str, str], int]:
        if self.client is None:  # restoring stored days only (``check`` from the state on disk)
            return MappingProxyType({})
        return MappingProxyType(self.client.request_counts())

    def _refusals(self) -> Mapping[tuple[str, str], int]:
        counts = Counter(self._stored_refusals)
        if self.client is not None:
            counts.update(self.client.refusal_counts())
        return MappingProxyType(dict(counts))

    def _first_unsettled(self, report: str, start: date, today: date) -> date:
        settled = _settled_days(self._db, report) - self._refetch[report]
        return next((d for d in days_between(start, today) if d not in settled), today - timedelta(days=1))

    def _fetch(self, start: date, today: date) -> _Fetched:
        """All API reads of one cycle; nothing is stored unless every read succeeds."""
        tomorrow = today + timedelta(days=1)
        cost_from = min(self._first_unsettled("cost", start, today), today - timedelta(days=1))
        cost = self.client.cost_report(day_start(cost_from), day_start(tomorrow), limit=self.cost_page_limit)
        usage_from = min(self._first_unsettled("usage", start, today), today - timedelta(days=1))
        usage = self.client.usage_report(day_start(usage_from), day_start(tomorrow), "1h")
        claude_code = None
        if self.claude_code_report:
            claude_code = []
            for d in (today - timedelta(days=1), today):
                claude_code += self.client.claude_code_report(d)
        return _Fetched(tuple(days_between(cost_from, tomorrow)), cost,
                        tuple(days_between(usage_from, tomorrow)), usage, claude_code)

    def _store(self, f: _Fetched, now: datetime, today: date) -> None:
        """Replace the fetched days' rows and mark them, in one transaction."""
        db = self._db
        fetched_at = now.isoformat()
        settled_before = today - timedelta(days=1)  # a day is settled once read after a full day had passed
        own_tx = not db.in_transaction
        db.execute("BEGIN IMMEDIATE" if own_tx else "SAVEPOINT billed_store")
        try:
            for report, days in (("cost", f.cost_days), ("usage", f.usage_days)):
                table = "billed_cost" if report == "cost" else "billed_usage"
                db.execute(f"DELETE FROM {table} WHERE day >= ? AND day <= ?",
                           (days[0].isoformat(), days[-1].isoformat()))
                db.executemany(
                    "INSERT OR REPLACE INTO billed_days (report, day, fetched_at, settled) VALUES (?, ?, ?, ?)",
                    [(report, d.isoformat(), fetched_at, int(d < settled_before)) for d in days])
            db.executemany(
                "INSERT INTO billed_cost (day, workspace_id, description, model, cost_type, token_type,"
                " service_tier, context_window, amount_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.day.isoformat(), r.workspace_id, r.description, r.model, r.cost_type, r.token_type,
                  r.service_tier, r.context_window, str(r.amount_usd)) for r in f.cost])
            db.executemany(
                'INSERT INTO billed_usage (day, start, "end", workspace_id, api_key_id, model, service_tier,'
                " context_window, inference_geo, input, output, cache_read, cache_write_5m, cache_write_1h,"
                " web_search_requests) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.day.isoformat(), r.start.isoformat(), r.end.isoformat(), r.workspace_id, r.api_key_id, r.model,
                  r.service_tier, r.context_window, r.inference_geo, *r.tokens.as_tuple()) for r in f.usage])
            db.executemany("INSERT OR REPLACE INTO billed_state (name, value) VALUES (?, ?)", [
                ("complete_through", self._complete_through(now).isoformat()),
                ("last_success", repr(self._wall())),
            ])
            # inside the try: a COMMIT that fails (SQLITE_BUSY) leaves the transaction open, and later
            # polls would nest in it and hold the write lock that log ingest needs
            db.execute("COMMIT" if own_tx else "RELEASE billed_store")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK" if own_tx else "ROLLBACK TO billed_store")
                if not own_tx:
                    db.execute("RELEASE billed_store")
            raise

    def _apply(self, f: _Fetched, start: date, today: date) -> None:
        """Mirror the stored change in memory, and forget days that left the window."""
        cost: dict[date, list[CostRow]] = {d: [] for d in f.cost_days}
        for r in f.cost:
            cost.setdefault(r.day, []).append(r)
        usage: dict[date, list[UsageRow]] = {d: [] for d in f.usage_days}
        for u in f.usage:
            usage.setdefault(u.day, []).append(u)
        self._cost.update({d: tuple(rows) for d, rows in cost.items()})
        self._usage.update({d: tuple(rows) for d, rows in usage.items()})
        for held in (self._cost, self._usage):
            for d in [d for d in held if d < start or d > today]:
                del held[d]
        if f.claude_code is not None:
            self._claude_code = tuple(f.claude_code)

    def _restore(self) -> BillingSnapshot:
        """The snapshot a restart begins with: stored days, marked down until a poll succeeds."""
        now = self._clock().astimezone(UTC)
        today = now.date()
        start = self.window_start(now)
        end = today + timedelta(days=1)
        cost, refused_cost = _load_cost_rows(self._db, start, end)
        self._cost = {d: tuple(rows) for d, rows in cost.items()}
        usage_days = set()
        for (d,) in self._db.execute("SELECT day FROM billed_days WHERE report = 'usage' AND day >= ? AND day < ?",
                                     (start.isoformat(), end.isoformat())):
            try:
                usage_days.add(date.fromisoformat(d))
            except (TypeError, ValueError):
                continue
        usage_rows, refused_usage = _load_usage_rows(self._db, start, end)
        usage: dict[date, list[UsageRow]] = {d: [] for d in usage_days - refused_usage}
        for u in usage_rows:
            usage.setdefault(u.day, []).append(u)
        self._usage = {d: tuple(rows) for d, rows in usage.items()}
        self._refetch = {"cost": refused_cost, "usage": refused_usage}
        for endpoint, days in (("cost_report", refused_cost), ("usage_report", refused_usage)):
            if days:
                self._stored_refusals[(endpoint, STORED_REASON)] += len(days)
        state = _state(self._db)
        complete = _stored_time(state.get("complete_through"))
        last = _stored_float(state.get("last_success"))
        if self._cost:
            log.info("billing.restored", days_held=len(self._cost), last_success=last)
        return BillingSnapshot(
            cost_rows=MappingProxyType(dict(sorted(self._cost.items()))),
            usage_rows=tuple(r for d in sorted(self._usage) for r in self._usage[d]),
            complete_through=complete,
            up=False,
            last_success=last,
            requests=self._requests(),
            refusals=self._refusals(),
        ).warm()


def _stored_time(value: str | None) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


def _stored_float(value: str | None) -> float | None:
    try:
        number = float(value) if value else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and 0 <= number < 1e11 else None  # a time stamp, not inf or NaN


# --------------------------------------------------------------------------- metrics

_CACHED = "Cached from the last successful Admin API poll."


def _label(value: str | None) -> str:
    return value if value else NONE_LABEL


def _windows(today: date) -> tuple[tuple[str, date, date], ...]:
    """(window, first day, last day inclusive): UTC days; period is the calendar month to date."""
    yesterday = today - timedelta(days=1)
    return (("today", today, today), ("yesterday", yesterday, yesterday), ("period", month_start(today), today))


def billed_metric_families(
    snap: BillingSnapshot,
    today: date,
    *,
    model_label: Callable[[str | None], str] = _label,
    include_claude_code: bool = False,
) -> Iterator[Metric]:
    """The Admin API's own metric families, computed from a snapshot (no I/O).

    ``model_label`` maps a model id to its label (the collector passes its closed-set
    mapping, e.g. ``Pricer.model_label``; by default the id itself); rows without a model
    are labelled ``none``. ``claude_source_up`` is left to the collector.
    """
    # imported here: ``report`` reads the stored bill through this module and exposes nothing
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def model_of(model: str | None) -> str:
        return model_label(model) if model else NONE_LABEL

    cost = GaugeMetricFamily(
        "claude_billed_cost_usd",
        "Billed cost in USD from the Admin API cost report (amount in cents / 100). window: today and "
        "yesterday are UTC days, period is the current UTC calendar month to date (today is partial). "
        "workspace_id 'default' is the default workspace. " + _CACHED,
        labels=["window", "workspace_id", "model", "cost_type", "token_type"],
    )
    daily_cost = snap.daily_cost()
    for window, first, last in _windows(today):
        sums: dict[tuple[str, str, str, str], Decimal] = defaultdict(Decimal)
        for (day, ws, model, cost_type, token_type), amount in daily_cost.items():
            if first <= day <= last:
                sums[(ws or DEFAULT_WORKSPACE, model_of(model), _label(cost_type), _label(token_type))] += amount
        for key, amount in sorted(sums.items()):
            cost.add_metric([window, *key], float(amount))
    yield cost

    tokens = GaugeMetricFamily(
        "claude_billed_tokens",
        "Billed tokens from the Admin API messages usage report (fresher than cost, about 5 minutes behind). "
        "window: today and yesterday are UTC days, period is the current UTC calendar month to date. "
        "token_type input is uncached input. " + _CACHED,
        labels=["window", "workspace_id", "model", "token_type"],
    )
    daily_usage = snap.daily_usage()
    for window, first, last in _windows(today):
        tsums: dict[tuple[str, str], Tokens] = {}
        for (day, ws, model), t in daily_usage.items():
            if first <= day <= last:
                key = (ws or DEFAULT_WORKSPACE, model_of(model))
                tsums[key] = tsums.get(key, Tokens()) + t
        for (ws, model), t in sorted(tsums.items()):
            for token_type, count in zip(TOKEN_TYPES, t.as_tuple(), strict=False):
                tokens.add_metric([window, ws, model, token_type], float(count))
    yield tokens

    complete = GaugeMetricFamily(
        "claude_billed_complete_through_timestamp_seconds",
        "End of the last complete UTC day the cost report covers (billed spend is final up to here, "
        "subject to revision of the last day). " + _CACHED,
    )
    if snap.complete_through is not None:
        complete.add_metric([], snap.complete_through.timestamp())
    yield complete

    requests = CounterMetricFamily(
        "claude_admin_api_requests",
        "Admin API answers by endpoint and HTTP status code ('error': no answer, e.g. timeout or reset).",
        labels=["endpoint", "code"],
    )
    for (endpoint, code), n in sorted(snap.requests.items()):
        requests.add_metric([endpoint, code], float(n))
    yield requests

    refused = CounterMetricFamily(
        "claude_admin_api_refused",
        "Admin API answers refused, by endpoint and reason: malformed, out_of_bounds (an amount or count "
        "no real bill has), body_too_large, too_many_rows, too_many_pages, deadline (no whole answer in time), "
        "stored_out_of_bounds (a stored day left out and read again). A refused answer fails the poll and "
        "keeps the last good values.",
        labels=["endpoint", "reason"],
    )
    for (endpoint, reason), n in sorted(snap.refusals.items()):
        refused.add_metric([endpoint, reason], float(n))
    yield refused

    if include_claude_code:
        cc = GaugeMetricFamily(
            "claude_code_report_estimated_cost_usd",
            "Estimated Claude Code cost in USD per model from the Admin API Claude Code usage report, "
            "window today/yesterday (UTC days). " + _CACHED,
            labels=["window", "model"],
        )
        for window, first, last in _windows(today)[:2]:
            csums: dict[str, Decimal] = defaultdict(Decimal)
            for r in snap.claude_code_rows:
                if first <= r.day <= last:
                    csums[model_of(r.model)] += r.estimated_cost_usd
            for model, amount in sorted(csums.items()):
                cc.add_metric([window, model], float(amount))
        yield cc
