"""The composition: what /breaker answers before the first refresh, and after."""

from __future__ import annotations

from pathlib import Path

from exporter.app import build_app
from exporter.config import parse_config


def test_breaker_cannot_tell_before_the_first_refresh(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    cfg = parse_config({
        "state_dir": str(tmp_path / "state"),
        "sources": [{"name": "cc", "kind": "claude_code", "paths": [str(tmp_path / "logs")]}],
        "pools": [{"name": "agent-sdk", "credit_usd": 10, "match": {"sources": ["cc"]}}],
    }, env={})
    app = build_app(cfg)
    try:
        code, body = app.service.breaker("agent-sdk")
        # "closed" now would let paid work start before any spend is known
        assert code == 503 and body["state"] == "unknown"
        app.refresher.refresh_logs()
        code, body = app.service.breaker("agent-sdk")
        assert code == 200 and body["state"] == "closed"
        assert app.service.breaker("nope")[0] == 404
    finally:
        app.refresher.state.close()
