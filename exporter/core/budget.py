"""Pool arithmetic: period bounds, matching, drift, hybrid spend, remaining credit and forecast.

Pure: no I/O, no clock (``now`` is always passed in), no Prometheus. Money stays ``Decimal``
end to end; nothing is rounded here, exposition rounds.

Rules worth knowing (each is tested):

* **Period.** A pool's period runs from one monthly reset to the next, both at ``reset_time``
  on ``reset_day`` in the pool's time zone. A reset day the month lacks (29-31) means that
  month's last day. Local times are resolved as RFC 5545 does: an ambiguous time (clocks
  going back) is its first occurrence; a time that does not exist (clocks going forward) is
  read with the offset before the gap, i.e. it moves forward by the gap (02:30 in a one-hour
  spring-forward gap is 03:30 new time; a skipped local midnight is the first minute after it).

* **Buckets vs a local period.** Money arrives in UTC buckets: hours (estimates, usage report)
  and days (cost report). A bucket belongs to the period that contains its *midpoint*: a UTC
  hour by its ``hh:30``, a UTC day by its 12:00 UTC. Every bucket lands in exactly one period,
  so periods add up, and a pool whose zone is UTC (the default) is counted exactly. For other
  zones a billed day straddling the reset goes wholly to the side holding most of it (rounding
  the reset to the nearest UTC midnight), while hours stay exact: at the edge of a period the
  cost report has not reached the boundary day yet, so the live figure comes from hours.

* **Drift** = estimated / billed, summed over complete billed days (``<= billed_complete_through``)
  where both series have an entry for the day. Above 1 the estimate overstates the bill.

* **Hybrid spend** = billed for the period's days up to the cutoff (the last complete billed
  day) + the estimate for the period's hours after it, *divided* by the period drift when
  there is one (estimate / drift is what the bill will say). The estimate series is the local
  logs when the pool names sources, else the usage report priced at list price.
"""

from __future__ import annotations

import calendar
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Literal
from zoneinfo import ZoneInfo

from exporter.core import modelnames
from exporter.config import PeriodConfig, PoolConfig, PoolMatch

ZERO = Decimal(0)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

BilledBasis = Literal["analytics", "cost_report", "usage_report", "spend_limit", "none"]
EstimateBasis = Literal["logs", "usage_report", "none"]


# --------------------------------------------------------------------------- periods


def _require_aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, not naive {value!r}")
    return value.astimezone(UTC)


def _reset_instant(year: int, month: int, period: PeriodConfig, tz: ZoneInfo) -> datetime:
    """The UTC instant of the reset in a given local month (fold=0: RFC 5545 resolution)."""
    day = min(period.reset_day, calendar.monthrange(year, month)[1])
    hh, mm = (int(part) for part in period.reset_time.split(":"))
    return datetime(year, month, day, hh, mm, tzinfo=tz).astimezone(UTC)


def _add_months(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


def _local_reset(day: date, period: PeriodConfig, tz: ZoneInfo) -> datetime:
    hh, mm = (int(part) for part in period.reset_time.split(":"))
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=tz).astimezone(UTC)


def period_bounds(period: PeriodConfig, now: datetime) -> tuple[datetime, datetime]:
    """The period containing ``now`` as ``[start, end)`` in aware UTC datetimes.

    A rolling period of N hours is the current UTC hour and the N - 1 before it: its start moves
    on, and its oldest hour drops out, each time the clock passes an hour.
    """
    now = _require_aware(now, "now")
    if period.rolling_hours:
        current = now.replace(minute=0, second=0, microsecond=0)
        return current - (period.rolling_hours - 1) * HOUR, current + HOUR
    tz = ZoneInfo(period.timezone)
    local = now.astimezone(tz)
    if period.every in ("day", "week"):
        step = 1 if period.every == "day" else 7
        first = local.date() - timedelta(days=(local.weekday() - period.weekday) % 7 if step == 7 else 0)
        start = _local_reset(first, period, tz)
        if now < start:
            first -= timedelta(days=step)
            start = _local_reset(first, period, tz)
        return start, _local_reset(first + timedelta(days=step), period, tz)
    this = _reset_instant(local.year, local.month, period, tz)
    if now >= this:
        y, m = _add_months(local.year, local.month, 1)
        return this, _reset_instant(y, m, period, tz)
    y, m = _add_months(local.year, local.month, -1)
    return _reset_instant(y, m, period, tz), this


