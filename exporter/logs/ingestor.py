"""Tail the usage logs by byte offset and fold new lines into the state database.

A refresh reads only bytes past each file's stored offset, stops at the last complete
line (a line still being written waits for its newline), deduplicates requests across
all files keeping the copy with the largest token total, prices what is new, and
commits offsets, dedup keys, aggregates and line counts in one transaction.
"""

from __future__ import annotations

import errno
import functools
import glob
import hashlib
import multiprocessing as mp
import os
import stat
import struct
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from array import array
from itertools import chain, starmap
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import structlog

from exporter.logs import parse as readers
from exporter.config import SourceConfig
from exporter.core.pricing import Pricer
from exporter.prices import load_pricer
from exporter.state import AGG_COLUMNS, PAGE_ENTRY, ROW, AggKey, FileState, StateDB
from exporter.core.records import UsageRecord
from exporter.logs.watch import FolderWatcher

log = structlog.get_logger()

HEAD_BYTES = 1024  # enough to hold the first line's ids, which tell two files apart
CHUNK_BYTES = 4 << 20
MAX_LINE_BYTES = 10 << 20
RETENTION_SECONDS = 45 * 86400
PARALLEL_MIN_BYTES = 64 << 20  # below this a cold read is faster in one process than starting helpers
MAX_WORKERS = 4
FULL_SCAN_SECONDS = 300.0  # a watched ingestor still stats every file this often
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
    statted: int = 0  # log files statted (a watched refresh stats only those an event named)
    duration: float = 0.0


