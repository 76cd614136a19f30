"""Saved ``claude -p --output-format json`` results: tokens priced at our prices, the CLI's own
cost kept beside, the 5-minute/1-hour split of cache writes, the older format, other vendors'
models, and the time a result without a timestamp is booked at.

Expected dollars are worked out here by hand from published prices per million tokens:
Sonnet 4.5 $3 input, $15 output, $0.30 cache read, $3.75 5-minute write, $6 1-hour write;
Haiku 4.5 $1, $5, $0.10, $1.25, $2; web search $10 per 1,000 searches.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from prometheus_client import generate_latest

from exporter.logs import parse as readers
from exporter.expose.metrics import ExporterCollector, make_registry
from exporter.config import parse_config
from exporter.logs.dedup import AGG_COST_PICO, AGG_REPORTED_PICO, AGG_REQUESTS, AGG_TOKENS, AGG_UNPRICED
from exporter.logs.ingestor import Ingestor
from exporter.prices import load_pricer
from exporter.expose.report import build_report
from exporter.refresh import Refresher
from exporter.state import StateDB
from tests.conftest import parse_metrics, run_cli, sample

NOW = 1795000000.0  # 2026-11-18T07:06:40Z
SONNET = "claude-sonnet-4-5-20250929"
HAIKU = "claude-haiku-4-5-20251001"
M = Decimal(10**6)
PICO = 10**12


def sonnet(inp: int = 0, out: int = 0, cr: int = 0, cw5: int = 0, cw1h: int = 0) -> Decimal:
    return (inp * 3 + out * 15 + cr * Decimal("0.3") + cw5 * Decimal("3.75") + cw1h * 6) / M


def haiku(inp: int = 0, out: int = 0, cr: int = 0, cw5: int = 0, cw1h: int = 0) -> Decimal:
    return (inp * 1 + out * 5 + cr * Decimal("0.1") + cw5 * Decimal("1.25") + cw1h * 2) / M


def result(uuid: str, model_usage: dict | None = None, usage: dict | None = None, **extra) -> dict:
    obj: dict = {"type": "result", "subtype": "success", "is_error": False, "session_id": f"s-{uuid}",
                 "uuid": uuid, "timestamp": "2026-11-17T08:00:00Z", **extra}
    if model_usage is not None:
        obj["modelUsage"] = model_usage
    if usage is not None:
        obj["usage"] = usage
    return obj


def write(path: Path, objs: list[dict], mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as f:
        f.writelines(json.dumps(o) + "\n" for o in objs)
    return path


def ingestor(tmp: Path, log: Path, clock=lambda: NOW) -> Ingestor:
    cfg = parse_config({"sources": [{"name": "cli", "kind": "cli_json", "paths": [str(log)]}]}, env={})
    return Ingestor(cfg.sources, StateDB(tmp / "state"), load_pricer(cfg.price_overrides), clock=clock)


def by_model(ing: Ingestor) -> dict[str, dict]:
    """Per model: requests, tokens (5 types), our USD, the reported USD and unpriced tokens."""
    out: dict[str, dict] = {}
    for (_h, _s, model, _e), v in ing.aggregates.items():
        m = out.setdefault(model, {"requests": 0, "tokens": [0] * 5, "usd": Decimal(0), "reported": Decimal(0),
                                   "unpriced": 0})
        m["requests"] += v[AGG_REQUESTS]
        m["tokens"] = [a + b for a, b in zip(m["tokens"], v[AGG_TOKENS], strict=True)]
        m["usd"] += Decimal(v[AGG_COST_PICO]) / PICO
        m["unpriced"] += v[AGG_UNPRICED]
        m["reported"] += Decimal(v[AGG_REPORTED_PICO]) / PICO
    return out


# ----------------------------------------------------------------------------- the 5m/1h split


def test_one_model_takes_the_cache_write_split_of_usage(tmp_path: Path) -> None:
    log = write(tmp_path / "cli.jsonl", [result(
        "u1", usage={"input_tokens": 100, "output_tokens": 50, "cache_read_input_tokens": 2000,
                     "cache_creation_input_tokens": 4000,
                     "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 3000}},
        model_usage={SONNET: {"inputTokens": 100, "outputTokens": 50, "cacheReadInputTokens": 2000,
                              "cacheCreationInputTokens": 4000, "webSearchRequests": 0, "costUSD": 0.02}},
        total_cost_usd=0.02)])
    ing = ingestor(tmp_path, log)
    ing.refresh()
    got = by_model(ing)[SONNET]
    assert got["tokens"] == [100, 50, 2000, 1000, 3000]
    # 300 + 750 + 600 + 3750 + 18000 = 23400 micro-dollars: the 1-hour writes at $6, not $3.75
    assert got["usd"] == sonnet(inp=100, out=50, cr=2000, cw5=1000, cw1h=3000) == Decimal("0.0234")
    assert got["reported"] == Decimal("0.02")


def test_several_models_split_only_the_one_whose_writes_the_split_adds_up_to(tmp_path: Path) -> None:
    split = {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 3000}
    log = write(tmp_path / "cli.jsonl", [
        result("u1", usage={"cache_creation_input_tokens": 4000, "cache_creation": split},
               model_usage={SONNET: {"inputTokens": 10, "outputTokens": 20, "cacheCreationInputTokens": 4000,
                                     "costUSD": 0.0223},
                            HAIKU: {"inputTokens": 30, "outputTokens": 40, "cacheCreationInputTokens": 500,
                                    "costUSD": 0.0009}}),
        # no model's writes match the split's 4,500: every write is booked as a 5-minute one
        result("u2", usage={"cache_creation_input_tokens": 4500,
                            "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 3500}},
               model_usage={SONNET: {"inputTokens": 0, "outputTokens": 0, "cacheCreationInputTokens": 4000},
                            HAIKU: {"cacheCreationInputTokens": 600}}),
    ])
    ing = ingestor(tmp_path, log)
    ing.refresh()
    got = by_model(ing)
    assert got[SONNET]["tokens"] == [10, 20, 0, 1000 + 4000, 3000]
    assert got[HAIKU]["tokens"] == [30, 40, 0, 500 + 600, 0]
    assert got[SONNET]["usd"] == sonnet(inp=10, out=20, cw5=1000, cw1h=3000) + sonnet(cw5=4000)
    assert got[HAIKU]["usd"] == haiku(inp=30, out=40, cw5=500) + haiku(cw5=600)
    assert got[SONNET]["usd"] == Decimal("0.03708")  # 0.00033 + 0.00375 + 0.018 + 0.015
    # u2's models state no cost, and with two models total_cost_usd cannot be shared out
    assert got[SONNET]["reported"] == Decimal("0.0223") and got[HAIKU]["reported"] == Decimal("0.0009")


def test_a_result_without_model_usage_is_read_from_usage_with_its_split_and_web_searches(tmp_path: Path) -> None:
    log = write(tmp_path / "cli.jsonl", [result(
        "u1", model=SONNET, total_cost_usd=0.05,
        usage={"input_tokens": 1000, "output_tokens": 200, "cache_read_input_tokens": 0,
               "cache_creation_input_tokens": 2000, "server_tool_use": {"web_search_requests": 2},
               "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1500}})])
    ing = ingestor(tmp_path, log)
    ing.refresh()
    got = by_model(ing)[SONNET]
    assert got["tokens"] == [1000, 200, 0, 500, 1500]
    # 3000 + 3000 + 1875 + 9000 micro-dollars, and two searches at $10 per 1,000
    assert got["usd"] == sonnet(inp=1000, out=200, cw5=500, cw1h=1500) + Decimal(2 * 10) / 1000
    assert got["usd"] == Decimal("0.036875")
    assert got["reported"] == Decimal("0.05")


# ----------------------------------------------------------------------------- the older format


def test_an_older_result_with_only_a_cost_is_counted_as_stated_and_never_as_unpriced(tmp_path: Path) -> None:
    log = write(tmp_path / "cli.jsonl", [
        {"type": "result", "session_id": "old1", "uuid": "o1", "timestamp": "2026-11-17T08:00:00Z", "cost_usd": 0.42},
        {"session_id": "old2", "uuid": "o2", "timestamp": "2026-11-17T09:00:00Z", "total_cost": "1.5",
         "model": "claude-opus-4-1-20250805"},
        {"session_id": "old1", "uuid": "o1", "timestamp": "2026-11-17T08:00:00Z", "cost_usd": 0.42},  # again
        {"session_id": "old3", "timestamp": "2026-11-17T09:00:00Z", "cost_usd": "lots"},
    ])
    ing = ingestor(tmp_path, log)
    ing.refresh()
    got = by_model(ing)
    assert got["unknown"] == {"requests": 1, "tokens": [0] * 5, "usd": Decimal("0.42"), "reported": Decimal("0.42"),
                              "unpriced": 0}
    assert got["claude-opus-4-1-20250805"]["usd"] == Decimal("1.5")
    assert got["claude-opus-4-1-20250805"]["unpriced"] == 0
    assert {r: n for (_s, r), n in ing.line_counts.items()} == {"counted": 2, "duplicate": 1, "bad_usage": 1}

    # on the way to the metrics: dollars in the estimate, no unpriced tokens
    cfg = parse_config({"sources": [{"name": "cli", "kind": "cli_json", "paths": [str(log)]}]}, env={})
    refresher = Refresher(cfg, state_dir=tmp_path / "state2", clock=lambda: NOW)
    try:
        refresher.refresh_logs()
        snap = refresher.snapshot()
    finally:
        refresher.ingestor.close()
        refresher.state.close()
    assert sum(snap.estimated_cost.values()) == Decimal("1.92")
    assert sum(snap.estimated_reported_cost.values()) == Decimal("1.92")
    assert dict(snap.unpriced_tokens) == {}


# ----------------------------------------------------------------------------- other vendors


def test_other_vendors_models_are_not_claude_spend(tmp_path: Path) -> None:
    bedrock, vertex = "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5@20250929"
    log = write(tmp_path / "cli.jsonl", [
        result("u1", model_usage={"gpt-4o": {"inputTokens": 100, "outputTokens": 10, "costUSD": 0.1}}),
        result("u2", model_usage={"gemini-2.5-pro": {"inputTokens": 999, "outputTokens": 99, "costUSD": 0.5},
                                  SONNET: {"inputTokens": 100, "outputTokens": 10, "costUSD": 0.00045}}),
        result("u3", model="gpt-4o", usage={"input_tokens": 5, "output_tokens": 5}, total_cost_usd=0.01),
        {"type": "result", "uuid": "u4", "timestamp": "2026-11-17T08:00:00Z", "model": "gpt-4o", "cost_usd": 3},
        result("u5", model_usage={bedrock: {"inputTokens": 1, "outputTokens": 1}}),
        result("u6", model_usage={vertex: {"inputTokens": 1, "outputTokens": 1}}),
    ])
    ing = ingestor(tmp_path, log)
    ing.refresh()
    got = by_model(ing)
    assert set(got) == {SONNET, bedrock, vertex}
    assert got[SONNET]["usd"] == sonnet(inp=100, out=10) == Decimal("0.00045")
    assert got[SONNET]["reported"] == Decimal("0.00045")  # the other vendor's figure stays out too
    assert ing.line_counts[("cli", readers.NON_CLAUDE)] == 3
    assert ing.line_counts[("cli", readers.COUNTED)] == 3
    assert readers.NON_CLAUDE in readers.RESULTS

    registry = make_registry(ExporterCollector(lambda: _snapshot_of(tmp_path, log)))
    metrics = parse_metrics(generate_latest(registry).decode())
    assert sample(metrics, "claude_log_lines_total", source="cli", result="non_claude") == 3


def _snapshot_of(tmp: Path, log: Path):
    cfg = parse_config({"sources": [{"name": "cli", "kind": "cli_json", "paths": [str(log)]}]}, env={})
    return _snapshot_for(cfg, tmp)


# ----------------------------------------------------------------------------- results without a timestamp


def _hour(ts: float) -> int:
    return int(ts) // 3600 * 3600


def test_a_backlog_keeps_its_files_age_and_later_results_are_booked_when_read(tmp_path: Path) -> None:
    """A file written 10 days before the exporter first saw it books its timestamp-less results on
    that day; a result appended while serving is booked at the time it is read, whatever the
    file's modification time says."""
    untimed = {"type": "result", "modelUsage": {SONNET: {"inputTokens": 1000, "outputTokens": 100}}}
    log = write(tmp_path / "cli" / "runs.jsonl", [{**untimed, "uuid": "a"}, {**untimed, "uuid": "b"}])
    written = NOW - 10 * 86400
    os.utime(log, (written, written))
    now = [NOW]
    ing = ingestor(tmp_path, log, clock=lambda: now[0])
    ing.refresh()
    assert {k[0] for k in ing.aggregates} == {_hour(written)}
    assert datetime.fromtimestamp(_hour(written), UTC).date().isoformat() == "2026-11-08"

    now[0] = NOW + 7200  # two hours later, while serving
    write(log, [{**untimed, "uuid": "c"}, {**untimed, "uuid": "d", "timestamp": "2026-11-17T08:00:00Z"}], mode="a")
    os.utime(log, (NOW - 3 * 86400, NOW - 3 * 86400))  # a modification time that must not matter now
    ing.refresh()
    requests = {hour: v[AGG_REQUESTS] for (hour, *_), v in ing.aggregates.items()}
    assert requests == {_hour(written): 2, _hour(NOW + 7200): 1,
                        int(datetime(2026, 11, 17, 8, tzinfo=UTC).timestamp()): 1}
    # each at Sonnet 4.5's $3 in and $15 out: 3000 + 1500 micro-dollars
    assert sum(Decimal(v[AGG_COST_PICO]) for v in ing.aggregates.values()) / PICO == 4 * sonnet(inp=1000, out=100)


