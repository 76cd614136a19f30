"""Deduplication of requests, and the packed row format it keeps them in.

Claude Code writes one request several times (a copy per content block, again in a resumed
session, again in a subagent's file); the copy with the largest token total is the one that
counts, wherever and in whatever order it appears. So a request is remembered by the 64-bit
hash of its key, with the figures of the copy kept: a *row*, twelve little-endian int64s
instead of a few hundred bytes of Python objects, which keeps a cold read of a large history
small. The state database stores these rows as they are, a helper process hands them over as
one bytes object, and the hourly aggregates are sums of their fields.

This module owns that format. Every field of a row, of a dedup index entry and of an
aggregate list has a name here; nothing else indexes them by number.
"""

from __future__ import annotations

import hashlib
import struct
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from operator import add
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from exporter.core.records import TOKEN_TYPES, Tokens, UsageRecord
from exporter.logs import parse as readers

if TYPE_CHECKING:
    from exporter.core.pricing import Pricer

__all__ = [
    "AGG_CACHE_READ", "AGG_CACHE_WRITE_1H", "AGG_CACHE_WRITE_5M", "AGG_COLUMNS", "AGG_COST_PICO", "AGG_INPUT",
    "AGG_OUTPUT", "AGG_REPORTED_PICO", "AGG_REQUESTS", "AGG_TOKENS", "AGG_UNPRICED", "AGG_WEB_SEARCH", "AGG_WIDTH",
    "ENTRY_DIM", "ENTRY_WIDTH", "PAGE_ENTRY", "PICO", "ROW", "ROW_DIM", "ROW_FIGURES", "ROW_HOUR", "ROW_TOTAL",
    "ROW_WIDTH",
    "AggKey", "Batch", "DimKey", "RefreshStats", "Row", "add_sums", "beats", "key_hash", "wins", "row_dim", "row_hour", "row_total", "unpack_row",
]

PICO = 10**12  # costs are kept in picodollars: integers that sum exactly
K = TypeVar("K", bound=Hashable)

# ------------------------------------------------------------------ aggregates

# The numeric columns of the hourly aggregates (the state's usage_hourly table), in order; an
# aggregate is a list of these. reported_pico is what the logs themselves said the requests
# cost (CLI results), beside our cost_pico.
AGG_COLUMNS = ("requests", "input", "output", "cache_read", "cache_write_5m", "cache_write_1h",
               "web_search", "cost_pico", "unpriced_tokens", "reported_pico")
AGG_WIDTH = len(AGG_COLUMNS)
AGG_REQUESTS = AGG_COLUMNS.index("requests")
AGG_INPUT = AGG_COLUMNS.index("input")
AGG_OUTPUT = AGG_COLUMNS.index("output")
AGG_CACHE_READ = AGG_COLUMNS.index("cache_read")
AGG_CACHE_WRITE_5M = AGG_COLUMNS.index("cache_write_5m")
AGG_CACHE_WRITE_1H = AGG_COLUMNS.index("cache_write_1h")
AGG_WEB_SEARCH = AGG_COLUMNS.index("web_search")
AGG_COST_PICO = AGG_COLUMNS.index("cost_pico")
AGG_UNPRICED = AGG_COLUMNS.index("unpriced_tokens")
AGG_REPORTED_PICO = AGG_COLUMNS.index("reported_pico")
# the token columns, in TOKEN_TYPES order (the token_type label values)
AGG_TOKENS = slice(AGG_INPUT, AGG_INPUT + len(TOKEN_TYPES))
assert AGG_COLUMNS[AGG_INPUT:AGG_INPUT + len(TOKEN_TYPES)] == TOKEN_TYPES == Tokens._fields[:len(TOKEN_TYPES)]

AggKey = tuple[int, str, str, str]  # (hour epoch, source, model, entrypoint)
DimKey = tuple[str, str, str]  # (source, model, entrypoint): a row stores its dense id instead

# ------------------------------------------------------------------ rows


class Row(NamedTuple):
    """A row's fields by name: the unpacked view of ROW, for code off the hot path and tests."""

    total: int  # the copy's token total: a later copy replaces it only when larger
    hour: int  # epoch seconds of the hour it is booked in
    dim: int  # the id of its (source, model, entrypoint)
    input: int = 0  # from here on AGG_COLUMNS[AGG_INPUT:], in that order
    output: int = 0
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    web_search: int = 0
    cost_pico: int = 0
    unpriced_tokens: int = 0
    reported_pico: int = 0

    def pack(self) -> bytes:
        return ROW.pack(*self)


