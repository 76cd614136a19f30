"""Every metric the exporter serves: names, HELP and labels in one table, and the collector
that turns one immutable :class:`~exporter.refresh.Snapshot` into families.

``collect()`` does no I/O, reads no clock and changes nothing: the refresher and the poller
computed everything a scrape shows. Exposition (abridged)::

    # HELP claude_pool_remaining_usd Credit minus spend, USD; negative is overage. ...
    # TYPE claude_pool_remaining_usd gauge
    claude_pool_remaining_usd{pool="agent-sdk"} 12.34
    # TYPE claude_estimated_cost_usd_total counter
    claude_estimated_cost_usd_total{model="claude-sonnet-4-5",source="claude-code"} 187.5
    claude_source_up{source="admin_api"} 1

Labels come from closed sets: configured pools and sources, model families from the price
table (anything else ``other``), reasons and windows named here.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from exporter import __version__, buildinfo
from exporter.billing.poller import BillingSnapshot
from exporter.billing.wire import ANALYTICS_PRODUCTS, API_TOKEN_TYPES
from exporter.billing.store import DEFAULT_WORKSPACE
from exporter.core.breaker import DROP_REASONS, MAX_PER_POOL, MAX_TOTAL
from exporter.core.budget import DRIFT_WINDOWS, WINDOWS
from exporter.core.records import TOKEN_TYPES, Tokens
from exporter.core.blocks import INPUT as BLOCK_INPUT
from exporter.core.windows import STATUSES, judge
from exporter.refresh import Snapshot

__all__ = ["FAMILIES", "ExporterCollector", "MetricSpec", "make_registry"]

CACHED = "Cached: computed by the exporter's last log refresh, not at scrape time."
POOL_CACHED = "Cached: computed at the last log refresh or Admin API poll."
BILLED_CACHED = "Cached from the last successful Admin API poll."
NONE_LABEL = "none"  # a billed row without that dimension
#: one vocabulary for tokens, billed and estimated alike (exporter.core.records.TOKEN_TYPES)
TOKEN_TYPE_HELP = "token_type: input (uncached input), output, cache_read, cache_write_5m, cache_write_1h."


@dataclass(frozen=True)
class MetricSpec:
    """One family as exposed; a counter's name is given without ``_total`` (the client adds it)."""

    name: str
    kind: Literal["gauge", "counter"]
    help: str
    labels: tuple[str, ...] = ()

    def family(self) -> GaugeMetricFamily | CounterMetricFamily:
        cls = GaugeMetricFamily if self.kind == "gauge" else CounterMetricFamily
        return cls(self.name, self.help, labels=list(self.labels))


def _g(name: str, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "gauge", help, labels)


def _c(name: str, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "counter", help, labels)


def _pool(name: str, help: str, *labels: str) -> MetricSpec:
    return _g(name, f"{help} {POOL_CACHED}", "pool", *labels)


BUILD_INFO = _g("claude_exporter_build_info", "The running build of claude-budget-exporter: its version, the source "
                "revision it was built from ('unknown' when it cannot tell) and the Python that runs it; always 1.",
                "version", "revision", "python_version")
# ---- estimates from the local logs
ESTIMATED_COST = _c("claude_estimated_cost_usd",
                    f"Estimated spend in USD from local usage logs at list price, since the state began. {CACHED}",
                    "source", "model")
REPORTED_COST = _c(
    "claude_estimated_reported_cost_usd",
    "What the local logs themselves claimed their requests cost in USD (Claude Code's own client-side "
    "estimate at list price, in CLI results), beside claude_estimated_cost_usd_total for the same requests; "
    f"only sources and models whose logs state a cost. {CACHED}", "source", "model")
ESTIMATED_TOKENS = _c("claude_estimated_tokens",
                      f"Tokens seen in local usage logs, deduplicated per request. {TOKEN_TYPE_HELP} {CACHED}",
                      "source", "model", "token_type")
UNPRICED_TOKENS = _c("claude_unpriced_tokens",
                     f"Tokens of models with no known price: not in any estimate until a price is configured. {CACHED}",
                     "source", "model")
LOG_LINES = _c("claude_log_lines", "Log lines read, by what became of them (counted, duplicate, ignored, "
               f"non_claude or a reject reason). {CACHED}", "source", "result")
REFRESH_SECONDS = _g("claude_refresh_duration_seconds", "Wall time of the last log refresh (tail, dedup, price, commit).")
# ---- sources and state
SOURCE_UP = _g("claude_source_up", "1 when the last refresh or poll of the source succeeded, else 0 (values are "
               "then the last good ones).", "source")
