"""5-hour blocks from the logs (as ccusage computes them): the rule, the gauges of the current one,
and ``report --blocks``. The comparison with ccusage itself is bench/bench_blocks.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from prometheus_client import generate_latest

from exporter.config import parse_config
from exporter.core.blocks import FIELDS, HourlyFigures, blocks, current_block
from exporter.expose.metrics import ExporterCollector, make_registry
from exporter.expose.report import build_blocks
from exporter.refresh import Refresher
from exporter.state import AGG_COLUMNS, AGG_COST_PICO, AGG_INPUT, AGG_REQUESTS
from tests.conftest import clean_env, parse_metrics, run_cli, sample

H = 3600
T0 = int(datetime(2026, 11, 20, 9, tzinfo=UTC).timestamp())  # 09:00 UTC


def hours(*spec: tuple[float, int]) -> dict[int, list[int]]:
    """(hours after 09:00, requests) -> per-hour figures: each request 100 input, 10 output, $0.25."""
    out: dict[int, list[int]] = {}
    for at, n in spec:
        out[T0 + int(at * H)] = [n, 100 * n, 10 * n, 0, 0, 0, n * 250_000_000_000]
    return out


def starts(found) -> list[float]:
    return [(b.start - T0) / H for b in found]


def test_a_block_lasts_5_hours_from_the_hour_of_its_first_request():
    found = blocks(hours((0, 2), (4, 1), (5, 1), (9, 1), (10, 3)))
    assert starts(found) == [0, 5, 10]
    assert [(b.end - b.start) / H for b in found] == [5, 5, 5]
    assert [b.requests for b in found] == [3, 2, 3]
    assert [b.cost_usd for b in found] == [Decimal("0.75"), Decimal("0.5"), Decimal("0.75")]
    assert found[0].figures == (3, 300, 30, 0, 0, 0, 750_000_000_000)


def test_after_a_gap_the_next_block_starts_at_the_next_request_and_gaps_are_not_blocks():
    found = blocks(hours((0, 1), (2, 1), (13, 1), (30, 1)))
    assert starts(found) == [0, 13, 30]
    assert [b.last_hour for b in found] == [T0 + 2 * H, T0 + 13 * H, T0 + 30 * H]


def test_hours_without_requests_are_not_activity():
    assert blocks({T0: [0] * FIELDS, T0 + H: [0, 5, 0, 0, 0, 0, 0]}) == []


def test_the_current_block_its_burn_and_its_projection():
    h = hours((0, 1), (6, 2))  # a block from 15:00
    now = T0 + 7 * H + 30 * 60  # 16:30: 1.5 h into it
    b = current_block(h, now)
    assert b is not None and b.start == T0 + 6 * H
    q = Decimal("1e-20")
    assert b.burn_rate_per_hour(now).quantize(q) == (Decimal("0.5") / Decimal("1.5")).quantize(q)
    assert b.projected_usd(now).quantize(q) == (Decimal("0.5") + Decimal("0.5") * Decimal("3.5") / Decimal("1.5")
                                                ).quantize(q)
    assert current_block(h, T0 + 11 * H) is None  # 20:00: that block has ended
    assert b.burn_rate_per_hour(b.start) == Decimal("0.5") * 60  # a first minute, not infinity


def test_hourly_figures_follow_the_deltas_and_forget_old_hours():
    figures = HourlyFigures(keep_seconds=24 * H)
    columns = tuple(range(FIELDS))
    figures.apply({(T0, "cc", "m", "cli"): [1, 100, 10, 0, 0, 0, 5], (T0 - 30 * H, "cc", "m", "cli"): [9] * FIELDS},
                  columns, T0)
    figures.apply({(T0, "cc", "m2", "sdk-cli"): [2, 200, 20, 0, 0, 0, 7]}, columns, T0 + 60)
    assert figures.by_source == {"cc": {T0: [3, 300, 30, 0, 0, 0, 12]}}
    assert figures.current(T0 + 60)["cc"].requests == 3
    figures.apply({}, columns, T0 + 25 * H)
    assert figures.by_source == {"cc": {}}


# --------------------------------------------------------------------------- serving and report


def _transcript(path: Path, stamps: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps({
        "type": "assistant", "timestamp": ts, "requestId": f"req_{i}", "message": {
            "id": f"msg_{i}", "model": "claude-sonnet-4-5-20250929", "usage": {
                "input_tokens": 1000, "output_tokens": 100, "cache_read_input_tokens": 5000,
                "cache_creation_input_tokens": 400, "cache_creation": {"ephemeral_5m_input_tokens": 300,
                                                                       "ephemeral_1h_input_tokens": 100}}}})
        for i, ts in enumerate(stamps)) + "\n")


# each request: 1000 x $3 + 100 x $15 + 5000 x $0.30 + 300 x $3.75 + 100 x $6 per million = $0.007725
STAMPS = ["2026-11-20T09:12:00Z", "2026-11-20T13:59:00Z", "2026-11-20T14:01:00Z", "2026-11-20T16:40:00Z"]


def test_a_serving_exporter_shows_each_sources_current_block(tmp_path: Path):
    _transcript(tmp_path / "projects" / "p" / "s.jsonl", STAMPS)
    cfg = parse_config({"state_dir": str(tmp_path / "state"),
                        "sources": [{"name": "cc", "kind": "claude_code", "paths": [str(tmp_path / "projects")]}]})
    now = datetime(2026, 11, 20, 17, tzinfo=UTC).timestamp()  # 3 h into the block that began at 14:00
    refresher = Refresher(cfg, clock=lambda: now)
    try:
        refresher.refresh_logs()
        snap = refresher.snapshot()
    finally:
        refresher.stop()
    m = parse_metrics(generate_latest(make_registry(ExporterCollector(lambda: snap))).decode())
    start = datetime(2026, 11, 20, 14, tzinfo=UTC).timestamp()
    assert sample(m, "claude_block_start_timestamp_seconds", source="cc") == start
    assert sample(m, "claude_block_end_timestamp_seconds", source="cc") == start + 5 * H
    assert sample(m, "claude_block_requests", source="cc") == 2
    assert sample(m, "claude_block_cost_usd", source="cc") == 0.01545
    assert sample(m, "claude_block_tokens", source="cc", token_type="cache_write_1h") == 200
    assert sample(m, "claude_block_burn_rate_usd_per_hour", source="cc") == 0.00515
    assert sample(m, "claude_block_projected_cost_usd", source="cc") == 0.02575


def test_report_blocks_as_json_and_as_a_table(tmp_path: Path):
    _transcript(tmp_path / "claude" / "projects" / "p" / "s.jsonl", STAMPS)
    env = clean_env(CLAUDE_CONFIG_DIR=str(tmp_path / "claude"))
    r = run_cli("report", "--blocks", "--json", "--state-dir", str(tmp_path / "state"), env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"blocks": [
        {"start": "2026-11-20T09:00:00Z", "end": "2026-11-20T14:00:00Z", "cost_usd": 0.01545, "input_tokens": 2000,
         "output_tokens": 200, "cache_read_tokens": 10000, "cache_write_tokens": 800, "requests": 2,
         "active": False},
        {"start": "2026-11-20T14:00:00Z", "end": "2026-11-20T19:00:00Z", "cost_usd": 0.01545, "input_tokens": 2000,
         "output_tokens": 200, "cache_read_tokens": 10000, "cache_write_tokens": 800, "requests": 2,
         "active": False},
    ]}
    r = run_cli("report", "--blocks", "--since", "2026-11-20", "--state-dir", str(tmp_path / "state"), env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["Block", "(UTC)", "Requests", "Input", "Output", "Cache", "write", "Cache", "read",
                                "Cost"]
    assert lines[2].split() == ["2026-11-20", "09:00-14:00", "2", "2,000", "200", "800", "10,000", "$0.02"]
    assert lines[-1].split() == ["Total", "4", "4,000", "400", "1,600", "20,000", "$0.03"]


def test_the_active_block_carries_its_burn_and_projection():
    row = [0] * len(AGG_COLUMNS)
    row[AGG_REQUESTS], row[AGG_INPUT], row[AGG_COST_PICO] = 1, 100, 10**12
    aggregates = {(T0 + 6 * H, "cc", "m", "cli"): row}
    (b,) = build_blocks(aggregates, now=T0 + 8 * H)["blocks"]
    assert b["active"] is True and b["cost_usd"] == 1.0
    assert b["burn_rate_usd_per_hour"] == 0.5 and b["projected_usd"] == 2.5