ROLLING_DRIFT_DAYS = 7  # a rolling pool's drift: the complete billed days of the last week
ROLLING_HOURLY_CHART = 48  # a rolling window up to this many hours is charted by the hour, a longer one by the day


def day_in_period(day: date, start: datetime, end: datetime) -> bool:
    """A UTC day belongs to the period holding its noon (see the module notes)."""
    noon = datetime.combine(day, time(12), tzinfo=UTC)
    return start <= noon < end


def _span_start(start: datetime, end: datetime) -> date:
    """The first UTC day counted in the period by the noon rule."""
    first = start.date()
    return first if day_in_period(first, start, end) else first + DAY


def hour_in_period(hour: datetime, start: datetime, end: datetime) -> bool:
    """A UTC hour bucket belongs to the period holding its midpoint."""
    return start <= hour + HOUR / 2 < end


# --------------------------------------------------------------------------- matching


def matches_model(pattern: str, model: str) -> bool:
    """Whether a pool's ``models:`` entry covers a logged or billed model id: the one reading
    of model names that pricing and the labels use (:func:`exporter.modelnames.matches`).

    ``claude-sonnet-4-5`` covers ``claude-sonnet-4-5-20250929``, ``-latest``, the Vertex
    ``@20250929`` and the Bedrock ``us.anthropic.claude-sonnet-4-5-20250929-v1:0``, but not
    ``claude-sonnet-4-5-1m`` or ``claude-sonnet-4``.
    """
    return modelnames.matches(pattern, model)


def _models_ok(patterns: tuple[str, ...], model: str) -> bool:
    return not patterns or any(matches_model(p, model) for p in patterns)


@dataclass(frozen=True)
class PoolMatcher:
    """Which rows count for a pool (PRODUCT "Matching"); an empty list puts no limit.

    Billed rows count only when the pool names workspaces or api keys, estimated (log) rows
    only when it names sources. ``entrypoints`` narrows log rows only (bills carry none);
    ``models`` narrows everything. The cost report cannot split by API key, so a pool that
    names workspaces takes every matched workspace's cost; its ``api_keys`` then narrow only
    the usage report. A pool with api keys and no workspaces takes no cost-report rows at all:
    its billed spend is the usage report at list price (``billed_basis == "usage_report"``).
    """

    match: PoolMatch

    @classmethod
    def for_pool(cls, pool: PoolConfig) -> PoolMatcher:
        return cls(pool.match)

    @property
    def takes_billed(self) -> bool:
        """Whether any billed row can count: by workspace, key, actor or product (the last two only
        in the analytics API's rows)."""
        m = self.match
        return bool(m.workspaces or m.api_keys or m.actors or m.products)

    @property
    def takes_legacy_billed(self) -> bool:
        """Whether the legacy reports' rows can count: they carry no actor or product."""
        return bool(self.match.workspaces or self.match.api_keys)

    @property
    def takes_estimated(self) -> bool:
        return bool(self.match.sources)

    @property
    def billed_basis(self) -> BilledBasis:
        if self.match.workspaces:
            return "cost_report"
        if self.match.api_keys:
            return "usage_report"
        return "none"

    @property
    def estimate_basis(self) -> EstimateBasis:
        return "logs" if self.match.sources else "usage_report"

    def _workspace_ok(self, workspace_id: str | None) -> bool:
        names = self.match.workspaces
        return not names or (workspace_id if workspace_id is not None else "default") in names

    def matches_estimated(self, source: str, model: str, entrypoint: str = "") -> bool:
        """A local-log aggregate row (``entrypoint`` is "" when the log does not say)."""
        m = self.match
        return (
            source in m.sources
            and (not m.entrypoints or entrypoint in m.entrypoints)
            and _models_ok(m.models, model)
        )

    def matches_cost(self, workspace_id: str | None, model: str) -> bool:
        """A cost-report row; ``workspace_id`` None is the default workspace."""
        return bool(self.match.workspaces) and self._workspace_ok(workspace_id) and _models_ok(
            self.match.models, model)

    def matches_analytics(self, workspace_id: str | None, api_key_id: str | None, actor: tuple[str | None, ...],
                          product: str | None, model: str) -> bool:
        """An analytics row: every dimension the pool names must match. ``actor`` is the row's
        (tagged id, email); a pool's ``actors`` entry matches either."""
        m = self.match
        return (
            self.takes_billed
            and self._workspace_ok(workspace_id)
            and (not m.api_keys or api_key_id in m.api_keys)
            and (not m.actors or any(a is not None and a in m.actors for a in actor))
            and (not m.products or product in m.products)
            and _models_ok(m.models, model)
        )

    def matches_usage(self, workspace_id: str | None, api_key_id: str | None, model: str) -> bool:
        """A usage-report row; ``api_key_id`` None (usage without a key) never matches a key list."""
        m = self.match
        return (
            self.takes_legacy_billed
            and self._workspace_ok(workspace_id)
            and (not m.api_keys or api_key_id in m.api_keys)
            and _models_ok(m.models, model)
        )


