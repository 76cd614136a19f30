"""A large read split over helper processes: the first read of a long history.

Reading and decoding 500 MB of transcripts is CPU work that one Python process does on one
core. Past ``PARALLEL_MIN_BYTES`` the planned files are split into groups balanced by bytes,
and each group but the parent's own is read by a helper process into a batch of its own,
with the parent's dedup index as it stood before the read. A helper prices what it keeps and
hands back its rows packed in one bytes object (one object pickles and crosses the pipe far
faster than 100k small ones); the parent maps the helper's new label ids to its own, keeps
the larger copy of a request both read, and commits everything in one transaction, as if it
had read every file itself. Only the parent writes the state.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import struct
import sys
import threading
from array import array
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import starmap
from typing import TypeVar

from exporter.config import PriceOverride, SourceConfig
from exporter.logs import parse as readers
from exporter.logs.dedup import (
    ENTRY_DIM,
    ENTRY_WIDTH,
    PAGE_ENTRY,
    ROW,
    ROW_DIM,
    ROW_WIDTH,
    Batch,
    DimKey,
    row_dim,
    row_total,
)
from exporter.prices import load_pricer
from exporter.state import FileState

__all__ = ["MAX_WORKERS", "PARALLEL_MIN_BYTES", "Helpers", "Merged", "Result", "Task", "merge", "split"]

PARALLEL_MIN_BYTES = 64 << 20  # below this a cold read is faster in one process than starting helpers
MAX_WORKERS = 4
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>

P = TypeVar("P")
_ROW_BYTES = struct.Struct(f"{ROW.size}s")  # a row as one bytes object


@dataclass(frozen=True)
class Task:
    """One helper's share of a read, and what it needs of the parent's state to read it alike."""

    sources: tuple[SourceConfig, ...]
    overrides: Mapping[str, PriceOverride]
    plan: list[tuple[str, str]]  # (source name, path) in read order
    files: dict[str, FileState]
    known: dict[int, bytes]
    dim_list: list[DimKey]
    now: float
    max_line: int
    skipping: set[str]  # files whose offset sits inside an overlong line


@dataclass(frozen=True)
class Result:
    """A helper's batch, packed to cross the pipe."""

    pending: bytes  # PAGE_ENTRY entries
    unkeyed: bytes  # ROW rows
    replacing: dict[int, bytes]
    lines: dict[tuple[str, str], int]
    deltas: dict[tuple[int, int], list[int]]
    new_dims: list[tuple[int, str, str, str]]
    dim_base: int  # label ids from here on are the helper's own
    file_updates: list[FileState]
    errors: dict[str, str]  # source -> the error its last failed file left
    stats: tuple[int, int, int]  # records, bytes read, files read
    unpriced: list[tuple[str, str]]  # (model, source)
    skipping: dict[str, bool]


@dataclass(frozen=True)
class Merged:
    """What a merged helper leaves for the parent's own bookkeeping (the batch has the rest)."""

    file_updates: list[FileState]
    errors: dict[str, str]
    unpriced: list[tuple[str, str]]


def split(plan: Sequence[P], sizes: Sequence[int], workers: int, min_bytes: int = PARALLEL_MIN_BYTES) -> list[list[P]]:
    """One group per process, balanced by bytes to read; one group when the read is small."""
    if workers < 2 or len(plan) < 2 or sum(sizes) < min_bytes:
        return [list(plan)]
    n = min(workers, len(plan))
    groups: list[list[int]] = [[] for _ in range(n)]
    loads = [0] * n
    for b, i in sorted(zip(sizes, range(len(plan)), strict=True), reverse=True):
        k = loads.index(min(loads))
        groups[k].append(i)
        loads[k] += b
    # each group in plan order, so files are still read in a stable order
    return [[plan[i] for i in sorted(g)] for g in groups if g]


def make_pool(workers: int) -> ProcessPoolExecutor:
    """Helper processes that die with their parent: a kill -9 of the exporter must not leave
    40-55 MB helpers reading on."""
    # fork is cheap and safe while this is the only thread (report, the first refresh);
    # a serving process has threads, and forking those is not, so it spawns
    method = "fork" if threading.active_count() == 1 and "fork" in mp.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method),
                               initializer=_die_with_parent, initargs=(os.getpid(),))


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies (prctl PR_SET_PDEATHSIG); where that is
    not to be had, the helper still ends when the pool's pipe to its parent breaks."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent was gone before the request was made
        os._exit(1)


