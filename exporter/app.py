"""The composition root: the one place that builds the running parts from a config.

- :func:`build_app`: ``serve``'s parts: the refresher (logs, Admin API poller, pools,
  breakers), the collector, and the :class:`Service` the HTTP server answers from.
- :func:`build_report`: ``report``'s one-shot read of the logs (and of the stored bill).
- :func:`pool_from_state`: ``check``'s pool computed from the state on disk.

The command (:mod:`exporter.cli`) parses arguments, prints and picks exit codes; nothing
here prints.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any


from exporter.logsetup import get_logger
from exporter import logsetup
from exporter.config import AdminApiConfig, Config
from exporter.logs.ingestor import Ingestor
from exporter.prices import load_pricer
from exporter.state import StateDB, StateError

# Only what ``report`` needs is imported here: a cold report pays for every import (the serving
# stack, httpx and prometheus_client cost it 0.2 s), so serve's and check's parts come in their functions.
if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from exporter.billing.poller import BillingPoller
    from exporter.config.web import WebConfig, WebhookToken
    from exporter.core.breaker import BreakerBoard, BreakerDecision
    from exporter.expose.http import ExporterServer
    from exporter.otlp.receiver import OtlpReceiver
    from exporter.otlp.sink import Sink
    from exporter.refresh import Refresher, WebhookCounts

__all__ = ["App", "Service", "build_app", "build_report", "make_billing_poller", "pool_from_state"]

log = get_logger()
METRICS_STEP = 15  # seconds: /metrics is rendered again at least this often (windows, expiring alerts)


def make_billing_poller(config: Config, clock: Callable[[], float],
                        org: AdminApiConfig | None = None, *, retry_for: float | None = None) -> BillingPoller | None:
    """The Admin API poller of one organisation (the first by default); None when no Admin API is
    configured. An organisation whose key cannot be read gets a poller without a client: its source
    is down with the reason, and the billed days stored before are served.

    ``retry_for``: seconds a failing request is retried for (a one-shot ``report``), instead of the
    serving poller's few retries (its next poll comes soon)."""
    from exporter.billing.client import AdminApiClient
    from exporter.billing.poller import BillingPoller, earliest_period_start

    api = org if org is not None else config.admin_api
    if api is None:
        return None
    key = api.read_key()
    problem = None if key else (api.key_problem() or "no admin key")
    if problem is not None:
        log.warning("admin_api_key_missing", org=api.name, reason=problem,
                    consequence=f"the source {admin_source_name(config, api.name)} is down and no bill is fetched",
                    hint="fix admin_api.key_file or key_env and restart")
    else:
        logsetup.register_secret(key)
    client = AdminApiClient(api.base_url, key, retry_for=retry_for) if key else None
    pools = [p for p in config.pools if not p.match.orgs or api.name in p.match.orgs]
    # its own connection: the poller runs in its own thread; several organisations each keep their
    # billed days in a file of their own, so that one's days never replace another's
    conn = billing_connection(config, api.name)
    return BillingPoller(
        client, conn, unavailable=problem,
        clock=lambda: datetime.fromtimestamp(clock(), UTC), wall=clock,
        since=lambda now: earliest_period_start([p.period for p in config.pools], now),
        claude_code_report=api.claude_code_report,
        settle_after=timedelta(seconds=api.settle_after),
        api=api.api,
        actors=any(p.match.actors for p in pools),
        spend_limits=True,
        org=api.name,
    )


def billing_connection(config: Config, org: str, *, readonly: bool = False) -> sqlite3.Connection:
    """Where an organisation's billed days are kept: the state database for a single one, else a
    file of its own beside it (``billing-<name>.sqlite3``)."""
    if not config.several_orgs:
        return StateDB(config.state_dir, readonly=readonly).conn
    path = config.state_dir / f"billing-{org}.sqlite3"
    if readonly:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def make_billing_pollers(config: Config, clock: Callable[[], float], *,
                         retry_for: float | None = None) -> tuple[BillingPoller, ...]:
    """A poller per configured organisation (one whose key cannot be read polls nothing and is down)."""
    return tuple(p for p in (make_billing_poller(config, clock, org, retry_for=retry_for) for org in config.orgs)
                 if p is not None)


