"""The analytics API and spend limits end to end: the exporter as a process against the simulated
Admin API over real HTTP, and the `check` command on the state it leaves.

The expected figures are computed here from the fake's own entries, independently of the exporter:
billed is every matched entry before the last complete hour (data refreshed five minutes ago), the
rest of the period estimated at list price and calibrated by the complete days' list / bill.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from exporter.config.model import FAST_POLL_ENV
from tests.conftest import clean_env, http_get, run_cli, sample
from tests.fake_admin_api import FakeAdminApi

KEY = "sk-ant-admin01-analytics-e2e-secret-0123456789"
ADA = ("user_01Ada", "ada@example.com")


def _money(s, name: str, **labels: str) -> Decimal:
    v = sample(s, name, **labels)
    assert v is not None, f"{name}{labels} missing"
    return Decimal(repr(v))


def test_analytics_billing_pools_and_a_spend_limit_end_to_end(tmp_path: Path, exporter_factory) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    hour = now.replace(minute=0, second=0)
    fake = FakeAdminApi(key=KEY, now=now).start()
    try:
        # three days of Ada's Claude Code work on key B, and an API pipeline on key A, each day; the list
        # price is above the bill (a discount); and entries in the last hours, complete and not
        for d in (3, 2, 1):
            day = hour - timedelta(days=d)
            fake.add_spend(day, "120.125", list_cents="150", workspace_id="wrkspc_1", api_key_id="apikey_B",
                           product="claude_code", actor=ADA[0], actor_email=ADA[1], token_type="output_tokens",
                           tokens=1000, requests=3)
            fake.add_spend(day + timedelta(minutes=30), "33.3", list_cents="33.3", api_key_id="apikey_A",
                           product="messages_api", token_type="uncached_input_tokens", tokens=5000, requests=1)
        fake.add_spend(hour - timedelta(hours=1, minutes=-10), "10.001", list_cents="12", workspace_id="wrkspc_1",
                       api_key_id="apikey_B", product="claude_code", actor=ADA[0], actor_email=ADA[1],
                       token_type="output_tokens", tokens=100)
        fake.add_spend(now - timedelta(minutes=6), "5", list_cents="6", workspace_id="wrkspc_1",
                       api_key_id="apikey_B", product="claude_code", actor=ADA[0], actor_email=ADA[1],
                       token_type="output_tokens", tokens=50)
        fake.add_spend_limit("spl_ws1", "workspace", 1000, scope_id="wrkspc_1", period="monthly")  # $10

        cfg = tmp_path / "config.yaml"
        cfg.write_text(f"""
refresh_interval: 200ms
sources: []
admin_api:
  key_env: TEST_ADMIN_KEY
  base_url: {fake.url}
  poll_interval: 1s
pools:
  - name: code
    credit_usd: 100
    match: {{products: [claude_code]}}
  - name: key-a
    credit_usd: 100
    match: {{api_keys: [apikey_A]}}
  - name: ada
    credit_usd: 100
    match: {{actors: [{ADA[1]}]}}
  - name: ws1-limit
    spend_limit: spl_ws1
    breaker: {{open_below: 0.10}}
