"""``serve --demo``: a newcomer with no key and no logs sees every series, and a breaker open.

The demo runs as a real subprocess (``python -m exporter serve --demo``) on a free port;
``CLAUDE_BUDGET_EXPORTER_DEMO_SPEED`` makes its simulated organisation spend faster so the
breaker crosses in seconds instead of about a minute and a half at the default speed.
The simulated Admin API is also driven directly with the exporter's own client, to show
it speaks the wire format the real one does.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from exporter.billing.client import AdminApiClient, AdminApiHTTPError
from exporter.billing.wire import API_VERSION, BUCKET_LIMITS
from exporter.demo.admin_api import SimulatedAdminApi
from exporter.demo.org import DEMO_KEY, SPEED_ENV, nothing_to_read
from tests.conftest import clean_env, http_get, run_cli, sample

POOLS = ("agent-sdk", "interactive", "team-api")


def _nonzero(samples, name: str, **labels: str) -> bool:
    v = sample(samples, name, **labels)
    return v is not None and v != 0


def _any_nonzero(samples, name: str) -> bool:
    return any(v != 0 for (n, _labels), v in samples.items() if n == name)


def _every_series(s) -> list[str]:
    """What is still missing or zero; empty once every PRODUCT metric has data."""
    missing = []
    for pool in POOLS:
        for name in ("claude_pool_credit_usd", "claude_pool_spend_usd", "claude_pool_remaining_usd",
                     "claude_pool_burn_rate_usd_per_hour", "claude_pool_exhaustion_timestamp_seconds",
                     "claude_pool_period_end_timestamp_seconds"):
            if not _nonzero(s, name, pool=pool):
                missing.append(f"{name}{{pool={pool}}}")
        for window in ("today", "yesterday", "period"):
            for name in ("claude_billed_spend_usd", "claude_estimated_spend_usd"):
                if not _nonzero(s, name, pool=pool, window=window):
                    missing.append(f"{name}{{pool={pool},window={window}}}")
        for window in ("yesterday", "period"):
            if not _nonzero(s, "claude_spend_drift_ratio", pool=pool, window=window):
                missing.append(f"claude_spend_drift_ratio{{pool={pool},window={window}}}")
    for name in ("claude_billed_cost_usd", "claude_estimated_cost_usd_total", "claude_estimated_tokens_total",
                 "claude_unpriced_tokens_total", "claude_pool_info", "claude_log_lines_total",
                 "claude_admin_api_requests_total", "claude_exporter_build_info"):
        if not _any_nonzero(s, name):
            missing.append(name)
    for source in ("claude-code", "admin_api"):
        if sample(s, "claude_source_up", source=source) != 1:
            missing.append(f"claude_source_up{{source={source}}}")
        if not _nonzero(s, "claude_source_last_success_timestamp_seconds", source=source):
            missing.append(f"claude_source_last_success_timestamp_seconds{{source={source}}}")
    if not _nonzero(s, "claude_billed_complete_through_timestamp_seconds"):
        missing.append("claude_billed_complete_through_timestamp_seconds")
    for result in ("counted", "duplicate", "api_error"):
        if not _nonzero(s, "claude_log_lines_total", source="claude-code", result=result):
            missing.append(f"claude_log_lines_total{{result={result}}}")
    return missing


def test_demo_has_every_series_within_a_minute_and_opens_the_near_exhaustion_breaker(exporter_factory):
    started = time.monotonic()
    exp = exporter_factory(["--demo"], env=clean_env(**{SPEED_ENV: "300"})).start(wait=60)

    first = json.loads(exp.log_path.read_text().splitlines()[0])
    assert "demo" in first["event"] and "never contacted" in first["event"], first
    assert first["admin_api"].startswith("http://127.0.0.1:"), first

    missing: list[str] = []
    while time.monotonic() - started < 60:
        s = exp.metrics()
        missing = _every_series(s)
        if not missing:
            break
        time.sleep(0.5)
    assert not missing, f"still without data a minute after start: {missing}"
    # two weeks of history: the drift compares complete billed days, and each pool's differs
    assert 0.9 < sample(s, "claude_spend_drift_ratio", pool="agent-sdk", window="period") < 0.99
    assert 0.98 < sample(s, "claude_spend_drift_ratio", pool="interactive", window="period") < 1.04
    assert sample(s, "claude_pool_credit_usd", pool="agent-sdk") == 200
    assert sample(s, "claude_pool_info", pool="team-api", team="research", plan="custom",
                  billed_basis="analytics", estimate_basis="usage_report") == 1
    # the analytics API bills by product, at list price beside the discounted amount
    assert sample(s, "claude_admin_api_mode", api="analytics") == 1
    assert (sample(s, "claude_billed_list_cost_usd", window="period", workspace_id="wrkspc_demo_interactive",
                   model="claude-sonnet-4-5", product="claude_code") or 0) > 0
    # team-api's drift is its list price over its bill: about 1 / 1.01
    assert 0.97 < sample(s, "claude_spend_drift_ratio", pool="team-api", window="period") < 1.0

    s = exp.wait_for(lambda m: sample(m, "claude_breaker_open", pool="agent-sdk") == 1, timeout=150,
                     what="the agent-sdk breaker to open")
    assert sample(s, "claude_pool_remaining_ratio", pool="agent-sdk") < 0.05
    code, body = http_get(exp.url + "/breaker/agent-sdk")
    assert code == 503 and json.loads(body)["source"] == "threshold", body
    for pool in ("interactive", "team-api"):
        assert sample(s, "claude_breaker_open", pool=pool) == 0
        assert http_get(exp.url + f"/breaker/{pool}")[0] == 200
    # the simulated pipeline asks the breaker, as a real one would, and stops spending
    deadline = time.monotonic() + 10
    while "paused" not in exp.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "agent-sdk pipeline found its breaker open and paused" in exp.log_path.read_text()
    assert time.monotonic() - started < 180


def test_demo_refuses_a_config_file_and_a_state_dir(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sources: []\n")
    r = run_cli("serve", "--demo", "--config", str(cfg), "--listen", "127.0.0.1:0")
    assert r.returncode == 2 and "--demo" in r.stderr and "--config" in r.stderr, r.stderr
    r = run_cli("serve", "--demo", "--state-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:0")
    assert r.returncode == 2 and "--state-dir" in r.stderr, r.stderr


def test_default_serve_on_an_empty_machine_points_at_the_demo(exporter_factory, tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    exp = exporter_factory([], env=clean_env(HOME=str(home))).start()
    exp.stop()
    hints = [json.loads(line) for line in exp.log_path.read_text().splitlines() if "--demo" in line]
    assert len(hints) == 1, exp.log_path.read_text()
    line = hints[0]["event"]
    assert "~/.claude/projects" in line and "~/.config/claude/projects" in line
    assert "ANTHROPIC_ADMIN_API_KEY" in line and "serve --demo" in line


def test_no_hint_when_there_are_logs_or_a_key(tmp_path: Path, monkeypatch):
    from dataclasses import replace

    from exporter.config import AdminApiConfig, default_config

    folder = tmp_path / "home" / ".claude" / "projects"
    config = default_config({"HOME": str(tmp_path / "home")})
    config = replace(config, sources=(replace(config.sources[0], paths=(str(folder),)),))
    assert str(folder) in (nothing_to_read(config) or "")
    (folder / "-home-me-project").mkdir(parents=True)
    (folder / "-home-me-project" / "s.jsonl").write_text("")
    assert nothing_to_read(config) is None

    empty = replace(config, sources=(replace(config.sources[0], paths=(str(tmp_path / "none"),)),),
                    admin_api=AdminApiConfig(key_env="DEMO_TEST_ADMIN_KEY"))
    monkeypatch.delenv("DEMO_TEST_ADMIN_KEY", raising=False)
    assert nothing_to_read(empty) is not None
    monkeypatch.setenv("DEMO_TEST_ADMIN_KEY", "sk-ant-admin01-test")
    assert nothing_to_read(empty) is None
    assert nothing_to_read(replace(config, origin="my.yaml", sources=empty.sources)) is None


# --------------------------------------------------------------------------- the simulated Admin API


def _charge(api: SimulatedAdminApi, at: datetime, cents: str, ws: str | None = "wrkspc_a") -> None:
    api.add_spend(at, cents, workspace_id=ws, api_key_id="apikey_a", model="claude-sonnet-4-5-20250929",
                  token_type="output_tokens", tokens=1000)


def test_simulated_api_speaks_the_wire_format_to_the_real_client():
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    api = SimulatedAdminApi(key=DEMO_KEY).start()  # on the real time, as in the demo
    try:
        for d in range(1, 45):
            _charge(api, today - timedelta(days=d, hours=-1), "12.3456789")
        _charge(api, now - timedelta(seconds=5), "0.0000001", ws=None)
        _charge(api, now + timedelta(hours=1), "999")  # not yet happened: not in any report
        client = AdminApiClient(api.url, DEMO_KEY)
        start = today - timedelta(days=44)
        cost = client.cost_report(start, today + timedelta(days=1), limit=7)  # 7 pages of 7 days
        assert sum(r.amount_usd for r in cost) == Decimal("12.3456789") * 44 / 100 + Decimal("0.000000001")
        assert {r.workspace_id for r in cost} == {"wrkspc_a", None}
        assert client.request_counts()[("cost_report", "200")] == 7
        usage = client.usage_report(start, today + timedelta(days=1), "1h")  # BUCKET_LIMITS["1h"] buckets a page
        assert sum(r.tokens.output for r in usage) == 45_000
        assert client.request_counts()[("usage_report", "200")] == 7
        # today's bucket is partial: it holds only what already happened
        assert [r.amount_usd for r in cost if r.day == today.date()] == [Decimal("0.000000001")]

        def get(query: str, key: str = DEMO_KEY) -> tuple[int, dict]:
            req = urllib.request.Request(f"{api.url}/v1/organizations/cost_report?{query}",
                                         headers={"x-api-key": key, "anthropic-version": API_VERSION})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        since = (today - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        until = (today + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        code, body = get(f"starting_at={since}&group_by=workspace_id")
        assert code == 400 and body["type"] == "error" and "group_by[]" in body["error"]["message"]
        code, body = get(f"starting_at={since}", key="sk-ant-admin01-wrong")
        assert code == 401 and body["error"]["type"] == "authentication_error"
        code, body = get(f"starting_at={since}&limit={BUCKET_LIMITS['1d'] + 1}")
        assert code == 400
        code, body = get(f"starting_at={since}&ending_at={until}&group_by[]=workspace_id&limit=1")
        assert code == 200 and body["has_more"] and isinstance(body["next_page"], str)
        assert body["data"][0]["results"][0]["amount"] == "12.3456789"  # cents, as a decimal string
        code, body = get(f"starting_at={since}&ending_at={until}&group_by[]=workspace_id&limit=2&page={body['next_page']}")
        assert code == 400, "a page token belongs to its own query"
        with pytest.raises(AdminApiHTTPError):
            AdminApiClient(api.url, "sk-ant-admin01-wrong", max_retries=0).cost_report(start, today)
    finally:
        api.stop()


def test_the_pipeline_asks_again_after_an_unknown_breaker_and_resumes_when_it_closes(tmp_path: Path):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from exporter.config import default_config
    from exporter.demo.org import Demo, DemoOrg

    answers = [(503, "unknown"), (503, "unknown"), (503, "open"), (503, "open"), (200, "closed")]

    class Breaker(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            code, state = answers.pop(0) if len(answers) > 1 else answers[0]
            body = json.dumps({"pool": "agent-sdk", "state": state, "reason": "test"}).encode()
            self.send_response(code)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Breaker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = SimulatedAdminApi(key="sk-ant-admin01-demo-test")
    try:
        demo = Demo(config=default_config({}), api=api, org=DemoOrg(tmp_path, api, speed=1.0), workdir=tmp_path,
                    breaker_url=f"http://127.0.0.1:{server.server_address[1]}")
        seen = []
        for _ in range(5):
            demo._check_breakers()
            seen.append("agent-sdk" in demo.org.paused)
        # unknown twice: keeps working and asks again; open: pauses; still asked while paused; closed: resumes
        assert seen == [False, False, True, True, False]
    finally:
        server.shutdown()
