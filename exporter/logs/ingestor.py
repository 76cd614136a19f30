"""Tail the usage logs by byte offset and fold new lines into the state database.

A refresh reads only bytes past each file's stored offset, stops at the last complete
line (a line still being written waits for its newline), deduplicates requests across
all files keeping the copy with the largest token total, prices what is new, and
commits offsets, dedup keys, aggregates and line counts in one transaction, so a kill
at any point neither loses nor double counts.

The stages live beside this module: which files to read (``discover``), how a line reads
(``parse``), how copies of a request fold into rows and aggregates (``dedup``), and how a
large first read is split over helper processes (``coldread``). This module follows the
files from one refresh to the next (offsets, rotation, truncation, rewrites in place, renames,
overlong lines) and owns what a refresh leaves behind.
"""

from __future__ import annotations

import functools
import gc
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import BinaryIO


from exporter.logsetup import get_logger
from exporter.config import SourceConfig
from exporter.core.pricing import Pricer
from exporter.logs import coldread
from exporter.logs import parse as readers
from exporter.logs.dedup import PICO, AggKey, Batch, DimKey, RefreshStats, add_sums, row_hour
from exporter.logs.discover import FULL_SCAN_SECONDS, Finder, Listed, judge_missing
from exporter.logs.ratelimits import RATE_LIMITS, RateLimitTail
from exporter.state import FileState, StateDB

__all__ = ["CHUNK_BYTES", "MAX_LINE_BYTES", "PICO", "RETENTION_SECONDS", "TAIL_BYTES", "Ingestor", "RefreshStats",
           "SourceStatus"]

log = get_logger()

HEAD_BYTES = 1024  # enough to hold the first line's ids, which tell two files apart
# the bytes kept from just before a file's offset: the end of the last line read, which holds its
# uuid and timestamp in every writer we know, so they are not there again unless the line is
TAIL_BYTES = 256
FUTURE_SAID_SECONDS = 86_400  # requests booked further ahead of the clock than this: the log says so
CHUNK_BYTES = 4 << 20
SPOOL_DIR = "read-spool"  # beside the state: a split read's helper batches, removed when the read ends
MAX_LINE_BYTES = 10 << 20
RETENTION_SECONDS = 45 * 86400


MAX_SAID = 1_000  # distinct unreadable files said in the log; past that they are only counted


@dataclass
class SourceStatus:
    """How the last refresh went for one source."""

    files: int = 0
    error: str | None = None
    last_success: float | None = None
    unreadable: int = 0  # files listed that could not be statted (a dangling link, a loop of links)
    missing: tuple[str, ...] = ()  # configured paths that do not exist (as said in the log)