# --------------------------------------------------------------------------- inputs / outputs


@dataclass(frozen=True)
class PoolInputs:
    """Everything one pool's arithmetic needs, already filtered by its PoolMatcher.

    ``billed_complete_through`` is the last UTC day the billed source covers completely (the
    cost report; for a pool billed from the usage report, that report's). Hour keys are aware
    datetimes at the start of a UTC hour.
    """

    billed_by_day: Mapping[date, Decimal] = field(default_factory=dict)
    billed_complete_through: date | None = None
    usage_priced_by_hour: Mapping[datetime, Decimal] = field(default_factory=dict)
    estimated_by_hour: Mapping[datetime, Decimal] = field(default_factory=dict)
    #: the analytics API's bill: ``billed_by_day`` hold every billed row (hours summed), these the
    #: hours of the days after the last complete one, billed through ``billed_complete_hour``
    #: (exclusive: the end of the last complete billed hour)
    analytics: bool = False
    billed_by_hour: Mapping[datetime, Decimal] = field(default_factory=dict)
    billed_complete_hour: datetime | None = None
    #: a pool on an Anthropic spend limit: (its amount in USD, its period-to-date spend, its period:
    #: daily, weekly or monthly, UTC); the pool's credit, period and spend are these
    spend_limit: tuple[Decimal, Decimal, str] | None = None


WINDOWS = ("today", "yesterday", "period")
DRIFT_WINDOWS = ("yesterday", "period")


@dataclass(frozen=True)
class SpendBucket:
    """One stretch of a pool's period (a UTC day, or an hour of a short rolling window) as its spend
    counts it: what the status page's chart draws. ``spend_billed + spend_estimated`` over a period's
    buckets is the pool's spend."""

    start: datetime  # aware UTC; the first may begin before the period (a reset that is not at UTC midnight)
    billed: Decimal | None  # the bill of the stretch matched to the pool; None: no bill for it (yet)
    estimated: Decimal  # the estimate of the stretch's hours in the period, uncalibrated
    spend_billed: Decimal  # the part of the pool's spend that is this stretch's bill
    spend_estimated: Decimal  # the part that is its calibrated estimate


@dataclass(frozen=True)
class PoolState:
    """One pool at one moment. Money in USD, ratios as plain fractions, all exact Decimals."""

    pool: str
    team: str
    plan: str
    now: datetime
    credit: Decimal
    open_below: Decimal
    period_start: datetime
    period_end: datetime
    billed_basis: BilledBasis
    estimate_basis: EstimateBasis
    billed: Mapping[str, Decimal] | None  # by window; None when the pool takes no billed spend
    estimated: Mapping[str, Decimal]  # by window, uncalibrated
    drift: Mapping[str, Decimal | None]  # by window; None where undefined
    calibration: Decimal | None  # the divisor applied to the estimate (the period drift), if any
    billed_through: date | None  # last billed day inside spend, None when spend has no billed part
    #: the instant spend is billed up to (the end of ``billed_through``, or with the analytics API the
    #: end of the last complete billed hour); the calibrated estimate counts from there
    billed_until: datetime | None
    spend_billed: Decimal
    spend_estimated: Decimal  # calibrated
    spend: Decimal
    remaining: Decimal  # negative is overage
    remaining_ratio: Decimal | None  # remaining / credit
    burn_rate_per_hour: Decimal  # calibrated, USD/hour
    exhaustion: datetime | None  # when remaining reaches 0 at the burn rate; now if already <= 0
    projected_spend: Decimal  # spend at period end at the burn rate
    breaker_open_by_threshold: bool
    rolling: bool = False  # a rolling window of hours: projected_spend is what the burn fills it with
    #: the period so far, stretch by stretch (oldest first, up to now); none for a pool on a spend limit
    buckets: tuple[SpendBucket, ...] = ()
    bucket_hours: int = 24  # each bucket's length: 24 (UTC days), 1 for a rolling window of up to 48 hours