def key_hash(key: str) -> int:
    """64-bit signed id of a dedup key: what the state stores instead of the long string."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "big", signed=True)


class DirCache:
    """Log folder listings, listed again only when a folder may have changed.

    Appending to a file does not change its folder's mtime, so files are still statted
    (by the ingestor). Without a watcher each folder costs one stat: its mtime says whether
    to list it again. With a usable watcher, a refresh marked ``trusted`` takes every
    watched folder's listing as it is, except the folders :meth:`forget` was told changed.
    """

    TRUST_AFTER_NS = 2_000_000_000  # a folder changed in the last 2 s may change again in the same tick

    def __init__(self, watcher: FolderWatcher | None = None) -> None:
        # folder -> (mtime_ns, (dev, ino), subfolders, files)
        self.entries: dict[str, tuple[int, tuple[int, int], list[str], list[str]]] = {}
        self.watcher = watcher
        self.watched: set[str] = set()
        self.links: set[str] = set()  # files that are symlinks: an event in their folder says nothing of them
        self.trusted = False
        self.renewed: set[str] = set()  # folders that went since the last refresh: stat all their files

    def forget(self, folders: Iterable[str]) -> None:
        for d in folders:
            cached = self.entries.pop(d, None)
            if cached is not None:
                self.links.difference_update(cached[3])  # listed again, its links are found again
            self.watched.discard(d)

    def walk(self, root: str, errors: list[str]) -> Iterator[str]:
        stack = [root]
        seen: set[tuple[int, int]] = set()
        now_ns = time.time_ns()
        watcher = self.watcher if self.watcher is not None and self.watcher.usable else None
        while stack:
            d = stack.pop()
            cached = self.entries.get(d)
            if cached is not None and self.trusted and d in self.watched:
                _, ident, subdirs, files = cached  # no event since it was listed: not even a stat
            else:
                try:
                    st = os.stat(d)
                except OSError as exc:
                    errors.append(f"{d}: {exc.strerror}")
                    continue
                ident = (st.st_dev, st.st_ino)
                if (cached is not None and cached[0] == st.st_mtime_ns and cached[1] == ident
                        and now_ns - st.st_mtime_ns > self.TRUST_AFTER_NS and (watcher is None or d in self.watched)):
                    _, _, subdirs, files = cached
                else:
                    if watcher is not None and watcher.watch(d):  # before listing: nothing slips in between
                        self.watched.add(d)
                    subdirs, files = [], []
                    try:
                        with os.scandir(d) as it:
                            for e in it:
                                # follow_symlinks=False: a symlink loop in a log folder must not recurse forever
                                if e.is_dir(follow_symlinks=False):
                                    subdirs.append(e.path)
                                elif e.name.endswith(".jsonl"):
                                    files.append(e.path)
                                    if e.is_symlink():
                                        self.links.add(e.path)
                    except OSError as exc:
                        errors.append(f"{d}: {exc.strerror}")
                        continue
                    self.entries[d] = (st.st_mtime_ns, ident, subdirs, files)
            if ident in seen:  # a loop through a bind mount or the root itself linked below
                continue
            seen.add(ident)
            yield from files
            stack.extend(subdirs)


def discover(source: SourceConfig, cache: DirCache | None = None) -> tuple[list[str], list[str]]:
    """(files, errors) for a source's paths: folders are walked for ``*.jsonl``, globs expanded."""
    cache = cache or DirCache()
    found: set[str] = set()
    errors: list[str] = []
    for raw in source.paths:
        path = os.path.normpath(os.path.expanduser(raw))  # one spelling per folder: the watch is keyed by it
        if _GLOB_CHARS & set(path):
            for p in glob.glob(path, recursive=True):
                if os.path.isdir(p):
                    found.update(cache.walk(p, errors))
                else:
                    found.add(p)
        elif os.path.isdir(path):
            found.update(cache.walk(path, errors))
        elif os.path.exists(path):
            found.add(path)
    return sorted(found), errors


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
        parallel_min_bytes: int = PARALLEL_MIN_BYTES,
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
        self.workers = min(os.cpu_count() or 1, MAX_WORKERS) if workers is None else workers
        self.parsers = {s.name: readers.parser_for(s) for s in self.sources}
        self.files: dict[str, FileState] = state.files() if state else {}
        # dedup key -> the packed row kept for it: its total decides a later copy, its figures
        # are what a bigger copy replaces (no lookup in the database on the hot path)
        self.known: dict[int, bytes] = state.request_rows() if state else {}
        self.dim_list: list[tuple[str, str, str]] = state.dims() if state else []
        self.dims: dict[tuple[str, str, str], int] = {d: i for i, d in enumerate(self.dim_list)}
        self.aggregates: dict[AggKey, list[int]] = state.aggregates() if state else {}
        self.line_counts: dict[tuple[str, str], int] = state.line_counts() if state else {}
        self.status: dict[str, SourceStatus] = {s.name: SourceStatus() for s in self.sources}
        # watch: stat only what inotify names (a long-running process); off, every refresh stats all
        self._watcher = FolderWatcher.create() if watch else None
        self.full_scan_seconds = full_scan_seconds
        self._full_scan_at = 0.0
        self._dircache = DirCache(self._watcher)
        self._stat_cache: dict[str, os.stat_result] = {}
        self._skipping: set[str] = set()  # files whose offset sits inside an overlong line
        self._stats: dict[str, os.stat_result] = {}  # this refresh's stat of each file
        self._unpriced_logged: set[str] = set()
        self._poison_logged: set[str] = set()
        self.unpriced_seen: list[tuple[str, str]] = []
        self.quiet = False
        # the hourly prune rewrites the dedup index: an hour after the last one, by any process
        last_prune = state.meta("last_prune") if state else None
        self._next_prune = float(last_prune) + 3600 if last_prune else 0.0
        self.last_stats = RefreshStats()
        self.last_deltas: dict[AggKey, list[int]] = {}

    # ------------------------------------------------------------------ the refresh

    def refresh(self, progress: Callable[[int, int], None] | None = None) -> RefreshStats:
        started = time.perf_counter()
        now = self.clock()
        self.last_deltas: dict[AggKey, list[int]] = {}  # what the last successful commit added
        stats = RefreshStats()
        batch = _Batch(self, now, stats)
        seen_paths: set[str] = set()
        listed: list[tuple[SourceConfig, str, os.stat_result]] = []
        changed = self._changed_files()  # None: stat every file
        cache, stat_cache = self._dircache, self._stat_cache
        watched, links, renewed, sep = cache.watched, cache.links, cache.renewed, os.sep
        fresh: dict[str, os.stat_result] = {}
        for source in self.sources:
            paths, errors = discover(source, cache)
            status = self.status[source.name]
            regular = 0
            for p in paths:
                st = None
                if changed is not None and p not in changed and p[:p.rfind(sep)] in watched and p not in links \
                        and (not renewed or not any(p.startswith(g) for g in renewed)):
                    st = stat_cache.get(p)  # its folder watched, and no event named it since its last stat
                if st is None:
                    stats.statted += 1
                    try:
                        st = os.stat(p)
                    except OSError as exc:  # a dangling link, a file gone since the listing
                        if exc.errno != errno.ENOENT or os.path.islink(p):
                            errors.append(f"{p}: {exc.strerror}")
                        continue
                if not stat.S_ISREG(st.st_mode):  # not a FIFO or device that happens to end in .jsonl
                    continue
                fresh[p] = st
                regular += 1
                seen_paths.add(p)
                listed.append((source, p, st))
            status.files = regular
            status.error = "; ".join(errors[:3]) if errors else None
        self._stat_cache = fresh
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
            file_updates = [*self._moved, *self._read_plan(plan, sizes, batch, now, progress)]
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

    def _changed_files(self) -> set[str] | None:
        """The files a watched refresh must stat; None when this refresh scans everything."""
        w = self._watcher
        dircache = self._dircache
        if w is None or not w.usable:
            dircache.trusted = False
            return None
        changes = w.changes()
        mono = time.monotonic()
        if changes is None or mono >= self._full_scan_at or not w.usable:
            # events may have been lost (or this is the first refresh): stat everything, and
            # again every few minutes for files no event reaches (network file systems)
            self._full_scan_at = mono + self.full_scan_seconds
            dircache.trusted = False
            dircache.renewed = set()
            return None
        dircache.forget(changes.folders | changes.gone)
        dircache.renewed = {os.path.join(g, "") for g in changes.gone}  # with a trailing separator
        dircache.trusted = True
        return changes.files

    def close(self) -> None:
        """Let go of the folder watches (a refresh after this stats everything)."""
        if self._watcher is not None:
            self._watcher.close()

    def _follow_renames(self, listed: list[tuple[SourceConfig, str, os.stat_result]]) -> None:
        """A file that moved to a new path (renamed, or rotated to a name the glob still matches)
        goes on from its offset there; reading it again from byte 0 would count lines without a
        request id twice. The file now at its old path, if any, is a new file."""
        self._moved: list[FileState] = []  # stored with the commit even when nothing new is read from them
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
            self.files[p] = moved = FileState(p, old.source, old.dev, old.ino, old.offset, old.head)
            self._moved.append(moved)
            if still is not None:
                del self.files[old.path]  # what sits there now is read from its start
            log.info("log_file_moved", source=source.name, old=old.path, path=p, offset=old.offset)

    def _read_plan(self, plan: list[tuple[SourceConfig, str]], sizes: list[int], batch: _Batch, now: float,
                   progress: Callable[[int, int], None] | None) -> list[FileState]:
        """Tail every planned file, in this process or split across helpers; the file states to store."""
        file_updates: list[FileState] = []
        groups = self._split(plan, sizes)
        pool, futures = None, []
        if len(groups) > 1:
            pool, futures = self._start_helpers(groups[1:], now)
            log.info("parallel_read", processes=len(groups), files=len(plan))
        try:
            own = groups[0]
            total_bytes = 0
            if progress:
                size_of = {p: n for (_, p), n in zip(plan, sizes, strict=True)}
                total_bytes = sum(size_of[p] for _, p in own)
            done = 0
            for source, path in own:
                upd, nbytes = self._tail_safely(source, path, batch)
                if upd is not None:
                    file_updates.append(upd)
                done += nbytes
                if progress:
                    progress(done, total_bytes)
            for fut in futures:
                self._merge(batch, fut.result(), file_updates)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        return file_updates

    def _tail_safely(self, source: SourceConfig, path: str, batch: _Batch) -> tuple[FileState | None, int]:
        try:
            return self._tail(source, path, batch)
        except OSError as exc:
            self.status[source.name].error = f"{path}: {exc.strerror or exc}"
            log.warning("log_file_unreadable", source=source.name, path=path, error=exc.strerror or str(exc))
            return None, 0

    # ------------------------------------------------------------------ parallel cold reads

    def _split(self, plan: list[tuple[SourceConfig, str]], sizes: list[int]) -> list[list[tuple[SourceConfig, str]]]:
        """One group per process, balanced by bytes to read; one group when the read is small."""
        if self.workers < 2 or self.state is None or len(plan) < 2 or sum(sizes) < self.parallel_min_bytes:
            return [plan]
        n = min(self.workers, len(plan))
        groups: list[list[int]] = [[] for _ in range(n)]
        loads = [0] * n
        for b, i in sorted(zip(sizes, range(len(plan)), strict=True), reverse=True):
            k = loads.index(min(loads))
            groups[k].append(i)
            loads[k] += b
        # each group in plan order, so files are still read in a stable order
        return [[plan[i] for i in sorted(g)] for g in groups if g]

    def _start_helpers(self, groups, now: float):
        # fork is cheap and safe while this is the only thread (report, the first refresh);
        # a serving process has threads, and forking those is not, so it spawns
        method = "fork" if threading.active_count() == 1 and "fork" in mp.get_all_start_methods() else "spawn"
        pool = ProcessPoolExecutor(max_workers=len(groups), mp_context=mp.get_context(method))
        tasks = [_Task(
            sources=self.sources, overrides=self.pricer.overrides,
            plan=[(s.name, p) for s, p in g], files={p: self.files[p] for _, p in g if p in self.files},
            known=self.known, dim_list=list(self.dim_list), now=now, max_line=self.max_line,
            skipping={p for _, p in g if p in self._skipping},
        ) for g in groups]
        return pool, [pool.submit(_helper_read, t) for t in tasks]

    def _merge(self, batch: _Batch, res: _Result, file_updates: list[FileState]) -> None:
        """Fold a helper's batch into this one, as if this process had read those files itself."""
        base = res.dim_base
        remap: dict[int, int] = {}
        for local, *dk in res.new_dims:
            key = tuple(dk)
            dim = self.dims.get(key)  # type: ignore[arg-type]
            if dim is None:
                dim = self.dims[key] = len(self.dim_list)  # type: ignore[index]
                self.dim_list.append(key)  # type: ignore[arg-type]
                batch.new_dims.append((dim, *key))  # type: ignore[arg-type]
            remap[local] = dim

        # the helper's label ids from dim_base on are its own: map them to this process's, in
        # bulk over the packed rows (an entry is the key and a row, so its dim is 4th; a row's is 3rd)
        lut = [*range(base), *(remap[i] for i in range(base, base + len(remap)))]
        their_pending = _remapped(res.pending, PAGE_ENTRY.size // 8, 3, lut)
        their_unkeyed = _remapped(res.unkeyed, ROW.size // 8, 2, lut)

        deltas = batch.deltas
        for (hour, dim), v in res.deltas.items():
            key = (hour, lut[dim])
            d = deltas.get(key)
            if d is None:
                deltas[key] = list(v)
            else:
                for i, x in enumerate(v):
                    d[i] += x
        pending = batch.pending
        for key, row in PAGE_ENTRY.iter_unpack(their_pending):  # one by one: no second dict of them all
            held = pending.get(key)
            if held is None:
                pending[key] = row
                continue
            # both processes kept a copy of this request: the deltas hold both, keep the larger
            if key not in batch.replacing and key not in res.replacing:
                # both processes took the request as new: one of those lines was a duplicate
                source = self.dim_list[ROW.unpack(row)[2]][0]
                batch.lines[(source, readers.COUNTED)] -= 1
                batch.lines[(source, readers.DUPLICATE)] += 1
            elif key in batch.replacing and key in res.replacing:
                batch.add_row(batch.replacing[key], 1)  # the stored copy was taken out twice
            if row_total(row) > row_total(held):
                batch.add_row(held, -1)
                pending[key] = row
            else:
                batch.add_row(row, -1)
        batch.unkeyed.extend(r for (r,) in _ROW_BYTES.iter_unpack(their_unkeyed))
        for key, old in res.replacing.items():
            batch.replacing.setdefault(key, old)
        batch.skipping.update(res.skipping)
        for k, n in res.lines.items():
            batch.lines[k] += n
        records, nbytes, nfiles = res.stats
        batch.stats.records += records
        batch.stats.bytes_read += nbytes
        batch.stats.files_read += nfiles
        file_updates.extend(res.file_updates)
        for name, error in res.errors.items():
            self.status[name].error = error
        for model, source in res.unpriced:
            self._log_unpriced(model, source)

    def _tail(self, source: SourceConfig, path: str, batch: _Batch) -> tuple[FileState | None, int]:
        """Read the new complete lines of one file; the FileState to store, and bytes read."""
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
            # a file the state has never seen, read from its start: its lines were there before
            # this read (a backlog), and a line without a time of its own keeps the file's age
            backlog = st.st_mtime if prev is None and start == 0 else None
            offset = self._read_lines(source, f, start, batch, path, backlog)
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
                    with open(entry.path, "rb", buffering=0) as f:
                        if _head_matches(f, prev.head):
                            f.seek(prev.offset)
                            self._read_lines(source, f, prev.offset, batch)
                    return
            except OSError:
                continue

    def _read_lines(self, source: SourceConfig, f, start: int, batch: _Batch, path: str | None = None,
                    backlog_mtime: float | None = None) -> int:
        """Feed complete lines from ``start`` on to the batch; returns the offset after the last one.

        ``backlog_mtime``: the file's modification time when this is the first read of a file the
        state has never seen (from offset 0), else None.
        """
        parse = self.parsers[source.name]
        name = source.name
        offset = start
        carry = b""
        # inside a line longer than max_line, discarding to its newline; such a line may still be
        # growing when a refresh ends, so whether the offset sits inside one is kept per file
        skipping = path is not None and start > 0 and path in self._skipping
        # A CLI result may carry no time of its own. In a file the state has never seen, read
        # from its start, such a line was there before this read: it is booked at the file's
        # modification time (never later than now), so a backlog read at first start keeps its
        # age. A line appended to a file already followed is booked at the time it is read.
        if source.kind == "cli_json":
            when = batch.now if backlog_mtime is None else min(batch.now, backlog_mtime)
            parse = functools.partial(parse, when=when)
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
            carry = data[block_end:]
            if len(carry) > self.max_line:
                batch.count(name, readers.TOO_LONG)
                offset += len(carry)
                carry = b""
                skipping = True
        if path is not None:
            batch.skipping[path] = skipping
        return offset

    def _scan_claude(self, data: bytes, pos: int, end: int, parse, batch: _Batch, name: str) -> None:
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

    def _scan_lines(self, data: bytes, pos: int, end: int, parse, batch: _Batch, name: str, now: float) -> None:
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

    def _commit(self, batch: _Batch, file_updates: list[FileState], gone: list[str], now: float) -> None:
        deltas = batch.finish()
        pending = batch.pending
        # the hourly prune writes the dedup index anew without what fell out of the retention
        # window (its totals stay in the aggregates); other commits append what they added
        known = self.known
        stale: set[int] | None = None
        if now >= self._next_prune and known:
            cutoff = int(now - self.retention) // 3600 * 3600
            # a key's row is the pending one when this batch replaced it: that one decides
            stale = {k for k, r in known.items() if _row_hour(r) < cutoff and k not in pending}
            stale.update(k for k, r in pending.items() if _row_hour(r) < cutoff)
            index = chain(((k, r) for k, r in known.items() if k not in pending and k not in stale),
                          ((k, r) for k, r in pending.items() if k not in stale))
        with self.state.transaction() as conn:
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
        # only after the commit succeeded does memory move on
        self.last_deltas = deltas
        for k, v in deltas.items():
            agg = self.aggregates.get(k)
            if agg is None:
                self.aggregates[k] = list(v)
            else:
                for i, x in enumerate(v):
                    agg[i] += x
        for (src, res), n in batch.lines.items():
            self.line_counts[(src, res)] = self.line_counts.get((src, res), 0) + n
        known.update(pending)
        if now >= self._next_prune:
            for k in stale or ():
                del known[k]
            self._next_prune = now + 3600
        for f in file_updates:
            self.files[f.path] = f
        for p in gone:
            self.files.pop(p, None)
        for p, inside in batch.skipping.items():
            (self._skipping.add if inside else self._skipping.discard)(p)

    def _log_unpriced(self, model: str, source: str) -> None:
        if model not in self._unpriced_logged:
            self._unpriced_logged.add(model)
            self.unpriced_seen.append((model, source))
            if self.quiet:
                return  # a helper process: the parent logs it
            log.warning("model_unpriced", model=model, source=source,
                        hint="its tokens are counted in claude_unpriced_tokens_total; add a pricing.overrides entry")


# ROW (a request as the batch and the state keep it) is defined with the state's schema.
_ROW_BYTES = struct.Struct(f"{ROW.size}s")
_AGG_WIDTH = len(AGG_COLUMNS)


def _remapped(packed: bytes, width: int, field: int, lut: list[int]) -> bytes | array:
    """Packed little-endian int64 records with one field mapped through ``lut`` (a buffer)."""
    if not packed or lut == list(range(len(lut))):
        return packed
    arr = array("q")
    arr.frombytes(packed)
    if sys.byteorder == "big":
        arr.byteswap()
    arr[field::width] = array("q", map(lut.__getitem__, arr[field::width]))
    if sys.byteorder == "big":
        arr.byteswap()
    return arr


def row_total(row: bytes) -> int:
    return int.from_bytes(row[:8], "little", signed=True)


def _row_hour(row: bytes) -> int:
    return int.from_bytes(row[8:16], "little", signed=True)


class _Batch:
    """What one refresh has read but not yet committed.

    ``deltas`` follows every row kept or dropped as it happens, so what the batch adds to
    the hourly aggregates is known without reading the rows again at the commit.
    """

    def __init__(self, ing: Ingestor, now: float, stats: RefreshStats) -> None:
        self.ing = ing
        self.now = now
        self.stats = stats
        self.lines: dict[tuple[str, str], int] = stats.lines
        self.pending: dict[int, bytes] = {}
        self.unkeyed: list[bytes] = []
        self.replacing: dict[int, bytes] = {}
        self.new_dims: list[tuple[int, str, str, str]] = []
        self.skipping: dict[str, bool] = {}
        self.deltas: dict[tuple[int, int], list[int]] = {}  # (hour, dim) -> AGG_COLUMNS sums

    def count(self, source: str, result: str, n: int = 1) -> None:
        self.lines[(source, result)] += n

    def poisoned(self, source: str, exc: Exception) -> None:
        """A line the parser or the arithmetic choked on: counted as bad usage, said once per source."""
        self.lines[(source, readers.BAD_USAGE)] += 1
        if source not in self.ing._poison_logged:
            self.ing._poison_logged.add(source)
            log.error("log_line_rejected", source=source, error=f"{type(exc).__name__}: {exc}")

    def take(self, source: str, parsed: readers.Parsed) -> None:
        """One line's result: a reason, nothing (a line without usage), or its records."""
        if type(parsed) is str:
            self.lines[(source, parsed)] += 1
            return
        if not parsed:
            self.lines[(source, readers.IGNORED)] += 1
            return
        duplicate = True
        for rec in parsed:
            self.stats.records += 1
            t = rec.tokens
            total = t[0] + t[1] + t[2] + t[3] + t[4]
            if rec.dedup_key is None:
                self.unkeyed.append(self._keep(rec, total))
                duplicate = False
                continue
            key = key_hash(rec.dedup_key)
            new, keep = self._claim(key, total)
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
        known = self.ing.known
        blake2b, from_bytes = hashlib.blake2b, int.from_bytes
        for (mid, rid), (total, ts, line, copies) in blk.best.items():
            records += copies
            # key_hash, inline: this runs for every request in a cold read
            key = from_bytes(blake2b(f"{mid}\x1f{rid or ''}".encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                             "big", signed=True)
            if key not in pending and key not in known:  # a new request: what a cold read sees most
                pending[key] = keep_row(source, ts, total, None, fields(line))
                counted += 1
                duplicate += copies - 1
                continue
            new, keep = claim(key, total)
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

    def _claim(self, key: int, total: int) -> tuple[bool, bool]:
        """Offer a copy of a request: (whether the request is new, whether this copy is the one
        to keep). A held or stored copy it beats is taken out of the deltas here."""
        held = self.pending.get(key)
        if held is not None:
            if total > row_total(held):
                self._drop(held)
                return False, True
            return False, False
        old = self.ing.known.get(key)
        if old is None:
            return True, True
        if total > row_total(old):
            self.replacing[key] = old
            self._drop(old)
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
        ing = self.ing
        dk = (source, model, entrypoint)
        dim = ing.dims.get(dk)
        if dim is None:
            dim = ing.dims[dk] = len(ing.dim_list)
            ing.dim_list.append(dk)
            self.new_dims.append((dim, *dk))
        if cost_usd is not None:
            cost: int | None = int((cost_usd * PICO).to_integral_value())
        else:
            cost = ing.pricer.cost_pico(model, t, ts, service_tier, inference_geo, speed)  # type: ignore[arg-type]
        unpriced = 0
        if cost is None:
            ing._log_unpriced(model, source)
            cost, unpriced = 0, total
        reported = int((reported_usd * PICO).to_integral_value()) if reported_usd is not None else 0
        hour = int(ts) // 3600 * 3600
        d = self.deltas.get((hour, dim))
        if d is None:
            d = self.deltas[(hour, dim)] = [0] * _AGG_WIDTH
        d[0] += 1
        d[1] += t[0]
        d[2] += t[1]
        d[3] += t[2]
        d[4] += t[3]
        d[5] += t[4]
        d[6] += t[5]
        d[7] += cost
        d[8] += unpriced
        d[9] += reported
        return ROW.pack(total, hour, dim, *t, cost, unpriced, reported)

    def _drop(self, row: bytes) -> None:
        """Take a row that is no longer kept out of the deltas."""
        self.add_row(row, -1)

    def add_row(self, row: bytes, sign: int) -> None:
        _total, hour, dim, *vals = ROW.unpack(row)
        d = self.deltas.get((hour, dim))
        if d is None:
            d = self.deltas[(hour, dim)] = [0] * _AGG_WIDTH
        d[0] += sign
        for i, v in enumerate(vals, 1):
            d[i] += sign * v

    def finish(self) -> dict[AggKey, list[int]]:
        """The aggregate deltas of the batch, by (hour, source, model, entrypoint)."""
        self.stats.replaced = len(self.replacing)
        self.stats.new_requests = len(self.pending) - len(self.replacing) + len(self.unkeyed)
        dims = self.ing.dim_list
        return {(hour, *dims[dim]): v for (hour, dim), v in self.deltas.items() if any(v)}


def _head_matches(f, head: bytes) -> bool:
    pos = f.tell()
    f.seek(0)
    got = f.read(len(head))
    f.seek(pos)
    return got == head


def _read_head(f) -> bytes:
    f.seek(0)
    return f.read(HEAD_BYTES)


# ---------------------------------------------------------------------- helper processes


@dataclass(frozen=True)
class _Task:
    sources: tuple[SourceConfig, ...]
    overrides: Any
    plan: list[tuple[str, str]]
    files: dict[str, FileState]
    known: dict[int, bytes]
    dim_list: list[tuple[str, str, str]]
    now: float
    max_line: int
    skipping: set[str]  # files whose offset sits inside an overlong line


@dataclass(frozen=True)
class _Result:
    pending: bytes  # state.PAGE_ENTRY entries
    unkeyed: bytes  # ROW rows
    replacing: dict[int, bytes]
    lines: dict[tuple[str, str], int]
    deltas: dict[tuple[int, int], list[int]]
    new_dims: list[tuple[int, str, str, str]]
    dim_base: int
    file_updates: list[FileState]
    errors: dict[str, str]
    stats: tuple[int, int, int]
    unpriced: list[tuple[str, str]]
    skipping: dict[str, bool]


def _helper_read(task: _Task) -> _Result:
    """Read a share of the files in a helper process; the parent dedups, prices nothing twice, commits."""
    ing = Ingestor(task.sources, None, load_pricer(task.overrides), clock=lambda: task.now,
                   max_line_bytes=task.max_line, workers=1)
    ing.files = task.files
    ing.known = task.known
    ing.dim_list = list(task.dim_list)
    ing.dims = {d: i for i, d in enumerate(ing.dim_list)}
    ing._skipping = set(task.skipping)
    ing.quiet = True
    stats = RefreshStats()
    batch = _Batch(ing, task.now, stats)
    by_name = {s.name: s for s in task.sources}
    updates = []
    for name, path in task.plan:
        upd, _ = ing._tail_safely(by_name[name], path, batch)
        if upd is not None:
            updates.append(upd)
    errors = {name: st.error for name, st in ing.status.items() if st.error}
    return _Result(
        # packed: one bytes object pickles and crosses the pipe far faster than 100k small ones
        pending=b"".join(starmap(PAGE_ENTRY.pack, batch.pending.items())), unkeyed=b"".join(batch.unkeyed),
        replacing=batch.replacing, lines=dict(batch.lines),
        deltas=batch.deltas,
        new_dims=batch.new_dims, dim_base=len(task.dim_list), file_updates=updates, errors=errors,
        stats=(stats.records, stats.bytes_read, stats.files_read),
        unpriced=[(m, s) for m, s in ing.unpriced_seen],
        skipping=batch.skipping,
    )