SOURCE_LAST_SUCCESS = _g("claude_source_last_success_timestamp_seconds",
                         "Unix time of the source's last successful refresh or poll.", "source")
SOURCE_FILES = _g("claude_source_files", "Log files the source is tailing.", "source")
SOURCE_UNREADABLE = _g("claude_source_unreadable_files",
                       "Files of the source that could not be statted (a dangling link, a loop of links); the "
                       "source's other files are read, and the log names each.", "source")
STATE_WRITABLE = _g(
    "claude_state_writable",
    "1 when the last commit to the state database succeeded; 0 from a failed one (disk full, read-only "
    "file system, I/O error) until one succeeds. While 0 the values served are the last committed ones.")
STATE_WRITE_ERRORS = _c(
    "claude_state_write_errors",
    "Commits to the state database that failed since the exporter started; nothing of a failed commit is "
    "counted, its lines are read again on the next refresh.")
# ---- pools and breakers
POOL_CREDIT = _pool("claude_pool_credit_usd", "Credit of the pool for its current period, USD.")
POOL_SPEND = _pool("claude_pool_spend_usd", "Spend this period: billed through the last complete UTC day plus the "
                   "drift-calibrated estimate since, USD.")
POOL_REMAINING = _pool("claude_pool_remaining_usd", "Credit minus spend, USD; negative is overage.")
POOL_REMAINING_RATIO = _pool("claude_pool_remaining_ratio", "Remaining credit as a fraction of the credit.")
POOL_BURN = _pool("claude_pool_burn_rate_usd_per_hour", "Calibrated spend per hour over the trailing hours.")
POOL_EXHAUSTION = _pool("claude_pool_exhaustion_timestamp_seconds",
                        "Unix time the pool runs dry at the current burn rate (absent when nothing burns).")
POOL_PROJECTED = _pool("claude_pool_projected_spend_usd", "Spend at the period's end at the current burn rate, USD.")
POOL_PERIOD_START = _pool("claude_pool_period_start_timestamp_seconds", "Unix time the pool's current period began.")
POOL_PERIOD_END = _pool("claude_pool_period_end_timestamp_seconds",
                        "Unix time the pool's current period ends (credit resets).")
POOL_INFO = _pool("claude_pool_info", "Pool metadata; always 1.", "team", "plan", "billed_basis", "estimate_basis")
BREAKER_OPEN = _pool("claude_breaker_open", "1 when the pool's circuit breaker is open (threshold or Alertmanager).")
BREAKER_THRESHOLD = _pool("claude_breaker_threshold_ratio",
                          "Remaining fraction of credit under which the breaker opens.")
POOL_BILLED = _pool("claude_billed_spend_usd",
                    "Billed USD matched to the pool, by UTC-day window (today is partial).", "window")
POOL_ESTIMATED = _pool("claude_estimated_spend_usd", "Estimated USD from local logs (or usage-report tokens at list "
                       "price) matched to the pool, by UTC-day window, uncalibrated.", "window")
POOL_DRIFT = _pool("claude_spend_drift_ratio", "Estimated / billed over complete UTC days where both exist.", "window")
WEBHOOK_AUTH_READY = _g(
    "claude_breaker_webhook_auth_ready",
    "1 when the Alertmanager webhook can check callers: its configured bearer token (breaker_webhook.token_env "
    "or token_file) can be read, or none is configured. 0 when a configured token cannot be read: every "
    "webhook call is then refused with 503 and no alert is applied; the log says why.")
WEBHOOK_REQUESTS = _c(
    "claude_breaker_webhook_requests",
    "Calls to the Alertmanager webhook since the exporter started, by the HTTP status answered "
    "(200 applied; 400 a malformed payload; 401 a missing or wrong credential; 503 a configured token "
    "that cannot be read; 411, 413 and 501 a body refused; 500 a fault of the exporter's).", "code")
BREAKER_ALERTS = _g("claude_breaker_alerts", "Firing breaker alerts from Alertmanager that hold the pool's breaker "
                    f"open (at most {MAX_PER_POOL} per pool are kept).", "pool")
BREAKER_ALERTS_DROPPED = _c(
    "claude_breaker_alerts_dropped",
    "Breaker alerts from Alertmanager not kept since the exporter started, by reason: unknown_pool (no pool of "
    "that name is configured), pool_cap or total_cap (the least recently notified dropped to keep at most "
    f"{MAX_PER_POOL} per pool and {MAX_TOTAL} in all).", "reason")