class Ingestor:
    """Owns the offsets, the dedup index and the running aggregates of the local logs."""

    def __init__(
        self,
        sources: Iterable[SourceConfig],
        state: StateDB | None,
        pricer: Pricer,
        *,
        clock: Callable[[], float] = time.time,
        retention_seconds: int = RETENTION_SECONDS,
        max_line_bytes: int = MAX_LINE_BYTES,
        parallel_min_bytes: int = coldread.PARALLEL_MIN_BYTES,
        workers: int | None = None,
        watch: bool = False,
        full_scan_seconds: float = FULL_SCAN_SECONDS,
    ) -> None:
        self.sources = tuple(sources)
        self.state = state  # None in a helper process of a parallel read: it never writes
        self.pricer = pricer
        self.clock = clock
        self.retention = retention_seconds
        self.max_line = max_line_bytes
        self.parallel_min_bytes = parallel_min_bytes
        self.workers = min(os.cpu_count() or 1, coldread.MAX_WORKERS) if workers is None else workers
        # otlp sources have no files: their requests come through commit_with (exporter.otlp)
        self.parsers = {s.name: readers.parser_for(s) for s in self.sources if s.kind not in (RATE_LIMITS, "otlp")}
        # the rate_limits sources: subscription window reports, not requests (listed with the rest)
        self.rate_limits = RateLimitTail(self.sources, state.conn if state else None)
        self.files: dict[str, FileState] = state.files() if state else {}
        # dedup key -> the packed row kept for it: its total decides a later copy, its figures
        # are what a bigger copy replaces (no lookup in the database on the hot path)
        self.known: dict[int, bytes] = state.request_rows() if state else {}
        self.dim_list: list[DimKey] = state.dims() if state else []
        self.dims: dict[DimKey, int] = {d: i for i, d in enumerate(self.dim_list)}
        self.aggregates: dict[AggKey, list[int]] = state.aggregates() if state else {}
        self.line_counts: dict[tuple[str, str], int] = state.line_counts() if state else {}
        self.status: dict[str, SourceStatus] = {s.name: SourceStatus() for s in self.sources}
        # watch: stat only what inotify names (a long-running process); off, every refresh stats all
        self._finder = Finder(watch=watch, full_scan_seconds=full_scan_seconds)
        self.in_long_line: set[str] = set()  # files whose offset sits inside an overlong line
        self._stats: dict[str, os.stat_result] = {}  # this refresh's stat of each file
        self._moved: list[FileState] = []  # files found at a new path this refresh
        self._unpriced_logged: set[str] = set()
        self._poison_logged: set[str] = set()
        self._future_said = False  # said once a process: requests dated well ahead of this clock
        self._unreadable_said: set[str] = set()  # unreadable files already said in the log (bounded)
        self._paths_said: set[tuple[str, str, str]] = set()  # (source, path, problem) said while it lasts
        self.unpriced_seen: list[tuple[str, str]] = []
        self.quiet = False  # a helper process: the parent logs what it found
        # the hourly prune rewrites the dedup index: an hour after the last one, by any process
        last_prune = state.meta("last_prune") if state else None
        self._next_prune = float(last_prune) + 3600 if last_prune else 0.0
        # the hour of the newest request held: the prune's window is measured back from it
        self._newest_hour = max((k[0] for k in self.aggregates), default=0)
        self.last_stats = RefreshStats()
        self.last_deltas: dict[AggKey, list[int]] = {}  # what the last successful commit added
        # what every commit since the last take_deltas() added (a refresh's and the OTLP receiver's)
        self.unpublished: dict[AggKey, list[int]] = {}
        # held by a refresh and by every commit_with: one batch at a time owns the index, the label ids
        # and the state's connection (re-entrant: a reader may hold it around a refresh)
        self.lock = threading.RLock()

    def new_batch(self, now: float, stats: RefreshStats | None = None) -> Batch:
        """An empty batch over this ingestor's dedup index and label ids."""
        return Batch(known=self.known, dims=self.dims, dim_list=self.dim_list, pricer=self.pricer, now=now,
                     stats=stats if stats is not None else RefreshStats(),
                     on_unpriced=self._log_unpriced, on_rejected=self._log_rejected)

    # ------------------------------------------------------------------ the refresh

    def refresh(self, progress: Callable[[int, int], None] | None = None) -> RefreshStats:
        with self.lock:
            return self._refresh(progress)

    def commit_with(self, fill: Callable[[Batch], Callable[[sqlite3.Connection], None] | None],
                    now: float) -> dict[AggKey, list[int]]:
        """A batch made outside a refresh (the OTLP receiver's): ``fill`` adds to a new batch and
        returns what else to write in the same transaction; committed like a refresh's, serialized
        with refreshes. Returns the batch's aggregate deltas; raises when the commit fails (nothing
        of it is kept then, in memory or on disk)."""
        with self.lock:
            dims_before = len(self.dim_list)
            batch = self.new_batch(now)
            try:
                extra = fill(batch)
                self._commit(batch, [], [], now, extra)
            except BaseException:
                for dk in self.dim_list[dims_before:]:
                    self.dims.pop(dk, None)
                del self.dim_list[dims_before:]
                raise
            return self.last_deltas

    def take_deltas(self) -> dict[AggKey, list[int]]:
        """What the commits since the last call added to the aggregates (call it holding ``lock``
        to read ``aggregates`` consistently with it)."""
        with self.lock:
            out, self.unpublished = self.unpublished, {}
            return out

    def _refresh(self, progress: Callable[[int, int], None] | None = None) -> RefreshStats:
        started = time.perf_counter()
        now = self.clock()
        self.last_deltas = {}
        stats = RefreshStats()
        batch = self.new_batch(now, stats)
        listed, per_source, stats.statted = self._finder.scan(self.sources)
        for source in self.sources:
            name = source.name
            count, errors, unreadable, missing = per_source[name]
            said, down = judge_missing(source, missing)
            self._say_paths(name, errors, said, down)
            if down:
                errors = [f"not found: {', '.join(said)}", *errors]
            status = self.status[name]
            status.files = count
            status.error = "; ".join(errors[:3]) if errors else None
            status.missing = tuple(said)
            status.unreadable = len(unreadable)
            for problem in unreadable:
                if problem not in self._unreadable_said and len(self._unreadable_said) < MAX_SAID:
                    self._unreadable_said.add(problem)
                    path, _, error = problem.rpartition(": ")
                    log.warning("log_file_unreadable", source=name, path=path, error=error,
                                hint="counted in claude_source_unreadable_files; the source's other files are read")
        if self.rate_limits.sources:
            windows = [x for x in listed if x[0].kind == RATE_LIMITS]
            listed = [x for x in listed if x[0].kind != RATE_LIMITS]
            failed: dict[str, str] = {}
            self.rate_limits.read(windows, batch, failed)
            for name, error in failed.items():
                self.status[name].error = error
        seen_paths = {p for _, p, _ in listed}
        files = self.files
        self._follow_renames(listed)

        plan: list[tuple[SourceConfig, str]] = []  # the files with something new, in a stable order
        sizes: list[int] = []  # bytes to read in each
        self._stats = {}
        for source, p, st in listed:
            prev = files.get(p)
            if prev is not None and prev.ino == st.st_ino and prev.dev == st.st_dev:
                if st.st_size == prev.offset:
                    continue  # unchanged since the last refresh: not even opened
                new = st.st_size - prev.offset if st.st_size > prev.offset else st.st_size
            else:
                new = st.st_size
            self._stats[p] = st
            plan.append((source, p))
            sizes.append(new)

        dims_before = len(self.dim_list)
        try:
            with _collector_paused(sum(sizes) >= self.parallel_min_bytes):
                file_updates = [*self._moved, *self._read_plan(plan, sizes, batch, progress)]
                # a file whose folder could not be listed this time is not gone: keep its offset
                unlisted = {name for name, st in self.status.items() if st.error}
                gone = [p for p, f in self.files.items() if p not in seen_paths and f.source not in unlisted]
                self._commit(batch, file_updates, gone, now)
        except BaseException:
            # the label ids this batch handed out were not stored: forget them, or a later batch
            # would store rows pointing at ids the dims table does not have
            for dk in self.dim_list[dims_before:]:
                self.dims.pop(dk, None)
            del self.dim_list[dims_before:]
            raise
        self._say_future(now)
        for status in self.status.values():
            if status.error is None:
                status.last_success = now
        stats.duration = time.perf_counter() - started
        self.last_stats = stats
        if stats.records or gone:
            log.info("logs_ingested", records=stats.records, new_requests=stats.new_requests,
                     replaced=stats.replaced, bytes=stats.bytes_read, files=stats.files_read,
                     files_gone=len(gone), seconds=round(stats.duration, 4))
        return stats

    def _say_paths(self, name: str, errors: list[str], missing: list[str], down: bool) -> None:
        """Say each configured path that does not exist and each folder that cannot be listed, once
        while it lasts (and that it is there again, when it comes back)."""
        now: set[tuple[str, str, str]] = set()
        for path in missing:
            key = (name, path, "missing")
            now.add(key)
            if key not in self._paths_said:
                log.warning("log_path_missing", source=name, path=path,
                            consequence="the source is down: none of its paths exists" if down
                            else "the source's other paths are read",
                            hint="check sources[].paths for a typo; it is looked for again at every refresh")
        for problem in errors:
            path, _, error = problem.rpartition(": ")
            key = (name, path, "unreadable")
            now.add(key)
            if key not in self._paths_said and len(self._paths_said) < MAX_SAID:
                log.warning("log_folder_unreadable", source=name, path=path, error=error,
                            consequence="the source is down; its files already read keep their totals",
                            hint="give the exporter's user read and search (r-x) permission on the folder")
        for gone_name, path, problem in [k for k in self._paths_said if k[0] == name and k not in now]:
            log.info("log_path_readable_again" if problem == "unreadable" else "log_path_found",
                     source=gone_name, path=path)
        self._paths_said = {k for k in self._paths_said if k[0] != name} | now

    def close(self) -> None:
        """Let go of the folder watches (a refresh after this stats everything)."""
        self._finder.close()

    def _follow_renames(self, listed: list[Listed]) -> None:
        """A file that moved to a new path (renamed, or rotated to a name the glob still matches)
        goes on from its offset there; reading it again from byte 0 would count lines without a
        request id twice. The file now at its old path, if any, is a new file."""
        self._moved = []  # stored with the commit even when nothing new is read from them
        new_paths = [(source, p, st) for source, p, st in listed if p not in self.files]
        if not new_paths:
            return
        by_inode = {(f.dev, f.ino): f for f in self.files.values()}
        now_at = {p: st for _, p, st in listed}
        for source, p, st in new_paths:
            old = by_inode.get((st.st_dev, st.st_ino))
            if old is None or old.source != source.name or old.path == p:
                continue
            still = now_at.get(old.path)
            if still is not None and (still.st_dev, still.st_ino) == (old.dev, old.ino):
                continue  # a hard link, not a move
            self.files[p] = moved = FileState(p, old.source, old.dev, old.ino, old.offset, old.head, old.tail)
            self._moved.append(moved)
            if still is not None:
                del self.files[old.path]  # what sits there now is read from its start
            log.info("log_file_moved", source=source.name, old=old.path, path=p, offset=old.offset)

    def _read_plan(self, plan: list[tuple[SourceConfig, str]], sizes: list[int], batch: Batch,
                   progress: Callable[[int, int], None] | None) -> list[FileState]:
        """Tail every planned file, in this process or shared with helpers; the file states to store."""
        file_updates: list[FileState] = []
        total = sum(sizes)
        done = 0
        # only the process that owns the state splits a read: a helper reads its share alone
        runs = coldread.chunks(plan, sizes, self.workers if self.state is not None else 1, self.parallel_min_bytes)
        if len(runs) == 1:
            for source, path in plan:
                upd, nbytes = self.tail(source, path, batch)
                if upd is not None:
                    file_updates.append(upd)
                done += nbytes
                if progress:
                    progress(done, total)
            return file_updates
        processes = min(self.workers, len(runs)) - 1
        assert self.state is not None  # only the owner of the state splits a read
        log.info("parallel_read", processes=processes + 1, files=len(plan), chunks=len(runs))
        helpers = None
        try:
            # the helpers' batches are handed over as files beside the state (see coldread.Helpers)
            helpers = coldread.Helpers(self._shared(plan, batch.now), [[(s.name, p) for s, p in run] for run in runs],
                                       processes, spool=str(self.state.path.parent / SPOOL_DIR))
            while (i := helpers.claim()) is not None:
                for source, path in runs[i]:
                    upd, nbytes = self.tail(source, path, batch)
                    if upd is not None:
                        file_updates.append(upd)
                    done += nbytes
                for res in helpers.ready():  # folded in while the helpers read on
                    done += self._merge(batch, res, file_updates)
                if progress:
                    progress(done, total)
            for res in helpers.rest():
                done += self._merge(batch, res, file_updates)
                if progress:
                    progress(done, total)
        finally:
            if helpers is not None:
                helpers.close()
        return file_updates

    def _merge(self, batch: Batch, res: coldread.Result, file_updates: list[FileState]) -> int:
        """Fold a helper's chunk into the batch; the bytes it read."""
        merged = coldread.merge(batch, res)
        file_updates.extend(merged.file_updates)
        for name, error in merged.errors.items():
            self.status[name].error = error
        for model, source_name in merged.unpriced:
            self._log_unpriced(model, source_name)
        return merged.bytes_read

    def _shared(self, plan: list[tuple[SourceConfig, str]], now: float) -> coldread.Shared:
        """What the helpers need of this process's state to read the planned files alike."""
        return coldread.Shared(
            sources=self.sources, overrides=self.pricer.overrides,
            files={p: self.files[p] for _, p in plan if p in self.files},
            known=self.known, dim_list=list(self.dim_list), now=now, max_line=self.max_line,
            skipping={p for _, p in plan if p in self.in_long_line},
        )

    # ------------------------------------------------------------------ tailing one file

    def tail(self, source: SourceConfig, path: str, batch: Batch) -> tuple[FileState | None, int]:
        """Read the new complete lines of one file into the batch; the FileState to store (None
        when nothing changed) and the bytes read. A file that cannot be read marks its source."""
        try:
            return self._tail(source, path, batch)
        except OSError as exc:
            self.status[source.name].error = f"{path}: {exc.strerror or exc}"
            log.warning("log_file_unreadable", source=source.name, path=path, error=exc.strerror or str(exc))
            return None, 0

    def _tail(self, source: SourceConfig, path: str, batch: Batch) -> tuple[FileState | None, int]:
        """Read the new complete lines of one file; the FileState to store, and bytes read.

        The file goes on from its stored offset only when it is the file that was read: the same
        inode, at least as long, its first bytes (``head``) and the bytes just before the offset
        (``tail``) still there. Otherwise it is read again from its start (the dedup index drops
        the requests counted already): another file on a reused inode (``log_file_replaced``),
        one cut short (``log_file_truncated``), or one truncated and written again past the old
        offset between two looks, its first lines the same (``log_file_rewritten``: a stat sees
        only a file that grew, and reading on from the offset would lose what was written before
        it). A file written again to exactly its old length is not opened, so such a rewrite is
        seen (and read) once the file grows again.
        """
        prev = self.files.get(path)
        if prev is not None:
            st = self._stats.get(path) or os.stat(path)
            if (prev.dev, prev.ino) == (st.st_dev, st.st_ino) and st.st_size == prev.offset:
                return None, 0  # unchanged since the last refresh: not even opened
        with open(path, "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            start = 0
            if prev is not None:
                if (prev.dev, prev.ino) == (st.st_dev, st.st_ino) and st.st_size >= prev.offset:
                    if prev.offset and not _holds(f, 0, prev.head):
                        log.info("log_file_replaced", source=source.name, path=path)
                    elif prev.offset and not _holds(f, prev.offset - len(prev.tail), prev.tail):
                        log.info("log_file_rewritten", source=source.name, path=path, offset=prev.offset,
                                 size=st.st_size)
                    else:
                        start = prev.offset
                elif (prev.dev, prev.ino) == (st.st_dev, st.st_ino):
                    log.info("log_file_truncated", source=source.name, path=path, offset=prev.offset,
                             size=st.st_size)
                else:
                    self._finish_rotated(source, prev, batch)
                    log.info("log_file_rotated", source=source.name, path=path)
            f.seek(start)
            # a file the state has never seen, read from its start: its lines were there before
            # this read (a backlog), and a line without a time of its own keeps the file's age
            backlog = st.st_mtime if prev is None and start == 0 else None
            offset, tail = self._read_lines(source, f, start, batch, path, backlog,
                                            prev.tail if prev is not None and start > 0 else b"")
            head = prev.head if prev is not None and start > 0 and len(prev.head) >= HEAD_BYTES else _read_head(f)
        if (prev is not None and prev.offset == offset and prev.ino == st.st_ino and prev.head == head
                and prev.tail == tail):
            return None, offset - start
        batch.stats.files_read += 1
        return FileState(path, source.name, st.st_dev, st.st_ino, offset, head, tail), offset - start

    def _finish_rotated(self, source: SourceConfig, prev: FileState, batch: Batch) -> None:
        """The file at this path was replaced: read what was appended to the old one before it moved."""
        directory = os.path.dirname(prev.path) or "."
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.inode() == prev.ino and entry.is_file(follow_symlinks=False):
                    with open(entry.path, "rb", buffering=0) as f:
                        if _holds(f, 0, prev.head):
                            f.seek(prev.offset)
                            self._read_lines(source, f, prev.offset, batch)
                    return
            except OSError:
                continue

    def _read_lines(self, source: SourceConfig, f: BinaryIO, start: int, batch: Batch, path: str | None = None,
                    backlog_mtime: float | None = None, tail: bytes = b"") -> tuple[int, bytes]:
        """Feed complete lines from ``start`` on to the batch; returns the offset after the last one
        and the last TAIL_BYTES bytes before it (from what was read: no second look at the file).

        ``backlog_mtime``: the file's modification time when this is the first read of a file the
        state has never seen (from offset 0), else None. ``tail``: the bytes known to end at ``start``.
        """
        parse = self.parsers[source.name]
        name = source.name
        offset = start
        carry = b""
        # inside a line longer than max_line, discarding to its newline; such a line may still be
        # growing when a refresh ends, so whether the offset sits inside one is kept per file
        skipping = path is not None and start > 0 and path in self.in_long_line
        # A CLI result may carry no time of its own. In a file the state has never seen, read
        # from its start, such a line was there before this read: it is booked at the file's
        # modification time (never later than now), so a backlog read at first start keeps its
        # age. A line appended to a file already followed is booked at the time it is read.
        if source.kind == "cli_json":
            when = batch.now if backlog_mtime is None else min(batch.now, backlog_mtime)
            parse = functools.partial(parse, when=when)  # type: ignore[call-arg]  # parse_cli_json's parser
        remaining = max(0, os.fstat(f.fileno()).st_size - start)
        while True:
            # read what the file holds (a read of CHUNK_BYTES on a small file would allocate it all)
            chunk = f.read(min(CHUNK_BYTES, remaining) + 1 if remaining < CHUNK_BYTES else CHUNK_BYTES)
            if not chunk:
                break
            remaining = max(0, remaining - len(chunk))
            batch.stats.bytes_read += len(chunk)
            data = carry + chunk if carry else chunk
            last_nl = data.rfind(b"\n")
            if last_nl < 0:
                if len(data) > self.max_line:
                    if not skipping:
                        batch.count(name, readers.TOO_LONG)
                    skipping = True
                    offset += len(data)
                    tail = _tail_of(tail, data, len(data))
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
                self._scan_lines(data, first, block_end, parse, batch, name, batch.now)
            offset += block_end
            tail = _tail_of(tail, data, block_end)
            carry = data[block_end:]
            if len(carry) > self.max_line:
                batch.count(name, readers.TOO_LONG)
                offset += len(carry)
                tail = _tail_of(tail, carry, len(carry))
                carry = b""
                skipping = True
        if path is not None:
            batch.skipping[path] = skipping
        return offset, tail

    def _scan_claude(self, data: bytes, pos: int, end: int, parse: readers.LineParser, batch: Batch,
                     name: str) -> None:
        """Fold a block of whole transcript lines into the batch, many lines per decode call."""
        block = data if pos == 0 and end == len(data) else data[pos:end]
        blk = readers.ClaudeBlock()
        if len(block) <= self.max_line:  # then no line in it can be too long
            try:
                readers.scan_claude_block(block, batch.now, parse, blk)
            except Exception as exc:  # noqa: BLE001 - one line must never stop a source for good
                batch.poisoned(name, exc)
                return
        else:
            for line in block.split(b"\n"):
                if len(line) > self.max_line:
                    batch.count(name, readers.TOO_LONG)
                elif line:
                    readers.scan_claude_block(line + b"\n", batch.now, parse, blk)
        batch.take_block(name, blk)

    def _scan_lines(self, data: bytes, pos: int, end: int, parse: Callable[[bytes, float], readers.Parsed],
                    batch: Batch, name: str, now: float) -> None:
        max_line = self.max_line
        for line in data[pos:end].split(b"\n"):
            if not line.strip():
                continue
            if len(line) > max_line:
                batch.count(name, readers.TOO_LONG)
            else:
                try:
                    batch.take(name, parse(line, now))
                except Exception as exc:  # noqa: BLE001 - one line must never stop a source for good
                    batch.poisoned(name, exc)

    # ------------------------------------------------------------------ commit

    def _commit(self, batch: Batch, file_updates: list[FileState], gone: list[str], now: float,
                extra: Callable[[sqlite3.Connection], None] | None = None) -> None:
        deltas = batch.finish()
        pending = batch.pending
        # the hourly prune writes the dedup index anew without what fell out of the retention
        # window (its totals stay in the aggregates); other commits append what they added
        known = self.known
        stale: set[int] | None = None
        if now >= self._next_prune and known:
            # measured back from the newest request the logs hold, not from the clock alone: a clock
            # that jumps ahead must not prune what a resumed session may still copy
            newest = max(self._newest_hour, max((k[0] for k in deltas), default=0)) + 3600
            cutoff = int(min(now, newest) - self.retention) // 3600 * 3600
            # a key's row is the pending one when this batch replaced it: that one decides
            stale = {k for k, r in known.items() if row_hour(r) < cutoff and k not in pending}
            stale.update(k for k, r in pending.items() if row_hour(r) < cutoff)
            index = chain(((k, r) for k, r in known.items() if k not in pending and k not in stale),
                          ((k, r) for k, r in pending.items() if k not in stale))
        state = self.state
        assert state is not None  # a helper process reads, only the owner of the state commits
        with state.transaction() as conn:
            StateDB.put_dims(conn, batch.new_dims)
            StateDB.add_aggregates(conn, deltas)
            if stale is not None:
                StateDB.rewrite_requests(conn, index)
                StateDB.put_meta(conn, "last_prune", repr(now))
            else:
                StateDB.put_requests(conn, pending.items())
            StateDB.add_line_counts(conn, batch.lines)
            StateDB.put_files(conn, file_updates)
            StateDB.drop_files(conn, gone)
            self.rate_limits.store(conn)
            if extra is not None:
                extra(conn)
        # only after the commit succeeded does memory move on
        self.rate_limits.stored()
        self.last_deltas = deltas
        add_sums(self.unpublished, deltas)
        add_sums(self.aggregates, deltas)
        for (src, res), n in batch.lines.items():
            self.line_counts[(src, res)] = self.line_counts.get((src, res), 0) + n
        if known:
            known.update(pending)
        else:  # a first read: the batch's rows are the whole index (no copy of 120k entries)
            self.known = known = pending
        for k in deltas:
            if k[0] > self._newest_hour:
                self._newest_hour = k[0]
        if now >= self._next_prune:
            for key in stale or ():
                del known[key]
            self._next_prune = now + 3600
        for f in file_updates:
            self.files[f.path] = f
        for p in gone:
            self.files.pop(p, None)
        for p, inside in batch.skipping.items():
            (self.in_long_line.add if inside else self.in_long_line.discard)(p)

    def _say_future(self, now: float) -> None:
        """Requests the last commit booked more than a day ahead of this clock: they count at their
        own hours (see ``readers.MAX_FUTURE_SECONDS``), and the log says so once a process."""
        if self._future_said:
            return
        ahead = max((k for k in self.last_deltas if k[0] > now + FUTURE_SAID_SECONDS), default=None)
        if ahead is None:
            return
        self._future_said = True
        log.warning("log_lines_future_dated", source=ahead[1], hour=_iso(ahead[0]), clock=_iso(now),
                    hint="this clock may be behind: such requests are counted at their own time; lines more than "
                         f"{readers.MAX_FUTURE_SECONDS // 86400:.0f} days ahead are rejected as bad_timestamp")

    def _log_unpriced(self, model: str, source: str) -> None:
        if model not in self._unpriced_logged:
            self._unpriced_logged.add(model)
            self.unpriced_seen.append((model, source))
            if self.quiet:
                return  # a helper process: the parent logs it
            log.warning("model_unpriced", model=model, source=source,
                        hint="its tokens are counted in claude_unpriced_tokens_total; add a pricing.overrides entry")

    def _log_rejected(self, source: str, exc: Exception) -> None:
        """A line the parser or the arithmetic choked on: said once per source."""
        if source not in self._poison_logged:
            self._poison_logged.add(source)
            log.error("log_line_rejected", source=source, error=f"{type(exc).__name__}: {exc}")


@contextmanager
def _collector_paused(pause: bool) -> Iterator[None]:
    """The cyclic garbage collector off for a large read and its commit: a 500 MB read allocates a
    few hundred thousand lists and tuples that hold no cycle, and the collector walked them 130
    times (0.06 s of the parent's time) to free nothing."""
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _holds(f: BinaryIO, pos: int, expected: bytes) -> bool:
    """Whether the file holds ``expected`` at ``pos`` (one pread; the file position does not move)."""
    return not expected or (pos >= 0 and os.pread(f.fileno(), len(expected), pos) == expected)


def _tail_of(tail: bytes, data: bytes, end: int) -> bytes:
    """The last TAIL_BYTES bytes of ``tail + data[:end]``."""
    if end >= TAIL_BYTES:
        return data[end - TAIL_BYTES:end]
    return (tail + data[:end])[-TAIL_BYTES:]


def _read_head(f: BinaryIO) -> bytes:
    f.seek(0)
    return f.read(HEAD_BYTES)
