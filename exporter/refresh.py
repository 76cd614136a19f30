"""The immutable snapshot that scrapes read, and the refresher that replaces it.

Scrapes never wait on a log folder or the Admin API: the refresher tails the logs
every ``refresh_interval`` and polls the Admin API on its own thread every
``poll_interval``; each builds a new Snapshot (pool states and breaker decisions
included) and swaps one reference. A refresh that fails keeps the previous snapshot's
values and marks its source down; a loop never dies of an error, so /metrics keeps
answering with the last good values. A webhook that changes a breaker amends the
current snapshot at once.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from exporter.logsetup import get_logger

from exporter.billing.poller import BillingPoller, BillingSnapshot
from exporter.config import Config, PoolConfig
from exporter.core.breaker import BreakerBoard, BreakerDecision
from exporter.core.budget import PoolInputs, PoolMatcher, PoolState, compute_pool
from exporter.core.windows import WindowPoolState, WindowReport, window_pool_states
from exporter.core.blocks import Block, HourlyFigures
from exporter.core.pricing import Pricer
from exporter.core.records import TOKEN_TYPES
from exporter.logs.ingestor import PICO, Ingestor, RefreshStats
from exporter.prices import load_pricer
from exporter.state import (AGG_CACHE_READ, AGG_CACHE_WRITE_1H, AGG_CACHE_WRITE_5M, AGG_COST_PICO, AGG_INPUT,
                            AGG_OUTPUT, AGG_REPORTED_PICO, AGG_REQUESTS, AGG_UNPRICED, StateDB)

if TYPE_CHECKING:
    from exporter.config.web import WebhookToken
    from exporter.otlp.view import OtlpSnapshot

log = get_logger()
ADMIN_SOURCE = "admin_api"


@dataclass(frozen=True)
class SourceView:
    name: str
    kind: str
    up: bool
    last_success: float | None
    files: int = 0
    error: str | None = None
    unreadable: int = 0  # files listed that could not be statted
    missing: tuple[str, ...] = ()  # configured paths that do not exist


@dataclass(frozen=True)
class WebhookView:
    """The Alertmanager webhook as of a snapshot: its token, its answers, the alerts it holds."""

    auth_ready: bool = True
    auth_problem: str | None = None  # what the status page warns about while the token cannot be read
    answers: Mapping[int, int] = field(default_factory=dict)  # HTTP status -> calls
    alerts_held: Mapping[str, int] = field(default_factory=dict)  # pool -> firing breaker alerts kept
    alerts_dropped: Mapping[str, int] = field(default_factory=dict)  # reason -> alerts not kept


class WebhookCounts:
    """Answers of the Alertmanager webhook by HTTP status, since the start. Safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_code: dict[int, int] = {}

    def add(self, code: int) -> None:
        with self._lock:
            self.by_code[code] = self.by_code.get(code, 0) + 1

    def copy(self) -> dict[int, int]:
        with self._lock:
            return dict(self.by_code)


