"""A newcomer's first run and the bad input an operator types: each case says what went wrong,
in words, with the path or value it is about, and the exporter shows it where people look
(/metrics, the status page, the log, the command's exit code)."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import socket
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from prometheus_client import generate_latest

from exporter.app import build_app
from exporter.billing.client import AdminApiClient, AdminApiHTTPError, AdminApiRateLimited
from exporter.config import load_config, parse_config, parse_listen
from exporter.config.model import ConfigError, PoolConfig, SourceConfig
from exporter.core.budget import PoolInputs, compute_pool
from exporter.core.windows import WindowReport, window_pool_states
from exporter.demo.org import nothing_to_read
from exporter.expose.statuspage import render
from exporter.logs import watch as watch_mod
from exporter.logs.ingestor import Ingestor
from exporter.prices import load_pricer
from exporter.refresh import Refresher, Snapshot
from exporter.state import StateDB
from tests.admin_fixtures import KEY, NOW, VirtualTime
from tests.conftest import clean_env, free_port, parse_metrics, run_cli, sample
from tests.fake_admin_api import FakeAdminApi

HAIKU = "claude-haiku-4-5-20251001"


def _transcript_line(n: int, ts: str) -> str:
    return json.dumps({"type": "assistant", "timestamp": ts, "requestId": f"req_{n}",
                       "message": {"id": f"msg_{n}", "model": HAIKU,
                                   "usage": {"input_tokens": 1000, "output_tokens": 100}}}) + "\n"


# --------------------------------------------------------------------------- bad arguments, said in words


def test_a_port_out_of_range_is_said_so() -> None:
    with pytest.raises(ValueError, match=r"port 99999 is out of range: a port is 0\.\.65535"):
        parse_listen("127.0.0.1:99999")
    with pytest.raises(ConfigError) as exc:
        parse_config({"listen": "0.0.0.0:70000"})
    assert any("listen: port 70000 is out of range" in p for p in exc.value.problems)
    assert parse_listen("[::1]:65535") == ("::1", 65535)
    with pytest.raises(ValueError, match="must be HOST:PORT"):
        parse_listen("localhost")
    r = run_cli("serve", "--listen", "127.0.0.1:99999")
    assert r.returncode == 2 and "--listen: port 99999 is out of range" in r.stderr, r.stderr


@pytest.mark.parametrize(("day", "said"), [
    ("2026-13-01", "'2026-13-01' is not a day: there is no month 13"),
    ("2026-02-30", "'2026-02-30' is not a day: February 2026 has days 01..28"),
    ("yesterday", "'yesterday' is not a day: write it as YYYY-MM-DD"),
])
def test_report_refuses_a_day_that_is_not_one_in_words(day: str, said: str, tmp_path: Path) -> None:
    r = run_cli("report", "--since", day, "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 2
    assert f"argument --since: {said}" in r.stderr, r.stderr
    assert "fromisoformat" not in r.stderr and "Traceback" not in r.stderr


def test_report_with_since_after_until_says_so_instead_of_an_empty_table(tmp_path: Path) -> None:
    r = run_cli("report", "--since", "2026-05-02", "--until", "2026-05-01", "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 2
    assert "--since 2026-05-02 is after --until 2026-05-01" in r.stderr, r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "state" / "state.sqlite3").exists()  # nothing was read


def test_check_without_url_says_it_read_the_local_config_and_suggests_url(tmp_path: Path) -> None:
    r = run_cli("check", "--pool", "agent-sdk", "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 2
    assert "no pool named 'agent-sdk' in the local config (built-in default" in r.stderr, r.stderr
    assert "--url http://HOST:9833" in r.stderr


def test_demo_finds_the_port_taken_before_it_builds_its_organisation(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        started = time.monotonic()
        r = run_cli("serve", "--demo", "--listen", f"127.0.0.1:{port}", env=clean_env(TMPDIR=str(tmp_path)))
    assert r.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr, r.stderr
    assert "organisation ready" not in r.stderr and "demo mode" not in r.stderr  # nothing was built
    assert not list(tmp_path.glob("claude-budget-demo-*"))
    assert time.monotonic() - started < 30


# --------------------------------------------------------------------------- an empty config, a scalar path


def test_an_empty_config_file_gives_the_same_hint_as_no_config(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("ANTHROPIC_ADMIN_API_KEY", raising=False)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    hint = nothing_to_read(load_config(empty))
    assert hint is not None and "serve --demo" in hint and "~/.claude/projects" in hint
    comments = tmp_path / "comments.yaml"
    comments.write_text("# nothing here yet\npools: []\n")
    assert nothing_to_read(load_config(comments)) is not None
    # a key named in the file that cannot be read is named in the hint
    keyed = tmp_path / "keyed.yaml"
    keyed.write_text(f"admin_api: {{key_file: {tmp_path / 'no-key'}}}\n")
    assert f"cannot read the admin key file {tmp_path / 'no-key'}" in (nothing_to_read(load_config(keyed)) or "")
    # sources the file names: each missing path is said on its own instead
    named = tmp_path / "named.yaml"
    named.write_text(f"sources: [{{name: cc, kind: claude_code, paths: [{tmp_path / 'nowhere'}]}}]\n")
    assert nothing_to_read(load_config(named)) is None


def test_a_scalar_paths_is_read_as_a_list_of_one(tmp_path: Path) -> None:
    cfg = parse_config({"sources": [{"name": "cli", "kind": "cli_json", "paths": "/var/log/x.jsonl"},
                                    {"name": "cc", "kind": "claude_code", "paths": str(tmp_path)}]})
    assert cfg.sources[0].paths == ("/var/log/x.jsonl",)
    assert cfg.sources[1].paths == (str(tmp_path),)


# --------------------------------------------------------------------------- an admin key that cannot be read


def _keyless_config(tmp_path: Path, *, several: bool = False) -> Any:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    api: Any = {"key_file": str(tmp_path / "missing-key"), "base_url": "http://127.0.0.1:9"}
    if several:
        api = [{"name": "prod", "key_env": "FIRST_RUN_TEST_KEY", "base_url": "http://127.0.0.1:9"},
               {"name": "lab", **api}]
    return parse_config({"state_dir": str(tmp_path / "state"), "admin_api": api,
                         "sources": [{"name": "cc", "kind": "claude_code", "paths": [str(logs)]}]},
                        origin=str(tmp_path / "c.yaml"))


def test_validate_config_warns_of_a_key_it_cannot_read_and_a_missing_folder(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"admin_api: {{key_file: {tmp_path / 'missing-key'}}}\n"
                   f"sources: [{{name: cc, kind: claude_code, paths: [{tmp_path / 'typo'}]}}]\n")
    r = run_cli("validate-config", str(cfg))
    assert r.returncode == 0, r.stderr  # valid: serve starts, and says what it lacks
    assert (f"warning: admin_api.key_file: cannot read the admin key file {tmp_path / 'missing-key'}: "
            "No such file or directory; serve will show the Admin API as down") in r.stderr, r.stderr
    assert f"warning: sources[0].paths[0]: {tmp_path / 'typo'} does not exist; the source will be down" in r.stderr
    env_cfg = tmp_path / "env.yaml"
    env_cfg.write_text("admin_api: {key_env: FIRST_RUN_UNSET_KEY}\nsources: []\n")
    r = run_cli("validate-config", str(env_cfg))
    assert r.returncode == 0
    assert "warning: admin_api.key_env: no admin key in $FIRST_RUN_UNSET_KEY" in r.stderr, r.stderr


@pytest.mark.parametrize("several", [False, True])
def test_serve_shows_an_organisation_whose_key_cannot_be_read_as_a_source_that_is_down(
        tmp_path: Path, monkeypatch, several: bool) -> None:
    monkeypatch.setenv("FIRST_RUN_TEST_KEY", "sk-ant-admin01-first-run-test-only")
    config = _keyless_config(tmp_path, several=several)
    with structlog.testing.capture_logs() as logs:
        app = build_app(config)
    try:
        app.refresher.refresh_logs()
        if not several:  # with several, the other organisation's poll would wait on a dead port
            app.refresher.poll_billing()
        name = "admin_api:lab" if several else "admin_api"
        source = next(s for s in app.refresher.snapshot().sources if s.name == name)
        why = f"cannot read the admin key file {tmp_path / 'missing-key'}: No such file or directory"
        assert not source.up and source.error == why
        said = [e for e in logs if e["event"] == "admin_api_key_missing"]
        assert len(said) == 1 and said[0]["reason"] == why and name in said[0]["consequence"]
        metrics = parse_metrics(generate_latest(app.service.registry).decode())
        assert sample(metrics, "claude_source_up", source=name) == 0  # ClaudeAdminApiDown can fire
        page = app.service.status_page()
        row = re.search(rf'<tr data-source="{re.escape(name)}">.*?</tr>', page, re.S)
        assert row is not None and ">down<" in row.group(0) and "cannot read the admin key file" in row.group(0)
    finally:
        app.stop()


def test_report_with_a_key_it_cannot_read_exits_3_and_says_why(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    (tmp_path / "logs").mkdir()
    cfg.write_text(f"admin_api: {{key_file: {tmp_path / 'missing-key'}, base_url: 'http://127.0.0.1:9'}}\n"
                   f"sources: [{{name: cc, kind: claude_code, paths: [{tmp_path / 'logs'}]}}]\n")
    r = run_cli("report", "--json", "--config", str(cfg), "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 3, r.stderr
    assert "cannot read the admin key file" in json.loads(r.stdout)["billed_error"]
    r = run_cli("report", "--config", str(cfg), "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 3
    assert "Billed figures could not be fetched: Admin API: cannot read the admin key file" in r.stdout, r.stdout
    r = run_cli("report", "--blocks", "--config", str(cfg), "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 0, r.stderr  # blocks show no bill


def test_report_whose_read_fails_on_a_full_disk_says_so_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    """A split read writes its helpers' batches beside the state: a full disk is a plain line, not a traceback."""
    import exporter.app
    from exporter import cli

    def full(*_a: Any, **_k: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "state" / "read-spool" / "1-0"))

    monkeypatch.setattr(exporter.app, "build_report", full)
    monkeypatch.setattr(cli.logsetup, "configure", lambda *_a, **_k: None)  # this process's logging stays as it is
    (tmp_path / "logs").mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"sources: [{{name: cc, kind: claude_code, paths: [{tmp_path / 'logs'}]}}]\n")
    assert cli.main(["report", "--json", "--config", str(cfg), "--state-dir", str(tmp_path / "state")]) == cli.EXIT_FAIL
    err = capsys.readouterr().err
    assert "the read failed, nothing of it was stored: [Errno 28] No space left on device" in err
    assert "Traceback" not in err


