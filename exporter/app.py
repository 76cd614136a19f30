"""The composition root: config in, refresher + collector + HTTP routes out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter import logsetup
from exporter.billing.client import AdminApiClient
from exporter.billing.poller import BillingPoller, billed_metric_families, earliest_period_start
from exporter.core.breaker import DROP_REASONS, BreakerBoard
from exporter.expose.metrics import ExporterCollector, make_registry
from exporter.config import Config
from exporter.expose.pools import build_pool_states, decisions, pool_metric_families
from exporter.prices import load_pricer
from exporter.expose.http import ExporterServer, Routes
from exporter.refresh import Refresher, Snapshot
from exporter.state import StateDB
from exporter.config.web import WebConfig, WebhookToken, load_web_config

log = structlog.get_logger()


def make_billing_poller(config: Config, clock: Callable[[], float]) -> BillingPoller | None:
    """The Admin API poller when a key is configured and found; None means logs only."""
    api = config.admin_api
    if api is None:
        return None
    key = api.read_key()
    if not key:
        where = f"file {api.key_file}" if api.key_file else f"${api.key_env}"
        log.warning("admin_api_disabled", reason=f"no admin key in {where}", hint="billed spend needs an admin key")
        return None
    logsetup.register_secret(key)
    client = AdminApiClient(api.base_url, key)
    # its own connection: the poller runs in its own thread
    return BillingPoller(
        client, StateDB(config.state_dir).conn,
        clock=lambda: datetime.fromtimestamp(clock(), UTC), wall=clock,
        since=lambda now: earliest_period_start([p.period for p in config.pools], now),
        claude_code_report=api.claude_code_report,
        settle_after=timedelta(seconds=api.settle_after),
    )


class WebhookCounts:
    """Answers of the Alertmanager webhook by HTTP status, since the start. Safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_code: dict[int, int] = {}
        self.total = 0

    def add(self, code: int) -> None:
        with self._lock:
            self.by_code[code] = self.by_code.get(code, 0) + 1
            self.total += 1


def breaker_metric_families(board: BreakerBoard, token: WebhookToken, answers: WebhookCounts, now: datetime,
                            ) -> Iterator[Metric]:
    """The webhook's own health: its token, its answers, and what the breaker board holds and drops."""
    ready = GaugeMetricFamily(
        "claude_breaker_webhook_auth_ready",
        "1 when the Alertmanager webhook can check callers: its configured bearer token (breaker_webhook.token_env "
        "or token_file) can be read, or none is configured. 0 when a configured token cannot be read: every "
        "webhook call is then refused with 503 and no alert is applied; the log says why.")
    ready.add_metric([], 1 if token.ready() else 0)
    yield ready
    requests = CounterMetricFamily(
        "claude_breaker_webhook_requests",
        "Calls to the Alertmanager webhook since the exporter started, by the HTTP status answered "
        "(200 applied; 400 a malformed payload; 401 a missing or wrong credential; 503 a configured token "
        "that cannot be read; 411, 413 and 501 a body refused; 500 a fault of the exporter's).", labels=["code"])
    for code, n in sorted(answers.by_code.items()):
        requests.add_metric([str(code)], n)
    yield requests
    held = GaugeMetricFamily(
        "claude_breaker_alerts",
        f"Firing breaker alerts from Alertmanager that hold the pool's breaker open (at most {board.max_per_pool} "
        "per pool are kept).", labels=["pool"])
    counts = board.held(now)
    for pool in sorted(set(board.pools or ()) | set(counts)):
        held.add_metric([pool], counts.get(pool, 0))
    yield held
    dropped = CounterMetricFamily(
        "claude_breaker_alerts_dropped",
        "Breaker alerts from Alertmanager not kept since the exporter started, by reason: unknown_pool (no pool of "
        "that name is configured), pool_cap or total_cap (the least recently notified dropped to keep at most "
        f"{board.max_per_pool} per pool and {board.max_total} in all).", labels=["reason"])
    gone = dict(board.dropped)
    for reason in DROP_REASONS:
        dropped.add_metric([reason], gone.get(reason, 0))
    yield dropped


@dataclass
class App:
    config: Config
    refresher: Refresher
    routes: Routes

    def make_server(self, host: str, port: int, web: WebConfig | None = None) -> ExporterServer:
        """The HTTP server; ``web`` defaults to the config's web_config_file (ConfigError if it is bad)."""
        if web is None:
            web = load_web_config(self.config.web_config_file)
        return ExporterServer(host, port, self.routes, web)

    def start(self) -> None:
        self.refresher.start()

    def stop(self) -> None:
        self.refresher.stop()