@dataclass(frozen=True)
class Snapshot:
    """Everything /metrics, / and /breaker show, as of ``built_at``."""

    built_at: float
    sources: tuple[SourceView, ...] = ()
    estimated_cost: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)  # (source, model label)
    # what the logs themselves said those requests cost (CLI results), where they said anything
    estimated_reported_cost: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)
    estimated_tokens: Mapping[tuple[str, str, str], int] = field(default_factory=dict)  # + token_type
    unpriced_tokens: Mapping[tuple[str, str], int] = field(default_factory=dict)
    log_lines: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # per UTC hour estimated USD, keyed (hour epoch, source, raw model, entrypoint): what pools match on
    estimated_hourly: Mapping[tuple[int, str, str, str], Decimal] = field(default_factory=dict)
    billing: BillingSnapshot | None = None  # when the Admin API is configured: the first organisation's
    billings: tuple[BillingSnapshot, ...] = ()  # every organisation's (several under admin_api: a list)
    pools: tuple[PoolState, ...] = ()
    window_pools: tuple[WindowPoolState, ...] = ()  # pools on a subscription window (rate_limits sources)
    rate_limits: tuple[WindowReport, ...] = ()  # the latest report of each window of the rate_limits sources
    blocks: Mapping[str, Block] = field(default_factory=dict)  # source -> its current 5-hour block, if any
    decisions: Mapping[str, BreakerDecision] = field(default_factory=dict)  # pool -> its breaker, as of built_at
    pool_names: tuple[str, ...] = ()  # every configured pool, computed or not yet
    webhook: WebhookView = field(default_factory=WebhookView)
    model_label: Callable[[str], str] = str  # a model id -> its label from the closed set (the pricer's)
    claude_code_report: bool = False  # whether the Admin API's Claude Code report is polled and shown
    actor_labels: str = "none"  # admin_api.actor_labels: none, top (actor_top_n of them, then other) or hashed
    actor_top_n: int = 20
    refresh_seconds: float = 0.0
    ready: bool = False
    # the state database: False from a failed commit (disk full, read-only) until one succeeds
    state_writable: bool = True
    state_write_errors: int = 0  # failed commits since start
    otlp: OtlpSnapshot | None = None  # the otlp sources' receiver: attributed estimates and what it answered


#: an aggregate row's columns in the order of exporter.core.blocks' figures
BLOCK_COLUMNS = (AGG_REQUESTS, AGG_INPUT, AGG_OUTPUT, AGG_CACHE_READ, AGG_CACHE_WRITE_5M, AGG_CACHE_WRITE_1H,
                 AGG_COST_PICO)
HOURLY_DAYS = 70  # hourly estimates kept in the snapshot: enough for any monthly period and its trailing burn


class EstimatedView:
    """The label-level sums the metrics and pools use, kept current from each commit's deltas.

    Recomputing them from every hourly aggregate on every refresh cost more than the refresh
    itself on a large history; a commit changes a handful of rows.
    """

    def __init__(self, pricer: Pricer) -> None:
        self.pricer = pricer
        self._labels: dict[str, str] = {}
        self.cost: dict[tuple[str, str], int] = defaultdict(int)  # picodollars
        self.reported: dict[tuple[str, str], int] = defaultdict(int)  # picodollars the logs stated
        self.tokens: dict[tuple[str, str, str], int] = defaultdict(int)
        self.unpriced: dict[tuple[str, str], int] = defaultdict(int)
        self.hourly: dict[tuple[int, str, str, str], Decimal] = {}

    def _label(self, model: str) -> str:
        label = self._labels.get(model)
        if label is None:
            label = self._labels[model] = self.pricer.model_label(model)
        return label

    def apply(self, deltas: Mapping[tuple[int, str, str, str], list[int]],
              totals: Mapping[tuple[int, str, str, str], list[int]], since: int) -> None:
        """Add ``deltas`` (a commit's changes, or everything on the first call); ``totals`` are the new rows."""
        for key, v in deltas.items():
            hour, source, model, _entrypoint = key
            label = self._label(model)
            self.cost[(source, label)] += v[AGG_COST_PICO]
            if v[AGG_REPORTED_PICO]:
                self.reported[(source, label)] += v[AGG_REPORTED_PICO]
            for i, tt in enumerate(TOKEN_TYPES):
                self.tokens[(source, label, tt)] += v[AGG_INPUT + i]
            if v[AGG_UNPRICED]:
                self.unpriced[(source, label)] += v[AGG_UNPRICED]
            if hour >= since:
                pico = totals[key][AGG_COST_PICO]
                if pico:
                    self.hourly[key] = Decimal(pico) / PICO
                else:
                    self.hourly.pop(key, None)
        if self.hourly and min(self.hourly)[0] < since:
            self.hourly = {k: v for k, v in self.hourly.items() if k[0] >= since}

    def fields(self, line_counts: Mapping[tuple[str, str], int]) -> dict[str, Any]:
        """The Snapshot fields, as read-only copies."""
        return {
            "estimated_cost": MappingProxyType({k: Decimal(p) / PICO for k, p in self.cost.items()}),
            "estimated_reported_cost": MappingProxyType({k: Decimal(p) / PICO for k, p in self.reported.items() if p}),
            "estimated_tokens": MappingProxyType(dict(self.tokens)),
            "unpriced_tokens": MappingProxyType({k: n for k, n in self.unpriced.items() if n}),
            "log_lines": MappingProxyType(dict(line_counts)),
            "estimated_hourly": MappingProxyType(dict(self.hourly)),
        }