""")
        env = clean_env(TEST_ADMIN_KEY=KEY, **{FAST_POLL_ENV: "1"})
        state = tmp_path / "state"
        e = exporter_factory(["--config", str(cfg), "--state-dir", str(state)], env).start()
        s = e.wait_for(lambda s: sample(s, "claude_admin_api_mode", api="analytics") == 1
                       and sample(s, "claude_pool_spend_usd", pool="ws1-limit") is not None, what="the first poll")

        # independent figures from the fake's entries
        entries = fake.spend()
        complete = (now - fake.analytics_lag).replace(minute=0, second=0)
        month = now.replace(day=1, hour=0, minute=0, second=0)
        shown = [x for x in entries if x.at < now - fake.analytics_lag]

        def spend(match) -> Decimal:
            billed = sum((x.amount_cents for x in shown if match(x) and month <= x.at < complete), Decimal(0)) / 100
            days = {x.at.date() for x in shown if match(x) and month <= x.at < complete.replace(hour=0)}
            bill = sum((x.amount_cents for x in shown if match(x) and x.at.date() in days), Decimal(0))
            listed = sum((x.list_amount for x in shown if match(x) and x.at.date() in days), Decimal(0))
            fresh = sum((x.list_amount for x in shown if match(x) and x.at >= max(complete, month)), Decimal(0)) / 100
            return billed + (fresh * bill / listed if listed else fresh)

        for pool, match in (("code", lambda x: x.product == "claude_code"),
                            ("key-a", lambda x: x.api_key_id == "apikey_A"),
                            ("ada", lambda x: x.actor == ADA[0])):
            assert abs(_money(s, "claude_pool_spend_usd", pool=pool) - spend(match)) < Decimal("0.000001"), pool
        period = sum((x.amount_cents for x in shown if x.at >= month), Decimal(0)) / 100
        got = sum((Decimal(repr(v)) for (n, lab), v in s.items()
                   if n == "claude_billed_cost_usd" and dict(lab)["window"] == "period"), Decimal(0))
        assert abs(got - period) < Decimal("0.000001")
        assert sample(s, "claude_billed_complete_through_timestamp_seconds") == complete.timestamp()

        # the spend limit: the workspace's billed cost this month (a Console organisation's limits have no
        # effective report: they are measured against the bill)
        ws_month = sum((x.amount_cents for x in shown if x.workspace_id == "wrkspc_1" and x.at >= month),
                       Decimal(0)) / 100
        assert _money(s, "claude_spend_limit_usd", scope_type="workspace", scope="wrkspc_1", period="monthly") == 10
        assert abs(_money(s, "claude_spend_limit_spend_usd", scope_type="workspace", scope="wrkspc_1",
                          period="monthly") - ws_month) < Decimal("0.000001")
        assert sample(s, "claude_pool_credit_usd", pool="ws1-limit") == 10
        ws1 = _money(s, "claude_pool_spend_usd", pool="ws1-limit")
        want_open = (10 - ws1) / 10 < Decimal("0.10")
        code, body = http_get(e.url + "/breaker/ws1-limit")
        assert (code == 503) == want_open, body
        check = run_cli("check", "--pool", "ws1-limit", "--config", str(cfg), "--state-dir", str(state), env=env)
        assert check.returncode == (1 if want_open else 0), check.stdout + check.stderr

        # spend past the limit: the breaker opens and check flips
        fake.add_spend(now - timedelta(minutes=8), "900", workspace_id="wrkspc_1", api_key_id="apikey_B",
                       product="claude_code", token_type="output_tokens", tokens=10)
        s = e.wait_for(lambda s: sample(s, "claude_breaker_open", pool="ws1-limit") == 1, what="the limit's breaker")
        code, body = http_get(e.url + "/breaker/ws1-limit")
        assert code == 503 and json.loads(body)["source"] == "threshold", body
        check = run_cli("check", "--pool", "ws1-limit", "--config", str(cfg), "--state-dir", str(state), env=env)
        assert check.returncode == 1, check.stdout + check.stderr
        assert KEY not in (e.log_path.read_text() + check.stdout + check.stderr)
    finally:
        fake.stop()


def test_several_organisations_each_billed_apart_with_an_org_label(tmp_path: Path, exporter_factory) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    hour = now.replace(minute=0, second=0)
    keys = {"prod": KEY, "research": KEY.replace("analytics", "research")}
    fakes = {org: FakeAdminApi(key=key, now=now).start() for org, key in keys.items()}
    try:
        for n, (org, fake) in enumerate(fakes.items(), start=1):
            for d in (2, 1):
                fake.add_spend(hour - timedelta(days=d), f"{100 * n}.5", api_key_id=f"apikey_{org}",
                               product="claude_code", token_type="output_tokens", tokens=10)
        cfg = tmp_path / "config.yaml"
        orgs = "\n".join(f"""  - name: {org}
    key_env: KEY_{org.upper()}
    base_url: {fake.url}
    poll_interval: 1s""" for org, fake in fakes.items())
        cfg.write_text(f"""
refresh_interval: 200ms
sources: []
admin_api:
{orgs}
pools:
  - name: all-code
    credit_usd: 100
    match: {{products: [claude_code]}}
  - name: research
    credit_usd: 100
    match: {{orgs: [research], products: [claude_code]}}
""")
        env = clean_env(KEY_PROD=keys["prod"], KEY_RESEARCH=keys["research"], **{FAST_POLL_ENV: "1"})
        state = tmp_path / "state"
        e = exporter_factory(["--config", str(cfg), "--state-dir", str(state)], env).start()
        s = e.wait_for(lambda s: sample(s, "claude_source_up", source="admin_api:prod") == 1
                       and sample(s, "claude_source_up", source="admin_api:research") == 1
                       and sample(s, "claude_pool_spend_usd", pool="research") is not None, what="both polls")
        month = now.replace(day=1, hour=0, minute=0, second=0)
        want = {org: sum((x.amount_cents for x in fake.spend() if x.at >= month), Decimal(0)) / 100
                for org, fake in fakes.items()}
        for org in fakes:
            got = sum((Decimal(repr(v)) for (n, lab), v in s.items() if n == "claude_billed_cost_usd"
                       and dict(lab)["window"] == "period" and dict(lab).get("org") == org), Decimal(0))
            assert got == want[org], org
        assert _money(s, "claude_pool_spend_usd", pool="research") == want["research"]
        assert _money(s, "claude_pool_spend_usd", pool="all-code") == want["research"] + want["prod"]
        assert sorted((state).glob("billing-*.sqlite3")) == [state / "billing-prod.sqlite3",
                                                              state / "billing-research.sqlite3"]
    finally:
        for fake in fakes.values():
            fake.stop()