class Helpers:
    """Helper processes, one per task, started at once; their results in task order."""

    def __init__(self, tasks: list[Task]) -> None:
        # fork is cheap and safe while this is the only thread (report, the first refresh);
        # a serving process has threads, and forking those is not, so it spawns
        self._pool = make_pool(len(tasks))
        self._futures: list[Future[Result]] = [self._pool.submit(_helper_read, t) for t in tasks]

    def results(self) -> Iterator[Result]:
        for fut in self._futures:
            yield fut.result()

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


def _helper_read(task: Task) -> Result:
    """Read a share of the files in a helper process; the parent dedups, prices nothing twice, commits."""
    # imported here: the ingestor imports this module, and a helper reads with one of its own
    from exporter.logs.ingestor import Ingestor

    ing = Ingestor(task.sources, None, load_pricer(task.overrides), clock=lambda: task.now,
                   max_line_bytes=task.max_line, workers=1)
    ing.files = task.files
    ing.known = task.known
    ing.dim_list = list(task.dim_list)
    ing.dims = {d: i for i, d in enumerate(ing.dim_list)}
    ing.in_long_line = set(task.skipping)
    ing.quiet = True
    batch = ing.new_batch(task.now)
    by_name = {s.name: s for s in task.sources}
    updates = []
    for name, path in task.plan:
        upd, _ = ing.tail(by_name[name], path, batch)
        if upd is not None:
            updates.append(upd)
    errors = {name: st.error for name, st in ing.status.items() if st.error}
    stats = batch.stats
    return Result(
        pending=b"".join(starmap(PAGE_ENTRY.pack, batch.pending.items())), unkeyed=b"".join(batch.unkeyed),
        replacing=batch.replacing, lines=dict(batch.lines),
        deltas=batch.deltas,
        new_dims=batch.new_dims, dim_base=len(task.dim_list), file_updates=updates, errors=errors,
        stats=(stats.records, stats.bytes_read, stats.files_read),
        unpriced=list(ing.unpriced_seen),
        skipping=batch.skipping,
    )


def _remapped(packed: bytes, width: int, field: int, lut: list[int]) -> bytes | array[int]:
    """Packed little-endian int64 records of ``width`` fields, ``field`` mapped through ``lut`` (a buffer)."""
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


def merge(batch: Batch, res: Result) -> Merged:
    """Fold a helper's batch into the parent's, as if the parent had read those files itself."""
    dims, dim_list = batch.dims, batch.dim_list
    base = res.dim_base
    remap: dict[int, int] = {}
    for local, *names in res.new_dims:
        key: DimKey = (names[0], names[1], names[2])
        dim = dims.get(key)
        if dim is None:
            dim = dims[key] = len(dim_list)
            dim_list.append(key)
            batch.new_dims.append((dim, *key))
        remap[local] = dim

    # the helper's label ids from dim_base on are its own: map them to the parent's, in bulk
    # over the packed rows
    lut = [*range(base), *(remap[i] for i in range(base, base + len(remap)))]
    their_pending = _remapped(res.pending, ENTRY_WIDTH, ENTRY_DIM, lut)
    their_unkeyed = _remapped(res.unkeyed, ROW_WIDTH, ROW_DIM, lut)

    deltas = batch.deltas
    for (hour, dim), v in res.deltas.items():
        k = (hour, lut[dim])
        d = deltas.get(k)
        if d is None:
            deltas[k] = list(v)
        else:
            for i, x in enumerate(v):
                d[i] += x
    pending = batch.pending
    for k, row in PAGE_ENTRY.iter_unpack(their_pending):  # one by one: no second dict of them all
        held = pending.get(k)
        if held is None:
            pending[k] = row
            continue
        # both processes kept a copy of this request: the deltas hold both, keep the larger
        if k not in batch.replacing and k not in res.replacing:
            # both processes took the request as new: one of those lines was a duplicate
            source = dim_list[row_dim(row)][0]
            batch.lines[(source, readers.COUNTED)] -= 1
            batch.lines[(source, readers.DUPLICATE)] += 1
        elif k in batch.replacing and k in res.replacing:
            batch.add_row(batch.replacing[k], 1)  # the stored copy was taken out twice
        if row_total(row) > row_total(held):
            batch.add_row(held, -1)
            pending[k] = row
        else:
            batch.add_row(row, -1)
    batch.unkeyed.extend(r for (r,) in _ROW_BYTES.iter_unpack(their_unkeyed))
    for replaced, old in res.replacing.items():
        batch.replacing.setdefault(replaced, old)
    batch.skipping.update(res.skipping)
    for lk, n in res.lines.items():
        batch.lines[lk] += n
    records, nbytes, nfiles = res.stats
    batch.stats.records += records
    batch.stats.bytes_read += nbytes
    batch.stats.files_read += nfiles
    return Merged(res.file_updates, res.errors, res.unpriced)
