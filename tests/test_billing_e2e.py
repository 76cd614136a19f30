"""Billed spend, drift, pools and the breaker end to end: the exporter as a process, the fake
Admin API over real HTTP, a log folder, and the `check` command.

Expected values are worked out here by hand from the data the test writes.
"""

from __future__ import annotations

import json
import urllib.request
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from exporter.config.model import FAST_POLL_ENV
from tests.conftest import clean_env, free_port, http_get, run_cli, sample
from tests.fake_admin_api import FakeAdminApi

KEY = "sk-ant-admin01-e2e-secret-key-0123456789abcdef"
WS = "wrkspc_01AgentSDK"
HAIKU = "claude-haiku-4-5-20251001"
# one request: 100k input at $1/MTok + 20k output at $5/MTok = $0.20
REQUEST_USD = Decimal("0.20")


def _line(n: int, at: datetime) -> bytes:
    obj = {"type": "assistant", "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "requestId": f"req_{n}",
           "entrypoint": "sdk-cli", "message": {
               "id": f"msg_{n}", "model": HAIKU, "role": "assistant", "content": [],
               "usage": {"input_tokens": 100_000, "output_tokens": 20_000, "cache_read_input_tokens": 0,
                         "cache_creation_input_tokens": 0}}}
    return json.dumps(obj).encode() + b"\n"


@pytest.fixture
def world(tmp_path: Path):
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    fake = FakeAdminApi(key=KEY, now=now).start()
    for d in (3, 2, 1):
        day = today - timedelta(days=d)
        # billed 25 cents a day for the pool's workspace, in two rows with fractional cents
        fake.add_spend(day + timedelta(hours=3), "12.3456", workspace_id=WS, model=HAIKU,
                       token_type="uncached_input_tokens", tokens=100_000)
        fake.add_spend(day + timedelta(hours=4), "12.6544", workspace_id=WS, model=HAIKU,
                       token_type="output_tokens", tokens=20_000)
        # and spend in the default workspace that the pool does not take
        fake.add_spend(day + timedelta(hours=5), "7.125", workspace_id=None, model=HAIKU,
                       token_type="output_tokens", tokens=14_250)
    partial_at = max(today, now - timedelta(minutes=5))
    fake.add_spend(partial_at, "10.5", workspace_id=WS, model=HAIKU, token_type="output_tokens", tokens=21_000)

    logs = tmp_path / "logs" / "projects" / "p"
    logs.mkdir(parents=True)
    transcript = logs / "s.jsonl"
    with open(transcript, "wb") as f:
        for d in (3, 2, 1):
            f.write(_line(d, today - timedelta(days=d) + timedelta(hours=12)))
        f.write(_line(100, max(today + timedelta(seconds=1), now - timedelta(minutes=1))))

    reset_day = min((today - timedelta(days=5)).day, 28)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
refresh_interval: 200ms
admin_api:
  key_env: TEST_ADMIN_KEY
  base_url: {fake.url}
  poll_interval: 1s
  settle_after: 0s   # yesterday's bill counts as complete at once, whatever time the test runs
  api: legacy        # the cost and usage reports (tests/test_analytics.py has the analytics API)
sources:
  - name: claude-code
    kind: claude_code
    paths: [{tmp_path / 'logs' / 'projects'}]
pools:
  - name: agent-sdk
    credit_usd: 2
    team: platform
    period: {{reset_day: {reset_day}, timezone: UTC}}
    match: {{workspaces: [{WS}], sources: [claude-code], entrypoints: [sdk-cli]}}
    breaker: {{open_below: 0.05}}
  - name: other
    credit_usd: 50
    match: {{workspaces: [default]}}
