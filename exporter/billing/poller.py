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

import json
import sqlite3
from contextlib import contextmanager
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from exporter.logsetup import get_logger

from exporter.billing.client import (
    MAX_AMOUNT_USD,
    AdminApiClient,
    AdminApiError,
    AdminApiHTTPError,
    AnalyticsCostRow,
    AnalyticsUsageRow,
    ClaudeCodeRow,
    CostRow,
    MemberSpend,
    SpendLimit,
    UsageRow,
    day_start,
    days_between,
)
from exporter.billing.wire import BUCKET_LIMITS, spend_limit_period_start
from exporter.billing.store import (
    ANALYTICS_COST,
    ANALYTICS_COST_COLUMNS,
    ANALYTICS_USAGE,
    ANALYTICS_USAGE_COLUMNS,
    STORED_REASON,
    analytics_cost_values,
    analytics_usage_values,
    ensure_schema,
    load_analytics_cost,
    load_analytics_usage,
    load_cost_rows_refused,
    load_usage_rows,
    settled_days,
    stored_state,
    workspace_filter,
)
from exporter.core.budget import period_bounds
from exporter.config import PeriodConfig
from exporter.core.records import Tokens

if TYPE_CHECKING:
    pass

log = get_logger()

#: ``admin_api.api``: which endpoints the poller reads
ADMIN_APIS = ("auto", "analytics", "legacy")
#: the analytics API's answers that mean "not for this organisation or key" (HIPAA readiness: 400;
#: no ``read:analytics`` scope: 403; no such endpoint: 404): ``auto`` falls back to the legacy API
FALLBACK_STATUSES = frozenset({400, 403, 404})
#: how long ``auto`` reads the legacy API after a refusal before it asks the analytics API again
ANALYTICS_RETRY = timedelta(hours=1)
#: the analytics cost query's dimensions (at most five); ``actor`` joins when a pool matches actors
ANALYTICS_COST_GROUPS = ("workspace_id", "api_key_id", "model", "product")
ANALYTICS_USAGE_GROUPS = ("workspace_id", "api_key_id", "model", "product")
#: the longest range one analytics query may span
ANALYTICS_SPAN_DAYS = 31



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


# --------------------------------------------------------------------------- spend limits


@contextmanager
def _stored(db: sqlite3.Connection) -> Iterator[None]:
    """One transaction (a savepoint inside a caller's): a poll's rows are stored whole or not at all."""
    own_tx = not db.in_transaction
    db.execute("BEGIN IMMEDIATE" if own_tx else "SAVEPOINT billed_store")
    try:
        yield
        # inside the try: a COMMIT that fails (SQLITE_BUSY) leaves the transaction open, and later
        # polls would nest in it and hold the write lock that log ingest needs
        db.execute("COMMIT" if own_tx else "RELEASE billed_store")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK" if own_tx else "ROLLBACK TO billed_store")
            if not own_tx:
                db.execute("RELEASE billed_store")
        raise


