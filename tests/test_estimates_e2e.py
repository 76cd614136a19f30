"""Estimated spend end to end: a generated corpus, the real CLI and a real serving exporter.

The generator prices every unique request with its own table, so these totals are checked
against a computation that shares no code with the exporter.
"""

from __future__ import annotations

import json
import os
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import clean_env, run_cli
from tests.corpus import Expected, generate, price_request

CENT = Decimal("0.01")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Expected]:
    root = tmp_path_factory.mktemp("corpus")
    exp = generate(root, files=80, requests=4000, seed=7, days=20)
    return root, exp


def _config(tmp: Path, root: Path) -> Path:
    cfg = tmp / "config.yaml"
    cfg.write_text(f"refresh_interval: 200ms\nsources:\n  - name: claude-code\n    kind: claude_code\n"
                   f"    paths: [{root / 'projects'}]\n")
    return cfg


def _total(exp: Expected) -> Decimal:
    return exp.totals().cost_usd


def _served_total(samples) -> Decimal:
    return sum((Decimal(repr(v)) for (name, _), v in samples.items() if name == "claude_estimated_cost_usd_total"),
               Decimal(0))


def test_report_json_equals_the_generator_to_the_cent(corpus, tmp_path: Path) -> None:
    root, exp = corpus
    r = run_cli("report", "--json", "--config", str(_config(tmp_path, root)), "--state-dir", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    want_days = exp.day_costs()
    got_days = {d["date"]: Decimal(str(d["estimated_usd"])) for d in rep["days"]}
    assert set(got_days) == set(want_days)
    for day, want in want_days.items():
        assert abs(got_days[day] - want) < CENT / 100, day
        for m in rep["days"][[d["date"] for d in rep["days"]].index(day)]["models"]:
            agg = exp.days[day][m["model"]]
            assert (m["requests"], m["input_tokens"], m["output_tokens"], m["cache_read_tokens"],
                    m["cache_write_5m_tokens"], m["cache_write_1h_tokens"]) == (
                agg.requests, agg.input, agg.output, agg.cache_read, agg.cache_write_5m, agg.cache_write_1h)
    assert Decimal(str(rep["totals"]["estimated_usd"])).quantize(CENT) == _total(exp).quantize(CENT)
    assert rep["totals"]["requests"] == exp.totals().requests
    assert exp.long_context_requests > 0  # the corpus did exercise the 200k rule


def test_a_first_report_leaves_its_commit_to_the_next_one_without_losing_it(corpus, tmp_path: Path) -> None:
    """The first read's commit stays in the WAL when report exits; the next run reads it and
    copies it into the database."""
    root, exp = corpus
    args = ("--log-level", "info", "report", "--json", "--config", str(_config(tmp_path, root)),
            "--state-dir", str(tmp_path / "s"))
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "logs_ingested" in first.stderr
    wal = tmp_path / "s" / "state.sqlite3-wal"
    assert wal.stat().st_size > 100_000
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == json.loads(first.stdout)
    assert Decimal(str(json.loads(second.stdout)["totals"]["estimated_usd"])).quantize(CENT) == \
        _total(exp).quantize(CENT)
    assert not wal.exists() or wal.stat().st_size == 0
    assert "logs_ingested" not in second.stderr  # nothing read twice


def test_serve_survives_kill_deletion_truncation_rotation_exactly(corpus, tmp_path: Path, exporter_factory) -> None:
    src, exp = corpus
    root = tmp_path / "logs"
    # a private copy: this test deletes, truncates and rotates files
    for p in src.rglob("*.jsonl"):
        dst = root / p.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(p.read_bytes())
    cfg = _config(tmp_path, root)
    args = ["--config", str(cfg), "--state-dir", str(tmp_path / "state")]
    want = _total(exp).quantize(CENT)

    # kill -9 at several points of start-up and the first ingest, then a clean restart
    for delay in (0.4, 0.7, 1.0, 1.3):
        e = exporter_factory(args, clean_env()).start(wait=0)
        time.sleep(delay)
        e.kill9()
    e = exporter_factory(args, clean_env()).start(wait=60)
    assert _served_total(e.metrics()).quantize(CENT) == want

    files = sorted(root.rglob("*.jsonl"))
    for p in files[::2]:  # Claude Code's 30-day purge, halved
        p.unlink()
    victim = files[1]
    with open(victim, "r+b") as f:  # truncated to half
        f.truncate(victim.stat().st_size // 2)
    # rotation: the file is renamed away and a new one takes its path, with one new request
    rotated = files[3]
    os.rename(rotated, str(rotated) + ".1")
    ts = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 60))
    new_line = {"type": "assistant", "timestamp": ts, "requestId": "req_rotation_new", "entrypoint": "cli",
                "message": {"id": "msg_rotation_new", "model": "claude-haiku-4-5-20251001", "role": "assistant",
                            "content": [], "usage": {"input_tokens": 1000, "output_tokens": 2000,
                                                     "cache_read_input_tokens": 0,
                                                     "cache_creation_input_tokens": 0}}}
    rotated.write_bytes(json.dumps(new_line).encode() + b"\n")
    extra = price_request("claude-haiku-4-5-20251001", 1000, 2000, 0, 0, 0)

    def settled(s) -> bool:
        return _served_total(s).quantize(CENT) == (want + extra).quantize(CENT)

    e.wait_for(settled, timeout=30, what="the rotated file's new request")
    e.kill9()
    e = exporter_factory(args, clean_env()).start(wait=60)
    s = e.metrics()
    assert _served_total(s).quantize(CENT) == (want + extra).quantize(CENT)
    lines = {dict(k[1])["result"]: v for k, v in s.items() if k[0] == "claude_log_lines_total"}
    assert lines["malformed_json"] >= exp.skipped["malformed_json"]
    assert lines["api_error"] == exp.skipped["api_error"] and lines["synthetic"] == exp.skipped["synthetic"]