def test_report_says_warnings_only_unless_asked_for_more(tmp_path: Path) -> None:
    """A report's stderr is for what needs a look (an unpriced model), not for the news of a read."""
    logs = tmp_path / "logs"
    logs.mkdir()
    usage = {"input_tokens": 10, "output_tokens": 5}
    (logs / "s.jsonl").write_text("".join(json.dumps(
        {"type": "assistant", "timestamp": "2026-11-20T10:00:00Z", "requestId": f"req_{m}",
         "message": {"id": f"msg_{m}", "model": m, "usage": usage}}) + "\n" for m in ("claude-sonnet-4-6", "gpt-9")))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"sources: [{{name: cc, kind: claude_code, paths: [{logs}]}}]\n")
    quiet = run_cli("--log-format", "json", "report", "--json", "--config", str(cfg), "--state-dir", str(tmp_path / "a"))
    assert quiet.returncode == 0, quiet.stderr
    assert [json.loads(x)["event"] for x in quiet.stderr.splitlines()] == ["model_unpriced"]
    loud = run_cli("--log-format", "json", "--log-level", "info", "report", "--json", "--config", str(cfg),
                   "--state-dir", str(tmp_path / "b"))
    events = [json.loads(x)["event"] for x in loud.stderr.splitlines()]
    assert "model_unpriced" in events and "logs_ingested" in events
    assert json.loads(loud.stdout) == json.loads(quiet.stdout)