# ---- the Admin API
BILLED_COST = _g(
    "claude_billed_cost_usd",
    "Billed cost in USD from the Admin API cost report (amount in cents / 100). window: today and "
    "yesterday are UTC days, period is the current UTC calendar month to date (today is partial). "
    f"{TOKEN_TYPE_HELP[:-1]}, or none for a cost that is not tokens (the API's names are mapped to these). "
    f"workspace_id 'default' is the default workspace. product is the surface the analytics API "
    f"attributes it to ('none' from the legacy cost report). {BILLED_CACHED}",
    "window", "workspace_id", "model", "cost_type", "token_type", "product")
BILLED_LIST_COST = _g(
    "claude_billed_list_cost_usd",
    "The same billed cost at list price, before discounts (the analytics API's list_amount; no series from the "
    "legacy cost report). list minus billed is the discount; estimated vs list is counting and pricing. "
    f"{BILLED_CACHED}", "window", "workspace_id", "model", "product")
BILLED_ACTOR_COST = _g(
    "claude_billed_actor_cost_usd",
    "Billed cost in USD per actor the analytics API attributes it to (a user's email, a service account or API "
    "key id), window as claude_billed_cost_usd. Only with admin_api.actor_labels: top keeps the actor_top_n "
    f"largest of the period and sums the rest as 'other'; hashed shows a short stable hash. {BILLED_CACHED}",
    "window", "actor_type", "actor")
SPEND_LIMIT_USD = _g(
    "claude_spend_limit_usd",
    "An Anthropic spend limit in force (Admin API), USD, by scope_type (organization, workspace, user, seat_tier, "
    "rbac_group, organization_service, usage_tier), scope (the workspace id, seat tier, ...; users only under "
    f"admin_api.actor_labels) and period (daily, weekly, monthly; UTC). {BILLED_CACHED}",
    "scope_type", "scope", "period")
SPEND_LIMIT_SPEND_USD = _g(
    "claude_spend_limit_spend_usd",
    "Spend so far in the limit's current period, USD: the member's own figure from the effective report for a user "
    "limit, the billed cost of the scope since the period began for the organisation and a workspace. "
    f"{BILLED_CACHED}", "scope_type", "scope", "period")
SPEND_LIMIT = _g(
    "claude_spend_limit",
    "A spend limit in an organisation billed in another currency than USD, in that currency (never mixed with "
    f"the _usd series). {BILLED_CACHED}", "scope_type", "scope", "period", "currency")
SPEND_LIMIT_SPEND = _g(
    "claude_spend_limit_spend",
    f"Spend so far against a spend limit billed in another currency than USD, in that currency. {BILLED_CACHED}",
    "scope_type", "scope", "period", "currency")
ADMIN_API_MODE = _g(
    "claude_admin_api_mode",
    "Which Admin API the billed series come from: 1 for the one the last poll read (analytics: the Usage and "
    "Cost Analytics API, by the hour; legacy: the cost and usage reports, by the day), 0 for the other.", "api")
ADMIN_API_FALLBACKS = _c(
    "claude_admin_api_fallbacks",
    "Polls on which the analytics API refused (400 for HIPAA-ready organisations, 403 without read:analytics, "
    "404) and admin_api.api auto read the legacy reports instead; it asks the analytics API again an hour later.")
BILLED_TOKENS = _g(
    "claude_billed_tokens",
    "Billed tokens from the Admin API messages usage report (fresher than cost, about 5 minutes behind). "
    "window: today and yesterday are UTC days, period is the current UTC calendar month to date. "
    f"{TOKEN_TYPE_HELP} {BILLED_CACHED}", "window", "workspace_id", "model", "token_type")
BILLED_COMPLETE = _g(
    "claude_billed_complete_through_timestamp_seconds",
    "End of the last complete UTC day the cost report covers, or with the analytics API the end of its last "
    "complete hour (billed spend is final up to here, "
    f"subject to revision of the last day). {BILLED_CACHED}")
ADMIN_REQUESTS = _c("claude_admin_api_requests", "Admin API answers by endpoint and HTTP status code ('error': no "
                    "answer, e.g. timeout or reset).", "endpoint", "code")
ADMIN_REFUSED = _c(
    "claude_admin_api_refused",
    "Admin API answers refused, by endpoint and reason: malformed, out_of_bounds (an amount or count "
    "no real bill has), body_too_large, too_many_rows, too_many_pages, deadline (no whole answer in time), "
    "stored_out_of_bounds (a stored day left out and read again). A refused answer fails the poll and "
    "keeps the last good values.", "endpoint", "reason")
CLAUDE_CODE_COST = _g(
    "claude_code_report_estimated_cost_usd",
    "Estimated Claude Code cost in USD per model from the Admin API Claude Code usage report, "
    f"window today/yesterday (UTC days). {BILLED_CACHED}", "window", "model")
