"""Tail the usage logs by byte offset and fold new lines into the state database.

A refresh reads only bytes past each file's stored offset, stops at the last complete
line (a line still being written waits for its newline), deduplicates requests across
all files keeping the copy with the largest token total, prices what is new, and
commits offsets, dedup keys, aggregates and line counts in one transaction.
"""

from __future__ import annotations

import glob
import hashlib
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import structlog

from exporter import readers
from exporter.config import SourceConfig
from exporter.pricing import Pricer
from exporter.state import AggKey, FileState, StateDB
from exporter.usage import UsageRecord

log = structlog.get_logger()

HEAD_BYTES = 1024  # enough to hold the first line's ids, which tell two files apart
CHUNK_BYTES = 32 << 20
MAX_LINE_BYTES = 10 << 20
RETENTION_SECONDS = 45 * 86400
PICO = 10**12
_GLOB_CHARS = set("*?[")


@dataclass
class SourceStatus:
    """How the last refresh went for one source."""

    files: int = 0
    error: str | None = None
    last_success: float | None = None


@dataclass
class RefreshStats:
    lines: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    bytes_read: int = 0
    files_read: int = 0
    records: int = 0
    new_requests: int = 0
    replaced: int = 0
    duration: float = 0.0


def key_hash(key: str) -> int:
    """64-bit signed id of a dedup key: what the state stores instead of the long string."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "big", signed=True)


def discover(source: SourceConfig) -> tuple[list[str], list[str]]:
    """(files, errors) for a source's paths: folders are walked for ``*.jsonl``, globs expanded."""
    found: set[str] = set()
    errors: list[str] = []
    for raw in source.paths:
        path = os.path.expanduser(raw)
        if _GLOB_CHARS & set(path):
            for p in glob.glob(path, recursive=True):
                if os.path.isdir(p):
                    found.update(_walk(p, errors))
                elif os.path.isfile(p):
                    found.add(p)
        elif os.path.isdir(path):
            found.update(_walk(path, errors))
        elif os.path.isfile(path):
            found.add(path)
    return sorted(found), errors


def _walk(root: str, errors: list[str]) -> Iterator[str]:
    def onerror(exc: OSError) -> None:
        errors.append(f"{exc.filename}: {exc.strerror}")

    # followlinks=False: a symlink loop in a log folder must not hang or recurse forever
    for dirpath, _dirs, names in os.walk(root, onerror=onerror, followlinks=False):
        for name in names:
            if name.endswith(".jsonl"):
                yield os.path.join(dirpath, name)