# --------------------------------------------------------------------------- log paths missing or unreadable


def _ingestor(tmp_path: Path, *sources: SourceConfig, watch: bool = False) -> Ingestor:
    return Ingestor(sources, StateDB(tmp_path / f"state-{time.monotonic_ns()}"), load_pricer(), watch=watch)


def test_a_log_path_that_does_not_exist_is_said_with_its_path_and_the_source_is_down(tmp_path: Path) -> None:
    typo = tmp_path / "projcets"
    ing = _ingestor(tmp_path, SourceConfig("cc", "claude_code", (str(typo),)),
                    SourceConfig("two", "claude_code", (str(tmp_path / "there"), str(tmp_path / "gone" / "*.jsonl"))))
    (tmp_path / "there").mkdir()
    with structlog.testing.capture_logs() as logs:
        ing.refresh()
        ing.refresh()  # said once while it lasts
    missing = [e for e in logs if e["event"] == "log_path_missing"]
    assert [(e["source"], e["path"]) for e in missing] == [("cc", str(typo)), ("two", str(tmp_path / "gone" / "*.jsonl"))]
    assert "the source is down" in missing[0]["consequence"]
    assert "other paths are read" in missing[1]["consequence"]
    assert ing.status["cc"].error == f"not found: {typo}" and ing.status["cc"].missing == (str(typo),)
    assert ing.status["two"].error is None and ing.status["two"].missing == (str(tmp_path / "gone" / "*.jsonl"),)
    typo.mkdir()
    with structlog.testing.capture_logs() as logs:
        ing.refresh()
    assert [(e["event"], e["path"]) for e in logs if e["event"].startswith("log_path")] == [("log_path_found", str(typo))]
    assert ing.status["cc"].error is None and ing.status["cc"].missing == ()
    ing.close()