# --------------------------------------------------------------------------- arithmetic


def _utc_hours(series: Mapping[datetime, Decimal], what: str) -> dict[datetime, Decimal]:
    out: dict[datetime, Decimal] = {}
    for hour, amount in series.items():
        key = _require_aware(hour, f"{what} key")
        out[key] = out.get(key, ZERO) + amount
    return out


def _by_day(hours: Mapping[datetime, Decimal]) -> dict[date, Decimal]:
    out: dict[date, Decimal] = {}
    for hour, amount in hours.items():
        out[hour.date()] = out.get(hour.date(), ZERO) + amount
    return out


def _hours(delta: timedelta) -> Decimal:
    """A timedelta as exact Decimal hours."""
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return Decimal(micros) / Decimal(3_600_000_000)


def _sum(values: Iterable[Decimal]) -> Decimal:
    return sum(values, ZERO)


LIMIT_EVERY = {"daily": "day", "weekly": "week", "monthly": "month"}  # a spend limit's period as a pool's


def _on_spend_limit(pool: PoolConfig, limit: tuple[Decimal, Decimal, str], now: datetime) -> PoolState:
    """A pool whose credit, period and spend are Anthropic's own: a spend limit and its spend so far."""
    amount, spent, length = limit
    start, end = period_bounds(PeriodConfig(every=LIMIT_EVERY[length]), now)
    remaining = amount - spent
    ratio = remaining / amount if amount > 0 else None
    elapsed = _hours(max(now - start, HOUR))
    burn = spent / elapsed  # the period's average: the limit's report has no hours
    exhaustion = now if remaining <= 0 else (now + timedelta(hours=float(remaining / burn)) if burn > 0 else None)
    return PoolState(
        pool=pool.name, team=pool.team, plan=pool.plan, now=now, credit=amount, open_below=pool.open_below,
        period_start=start, period_end=end, billed_basis="spend_limit", estimate_basis="none",
        billed=MappingProxyType({"period": spent}), estimated=MappingProxyType(dict.fromkeys(WINDOWS, ZERO)),
        drift=MappingProxyType(dict.fromkeys(DRIFT_WINDOWS)), calibration=None, billed_through=None,
        billed_until=now, spend_billed=spent, spend_estimated=ZERO, spend=spent, remaining=remaining,
        remaining_ratio=ratio, burn_rate_per_hour=burn, exhaustion=exhaustion,
        projected_spend=spent + burn * _hours(max(end - now, timedelta(0))),
        breaker_open_by_threshold=ratio < pool.open_below if ratio is not None else remaining <= 0,
    )


def drift_ratio(estimated: Decimal, billed: Decimal) -> Decimal | None:
    """estimated / billed; None when there is no bill to compare with."""
    return None if billed == 0 else estimated / billed


def _drift_over(days: Iterable[date], billed: Mapping[date, Decimal],
                est_days: Mapping[date, Decimal]) -> Decimal | None:
    both = [d for d in days if d in billed and d in est_days]
    if not both:
        return None
    return drift_ratio(_sum(est_days[d] for d in both), _sum(billed[d] for d in both))


@dataclass(frozen=True)
class _Series:
    """A pool's money by UTC hour and day, as its matcher and the bill's reach make it."""

    billed_basis: BilledBasis
    estimate_basis: EstimateBasis
    est_hours: dict[datetime, Decimal]
    est_days: dict[date, Decimal]
    billed_days: dict[date, Decimal]
    cutoff: date | None  # the last complete billed day, never today or later
    complete_hour: datetime | None  # analytics: billed hours up to here count after the cutoff day