# ---- subscription windows (rate_limits sources: Claude Code's statusline, the Agent SDK's rate_limit_event)
WINDOW_NAMES = "window: five_hour, seven_day, seven_day_opus, seven_day_sonnet, overage."
RATE_LIMIT_USED = _g(
    "claude_rate_limit_used_ratio",
    "Used fraction (0..1) of a subscription window as the source last reported it; 0 once its resets_at has "
    f"passed, until a new report. {WINDOW_NAMES} {CACHED}", "source", "window")
RATE_LIMIT_RESETS = _g("claude_rate_limit_resets_timestamp_seconds",
                       f"Unix time the window resets, as last reported (in the past once it has reset). {CACHED}",
                       "source", "window")
RATE_LIMIT_STATUS = _g(
    "claude_rate_limit_status",
    "1 for the window's status as the Agent SDK last reported it (allowed, allowed_warning, rejected), 0 for the "
    f"others; statusline records carry none. {CACHED}", "source", "window", "status")
RATE_LIMIT_REPORTED = _g("claude_rate_limit_last_report_timestamp_seconds",
                         f"Unix time of the window's last report (the record's own time, else when it was read). "
                         f"{CACHED}", "source", "window")
RATE_LIMIT_STALE = _g(
    "claude_rate_limit_stale",
    "1 when nobody has reported on the window for longer than its length (5 hours, 7 days; overage 30 days): "
    f"its figures are that old, and it has reset since. {CACHED}", "source", "window")
POOL_WINDOW = _pool("claude_pool_window_info",
                    "A pool on a subscription window: the rate_limits source and the window it reads; always 1. "
                    "Its claude_pool_remaining_ratio is 1 minus the window's used fraction.", "source", "window")
# ---- the current 5-hour block of each log source (blocks as ccusage computes them; absent between blocks)
BLOCK = ("The current 5-hour block of the source's requests: it began at the UTC hour of the first request after the "
         "previous block ended and lasts 5 hours; no series between blocks.")
BLOCK_START = _g("claude_block_start_timestamp_seconds", f"{BLOCK} Unix time it began. {CACHED}", "source")
BLOCK_END = _g("claude_block_end_timestamp_seconds", f"{BLOCK} Unix time it ends. {CACHED}", "source")
BLOCK_COST = _g("claude_block_cost_usd", f"{BLOCK} Its estimated USD so far, at list price. {CACHED}", "source")
BLOCK_TOKENS = _g("claude_block_tokens", f"{BLOCK} Its tokens so far. {TOKEN_TYPE_HELP} {CACHED}", "source",
                  "token_type")
BLOCK_REQUESTS = _g("claude_block_requests", f"{BLOCK} Its requests so far. {CACHED}", "source")
BLOCK_BURN = _g("claude_block_burn_rate_usd_per_hour",
                f"{BLOCK} Its USD per hour since it began. {CACHED}", "source")
BLOCK_PROJECTED = _g("claude_block_projected_cost_usd",
                     f"{BLOCK} Its USD at its end at that burn rate. {CACHED}", "source")
# ---- the otlp sources: Claude Code's own telemetry, received over OTLP/HTTP (exporter.otlp)
OTLP_REQUESTS = _c(
    "claude_otlp_requests",
    "OTLP/HTTP requests an otlp source answered since the exporter started, by signal (logs, metrics) and HTTP "
    "status: 200 committed to the state; 400 not an OTLP request; 401 a missing or wrong credential; 413 too "
    "large; 415 another content type or encoding; 503 not stored (the sender retries; nothing of it was kept).",
    "source", "signal", "code")
OTLP_REFUSED = _c(
    "claude_otlp_refused",
    "OTLP requests an otlp source refused whole since the exporter started, by reason: malformed (not an OTLP "
    "request of that signal), bad_encoding (gzip that does not unpack, another Content-Encoding), media_type "
    "(neither protobuf nor JSON), too_large (over max_body_bytes as sent, or four times that unpacked).",
    "source", "signal", "reason")
OTLP_ITEMS = _c(
    "claude_otlp_items",
    "Events and metric points an otlp source received since the exporter started, by what became of them: "
    "counted; duplicate (a retried request's copy, a cumulative point already taken); ignored (Claude Code's "
    "other events and metrics); superseded (a metric point without a session, of a user whose api_request events "
    "count it); or rejected, which the partial-success answer counts: bad_usage, bad_timestamp, bad_temporality.",
    "source", "signal", "result")
