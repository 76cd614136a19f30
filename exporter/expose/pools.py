"""From a snapshot to per-pool inputs, states and metric families.

The arithmetic lives in :mod:`exporter.budget` (pure); this module only selects each
pool's rows from the snapshot with its PoolMatcher and turns the results into gauges.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.core.breaker import BreakerBoard, BreakerDecision
from exporter.core.budget import DRIFT_WINDOWS, WINDOWS, PoolInputs, PoolMatcher, PoolState, compute_pool
from exporter.config import Config
from exporter.core.pricing import Pricer

CACHED = "Cached: computed at the last log refresh or Admin API poll."
log = structlog.get_logger()
_unpriced_said: set[str] = set()


def _say_unpriced(model: str) -> None:
    """Usage-report tokens of a model with no price are left out of a pool's figures: say so, once."""
    if model not in _unpriced_said:
        _unpriced_said.add(model)
        log.warning("usage_report_model_unpriced", model=model,
                    hint="its billed tokens are left out of usage-report priced spend; add a pricing.overrides entry")


def _hour(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def pool_inputs(matcher: PoolMatcher, snap: Any, pricer: Pricer) -> PoolInputs:
    """One pool's share of the snapshot: billed per day, usage-report and log estimates per hour."""
    estimated: dict[datetime, Decimal] = defaultdict(Decimal)
    if matcher.takes_estimated:
        for (hour, source, model, entrypoint), usd in snap.estimated_hourly.items():
            if matcher.matches_estimated(source, model, entrypoint):
                estimated[_hour(hour)] += usd
    billed: dict[date, Decimal] = {}
    usage: dict[datetime, Decimal] = defaultdict(Decimal)
    complete: date | None = None
    b = snap.billing
    if b is not None and matcher.takes_billed:
        if b.complete_through is not None:
            complete = b.complete_through.astimezone(UTC).date() - timedelta(days=1)
        if matcher.billed_basis == "cost_report":
            for day, rows in b.cost_rows.items():
                billed[day] = sum((r.amount_usd for r in rows if matcher.matches_cost(r.workspace_id, r.model or "")),
                                  Decimal(0))
        for r in b.usage_rows:
            if not matcher.matches_usage(r.workspace_id, r.api_key_id, r.model or ""):
                continue
            prices = pricer.prices(r.model or "", when=r.start.timestamp(), service_tier=r.service_tier or "standard",
                                   inference_geo=r.inference_geo or "")
            if prices is None:
                _say_unpriced(r.model or "")
                continue
            usage[r.start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)] += prices.cost_usd(
                r.tokens, long_context=(r.context_window or "").startswith("200k"))
        if matcher.billed_basis == "usage_report":
            for hour, usd in usage.items():
                billed[hour.date()] = billed.get(hour.date(), Decimal(0)) + usd
    return PoolInputs(billed_by_day=billed, billed_complete_through=complete,
                      usage_priced_by_hour=dict(usage), estimated_by_hour=dict(estimated))


def build_pool_states(config: Config, pricer: Pricer, snap: Any, now: datetime) -> tuple[PoolState, ...]:
    return tuple(compute_pool(p, pool_inputs(PoolMatcher.for_pool(p), snap, pricer), now) for p in config.pools)


def decisions(board: BreakerBoard, states: tuple[PoolState, ...], now: datetime) -> dict[str, BreakerDecision]:
    return {s.pool: board.decide(s.pool, s, now) for s in states}


def pool_metric_families(states: tuple[PoolState, ...], decided: Mapping[str, BreakerDecision]) -> Iterator[Metric]:
    def g(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, f"{doc} {CACHED}", labels=["pool", *(labels or [])])

    credit = g("claude_pool_credit_usd", "Credit of the pool for its current period, USD.")
    spend = g("claude_pool_spend_usd", "Spend this period: billed through the last complete UTC day plus the "
              "drift-calibrated estimate since, USD.")
    remaining = g("claude_pool_remaining_usd", "Credit minus spend, USD; negative is overage.")
    ratio = g("claude_pool_remaining_ratio", "Remaining credit as a fraction of the credit.")
    burn = g("claude_pool_burn_rate_usd_per_hour", "Calibrated spend per hour over the trailing hours.")
    exhaust = g("claude_pool_exhaustion_timestamp_seconds",
                "Unix time the pool runs dry at the current burn rate (absent when nothing burns).")
    projected = g("claude_pool_projected_spend_usd", "Spend at the period's end at the current burn rate, USD.")
    start = g("claude_pool_period_start_timestamp_seconds", "Unix time the pool's current period began.")
    end = g("claude_pool_period_end_timestamp_seconds", "Unix time the pool's current period ends (credit resets).")
    info = g("claude_pool_info", "Pool metadata; always 1.", ["team", "plan", "billed_basis", "estimate_basis"])
    breaker = g("claude_breaker_open", "1 when the pool's circuit breaker is open (threshold or Alertmanager).")
    threshold = g("claude_breaker_threshold_ratio", "Remaining fraction of credit under which the breaker opens.")
    billed = g("claude_billed_spend_usd", "Billed USD matched to the pool, by UTC-day window (today is partial).",
               ["window"])
    estimated = g("claude_estimated_spend_usd", "Estimated USD from local logs (or usage-report tokens at list "
                  "price) matched to the pool, by UTC-day window, uncalibrated.", ["window"])
    drift = g("claude_spend_drift_ratio", "Estimated / billed over complete UTC days where both exist.", ["window"])
    for s in states:
        p = s.pool
        credit.add_metric([p], float(s.credit))
        spend.add_metric([p], float(s.spend))
        remaining.add_metric([p], float(s.remaining))
        if s.remaining_ratio is not None:
            ratio.add_metric([p], float(s.remaining_ratio))
        burn.add_metric([p], float(s.burn_rate_per_hour))
        if s.exhaustion is not None:
            exhaust.add_metric([p], s.exhaustion.timestamp())
        projected.add_metric([p], float(s.projected_spend))
        start.add_metric([p], s.period_start.timestamp())
        end.add_metric([p], s.period_end.timestamp())
        info.add_metric([p, s.team, s.plan or "custom", s.billed_basis, s.estimate_basis], 1)
        d = decided.get(p)
        breaker.add_metric([p], 1 if (d.open if d else s.breaker_open_by_threshold) else 0)
        threshold.add_metric([p], float(s.open_below))
        for w in WINDOWS:
            if s.billed is not None and w in s.billed:
                billed.add_metric([p, w], float(s.billed[w]))
            if w in s.estimated:
                estimated.add_metric([p, w], float(s.estimated[w]))
        for w in DRIFT_WINDOWS:
            v = s.drift.get(w)
            if v is not None:
                drift.add_metric([p, w], float(v))
    yield from (credit, spend, remaining, ratio, burn, exhaust, projected, start, end, info, breaker, threshold,
                billed, estimated, drift)