@dataclass(frozen=True)
class LimitView:
    """One spend limit and its spend so far in its current period (None: not known here), in the
    limit's currency (major units)."""

    limit: SpendLimit
    spent: Decimal | None

    def to_json(self) -> dict[str, Any]:
        x = self.limit
        return {"id": x.id, "scope_type": x.scope_type, "scope_id": x.scope_id, "period": x.period,
                "amount": None if x.amount is None else str(x.amount), "currency": x.currency,
                "enabled": x.enabled, "spent": None if self.spent is None else str(self.spent)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LimitView:
        """A stored view; ValueError for one out of the client's bounds (it is then read again)."""
        amount, spent = (None if d.get(k) is None else _bounded(Decimal(d[k])) for k in ("amount", "spent"))
        return cls(SpendLimit(str(d["id"]), str(d["scope_type"]), d.get("scope_id"), str(d["period"]),
                              amount, str(d["currency"]), bool(d["enabled"])), spent)


def _bounded(amount: Decimal) -> Decimal:
    if not amount.is_finite() or amount.copy_abs() > MAX_AMOUNT_USD:
        raise ValueError("a stored spend-limit amount out of bounds")
    return amount


def limit_views(limits: Iterable[SpendLimit], members: Iterable[MemberSpend], snap: BillingSnapshot,
                now: datetime) -> tuple[LimitView, ...]:
    """Each limit with its period-to-date spend: a member's own figure from the effective report for a
    user limit; the billed cost of its scope since the period began for the organisation, the usage
    tier and a workspace (the bill is in USD: other currencies are left unknown); None otherwise."""
    members = list(members)
    out = []
    for x in limits:
        spent: Decimal | None = None
        if x.scope_type == "user":
            spent = next((m.spent for m in members if m.user_id == x.scope_id and m.period == x.period
                          and m.currency == x.currency), None)
        elif x.scope_type in ("organization", "usage_tier", "workspace") and x.currency == "USD":
            start = spend_limit_period_start(x.period, now)
            rows: Iterable[tuple[datetime, str | None, Decimal]]
            if snap.api == "analytics":
                rows = ((r.start, r.workspace_id, r.amount_usd) for r in snap.analytics_cost)
            else:
                rows = ((day_start(d), r.workspace_id, r.amount_usd) for d, rs in snap.cost_rows.items() for r in rs)
            spent = sum((usd for at, ws, usd in rows if at >= start
                         and (x.scope_type != "workspace" or ws == x.scope_id)), Decimal(0))
        out.append(LimitView(x, spent))
    return tuple(out)


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
    #: which API the rows come from: "legacy" (cost and usage reports, by the day) or "analytics"
    #: (``analytics_cost`` holds its rows: by the hour for recent days; ``complete_through`` is then
    #: the end of the last complete billed hour)
    api: str = "legacy"
    analytics_cost: tuple[AnalyticsCostRow, ...] = ()
    fallbacks: int = 0
    #: the organisation's spend limits with their period-to-date spend, and (Enterprise) each member's
    spend_limits: tuple[LimitView, ...] = ()
    member_spend: tuple[MemberSpend, ...] = ()
    org: str = "default"  # the organisation (admin_api name) these figures are of
    _memo: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    def daily_cost(self) -> Mapping[tuple[date, str | None, str | None, str | None, str | None, str | None],
                                    tuple[Decimal, Decimal | None]]:
        """(billed USD, list-price USD or None) per (day, workspace_id, model, cost_type, token_type,
        product); computed once per snapshot."""
        memo = self._memo.get("cost")
        if memo is None:
            sums: dict[tuple[date, str | None, str | None, str | None, str | None, str | None],
                       tuple[Decimal, Decimal | None]] = {}
            for day, rows in self.cost_rows.items():
                for r in rows:
                    key = (day, r.workspace_id, r.model, r.cost_type, r.token_type, r.product)
                    amount, listed = sums.get(key, (Decimal(0), None))
                    if r.list_usd is not None:
                        listed = (listed or Decimal(0)) + r.list_usd
                    sums[key] = (amount + r.amount_usd, listed)
            memo = self._memo["cost"] = MappingProxyType(sums)
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
        keep = workspace_filter(workspaces)
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
        keep = workspace_filter(workspaces)
        return sum((r.amount_usd for r in rows if keep(r.workspace_id)), Decimal(0))



# --------------------------------------------------------------------------- persistence


# --------------------------------------------------------------------------- poller


@dataclass(frozen=True)
class _Fetched:
    cost_days: tuple[date, ...]
    cost: list[CostRow]
    usage_days: tuple[date, ...]
    usage: list[UsageRow]
    claude_code: list[ClaudeCodeRow] | None


@dataclass(frozen=True)
class _AnalyticsFetched:
    """One cycle's analytics reads: ``days`` replaced whole by ``cost`` and ``usage``."""

    days: tuple[date, ...]
    cost: list[AnalyticsCostRow]
    usage: list[AnalyticsUsageRow]
    complete_hour: datetime
    claude_code: list[ClaudeCodeRow] | None


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _analytics_days(cost: Iterable[AnalyticsCostRow]) -> dict[date, tuple[CostRow, ...]]:
    """The analytics rows as the cost report's daily rows (summed per day and dimension), so that the
    billed families and ``report`` read both APIs alike."""
    sums: dict[date, dict[tuple[str | None, ...], list[Decimal]]] = defaultdict(dict)
    for r in cost:
        key = (r.workspace_id, r.model, r.cost_type, r.token_type, r.product)
        acc = sums[r.start.date()].setdefault(key, [Decimal(0), Decimal(0)])
        acc[0] += r.amount_usd
        acc[1] += r.list_usd
    return {d: tuple(CostRow(d, k[0], None, k[1], k[2], k[3], None, None, a[0], product=k[4], list_usd=a[1])
                     for k, a in sorted(rows.items(), key=lambda kv: tuple(str(p) for p in kv[0])))
            for d, rows in sums.items()}


def _analytics_usage_rows(usage: Iterable[AnalyticsUsageRow]) -> tuple[UsageRow, ...]:
    return tuple(UsageRow(u.start, u.end, u.workspace_id, u.api_key_id, u.model, None, None, None, u.tokens)
                 for u in usage)


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
        cost_page_limit: int = BUCKET_LIMITS["1d"],
        wall: Callable[[], float] = time.time,
        settle_after: timedelta = timedelta(hours=6),
        api: str = "legacy",
        actors: bool = False,
        spend_limits: bool = False,
        org: str = "default",
        unavailable: str | None = None,
    ) -> None:
        if api not in ADMIN_APIS:
            raise ValueError(f"api must be one of {', '.join(ADMIN_APIS)}")
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
        self.api = api
        self.cost_groups = ANALYTICS_COST_GROUPS + (("actor",) if actors else ())
        self._legacy_until: datetime | None = None  # auto: the legacy API stands in until then
        self._fallbacks = 0
        self._analytics_cost: dict[date, tuple[AnalyticsCostRow, ...]] = {}
        self._analytics_usage: dict[date, tuple[AnalyticsUsageRow, ...]] = {}
        self._in_use = "analytics" if api == "analytics" else "legacy"
        self.spend_limits = spend_limits
        self.org = org
        self._limits: tuple[SpendLimit, ...] = ()
        self._members: tuple[MemberSpend, ...] = ()
        self._limits_off: dict[str, datetime] = {}  # endpoint -> not asked again before
        ensure_schema(store)
        self._cost: dict[date, tuple[CostRow, ...]] = {}
        self._usage: dict[date, tuple[UsageRow, ...]] = {}
        self._claude_code: tuple[ClaudeCodeRow, ...] = ()
        # stored days refused at restore (out of bounds): read again, settled or not
        self._refetch: dict[str, set[date]] = {"cost": set(), "usage": set(), ANALYTICS_COST: set(),
                                               ANALYTICS_USAGE: set()}
        self._stored_refusals: Counter[tuple[str, str]] = Counter()
        self._snapshot = replace(self._restore(), org=org).warm()
        #: why this organisation cannot be polled at all (its admin key cannot be read): its source is
        #: down with this error, and its stored days are served
        self.unavailable = unavailable
        if unavailable is not None:
            self._snapshot = replace(self._snapshot, up=False, error=unavailable)

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
        if self.client is None:  # no key: nothing to ask; the snapshot stays down with the reason
            self._snapshot = replace(self._snapshot, up=False, error=self.unavailable or "no Admin API client")
            return self._snapshot
        with self._poll_lock:
            now = self._clock().astimezone(UTC)
            today = now.date()
            start = self.window_start(now, since)
            started = time.monotonic()
            try:
                if self._wants_analytics(now):
                    try:
                        afetched = self._fetch_analytics(start, today, now)
                    except AdminApiHTTPError as exc:
                        if self.api != "auto" or exc.status not in FALLBACK_STATUSES:
                            raise
                        self._fall_back(exc, now)
                    else:
                        self._store_analytics(afetched, now, today)
                        self._apply_analytics(afetched, start, today)
                        if self._in_use != "analytics":
                            log.info("billing.analytics_api_in_use", previous=self._in_use)
                        self._in_use = "analytics"
                        self._publish(self._analytics_snapshot(afetched.complete_hour), now)
                        log.info("billing.poll_ok", api="analytics", days_fetched=len(afetched.days),
                                 days_held=len(self._analytics_cost), complete_hour=afetched.complete_hour.isoformat(),
                                 elapsed_ms=round((time.monotonic() - started) * 1000))
                        return self._snapshot
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
            self._in_use = "legacy"
            self._publish(BillingSnapshot(
                cost_rows=MappingProxyType(dict(sorted(self._cost.items()))),
                usage_rows=tuple(r for d in sorted(self._usage) for r in self._usage[d]),
                claude_code_rows=self._claude_code,
                complete_through=self._complete_through(now),
                up=True,
                last_success=self._wall(),
            ), now)
            log.info("billing.poll_ok", api="legacy", cost_days_fetched=len(fetched.cost_days),
                     usage_days_fetched=len(fetched.usage_days), days_held=len(self._cost),
                     elapsed_ms=round((time.monotonic() - started) * 1000))
            return self._snapshot

    def _publish(self, snap: BillingSnapshot, now: datetime) -> None:
        """Publish a successful poll's snapshot, with the spend limits read in the same cycle."""
        if self.spend_limits:
            self._poll_limits(now)
        views = limit_views(self._limits, self._members, snap, now)
        self._store_limits(views)
        self._snapshot = replace(snap, requests=self._requests(), refusals=self._refusals(),
                                 fallbacks=self._fallbacks, spend_limits=views,
                                 member_spend=self._members, org=self.org).warm()

    def _poll_limits(self, now: datetime) -> None:
        """Read the spend limits (and, for an Enterprise organisation, each member's spend against them).

        They are extras: a failure keeps the last ones and never marks the bill down; an endpoint
        that refuses (an early-access preview, or the effective report on a Console organisation)
        is asked again an hour later, said once.
        """
        assert self.client is not None
        for what in ("spend_limits", "member_spend"):
            until = self._limits_off.get(what)
            if until is not None and now < until:
                continue
            try:
                if what == "spend_limits":
                    self._limits = tuple(self.client.spend_limits())
                else:
                    self._members = tuple(self.client.member_spend())
            except AdminApiHTTPError as exc:
                if exc.status not in FALLBACK_STATUSES:
                    log.warning("billing.spend_limits_failed", endpoint=what, error=str(exc))
                    continue
                if what not in self._limits_off:
                    log.info("billing.spend_limits_unavailable", endpoint=what, code=exc.status,
                             error_type=exc.error_type, error=exc.api_message,
                             hint="the effective report is for Enterprise organisations; a Console organisation's "
                                  "limits are measured against its billed cost" if what == "member_spend" else
                                  "listing spend limits may need the preview enabled for the organisation")
                self._limits_off[what] = now + ANALYTICS_RETRY
                if what == "spend_limits":
                    self._limits = ()
                else:
                    self._members = ()
            except AdminApiError as exc:
                log.warning("billing.spend_limits_failed", endpoint=what, error=str(exc))
            else:
                self._limits_off.pop(what, None)

    def _store_limits(self, views: tuple[LimitView, ...]) -> None:
        """Keep the limits and their spend for ``check`` (a command that reads the state, never the API)."""
        try:
            self._db.execute("INSERT OR REPLACE INTO billed_state (name, value) VALUES (?, ?)",
                             ("spend_limits", json.dumps([v.to_json() for v in views])))
            if self._db.in_transaction:
                self._db.commit()
        except sqlite3.Error as exc:
            log.warning("billing.spend_limits_not_stored", error=str(exc))

    def _wants_analytics(self, now: datetime) -> bool:
        if self.api == "legacy":
            return False
        return self.api == "analytics" or self._legacy_until is None or now >= self._legacy_until

    def _fall_back(self, exc: AdminApiHTTPError, now: datetime) -> None:
        """``auto``: the analytics API refused; read the legacy one until ANALYTICS_RETRY has passed."""
        first = self._legacy_until is None
        self._legacy_until = now + ANALYTICS_RETRY
        self._fallbacks += 1
        if first:
            log.warning("billing.analytics_api_unavailable", code=exc.status, error_type=exc.error_type,
                        error=exc.api_message, falling_back_to="legacy",
                        retry_after_s=ANALYTICS_RETRY.total_seconds(),
                        hint="HIPAA-ready organisations (400) and keys without read:analytics (403) cannot use "
                             "the Usage and Cost Analytics API; billed spend comes from the legacy reports")
        else:
            log.info("billing.analytics_api_still_unavailable", code=exc.status,
                     retry_after_s=ANALYTICS_RETRY.total_seconds())

    def _analytics_snapshot(self, complete_hour: datetime | None, *, up: bool = True,
                            last_success: float | None = None) -> BillingSnapshot:
        cost = tuple(r for d in sorted(self._analytics_cost) for r in self._analytics_cost[d])
        days = _analytics_days(cost)
        return BillingSnapshot(
            cost_rows=MappingProxyType({d: days.get(d, ()) for d in sorted(self._analytics_cost)}),
            usage_rows=_analytics_usage_rows(r for d in sorted(self._analytics_usage)
                                             for r in self._analytics_usage[d]),
            claude_code_rows=self._claude_code,
            complete_through=complete_hour,
            up=up,
            last_success=self._wall() if up else last_success,
            api="analytics",
            analytics_cost=cost,
        )

    def _mark_down(self, exc: BaseException, *, bug: bool = False) -> None:
        """Keep the last values, marked down, with the failure; one log line for the failed poll."""
        previous = self._snapshot
        reason = getattr(exc, "reason", "error") if not bug else "internal_error"
        error = str(exc) if isinstance(exc, AdminApiError) else f"{type(exc).__name__}: {exc}"
        try:
            requests, refusals = self._requests(), self._refusals()
        except Exception:  # noqa: BLE001 - marking down must not fail in turn
            requests, refusals = previous.requests, previous.refusals
        self._snapshot = replace(previous, up=False, requests=requests, refusals=refusals, error=error,
                                 fallbacks=self._fallbacks).warm()
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
        settled = settled_days(self._db, report) - self._refetch[report]
        return next((d for d in days_between(start, today) if d not in settled), today - timedelta(days=1))

    def _fetch(self, start: date, today: date) -> _Fetched:
        """All API reads of one cycle; nothing is stored unless every read succeeds."""
        if self.client is None:
            raise RuntimeError("a poller built to restore stored days cannot poll")
        tomorrow = today + timedelta(days=1)
        cost_from = min(self._first_unsettled("cost", start, today), today - timedelta(days=1))
        cost = self.client.cost_report(day_start(cost_from), day_start(tomorrow), limit=self.cost_page_limit)
        usage_from = min(self._first_unsettled("usage", start, today), today - timedelta(days=1))
        usage = self.client.usage_report(day_start(usage_from), day_start(tomorrow), "1h")
        claude_code: list[ClaudeCodeRow] | None = None
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
        with _stored(db):
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
                ("api", "legacy"),
                ("complete_through", self._complete_through(now).isoformat()),
                ("last_success", repr(self._wall())),
            ])

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

    def _fetch_analytics(self, start: date, today: date, now: datetime) -> _AnalyticsFetched:
        """The analytics reads of one cycle: by the day for older days not yet settled, by the hour for
        yesterday and today (still revised); each range at most 31 days."""
        if self.client is None:
            raise RuntimeError("a poller built to restore stored days cannot poll")
        yesterday = today - timedelta(days=1)
        settled = (settled_days(self._db, ANALYTICS_COST) & settled_days(self._db, ANALYTICS_USAGE)) - (
            self._refetch[ANALYTICS_COST] | self._refetch[ANALYTICS_USAGE])
        older = [d for d in days_between(start, yesterday) if d not in settled]
        cost: list[AnalyticsCostRow] = []
        usage: list[AnalyticsUsageRow] = []
        refreshed: list[datetime] = []
        spans: list[tuple[datetime, datetime, str]] = []
        if older:
            first = older[0]
            while first < yesterday:
                last = min(yesterday, first + timedelta(days=ANALYTICS_SPAN_DAYS))
                spans.append((day_start(first), day_start(last), "1d"))
                first = last
        spans.append((day_start(yesterday), floor_hour(now) + timedelta(hours=1), "1h"))
        for lo, hi, width in spans:
            c = self.client.analytics_cost(lo, hi, width, group_by=self.cost_groups)
            u = self.client.analytics_usage(lo, hi, width, group_by=ANALYTICS_USAGE_GROUPS)
            cost += c.rows
            usage += u.rows
            refreshed += [t for t in (c.refreshed_at, u.refreshed_at) if t is not None]
        # the bill is complete up to the hour its data was refreshed in (an hour back when it does not say)
        complete = floor_hour(min([*refreshed, now]) if refreshed else now - timedelta(hours=1))
        claude_code: list[ClaudeCodeRow] | None = None
        if self.claude_code_report:
            claude_code = []
            for d in (yesterday, today):
                claude_code += self.client.claude_code_report(d)
        days = tuple(days_between(older[0] if older else yesterday, today + timedelta(days=1)))
        return _AnalyticsFetched(days, cost, usage, complete, claude_code)

    def _store_analytics(self, f: _AnalyticsFetched, now: datetime, today: date) -> None:
        """Replace the fetched days' analytics rows and mark them, in one transaction."""
        db = self._db
        settled_before = today - timedelta(days=1)
        first, last = f.days[0].isoformat(), f.days[-1].isoformat()
        with _stored(db):
            for report, table in ((ANALYTICS_COST, "billed_analytics_cost"), (ANALYTICS_USAGE, "billed_analytics_usage")):
                db.execute(f"DELETE FROM {table} WHERE day >= ? AND day <= ?", (first, last))
                db.executemany(
                    "INSERT OR REPLACE INTO billed_days (report, day, fetched_at, settled) VALUES (?, ?, ?, ?)",
                    [(report, d.isoformat(), now.isoformat(), int(d < settled_before)) for d in f.days])
            db.executemany(f"INSERT INTO billed_analytics_cost ({ANALYTICS_COST_COLUMNS}) VALUES "
                           f"({', '.join('?' * 16)})", [analytics_cost_values(r) for r in f.cost])
            db.executemany(f"INSERT INTO billed_analytics_usage ({ANALYTICS_USAGE_COLUMNS}) VALUES "
                           f"({', '.join('?' * 14)})", [analytics_usage_values(r) for r in f.usage])
            db.executemany("INSERT OR REPLACE INTO billed_state (name, value) VALUES (?, ?)", [
                ("api", "analytics"),
                ("complete_hour", f.complete_hour.isoformat()),
                ("last_success", repr(self._wall())),
            ])

    def _apply_analytics(self, f: _AnalyticsFetched, start: date, today: date) -> None:
        cost: dict[date, list[AnalyticsCostRow]] = {d: [] for d in f.days}
        for r in f.cost:
            cost.setdefault(r.start.date(), []).append(r)
        usage: dict[date, list[AnalyticsUsageRow]] = {d: [] for d in f.days}
        for u in f.usage:
            usage.setdefault(u.start.date(), []).append(u)
        self._analytics_cost.update({d: tuple(rows) for d, rows in cost.items()})
        self._analytics_usage.update({d: tuple(rows) for d, rows in usage.items()})
        for held in (self._analytics_cost, self._analytics_usage):
            for d in [d for d in held if d < start or d > today]:
                del held[d]
        for report in (ANALYTICS_COST, ANALYTICS_USAGE):
            self._refetch[report].difference_update(f.days)
        if f.claude_code is not None:
            self._claude_code = tuple(f.claude_code)

    def _restore(self) -> BillingSnapshot:
        """The snapshot a restart begins with: stored days, marked down until a poll succeeds."""
        now = self._clock().astimezone(UTC)
        today = now.date()
        start = self.window_start(now)
        end = today + timedelta(days=1)
        cost, refused_cost = load_cost_rows_refused(self._db, start, end)
        self._cost = {d: tuple(rows) for d, rows in cost.items()}
        usage_days = set()
        for (d,) in self._db.execute("SELECT day FROM billed_days WHERE report = 'usage' AND day >= ? AND day < ?",
                                     (start.isoformat(), end.isoformat())):
            try:
                usage_days.add(date.fromisoformat(d))
            except (TypeError, ValueError):
                continue
        usage_rows, refused_usage = load_usage_rows(self._db, start, end)
        usage: dict[date, list[UsageRow]] = {d: [] for d in usage_days - refused_usage}
        for u in usage_rows:
            usage.setdefault(u.day, []).append(u)
        self._usage = {d: tuple(rows) for d, rows in usage.items()}
        self._refetch = {"cost": refused_cost, "usage": refused_usage}
        for endpoint, days in (("cost_report", refused_cost), ("usage_report", refused_usage)):
            if days:
                self._stored_refusals[(endpoint, STORED_REASON)] += len(days)
        state = stored_state(self._db)
        complete = _stored_time(state.get("complete_through"))
        last = _stored_float(state.get("last_success"))
        acost, refused_acost = load_analytics_cost(self._db, start, end)
        ausage, refused_ausage = load_analytics_usage(self._db, start, end)
        self._analytics_cost = {d: tuple(rows) for d, rows in acost.items()}
        self._analytics_usage = {d: tuple(rows) for d, rows in ausage.items()}
        self._refetch[ANALYTICS_COST], self._refetch[ANALYTICS_USAGE] = refused_acost, refused_ausage
        for endpoint, days in (("analytics_cost", refused_acost), ("analytics_usage", refused_ausage)):
            if days:
                self._stored_refusals[(endpoint, STORED_REASON)] += len(days)
        views = _stored_limits(state.get("spend_limits"))
        self._limits = tuple(v.limit for v in views)
        if state.get("api") == "analytics" and self.api != "legacy":
            self._in_use = "analytics"
            if self._analytics_cost:
                log.info("billing.restored", api="analytics", days_held=len(self._analytics_cost), last_success=last)
            return replace(self._analytics_snapshot(_stored_time(state.get("complete_hour")), up=False,
                                                    last_success=last),
                           requests=self._requests(), refusals=self._refusals(), spend_limits=views).warm()
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
            spend_limits=views,
        ).warm()


def _stored_limits(value: str | None) -> tuple[LimitView, ...]:
    """The spend limits the last poll stored; none when unreadable (the next poll reads them again)."""
    try:
        return tuple(LimitView.from_json(d) for d in json.loads(value)) if value else ()
    except (ValueError, TypeError, KeyError, ArithmeticError):
        return ()


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