TELEMETRY_SPEND = _g(
    "claude_telemetry_spend_usd",
    "Estimated USD of an otlp source by the value of one of its telemetry attributes (sources[].attributes: "
    "team, user.email, ...), window today and yesterday (UTC days) or period (the UTC month to date). Only with "
    "the source's attribute_labels: top keeps the attribute_top_n values of the month and sums the rest as "
    f"'other'; hashed shows a short stable hash. {CACHED}", "source", "window", "attribute", "value")

FAMILIES: tuple[MetricSpec, ...] = tuple(v for v in list(globals().values()) if isinstance(v, MetricSpec))


class ExporterCollector(Collector):
    """Reads the current snapshot once per collection and yields every family from it."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot
        # looked up once, here, not at every scrape (a few file reads at most: see buildinfo)
        self._build = [__version__, buildinfo.revision(), buildinfo.python_version()]

    def describe(self) -> Iterator[Metric]:
        for spec in FAMILIES:
            yield spec.family()

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        build = BUILD_INFO.family()
        build.add_metric(self._build, 1)
        yield build
        yield from _estimated(snap)
        yield from _sources(snap)
        yield from _state(snap)
        yield from _pools(snap)
        yield from _breakers(snap)
        yield from _rate_limits(snap)
        yield from _blocks(snap)
        yield from _otlp(snap)
        today = datetime.fromtimestamp(snap.built_at, UTC).date()
        if len(snap.billings) > 1 or (snap.billings and snap.billings[0].org != "default"):
            yield from _per_org([list(billed_families(b, today, snap.model_label, snap.claude_code_report,
                                                      snap.actor_labels, snap.actor_top_n))
                                 for b in snap.billings], [b.org for b in snap.billings])
        elif snap.billing is not None:
            yield from billed_families(snap.billing, today, snap.model_label, snap.claude_code_report,
                                       snap.actor_labels, snap.actor_top_n)


def make_registry(collector: Collector, *, runtime: bool = True) -> CollectorRegistry:
    """Our own registry (not the client library's global one), with the client library's
    ``process_*`` and ``python_*`` families beside ours unless ``runtime`` is False. Those read
    /proc at scrape time; ours read only the snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    if runtime:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    registry.register(collector)
    return registry


# --------------------------------------------------------------------------- families


def _estimated(snap: Snapshot) -> Iterator[Metric]:
    cost = ESTIMATED_COST.family()
    for (source, model), usd in sorted(snap.estimated_cost.items()):
        cost.add_metric([source, model], float(usd))
    yield cost
    reported = REPORTED_COST.family()
    for (source, model), usd in sorted(snap.estimated_reported_cost.items()):
        reported.add_metric([source, model], float(usd))
    yield reported
    tokens = ESTIMATED_TOKENS.family()
    for (source, model, tt), n in sorted(snap.estimated_tokens.items()):
        tokens.add_metric([source, model, tt], n)
    yield tokens
    unpriced = UNPRICED_TOKENS.family()
    for (source, model), n in sorted(snap.unpriced_tokens.items()):
        unpriced.add_metric([source, model], n)
    yield unpriced
    lines = LOG_LINES.family()
    for (source, result), n in sorted(snap.log_lines.items()):
        lines.add_metric([source, result], n)
    yield lines
    refresh = REFRESH_SECONDS.family()
    refresh.add_metric([], snap.refresh_seconds)
    yield refresh


def _sources(snap: Snapshot) -> Iterator[Metric]:
    up, last, files = SOURCE_UP.family(), SOURCE_LAST_SUCCESS.family(), SOURCE_FILES.family()
    unreadable = SOURCE_UNREADABLE.family()
    for s in snap.sources:
        up.add_metric([s.name], 1 if s.up else 0)
        if s.last_success is not None:
            last.add_metric([s.name], s.last_success)
        if s.kind != "admin_api":
            files.add_metric([s.name], s.files)
            unreadable.add_metric([s.name], s.unreadable)
    yield from (up, last, files, unreadable)


def _state(snap: Snapshot) -> Iterator[Metric]:
    writable = STATE_WRITABLE.family()
    writable.add_metric([], 1 if snap.state_writable else 0)
    errors = STATE_WRITE_ERRORS.family()
    errors.add_metric([], snap.state_write_errors)
    yield from (writable, errors)


def _pools(snap: Snapshot) -> Iterator[Metric]:
    specs = (POOL_CREDIT, POOL_SPEND, POOL_REMAINING, POOL_REMAINING_RATIO, POOL_BURN, POOL_EXHAUSTION,
             POOL_PROJECTED, POOL_PERIOD_START, POOL_PERIOD_END, POOL_INFO, BREAKER_OPEN, BREAKER_THRESHOLD,
             POOL_BILLED, POOL_ESTIMATED, POOL_DRIFT)
    (credit, spend, remaining, ratio, burn, exhaust, projected, start, end, info, breaker, threshold,
     billed, estimated, drift) = fams = [s.family() for s in specs]
    for s in snap.pools:
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
        d = snap.decisions.get(p)
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
    windows = POOL_WINDOW.family()
    for ws in snap.window_pools:
        p = ws.pool
        if ws.headroom is not None:
            ratio.add_metric([p], float(ws.headroom))
        if ws.period_start is not None and ws.period_end is not None:
            start.add_metric([p], ws.period_start.timestamp())
            end.add_metric([p], ws.period_end.timestamp())
        info.add_metric([p, ws.team, "window", "none", "none"], 1)
        d = snap.decisions.get(p)
        breaker.add_metric([p], 1 if (d.open if d else ws.breaker_open_by_threshold) else 0)
        threshold.add_metric([p], float(ws.open_below))
        windows.add_metric([p, ws.source, ws.window], 1)
    yield from fams
    yield windows


def _blocks(snap: Snapshot) -> Iterator[Metric]:
    start, end, cost, tokens, requests, burn, projected = fams = [s.family() for s in (
        BLOCK_START, BLOCK_END, BLOCK_COST, BLOCK_TOKENS, BLOCK_REQUESTS, BLOCK_BURN, BLOCK_PROJECTED)]
    for source, b in sorted(snap.blocks.items()):
        start.add_metric([source], b.start)
        end.add_metric([source], b.end)
        cost.add_metric([source], float(b.cost_usd))
        for token_type, n in zip(TOKEN_TYPES, b.figures[BLOCK_INPUT:BLOCK_INPUT + len(TOKEN_TYPES)], strict=True):
            tokens.add_metric([source, token_type], n)
        requests.add_metric([source], b.requests)
        burn.add_metric([source], float(b.burn_rate_per_hour(snap.built_at)))
        projected.add_metric([source], float(b.projected_usd(snap.built_at)))
    yield from fams


def _rate_limits(snap: Snapshot) -> Iterator[Metric]:
    used, resets, status, reported, stale = fams = [s.family() for s in (
        RATE_LIMIT_USED, RATE_LIMIT_RESETS, RATE_LIMIT_STATUS, RATE_LIMIT_REPORTED, RATE_LIMIT_STALE)]
    for r in snap.rate_limits:
        view = judge(r, snap.built_at)
        labels = [r.source, r.window]
        if view.used is not None:
            used.add_metric(labels, float(view.used))
        if r.resets_at is not None:
            resets.add_metric(labels, r.resets_at)
        if r.status is not None:
            for st in STATUSES:
                status.add_metric([*labels, st], 1 if st == r.status else 0)
        reported.add_metric(labels, r.reported_at)
        stale.add_metric(labels, 1 if view.stale else 0)
    yield from fams


def _breakers(snap: Snapshot) -> Iterator[Metric]:
    hook = snap.webhook
    ready = WEBHOOK_AUTH_READY.family()
    ready.add_metric([], 1 if hook.auth_ready else 0)
    requests = WEBHOOK_REQUESTS.family()
    for code, n in sorted(hook.answers.items()):
        requests.add_metric([str(code)], n)
    held = BREAKER_ALERTS.family()
    for pool in sorted(set(snap.pool_names) | set(hook.alerts_held)):
        held.add_metric([pool], hook.alerts_held.get(pool, 0))
    dropped = BREAKER_ALERTS_DROPPED.family()
    for reason in DROP_REASONS:
        dropped.add_metric([reason], hook.alerts_dropped.get(reason, 0))
    yield from (ready, requests, held, dropped)


def _otlp(snap: Snapshot) -> Iterator[Metric]:
    requests, refused, items, spend = fams = [s.family() for s in (
        OTLP_REQUESTS, OTLP_REFUSED, OTLP_ITEMS, TELEMETRY_SPEND)]
    o = snap.otlp
    if o is not None:
        for labels, n in sorted(o.requests.items()):
            requests.add_metric(list(labels), n)
        for labels, n in sorted(o.refused.items()):
            refused.add_metric(list(labels), n)
        for labels, n in sorted(o.items.items()):
            items.add_metric(list(labels), n)
        for (source, attribute), rows in sorted(_by_attribute(o.spend).items()):
            rule, top_n = o.labels.get(source, ("none", 0))
            name = actor_namer({v: usd for (w, v), usd in rows.items() if w == "period"}, rule, top_n)
            sums: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
            for (window, value), usd in rows.items():
                sums[(window, name(value) or "other")] += usd
            for (window, label), usd in sorted(sums.items()):
                spend.add_metric([source, window, attribute, label], float(usd))
    yield from fams


def _by_attribute(spend: Mapping[tuple[str, str, str, str], Decimal]
                  ) -> dict[tuple[str, str], dict[tuple[str, str], Decimal]]:
    """(source, window, attribute, value) sums as (source, attribute) -> (window, value) -> USD."""
    out: dict[tuple[str, str], dict[tuple[str, str], Decimal]] = defaultdict(dict)
    for (source, window, attribute, value), usd in spend.items():
        out[(source, attribute)][(window, value)] = usd
    return out


def _label(value: str | None) -> str:
    return value if value else NONE_LABEL


def actor_namer(weights: Mapping[str, Decimal], rule: str, top_n: int) -> Callable[[str], str | None]:
    """The label of an actor (its email or tagged id) under admin_api.actor_labels: None (not shown) for
    none; for top, itself among the ``top_n`` heaviest and "other" beyond; for hashed, a short stable hash."""
    if rule == "hashed":
        return lambda who: "h_" + hashlib.sha256(who.encode()).hexdigest()[:12]
    if rule == "top":
        keep = {w for w, _ in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]}
        return lambda who: who if who in keep else "other"
    return lambda who: None