def _series(pool: PoolConfig, inputs: PoolInputs, now: datetime) -> _Series:
    matcher = PoolMatcher.for_pool(pool)
    yesterday = now.date() - DAY
    billed_basis: BilledBasis = "analytics" if inputs.analytics and matcher.takes_billed else matcher.billed_basis
    estimate_basis = matcher.estimate_basis
    usage_hours = _utc_hours(inputs.usage_priced_by_hour, "usage_priced_by_hour")
    est_hours = (_utc_hours(inputs.estimated_by_hour, "estimated_by_hour") if estimate_basis == "logs"
                 else usage_hours)

    billed_days: dict[date, Decimal]
    if billed_basis in ("cost_report", "analytics"):
        billed_days = dict(inputs.billed_by_day)
    elif billed_basis == "usage_report":
        billed_days = _by_day(usage_hours)
    else:
        billed_days = {}

    cutoff: date | None = None
    complete_hour: datetime | None = None
    if billed_basis == "analytics" and inputs.billed_complete_hour is not None:
        complete_hour = min(_require_aware(inputs.billed_complete_hour, "billed_complete_hour"), now)
        cutoff = min(complete_hour.date() - DAY, yesterday)
    elif billed_basis != "none" and inputs.billed_complete_through is not None:
        cutoff = min(inputs.billed_complete_through, yesterday)
    return _Series(billed_basis, estimate_basis, est_hours, _by_day(est_hours), billed_days, cutoff, complete_hour)


def _burn(est_hours: Mapping[datetime, Decimal], now: datetime, burn_window: timedelta,
          calibration: Decimal | None) -> Decimal:
    """Calibrated estimate over whole hours from floor(now - window) to now, per elapsed hour."""
    burn_from = (now - burn_window).replace(minute=0, second=0, microsecond=0)
    amount = _sum(a for h, a in est_hours.items() if burn_from <= h <= now)
    if calibration is not None:
        amount = amount / calibration
    return amount / _hours(now - burn_from)


def _rolling_pool(pool: PoolConfig, inputs: PoolInputs, now: datetime, burn_window: timedelta) -> PoolState:
    """A pool whose credit covers the last N hours (``period.rolling``).

    Its spend is the calibrated estimate of the window's hours: the bill comes by UTC day (the
    analytics API's by hour, hours late) and cannot say which part of a day lies in a window of
    hours, so a rolling pool shows no billed windows; the drift of the complete billed days of the
    last week calibrates its estimate. Its forecast lets each hour drop out when the window passes
    it: the pool runs dry only if the spend still in the window plus the burn from now reaches the
    credit before enough old spend leaves (in the long run: burn x N hours over the credit).
    """
    hours = pool.period.rolling_hours
    start, end = period_bounds(pool.period, now)
    today, yesterday = now.date(), now.date() - DAY
    series = _series(pool, inputs, now)
    est_hours, est_days, billed_days, cutoff = series.est_hours, series.est_days, series.billed_days, series.cutoff
    drift: dict[str, Decimal | None] = {"yesterday": None, "period": None}
    if series.billed_basis != "none" and cutoff is not None:
        drift["yesterday"] = _drift_over([yesterday] if yesterday <= cutoff else [], billed_days, est_days)
        first = (now - ROLLING_DRIFT_DAYS * DAY).date()
        drift["period"] = _drift_over(sorted(d for d in billed_days if first <= d <= cutoff), billed_days, est_days)
    calibration = drift["period"] if drift["period"] is not None and drift["period"] > 0 else None
    window = [start + i * HOUR for i in range(hours)]
    raw = [est_hours.get(h, ZERO) for h in window]
    buckets = [a / calibration if calibration is not None else a for a in raw]
    spend = _sum(buckets)
    credit = pool.credit_usd
    remaining = credit - spend
    remaining_ratio = remaining / credit if credit > 0 else None
    burn = _burn(est_hours, now, burn_window, calibration)
    step = 1 if hours <= ROLLING_HOURLY_CHART else 24
    grouped: dict[datetime, list[Decimal]] = {}
    for h, a, c in zip(window, raw, buckets, strict=True):
        key = h if step == 1 else h.replace(hour=0)
        acc = grouped.setdefault(key, [ZERO, ZERO])
        acc[0] += a
        acc[1] += c
    chart = tuple(SpendBucket(start=k, billed=None, estimated=v[0], spend_billed=ZERO, spend_estimated=v[1])
                  for k, v in grouped.items())
    return PoolState(
        pool=pool.name, team=pool.team, plan=pool.plan, now=now, credit=credit, open_below=pool.open_below,
        period_start=start, period_end=end, billed_basis=series.billed_basis, estimate_basis=series.estimate_basis,
        buckets=chart, bucket_hours=step,
        billed=None,
        estimated=MappingProxyType({"today": est_days.get(today, ZERO), "yesterday": est_days.get(yesterday, ZERO),
                                    "period": _sum(raw)}),
        drift=MappingProxyType(drift), calibration=calibration, billed_through=None, billed_until=None,
        spend_billed=ZERO, spend_estimated=spend, spend=spend, remaining=remaining, remaining_ratio=remaining_ratio,
        burn_rate_per_hour=burn, exhaustion=rolling_exhaustion(buckets, now, end, credit, burn),
        projected_spend=burn * hours,
        breaker_open_by_threshold=remaining_ratio < pool.open_below if remaining_ratio is not None else remaining <= 0,
        rolling=True,
    )