def build_app(config: Config, *, clock: Callable[[], float] = time.time) -> App:
    pricer = load_pricer(config.price_overrides)
    board = BreakerBoard([p.name for p in config.pools])
    hook_token = WebhookToken(config.breaker_webhook)
    hook_token.ready()  # a token that cannot be read is said in the log at the start, not at the first call
    hook_answers = WebhookCounts()
    refresher = Refresher(
        config, clock=clock, pricer=pricer,
        pool_builder=lambda snap, now: build_pool_states(config, pricer, snap, now),
    )
    # after the refresher: it opens the state first, and moves a corrupt database aside
    refresher.attach_billing(make_billing_poller(config, clock))

    def now() -> datetime:
        return datetime.fromtimestamp(clock(), UTC)

    def pool_families(snap: Snapshot) -> Iterator[Metric]:
        yield from pool_metric_families(snap.pools, decisions(board, snap.pools, now()))

    def billing_families(snap: Snapshot) -> Iterator[Metric]:
        if snap.billing is not None:
            yield from billed_metric_families(snap.billing, now().date(), model_label=pricer.model_label,
                                              include_claude_code=bool(config.admin_api
                                                                       and config.admin_api.claude_code_report))

    def webhook_families(_snap: Snapshot) -> Iterator[Metric]:
        yield from breaker_metric_families(board, hook_token, hook_answers, now())

    collector = ExporterCollector(refresher.snapshot, extra=[pool_families, billing_families, webhook_families])
    registry = make_registry(collector)

    def breaker(pool: str) -> tuple[int, dict[str, Any]]:
        if config.pool(pool) is None:
            return 404, {"pool": pool, "error": f"no pool named {pool!r}",
                         "pools": [p.name for p in config.pools]}
        state = next((s for s in refresher.snapshot().pools if s.pool == pool), None)
        decision = board.decide(pool, state, now())
        if state is None and not decision.open:
            # no spend computed yet (the first refresh of a big history can take a while):
            # "closed" would let paid work start unchecked, so say that it cannot tell
            body = decision.to_json() | {"state": "unknown", "reason": "starting: no spend computed yet"}
            return 503, body
        return (503 if decision.open else 200), decision.to_json()

    def webhook(payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            n = board.apply_webhook(payload, now())
        except ValueError as exc:
            return 400, {"error": str(exc)}
        log.info("alertmanager_webhook", status=payload.get("status"), breaker_alerts=n,
                 open_pools=sorted(board.open_pools(now())))
        return 200, {"accepted": n, "open_pools": sorted(board.open_pools(now()))}

    def healthy() -> tuple[bool, str]:
        snap = refresher.snapshot()
        if not snap.ready:
            return False, "starting: first log refresh not done"
        # the log refresher's own clock: a billing poll also rebuilds the snapshot, and must not
        # make a stuck log refresher look alive
        age = clock() - (refresher.last_log_refresh or snap.built_at)
        if age > max(120.0, 10 * config.refresh_interval):
            return False, f"stale: last refresh {age:.0f}s ago"
        return True, "ok"

    def metrics_version() -> tuple[Any, ...]:
        # /metrics is rendered once per version, not per scrape (10k series take ~80 ms to encode):
        # the snapshot (by identity), the breaker webhooks applied so far, and a 15 s step of the
        # clock for what the collector derives from it (breaker alerts expiring, the UTC date), the
        # webhook's answers so far, and whether its token can be read (a stat of the file, when it is one).
        return (refresher.snapshot(), board.version, int(clock() // 15), hook_answers.total, hook_token.ready())

    routes = Routes(registry=registry, healthy=healthy,
                    status_page=lambda: status_page(refresher.snapshot(), board, clock(), config.origin,
                                                    warnings=_token_warnings(hook_token)),
                    breaker=breaker, webhook=webhook, webhook_token=hook_token.current,
                    webhook_answered=hook_answers.add, metrics_version=metrics_version)
    return App(config=config, refresher=refresher, routes=routes)


def _token_warnings(token: WebhookToken) -> list[str]:
    problem = token.problem()
    if problem is None:
        return []
    return [f"The Alertmanager breaker webhook refuses every call: {problem.path} cannot be used "
            f"({problem.public}). Alerts cannot open a breaker until it can be read."]


def status_page(snap: Snapshot, board: BreakerBoard, now: float, origin: str = "", *,
                warnings: list[str] | None = None) -> str:
    """The landing page: see :mod:`exporter.statuspage`."""
    from exporter.expose.statuspage import render

    return render(snap, decisions(board, snap.pools, datetime.fromtimestamp(now, UTC)), now=now, origin=origin,
                  warnings=warnings or ())