def _actor_cost(snap: BillingSnapshot, today: date, rule: str, top_n: int) -> Iterator[Metric]:
    fam = BILLED_ACTOR_COST.family()
    if rule != "none":
        windows = _windows(today)
        by_actor: dict[tuple[str, str, date], Decimal] = defaultdict(Decimal)
        for r in snap.analytics_cost:
            if r.actor is not None:
                by_actor[(r.actor.kind, r.actor.email or r.actor.id or "unknown", r.start.date())] += r.amount_usd
        period_first = windows[2][1]
        name = actor_namer({k[1]: v for k, v in by_actor.items() if k[2] >= period_first}, rule, top_n)
        for window, first, last in windows:
            sums: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
            for (kind, who, day), usd in by_actor.items():
                if first <= day <= last:
                    sums[(kind.removesuffix("_actor"), name(who) or "other")] += usd
            for (kind, label), usd in sorted(sums.items()):
                fam.add_metric([window, kind, label], float(usd))
    yield fam


def _spend_limits(snap: BillingSnapshot, rule: str, top_n: int) -> Iterator[Metric]:
    fams = {spec.name: spec.family() for spec in (SPEND_LIMIT_USD, SPEND_LIMIT_SPEND_USD, SPEND_LIMIT,
                                                   SPEND_LIMIT_SPEND)}
    emails = {m.user_id: m.email for m in snap.member_spend if m.email}
    name = actor_namer({emails.get(v.limit.scope_id or "", v.limit.scope_id or ""): v.spent or Decimal(0)
                        for v in snap.spend_limits if v.limit.scope_type == "user"}, rule, top_n)
    sums: dict[tuple[str, str, str, str], list[Decimal | None]] = {}
    for v in snap.spend_limits:
        x = v.limit
        if not x.enabled:
            continue
        if x.scope_type == "user":
            scope = name(emails.get(x.scope_id or "", x.scope_id or ""))
            if scope is None:
                continue
        else:
            scope = x.scope_id or x.scope_type
        acc = sums.setdefault((x.scope_type, scope, x.period, x.currency), [Decimal(0), Decimal(0)])
        acc[0] = None if acc[0] is None or x.amount is None else acc[0] + x.amount
        acc[1] = None if acc[1] is None or v.spent is None else acc[1] + v.spent
    for (scope_type, scope, period, currency), (amount, spent) in sorted(sums.items()):
        usd = currency == "USD"
        labels = [scope_type, scope, period] + ([] if usd else [currency])
        if amount is not None:
            fams["claude_spend_limit_usd" if usd else "claude_spend_limit"].add_metric(labels, float(amount))
        if spent is not None:
            fams["claude_spend_limit_spend_usd" if usd else "claude_spend_limit_spend"].add_metric(labels, float(spent))
    yield from fams.values()


