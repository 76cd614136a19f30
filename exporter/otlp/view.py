"""What pools and label series need of the telemetry attributes, kept current from each commit.

An otlp source keeps, per request, the values of its configured ``attributes`` (``team``,
``user.email``, ...): each distinct set of values is an id in the state (``otlp_attrs``) and the
attributed hourly aggregates (``otlp_hourly``) are kept per id. From those deltas this view
keeps, for each distinct ``match.telemetry`` of the configured pools, the hourly estimate of
the rows it matches (what ``pool_inputs`` reads instead of every row of the sources), and per
attribute value the estimate by UTC day (what the per-value series show). Safe across threads.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType

from exporter.config import OtlpConfig, PoolConfig
from exporter.logs.dedup import AGG_COST_PICO, PICO

__all__ = ["HOURLY_DAYS", "AttrKey", "OtlpSnapshot", "Telemetry", "TelemetryView"]

Telemetry = tuple[tuple[str, tuple[str, ...]], ...]  # a pool's match.telemetry
AttrKey = tuple[int, int, str, str]  # (hour, attribute set id, model, entrypoint): an attributed aggregate
HOURLY_DAYS = 70  # as the refresher's hourly estimates: any monthly period and its trailing burn
WINDOWS = ("today", "yesterday", "period")  # as claude_billed_actor_cost_usd: period is the UTC month to date


@dataclass(frozen=True)
class OtlpSnapshot:
    """The receiver as of a snapshot: per pool telemetry its hourly estimate, per value its spend, and
    what the receiver answered and took."""

    #: match.telemetry -> (hour, source, model, entrypoint) -> estimated USD of the rows it matches
    hourly: Mapping[Telemetry, Mapping[tuple[int, str, str, str], Decimal]] = field(default_factory=dict)
    #: (source, window, attribute, value) -> estimated USD, for sources whose attribute_labels is not none
    spend: Mapping[tuple[str, str, str, str], Decimal] = field(default_factory=dict)
    labels: Mapping[str, tuple[str, int]] = field(default_factory=dict)  # source -> (attribute_labels, top N)
    requests: Mapping[tuple[str, str, str], int] = field(default_factory=dict)  # (source, signal, code)
    refused: Mapping[tuple[str, str, str], int] = field(default_factory=dict)  # (source, signal, reason)
    items: Mapping[tuple[str, str, str], int] = field(default_factory=dict)  # (source, signal, result)

    def estimated_hourly(self, telemetry: Telemetry) -> Mapping[tuple[int, str, str, str], Decimal]:
        return self.hourly.get(telemetry, {})


class TelemetryView:
    def __init__(self, sources: Mapping[str, OtlpConfig], pools: Iterable[PoolConfig]) -> None:
        self.sources = dict(sources)
        self.filters: tuple[Telemetry, ...] = tuple(sorted({p.match.telemetry for p in pools if p.match.telemetry}))
        self._lock = threading.Lock()
        self._sets: dict[int, tuple[str, tuple[str, ...]]] = {}  # attribute set id -> (source, values)
        self._matches: dict[int, tuple[Telemetry, ...]] = {}  # attribute set id -> the filters it matches
        self._hourly: dict[Telemetry, dict[tuple[int, str, str, str], int]] = {f: defaultdict(int) for f in self.filters}
        self._daily: dict[tuple[str, str, str, int], int] = defaultdict(int)  # (source, attribute, value, day)
        self._version = 0  # moves with every change: the snapshot's hourly copies are made once per version
        self._copied: tuple[int, Mapping[Telemetry, Mapping[tuple[int, str, str, str], Decimal]]] | None = None

    def add_set(self, set_id: int, source: str, values: tuple[str, ...]) -> None:
        with self._lock:
            self._sets[set_id] = (source, values)
            self._matches[set_id] = tuple(f for f in self.filters if self._match(f, source, values))

    def _match(self, telemetry: Telemetry, source: str, values: tuple[str, ...]) -> bool:
        cfg = self.sources.get(source)
        if cfg is None:
            return False
        for attribute, allowed in telemetry:
            if attribute not in cfg.attributes or values[cfg.attributes.index(attribute)] not in allowed:
                return False
        return True

    def apply(self, deltas: Mapping[AttrKey, list[int]], now: float) -> None:
        """Add a commit's attributed deltas (or the stored aggregates at start)."""
        since = int(now) - HOURLY_DAYS * 86400
        first_day = _first_day(now)
        with self._lock:
            self._version += 1
            for (hour, set_id, model, entrypoint), v in deltas.items():
                pico = v[AGG_COST_PICO]
                if not pico or hour < since:
                    continue
                source, values = self._sets[set_id]
                for f in self._matches.get(set_id, ()):
                    self._hourly[f][(hour, source, model, entrypoint)] += pico
                cfg = self.sources.get(source)
                if cfg is not None and cfg.attribute_labels != "none" and hour >= first_day:
                    day = hour // 86400 * 86400
                    for attribute, value in zip(cfg.attributes, values, strict=True):
                        self._daily[(source, attribute, value, day)] += pico
            self._prune(since, first_day)

    def _prune(self, since: int, first_day: int) -> None:
        for f, rows in self._hourly.items():
            if rows and min(rows)[0] < since:
                self._hourly[f] = defaultdict(int, {k: v for k, v in rows.items() if k[0] >= since})
        if self._daily and min(k[3] for k in self._daily) < first_day:
            self._daily = defaultdict(int, {k: v for k, v in self._daily.items() if k[3] >= first_day})

    def snapshot(self, now: float, requests: Mapping[tuple[str, str, str], int],
                 refused: Mapping[tuple[str, str, str], int], items: Mapping[tuple[str, str, str], int]
                 ) -> OtlpSnapshot:
        today = datetime.fromtimestamp(now, UTC).date()
        yesterday = today - timedelta(days=1)
        spans = {"today": (today, today), "yesterday": (yesterday, yesterday), "period": (today.replace(day=1), today)}
        epoch = datetime(1970, 1, 1, tzinfo=UTC).date()
        first = _first_day(now)
        with self._lock:
            if self._copied is None or self._copied[0] != self._version:
                self._copied = (self._version, MappingProxyType({
                    f: MappingProxyType({k: Decimal(p) / PICO for k, p in rows.items() if p})
                    for f, rows in self._hourly.items()}))
            hourly = self._copied[1]
            sums: dict[tuple[str, str, str, str], int] = defaultdict(int)
            for (source, attribute, value, day_epoch), pico in self._daily.items():
                if day_epoch < first:
                    continue
                day = epoch + timedelta(days=day_epoch // 86400)
                for window in WINDOWS:
                    lo, hi = spans[window]
                    if lo <= day <= hi:
                        sums[(source, window, attribute, value)] += pico
        spend = {k: Decimal(p) / PICO for k, p in sums.items()}
        labels = {name: (cfg.attribute_labels, cfg.attribute_top_n) for name, cfg in self.sources.items()}
        return OtlpSnapshot(hourly=hourly, spend=MappingProxyType(spend),
                            labels=MappingProxyType(labels), requests=MappingProxyType(dict(requests)),
                            refused=MappingProxyType(dict(refused)), items=MappingProxyType(dict(items)))


def _first_day(now: float) -> int:
    """Epoch of the first UTC day a per-value window can reach: yesterday or the 1st of the month."""
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int(min(today - timedelta(days=1), today.replace(day=1)).timestamp())