def test_a_file_modified_in_the_future_books_its_backlog_now(tmp_path: Path) -> None:
    log = write(tmp_path / "runs.jsonl", [{"type": "result", "uuid": "a",
                                           "modelUsage": {HAIKU: {"inputTokens": 1, "outputTokens": 1}}}])
    os.utime(log, (NOW + 86400, NOW + 86400))  # a clock that was ahead
    ing = ingestor(tmp_path, log)
    ing.refresh()
    assert {k[0] for k in ing.aggregates} == {_hour(NOW)}


# ----------------------------------------------------------------------------- report --json and the metric


def test_report_json_and_the_metric_show_the_reported_cost_beside_the_estimate(tmp_path: Path) -> None:
    cli = write(tmp_path / "cli.jsonl", [
        result("u1", model_usage={SONNET: {"inputTokens": 1000, "outputTokens": 100, "costUSD": 0.0047}}),
        result("u2", timestamp="2026-11-16T08:00:00Z",
               model_usage={SONNET: {"inputTokens": 2000, "outputTokens": 0, "costUSD": "0.006"}}),
    ])
    tokens = tmp_path / "tokens.jsonl"  # a pipeline's own log: states no cost of its own
    tokens.write_text(json.dumps({"ts": "2026-11-17T09:00:00Z", "model": HAIKU, "in": 1000, "out": 1000}) + "\n")
    raw = {"sources": [{"name": "cli", "kind": "cli_json", "paths": [str(cli)]},
                       {"name": "pipe", "kind": "jsonl", "paths": [str(tokens)],
                        "fields": {"timestamp": "ts", "model": "model", "input_tokens": "in", "output_tokens": "out"}}]}
    cfg = parse_config(raw, env={})
    ing = Ingestor(cfg.sources, StateDB(tmp_path / "state"), load_pricer(), clock=lambda: NOW)
    ing.refresh()

    rep = build_report(ing.aggregates)
    day16, day17 = rep["days"]
    assert day16["reported_usd"] == 0.006 and day16["models"][0]["reported_usd"] == 0.006
    assert day16["estimated_usd"] == float(sonnet(inp=2000))  # 0.006: the CLI agreed
    models17 = {m["model"]: m for m in day17["models"]}
    assert models17[SONNET]["estimated_usd"] == float(sonnet(inp=1000, out=100)) == 0.0045
    assert models17[SONNET]["reported_usd"] == 0.0047
    assert models17[HAIKU]["reported_usd"] is None  # nothing reported: null, not 0
    assert models17[HAIKU]["estimated_usd"] == float(haiku(inp=1000, out=1000)) == 0.006
    assert day17["reported_usd"] == 0.0047
    assert rep["totals"]["reported_usd"] == 0.0107
    assert rep["totals"]["estimated_usd"] == 0.0165

    registry = make_registry(ExporterCollector(lambda: _snapshot_for(cfg, tmp_path)))
    metrics = parse_metrics(generate_latest(registry).decode())
    reported = {dict(labels)["source"]: v for (name, labels), v in metrics.items()
                if name == "claude_estimated_reported_cost_usd_total"}
    assert reported == {"cli": 0.0107}  # no series for a source that reports nothing
    estimated = [v for (name, labels), v in metrics.items()
                 if name == "claude_estimated_cost_usd_total" and dict(labels)["source"] == "cli"]
    assert estimated == [0.0105]  # the same label: the one Sonnet 4.5 series


