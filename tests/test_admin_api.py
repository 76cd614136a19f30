"""The Admin API client against the fake API over real HTTP on 127.0.0.1."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from exporter import __version__
from exporter.billing.client import (
    AdminApiBadResponse,
    AdminApiClient,
    AdminApiHTTPError,
    AdminApiRateLimited,
    AdminApiTransportError,
)
from exporter.billing.wire import API_VERSION, BUCKET_LIMITS
from tests.admin_fixtures import KEY, NOW, VirtualTime, generate
from tests.fake_admin_api import FakeAdminApi

START = datetime(2026, 1, 25, tzinfo=UTC)  # 45 days before NOW's day
END = datetime(2026, 3, 11, tzinfo=UTC)


@pytest.fixture
def fake() -> Iterator[FakeAdminApi]:
    with FakeAdminApi(key=KEY, now=NOW) as f:
        yield f


@pytest.fixture
def dataset(fake: FakeAdminApi):
    ds = generate(seed=3, days=50)
    ds.load_into(fake)
    return ds


@pytest.fixture
def vtime() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
def client(fake: FakeAdminApi, vtime: VirtualTime) -> Iterator[AdminApiClient]:
    c = AdminApiClient(fake.url, KEY, sleep=vtime.sleep, clock=vtime.clock, timeout=5.0)
    yield c
    c.close()


def per_day_workspace(rows) -> dict[tuple[date, str | None], Decimal]:
    out: dict[tuple[date, str | None], Decimal] = defaultdict(Decimal)
    for r in rows:
        out[(r.day, r.workspace_id)] += r.amount_usd
    return {k: v for k, v in out.items()}


def test_cost_totals_equal_the_dataset_to_the_cent_across_pages(fake, dataset, client):
    rows = client.cost_report(START, END, limit=7)

    expected = {k: v for k, v in dataset.billed(NOW).items() if START.date() <= k[0] < END.date()}
    assert per_day_workspace(rows) == expected  # Decimal equality: exact, no rounding anywhere
    n_days = (END - START).days
    assert fake.count("cost_report") == math.ceil(n_days / 7)  # really paged, each page once
    assert {r.day for r in rows} == {START.date() + timedelta(days=i) for i in range(n_days)}
    # the cases that break naive code are really in there
    assert any(r.workspace_id is None for r in rows)
    assert any(r.amount_usd.as_tuple().exponent < -4 for r in rows)  # fractional cents: beyond 4 places of USD
    assert all(isinstance(r.amount_usd, Decimal) for r in rows)
    # today's bucket is partial: spend after "now" is not in it
    today_total = sum((r.amount_usd for r in rows if r.day == NOW.date()), Decimal(0))
    assert today_total == dataset.billed_day(NOW, NOW.date())


def test_wire_format_brackets_headers_and_opaque_pages(fake, dataset, client):
    client.cost_report(START, END, limit=BUCKET_LIMITS["1d"])
    reqs = fake.requests
    assert len(reqs) == 2
    first, second = reqs
    assert first.params("group_by[]") == ["workspace_id", "description"]
    assert first.param("group_by") is None
    assert first.param("bucket_width") == "1d" and first.param("limit") == str(BUCKET_LIMITS["1d"])
    assert first.param("starting_at") == "2026-01-25T00:00:00Z"
    headers = dict(first.headers)
    assert headers["anthropic-version"] == API_VERSION
    assert headers["user-agent"] == f"claude-budget-exporter/{__version__}"
    # the second page repeats the same query, plus the opaque token the first answer gave
    token = second.param("page")
    assert token and not token.startswith("20")
    assert [kv for kv in second.query if kv[0] != "page"] == list(first.query)


def test_usage_report_tokens_equal_the_dataset(fake, dataset, client):
    start = datetime(2026, 3, 9, tzinfo=UTC)
    rows = client.usage_report(start, END, "1h")
    assert fake.count("usage_report") == 1  # 38 hourly buckets fit one page (BUCKET_LIMITS["1h"])
    req = fake.requests[0]
    assert req.params("group_by[]") == ["model", "workspace_id", "api_key_id", "service_tier", "context_window"]
    got: dict[tuple[date, str, str], int] = defaultdict(int)
    for r in rows:
        assert r.end - r.start == timedelta(hours=1)
        for attr in ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h"):
            if getattr(r.tokens, attr):
                got[(r.day, r.model, attr)] += getattr(r.tokens, attr)
    expected = {k: v for k, v in dataset.tokens(NOW).items() if k[0] >= start.date() and v}
    assert dict(got) == expected


def test_429_burst_sends_nothing_before_retry_after(fake, dataset, client, vtime):
    baseline = client.cost_report(START, END)
    fake.clear_log()
    arrivals: list[float] = []
    fake.on_request = lambda rec: arrivals.append(vtime.clock())
    for _ in range(3):
        fake.inject("429", retry_after=7)

    rows = client.cost_report(START, END)

    assert rows == baseline
    statuses = [r.status for r in fake.requests]
    assert statuses[:3] == [429, 429, 429] and statuses[3] == 200
    for before, after in zip(arrivals, arrivals[1:4], strict=False):
        assert after - before >= 7.0  # every request after a 429 waited the full retry-after
    assert client.request_counts()[("cost_report", "429")] == 3


def test_429_wait_is_real_time_without_injected_clock(fake, dataset):
    fake.inject("429", retry_after=1)
    with AdminApiClient(fake.url, KEY, timeout=5.0) as c:
        c.cost_report(datetime(2026, 3, 9, tzinfo=UTC), END)
    first, second = fake.requests
    assert first.status == 429 and second.status == 200
    assert second.wall - first.wall >= 1.0


def test_429_asking_for_too_long_a_wait_fails_the_call_and_blocks_the_next(fake, dataset, vtime):
    c = AdminApiClient(fake.url, KEY, sleep=vtime.sleep, clock=vtime.clock, max_retry_after=60)
    fake.inject("429", retry_after=600)
    with pytest.raises(AdminApiRateLimited) as exc:
        c.cost_report(START, END)
    assert exc.value.retry_after == 600
    # a call made before the 600 s have passed sends nothing at all
    with pytest.raises(AdminApiRateLimited):
        c.cost_report(START, END)
    assert fake.count() == 1
    vtime.t += 600
    assert c.cost_report(START, END)
    assert fake.count() == 3


@pytest.mark.parametrize("kind", ["500", "529", "truncated", "short_body", "reset", "not_report"])
def test_retryable_faults_recover_to_exactly_the_fault_free_values(fake, dataset, client, vtime, kind):
    baseline = client.cost_report(START, END)
    fake.clear_log()
    fake.inject(kind, count=2)

    rows = client.cost_report(START, END)

    assert rows == baseline
    assert [r.fault for r in fake.requests] == [kind, kind, None, None]  # 2 faults, then 2 good pages
    assert len(vtime.sleeps) == 2
    assert 0.5 <= vtime.sleeps[0] <= 1.0 and 1.0 <= vtime.sleeps[1] <= 2.0  # exponential, jittered


def test_slow_answer_times_out_and_is_retried(fake, dataset, vtime):
    fake.inject("slow", seconds=3)
    with AdminApiClient(fake.url, KEY, sleep=vtime.sleep, clock=vtime.clock, timeout=0.3) as c:
        rows = c.cost_report(datetime(2026, 3, 9, tzinfo=UTC), END)
        assert c.request_counts() == {("cost_report", "error"): 1, ("cost_report", "200"): 1}
    assert sum(r.amount_usd for r in rows) == dataset.billed_day(NOW, date(2026, 3, 9)) + dataset.billed_day(
        NOW, NOW.date())


def test_retries_are_bounded_and_back_off(fake, dataset, vtime):
    fake.inject("529", count=None)
    c = AdminApiClient(fake.url, KEY, sleep=vtime.sleep, clock=vtime.clock, max_retries=3,
                       backoff_base=2.0, backoff_cap=5.0)
    with pytest.raises(AdminApiHTTPError) as exc:
        c.cost_report(START, END)
    assert exc.value.status == 529 and exc.value.error_type == "overloaded_error"
    assert fake.count() == 4
    assert len(vtime.sleeps) == 3
    for attempt, delay in enumerate(vtime.sleeps):
        ceiling = min(5.0, 2.0 * 2 ** attempt)
        assert ceiling / 2 <= delay <= ceiling


def test_a_200_that_is_not_a_report_is_an_error_not_zero_spend(fake, dataset, vtime):
    fake.inject("not_report", count=None)
    c = AdminApiClient(fake.url, KEY, sleep=vtime.sleep, clock=vtime.clock, max_retries=1)
    with pytest.raises(AdminApiBadResponse, match="not a report"):
        c.cost_report(START, END)
    assert c.request_counts() == {("cost_report", "200"): 2}


def test_client_errors_raise_at_once_with_the_api_message(fake, dataset, client, vtime):
    with pytest.raises(AdminApiHTTPError) as exc:
        client.usage_report(START, END, "1h", group_by=("bogus",))
    assert exc.value.status == 400 and exc.value.error_type == "invalid_request_error"
    assert "bogus" in exc.value.api_message
    assert exc.value.request_id and exc.value.request_id.startswith("req_")
    assert fake.count() == 1 and vtime.sleeps == []


def test_wrong_key_is_401_and_no_key_appears_in_errors(fake, dataset, vtime):
    wrong = "sk-ant-admin01-WRONGwrongWRONG-0000"
    c = AdminApiClient(fake.url, wrong, sleep=vtime.sleep, clock=vtime.clock)
    with pytest.raises(AdminApiHTTPError) as exc:
        c.cost_report(START, END)
    assert exc.value.status == 401 and exc.value.error_type == "authentication_error"
    assert fake.count() == 1
    for text in (str(exc.value), repr(exc.value), repr(c), repr(c.__dict__), repr(vars(c._http))):
        assert wrong not in text
    assert KEY not in repr(AdminApiClient(fake.url, KEY))


def test_connection_refused_is_a_transport_error_counted_as_error(vtime):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    c = AdminApiClient(f"http://127.0.0.1:{port}", KEY, sleep=vtime.sleep, clock=vtime.clock, max_retries=2)
    with pytest.raises(AdminApiTransportError) as exc:
        c.cost_report(START, END)
    assert KEY not in str(exc.value)
    assert c.request_counts() == {("cost_report", "error"): 3}


def test_claude_code_report_per_model(fake, client):
    fake.add_claude_code(date(2026, 3, 9), "dev@example.com", "claude-opus-4-6", "186.5", input_tokens=10,
                         output_tokens=20)
    fake.add_claude_code(date(2026, 3, 9), "ops@example.com", "claude-opus-4-6", "0.25")
    fake.add_claude_code(date(2026, 3, 8), "dev@example.com", "claude-opus-4-6", "1000")
    rows = client.claude_code_report(date(2026, 3, 9))
    assert sorted((r.actor, r.estimated_cost_usd) for r in rows) == [
        ("dev@example.com", Decimal("1.865")), ("ops@example.com", Decimal("0.0025"))]
    assert fake.requests[0].param("starting_at") == "2026-03-09"


# ----------------------------------------------------------------------------- the fake is faithful


@pytest.mark.parametrize(("query", "status", "fragment"), [
    ("starting_at=2026-03-01T00:00:00Z&ending_at=2026-02-01T00:00:00Z", 400, "ending_at"),
    ("starting_at=yesterday", 400, "starting_at"),
    ("starting_at=2026-03-01T00:00:00Z&bucket_width=1h", 400, "bucket_width"),
    (f"starting_at=2026-03-01T00:00:00Z&limit={BUCKET_LIMITS['1d'] + 1}", 400, "limit"),
    ("starting_at=2026-03-01T00:00:00Z&group_by=workspace_id", 400, "group_by"),
    ("starting_at=2026-03-01T00:00:00Z&group_by[]=api_key_id", 400, "group_by"),
    ("starting_at=2026-03-01T00:00:00Z&page=MjAyNi0wMy0wMQ", 400, "page"),
    (f"starting_at=2026-03-01T00:00:00Z&limit={BUCKET_LIMITS['1d']}", 200, "data"),
])
def test_fake_rejects_what_the_real_api_rejects(fake, query, status, fragment):
    r = httpx.get(f"{fake.url}/v1/organizations/cost_report?{query}",
                  headers={"x-api-key": KEY, "anthropic-version": API_VERSION})
    assert r.status_code == status
    assert fragment in r.text
    if status != 200:
        body = r.json()
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        assert body["request_id"].startswith("req_")


def test_fake_usage_limits_per_width_and_auth(fake):
    base = f"{fake.url}/v1/organizations/usage_report/messages?starting_at=2026-03-09T00:00:00Z"
    ok = {"x-api-key": KEY, "anthropic-version": API_VERSION}
    hours, minutes, days = BUCKET_LIMITS["1h"], BUCKET_LIMITS["1m"], BUCKET_LIMITS["1d"]
    assert httpx.get(base + f"&bucket_width=1h&limit={hours}", headers=ok).status_code == 200
    assert httpx.get(base + f"&bucket_width=1h&limit={hours + 1}", headers=ok).status_code == 400
    assert httpx.get(base + f"&bucket_width=1m&limit={minutes}", headers=ok).status_code == 200
    assert httpx.get(base + f"&bucket_width=1d&limit={days + 1}", headers=ok).status_code == 400
    six = "".join(f"&group_by[]={g}" for g in ("api_key_id", "workspace_id", "model", "service_tier",
                                                "context_window", "inference_geo"))
    assert httpx.get(base + six, headers=ok).status_code == 400
    r = httpx.get(base, headers={"anthropic-version": API_VERSION, "x-api-key": "nope"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.get(base, headers={"x-api-key": KEY})
    assert r.status_code == 400 and "anthropic-version" in r.json()["error"]["message"]


def test_fake_runs_as_a_process(tmp_path):
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    data = tmp_path / "data.json"
    data.write_text(json.dumps({"now": "2026-03-10T12:00:00Z", "spend": [
        {"at": "2026-03-10T08:00:00Z", "amount_cents": "250.5", "workspace_id": None}]}))
    proc = subprocess.Popen([sys.executable, "-m", "tests.fake_admin_api", "--key", KEY, "--dataset", str(data)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("FAKE_ADMIN_API_URL=")
        url = line.split("=", 1)[1]
        with AdminApiClient(url, KEY, sleep=lambda s: None) as c:
            rows = c.cost_report(datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC))
            assert [(r.workspace_id, r.amount_usd) for r in rows] == [(None, Decimal("2.505"))]
            assert httpx.post(f"{url}/_fake/inject", json={"kind": "500"}).status_code == 200
            assert c.cost_report(datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC)) == rows
        statuses = [r["status"] for r in httpx.get(f"{url}/_fake/requests").json()]
        assert statuses == [200, 500, 200]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
