"""Subscription windows: the rate_limits source kind, its metrics, and pools on a window with their breaker."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from freezegun import freeze_time
from prometheus_client import generate_latest

from exporter.config import ConfigError, PoolConfig, WindowRef, parse_config
from exporter.config import load as config_load
from exporter.core import windows
from exporter.core.breaker import BreakerBoard
from exporter.core.windows import WindowReport, judge, window_pool_state
from exporter.expose.metrics import ExporterCollector, make_registry
from exporter.expose.statuspage import render
from exporter.logs.ratelimits import parse_line
from exporter.refresh import Refresher
from tests.conftest import clean_env, parse_metrics, run_cli, sample

D = Decimal
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def line(obj: object) -> bytes:
    return json.dumps(obj).encode()


# --------------------------------------------------------------------------- reading a line


def test_a_statusline_record_gives_each_window_it_holds():
    got = parse_line("max", line({"type": "statusline", "timestamp": "2026-11-20T11:59:00Z", "session_id": "s",
                                  "rate_limits": {"five_hour": {"used_percentage": 23.5, "resets_at": 1795700000},
                                                  "seven_day": {"used_percentage": 41.2, "resets_at": 1796000000}}}),
                     when=NOW, now=NOW)
    at = utc(2026, 11, 20, 11, 59).timestamp()
    assert got == [WindowReport("max", "five_hour", at, D("0.235"), 1795700000.0),
                   WindowReport("max", "seven_day", at, D("0.412"), 1796000000.0)]


def test_claude_codes_own_statusline_json_saved_as_it_came_is_read_at_its_time_of_reading():
    raw = {"hook_event_name": "Status", "session_id": "abc", "model": {"id": "claude-opus-4-1", "display_name": "Opus"},
           "cost": {"total_cost_usd": 0.01234}, "rate_limits": {"five_hour": {"used_percentage": 100,
                                                                              "resets_at": 1795700000}}}
    assert parse_line("max", line(raw), when=NOW - 5, now=NOW) == [
        WindowReport("max", "five_hour", NOW - 5, D(1), 1795700000.0)]


@pytest.mark.parametrize("info", [
    {"status": "allowed_warning", "rate_limit_type": "seven_day_opus", "utilization": 0.81, "resets_at": 1795700000},
    {"status": "allowed_warning", "rateLimitType": "seven_day_opus", "utilization": 0.81, "resetsAt": 1795700000,
     "overageStatus": "rejected", "isUsingOverage": False},
])
def test_an_agent_sdk_rate_limit_event_in_either_spelling(info):
    got = parse_line("sdk", line({"type": "rate_limit_event", "rate_limit_info": info, "uuid": "u",
                                  "session_id": "s"}), when=NOW, now=NOW)
    assert got == [WindowReport("sdk", "seven_day_opus", NOW, D("0.81"), 1795700000.0, "allowed_warning")]


def test_an_event_with_only_a_status_still_reports():
    got = parse_line("sdk", line({"type": "rate_limit_event", "rate_limit_info": {
        "status": "rejected", "rateLimitType": "five_hour", "resetsAt": 1795700000}}), when=NOW, now=NOW)
    assert got == [WindowReport("sdk", "five_hour", NOW, None, 1795700000.0, "rejected")]


@pytest.mark.parametrize(("raw", "result"), [
    (b"not json", "malformed_json"),
    (b"[1, 2]", "malformed_json"),
    (b"\xff\xfe", "invalid_utf8"),
    (line({"type": "assistant", "message": {}}), "ignored"),
    (line({"rate_limits": {}}), "ignored"),
    (line({"rate_limits": {"weekly_tokens": {"used_percentage": 5}}}), "ignored"),
    (line({"type": "rate_limit_event", "rate_limit_info": {"rate_limit_type": "hourly", "utilization": 0.1}}),
     "ignored"),
    (line({"type": "rate_limit_event"}), "bad_usage"),
    (line({"rate_limits": {"five_hour": {"used_percentage": -3}}}), "bad_usage"),
    (line({"rate_limits": {"five_hour": {"used_percentage": "lots"}}}), "bad_usage"),
    (line({"rate_limits": {"five_hour": {"used_percentage": 10, "resets_at": 12}}}), "bad_usage"),
    (line({"type": "rate_limit_event", "rate_limit_info": {"rate_limit_type": "five_hour", "utilization": 7}}),
     "bad_usage"),
    (line({"timestamp": "yesterday", "rate_limits": {"five_hour": {"used_percentage": 10}}}), "bad_timestamp"),
    (line({"timestamp": "2027-06-01T00:00:00Z", "rate_limits": {"five_hour": {"used_percentage": 10}}}),
     "bad_timestamp"),
])
def test_what_a_bad_line_counts_as(raw, result):
    assert parse_line("s", raw, when=NOW, now=NOW) == result


def test_a_share_a_little_past_the_whole_is_the_whole():
    got = parse_line("s", line({"rate_limits": {"five_hour": {"used_percentage": 100.4}}}), when=NOW, now=NOW)
    assert got == [WindowReport("s", "five_hour", NOW, D(1), None)]


# --------------------------------------------------------------------------- judging a window


def test_a_window_resets_when_its_time_passes_and_goes_stale_after_its_length():
    r = WindowReport("s", "five_hour", NOW, D("0.97"), NOW + 3600)
    assert judge(r, NOW + 3599).used == D("0.97") and not judge(r, NOW + 3599).reset
    v = judge(r, NOW + 3600)
    assert v.reset and v.used == D(0) and v.headroom == D(1) and not v.stale
    assert judge(r, NOW + 5 * 3600 + 1).stale
    week = WindowReport("s", "seven_day", NOW, D("0.5"), None)
    assert not judge(week, NOW + 7 * 86400).stale and judge(week, NOW + 7 * 86400 + 1).stale


def window_pool(open_below: str = "0.05", name: str = "five_hour") -> PoolConfig:
    return PoolConfig(name="five", credit_usd=D(0), open_below=D(open_below), window=WindowRef("max", name))


@pytest.mark.parametrize(("used", "is_open"), [("0.94", False), ("0.95", False), ("0.9501", True), ("1", True)])
def test_a_window_pools_breaker_opens_under_its_headroom_threshold(used, is_open):
    with freeze_time("2026-11-20 12:00:00"):
        at = datetime.now(UTC)
        s = window_pool_state(window_pool(), WindowReport("max", "five_hour", NOW - 60, D(used), NOW + 3600), at)
    assert s.headroom == 1 - D(used)
    assert s.breaker_open_by_threshold is is_open
    assert (s.period_start, s.period_end) == (utc(2026, 11, 20, 8), utc(2026, 11, 20, 13))


def test_a_rejected_window_holds_the_breaker_open_until_it_resets():
    report = WindowReport("max", "five_hour", NOW - 60, None, NOW + 60, "rejected")
    board = BreakerBoard(["five"])
    d = board.decide("five", window_pool_state(window_pool(), report, utc(2026, 11, 20, 12)), utc(2026, 11, 20, 12))
    assert d.open and "rejected" in d.reason
    later = utc(2026, 11, 20, 12, 1)
    d = board.decide("five", window_pool_state(window_pool(), report, later), later)
    assert not d.open and "reset" in d.reason


def test_without_a_report_the_breaker_stays_closed_and_says_why():
    d = BreakerBoard(["five"]).decide("five", window_pool_state(window_pool(), None, utc(2026, 11, 20)),
                                      utc(2026, 11, 20))
    assert not d.open
    assert d.reason == "no report of the five_hour window of max yet"
    assert d.to_json()["window"]["used_ratio"] is None and d.to_json()["remaining_usd"] is None


# --------------------------------------------------------------------------- config


def test_window_pools_and_rate_limits_sources_parse():
    cfg = parse_config({"sources": [{"name": "max", "kind": "rate_limits", "paths": ["/x/statusline.jsonl"]}],
                        "pools": [{"name": "five", "team": "me", "window": {"source": "max", "name": "five_hour"},
                                   "breaker": {"open_below": 0.1}}]})
    pool = cfg.pools[0]
    assert pool.window == WindowRef("max", "five_hour") and pool.open_below == D("0.1") and pool.team == "me"


def test_window_pool_problems_have_their_paths():
    with pytest.raises(ConfigError) as exc:
        parse_config({"sources": [{"name": "max", "kind": "rate_limits", "paths": ["/x"]},
                                  {"name": "cc", "kind": "claude_code", "paths": ["/y"]}],
                      "pools": [{"name": "a", "window": {"source": "nope", "name": "hourly"}, "credit_usd": 5},
                                {"name": "b", "window": {"source": "cc", "name": "five_hour"}},
                                {"name": "c", "credit_usd": 5, "match": {"sources": ["max"]}},
                                {"name": "d", "window": {"name": "seven_day"}}]})
    assert exc.value.problems == [
        "pools[0].credit_usd: a pool on a window has no credit, period or match: its headroom is what the window "
        "has left",
        "pools[0].window.source: no source named 'nope'",
        "pools[0].window.name: must be one of five_hour, seven_day, seven_day_opus, seven_day_sonnet, not 'hourly'",
        "pools[3].window.source: is required",
        "pools[1].window.source: 'cc' is a claude_code source: a window is reported by a rate_limits source",
        "pools[2].match.sources[0]: 'max' reports subscription windows, not spend: give it to a pool as "
        "window.source",
    ]


def test_the_config_and_the_core_name_the_same_pool_windows():
    assert config_load.POOL_WINDOWS == windows.POOL_WINDOWS


# --------------------------------------------------------------------------- in a refresher


def config(tmp: Path, path: Path, **extra: object) -> dict:
    return {"state_dir": str(tmp / "state"), "refresh_interval": "0.2s",
            "sources": [{"name": "max", "kind": "rate_limits", "paths": [str(path)]}],
            "pools": [{"name": "five", "window": {"source": "max", "name": "five_hour"}},
                      {"name": "week", "window": {"source": "max", "name": "seven_day"},
                       "breaker": {"open_below": 0.5}}], **extra}


def statusline(five: float | None, seven: float | None, at: float, resets: float) -> str:
    limits = {}
    if five is not None:
        limits["five_hour"] = {"used_percentage": five, "resets_at": resets}
    if seven is not None:
        limits["seven_day"] = {"used_percentage": seven, "resets_at": resets + 86400}
    stamp = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"type": "statusline", "timestamp": stamp, "rate_limits": limits}) + "\n"


def test_a_refresher_tails_the_reports_and_keeps_the_latest_across_a_restart(tmp_path: Path):
    records = tmp_path / "statusline.jsonl"
    records.write_text(statusline(40, 20, NOW - 600, NOW + 3600) + statusline(97, None, NOW - 60, NOW + 3600)
                       + "garbage\n")
    sdk = tmp_path / "sdk.jsonl"
    sdk.write_text(json.dumps({"type": "rate_limit_event", "timestamp": NOW - 30, "rate_limit_info": {
        "status": "allowed_warning", "rate_limit_type": "seven_day_opus", "utilization": 0.8,
        "resets_at": NOW + 86400}}) + "\n")
    cfg = parse_config(config(tmp_path, records) | {
        "sources": [{"name": "max", "kind": "rate_limits", "paths": [str(records), str(sdk)]}]})
    refresher = Refresher(cfg, clock=lambda: NOW)
    try:
        refresher.refresh_logs()
        snap = refresher.snapshot()
    finally:
        refresher.stop()
    body = generate_latest(make_registry(ExporterCollector(lambda: snap))).decode()
    m = parse_metrics(body)
    assert sample(m, "claude_rate_limit_used_ratio", source="max", window="five_hour") == 0.97
    assert sample(m, "claude_rate_limit_used_ratio", source="max", window="seven_day") == 0.2
    assert sample(m, "claude_rate_limit_used_ratio", source="max", window="seven_day_opus") == 0.8
    assert sample(m, "claude_rate_limit_resets_timestamp_seconds", source="max", window="five_hour") == NOW + 3600
    assert sample(m, "claude_rate_limit_last_report_timestamp_seconds", source="max", window="five_hour") == NOW - 60
    assert sample(m, "claude_rate_limit_last_report_timestamp_seconds", source="max", window="seven_day") == NOW - 600
    assert sample(m, "claude_rate_limit_status", source="max", window="seven_day_opus",
                  status="allowed_warning") == 1
    assert sample(m, "claude_rate_limit_status", source="max", window="seven_day_opus", status="rejected") == 0
    assert sample(m, "claude_rate_limit_status", source="max", window="five_hour", status="allowed") is None
    assert sample(m, "claude_rate_limit_stale", source="max", window="five_hour") == 0
    assert sample(m, "claude_log_lines_total", source="max", result="counted") == 3
    assert sample(m, "claude_log_lines_total", source="max", result="malformed_json") == 1
    assert sample(m, "claude_source_up", source="max") == 1
    assert sample(m, "claude_source_files", source="max") == 2
    # the pools: five_hour 3% left, under 5%; seven_day 80% left, over 50%
    assert sample(m, "claude_pool_remaining_ratio", pool="five") == pytest.approx(0.03)
    assert sample(m, "claude_breaker_open", pool="five") == 1
    assert sample(m, "claude_breaker_open", pool="week") == 0
    assert sample(m, "claude_pool_window_info", pool="five", source="max", window="five_hour") == 1
    assert sample(m, "claude_pool_info", pool="five", team="", plan="window", billed_basis="none",
                  estimate_basis="none") == 1
    assert sample(m, "claude_pool_period_end_timestamp_seconds", pool="five") == NOW + 3600
    assert sample(m, "claude_pool_credit_usd", pool="five") is None  # no dollars: the credit rules skip it
    assert snap.decisions["five"].to_json()["window"]["used_ratio"] == 0.97

    page = render(snap, snap.decisions, now=NOW)
    assert 'data-pool="five" data-breaker="open" data-window="five_hour"' in page
    assert '<span class="big">3.0%</span> of the window left' in page

    # a new process: the reports come back from the state, the files are not read again
    later = Refresher(cfg, clock=lambda: NOW + 10)
    try:
        assert [r.used for r in later.ingestor.rate_limits.reports()] == [D("0.97"), D("0.2"), D("0.8")]
        later.refresh_logs()
        assert later.snapshot().log_lines[("max", "counted")] == 3
        assert later.snapshot().decisions["five"].open
    finally:
        later.stop()


def test_a_window_pools_breaker_closes_when_the_window_resets_and_a_new_report_comes(tmp_path: Path):
    records = tmp_path / "statusline.jsonl"
    records.write_text(statusline(97, 10, NOW - 60, NOW + 600))
    cfg = parse_config(config(tmp_path, records))
    with freeze_time(datetime.fromtimestamp(NOW, UTC)) as frozen:
        refresher = Refresher(cfg, clock=lambda: time.time())
        try:
            refresher.refresh_logs()
            assert refresher.snapshot().decisions["five"].open
            frozen.tick(600)  # resets_at: the window started again
            refresher.refresh_logs()
            d = refresher.snapshot().decisions["five"]
            assert not d.open and "taken as unused until a new report" in d.reason
            with records.open("a") as f:
                f.write(statusline(4, 10, NOW + 610, NOW + 600 + 5 * 3600))
            frozen.tick(10)
            refresher.refresh_logs()
            d = refresher.snapshot().decisions["five"]
            assert not d.open and d.remaining_ratio == D("0.96")
            assert refresher.snapshot().rate_limits[0].resets_at == NOW + 600 + 5 * 3600
        finally:
            refresher.stop()


def test_an_older_report_read_later_does_not_replace_a_newer_one(tmp_path: Path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(statusline(50, None, NOW - 10, NOW + 3600))
    cfg = parse_config(config(tmp_path, tmp_path) | {
        "sources": [{"name": "max", "kind": "rate_limits", "paths": [str(a), str(b)]}]})
    refresher = Refresher(cfg, clock=lambda: NOW)
    try:
        refresher.refresh_logs()
        b.write_text(statusline(90, None, NOW - 3000, NOW + 3600))
        refresher.refresh_logs()
        assert refresher.snapshot().rate_limits[0].used == D("0.5")
    finally:
        refresher.stop()


# --------------------------------------------------------------------------- end to end


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _statusline_cmd(out: Path, payload: dict) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "exporter", "statusline", "--out", str(out)],
                          input=json.dumps(payload).encode(), capture_output=True, timeout=30, check=False)
    assert done.returncode == 0 and done.stdout.strip(), done


def test_serve_exposes_the_windows_and_a_window_pools_breaker_opens_and_closes(exporter_factory, tmp_path: Path):
    records = tmp_path / "records" / "statusline.jsonl"
    cfg = _write(tmp_path / "c.yaml", config(tmp_path, records))
    e = exporter_factory(["--config", str(cfg)]).start()
    soon = int(time.time()) + 6
    _statusline_cmd(records, {"session_id": "s1", "model": {"id": "claude-opus-4-6", "display_name": "Opus"},
                              "rate_limits": {"five_hour": {"used_percentage": 97, "resets_at": soon},
                                              "seven_day": {"used_percentage": 12, "resets_at": soon + 86400}}})
    m = e.wait_for(lambda s: sample(s, "claude_breaker_open", pool="five") == 1, what="the five_hour breaker opens")
    assert sample(m, "claude_rate_limit_used_ratio", source="max", window="five_hour") == 0.97
    assert sample(m, "claude_rate_limit_used_ratio", source="max", window="seven_day") == 0.12
    assert sample(m, "claude_breaker_open", pool="week") == 0
    env = clean_env()
    r = run_cli("check", "--pool", "five", "--url", e.url, env=env)
    assert r.returncode == 1 and r.stdout.startswith("open: five: the five_hour window of max is 97% used"), r
    assert run_cli("check", "--pool", "week", "--url", e.url, env=env).returncode == 0

    while time.time() < soon + 0.5:  # the window resets, and Claude Code reports the new one
        time.sleep(0.1)
    _statusline_cmd(records, {"session_id": "s1", "rate_limits": {
        "five_hour": {"used_percentage": 2, "resets_at": soon + 5 * 3600},
        "seven_day": {"used_percentage": 13, "resets_at": soon + 86400}}})
    m = e.wait_for(lambda s: sample(s, "claude_rate_limit_used_ratio", source="max", window="five_hour") == 0.02,
                   what="the new report")
    assert sample(m, "claude_breaker_open", pool="five") == 0
    r = run_cli("check", "--pool", "five", "--url", e.url, env=env)
    assert r.returncode == 0 and "2% used" in r.stdout, r
    e.stop()
    # without --url, from the state the exporter left
    r = run_cli("check", "--pool", "five", "--config", str(cfg), env=env)
    assert r.returncode == 0 and "from state on disk" in r.stdout, r