def rolling_exhaustion(buckets: list[Decimal], now: datetime, end: datetime, credit: Decimal,
                       burn: Decimal) -> datetime | None:
    """When a rolling window's spend first reaches ``credit`` at ``burn`` USD an hour.

    ``buckets`` are the window's hours, oldest first, the last one the hour holding ``now``, which
    ends at ``end``. Hour by hour: the burn fills the newest hour, and at each hour's end the
    oldest leaves the window. After every hour there now has left (N + 1 steps), the window holds
    only the burn, N hours of it at most: if that is under the credit it never runs dry.
    """
    spend = _sum(buckets)
    if spend >= credit:
        return now
    if burn <= 0:
        return None
    window = deque(buckets)
    t, boundary = now, end
    for _ in range(len(buckets) + 2):
        room = credit - spend
        gain = burn * _hours(boundary - t)
        if gain >= room:
            try:
                return t + timedelta(hours=float(room / burn))
            except OverflowError:
                return None
        window[-1] += gain
        spend += gain - window.popleft()
        window.append(ZERO)
        t, boundary = boundary, boundary + HOUR
    return None


def compute_pool(
    pool: PoolConfig,
    inputs: PoolInputs,
    now: datetime,
    *,
    burn_window: timedelta = timedelta(hours=3),
) -> PoolState:
    """The pool's credit, spend, drift, remaining credit and forecast at ``now``."""
    now = _require_aware(now, "now")
    if burn_window <= timedelta(0):
        raise ValueError("burn_window must be positive")
    if inputs.spend_limit is not None:
        return _on_spend_limit(pool, inputs.spend_limit, now)
    if pool.period.rolling_hours:
        return _rolling_pool(pool, inputs, now, burn_window)
    start, end = period_bounds(pool.period, now)
    today = now.date()
    yesterday = today - DAY
    series = _series(pool, inputs, now)
    billed_basis, estimate_basis = series.billed_basis, series.estimate_basis
    est_hours, est_days, billed_days = series.est_hours, series.est_days, series.billed_days
    cutoff, complete_hour = series.cutoff, series.complete_hour

    period_days = sorted(d for d in billed_days.keys() | est_days.keys() if day_in_period(d, start, end))
    complete_period_days = [d for d in period_days if cutoff is not None and d <= cutoff]

    estimated = {
        "today": est_days.get(today, ZERO),
        "yesterday": est_days.get(yesterday, ZERO),
        "period": _sum(a for h, a in est_hours.items() if hour_in_period(h, start, end)),
    }
    billed: dict[str, Decimal] | None = None
    drift: dict[str, Decimal | None] = {"yesterday": None, "period": None}
    if billed_basis != "none":
        billed = {
            "today": billed_days.get(today, ZERO),
            "yesterday": billed_days.get(yesterday, ZERO),
            "period": _sum(billed_days[d] for d in period_days if d in billed_days),
        }
        if cutoff is not None:
            drift["yesterday"] = _drift_over([yesterday] if yesterday <= cutoff else [], billed_days, est_days)
            drift["period"] = _drift_over(complete_period_days, billed_days, est_days)

    # only a positive drift can calibrate: 0 means the logs saw none of a real bill
    calibration = drift["period"] if drift["period"] is not None and drift["period"] > 0 else None

    def calibrated(amount: Decimal) -> Decimal:
        return amount / calibration if calibration is not None else amount

    # hybrid spend, and the same by UTC day for the chart
    billed_part: dict[date, Decimal] = {}
    if billed_basis == "none":
        spend_billed = ZERO
        billed_through = None
        fresh_from = None
    else:
        for d in complete_period_days:
            if d in billed_days:
                billed_part[d] = billed_days[d]
        spend_billed = _sum(billed_days[d] for d in complete_period_days if d in billed_days)
        billed_through = cutoff if cutoff is not None and _span_start(start, end) <= cutoff else None
        fresh_from = datetime.combine(cutoff + DAY, time(0), tzinfo=UTC) if cutoff is not None else None
        if complete_hour is not None and fresh_from is not None and complete_hour > fresh_from:
            # the complete hours of the day after the cutoff are billed too, the rest estimated
            hours_billed = [(h, a) for h, a in _utc_hours(inputs.billed_by_hour, "billed_by_hour").items()
                            if fresh_from <= h < complete_hour and hour_in_period(h, start, end)]
            spend_billed += _sum(a for _h, a in hours_billed)
            for h, a in hours_billed:
                billed_part[h.date()] = billed_part.get(h.date(), ZERO) + a
            fresh_from = complete_hour
    spend_estimated = calibrated(_sum(
        a for h, a in est_hours.items()
        if hour_in_period(h, start, end) and (fresh_from is None or h >= fresh_from)
    ))
    spend = spend_billed + spend_estimated
    chart = _day_buckets(start, now, est_hours, billed_days if billed_basis != "none" else {}, billed_part,
                         fresh_from, calibrated, lambda h: hour_in_period(h, start, end))
    credit = pool.credit_usd
    remaining = credit - spend
    remaining_ratio = remaining / credit if credit > 0 else None

    burn = _burn(est_hours, now, burn_window, calibration)

    exhaustion: datetime | None
    if remaining <= 0:
        exhaustion = now
    elif burn > 0:
        try:
            exhaustion = now + timedelta(hours=float(remaining / burn))
        except OverflowError:
            exhaustion = None  # beyond any calendar: effectively never
    else:
        exhaustion = None
    projected = spend + burn * _hours(max(end - now, timedelta(0)))

    breaker_open = remaining_ratio < pool.open_below if remaining_ratio is not None else remaining <= 0

    return PoolState(
        pool=pool.name, team=pool.team, plan=pool.plan, now=now, credit=credit, open_below=pool.open_below,
        period_start=start, period_end=end, billed_basis=billed_basis, estimate_basis=estimate_basis,
        billed=MappingProxyType(billed) if billed is not None else None,
        estimated=MappingProxyType(estimated), drift=MappingProxyType(drift), calibration=calibration,
        billed_through=billed_through, billed_until=fresh_from if billed_basis != "none" else None,
        spend_billed=spend_billed, spend_estimated=spend_estimated,
        spend=spend, remaining=remaining, remaining_ratio=remaining_ratio, burn_rate_per_hour=burn,
        exhaustion=exhaustion, projected_spend=projected, breaker_open_by_threshold=breaker_open,
        buckets=chart,
    )


def _day_buckets(start: datetime, now: datetime, est_hours: Mapping[datetime, Decimal],
                 billed_days: Mapping[date, Decimal], billed_part: Mapping[date, Decimal],
                 fresh_from: datetime | None, calibrated: Callable[[Decimal], Decimal],
                 in_period: Callable[[datetime], bool]) -> tuple[SpendBucket, ...]:
    """A calendar period's UTC days from its first through today, as its hybrid spend counts them."""
    estimated: dict[date, Decimal] = {}
    fresh: dict[date, Decimal] = {}
    for h, a in est_hours.items():
        if in_period(h) and h <= now:
            estimated[h.date()] = estimated.get(h.date(), ZERO) + a
            if fresh_from is None or h >= fresh_from:
                fresh[h.date()] = fresh.get(h.date(), ZERO) + a
    out = []
    day = start.astimezone(UTC).date()
    while day <= now.date():
        out.append(SpendBucket(start=datetime.combine(day, time(0), tzinfo=UTC), billed=billed_days.get(day),
                               estimated=estimated.get(day, ZERO), spend_billed=billed_part.get(day, ZERO),
                               spend_estimated=calibrated(fresh[day]) if day in fresh else ZERO))
        day += DAY
    return tuple(out)