def admin_source_name(config: Config, org: str) -> str:
    """The source an organisation's Admin API is: ``admin_api``, or ``admin_api:<name>`` for several."""
    return f"admin_api:{org}" if config.several_orgs else "admin_api"


# --------------------------------------------------------------------------- serve


@dataclass
class Service:
    """What the HTTP server answers from (:class:`exporter.expose.http.ExporterServer`)."""

    config: Config
    refresher: Refresher
    registry: CollectorRegistry
    board: BreakerBoard
    token: WebhookToken
    answers: WebhookCounts
    clock: Callable[[], float] = time.time

    def healthy(self) -> tuple[bool, str]:
        snap = self.refresher.snapshot()
        if not snap.ready:
            return False, "starting: first log refresh not done"
        # the log refresher's own clock: a billing poll also rebuilds the snapshot, and must not
        # make a stuck log refresher look alive
        age = self.clock() - (self.refresher.last_log_refresh or snap.built_at)
        if age > max(120.0, 10 * self.config.refresh_interval):
            return False, f"stale: last refresh {age:.0f}s ago"
        return True, "ok"

    def status_page(self) -> str:
        from exporter.expose.statuspage import render

        snap = self.refresher.snapshot()
        warnings = []
        if snap.webhook.auth_problem is not None:
            warnings.append(f"The Alertmanager breaker webhook refuses every call: {snap.webhook.auth_problem}. "
                            "Alerts cannot open a breaker until it can be read.")
        return render(snap, snap.decisions, now=self.clock(), origin=self.config.origin, warnings=warnings)

    def breaker(self, pool: str) -> tuple[int, dict[str, Any]]:
        if self.config.pool(pool) is None:
            return 404, {"pool": pool, "error": f"no pool named {pool!r}",
                         "pools": [p.name for p in self.config.pools]}
        snap = self.refresher.snapshot()
        decision = snap.decisions.get(pool)
        if decision is None:
            # no spend computed yet (the first refresh of a big history can take a while):
            # "closed" would let paid work start unchecked, so say that it cannot tell
            decision = self.board.decide(pool, None, datetime.fromtimestamp(snap.built_at, UTC))
            if not decision.open:
                return 503, decision.to_json() | {"state": "unknown", "reason": "starting: no spend computed yet"}
        return (503 if decision.open else 200), decision.to_json()

    def webhook(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        now = datetime.fromtimestamp(self.clock(), UTC)
        try:
            n = self.board.apply_webhook(payload, now)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        snap = self.refresher.amend_breakers()
        open_pools = sorted(p for p, d in snap.decisions.items() if d.open)
        log.info("alertmanager_webhook", status=payload.get("status"), breaker_alerts=n, open_pools=open_pools)
        return 200, {"accepted": n, "open_pools": sorted(self.board.open_pools(now))}

    def webhook_token(self) -> str | None:
        return self.token.current()

    def webhook_answered(self, code: int) -> None:
        self.answers.add(code)

    def metrics_version(self) -> tuple[Any, ...]:
        # /metrics is rendered once per version, not per scrape (10k series take ~80 ms to encode):
        # the snapshot (by identity; a webhook that changes a breaker replaces it at once), and a
        # step of the clock for what changes with time alone; a webhook that was applied is urgent
        return (self.refresher.snapshot(), self.board.version, int(self.clock() // METRICS_STEP))


@dataclass
class App:
    config: Config
    refresher: Refresher
    service: Service
    sink: Sink | None = None  # the otlp sources' receiver: what they take, counted once

    def make_server(self, host: str, port: int, web: WebConfig | None = None) -> ExporterServer:
        """The HTTP server; ``web`` defaults to the config's web_config_file (ConfigError if it is bad)."""
        from exporter.config.web import load_web_config
        from exporter.expose.http import ExporterServer

        if web is None:
            web = load_web_config(self.config.web_config_file)
        return ExporterServer(host, port, self.service, web)

    def make_receivers(self, web: WebConfig | None = None) -> list[OtlpReceiver]:
        """A listener per otlp source (with the web config's TLS and basic auth); raises
        exporter.otlp.receiver.ListenError when an address cannot be bound."""
        from exporter.config.web import load_web_config
        from exporter.otlp.receiver import OtlpReceiver

        if self.sink is None:
            return []
        if web is None:
            web = load_web_config(self.config.web_config_file)
        made: list[OtlpReceiver] = []
        try:
            for source in self.config.sources:
                if source.otlp is not None:
                    made.append(OtlpReceiver(source, self.sink, web))
        except OSError:
            for r in made:
                r.shutdown()
            raise
        return made

    def start(self, on_filled: Callable[[], None] | None = None) -> None:
        if self.sink is not None:
            self.sink.start()
        self.refresher.start(on_filled)

    def stop(self) -> None:
        if self.sink is not None:
            self.sink.stop()  # what is queued is committed first
        self.refresher.stop()


def build_app(config: Config, *, clock: Callable[[], float] = time.time) -> App:
    from exporter.config.web import WebhookToken
    from exporter.core.breaker import BreakerBoard
    from exporter.expose.metrics import ExporterCollector, make_registry
    from exporter.refresh import Refresher, WebhookCounts

    pricer = load_pricer(config.price_overrides)
    board = BreakerBoard([p.name for p in config.pools])
    token = WebhookToken(config.breaker_webhook)
    token.ready()  # a token that cannot be read is said in the log at the start, not at the first call
    answers = WebhookCounts()
    refresher = Refresher(config, clock=clock, pricer=pricer, board=board, webhook_token=token,
                          webhook_answers=answers)
    # after the refresher: it opens the state first, and moves a corrupt database aside
    refresher.attach_billing(*make_billing_pollers(config, clock))
    sink = None
    if any(s.otlp is not None for s in config.sources):
        from exporter.otlp.sink import Sink

        sink = Sink(config.sources, config.pools, refresher.ingestor, pricer, clock=clock)
        refresher.otlp_view = sink.snapshot
    registry = make_registry(ExporterCollector(refresher.snapshot))
    service = Service(config=config, refresher=refresher, registry=registry, board=board, token=token,
                      answers=answers, clock=clock)
    return App(config=config, refresher=refresher, service=service, sink=sink)


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class ReportInputs:
    """What ``report`` prints from: the hourly aggregates and the billed USD per stored day."""

    aggregates: Any
    billed_by_day: dict[date, Any]
    owner: bool  # this process owns the state (read and committed); False: a serving exporter does
    first_read: bool  # the state was empty: its big commit was left in the WAL
    state: StateDB


def build_report(config: Config, *, exiting: bool, progress: Callable[[int, int], None] | None,
                 since: date | None, lock_acquired: bool,
                 poll_billed: Callable[[Config, date | None], None]) -> ReportInputs:
    """Read the logs into the state (when this process owns it) and bring the bill up to date.

    ``exiting``: the process ends right after, so a first read's copy from the WAL into the
    database is left to the next commit on this state instead of costing this command 0.1 s.
    Raises StateError or sqlite3.DatabaseError when the state cannot be used.
    """
    pricer = load_pricer(config.price_overrides)
    if lock_acquired:  # only the owner may move a corrupt database aside and rebuild it
        state, ing = StateDB.open_or_rebuild(config.state_dir, lambda db: Ingestor(config.sources, db, pricer))
    else:  # read-only: a serving exporter owns it, perhaps an older one that a migration would break
        state = StateDB(config.state_dir, readonly=True)
        ing = Ingestor(config.sources, state, pricer)
    first_read = lock_acquired and exiting and not ing.files
    if first_read:
        state.defer_checkpoints()
    if lock_acquired:
        ing.refresh(progress=progress)
        if progress:
            progress(-1, -1)
        poll_billed(config, since)
    billed: dict[date, Any] = {}
    if config.several_orgs:  # each organisation's days in a file of its own: summed per day
        from exporter.billing.store import stored_billed_by_day

        for org in config.orgs:
            try:
                conn = billing_connection(config, org.name, readonly=True)
                for day, usd in stored_billed_by_day(conn).items():
                    billed[day] = billed.get(day, 0) + usd
            except sqlite3.Error:
                continue  # never polled: nothing billed to show
    elif state.has_table("billed_cost"):  # only an Admin API poller writes it: logs-only needs no HTTP client
        from exporter.billing.store import stored_billed_by_day

        billed = stored_billed_by_day(state.conn)
    return ReportInputs(aggregates=ing.aggregates, billed_by_day=billed, owner=lock_acquired,
                        first_read=first_read, state=state)


# --------------------------------------------------------------------------- check


def load_billing(conn: sqlite3.Connection, api: str = "auto", org: str = "default") -> Any:
    """The billed days (and spend limits) a poller stored, as a snapshot; None when there are none."""
    from exporter.billing.poller import BillingPoller

    try:
        snap = BillingPoller(None, conn, api=api, org=org).snapshot  # restore only, never polls
    except sqlite3.Error:
        return None
    return snap if (snap.cost_rows or snap.usage_rows or snap.spend_limits) else None


def load_billings(config: Config, state: StateDB) -> tuple[Any, ...]:
    """Every organisation's stored billing snapshot (those with any)."""
    out = []
    for org in config.orgs:
        try:
            conn = state.conn if not config.several_orgs else billing_connection(config, org.name, readonly=True)
        except sqlite3.Error:
            continue
        snap = load_billing(conn, org.api, org.name)
        if snap is not None:
            out.append(snap)
    return tuple(out)


def pool_from_state(config: Config, pool: str, *, clock: Callable[[], float] = time.time) -> BreakerDecision:
    """The pool's breaker from what the state on disk holds (logs read, billed days stored),
    without Alertmanager's alerts (those live in the serving exporter). Raises StateError."""
    from exporter.core.breaker import BreakerBoard
    from exporter.refresh import HOURLY_DAYS, Snapshot, build_estimated, build_pool_states

    state = StateDB(config.state_dir, readonly=True)
    try:
        pricer = load_pricer(config.price_overrides)
        now = clock()
        ing = Ingestor(config.sources, state, pricer, clock=lambda: now)
        billings = load_billings(config, state)
        otlp = None
        if any(s.otlp is not None for s in config.sources):  # pools on telemetry attributes read them too
            from exporter.otlp.sink import stored_snapshot

            otlp = stored_snapshot(state.conn, config.sources, config.pools, now)
        snap = Snapshot(built_at=now, billing=billings[0] if billings else None, billings=billings, ready=True,
                        otlp=otlp, **build_estimated(ing, pricer, hourly_since=int(now) - HOURLY_DAYS * 86400))
    finally:
        state.close()
    at = datetime.fromtimestamp(now, UTC)
    configured = config.pool(pool)
    if configured is not None and configured.window is not None:  # a subscription window: its latest report
        from exporter.core.windows import window_pool_states

        return BreakerBoard().decide(pool, window_pool_states([configured], ing.rate_limits.reports(), at)[0], at)
    st = next((s for s in build_pool_states(config, pricer, snap, at) if s.pool == pool), None)
    if st is None:
        raise StateError(f"pool {pool!r} is on a spend limit the state does not hold yet: run serve with the "
                         "admin key until its first poll")
    return BreakerBoard().decide(pool, st, at)
