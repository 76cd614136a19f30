"""The CLI JSON and generic JSONL sources, read through the real ingest into the state."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from exporter.config import parse_config
from exporter.logs.dedup import AGG_COST_PICO, AGG_REPORTED_PICO, AGG_REQUESTS, AGG_TOKENS, AGG_UNPRICED
from exporter.logs.ingestor import Ingestor
from exporter.prices import load_pricer
from exporter.state import StateDB

NOW = 1795000000.0  # 2026-11-18T07:06:40Z


def _ingest(tmp: Path, raw_config: dict) -> Ingestor:
    cfg = parse_config(raw_config, env={})
    ing = Ingestor(cfg.sources, StateDB(tmp / "state"), load_pricer(cfg.price_overrides), clock=lambda: NOW)
    ing.refresh()
    return ing


def _by_model(ing: Ingestor) -> dict[str, tuple[int, Decimal, list[int]]]:
    out: dict[str, tuple[int, Decimal, list[int]]] = {}
    for (_h, _s, model, _e), v in ing.aggregates.items():
        req, cost, toks = out.get(model, (0, Decimal(0), [0] * 5))
        out[model] = (req + v[AGG_REQUESTS], cost + Decimal(v[AGG_COST_PICO]) / 10**12,
                      [a + b for a, b in zip(toks, v[AGG_TOKENS], strict=True)])
    return out


def _reported(ing: Ingestor) -> dict[str, Decimal]:
    """What the logs said each model's requests cost (the reported_pico column), in USD."""
    out: dict[str, Decimal] = {}
    for (_h, _s, model, _e), v in ing.aggregates.items():
        out[model] = out.get(model, Decimal(0)) + Decimal(v[AGG_REPORTED_PICO]) / 10**12
    return out


def test_cli_json_results_are_priced_at_our_prices_with_the_cli_cost_beside(tmp_path: Path) -> None:
    log = tmp_path / "cli" / "runs.jsonl"
    log.parent.mkdir()
    results = [
        {"type": "result", "subtype": "success", "is_error": False, "session_id": "s1", "uuid": "u1",
         "timestamp": "2026-11-17T08:00:00Z", "total_cost_usd": 0.0123,
         "usage": {"input_tokens": 10, "output_tokens": 20},
         "modelUsage": {"claude-sonnet-4-5-20250929": {"inputTokens": 10, "outputTokens": 20,
                                                       "cacheReadInputTokens": 300, "cacheCreationInputTokens": 40,
                                                       "webSearchRequests": 0, "costUSD": 0.0103},
                        "claude-haiku-4-5-20251001": {"inputTokens": 5, "outputTokens": 6, "costUSD": 0.002}}},
        # the seeds' array form of modelUsage
        {"type": "result", "session_id": "s2", "uuid": "u2", "timestamp": "2026-11-17T09:00:00Z",
         "total_cost_usd": 0.5, "modelUsage": [{"model": "claude-opus-4-5-20251101", "inputTokens": 1000,
                                                "outputTokens": 2000, "cost": 0.5}]},
    ]
    lines = [json.dumps(r) for r in results]
    log.write_text("\n".join([*lines, lines[0], "not json"]) + "\n")  # a repeated result is not counted twice
    ing = _ingest(tmp_path, {"sources": [{"name": "cli", "kind": "cli_json", "paths": [str(log)]}]})
    got = _by_model(ing)
    # Sonnet 4.5 at $3 in, $15 out, $0.30 cache read, $3.75 5-minute write per MTok
    assert got["claude-sonnet-4-5-20250929"][:2] == (1, Decimal(10 * 3 + 20 * 15 + 300 * Decimal("0.3")
                                                                  + 40 * Decimal("3.75")) / 10**6)
    assert got["claude-sonnet-4-5-20250929"][2] == [10, 20, 300, 40, 0]
    # Haiku 4.5 at $1 in, $5 out; Opus 4.5 at $5 in, $25 out
    assert got["claude-haiku-4-5-20251001"][:2] == (1, Decimal(5 * 1 + 6 * 5) / 10**6)
    assert got["claude-opus-4-5-20251101"][:2] == (1, Decimal(1000 * 5 + 2000 * 25) / 10**6)
    # what Claude Code itself said, kept beside
    assert _reported(ing) == {"claude-sonnet-4-5-20250929": Decimal("0.0103"),
                              "claude-haiku-4-5-20251001": Decimal("0.002"),
                              "claude-opus-4-5-20251101": Decimal("0.5")}
    assert ing.line_counts[("cli", "duplicate")] == 1
    assert ing.line_counts[("cli", "malformed_json")] == 1