#: the cost report's token_type -> the one token_type vocabulary of every series (TOKEN_TYPES);
#: a value already in it stays, anything the API adds later is "other"
_BILLED_TOKEN_TYPE = {**dict(zip(API_TOKEN_TYPES, TOKEN_TYPES, strict=True)), **{t: t for t in TOKEN_TYPES}}


def _token_type(value: str | None) -> str:
    """A closed label: input, output, cache_read, cache_write_5m, cache_write_1h; none; other."""
    if not value:
        return NONE_LABEL
    return _BILLED_TOKEN_TYPE.get(value, "other")


def _product(value: str | None) -> str:
    """A closed label: the documented product surfaces, anything new ``other``."""
    if not value:
        return NONE_LABEL
    return value if value in ANALYTICS_PRODUCTS else "other"


def _windows(today: date) -> tuple[tuple[str, date, date], ...]:
    """(window, first day, last day inclusive): UTC days; period is the calendar month to date."""
    yesterday = today - timedelta(days=1)
    return (("today", today, today), ("yesterday", yesterday, yesterday), ("period", today.replace(day=1), today))


def _per_org(per_org: list[list[Metric]], orgs: list[str]) -> Iterator[Metric]:
    """Several organisations' billed families as one family each, every sample with its ``org``."""
    for families in zip(*per_org, strict=True):
        first = families[0]
        merged = Metric(first.name, first.documentation, first.type)
        for org, fam in zip(orgs, families, strict=True):
            merged.samples.extend(x._replace(labels={**x.labels, "org": org}) for x in fam.samples)
        yield merged