class Ingestor:
    """Owns the offsets, the dedup index and the running aggregates of the local logs."""

    def __init__(
        self,
        sources: Iterable[SourceConfig],
        state: StateDB,
        pricer: Pricer,
        *,
        clock: Callable[[], float] = time.time,
        retention_seconds: int = RETENTION_SECONDS,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self.sources = tuple(sources)
        self.state = state
        self.pricer = pricer
        self.clock = clock
        self.retention = retention_seconds
        self.max_line = max_line_bytes
        self.parsers = {s.name: readers.parser_for(s) for s in self.sources}
        self.files: dict[str, FileState] = state.files()
        self.known: dict[int, int] = state.request_totals()
        self.aggregates: dict[AggKey, list[int]] = state.aggregates()
        self.line_counts: dict[tuple[str, str], int] = state.line_counts()
        self.status: dict[str, SourceStatus] = {s.name: SourceStatus() for s in self.sources}
        self._unpriced_logged: set[str] = set()
        self.last_stats = RefreshStats()

    # ------------------------------------------------------------------ the refresh

    def refresh(self, progress: Callable[[int, int], None] | None = None) -> RefreshStats:
        started = time.perf_counter()
        now = self.clock()
        stats = RefreshStats()
        batch = _Batch(self, now, stats)
        seen_paths: set[str] = set()
        file_updates: list[FileState] = []
        plan: list[tuple[SourceConfig, str]] = []
        for source in self.sources:
            paths, errors = discover(source)
            st = self.status[source.name]
            st.files = len(paths)
            st.error = "; ".join(errors[:3]) if errors else None
            plan.extend((source, p) for p in paths)
            seen_paths.update(paths)

        total_bytes = sum(_size(p) for _, p in plan) if progress else 0
        done = 0
        for source, path in plan:
            try:
                upd, nbytes = self._tail(source, path, batch)
            except OSError as exc:
                self.status[source.name].error = f"{path}: {exc.strerror or exc}"
                log.warning("log_file_unreadable", source=source.name, path=path, error=exc.strerror or str(exc))
                continue
            if upd is not None:
                file_updates.append(upd)
            done += nbytes
            if progress:
                progress(done, total_bytes)

        gone = [p for p, f in self.files.items() if p not in seen_paths]
        self._commit(batch, file_updates, gone, now)
        for st in self.status.values():
            if st.error is None:
                st.last_success = now
        stats.duration = time.perf_counter() - started
        self.last_stats = stats
        if stats.records or gone:
            log.info("logs_ingested", records=stats.records, new_requests=stats.new_requests,
                     replaced=stats.replaced, bytes=stats.bytes_read, files=stats.files_read,
                     files_gone=len(gone), seconds=round(stats.duration, 4))
        return stats

    def _tail(self, source: SourceConfig, path: str, batch: _Batch) -> tuple[FileState | None, int]:
        """Read the new complete lines of one file; the FileState to store, and bytes read."""
        prev = self.files.get(path)
        if prev is not None:
            st = os.stat(path)
            if (prev.dev, prev.ino) == (st.st_dev, st.st_ino) and st.st_size == prev.offset:
                return None, 0  # unchanged since the last refresh: not even opened
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            start = 0
            if prev is not None:
                if (prev.dev, prev.ino) == (st.st_dev, st.st_ino) and st.st_size >= prev.offset:
                    if prev.offset == 0 or _head_matches(f, prev.head):
                        start = prev.offset
                    else:
                        log.info("log_file_replaced", source=source.name, path=path)
                elif (prev.dev, prev.ino) == (st.st_dev, st.st_ino):
                    log.info("log_file_truncated", source=source.name, path=path, offset=prev.offset,
                             size=st.st_size)
                else:
                    self._finish_rotated(source, prev, batch)
                    log.info("log_file_rotated", source=source.name, path=path)
            f.seek(start)
            offset = self._read_lines(source, f, start, batch)
            head = prev.head if prev is not None and start > 0 and len(prev.head) >= HEAD_BYTES else _read_head(f)
        if prev is not None and prev.offset == offset and prev.ino == st.st_ino and prev.head == head:
            return None, offset - start
        batch.stats.files_read += 1
        return FileState(path, source.name, st.st_dev, st.st_ino, offset, head), offset - start

    def _finish_rotated(self, source: SourceConfig, prev: FileState, batch: _Batch) -> None:
        """The file at this path was replaced: read what was appended to the old one before it moved."""
        directory = os.path.dirname(prev.path) or "."
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.inode() == prev.ino and entry.is_file(follow_symlinks=False):
                    with open(entry.path, "rb") as f:
                        if _head_matches(f, prev.head):
                            f.seek(prev.offset)
                            self._read_lines(source, f, prev.offset, batch)
                    return
            except OSError:
                continue

    def _read_lines(self, source: SourceConfig, f, start: int, batch: _Batch) -> int:
        """Feed complete lines from ``start`` on to the batch; returns the offset after the last one."""
        parse = self.parsers[source.name]
        name = source.name
        offset = start
        carry = b""
        skipping = False  # inside a line longer than max_line, discarding to its newline
        while True:
            chunk = f.read(CHUNK_BYTES)
            if not chunk:
                break
            batch.stats.bytes_read += len(chunk)
            data = carry + chunk if carry else chunk
            last_nl = data.rfind(b"\n")
            if last_nl < 0:
                if len(data) > self.max_line:
                    if not skipping:
                        batch.count(name, readers.TOO_LONG)
                    skipping = True
                    offset += len(data)
                    carry = b""
                else:
                    carry = data
                continue
            block_end = last_nl + 1
            first = 0
            if skipping:
                first = data.find(b"\n") + 1
                skipping = False
            if source.kind == "claude_code":
                self._scan_claude(data, first, block_end, parse, batch, name)
            else:
                self._scan_lines(data, first, block_end, parse, batch, name)
            offset += block_end
            carry = data[block_end:]
            if len(carry) > self.max_line:
                batch.count(name, readers.TOO_LONG)
                offset += len(carry)
                carry = b""
                skipping = True
        return offset

    def _scan_claude(self, data: bytes, pos: int, end: int, parse, batch: _Batch, name: str) -> None:
        """Visit only the lines that mention usage; the rest are counted without being decoded."""
        # A JSON object line ends in "}"; one that does not is cut short. Counting both in C
        # tells malformed lines from ignorable ones without decoding either.
        total_lines = data.count(b"\n", pos, end) - data.count(b"\n\n", pos, end)
        closed = data.count(b"}\n", pos, end) + data.count(b"}\r\n", pos, end)
        visited = visited_closed = 0
        find, rfind = data.find, data.rfind
        max_line = self.max_line
        while True:
            i = find(b'"usage"', pos, end)
            if i < 0:
                break
            ls = rfind(b"\n", 0, i) + 1
            le = find(b"\n", i, end)
            visited += 1
            line = data[ls:le]
            if line.rstrip().endswith(b"}"):
                visited_closed += 1
            if le - ls > max_line:
                batch.count(name, readers.TOO_LONG)
            else:
                batch.take(name, parse(line, batch.now))
            pos = le + 1
        unvisited = total_lines - visited
        cut_short = max(0, unvisited - (closed - visited_closed))
        if cut_short:
            batch.count(name, readers.MALFORMED, cut_short)
        if unvisited > cut_short:
            batch.count(name, readers.IGNORED, unvisited - cut_short)

    def _scan_lines(self, data: bytes, pos: int, end: int, parse, batch: _Batch, name: str) -> None:
        max_line = self.max_line
        for line in data[pos:end].split(b"\n"):
            if not line.strip():
                continue
            if len(line) > max_line:
                batch.count(name, readers.TOO_LONG)
            else:
                batch.take(name, parse(line, batch.now))

    # ------------------------------------------------------------------ commit

    def _commit(self, batch: _Batch, file_updates: list[FileState], gone: list[str], now: float) -> None:
        request_rows, deltas = batch.finish()
        prune_before = int(now - self.retention) // 3600 * 3600
        with self.state.transaction() as conn:
            StateDB.add_aggregates(conn, deltas)
            StateDB.put_requests(conn, request_rows)
            StateDB.add_line_counts(conn, batch.lines)
            for f in file_updates:
                StateDB.put_file(conn, f)
            StateDB.drop_files(conn, gone)
            pruned = StateDB.prune_requests(conn, prune_before)
        # only after the commit succeeded does memory move on
        for k, v in deltas.items():
            agg = self.aggregates.get(k)
            if agg is None:
                self.aggregates[k] = list(v)
            else:
                for i, x in enumerate(v):
                    agg[i] += x
        for (src, res), n in batch.lines.items():
            self.line_counts[(src, res)] = self.line_counts.get((src, res), 0) + n
        for row in request_rows:
            self.known[row[0]] = row[5]
        for f in file_updates:
            self.files[f.path] = f
        for p in gone:
            self.files.pop(p, None)
        if pruned:
            self.known = self.state.request_totals()

    def _log_unpriced(self, model: str, source: str) -> None:
        if model not in self._unpriced_logged:
            self._unpriced_logged.add(model)
            log.warning("model_unpriced", model=model, source=source,
                        hint="its tokens are counted in claude_unpriced_tokens_total; add a pricing.overrides entry")


class _Batch:
    """What one refresh has read but not yet committed."""

    def __init__(self, ing: Ingestor, now: float, stats: RefreshStats) -> None:
        self.ing = ing
        self.now = now
        self.stats = stats
        self.lines: dict[tuple[str, str], int] = stats.lines
        self.pending: dict[int, UsageRecord] = {}
        self.unkeyed: list[UsageRecord] = []
        self.replacing: dict[int, tuple] = {}

    def count(self, source: str, result: str, n: int = 1) -> None:
        self.lines[(source, result)] += n

    def take(self, source: str, parsed: readers.Parsed) -> None:
        if isinstance(parsed, str):
            self.lines[(source, parsed)] += 1
            return
        if not parsed:
            self.lines[(source, readers.IGNORED)] += 1
            return
        duplicate = True
        for rec in parsed:
            self.stats.records += 1
            if rec.dedup_key is None:
                self.unkeyed.append(rec)
                duplicate = False
                continue
            key = key_hash(rec.dedup_key)
            total = rec.tokens.total
            held = self.pending.get(key)
            if held is not None:
                if total > held.tokens.total:
                    self.pending[key] = rec
                continue
            old_total = self.ing.known.get(key)
            if old_total is None:
                self.pending[key] = rec
                duplicate = False
            elif total > old_total:
                row = self.ing.state.request_row(key)
                if row is not None:
                    self.replacing[key] = row
                self.pending[key] = rec
        self.lines[(source, readers.DUPLICATE if duplicate else readers.COUNTED)] += 1

    def finish(self) -> tuple[list[tuple], dict[AggKey, list[int]]]:
        """Price what is new and turn it into request rows and aggregate deltas."""
        deltas: dict[AggKey, list[int]] = {}

        def add(k: AggKey, vals: list[int], sign: int) -> None:
            d = deltas.get(k)
            if d is None:
                deltas[k] = [sign * v for v in vals]
            else:
                for i, v in enumerate(vals):
                    d[i] += sign * v

        for key, row in self.replacing.items():
            hour, source, model, entrypoint, _total, *tok, cost, unpriced = row
            add((hour, source, model, entrypoint), [1, *tok, cost, sum(tok[:5]) if unpriced else 0], -1)
            self.stats.replaced += 1
        rows: list[tuple] = []
        for key, rec in self.pending.items():
            vals = self._values(rec)
            hour = int(rec.timestamp // 3600) * 3600
            add((hour, rec.source, rec.model, rec.entrypoint), vals, 1)
            rows.append((key, hour, rec.source, rec.model, rec.entrypoint, rec.tokens.total, *vals[1:8],
                         1 if vals[8] else 0))
            if key not in self.replacing:
                self.stats.new_requests += 1
        for rec in self.unkeyed:
            hour = int(rec.timestamp // 3600) * 3600
            add((hour, rec.source, rec.model, rec.entrypoint), self._values(rec), 1)
            self.stats.new_requests += 1
        return rows, {k: v for k, v in deltas.items() if any(v)}

    def _values(self, rec: UsageRecord) -> list[int]:
        t = rec.tokens
        if rec.cost_usd is not None:
            cost: int | None = int((rec.cost_usd * PICO).to_integral_value())
        else:
            cost = self.ing.pricer.cost_pico(rec.model, t, when=rec.timestamp, service_tier=rec.service_tier,
                                             inference_geo=rec.inference_geo, speed=rec.speed)
        unpriced = 0
        if cost is None:
            self.ing._log_unpriced(rec.model, rec.source)
            cost, unpriced = 0, t.total
        return [1, t.input, t.output, t.cache_read, t.cache_write_5m, t.cache_write_1h, t.web_search_requests,
                cost, unpriced]


def _head_matches(f, head: bytes) -> bool:
    pos = f.tell()
    f.seek(0)
    got = f.read(len(head))
    f.seek(pos)
    return got == head


def _read_head(f) -> bytes:
    f.seek(0)
    return f.read(HEAD_BYTES)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def pico_to_usd(pico: int) -> Decimal:
    return Decimal(pico) / PICO

