"""The whole exposition of a known state, byte for byte: names, HELP, labels, order and values.

A change to what /metrics shows must show up here. After an intended change, write the file
again with ``UPDATE_GOLDEN=1 pytest tests/test_exposition_golden.py`` and read its diff.
"""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

from prometheus_client import generate_latest

from exporter.billing.client import CostRow, UsageRow
from exporter.billing.poller import BillingSnapshot
from exporter.config import parse_config
from exporter.core.records import Tokens
from exporter.expose.metrics import ExporterCollector, make_registry
from exporter.refresh import Refresher

GOLDEN = Path(__file__).parent / "golden" / "exposition.txt"
NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC).timestamp()


def _line(i: int, model: str, day: str, entrypoint: str, inp: int, out: int) -> str:
    return json.dumps({"type": "assistant", "timestamp": f"{day}T09:{i:02d}:00Z", "requestId": f"req_{i}",
                       "entrypoint": entrypoint, "message": {"id": f"msg_{i}", "model": model, "usage": {
                           "input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": 1000,
                           "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100},
                           "cache_creation_input_tokens": 300}}})


def _exposition(tmp: Path) -> str:
    logs = tmp / "projects" / "p"
    logs.mkdir(parents=True)
    (logs / "s.jsonl").write_text("\n".join([
        _line(1, "claude-sonnet-4-5-20250929", "2026-11-17", "cli", 1000, 500),
        _line(2, "claude-opus-4-6", "2026-11-18", "sdk-cli", 2000, 800),
        _line(3, "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "2026-11-18", "sdk-cli", 500, 100),
        _line(4, "acme-model", "2026-11-18", "cli", 10, 10),
        '{"type":"assistant","message":{"model":"<synthetic>","usage":{}}, "timestamp":"2026-11-18T00:00:00Z"}',
        "not json",
    ]) + "\n")
    cfg = parse_config({
        "state_dir": str(tmp / "state"),
        "sources": [{"name": "claude-code", "kind": "claude_code", "paths": [str(tmp / "projects")]}],
        "pools": [
            {"name": "agent-sdk", "plan": "max20x", "team": "platform", "period": {"reset_day": 15},
             "match": {"sources": ["claude-code"], "entrypoints": ["sdk-cli"], "workspaces": ["default"]}},
            {"name": "interactive", "credit_usd": 50, "match": {"sources": ["claude-code"], "entrypoints": ["cli"]},
             "breaker": {"open_below": 0.5}},
        ],
    })
    refresher = Refresher(cfg, clock=lambda: NOW)
    try:
        refresher.refresh_logs()
        snap = refresher.snapshot()
    finally:
        refresher.stop()
    billing = BillingSnapshot(
        cost_rows=MappingProxyType({
            date(2026, 11, 16): (CostRow(date(2026, 11, 16), None, "Claude Sonnet 4.5 usage", "claude-sonnet-4-5",
                                         "tokens", "uncached_input_tokens", "standard", "0-200k", Decimal("0.0123")),),
            date(2026, 11, 17): (CostRow(date(2026, 11, 17), None, "Claude Sonnet 4.5 usage", "claude-sonnet-4-5",
                                         "tokens", "output_tokens", "standard", "0-200k", Decimal("0.0150")),),
        }),
        usage_rows=(UsageRow(datetime(2026, 11, 18, 9, tzinfo=UTC), datetime(2026, 11, 18, 10, tzinfo=UTC), None,
                             "apikey_01", "claude-opus-4-6", "standard", "0-200k", None, Tokens(2000, 800, 1000, 200,
                                                                                                  100)),),
        complete_through=datetime(2026, 11, 17, tzinfo=UTC), up=True, last_success=NOW - 60,
        requests=MappingProxyType({("cost_report", "200"): 3, ("usage_report_messages", "429"): 1}),
    )
    snap = replace(snap, billing=billing)
    return generate_latest(make_registry(ExporterCollector(lambda: snap))).decode()


# families of the client library's process, platform and GC collectors: this process's own
# figures (memory, CPU, Python version), not the state's; they are checked apart below
RUNTIME = ("process_", "python_")


def _normalised(text: str) -> str:
    """The exposition without the runtime families, and with the values that are not the state's
    fixed: the refresh's own wall time, and the revision and Python of the build."""
    out = []
    for ln in text.splitlines():
        name = ln.split(" ", 3)[2] if ln.startswith("# ") else ln
        if name.startswith(RUNTIME):
            continue
        if ln.startswith("claude_refresh_duration_seconds "):
            ln = "claude_refresh_duration_seconds 0.0"
        elif ln.startswith("claude_exporter_build_info{"):
            ln = re.sub(r'(revision|python_version)="[^"]*"', r'\1="X"', ln)
        out.append(ln)
    return "\n".join(out) + "\n"


def test_the_exposition_of_a_known_state_is_the_golden_one(tmp_path: Path) -> None:
    got = _normalised(_exposition(tmp_path))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text()


def test_the_runtime_families_and_the_build_are_served_beside_ours(tmp_path: Path) -> None:
    """process_* and python_* as the client library provides them; the build's version, revision
    and Python on claude_exporter_build_info."""
    text = _exposition(tmp_path)
    names = {ln.split(" ")[2] for ln in text.splitlines() if ln.startswith("# TYPE ")}
    for family in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds",
                   "process_open_fds", "python_info", "python_gc_collections_total"):
        assert family in names, sorted(names)
    (build,) = [ln for ln in text.splitlines() if ln.startswith("claude_exporter_build_info{")]
    assert f'python_version="{platform.python_version()}"' in build
    assert re.search(r'revision="([0-9a-f]{12}|unknown)"', build), build