""")
    env = clean_env(TEST_ADMIN_KEY=KEY, **{FAST_POLL_ENV: "1"})
    yield {"fake": fake, "cfg": cfg, "env": env, "transcript": transcript, "now": now, "today": today,
           "state": tmp_path / "state", "tmp": tmp_path}
    fake.stop()


def _money(samples, name: str, **labels: str) -> Decimal:
    v = sample(samples, name, **labels)
    assert v is not None, f"{name}{labels} missing"
    return Decimal(repr(v))


def test_billed_drift_pools_faults_and_breaker(world, exporter_factory) -> None:
    fake, env = world["fake"], world["env"]
    args = ["--config", str(world["cfg"]), "--state-dir", str(world["state"])]
    e = exporter_factory(args, env).start()
    s = e.wait_for(lambda s: sample(s, "claude_source_up", source="admin_api") == 1
                   and sample(s, "claude_spend_drift_ratio", pool="agent-sdk", window="period") is not None,
                   what="the first poll")

    # billed spend to the cent: 3 days x (25 + 7.125) cents + 10.5 cents today
    period_rows = sum((Decimal(repr(v)) for (n, lab), v in s.items()
                       if n == "claude_billed_cost_usd" and dict(lab)["window"] == "period"), Decimal(0))
    assert period_rows.quantize(Decimal("0.000001")) == Decimal("1.06875")
    assert _money(s, "claude_billed_spend_usd", pool="agent-sdk", window="yesterday") == Decimal("0.25")
    assert _money(s, "claude_billed_spend_usd", pool="agent-sdk", window="today") == Decimal("0.105")
    assert _money(s, "claude_estimated_spend_usd", pool="agent-sdk", window="today") == REQUEST_USD
    assert _money(s, "claude_estimated_spend_usd", pool="agent-sdk", window="period") == 4 * REQUEST_USD
    # estimates are 0.8 of the bill: drift 0.8, and today's $0.20 estimate calibrates to $0.25
    assert round(_money(s, "claude_spend_drift_ratio", pool="agent-sdk", window="yesterday"), 4) == Decimal("0.8")
    assert round(_money(s, "claude_spend_drift_ratio", pool="agent-sdk", window="period"), 4) == Decimal("0.8")
    assert _money(s, "claude_pool_spend_usd", pool="agent-sdk").quantize(Decimal("0.01")) == Decimal("1.00")
    assert _money(s, "claude_pool_remaining_usd", pool="agent-sdk").quantize(Decimal("0.01")) == Decimal("1.00")
    assert sample(s, "claude_breaker_open", pool="agent-sdk") == 0
    assert _money(s, "claude_billed_spend_usd", pool="other", window="yesterday") == Decimal("0.07125")
    baseline = {k: v for k, v in s.items() if k[0].startswith(("claude_billed", "claude_pool_spend"))}

    # the Admin API fails: last good values stay, source_up drops, nothing crashes
    fake.inject("500", count=None)
    s = e.wait_for(lambda s: sample(s, "claude_source_up", source="admin_api") == 0, what="admin_api down")
    assert {k: v for k, v in s.items() if k in baseline} == baseline
    fake.clear_faults()
    s = e.wait_for(lambda s: sample(s, "claude_source_up", source="admin_api") == 1, what="recovery")
    assert {k: v for k, v in s.items() if k in baseline} == baseline  # no double count on recovery

    # a very slow Admin API never slows a scrape
    fake.inject("slow", count=None, seconds=20)
    held = fake.faults_taken["slow"]
    deadline = time.monotonic() + 30
    while fake.faults_taken["slow"] == held:  # a poll is under way and held by the slow API
        assert time.monotonic() < deadline, "no poll reached the slow Admin API"
        time.sleep(0.05)
    worst = 0.0
    for _ in range(20):
        t = time.perf_counter()
        code, _ = http_get(e.url + "/metrics")
        worst = max(worst, time.perf_counter() - t)
        assert code == 200
    assert worst < 0.05, f"a scrape took {worst * 1000:.1f} ms"
    fake.clear_faults()

    # the breaker: closed now; spend grows past the threshold; check flips 0 -> 1
    r = run_cli("check", "--pool", "agent-sdk", "--url", e.url, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("closed")
    now = datetime.now(UTC)
    with open(world["transcript"], "ab") as f:
        for n in range(4):  # 4 x $0.20 / 0.8 = $1.00 more: remaining 0
            f.write(_line(200 + n, max(world["today"] + timedelta(seconds=2), now - timedelta(seconds=30))))
    s = e.wait_for(lambda s: sample(s, "claude_breaker_open", pool="agent-sdk") == 1, what="breaker open")
    assert _money(s, "claude_pool_remaining_usd", pool="agent-sdk").quantize(Decimal("0.01")) == Decimal("0.00")
    assert sample(s, "claude_breaker_open", pool="other") == 0
    r = run_cli("check", "--pool", "agent-sdk", "--url", e.url, env=env)
    assert r.returncode == 1 and r.stdout.startswith("open"), r.stdout + r.stderr
    code, body = http_get(e.url + "/breaker/agent-sdk")
    assert code == 503 and json.loads(body)["state"] == "open"
    assert run_cli("check", "--pool", "nope", "--url", e.url, env=env).returncode == 2

    # the key is nowhere: not in logs, metrics, pages or state files
    pages = b"".join(http_get(e.url + p)[1] for p in ("/metrics", "/", "/breaker/agent-sdk", "/healthz"))
    e.stop()
    files = [p for p in world["tmp"].rglob("*") if p.is_file()]
    assert files
    for p in files:
        assert KEY.encode() not in p.read_bytes(), f"admin key found in {p}"
    assert KEY.encode() not in pages

    # a restart serves the stored billed days before its first poll, and fetches no settled day again
    fake.clear_log()
    fake.inject("500", count=None)
    e = exporter_factory(args, env).start()
    s = e.metrics()
    assert _money(s, "claude_billed_spend_usd", pool="agent-sdk", window="yesterday") == Decimal("0.25")
    e.stop()
    starts = {dict(r.query).get("starting_at", "") for r in fake.requests if r.endpoint == "cost_report"}
    oldest = (world["today"] - timedelta(days=1)).strftime("%Y-%m-%d")
    assert all(s_ >= oldest for s_ in starts), starts


def test_check_without_url_reads_the_state_on_disk(world, exporter_factory) -> None:
    env = world["env"]
    args = ["--config", str(world["cfg"]), "--state-dir", str(world["state"])]
    e = exporter_factory(args, env).start()
    e.wait_for(lambda s: sample(s, "claude_source_up", source="admin_api") == 1, what="the first poll")
    e.stop()
    r = run_cli("check", "--pool", "agent-sdk", *args, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "from state on disk" in r.stdout
    r = run_cli("check", "--pool", "agent-sdk", "--config", str(world["cfg"]), "--state-dir",
                str(world["tmp"] / "empty"), env=env)
    assert r.returncode == 2


def test_report_polls_the_bill_itself_and_shows_drift(world) -> None:
    """A one-shot report with a key: billed USD per UTC day next to the estimate, no serve needed."""
    env = world["env"]
    r = run_cli("report", "--json", "--config", str(world["cfg"]), "--state-dir", str(world["tmp"] / "report-state"),
                env=env)
    assert r.returncode == 0, r.stderr
    days = {d["date"]: d for d in json.loads(r.stdout)["days"]}
    yesterday = (world["today"] - timedelta(days=1)).date().isoformat()
    # all workspaces: 25 + 7.125 cents a day; the logs' estimate is $0.20 a day
    assert Decimal(str(days[yesterday]["billed_usd"])) == Decimal("0.32125")
    assert Decimal(str(days[yesterday]["estimated_usd"])) == REQUEST_USD
    assert days[yesterday]["drift_ratio"] == pytest.approx(float(REQUEST_USD / Decimal("0.32125")), abs=1e-6)
    assert Decimal(str(days[world["today"].date().isoformat()]["billed_usd"])) == Decimal("0.105")
    assert KEY not in r.stdout + r.stderr

    assert json.loads(r.stdout)["billed_error"] is None

    # the Admin API down: the report still answers, says so (exit 3, billed_error) and shows what it stored
    world["fake"].inject("500", count=None)
    r = run_cli("report", "--json", "--config", str(world["cfg"]), "--state-dir", str(world["tmp"] / "report-state"),
                "--admin-api-wait", "4s", env=env, timeout=300)
    assert r.returncode == 3, r.stderr
    assert "Admin API" in r.stderr and "last stored" in r.stderr
    report = json.loads(r.stdout)
    assert "500" in report["billed_error"], report["billed_error"]
    days = {d["date"]: d for d in report["days"]}
    assert Decimal(str(days[yesterday]["billed_usd"])) == Decimal("0.32125")


def test_check_from_config_asks_the_serving_exporter_for_alertmanager_breakers(world, exporter_factory) -> None:
    """Without --url, check still sees a breaker that only Alertmanager opened, via the running serve."""
    env = world["env"]
    cfg = world["cfg"]
    port = free_port()
    cfg.write_text(cfg.read_text() + f'listen: "127.0.0.1:{port}"\n')
    args = ["--config", str(cfg), "--state-dir", str(world["state"])]
    e = exporter_factory(args, env)
    e.port = port
    e.start()
    e.wait_for(lambda s: sample(s, "claude_source_up", source="admin_api") == 1, what="the first poll")
    assert run_cli("check", "--pool", "agent-sdk", *args, env=env).returncode == 0
    payload = json.dumps({"version": "4", "status": "firing", "receiver": "breaker", "alerts": [{
        "status": "firing", "labels": {"alertname": "ClaudePoolCreditCritical", "pool": "agent-sdk",
                                       "breaker": "open"},
        "annotations": {"summary": "fleet under 10%"}, "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "fp1"}]}).encode()
    req = urllib.request.Request(e.url + "/alertmanager/webhook", data=payload, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200
    r = run_cli("check", "--pool", "agent-sdk", *args, env=env)
    assert r.returncode == 1 and "Alertmanager" in r.stdout, r.stdout + r.stderr