# A request as the batch and the state keep it: Row's fields as little-endian int64s.
ROW_WIDTH = len(Row._fields)
ROW = struct.Struct(f"<{ROW_WIDTH}q")
ROW_TOTAL = Row._fields.index("total")
ROW_HOUR = Row._fields.index("hour")
ROW_DIM = Row._fields.index("dim")
ROW_FIGURES = Row._fields.index("input")  # the fields from here on are AGG_COLUMNS[AGG_INPUT:]
assert Row._fields[ROW_FIGURES:] == AGG_COLUMNS[AGG_INPUT:]

# one dedup index entry: the key's hash, then its row
PAGE_ENTRY = struct.Struct(f"<q{ROW.size}s")
ENTRY_WIDTH = 1 + ROW_WIDTH  # int64 fields
ENTRY_DIM = 1 + ROW_DIM  # the dim's place among them

_INT64 = ROW.size // ROW_WIDTH
_TOTAL = slice(ROW_TOTAL * _INT64, (ROW_TOTAL + 1) * _INT64)
_HOUR = slice(ROW_HOUR * _INT64, (ROW_HOUR + 1) * _INT64)
_DIM = slice(ROW_DIM * _INT64, (ROW_DIM + 1) * _INT64)


def unpack_row(row: bytes) -> Row:
    return Row._make(ROW.unpack(row))


def row_total(row: bytes) -> int:
    return int.from_bytes(row[_TOTAL], "little", signed=True)


def row_hour(row: bytes) -> int:
    return int.from_bytes(row[_HOUR], "little", signed=True)


def row_dim(row: bytes) -> int:
    return int.from_bytes(row[_DIM], "little", signed=True)


def beats(row: bytes, held: bytes, dim_list: list[DimKey]) -> bool:
    """Whether a copy of a request stands over the copy held in the same read (see :func:`wins`);
    ``dim_list`` names the label ids of both rows."""
    won = wins(row_total(row), row_hour(row), row_total(held), row_hour(held))
    return dim_list[row_dim(row)] < dim_list[row_dim(held)] if won is None else won


def add_sums(into: dict[K, list[int]], sums: Mapping[K, list[int]]) -> None:
    """Add aggregate lists to those of ``into``, column by column, in place; a key ``into`` has
    not got yet gets a copy of its list."""
    for k, v in sums.items():
        held = into.get(k)
        if held is None:
            into[k] = list(v)
        else:
            held[:] = map(add, held, v)


def wins(total: int, hour: int, held_total: int, held_hour: int) -> bool | None:
    """Whether a copy of a request stands over the copy held in the same read, by its token total
    and the hour it is booked in; None on a tie of both, which the labels decide.

    The rule: the larger total; on a tie, the one booked earlier; then the one whose (source,
    model, entrypoint) sorts first; then the one held (copies equal in all of these are the same
    figures). Copies of one request differ in their totals while it streams, in their hours across
    an hour's edge, and in their labels where a writer names the model or entrypoint differently,
    so which copy stands does not depend on the order files are read in, on where a read's blocks
    end, nor on which process of a split read read them. (A copy already committed is replaced
    only by a larger one.)"""
    if total != held_total:
        return total > held_total
    if hour != held_hour:
        return hour < held_hour
    return None


# copied for each key: 0.8 us a key instead of 1.2 for a new object with its digest size
_BLAKE2B_8 = hashlib.blake2b(digest_size=8)


def key_hash(key: str) -> int:
    """64-bit signed id of a dedup key: what the state stores instead of the long string."""
    h = _BLAKE2B_8.copy()
    h.update(key.encode("utf-8", "surrogatepass"))
    return int.from_bytes(h.digest(), "big", signed=True)


# ------------------------------------------------------------------ the batch



@dataclass
class RefreshStats:
    """What one refresh read and kept: the batch counts lines and requests, the reader bytes and files."""

    lines: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    bytes_read: int = 0
    files_read: int = 0
    records: int = 0
    new_requests: int = 0
    replaced: int = 0
    statted: int = 0  # log files statted (a watched refresh stats only those an event named)
    duration: float = 0.0