def test_claude_codes_own_folders_missing_are_not_a_problem(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    (tmp_path / ".claude" / "projects").mkdir(parents=True)
    for paths in (("~/.claude/projects", "~/.config/claude/projects"), ("~/.config/claude/projects",)):
        ing = _ingestor(tmp_path, SourceConfig("claude-code", "claude_code", paths))
        with structlog.testing.capture_logs() as logs:
            ing.refresh()
        assert not [e for e in logs if e["event"] == "log_path_missing"]
        assert ing.status["claude-code"].error is None
        ing.close()


class _RefusingLibc:
    """The C library, except that inotify refuses ``refused`` as it refuses a folder this user may not read."""

    def __init__(self, real: Any, refused: str) -> None:
        self._real, self._refused = real, os.fsencode(refused)

    def inotify_add_watch(self, fd: int, path: bytes, mask: int) -> int:
        if path == self._refused:
            ctypes.set_errno(errno.EACCES)
            return -1
        return int(self._real.inotify_add_watch(fd, path, mask))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_an_unreadable_folder_is_said_with_its_path_and_leaves_the_folder_watch_alone(
        tmp_path: Path, monkeypatch) -> None:
    if watch_mod._libc() is None:
        pytest.skip("no inotify here")
    logs_dir = tmp_path / "logs"
    locked, fine = logs_dir / "locked", logs_dir / "fine"
    locked.mkdir(parents=True)
    fine.mkdir()
    (fine / "s.jsonl").write_text(_transcript_line(1, "2026-11-17T10:00:00Z"))
    real = watch_mod._libc()
    monkeypatch.setattr(watch_mod, "_libc", lambda: _RefusingLibc(real, str(locked)))
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:  # what a folder without r-x for this user answers (root reads anything)
        if os.fspath(path) == str(locked):
            raise PermissionError(errno.EACCES, "Permission denied", str(locked))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    ing = _ingestor(tmp_path, SourceConfig("cc", "claude_code", (str(logs_dir),)), watch=True)
    with structlog.testing.capture_logs() as logs:
        ing.refresh()
        ing.refresh()
    events = [e["event"] for e in logs]
    assert "log_watch_unavailable" not in events  # no word of inotify limits: it is a permission
    said = [e for e in logs if e["event"] == "log_folder_unreadable"]
    assert len(said) == 1 and said[0]["path"] == str(locked) and said[0]["error"] == "Permission denied"
    assert ing.status["cc"].error == f"{locked}: Permission denied"
    watcher = ing._finder.watcher
    assert watcher is not None and watcher.usable  # the other folders are still watched
    monkeypatch.setattr(os, "scandir", real_scandir)
    with structlog.testing.capture_logs() as logs:
        ing.refresh()
    assert [e["event"] for e in logs if e["event"].startswith("log_path")] == ["log_path_readable_again"]
    assert ing.status["cc"].error is None
    ing.close()


def test_the_status_page_says_which_paths_are_missing(tmp_path: Path) -> None:
    (tmp_path / "there").mkdir()
    config = parse_config({"state_dir": str(tmp_path / "state"), "sources": [
        {"name": "cc", "kind": "claude_code", "paths": [str(tmp_path / "typo")]},
        {"name": "two", "kind": "claude_code", "paths": [str(tmp_path / "there"), str(tmp_path / "gone")]}]})
    refresher = Refresher(config)
    try:
        refresher.refresh_logs()
        snap = refresher.snapshot()
        page = render(snap, snap.decisions, now=time.time())
    finally:
        refresher.stop()
    cc = re.search(r'<tr data-source="cc">.*?</tr>', page, re.S)
    two = re.search(r'<tr data-source="two">.*?</tr>', page, re.S)
    assert cc is not None and ">down<" in cc.group(0) and f"not found: {tmp_path / 'typo'}" in cc.group(0)
    assert two is not None and ">up<" in two.group(0) and f"0 files; not found: {tmp_path / 'gone'}" in two.group(0)


# --------------------------------------------------------------------------- report: patient with the Admin API


@pytest.fixture
def fake() -> Any:
    with FakeAdminApi(key=KEY, now=NOW) as f:
        yield f


def test_a_retry_budget_outlasts_five_faults_and_honours_retry_after(fake: FakeAdminApi) -> None:
    start, end = datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC)
    fake.inject("500", count=8)
    vt = VirtualTime()
    with AdminApiClient(fake.url, KEY, sleep=vt.sleep, clock=vt.clock) as c, pytest.raises(AdminApiHTTPError):
        c.cost_report(start, end)  # the serving poller's few retries: its next poll comes soon
    fake.clear_faults()
    fake.inject("500", count=8)
    vt = VirtualTime()
    with AdminApiClient(fake.url, KEY, sleep=vt.sleep, clock=vt.clock, retry_for=120) as c:
        c.cost_report(start, end)
    assert len(vt.sleeps) == 8 and sum(vt.sleeps) <= 120
    # a retry-after is waited out in full while the budget holds it, and not past it
    fake.inject("429", count=2, retry_after=50)
    vt = VirtualTime()
    with AdminApiClient(fake.url, KEY, sleep=vt.sleep, clock=vt.clock, retry_for=120) as c:
        c.cost_report(start, end)
    assert vt.sleeps == [50, 50]
    fake.inject("429", count=None, retry_after=50)
    vt = VirtualTime()
    with AdminApiClient(fake.url, KEY, sleep=vt.sleep, clock=vt.clock, retry_for=120) as c, \
            pytest.raises(AdminApiRateLimited):
        c.cost_report(start, end)
    assert vt.sleeps == [50, 50]  # a third wait would end past the budget
    fake.clear_faults()
    fake.inject("500", count=None)
    vt = VirtualTime()
    with AdminApiClient(fake.url, KEY, sleep=vt.sleep, clock=vt.clock, retry_for=60) as c, \
            pytest.raises(AdminApiHTTPError):
        c.cost_report(start, end)
    assert sum(vt.sleeps) == pytest.approx(60, abs=0.5)  # the last wait is cut to what is left


