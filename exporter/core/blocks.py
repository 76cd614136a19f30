"""5-hour blocks from the logs, as ccusage computes them, for users without a statusline record.

Pure: no I/O, no clock.

A block starts at the UTC hour of the first request after the previous block has ended (or
after a gap of more than 5 hours: such a gap always ends the block too) and lasts 5 hours. ccusage
starts a new block when a request comes more than 5 hours after the block's start; the requests
here are known by their UTC hour, and a request in the hour ``start + 5h`` or later is past that,
so the blocks are the same except for a request at the exact boundary instant. Gaps are not
blocks.

The current block's burn rate is its cost over the time since it began, and its projection the
cost at its end at that rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

HOUR = 3600
BLOCK_SECONDS = 5 * HOUR
PICO = Decimal(10**12)
#: the figures of one hour (or one block): requests, then tokens, then cost in picodollars
REQUESTS, INPUT, OUTPUT, CACHE_READ, CACHE_WRITE_5M, CACHE_WRITE_1H, COST_PICO = range(7)
FIELDS = 7


@dataclass(frozen=True)
class Block:
    start: int  # epoch seconds, a UTC hour
    end: int  # start + 5 h
    last_hour: int  # the hour of its last request
    figures: tuple[int, ...]  # FIELDS sums

    @property
    def requests(self) -> int:
        return self.figures[REQUESTS]

    @property
    def cost_usd(self) -> Decimal:
        return Decimal(self.figures[COST_PICO]) / PICO

    def active(self, now: float) -> bool:
        return self.start <= now < self.end

    def burn_rate_per_hour(self, now: float) -> Decimal:
        """USD an hour since the block began (at least a minute of it, so a first request is not infinite)."""
        elapsed = Decimal(str(max(60.0, min(now, self.end) - self.start)))
        return self.cost_usd * HOUR / elapsed

    def projected_usd(self, now: float) -> Decimal:
        """The cost at the block's end at the burn rate so far."""
        left = Decimal(str(max(0.0, self.end - now)))
        return self.cost_usd + self.burn_rate_per_hour(now) * left / HOUR


def blocks(hours: Mapping[int, Sequence[int]]) -> list[Block]:
    """The blocks of per-hour figures (hour epoch -> FIELDS values), oldest first. Hours with no
    request are not activity."""
    out: list[Block] = []
    start: int | None = None
    last = 0
    acc = [0] * FIELDS
    for hour in sorted(h for h, v in hours.items() if v[REQUESTS] > 0):
        if start is None or hour >= start + BLOCK_SECONDS:
            if start is not None:
                out.append(Block(start, start + BLOCK_SECONDS, last, tuple(acc)))
            start, acc = hour - hour % HOUR, [0] * FIELDS
        v = hours[hour]
        for i in range(FIELDS):
            acc[i] += v[i]
        last = hour
    if start is not None:
        out.append(Block(start, start + BLOCK_SECONDS, last, tuple(acc)))
    return out


def current_block(hours: Mapping[int, Sequence[int]], now: float) -> Block | None:
    """The block holding ``now``, if one does."""
    found = blocks(hours)
    return found[-1] if found and found[-1].active(now) else None


class HourlyFigures:
    """Per-source hourly figures of the last few days, kept current from each commit's deltas:
    what the current block of every source is computed from."""

    def __init__(self, keep_seconds: int = 8 * 86400) -> None:
        self.keep = keep_seconds
        self.by_source: dict[str, dict[int, list[int]]] = {}

    def apply(self, deltas: Mapping[tuple[int, str, str, str], Sequence[int]], columns: Sequence[int],
              since: float) -> None:
        """Add aggregate deltas, keyed (hour, source, model, entrypoint); ``columns`` are the indexes of
        the FIELDS in an aggregate row. Hours before ``since - keep`` are dropped."""
        floor = int(since) - self.keep
        for (hour, source, _model, _entry), v in deltas.items():
            if hour < floor:
                continue
            row = self.by_source.setdefault(source, {}).setdefault(hour, [0] * FIELDS)
            for i, col in enumerate(columns):
                row[i] += v[col]
        for hours in self.by_source.values():
            for h in [h for h in hours if h < floor]:
                del hours[h]

    def current(self, now: float) -> dict[str, Block]:
        out = {}
        for source, hours in sorted(self.by_source.items()):
            b = current_block(hours, now)
            if b is not None:
                out[source] = b
        return out


def sum_hours(rows: Iterable[tuple[int, Sequence[int]]]) -> dict[int, list[int]]:
    """Per-hour FIELDS sums of (hour, FIELDS values) rows."""
    out: dict[int, list[int]] = {}
    for hour, v in rows:
        acc = out.setdefault(hour, [0] * FIELDS)
        for i in range(FIELDS):
            acc[i] += v[i]
    return out
