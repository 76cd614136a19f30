"""The Prometheus collector: reads one immutable snapshot, yields metric families, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter import __version__
from exporter.refresh import Snapshot

CACHED = "Cached: computed by the exporter's last log refresh, not at scrape time."


class ExporterCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot], *, extra: list[Callable[[Snapshot], Iterator[Metric]]]
                 | None = None) -> None:
        self._snapshot = snapshot
        self._extra = extra or []

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        build = GaugeMetricFamily("claude_exporter_build_info", "Version of claude-budget-exporter; always 1.",
                                  labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        yield from _estimated_families(snap)
        yield from _source_families(snap)
        yield from _state_families(snap)
        for fn in self._extra:
            yield from fn(snap)


def _estimated_families(snap: Snapshot) -> Iterator[Metric]:
    cost = CounterMetricFamily(
        "claude_estimated_cost_usd",
        f"Estimated spend in USD from local usage logs at list price, since the state began. {CACHED}",
        labels=["source", "model"])
    for (source, model), usd in sorted(snap.estimated_cost.items()):
        cost.add_metric([source, model], float(usd))
    yield cost
    reported = CounterMetricFamily(
        "claude_estimated_reported_cost_usd",
        "What the local logs themselves claimed their requests cost in USD (Claude Code's own client-side "
        "estimate at list price, in CLI results), beside claude_estimated_cost_usd_total for the same requests; "
        f"only sources and models whose logs state a cost. {CACHED}",
        labels=["source", "model"])
    for (source, model), usd in sorted(snap.estimated_reported_cost.items()):
        reported.add_metric([source, model], float(usd))
    yield reported
    tokens = CounterMetricFamily(
        "claude_estimated_tokens", f"Tokens seen in local usage logs, deduplicated per request. {CACHED}",
        labels=["source", "model", "token_type"])
    for (source, model, tt), n in sorted(snap.estimated_tokens.items()):
        tokens.add_metric([source, model, tt], n)
    yield tokens
    unpriced = CounterMetricFamily(
        "claude_unpriced_tokens",
        f"Tokens of models with no known price: not in any estimate until a price is configured. {CACHED}",
        labels=["source", "model"])
    for (source, model), n in sorted(snap.unpriced_tokens.items()):
        unpriced.add_metric([source, model], n)
    yield unpriced
    lines = CounterMetricFamily(
        "claude_log_lines", f"Log lines read, by what became of them (counted, duplicate, ignored or a reject "
        f"reason). {CACHED}", labels=["source", "result"])
    for (source, result), n in sorted(snap.log_lines.items()):
        lines.add_metric([source, result], n)
    yield lines
    refresh = GaugeMetricFamily("claude_refresh_duration_seconds",
                                "Wall time of the last log refresh (tail, dedup, price, commit).")
    refresh.add_metric([], snap.refresh_seconds)
    yield refresh


def _source_families(snap: Snapshot) -> Iterator[Metric]:
    up = GaugeMetricFamily("claude_source_up",
                           "1 when the last refresh or poll of the source succeeded, else 0 (values are then the "
                           "last good ones).", labels=["source"])
    last = GaugeMetricFamily("claude_source_last_success_timestamp_seconds",
                             "Unix time of the source's last successful refresh or poll.", labels=["source"])
    files = GaugeMetricFamily("claude_source_files", "Log files the source is tailing.", labels=["source"])
    for s in snap.sources:
        up.add_metric([s.name], 1 if s.up else 0)
        if s.last_success is not None:
            last.add_metric([s.name], s.last_success)
        if s.kind != "admin_api":
            files.add_metric([s.name], s.files)
    yield up
    yield last
    yield files


def _state_families(snap: Snapshot) -> Iterator[Metric]:
    writable = GaugeMetricFamily(
        "claude_state_writable",
        "1 when the last commit to the state database succeeded; 0 from a failed one (disk full, read-only "
        "file system, I/O error) until one succeeds. While 0 the values served are the last committed ones.")
    writable.add_metric([], 1 if snap.state_writable else 0)
    yield writable
    errors = CounterMetricFamily(
        "claude_state_write_errors",
        "Commits to the state database that failed since the exporter started; nothing of a failed commit is "
        "counted, its lines are read again on the next refresh.")
    errors.add_metric([], snap.state_write_errors)
    yield errors


def make_registry(collector: Collector) -> CollectorRegistry:
    """Our own registry: no process or platform collectors from the default one."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