def billed_families(snap: BillingSnapshot, today: date, model_label: Callable[[str], str] = str,
                    include_claude_code: bool = False, actor_labels: str = "none",
                    actor_top_n: int = 20) -> Iterator[Metric]:
    """The Admin API's own families (``claude_source_up`` is the sources' family)."""
    def model_of(model: str | None) -> str:
        return model_label(model) if model else NONE_LABEL

    cost, listed = BILLED_COST.family(), BILLED_LIST_COST.family()
    daily_cost = snap.daily_cost()
    for window, first, last in _windows(today):
        sums: dict[tuple[str, str, str, str, str], Decimal] = defaultdict(Decimal)
        lsums: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
        for (day, ws, model, cost_type, token_type, product), (amount, list_amount) in daily_cost.items():
            if first <= day <= last:
                ws_label, model_label_, product_label = ws or DEFAULT_WORKSPACE, model_of(model), _product(product)
                sums[(ws_label, model_label_, _label(cost_type), _token_type(token_type), product_label)] += amount
                if list_amount is not None:
                    lsums[(ws_label, model_label_, product_label)] += list_amount
        for key, amount in sorted(sums.items()):
            cost.add_metric([window, *key], float(amount))
        for lkey, amount in sorted(lsums.items()):
            listed.add_metric([window, *lkey], float(amount))
    yield cost
    yield listed

    tokens = BILLED_TOKENS.family()
    daily_usage = snap.daily_usage()
    for window, first, last in _windows(today):
        tsums: dict[tuple[str, str], Tokens] = {}
        for (day, ws, model), t in daily_usage.items():
            if first <= day <= last:
                wkey = (ws or DEFAULT_WORKSPACE, model_of(model))
                tsums[wkey] = tsums.get(wkey, Tokens()) + t
        for (ws, model), t in sorted(tsums.items()):
            for token_type, count in zip(TOKEN_TYPES, t.as_tuple(), strict=False):
                tokens.add_metric([window, ws, model, token_type], float(count))
    yield tokens

    complete = BILLED_COMPLETE.family()
    if snap.complete_through is not None:
        complete.add_metric([], snap.complete_through.timestamp())
    yield complete

    yield from _actor_cost(snap, today, actor_labels, actor_top_n)
    yield from _spend_limits(snap, actor_labels, actor_top_n)

    mode = ADMIN_API_MODE.family()
    for api in ("analytics", "legacy"):
        mode.add_metric([api], 1 if snap.api == api else 0)
    yield mode
    fallbacks = ADMIN_API_FALLBACKS.family()
    fallbacks.add_metric([], snap.fallbacks)
    yield fallbacks

    requests = ADMIN_REQUESTS.family()
    for (endpoint, code), n in sorted(snap.requests.items()):
        requests.add_metric([endpoint, code], float(n))
    yield requests

    refused = ADMIN_REFUSED.family()
    for (endpoint, reason), n in sorted(snap.refusals.items()):
        refused.add_metric([endpoint, reason], float(n))
    yield refused

    if include_claude_code:
        cc = CLAUDE_CODE_COST.family()
        for window, first, last in _windows(today)[:2]:
            csums: dict[str, Decimal] = defaultdict(Decimal)
            for r in snap.claude_code_rows:
                if first <= r.day <= last:
                    csums[model_of(r.model)] += r.estimated_cost_usd
            for model, amount in sorted(csums.items()):
                cc.add_metric([window, model], float(amount))
        yield cc
