"""Billed spend from the Usage and Cost Analytics API, against the simulated Admin API over real HTTP.

Every expected figure below is worked out by hand from the spend the test puts in the fake:
amounts are in cents as the API sends them, dollars are cents / 100.
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
import structlog
from prometheus_client import CollectorRegistry, generate_latest

from exporter import logsetup
from exporter.billing.client import AdminApiClient
from exporter.billing.poller import ANALYTICS_RETRY, BillingPoller, BillingSnapshot
from exporter.billing.store import stored_billed_by_day
from exporter.billing.wire import ANALYTICS_BETA, API_VERSION
from exporter.config import Config, PeriodConfig, PoolConfig, PoolMatch
from exporter.expose.metrics import billed_families
from exporter.prices import load_pricer
from exporter.refresh import Snapshot, build_pool_states
from tests.admin_fixtures import KEY, VirtualTime
from tests.conftest import parse_metrics, sample
from tests.fake_admin_api import FakeAdminApi

NOW = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)  # data refreshed at 12:25: complete through 12:00
COMPLETE = datetime(2026, 11, 20, 12, tzinfo=UTC)
ADA, GRACE = ("user_01Ada", "ada@example.com"), ("user_01Grace", "grace@example.com")


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


#: (when, cents, list cents, workspace, key, product, actor) -- the organisation's November
SPEND = [
    (at(31, 23, month=10), "500", "500", None, "apikey_A", "messages_api", None),  # before the window
    (at(3, 10), "1000.25", "1100", None, "apikey_A", "messages_api", None),
    (at(10, 15, 30), "250.5", "300", "wrkspc_1", "apikey_B", "claude_code", ADA),
    (at(19, 23, 59), "99.999", "120", "wrkspc_1", "apikey_B", "claude_code", ADA),
    (at(20, 3, 15), "40.004", "50", "wrkspc_1", "apikey_B", "claude_code", GRACE),
    (at(20, 11, 59), "12.5", "12.5", None, "apikey_A", "messages_api", ("svac_01Bot", None)),
    (at(20, 12, 10), "7", "8", "wrkspc_1", "apikey_B", "claude_code", ADA),  # in the hour not yet complete
    (at(20, 12, 27), "3", "3", None, "apikey_A", "messages_api", None),  # after data_refreshed_at: not shown
]


@pytest.fixture
def fake() -> Iterator[FakeAdminApi]:
    with FakeAdminApi(key=KEY, now=NOW) as f:
        ids = []
        for when, cents, listed, ws, key, product, actor in SPEND:
            ids.append(f.add_spend(when, cents, list_cents=listed, workspace_id=ws, api_key_id=key, product=product,
                                   actor=actor[0] if actor else None, actor_email=actor[1] if actor else None,
                                   token_type="output_tokens", tokens=100, requests=1))
        f.ids = ids  # type: ignore[attr-defined]
        yield f


def make_poller(fake: FakeAdminApi, db: sqlite3.Connection, api: str = "analytics", actors: bool = True,
                **kw) -> BillingPoller:
    vt = VirtualTime()
    client = AdminApiClient(fake.url, KEY, sleep=vt.sleep, clock=vt.clock, timeout=5.0, max_retries=1)
    return BillingPoller(client, db, clock=lambda: fake.now, wall=lambda: fake.now.timestamp(), api=api,
                         settle_after=timedelta(0), actors=actors, **kw)


def scrape(snap: BillingSnapshot, today: date) -> dict:
    reg = CollectorRegistry()
    reg.register(type("C", (), {"collect": lambda self: billed_families(snap, today)})())
    return parse_metrics(generate_latest(reg).decode())


def total(s: dict, name: str, **labels: str) -> Decimal:
    want = set(labels.items())
    return sum((Decimal(repr(v)) for (n, lab), v in s.items() if n == name and want <= set(lab)), Decimal(0))


def pools(snap: BillingSnapshot, *pool_list: PoolConfig) -> dict:
    config = Config(pools=pool_list)
    states = build_pool_states(config, load_pricer(), Snapshot(built_at=NOW.timestamp(), billing=snap), NOW)
    return {s.pool: s for s in states}


def pool(name: str, **match: tuple[str, ...]) -> PoolConfig:
    return PoolConfig(name=name, credit_usd=Decimal(100), period=PeriodConfig(reset_day=1), match=PoolMatch(**match))


def test_billed_spend_by_day_hour_and_product_to_the_cent(fake) -> None:
    snap = make_poller(fake, sqlite3.connect(":memory:")).poll()

    assert snap.up and snap.api == "analytics" and snap.complete_through == COMPLETE
    # by day: 1000.25; 250.5; 99.999; 40.004 + 12.5 + 7 cents (12:27 is past data_refreshed_at)
    assert snap.billed_usd(date(2026, 11, 3)) == Decimal("10.0025")
    assert snap.billed_usd(date(2026, 11, 10)) == Decimal("2.505")
    assert snap.billed_usd(date(2026, 11, 19)) == Decimal("0.99999")
    assert snap.billed_usd(date(2026, 11, 20)) == Decimal("0.59504")
    assert date(2026, 10, 31) not in snap.days  # before the month and every pool period

    m = scrape(snap, NOW.date())
    assert total(m, "claude_billed_cost_usd", window="period") == Decimal("14.10253")
    assert total(m, "claude_billed_cost_usd", window="period", product="claude_code") == Decimal("3.97503")
    assert total(m, "claude_billed_cost_usd", window="today", product="messages_api") == Decimal("0.125")
    # list price: 1100 + 300 + 120 + 50 + 12.5 + 8 cents
    assert total(m, "claude_billed_list_cost_usd", window="period") == Decimal("15.905")
    assert sample(m, "claude_admin_api_mode", api="analytics") == 1
    assert sample(m, "claude_billed_complete_through_timestamp_seconds") == COMPLETE.timestamp()

    # the hourly rows of today: the 03:00 hour holds Grace's 40.004 cents
    hours = {r.start: r.amount_usd for r in snap.analytics_cost if r.end - r.start == timedelta(hours=1)
             and r.start.date() == NOW.date() and r.actor is not None and r.actor.id == GRACE[0]}
    assert hours == {at(20, 3): Decimal("0.40004")}


def test_pools_on_a_key_a_user_and_a_product_are_billed_through_the_last_complete_hour(fake) -> None:
    snap = make_poller(fake, sqlite3.connect(":memory:")).poll()
    got = pools(snap, pool("key-a", api_keys=("apikey_A",)), pool("ada", actors=(ADA[1],)),
                pool("code", products=("claude_code",)), pool("bot", actors=("svac_01Bot",)))

    # key A: 1000.25 + 12.5 cents, all in complete hours; no list price after 12:00
    assert got["key-a"].billed_basis == "analytics"
    assert got["key-a"].spend_billed == Decimal("10.1275") and got["key-a"].spend == Decimal("10.1275")
    assert got["key-a"].billed_until == COMPLETE
    # Ada: 250.5 + 99.999 cents billed; her 12:10 request (list 8 cents) is in the hour not yet complete,
    # so it is estimated at list price, calibrated by her complete days' list / bill (420 / 350.499)
    calibration = Decimal("4.20") / Decimal("3.50499")
    assert got["ada"].spend_billed == Decimal("3.50499")
    assert got["ada"].calibration == calibration
    assert got["ada"].spend == Decimal("3.50499") + Decimal("0.08") / calibration
    # Claude Code: Ada's and Grace's; Grace's 03:15 request today is in a complete hour, so billed
    assert got["code"].spend_billed == Decimal("3.90503")
    assert got["code"].spend == Decimal("3.90503") + Decimal("0.08") / calibration
    # the service account: matched by its tagged id
    assert got["bot"].spend == Decimal("0.125")


def test_steady_state_reads_only_the_recent_hours_and_revisions_replace(fake) -> None:
    db = sqlite3.connect(":memory:")
    poller = make_poller(fake, db)
    poller.poll()
    first = fake.requests
    # the first poll: the older days by the day, yesterday and today by the hour; one page each
    assert [(r.endpoint, r.param("time_bucket_width")) for r in first if r.endpoint.startswith("analytics")] == [
        ("analytics_cost", "1d"), ("analytics_usage", "1d"), ("analytics_cost", "1h"), ("analytics_usage", "1h")]
    assert all(r.params("anthropic-beta") == [] and dict(r.headers)["anthropic-beta"] == ANALYTICS_BETA
               for r in first)
    fake.clear_log()

    fake.revise(fake.ids[4], amount_cents="45")  # Grace's 03:15 line, revised as recent hours are
    fake.advance(timedelta(minutes=5))
    snap = poller.poll()
    again = fake.requests
    assert [(r.endpoint, r.param("starting_at")) for r in again] == [
        ("analytics_cost", "2026-11-19T00:00:00Z"), ("analytics_usage", "2026-11-19T00:00:00Z")]
    # 45 + 12.5 + 7 cents, the old 40.004 gone; and the 12:27 line's 3 cents, refreshed by now
    assert snap.billed_usd(date(2026, 11, 20)) == Decimal("0.675")
    assert stored_billed_by_day(db)[date(2026, 11, 20)] == Decimal("0.675")
    assert snap.billed_usd(date(2026, 11, 3)) == Decimal("10.0025")  # settled: held, not read again

    # a day later, yesterday is read once more by the day and then settled
    fake.clear_log()
    fake.advance(timedelta(days=1))
    snap = poller.poll()
    assert [(r.endpoint, r.param("time_bucket_width"), r.param("starting_at")) for r in fake.requests] == [
        ("analytics_cost", "1d", "2026-11-19T00:00:00Z"), ("analytics_usage", "1d", "2026-11-19T00:00:00Z"),
        ("analytics_cost", "1h", "2026-11-20T00:00:00Z"), ("analytics_usage", "1h", "2026-11-20T00:00:00Z")]
    assert snap.billed_usd(date(2026, 11, 20)) == Decimal("0.675")  # read by the day: the same figure


@pytest.mark.parametrize("status", [400, 403])
def test_auto_falls_back_to_the_legacy_reports_and_tries_again_an_hour_later(fake, status) -> None:
    out = io.StringIO()
    logsetup.configure(fmt="json", stream=out)
    try:
        fake.refuse_analytics(status)
        poller = make_poller(fake, sqlite3.connect(":memory:"), api="auto")
        snap = poller.poll()
        assert snap.up and snap.api == "legacy" and snap.fallbacks == 1
        assert snap.billed_usd(date(2026, 11, 10)) == Decimal("2.505")
        assert fake.count("analytics_cost", status) == 1 and fake.count("cost_report", 200) >= 1

        fake.advance(timedelta(minutes=5))
        assert poller.poll().api == "legacy"
        assert fake.count("analytics_cost") == 1  # not asked again within the hour

        fake.refuse_analytics(None)
        fake.advance(ANALYTICS_RETRY)
        snap = poller.poll()
        assert snap.up and snap.api == "analytics" and snap.fallbacks == 1
        m = scrape(snap, fake.now.date())
        assert sample(m, "claude_admin_api_mode", api="analytics") == 1
        assert sample(m, "claude_admin_api_fallbacks_total") == 1
    finally:
        structlog.reset_defaults()
    said = [ln for ln in out.getvalue().splitlines() if "billing.analytics_api_unavailable" in ln]
    assert len(said) == 1 and f'"code": {status}' in said[0]


def test_analytics_only_marks_the_source_down_when_refused(fake) -> None:
    fake.refuse_analytics(400)
    snap = make_poller(fake, sqlite3.connect(":memory:"), api="analytics").poll()
    assert not snap.up and "HTTP 400" in (snap.error or "") and fake.count("cost_report") == 0


def test_a_restart_restores_the_analytics_days_without_asking(fake) -> None:
    db = sqlite3.connect(":memory:")
    make_poller(fake, db).poll()
    restored = BillingPoller(None, db, clock=lambda: fake.now, api="auto").snapshot
    assert not restored.up and restored.api == "analytics" and restored.complete_through == COMPLETE
    assert restored.billed_usd(date(2026, 11, 20)) == Decimal("0.59504")
    assert sum(r.list_usd for r in restored.analytics_cost) == Decimal("15.905")


def test_the_stand_in_is_as_strict_as_the_api(fake) -> None:
    base = {"anthropic-version": API_VERSION, "x-api-key": KEY, "anthropic-beta": ANALYTICS_BETA}

    def get(params: list[tuple[str, str]], **headers: str) -> httpx.Response:
        return httpx.get(f"{fake.url}/v1/organizations/analytics/cost", params=params,
                         headers={**base, **headers}, timeout=5)

    ok = [("starting_at", "2026-11-19T00:00:00Z"), ("ending_at", "2026-11-20T00:00:00Z")]
    assert get(ok).status_code == 200
    refused = {
        "no beta header": get(ok, **{"anthropic-beta": "other-beta"}),
        "width without ending_at": get([ok[0], ("time_bucket_width", "1h")]),
        "limit past 1000": get([*ok, ("limit", "1001")]),
        "six dimensions": get(ok + [("group_by[]", g) for g in ("actor", "model", "product", "workspace_id",
                                                                 "api_key_id", "speed")]),
        "group_by without brackets": get([*ok, ("group_by", "model")]),
        "32 days": get([("starting_at", "2026-10-01T00:00:00Z"), ("ending_at", "2026-11-02T00:00:00Z")]),
        "1m over 24 hours": get([*ok[:1], ("ending_at", "2026-11-20T00:01:00Z"), ("time_bucket_width", "1m")]),
        "before 2026": get([("starting_at", "2025-12-31T00:00:00Z"), ("ending_at", "2026-01-02T00:00:00Z")]),
    }
    for why, r in refused.items():
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", why
    # cost_type and token_type do not count toward the five, nor their rows toward the limit
    ok = [("starting_at", "2026-11-01T00:00:00Z"), ("ending_at", "2026-11-20T00:00:00Z")]  # two combinations
    fan = get(ok + [("group_by[]", g) for g in ("actor", "model", "product", "workspace_id", "api_key_id",
                                                  "cost_type", "token_type")] + [("limit", "1")])
    assert fan.status_code == 200 and fan.json()["has_more"] is True and len(fan.json()["data"]) == 1


# --------------------------------------------------------------------------- spend limits


def limits_poller(fake: FakeAdminApi, db: sqlite3.Connection | None = None) -> BillingPoller:
    return make_poller(fake, db if db is not None else sqlite3.connect(":memory:"), spend_limits=True)


def test_a_console_organisations_limits_are_measured_against_its_bill(fake) -> None:
    fake.add_spend_limit("spl_org", "organization", 50000)
    fake.add_spend_limit("spl_ws", "workspace", 2000, scope_id="wrkspc_1", period="weekly")
    fake.add_spend_limit("spl_tier", "usage_tier", 100000)
    poller = limits_poller(fake)
    snap = poller.poll()
    m = scrape(snap, NOW.date())
    # the month: 1000.25 + 250.5 + 99.999 + 40.004 + 12.5 + 7 cents
    assert sample(m, "claude_spend_limit_usd", scope_type="organization", scope="organization", period="monthly") == 500
    assert total(m, "claude_spend_limit_spend_usd", scope_type="organization") == Decimal("14.10253")
    assert total(m, "claude_spend_limit_spend_usd", scope_type="usage_tier") == Decimal("14.10253")
    # the week from Monday 16 November, workspace wrkspc_1: 99.999 + 40.004 + 7 cents
    assert sample(m, "claude_spend_limit_usd", scope_type="workspace", scope="wrkspc_1", period="weekly") == 20
    assert total(m, "claude_spend_limit_spend_usd", scope_type="workspace") == Decimal("1.47003")
    # with pools_from_spend_limits each organisation and workspace limit is a pool of its own
    from exporter.config import AdminApiConfig
    config = Config(admin_api=AdminApiConfig(pools_from_spend_limits=True),
                    pools=(PoolConfig(name="tier", credit_usd=Decimal(0), spend_limit="spl_tier"),))
    made = {s.pool: s for s in build_pool_states(config, load_pricer(), Snapshot(built_at=NOW.timestamp(),
                                                                                  billing=snap), NOW)}
    assert sorted(made) == ["limit-organization-monthly", "limit-wrkspc_1-weekly", "tier"]  # spl_tier is named
    ws = made["limit-wrkspc_1-weekly"]
    assert (ws.credit, ws.spend, ws.period_start) == (Decimal(20), Decimal("1.47003"), at(16, 0))
    assert not ws.breaker_open_by_threshold
    # a Console organisation has no effective report: asked once, not again within the hour
    assert fake.count("spend_limits_effective", 400) == 1
    fake.advance(timedelta(minutes=5))
    poller.poll()
    assert fake.count("spend_limits_effective") == 1 and fake.count("spend_limits", 200) == 2


def test_an_enterprise_members_limit_as_a_pool_opens_its_breaker_and_check_flips(fake, tmp_path) -> None:
    from exporter.app import pool_from_state
    from exporter.config import AdminApiConfig
    from exporter.state import StateDB

    fake.org_kind = "enterprise"
    fake.add_spend_limit("spl_org", "organization", 50000)
    fake.add_spend_limit("spl_ada", "user", 500, scope_id=ADA[0])
    state = StateDB(tmp_path)
    poller = limits_poller(fake, state.conn)
    snap = poller.poll()
    ada_pool = PoolConfig(name="ada", credit_usd=Decimal(0), spend_limit="spl_ada")
    # Ada's month so far: 250.5 + 99.999 + 7 cents of a $5 limit
    got = pools(snap, ada_pool)["ada"]
    assert (got.credit, got.spend, got.billed_basis) == (Decimal(5), Decimal("3.57499"), "spend_limit")
    assert not got.breaker_open_by_threshold
    config = Config(pools=(ada_pool,), state_dir=tmp_path, admin_api=AdminApiConfig())
    assert not pool_from_state(config, "ada", clock=lambda: fake.now.timestamp()).open

    # users show only under the actor-label rule
    assert total(scrape(snap, NOW.date()), "claude_spend_limit_usd", scope_type="user") == 0
    m = parse_metrics(generate_latest(_registry(snap, "top")).decode())
    assert sample(m, "claude_spend_limit_spend_usd", scope_type="user", scope=ADA[1], period="monthly") == 3.57499

    fake.add_spend(at(20, 12, 20), "200", actor=ADA[0], actor_email=ADA[1], token_type="output_tokens", tokens=9)
    fake.advance(timedelta(minutes=5))
    got = pools(poller.poll(), ada_pool)["ada"]
    assert got.spend == Decimal("5.57499") and got.remaining < 0 and got.breaker_open_by_threshold
    state.close()
    decision = pool_from_state(config, "ada", clock=lambda: fake.now.timestamp())
    assert decision.open and decision.source == "threshold"


def _registry(snap: BillingSnapshot, rule: str, top_n: int = 20) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(type("C", (), {"collect": lambda self: billed_families(
        snap, NOW.date(), actor_labels=rule, actor_top_n=top_n)})())
    return reg


def test_actor_labels_stay_bounded_with_five_hundred_users() -> None:
    with FakeAdminApi(key=KEY, now=NOW) as fake:
        for i in range(500):
            fake.add_spend(at(20, 3), str(i + 1), actor=f"user_{i:03d}", actor_email=f"u{i:03d}@example.com",
                           token_type="output_tokens", tokens=10)
        snap = make_poller(fake, sqlite3.connect(":memory:")).poll()
    assert total(scrape(snap, NOW.date()), "claude_billed_actor_cost_usd") == 0  # none: no per-actor series

    m = parse_metrics(generate_latest(_registry(snap, "top", 20)).decode())
    today = {dict(lab)["actor"]: v for (n, lab), v in m.items()
             if n == "claude_billed_actor_cost_usd" and dict(lab)["window"] == "today"}
    assert len(today) == 21 and "other" in today and "u499@example.com" in today and "u479@example.com" not in today
    # every cent is still there: 1 + 2 + ... + 500 cents
    assert sum((Decimal(repr(v)) for v in today.values()), Decimal(0)) == Decimal("1252.50")

    m = parse_metrics(generate_latest(_registry(snap, "hashed")).decode())
    labels = {dict(lab)["actor"] for (n, lab), _v in m.items() if n == "claude_billed_actor_cost_usd"}
    assert len(labels) == 500 and all(x.startswith("h_") and "@" not in x for x in labels)


def test_stored_spend_limits_out_of_bounds_are_not_restored(fake) -> None:
    fake.add_spend_limit("spl_org", "organization", 50000)
    db = sqlite3.connect(":memory:")
    limits_poller(fake, db).poll()
    assert [v.limit.id for v in BillingPoller(None, db, clock=lambda: fake.now, api="auto").snapshot.spend_limits] == [
        "spl_org"]
    stored = json.loads(db.execute("SELECT value FROM billed_state WHERE name = 'spend_limits'").fetchone()[0])
    stored[0]["spent"] = "1e400"  # a state edited by hand, or written before the bounds
    db.execute("UPDATE billed_state SET value = ? WHERE name = 'spend_limits'", (json.dumps(stored),))
    restored = BillingPoller(None, db, clock=lambda: fake.now, api="auto").snapshot
    assert restored.spend_limits == ()
    scrape(restored, NOW.date())  # renders: nothing absurd reached the snapshot
