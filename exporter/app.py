"""The composition root: config in, refresher + collector + HTTP routes out."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import structlog

from exporter.collector import ExporterCollector, make_registry
from exporter.config import Config
from exporter.server import ExporterServer, Routes
from exporter.snapshot import Refresher, Snapshot
from exporter.state import StateDB

log = structlog.get_logger()


def billed_by_day(state: StateDB) -> dict[date, Decimal]:
    """Billed USD per UTC day from the settled and recent days the poller stored, if any."""
    try:
        from exporter.billing import stored_billed_by_day
    except ImportError:
        return {}
    return stored_billed_by_day(state.conn)


@dataclass
class App:
    config: Config
    refresher: Refresher
    routes: Routes

    def make_server(self, host: str, port: int) -> ExporterServer:
        return ExporterServer(host, port, self.routes)

    def start(self) -> None:
        self.refresher.start()

    def stop(self) -> None:
        self.refresher.stop()


def build_app(config: Config, *, clock: Callable[[], float] = time.time) -> App:
    refresher = Refresher(config, clock=clock)
    collector = ExporterCollector(refresher.snapshot)
    registry = make_registry(collector)

    def healthy() -> tuple[bool, str]:
        snap = refresher.snapshot()
        if not snap.ready:
            return False, "starting: first log refresh not done"
        age = clock() - snap.built_at
        if age > max(120.0, 10 * config.refresh_interval):
            return False, f"stale: last refresh {age:.0f}s ago"
        return True, "ok"

    routes = Routes(registry=registry, healthy=healthy, status_page=lambda: status_page(refresher.snapshot()))
    return App(config=config, refresher=refresher, routes=routes)


def status_page(snap: Snapshot) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(s.name)}</td><td>{html.escape(s.kind)}</td>"
        f"<td class={'up' if s.up else 'down'}>{'up' if s.up else 'down'}</td><td>{s.files}</td>"
        f"<td>{html.escape(s.error or '')}</td></tr>"
        for s in snap.sources
    )
    total = sum(snap.estimated_cost.values(), Decimal(0))
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="refresh" content="30">
<title>claude-budget-exporter</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem;max-width:60rem}}td,th{{padding:.2rem .6rem;text-align:left}}
.up{{color:#1a7f37}}.down{{color:#cf222e}}</style></head><body>
<h1>claude-budget-exporter</h1>
<p>Estimated spend from local logs since the state began: <strong>${total:,.2f}</strong></p>
<table><tr><th>source</th><th>kind</th><th>state</th><th>files</th><th>error</th></tr>{rows}</table>
<p><a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a></p>
</body></html>"""