def test_report_waits_out_a_rate_limit_and_reports_the_bill(fake: FakeAdminApi, tmp_path: Path) -> None:
    fake.set_now(datetime.now(UTC))
    fake.add_spend(datetime.now(UTC) - timedelta(days=1), "250", workspace_id=None,
                   model="claude-sonnet-4-5-20250929", token_type="output_tokens", tokens=1000)
    (tmp_path / "logs").mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"admin_api: {{key_env: FIRST_RUN_KEY, base_url: '{fake.url}', api: legacy}}\n"
                   f"sources: [{{name: cc, kind: claude_code, paths: [{tmp_path / 'logs'}]}}]\n")
    fake.inject("429", count=6, retry_after=1)  # six in a row: more than the five faults a report gave up after
    r = run_cli("report", "--json", "--config", str(cfg), "--state-dir", str(tmp_path / "state"),
                env=clean_env(FIRST_RUN_KEY=KEY))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["billed_error"] is None
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert [d["billed_usd"] for d in report["days"] if d["date"] == yesterday] == [2.5]
    fake.inject("500", count=None)
    r = run_cli("report", "--config", str(cfg), "--state-dir", str(tmp_path / "state"), "--admin-api-wait", "2s",
                env=clean_env(FIRST_RUN_KEY=KEY))
    assert r.returncode == 3, r.stderr
    assert "Billed figures could not be fetched: Admin API: " in r.stdout and "500" in r.stdout
    assert "the billed figures shown are the last stored ones" in r.stdout
    assert KEY not in r.stdout + r.stderr


