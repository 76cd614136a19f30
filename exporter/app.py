"""The composition root: config in, refresher + collector + HTTP routes out."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from prometheus_client.core import Metric

from exporter import logsetup
from exporter.admin_api import AdminApiClient
from exporter.billing import BillingPoller, billed_metric_families, earliest_period_start
from exporter.breaker import BreakerBoard
from exporter.collector import ExporterCollector, make_registry
from exporter.config import Config
from exporter.pools import build_pool_states, decisions, pool_metric_families
from exporter.pricing import Pricer
from exporter.server import ExporterServer, Routes
from exporter.snapshot import Refresher, Snapshot
from exporter.state import StateDB
from exporter.webconfig import WebConfig, load_web_config

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
    pricer = Pricer(config.price_overrides)
    board = BreakerBoard([p.name for p in config.pools])
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

    collector = ExporterCollector(refresher.snapshot, extra=[pool_families, billing_families])
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
        # clock for what the collector derives from it (breaker alerts expiring, the UTC date).
        return (refresher.snapshot(), board.version, int(clock() // 15))

    routes = Routes(registry=registry, healthy=healthy,
                    status_page=lambda: status_page(refresher.snapshot(), board, clock(), config.origin),
                    breaker=breaker, webhook=webhook, webhook_token=config.breaker_webhook.read_token,
                    metrics_version=metrics_version)
    return App(config=config, refresher=refresher, routes=routes)


def status_page(snap: Snapshot, board: BreakerBoard, now: float, origin: str = "") -> str:
    """The landing page: see :mod:`exporter.statuspage`."""
    from exporter.statuspage import render

    return render(snap, decisions(board, snap.pools, datetime.fromtimestamp(now, UTC)), now=now, origin=origin)


