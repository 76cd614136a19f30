"""The billing poller and its metrics, against the fake Admin API over real HTTP."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry, generate_latest

from exporter import logsetup
from exporter.billing.client import AdminApiClient
from exporter.billing.poller import (
    BillingPoller,
    BillingSnapshot,
    earliest_period_start,
    period_start,
)
from exporter.billing.store import stored_billed_by_day
from exporter.expose.metrics import billed_families as billed_metric_families
from exporter.config import PeriodConfig
from tests.admin_fixtures import KEY, NOW, VirtualTime, generate
from tests.conftest import parse_metrics, sample
from tests.fake_admin_api import FakeAdminApi

MONTH_START = date(2026, 3, 1)
YESTERDAY = NOW.date() - timedelta(days=1)


@pytest.fixture
def fake() -> Iterator[FakeAdminApi]:
    with FakeAdminApi(key=KEY, now=NOW) as f:
        yield f


@pytest.fixture
def dataset(fake):
    ds = generate(seed=11, days=45)
    ds.ids = ds.load_into(fake)
    return ds


def make_poller(fake: FakeAdminApi, db: sqlite3.Connection, *, key: str = KEY, **kw) -> BillingPoller:
    vt = VirtualTime()
    client = AdminApiClient(fake.url, key, sleep=vt.sleep, clock=vt.clock, timeout=5.0, max_retries=2)
    return BillingPoller(client, db, clock=lambda: fake.now, wall=lambda: fake.now.timestamp(), **kw)


def expected_window(ds, now: datetime, start: date) -> dict[tuple[date, str | None], Decimal]:
    return {k: v for k, v in ds.billed(now).items() if start <= k[0] <= now.date()}


def scrape(snap: BillingSnapshot, today: date) -> dict:
    class Collector:
        def collect(self):
            return billed_metric_families(snap, today)

    reg = CollectorRegistry()
    reg.register(Collector())
    return parse_metrics(generate_latest(reg).decode())


def test_poll_totals_per_day_and_workspace_equal_the_dataset(fake, dataset):
    poller = make_poller(fake, sqlite3.connect(":memory:"), since=date(2026, 2, 1))
    snap = poller.poll()

    assert snap.up and snap.error is None
    assert snap.billed_by_day_workspace() == expected_window(dataset, NOW, date(2026, 2, 1))
    assert snap.billed_usd(NOW.date()) == dataset.billed_day(NOW, NOW.date())  # partial today
    assert snap.billed_usd(YESTERDAY, ["default"]) == dataset.billed_day(NOW, YESTERDAY, {None})
    assert snap.billed_usd(YESTERDAY, ["wrkspc_01Alpha", "default"]) == dataset.billed_day(
        NOW, YESTERDAY, {None, "wrkspc_01Alpha"})
    assert snap.billed_usd(date(2026, 1, 1)) is None  # outside the window: unknown, not zero
    assert snap.complete_through == datetime(2026, 3, 10, tzinfo=UTC)
    assert fake.count("cost_report") == 2  # 38 days: two pages of at most 31


def test_todays_partial_bucket_grows_and_revisions_replace_never_add(fake, dataset):
    poller = make_poller(fake, sqlite3.connect(":memory:"))
    poller.poll()
    fake.advance(timedelta(hours=3))
    # a revision of yesterday: one entry's amount changes after the fact
    yesterday_entry = next(i for i, e in zip(dataset.ids, dataset.entries, strict=True)
                           if e.at.date() == YESTERDAY)
    fake.revise(yesterday_entry, amount_cents="1.23456")
    dataset.entries[dataset.ids.index(yesterday_entry)] = replace(
        dataset.entries[dataset.ids.index(yesterday_entry)], amount_cents=Decimal("1.23456"))

    snap = poller.poll()
    snap = poller.poll()  # the same days read again must not be added a second time

    assert snap.billed_usd(NOW.date()) == dataset.billed_day(fake.now, NOW.date())
    assert snap.billed_usd(NOW.date()) > dataset.billed_day(NOW, NOW.date())
    assert snap.billed_usd(YESTERDAY) == dataset.billed_day(fake.now, YESTERDAY)
    assert snap.billed_by_day_workspace() == expected_window(dataset, fake.now, MONTH_START)


def test_persistent_failure_keeps_last_values_and_recovery_equals_fault_free(fake, dataset):
    poller = make_poller(fake, sqlite3.connect(":memory:"))
    good = poller.poll()
    before = scrape(good, NOW.date())

    fake.advance(timedelta(minutes=5))
    fake.inject("500", count=None)
    failed = poller.poll()
    assert not failed.up
    assert failed.error and "500" in failed.error
    assert failed.cost_rows == good.cost_rows and failed.usage_rows == good.usage_rows
    assert failed.last_success == good.last_success and failed.complete_through == good.complete_through
    assert failed.requests[("cost_report", "500")] == 3  # counts are live even when values are kept
    after = scrape(failed, NOW.date())
    assert {k: v for k, v in after.items() if "claude_billed_" in k[0]} == \
           {k: v for k, v in before.items() if "claude_billed_" in k[0]}

    for kind in ("529", "truncated", "reset"):  # a mix of faults, each retried successfully
        fake.clear_faults()
        fake.inject(kind)
        fake.advance(timedelta(minutes=5))
        recovered = poller.poll()
        assert recovered.up

    fresh = make_poller(fake, sqlite3.connect(":memory:")).poll()
    assert recovered.cost_rows == fresh.cost_rows
    assert recovered.billed_by_day_workspace() == fresh.billed_by_day_workspace() == expected_window(
        dataset, fake.now, MONTH_START)
    assert sorted(recovered.usage_rows, key=repr) == sorted(fresh.usage_rows, key=repr)


def test_economy_ten_cycles_over_a_31_day_window(fake, dataset):
    fake.set_now(datetime(2026, 3, 10, 23, 41, tzinfo=UTC))  # the cycles cross midnight
    poller = make_poller(fake, sqlite3.connect(":memory:"), since=date(2026, 2, 8))
    assert poller.poll().up
    first_fill = fake.counts()
    assert first_fill["cost_report"] == 1 and first_fill["usage_report"] == 5  # 31 days; 744 hours / 168

    per_cycle = []
    for _ in range(10):
        fake.clear_log()
        fake.advance(timedelta(minutes=5))
        snap = poller.poll()
        assert snap.up
        per_cycle.append(fake.counts())
        for r in fake.requests:  # only recent days are read again
            assert r.param("starting_at") >= "2026-03-09"
    assert all(c["cost_report"] <= 2 and c["usage_report"] <= 2 for c in per_cycle)
    assert sum(c["cost_report"] for c in per_cycle) == 10  # one page each: what is needed, no more
    assert snap.billed_by_day_workspace() == expected_window(dataset, fake.now, date(2026, 2, 8))


def test_restart_does_not_refetch_settled_days(fake, dataset, tmp_path):
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    first = make_poller(fake, db).poll()
    db.close()

    fake.clear_log()
    fake.advance(timedelta(minutes=7))
    db2 = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # as the state module opens it
    restarted = make_poller(fake, db2)
    before_poll = restarted.snapshot
    assert not before_poll.up  # not polled yet in this process...
    assert before_poll.cost_rows == first.cost_rows  # ...but the stored values are served at once
    assert before_poll.last_success == first.last_success

    snap = restarted.poll()
    assert [r.param("starting_at") for r in fake.requests if r.endpoint == "cost_report"] == ["2026-03-09T00:00:00Z"]
    assert [r.param("starting_at") for r in fake.requests if r.endpoint == "usage_report"] == [
        "2026-03-09T00:00:00Z"]
    assert snap.billed_by_day_workspace() == expected_window(dataset, fake.now, MONTH_START)
    assert stored_billed_by_day(db2)[date(2026, 3, 2)] == dataset.billed_day(NOW, date(2026, 3, 2))


def test_day_rollover_settles_the_old_yesterday_once(fake, dataset):
    fake.set_now(datetime(2026, 3, 10, 23, 58, tzinfo=UTC))
    poller = make_poller(fake, sqlite3.connect(":memory:"))
    poller.poll()
    fake.clear_log()
    fake.set_now(datetime(2026, 3, 11, 0, 3, tzinfo=UTC))
    poller.poll()
    fake.advance(timedelta(minutes=5))
    poller.poll()
    starts = [r.param("starting_at") for r in fake.requests if r.endpoint == "cost_report"]
    # 03-09 is read once more now that it is over by a full day, then never again
    assert starts == ["2026-03-09T00:00:00Z", "2026-03-10T00:00:00Z"]


def test_metrics_windows_labels_and_help(fake, dataset):
    poller = make_poller(fake, sqlite3.connect(":memory:"))
    snap = poller.poll()
    m = scrape(snap, NOW.date())

    def total(window: str, ws: str | None = None) -> Decimal:
        return sum((Decimal(str(v)) for (name, labels), v in m.items()
                    if name == "claude_billed_cost_usd" and dict(labels)["window"] == window
                    and (ws is None or dict(labels)["workspace_id"] == ws)), Decimal(0))

    period = sum((v for (d, _ws), v in dataset.billed(NOW).items() if MONTH_START <= d <= NOW.date()), Decimal(0))
    assert abs(total("period") - period) < Decimal("0.000001")
    assert abs(total("today") - dataset.billed_day(NOW, NOW.date())) < Decimal("0.000001")
    assert abs(total("yesterday", "default") - dataset.billed_day(NOW, YESTERDAY, {None})) < Decimal("0.000001")
    labels = [dict(lb) for (name, lb) in m if name == "claude_billed_cost_usd"]
    assert {lb["workspace_id"] for lb in labels} == {"default", "wrkspc_01Alpha", "wrkspc_01Beta"}
    assert sample(m, "claude_billed_complete_through_timestamp_seconds") == datetime(
        2026, 3, 10, tzinfo=UTC).timestamp()
    assert sample(m, "claude_admin_api_requests_total", endpoint="cost_report", code="200") == 1.0
    tokens_out = sum(v for (name, lb), v in m.items() if name == "claude_billed_tokens"
                     and dict(lb)["window"] == "today" and dict(lb)["token_type"] == "output")
    assert tokens_out == sum(v for (d, _m, attr), v in dataset.tokens(NOW).items()
                             if d == NOW.date() and attr == "output")

    reg = CollectorRegistry()
    reg.register(type("C", (), {"collect": lambda self: billed_metric_families(snap, NOW.date())})())
    text = generate_latest(reg).decode()
    for family in ("claude_billed_cost_usd", "claude_billed_tokens", "claude_billed_complete_through_timestamp_seconds"):
        help_line = next(ln for ln in text.splitlines() if ln.startswith(f"# HELP {family} "))
        assert "cached from the last successful" in help_line.lower()
    assert "calendar month" in text
    assert "claude_source_up" not in text


def test_the_key_appears_in_no_log_error_metric_or_state_file(fake, dataset, tmp_path):
    wrong_key = "sk-ant-admin01-ANOTHERsecretKEY-9999"
    out = io.StringIO()
    logsetup.configure(level="debug", fmt="json", stream=out)  # no secrets registered: the code must not log them
    try:
        db_path = tmp_path / "state.db"
        db = sqlite3.connect(db_path)
        poller = make_poller(fake, db)
        snaps = [poller.poll()]
        for kind in ("429", "500", "529", "truncated", "short_body", "reset", "not_report"):
            fake.inject(kind)
            snaps.append(poller.poll())
        fake.inject("500", count=None)
        snaps.append(poller.poll())
        fake.clear_faults()
        bad = make_poller(fake, db, key=wrong_key)
        snaps.append(bad.poll())
        db.close()
    finally:
        structlog.reset_defaults()

    assert not snaps[-1].up and "401" in (snaps[-1].error or "")
    logs = out.getvalue()
    assert "admin_api.server_error" in logs and "billing.poll_failed" in logs  # the capture works
    texts = [logs, *(repr(s) for s in snaps), *(s.error or "" for s in snaps),
             repr(poller), repr(poller.client), scrape(snaps[-2], NOW.date()).__repr__()]
    files = [p.read_bytes() for p in Path(tmp_path).iterdir() if p.name.startswith("state.db")]
    for secret in (KEY, wrong_key):
        for t in texts:
            assert secret not in t
        for blob in files:
            assert secret.encode() not in blob
        assert secret[-12:] not in logs  # not even a tail of it


def test_period_start_follows_reset_day_time_zone_and_short_months():
    now = datetime(2026, 3, 10, 13, tzinfo=UTC)
    assert period_start(PeriodConfig(reset_day=1), now) == date(2026, 3, 1)
    assert period_start(PeriodConfig(reset_day=15), now) == date(2026, 2, 15)
    assert period_start(PeriodConfig(reset_day=31), now) == date(2026, 2, 28)  # clamped to February
    # 00:00 on the 10th in Tokyo is 15:00 UTC on the 9th
    assert period_start(PeriodConfig(reset_day=10, timezone="Asia/Tokyo"), now) == date(2026, 3, 9)
    assert earliest_period_start([PeriodConfig(reset_day=1), PeriodConfig(reset_day=15)], now) == date(2026, 2, 15)
    assert earliest_period_start([], now) is None


def test_since_callable_widens_the_window(fake, dataset):
    poller = make_poller(fake, sqlite3.connect(":memory:"),
                         since=lambda now: earliest_period_start([PeriodConfig(reset_day=15)], now))
    snap = poller.poll()
    assert min(snap.days) == date(2026, 2, 15) and max(snap.days) == NOW.date()


def test_claude_code_report_is_optional_and_has_no_user_labels(fake, dataset):
    fake.add_claude_code(YESTERDAY, "dev@example.com", "claude-opus-4-6", "150.5")
    fake.add_claude_code(NOW.date(), "ops@example.com", "claude-opus-4-6", "20")
    fake.add_claude_code(NOW.date(), "dev@example.com", "claude-opus-4-6", "0.25")

    plain = make_poller(fake, sqlite3.connect(":memory:")).poll()
    assert fake.count("claude_code_report") == 0 and plain.claude_code_rows == ()

    snap = make_poller(fake, sqlite3.connect(":memory:"), claude_code_report=True).poll()
    assert fake.count("claude_code_report") == 2  # yesterday and today
    reg = CollectorRegistry()
    reg.register(type("C", (), {"collect": lambda self: billed_metric_families(
        snap, NOW.date(), include_claude_code=True)})())
    text = generate_latest(reg).decode()
    m = parse_metrics(text)
    assert sample(m, "claude_code_report_estimated_cost_usd", window="today", model="claude-opus-4-6") == 0.2025
    assert sample(m, "claude_code_report_estimated_cost_usd", window="yesterday", model="claude-opus-4-6") == 1.505
    assert "example.com" not in text


def test_yesterday_counts_as_complete_only_once_the_bill_has_settled(fake, dataset):
    """Just after midnight the cost report still lacks yesterday's last hours: it stays open."""
    midnight = datetime(NOW.year, NOW.month, NOW.day, tzinfo=UTC)
    db = sqlite3.connect(":memory:", isolation_level=None)
    poller = make_poller(fake, db, settle_after=timedelta(hours=6))
    fake.set_now(midnight + timedelta(minutes=10))
    assert poller.poll().complete_through == midnight - timedelta(days=1)  # yesterday still open
    fake.set_now(midnight + timedelta(hours=6, minutes=1))
    assert poller.poll().complete_through == midnight
    assert make_poller(fake, db, settle_after=timedelta(0)).poll().complete_through == midnight