class Batch:
    """What one refresh has read but not yet committed.

    ``known`` is the dedup index as last committed (key hash -> row) and is only read here;
    ``pending`` the rows this batch keeps (new requests, and larger copies of known ones, whose
    stored rows are in ``replacing``); ``unkeyed`` the rows of requests without a key (each
    counts). ``deltas`` follows every row kept or dropped as it happens, so what the batch adds
    to the hourly aggregates is known without reading the rows again at the commit. Label sets
    new to ``dim_list`` are appended to it (and to ``new_dims``, to be stored with the commit).
    """

    def __init__(self, *, known: dict[int, bytes], dims: dict[DimKey, int], dim_list: list[DimKey],
                 pricer: Pricer, now: float, stats: RefreshStats,
                 on_unpriced: Callable[[str, str], None], on_rejected: Callable[[str, Exception], None]) -> None:
        self.known = known
        self.dims = dims
        self.dim_list = dim_list
        self.pricer = pricer
        self.now = now
        self.stats = stats
        self.on_unpriced = on_unpriced  # (model, source) of a row that could not be priced
        self.on_rejected = on_rejected  # (source, error) of a line the parser or the arithmetic choked on
        self.lines: dict[tuple[str, str], int] = stats.lines
        self.pending: dict[int, bytes] = {}
        self.unkeyed: list[bytes] = []
        self.replacing: dict[int, bytes] = {}
        self.new_dims: list[tuple[int, str, str, str]] = []
        self.skipping: dict[str, bool] = {}  # path -> whether its new offset sits inside an overlong line
        self.deltas: dict[tuple[int, int], list[int]] = {}  # (hour, dim) -> AGG_COLUMNS sums

    def count(self, source: str, result: str, n: int = 1) -> None:
        self.lines[(source, result)] += n

    def poisoned(self, source: str, exc: Exception) -> None:
        """A line the parser or the arithmetic choked on: counted as bad usage, and reported."""
        self.lines[(source, readers.BAD_USAGE)] += 1
        self.on_rejected(source, exc)

    def take(self, source: str, parsed: readers.Parsed) -> None:
        """One line's result: a reason, nothing (a line without usage), or its records."""
        if isinstance(parsed, str):
            self.lines[(source, parsed)] += 1
            return
        if not parsed:
            self.lines[(source, readers.IGNORED)] += 1
            return
        duplicate = True
        for rec in parsed:
            self.stats.records += 1
            t = rec.tokens
            total = t[0] + t[1] + t[2] + t[3] + t[4]  # Tokens.total, without the property call
            if rec.dedup_key is None:
                self.unkeyed.append(self._keep(rec, total))
                duplicate = False
                continue
            key = key_hash(rec.dedup_key)
            new, keep = self._claim(key, total, int(rec.timestamp) // 3600 * 3600,
                                    lambda: (rec.source, rec.model, rec.entrypoint))  # noqa: B023 - called at once
            if keep:
                self.pending[key] = self._keep(rec, total)
            if new:
                duplicate = False
        self.lines[(source, readers.DUPLICATE if duplicate else readers.COUNTED)] += 1

    def take_block(self, source: str, blk: readers.ClaudeBlock) -> None:
        """A block of transcript lines, its copies of one request already folded by the reader."""
        lines = self.lines
        for result, n in blk.counts.items():
            lines[(source, result)] += n
        counted = duplicate = records = 0
        fields, claim, keep_row, pending = readers.claude_fields, self._claim, self._keep_row, self.pending
        known = self.known
        fresh, from_bytes = _BLAKE2B_8.copy, int.from_bytes
        for (mid, rid), (total, ts, line, copies) in blk.best.items():
            records += copies
            # key_hash, inline: this runs for every request in a cold read
            h = fresh()
            h.update(f"{mid}\x1f{rid or ''}".encode("utf-8", "surrogatepass"))
            key = from_bytes(h.digest(), "big", signed=True)
            if key not in pending and key not in known:  # a new request: what a cold read sees most
                pending[key] = keep_row(source, ts, total, None, fields(line))
                counted += 1
                duplicate += copies - 1
                continue
            new, keep = claim(key, total, int(ts) // 3600 * 3600,
                              lambda: (source, line.message.model, line.entrypoint or ""))  # noqa: B023 - called at once
            if keep:
                pending[key] = keep_row(source, ts, total, None, fields(line))
            if new:
                counted += 1
                duplicate += copies - 1
            else:
                duplicate += copies
        for total, ts, line in blk.unkeyed:
            self.unkeyed.append(keep_row(source, ts, total, None, fields(line)))
        counted += len(blk.unkeyed)
        self.stats.records += records + len(blk.unkeyed)
        if counted:
            lines[(source, readers.COUNTED)] += counted
        if duplicate:
            lines[(source, readers.DUPLICATE)] += duplicate
        for rec in blk.records:
            self.take(source, [rec])

    def _claim(self, key: int, total: int, hour: int, labels: Callable[[], DimKey]) -> tuple[bool, bool]:
        """Offer a copy of a request: (whether the request is new, whether this copy is the one
        to keep). A held or stored copy it beats is taken out of the deltas here."""
        held = self.pending.get(key)
        if held is not None:
            won = wins(total, hour, row_total(held), row_hour(held))
            if won is None:  # a tie of total and hour: the labels decide
                won = labels() < self.dim_list[row_dim(held)]
            if won:
                self.add_row(held, -1)
                return False, True
            return False, False
        old = self.known.get(key)
        if old is None:
            return True, True
        if total > row_total(old):
            self.replacing[key] = old
            self.add_row(old, -1)
            return False, True
        return False, False

    def _keep(self, rec: UsageRecord, total: int) -> bytes:
        return self._keep_row(rec.source, rec.timestamp, total, rec.cost_usd,
                              (rec.model, rec.entrypoint, rec.service_tier, rec.inference_geo, rec.speed, rec.tokens),
                              rec.reported_usd)

    def _keep_row(self, source: str, ts: float, total: int, cost_usd: Decimal | None,
                  fields: tuple[str, str, str, str, str, tuple[int, ...]],
                  reported_usd: Decimal | None = None) -> bytes:
        """The packed row of a copy being kept, added to the deltas. ``fields`` as
        :func:`readers.claude_fields` gives them: model, entrypoint, tier, geo, speed, tokens.
        A stated ``cost_usd`` is booked as it is (a record with no tokens and a cost is priced
        spend, not unpriced tokens); ``reported_usd`` goes beside the cost, never into it."""
        model, entrypoint, service_tier, inference_geo, speed, t = fields
        dk = (source, model, entrypoint)
        dim = self.dims.get(dk)
        if dim is None:
            dim = self.dims[dk] = len(self.dim_list)
            self.dim_list.append(dk)
            self.new_dims.append((dim, *dk))
        if cost_usd is not None:
            cost: int | None = int((cost_usd * PICO).to_integral_value())
        else:
            cost = self.pricer.cost_pico(model, t, ts, service_tier, inference_geo, speed)  # type: ignore[arg-type]
        unpriced = 0
        if cost is None:
            self.on_unpriced(model, source)
            cost, unpriced = 0, total
        reported = int((reported_usd * PICO).to_integral_value()) if reported_usd is not None else 0
        hour = int(ts) // 3600 * 3600
        d = self.deltas.get((hour, dim))
        if d is None:
            d = self.deltas[(hour, dim)] = [0] * AGG_WIDTH
        # t is in Tokens order: input, output, cache read, 5-minute and 1-hour writes, web searches
        d[AGG_REQUESTS] += 1
        d[AGG_INPUT] += t[0]
        d[AGG_OUTPUT] += t[1]
        d[AGG_CACHE_READ] += t[2]
        d[AGG_CACHE_WRITE_5M] += t[3]
        d[AGG_CACHE_WRITE_1H] += t[4]
        d[AGG_WEB_SEARCH] += t[5]
        d[AGG_COST_PICO] += cost
        d[AGG_UNPRICED] += unpriced
        d[AGG_REPORTED_PICO] += reported
        return ROW.pack(total, hour, dim, *t, cost, unpriced, reported)  # Row's order

    def add_row(self, row: bytes, sign: int) -> None:
        """Add a row to the deltas (``sign`` 1), or take one that is no longer kept out (-1)."""
        fields = ROW.unpack(row)
        key = (fields[ROW_HOUR], fields[ROW_DIM])
        d = self.deltas.get(key)
        if d is None:
            d = self.deltas[key] = [0] * AGG_WIDTH
        d[AGG_REQUESTS] += sign
        for i, v in enumerate(fields[ROW_FIGURES:], AGG_INPUT):
            d[i] += sign * v

    def finish(self) -> dict[AggKey, list[int]]:
        """The aggregate deltas of the batch, by (hour, source, model, entrypoint)."""
        self.stats.replaced = len(self.replacing)
        self.stats.new_requests = len(self.pending) - len(self.replacing) + len(self.unkeyed)
        dims = self.dim_list
        return {(hour, *dims[dim]): v for (hour, dim), v in self.deltas.items() if any(v)}