# --------------------------------------------------------------------------- the status page's charts


def _pool(**kw: Any) -> PoolConfig:
    return PoolConfig(**{"name": "p", "credit_usd": Decimal(100), **kw})


def test_a_pools_days_add_up_to_its_spend() -> None:
    from exporter.config.model import PoolMatch

    now = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
    est = {datetime(2026, 3, d, h, tzinfo=UTC): Decimal("1.5") for d in range(1, 11) for h in (9, 14)
           if datetime(2026, 3, d, h, tzinfo=UTC) <= now}
    billed = {date(2026, 3, d): Decimal("3.3") for d in range(1, 10)}
    pool = _pool(match=PoolMatch(workspaces=("default",), sources=("s",)))
    st = compute_pool(pool, PoolInputs(billed_by_day=billed, billed_complete_through=date(2026, 3, 8),
                                       estimated_by_hour=est), now)
    assert [b.start.date() for b in st.buckets] == [date(2026, 3, d) for d in range(1, 11)]
    assert sum(b.spend_billed for b in st.buckets) == st.spend_billed == Decimal("26.4")
    assert sum(b.spend_estimated for b in st.buckets) == pytest.approx(st.spend_estimated, abs=Decimal("1e-20"))
    nine, ten = st.buckets[8], st.buckets[9]
    assert nine.billed == Decimal("3.3") and nine.spend_billed == 0 and nine.estimated == Decimal(3)
    assert ten.billed is None and ten.spend_estimated == Decimal(3) / st.calibration
    rolling = compute_pool(_pool(match=PoolMatch(sources=("s",)), period=_rolling(24)),
                           PoolInputs(estimated_by_hour=est), now)
    assert rolling.bucket_hours == 1 and len(rolling.buckets) == 24
    assert sum(b.spend_estimated for b in rolling.buckets) == rolling.spend


def _rolling(hours: int) -> Any:
    from exporter.config.model import PeriodConfig

    return PeriodConfig(rolling_hours=hours)


