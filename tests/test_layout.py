"""The layout's rules, checked on the source: the pure core stays pure, and a scrape reads one
snapshot without touching the outside world."""

from __future__ import annotations

import ast
import builtins
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from exporter.config import parse_config
from exporter.expose.metrics import FAMILIES, ExporterCollector, make_registry
from exporter.refresh import Refresher

ROOT = Path(__file__).resolve().parent.parent / "exporter"
# what would let the core reach the outside world: files, sockets, processes, the clock, the log
# (a lock is not: the breaker board is shared by the HTTP threads)
IMPURE = {"os", "io", "socket", "sqlite3", "subprocess", "multiprocessing", "time", "httpx",
          "structlog", "logging", "prometheus_client", "importlib", "pathlib", "shutil", "urllib", "yaml", "random"}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "exporter":
                out.extend((node.lineno, f"exporter.{a.name}") for a in node.names)
            else:
                out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "core").glob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_only_the_core_the_config_and_pure_libraries(path: Path) -> None:
    for line, name in _imports(path):
        top = name.split(".")[0]
        assert top not in IMPURE, f"{path.name}:{line} imports {name}"
        if top == "exporter":
            assert name.startswith(("exporter.core", "exporter.config")), f"{path.name}:{line} imports {name}"
    source = path.read_text(encoding="utf-8")
    for call in ("datetime.now(", "date.today(", "open(", "time.time("):
        assert call not in source, f"{path.name} calls {call}"


def test_every_metric_is_named_once_in_the_table() -> None:
    names = [f.name for f in FAMILIES]
    assert len(names) == len(set(names))
    assert all(n.startswith("claude_") and not n.endswith("_total") for n in names)
    assert all(f.help.strip() for f in FAMILIES)


def test_a_scrape_reads_the_snapshot_and_touches_nothing_else(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "projects" / "a.jsonl"
    log.parent.mkdir()
    log.write_text('{"type":"assistant","timestamp":"2026-11-01T10:00:00Z","requestId":"r1","message":'
                   '{"id":"m1","model":"claude-sonnet-4-5","usage":{"input_tokens":10,"output_tokens":5}}}\n')
    cfg = parse_config({"state_dir": str(tmp_path / "state"),
                        "sources": [{"name": "cc", "kind": "claude_code", "paths": [str(log.parent)]}],
                        "pools": [{"name": "p", "credit_usd": 10, "match": {"sources": ["cc"]}}]})
    refresher = Refresher(cfg, clock=lambda: 1_793_000_000.0)
    try:
        refresher.refresh_logs()
        snap = refresher.snapshot()
        # ours only: the client library's process collector reads /proc at scrape time, by design
        registry = make_registry(ExporterCollector(lambda: snap), runtime=False)

        def refuse(*_a, **_k):
            raise AssertionError("a scrape touched the outside world")

        monkeypatch.setattr(builtins, "open", refuse)
        monkeypatch.setattr(time, "time", refuse)
        body = generate_latest(registry).decode()
    finally:
        monkeypatch.undo()
        refresher.stop()
    assert 'claude_pool_credit_usd{pool="p"} 10.0' in body
    assert refresher.snapshot() is snap  # nothing was replaced while collecting