def test_jsonl_field_mapping_chars_per_token_and_stated_cost(tmp_path: Path) -> None:
    log = tmp_path / "agents" / "tokens.jsonl"
    log.parent.mkdir()
    records = [
        # tokens given: priced at list price (sonnet 4.5: $3 in, $15 out per MTok)
        {"ts": "2026-11-17T10:00:00Z", "model": "claude-sonnet-4-5", "usage": {"in": 1000, "out": 100}, "id": "a"},
        # characters only: 4 per token by default, rounded up: 10 chars -> 3 tokens, 7 -> 2
        {"ts": "2026-11-17T10:01:00Z", "model": "claude-sonnet-4-5", "prompt_chars": 10, "completion_chars": 7,
         "id": "b"},
        # a stated cost wins over tokens
        {"ts": 1794909720, "model": "claude-haiku-4-5", "usage": {"in": 5, "out": 5}, "cost": "0.25", "id": "c"},
        # the same request id again: counted once
        {"ts": "2026-11-17T10:00:00Z", "model": "claude-sonnet-4-5", "usage": {"in": 1000, "out": 100}, "id": "a"},
        {"ts": "2026-11-17T10:03:00Z", "model": "claude-sonnet-4-5", "usage": {"in": -1, "out": 1}, "id": "d"},
        {"ts": "someday", "model": "claude-sonnet-4-5", "usage": {"in": 1, "out": 1}, "id": "e"},
        {"ts": "2026-11-17T10:04:00Z", "model": "mystery-model-9", "usage": {"in": 50, "out": 50}, "id": "f"},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    ing = _ingest(tmp_path, {"sources": [{
        "name": "pipeline", "kind": "jsonl", "paths": [str(tmp_path / "agents" / "*.jsonl")],
        "fields": {"timestamp": "ts", "model": "model", "input_tokens": "usage.in", "output_tokens": "usage.out",
                   "input_chars": "prompt_chars", "output_chars": "completion_chars", "cost_usd": "cost",
                   "request_id": "id"},
    }]})
    got = _by_model(ing)
    sonnet_req, sonnet_usd, sonnet_tok = got["claude-sonnet-4-5"]
    assert sonnet_req == 2
    assert sonnet_tok[:2] == [1003, 102]
    assert sonnet_usd == (Decimal(1000 * 3 + 100 * 15) + Decimal(3 * 3 + 2 * 15)) / 10**6
    assert got["claude-haiku-4-5"][:2] == (1, Decimal("0.25"))
    # an unknown model is counted, never priced at $0 silently
    assert got["mystery-model-9"][1] == 0
    unpriced = sum(v[AGG_UNPRICED] for (_h, _s, m, _e), v in ing.aggregates.items() if m == "mystery-model-9")
    assert unpriced == 100
    assert ing.line_counts[("pipeline", "bad_usage")] == 1
    assert ing.line_counts[("pipeline", "bad_timestamp")] == 1
    assert ing.line_counts[("pipeline", "duplicate")] == 1


def test_chars_per_token_is_configurable(tmp_path: Path) -> None:
    log = tmp_path / "t.jsonl"
    log.write_text(json.dumps({"ts": "2026-11-17T10:00:00Z", "model": "claude-haiku-4-5", "pc": 35, "cc": 7}) + "\n")
    ing = _ingest(tmp_path, {"sources": [{
        "name": "p", "kind": "jsonl", "paths": [str(log)], "chars_per_token": 3.5,
        "fields": {"timestamp": "ts", "model": "model", "input_chars": "pc", "output_chars": "cc"}}]})
    assert _by_model(ing)["claude-haiku-4-5"][2][:2] == [10, 2]


def _pipeline_line(n: int) -> str:
    return json.dumps({"ts": "2026-11-17T10:00:00Z", "model": "claude-haiku-4-5", "in": 1000 * n, "out": 10}) + "\n"


def test_a_renamed_or_rotated_log_without_ids_is_not_counted_twice(tmp_path: Path) -> None:
    """Records with no request id cannot be deduplicated: a moved file must go on from its offset."""
    logs = tmp_path / "agents"
    logs.mkdir()
    raw = {"sources": [{"name": "p", "kind": "jsonl", "paths": [str(logs / "*.jsonl*")],
                        "fields": {"timestamp": "ts", "model": "model", "input_tokens": "in",
                                   "output_tokens": "out"}}]}
    cfg = parse_config(raw, env={})
    db = StateDB(tmp_path / "state")
    ing = Ingestor(cfg.sources, db, load_pricer(), clock=lambda: NOW)

    def requests() -> int:
        return sum(v[AGG_REQUESTS] for v in ing.aggregates.values())

    (logs / "tokens.jsonl").write_text(_pipeline_line(1) + _pipeline_line(2))
    ing.refresh()
    assert requests() == 2
    # renamed to a name the glob still matches, with a line appended on the way
    (logs / "tokens.jsonl").rename(logs / "tokens-20261117.jsonl")
    with open(logs / "tokens-20261117.jsonl", "a") as f:
        f.write(_pipeline_line(3))
    ing.refresh()
    assert requests() == 3
    # rotated: the old file moves to .1 (still matched), a new one takes the path
    (logs / "tokens-20261117.jsonl").rename(logs / "tokens-20261117.jsonl.1")
    (logs / "tokens-20261117.jsonl").write_text(_pipeline_line(4))
    ing.refresh()
    assert requests() == 4
    # and a restart knows where every file stands
    db.close()
    ing = Ingestor(cfg.sources, StateDB(tmp_path / "state"), load_pricer(), clock=lambda: NOW)
    ing.refresh()
    assert requests() == 4


def test_an_absurd_stated_cost_is_rejected_and_ingest_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "t.jsonl"
    lines = [{"ts": "2026-11-17T10:00:00Z", "model": "claude-haiku-4-5", "cost": 1e7, "id": "a"},
             {"ts": "2026-11-17T10:00:00Z", "model": "claude-haiku-4-5", "cost": "0.5", "id": "b"}]
    log.write_text("".join(json.dumps(r) + "\n" for r in lines))
    ing = _ingest(tmp_path, {"sources": [{"name": "p", "kind": "jsonl", "paths": [str(log)],
                                          "fields": {"timestamp": "ts", "model": "model", "cost_usd": "cost",
                                                     "request_id": "id"}}]})
    assert _by_model(ing)["claude-haiku-4-5"][:2] == (1, Decimal("0.5"))
    assert ing.line_counts[("p", "bad_usage")] == 1
    # the next refresh is not stuck on it
    with open(log, "a") as f:
        f.write(json.dumps({"ts": "2026-11-17T11:00:00Z", "model": "claude-haiku-4-5", "cost": "0.25", "id": "c"})
                + "\n")
    ing.refresh()
    assert _by_model(ing)["claude-haiku-4-5"][:2] == (2, Decimal("0.75"))


def test_cli_results_without_a_timestamp_keep_their_files_age(tmp_path: Path) -> None:
    import os

    log = tmp_path / "cli" / "old.jsonl"
    log.parent.mkdir()
    log.write_text(json.dumps({"type": "result", "uuid": "u9", "total_cost_usd": 0.5,
                               "modelUsage": {"claude-haiku-4-5": {"inputTokens": 1, "outputTokens": 1,
                                                                  "costUSD": 0.5}}}) + "\n")
    written = NOW - 40 * 86400  # a backlog written 40 days before the exporter first saw it
    os.utime(log, (written, written))
    ing = _ingest(tmp_path, {"sources": [{"name": "cli", "kind": "cli_json", "paths": [str(log)]}]})
    (hour, *_), = ing.aggregates
    assert hour == int(written) // 3600 * 3600