def _svg(page: str, pool: str) -> str:
    section = re.search(rf'<section class="pool[^"]*" data-pool="{pool}".*?</section>', page, re.S)
    assert section is not None
    svg = re.search(r"<svg .*?</svg>", section.group(0), re.S)
    assert svg is not None, section.group(0)
    return svg.group(0)


def test_the_status_page_charts_each_pools_period_server_side() -> None:
    from exporter.config.model import PoolMatch, WindowRef

    now = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
    est = {datetime(2026, 3, d, 12, tzinfo=UTC): Decimal(4) for d in range(1, 11)}
    billed = {date(2026, 3, d): Decimal(5) for d in range(1, 10)}
    cal = compute_pool(_pool(match=PoolMatch(workspaces=("default",), sources=("s",))),
                       PoolInputs(billed_by_day=billed, billed_complete_through=date(2026, 3, 9),
                                  estimated_by_hour=est), now)
    roll = compute_pool(_pool(name="r", match=PoolMatch(sources=("s",)), period=_rolling(5)),
                        PoolInputs(estimated_by_hour={now.replace(minute=0) - timedelta(hours=2): Decimal(7)}), now)
    win = window_pool_states([_pool(name="w", window=WindowRef("max", "five_hour"))],
                             [WindowReport("max", "five_hour", now.timestamp() - 60, Decimal("0.62"),
                                           now.timestamp() + 2 * 3600)], now)
    other = WindowReport("max", "seven_day", now.timestamp() - 60, Decimal("0.3"), now.timestamp() + 3 * 86400)
    snap = Snapshot(built_at=now.timestamp(), pools=(cal, roll), window_pools=win, ready=True,
                    rate_limits=(other,))
    page = render(snap, {}, now=now.timestamp())

    svg = _svg(page, "p")
    assert 'role="img"' in svg and "Spend of p this period: $50.00 of $100.00" in svg
    assert svg.count('class="billed"') == 10 and svg.count('class="est"') == 1  # nine billed days, then today
    assert 'class="credit"' in svg and "credit $100.00" in svg
    assert 'class="proj"' in svg and "projected" in svg
    # today's estimate of $4 calibrated by the drift of 0.8
    assert "Mar 10: $50.00 so far this period (billed $45.00 + estimate $5.00)" in svg
    # the bars are cumulative: the billed part climbs day by day, then stays while the estimate adds on
    billed_heights = [float(h) for h in re.findall(r'class="billed"[^>]*height="([\d.]+)"', svg)]
    assert billed_heights[:9] == sorted(set(billed_heights[:9])) and billed_heights[9] == billed_heights[8]
    assert re.search(r"<(script|img|image|foreignObject|use)\b|href=", svg) is None  # drawn here, nothing fetched

    rsvg = _svg(page, "r")
    assert "at this rate" in rsvg and "5 h ago" in rsvg
    assert rsvg.count('class="est"') == 3  # cumulative: from the hour with spend on

    wsvg = _svg(page, "w")
    assert "62% used, resets in 2.0 h" in wsvg and 'class="used"' in wsvg and 'class="elapsed"' in wsvg
    assert "Subscription windows" in page and 'data-window="max/seven_day"' in page
    assert "30% used, resets in 3 days" in page


def test_the_page_stays_light_with_many_pools() -> None:
    from exporter.config.model import PoolMatch

    now = datetime(2026, 3, 30, 23, 30, tzinfo=UTC)
    est = {datetime(2026, 3, 1, tzinfo=UTC) + timedelta(hours=h): Decimal("0.1") for h in range(29 * 24)}
    pools = tuple(compute_pool(_pool(name=f"p{i}", match=PoolMatch(sources=("s",))),
                               PoolInputs(estimated_by_hour=est), now) for i in range(50))
    snap = Snapshot(built_at=now.timestamp(), pools=pools, ready=True)
    started = time.perf_counter()
    page = render(snap, {}, now=now.timestamp())
    assert time.perf_counter() - started < 2.0  # per request; a bound, not a benchmark
    assert page.count("<svg") == 50 and len(page) < 2_000_000