def build_estimated(ing: Ingestor, pricer: Pricer, *, hourly_since: int) -> dict[str, Any]:
    """The Snapshot's estimate fields from all of an ingestor's aggregates (one-shot use: ``check``)."""
    view = EstimatedView(pricer)
    view.apply(ing.aggregates, ing.aggregates, hourly_since)
    return view.fields(ing.line_counts)


# --------------------------------------------------------------------------- pools


_unpriced_said: set[str] = set()


def _say_unpriced(model: str) -> None:
    """Usage-report tokens of a model with no price are left out of a pool's figures: say so, once."""
    if model not in _unpriced_said:
        _unpriced_said.add(model)
        log.warning("usage_report_model_unpriced", model=model,
                    hint="its billed tokens are left out of usage-report priced spend; add a pricing.overrides entry")


def _hour(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _billings(snap: Snapshot) -> tuple[BillingSnapshot, ...]:
    """Every organisation's billing snapshot."""
    return snap.billings or ((snap.billing,) if snap.billing is not None else ())


def pool_inputs(matcher: PoolMatcher, snap: Snapshot, pricer: Pricer) -> PoolInputs:
    """One pool's share of the snapshot: billed per day (and hour), usage-report and log estimates per
    hour, over the organisations it matches (every one when it names none)."""
    estimated: dict[datetime, Decimal] = defaultdict(Decimal)
    if matcher.takes_estimated:
        rows = snap.estimated_hourly
        if matcher.match.telemetry:  # only the otlp sources' rows with those attribute values
            rows = snap.otlp.estimated_hourly(matcher.match.telemetry) if snap.otlp is not None else {}
        for (hour, source, model, entrypoint), usd in rows.items():
            if matcher.matches_estimated(source, model, entrypoint):
                estimated[_hour(hour)] += usd
    orgs = matcher.match.orgs
    parts = [_billed_inputs(matcher, b, pricer) for b in _billings(snap) if not orgs or b.org in orgs]
    return _merged(parts, dict(estimated))


def _billed_inputs(matcher: PoolMatcher, b: BillingSnapshot, pricer: Pricer) -> PoolInputs:
    """One organisation's bill for a pool (no log estimates)."""
    billed: dict[date, Decimal] = {}
    usage: dict[datetime, Decimal] = defaultdict(Decimal)
    complete: date | None = None
    if b.api == "analytics" and matcher.takes_billed:
        return _analytics_inputs(matcher, b)
    if matcher.takes_legacy_billed:
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
            for at, usd in usage.items():
                billed[at.date()] = billed.get(at.date(), Decimal(0)) + usd
    return PoolInputs(billed_by_day=billed, billed_complete_through=complete, usage_priced_by_hour=dict(usage))


def _add(into: dict[Any, Decimal], more: Mapping[Any, Decimal]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, Decimal(0)) + v


def _merged(parts: list[PoolInputs], estimated: dict[datetime, Decimal]) -> PoolInputs:
    """Several organisations' bills as one: summed; complete only as far as every one is. The cutoff
    is on the hour while every organisation bills by the hour, else on the day."""
    if len(parts) <= 1:
        return replace(parts[0], estimated_by_hour=estimated) if parts else PoolInputs(estimated_by_hour=estimated)
    days: dict[date, Decimal] = {}
    hours: dict[datetime, Decimal] = {}
    usage: dict[datetime, Decimal] = {}
    for part in parts:
        _add(days, part.billed_by_day)
        _add(hours, part.billed_by_hour)
        _add(usage, part.usage_priced_by_hour)
    if all(part.analytics for part in parts):
        complete_hour = min((p.billed_complete_hour for p in parts if p.billed_complete_hour is not None),
                            default=None)
        return PoolInputs(billed_by_day=days, usage_priced_by_hour=usage, estimated_by_hour=estimated,
                          analytics=True, billed_by_hour=hours, billed_complete_hour=complete_hour)
    ends = [p.billed_complete_hour.date() - timedelta(days=1) if p.analytics and p.billed_complete_hour is not None
            else p.billed_complete_through for p in parts if p.billed_by_day or p.analytics]
    complete = min((e for e in ends if e is not None), default=None) if all(e is not None for e in ends) else None
    return PoolInputs(billed_by_day=days, billed_complete_through=complete, usage_priced_by_hour=usage,
                      estimated_by_hour=estimated)


def _analytics_inputs(matcher: PoolMatcher, b: BillingSnapshot) -> PoolInputs:
    """A pool's share of the analytics API's bill: every matched row by day, and by the hour for the
    days after the last complete one (the hybrid's cutoff is on the hour). A pool without log sources
    is estimated from the rows' list price (the usage report's tokens at list price, priced by
    Anthropic), so its drift is the discount."""
    days: dict[date, Decimal] = {d: Decimal(0) for d in b.cost_rows}
    hours: dict[datetime, Decimal] = defaultdict(Decimal)
    listed: dict[datetime, Decimal] = defaultdict(Decimal)  # the list price stands for tokens priced at it
    complete = b.complete_through
    recent = complete.astimezone(UTC).replace(hour=0) if complete is not None else None
    for r in b.analytics_cost:
        actor = (r.actor.id, r.actor.email) if r.actor is not None else ()
        if not matcher.matches_analytics(r.workspace_id, r.api_key_id, actor, r.product, r.model or ""):
            continue
        days[r.start.date()] = days.get(r.start.date(), Decimal(0)) + r.amount_usd
        listed[r.start] += r.list_usd
        if recent is not None and r.start >= recent and r.end - r.start <= timedelta(hours=1):
            hours[r.start] += r.amount_usd
    return PoolInputs(billed_by_day=days, usage_priced_by_hour=dict(listed), analytics=True,
                      billed_by_hour=dict(hours), billed_complete_hour=complete)


_limit_missing_said: set[str] = set()


def _spend_limit_of(pool: PoolConfig, snap: Snapshot) -> tuple[Decimal, Decimal, str] | None:
    """(amount USD, spent USD, period) of the pool's spend limit; None (said once) while it is not known."""
    view = next((v for b in _billings(snap) for v in b.spend_limits if v.limit.id == pool.spend_limit), None)
    if view is not None and view.limit.amount is not None and view.spent is not None and view.limit.currency == "USD":
        return view.limit.amount, view.spent, view.limit.period
    key = f"{pool.name}:{pool.spend_limit}"
    if key not in _limit_missing_said:
        _limit_missing_said.add(key)
        log.warning("pool_spend_limit_unknown", pool=pool.name, spend_limit=pool.spend_limit,
                    why="not among the organisation's limits" if view is None else
                    "it has no amount, no known spend, or is not in USD",
                    hint="the pool is left out until the Admin API reports the limit")
    return None


#: pools made from spend limits, at most: a limit per workspace is a closed set, but not a small one
MAX_LIMIT_POOLS = 50
LIMIT_POOL_SCOPES = ("organization", "workspace")


def limit_pools(config: Config, billings: Iterable[BillingSnapshot]) -> tuple[PoolConfig, ...]:
    """With ``admin_api.pools_from_spend_limits``: a pool per organisation and workspace limit in USD that
    no configured pool names, ``limit-<workspace or organization>-<period>`` (``limit-<org>-...`` with
    several organisations), breaking under 5%."""
    wanted = {o.name for o in config.orgs if o.pools_from_spend_limits}
    named = {p.spend_limit for p in config.pools} | {p.name for p in config.pools}
    out: list[PoolConfig] = []
    views = [(b.org, v) for b in billings if b.org in wanted for v in b.spend_limits]
    for org, v in views:
        x = v.limit
        if config.several_orgs and x.scope_type == "organization":
            x = replace(x, scope_id=org)
        if x.scope_type not in LIMIT_POOL_SCOPES or not x.enabled or x.currency != "USD" or x.amount is None:
            continue
        name = re.sub(r"[^A-Za-z0-9._-]", "_", f"limit-{x.scope_id or x.scope_type}-{x.period}")[:63]
        if x.id in named or name in named:
            continue
        named.add(name)
        out.append(PoolConfig(name=name, credit_usd=x.amount, spend_limit=x.id))
        if len(out) == MAX_LIMIT_POOLS:
            break
    return tuple(out)


def build_pool_states(config: Config, pricer: Pricer, snap: Snapshot, now: datetime) -> tuple[PoolState, ...]:
    """Every pool's state; a pool on a spend limit the Admin API has not reported is left out."""
    out = []
    for p in (*config.pools, *limit_pools(config, _billings(snap))):
        if p.window is not None:
            continue  # a subscription window: window_pool_states
        inputs = pool_inputs(PoolMatcher.for_pool(p), snap, pricer)
        if p.spend_limit is not None:
            limit = _spend_limit_of(p, snap)
            if limit is None:
                continue
            inputs = replace(inputs, spend_limit=limit)
        out.append(compute_pool(p, inputs, now))
    return tuple(out)



# --------------------------------------------------------------------------- the refresher


class Refresher:
    """Fills the snapshot once at start, then on its interval; keeps the old one on failure."""

    def __init__(
        self,
        config: Config,
        *,
        state_dir: Any = None,
        clock: Callable[[], float] = time.time,
        pricer: Pricer | None = None,
        billing_poller: BillingPoller | None = None,
        board: BreakerBoard | None = None,
        webhook_token: WebhookToken | None = None,
        webhook_answers: WebhookCounts | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.pricer = pricer or load_pricer(config.price_overrides)
        # the owner's connection: a corrupt database is moved aside and rebuilt from the logs
        self.state, self.ingestor = StateDB.open_or_rebuild(
            state_dir or config.state_dir,
            lambda db: Ingestor(config.sources, db, self.pricer, clock=clock, watch=True))
        self.billing_pollers: tuple[BillingPoller, ...] = (billing_poller,) if billing_poller is not None else ()
        self.board = board if board is not None else BreakerBoard([p.name for p in config.pools])
        self.webhook_token = webhook_token
        self.webhook_answers = webhook_answers if webhook_answers is not None else WebhookCounts()
        self._lock = threading.Lock()
        self._snapshot = Snapshot(built_at=clock())
        self._estimated: dict[str, Any] = {}
        self._view: EstimatedView | None = None
        self._sources: tuple[SourceView, ...] = ()
        self._rate_limits: tuple[WindowReport, ...] = self.ingestor.rate_limits.reports()
        self._hours = HourlyFigures()  # per source, the last days by the hour: the current 5-hour blocks
        self._blocks: dict[str, Block] = {}
        # what the pollers stored before a restart is served until their first poll
        self._billings: tuple[BillingSnapshot, ...] = tuple(p.snapshot for p in self.billing_pollers)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.last_log_refresh: float | None = None
        self.otlp_view: Callable[[], OtlpSnapshot] | None = None  # the otlp sources' receiver, when configured

    def attach_billing(self, *pollers: BillingPoller | None) -> None:
        """Add the Admin API pollers (one per organisation) after the state was opened (and, if
        corrupt, rebuilt) here.

        A poller opens its own connection; it must do so after this refresher's, so that a
        database moved aside is not one a poller still holds.
        """
        self.billing_pollers = tuple(p for p in pollers if p is not None)
        self._billings = tuple(p.snapshot for p in self.billing_pollers)

    @property
    def billing_poller(self) -> BillingPoller | None:
        """The first organisation's poller."""
        return self.billing_pollers[0] if self.billing_pollers else None

    @property
    def _billing(self) -> BillingSnapshot | None:
        return self._billings[0] if self._billings else None

    # ------------------------------------------------------------------ reading

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # ------------------------------------------------------------------ refreshing

    def refresh_logs(self) -> RefreshStats | None:
        started = time.perf_counter()
        stats: RefreshStats | None = None
        error: str | None = None
        try:
            stats = self.ingestor.refresh()
        except Exception as exc:  # noqa: BLE001 - serving must go on; nothing was committed
            error = f"{type(exc).__name__}: {exc}"
            log.error("log_refresh_failed", error=error,
                      state_writable=self.state.writable, state_write_errors=self.state.write_errors)
        now = self.clock()
        if error is None:
            try:
                ing, since = self.ingestor, int(now) - HOURLY_DAYS * 86400
                with ing.lock:  # an OTLP receiver commits between refreshes: every commit's deltas, once
                    deltas = ing.take_deltas()
                    if self._view is None:
                        self._view = EstimatedView(self.pricer)
                        self._view.apply(ing.aggregates, ing.aggregates, since)
                        self._hours = HourlyFigures()
                        self._hours.apply(ing.aggregates, BLOCK_COLUMNS, now)
                    else:
                        self._view.apply(deltas, ing.aggregates, since)
                        self._hours.apply(deltas, BLOCK_COLUMNS, now)
                    self._estimated = self._view.fields(ing.line_counts)
                self._blocks = self._hours.current(now)
                self._rate_limits = ing.rate_limits.reports()
            except Exception as exc:  # noqa: BLE001 - keep the last good values
                self._view = None  # rebuilt from the aggregates next time
                error = f"{type(exc).__name__}: {exc}"
                log.error("estimate_build_failed", error=error)
        sources = []
        for s in self.config.sources:
            st = self.ingestor.status[s.name]
            up = error is None and st.error is None
            sources.append(SourceView(s.name, s.kind, up, st.last_success, st.files, error or st.error,
                                      st.unreadable, st.missing))
        self._sources = tuple(sources)
        self.last_log_refresh = now
        self._publish(time.perf_counter() - started)
        return stats

    def poll_billing(self) -> None:
        """One poll of every organisation, in turn; each keeps its last good values on failure."""
        if not self.billing_pollers:
            return
        snaps = []
        for poller in self.billing_pollers:
            try:
                snaps.append(poller.poll())
            except Exception as exc:  # noqa: BLE001 - the poller keeps its last good values itself
                log.error("billing_poll_failed", org=poller.org, error=f"{type(exc).__name__}: {exc}")
                snaps.append(poller.snapshot)
        self._billings = tuple(snaps)
        self._publish(None)

    def _publish(self, refresh_seconds: float | None) -> None:
        with self._lock:
            now = self.clock()
            sources = self._sources
            several = self.config.several_orgs
            for b in self._billings:
                sources = (*sources, SourceView(f"{ADMIN_SOURCE}:{b.org}" if several else ADMIN_SOURCE, "admin_api",
                                                b.up, b.last_success, error=None if b.up else b.error))
            api = self.config.admin_api
            snap = Snapshot(
                built_at=now,
                sources=sources,
                billing=self._billing,
                billings=self._billings,
                refresh_seconds=self._snapshot.refresh_seconds if refresh_seconds is None else refresh_seconds,
                ready=True,
                state_writable=self.state.writable,
                state_write_errors=self.state.write_errors,
                pool_names=tuple(p.name for p in (*self.config.pools, *limit_pools(self.config, self._billings))),
                model_label=self.pricer.model_label,
                claude_code_report=bool(api and api.claude_code_report),
                actor_labels=api.actor_labels if api else "none",
                actor_top_n=api.actor_top_n if api else 20,
                **self._estimated,
                rate_limits=self._rate_limits,
                blocks=MappingProxyType(self._blocks),
                otlp=self.otlp_view() if self.otlp_view is not None else None,
            )
            snap = replace(snap, window_pools=window_pool_states(self.config.pools, self._rate_limits,
                                                                 datetime.fromtimestamp(now, UTC)))
            try:
                snap = replace(snap, pools=build_pool_states(self.config, self.pricer, snap,
                                                             datetime.fromtimestamp(now, UTC)))
            except Exception as exc:  # noqa: BLE001
                log.error("pool_computation_failed", error=f"{type(exc).__name__}: {exc}")
                snap = replace(snap, pools=self._snapshot.pools)
            self._snapshot = self._with_breakers(snap, now)

    def amend_breakers(self) -> Snapshot:
        """Decide the breakers again on the current snapshot (a webhook changed what Alertmanager
        holds open), so /breaker, /metrics and / agree at once; the pools are not recomputed."""
        with self._lock:
            self._snapshot = self._with_breakers(self._snapshot, self.clock())
            return self._snapshot

    def _with_breakers(self, snap: Snapshot, now: float) -> Snapshot:
        at = datetime.fromtimestamp(now, UTC)
        board = self.board
        board.add_pools(snap.pool_names)
        states: tuple[PoolState | WindowPoolState, ...] = (*snap.pools, *snap.window_pools)
        decisions = {s.pool: board.decide(s.pool, s, at) for s in states}
        token = self.webhook_token
        problem = token.problem() if token is not None else None
        webhook = WebhookView(
            auth_ready=problem is None,
            auth_problem=None if problem is None else f"{problem.path} cannot be used ({problem.public})",
            answers=MappingProxyType(self.webhook_answers.copy()),
            alerts_held=MappingProxyType(board.held(at)),
            alerts_dropped=MappingProxyType(dict(board.dropped)),
        )
        return replace(snap, decisions=MappingProxyType(decisions), webhook=webhook)

    # ------------------------------------------------------------------ threads

    def start(self, on_filled: Callable[[], None] | None = None) -> None:
        """First fill in the foreground (so the first scrape has data), then the loops.

        ``on_filled`` runs between the two: the command freezes what the fill loaded out of the
        garbage collector's sight there (a process-wide choice, so the program's, not this module's).
        """
        self.refresh_logs()
        if on_filled is not None:
            on_filled()
        self._spawn("log-refresher", self._log_loop)
        if self.billing_pollers:
            self._spawn("billing-poller", self._billing_loop)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _log_loop(self) -> None:
        while not self._stop.wait(self.config.refresh_interval):
            _guarded("log_refresh", self.refresh_logs)

    def _billing_loop(self) -> None:
        interval = self.config.admin_api.poll_interval if self.config.admin_api else 300.0
        while True:
            _guarded("billing_poll", self.poll_billing)
            if self._stop.wait(interval):
                return

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self.ingestor.close()
        self.state.close()


def _guarded(what: str, fn: Callable[[], Any]) -> None:
    """Run one cycle of a loop; an error (even in logging it) must not end the thread."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        try:
            log.error("refresher_cycle_failed", cycle=what, error=f"{type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001, S110 - stderr itself failing (a full disk under the log file)
            pass