def _snapshot_for(cfg, tmp: Path):
    refresher = Refresher(cfg, state_dir=tmp / "metrics-state", clock=lambda: NOW)
    try:
        refresher.refresh_logs()
        return refresher.snapshot()
    finally:
        refresher.ingestor.close()
        refresher.state.close()


def test_report_json_from_the_command_line_carries_reported_usd(tmp_path: Path) -> None:
    cli = write(tmp_path / "cli.jsonl", [
        result("u1", model_usage={SONNET: {"inputTokens": 1000, "outputTokens": 100, "costUSD": 0.0047}})])
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"sources:\n  - name: cli\n    kind: cli_json\n    paths: ['{cli}']\n")
    r = run_cli("report", "--json", "--config", str(cfg), "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    (day,) = data["days"]
    assert (day["estimated_usd"], day["reported_usd"], data["totals"]["reported_usd"]) == (0.0045, 0.0047, 0.0047)
    assert day["models"][0]["reported_usd"] == 0.0047


def test_fast_and_us_only_runs_are_priced_as_such() -> None:
    """The run's usage.speed and usage.inference_geo reach the price: Opus 4.8 fast is $10/$50,
    Sonnet 4.6 US-only is 1.1x of $3/$15."""
    parse = readers.parse_cli_json("cli")
    pricer = load_pricer()
    fast = result("f1", {"claude-opus-4-8": {"inputTokens": 1_000, "outputTokens": 2_000, "costUSD": 0.06}},
                  usage={"input_tokens": 1_000, "output_tokens": 2_000, "speed": "fast"})
    us = result("u1", {"claude-sonnet-4-6": {"inputTokens": 1_000, "outputTokens": 2_000}},
                usage={"input_tokens": 1_000, "output_tokens": 2_000, "inference_geo": "us",
                       "service_tier": "standard"})
    (rf,) = parse(json.dumps(fast).encode(), NOW)
    (ru,) = parse(json.dumps(us).encode(), NOW)
    assert (rf.speed, ru.inference_geo) == ("fast", "us")
    assert pricer.cost_usd(rf.model, rf.tokens, when=rf.timestamp, service_tier=rf.service_tier,
                           inference_geo=rf.inference_geo, speed=rf.speed) == (1_000 * 10 + 2_000 * 50) / M
    assert pricer.cost_usd(ru.model, ru.tokens, when=ru.timestamp, service_tier=ru.service_tier,
                           inference_geo=ru.inference_geo, speed=ru.speed) == (
        (1_000 * 3 + 2_000 * 15) / M * Decimal("1.1"))
