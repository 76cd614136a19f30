"""A large read split over helper processes: the first read of a long history.

Reading and decoding 500 MB of transcripts is CPU work that one Python process does on one
core. Past ``PARALLEL_MIN_BYTES`` the planned files are cut into runs of about the same bytes
(*chunks*) and shared out as the read goes: the helper processes read the first chunks, the
parent the last ones, and whoever is done first takes what the other has not started, so a
process slowed by a busy core takes fewer. A helper reads each chunk with the parent's dedup
index as it stood before the read, prices what it keeps and hands the chunk's rows over at
once, packed in one bytes object (one object pickles far faster than 100k small ones) in a file
whose name it queues (see :class:`Helpers`); the parent folds each chunk in between its own,
mapping the helper's new label
ids to its own and keeping the copy of a request that :func:`~exporter.logs.dedup.beats` the
other, and commits everything in one transaction, as if it had read every file itself. Only
the parent writes the state.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import pickle
import queue
import shutil
import signal
import struct
import sys
import threading
from array import array
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import starmap
from typing import Any, TypeVar

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
    add_sums,
    beats,
    row_dim,
)
from exporter.prices import load_pricer
from exporter.state import FileState

__all__ = ["CHUNKS_PER_PROCESS", "MAX_WORKERS", "PARALLEL_MIN_BYTES", "HelperLost", "Helpers", "Merged", "Result",
           "Shared", "chunks", "merge"]

PARALLEL_MIN_BYTES = 64 << 20  # below this a cold read is faster in one process than starting helpers
MAX_WORKERS = 4
# chunks per process: more even out who finishes last (at most one chunk's time apart), each costs a
# batch to hand over and merge and loses a helper's dedup across its chunks; on 2 cores a 500 MB read
# is 32 chunks of ~16 MB, and 8 or 32 per process were slower
CHUNKS_PER_PROCESS = 16
MIN_CHUNK_BYTES = 8 << 20
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
LOCK_SECONDS = 60.0  # longest wait on the chunk queue's lock, or for a helper's batch after its last chunk

P = TypeVar("P")
_ROW_BYTES = struct.Struct(f"{ROW.size}s")  # a row as one bytes object


@dataclass(frozen=True)
class Shared:
    """What every helper needs of the parent's state to read its chunks alike: handed over once
    per helper process (inherited at a fork, pickled once at a spawn), not once per chunk."""

    sources: tuple[SourceConfig, ...]
    overrides: Mapping[str, PriceOverride]
    files: dict[str, FileState]  # the stored states of the planned files
    known: dict[int, bytes]
    dim_list: list[DimKey]
    now: float
    max_line: int
    skipping: set[str]  # planned files whose offset sits inside an overlong line


@dataclass(frozen=True)
class Result:
    """A helper's batch for one chunk, packed to be handed over (see :class:`Helpers`)."""

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
    bytes_read: int


def chunks(plan: Sequence[P], sizes: Sequence[int], workers: int, min_bytes: int = PARALLEL_MIN_BYTES,
           per_process: int = CHUNKS_PER_PROCESS) -> list[list[P]]:
    """Consecutive runs of the plan of about the same bytes to read, in plan order; one run when
    the read is small or there is one process. A file is never cut: a large one is a chunk alone."""
    total = sum(sizes)
    if workers < 2 or len(plan) < 2 or total < min_bytes:
        return [list(plan)]
    target = max(total // (workers * per_process), min(MIN_CHUNK_BYTES, min_bytes), 1)
    out: list[list[P]] = []
    run: list[P] = []
    filled = 0
    for item, n in zip(plan, sizes, strict=True):
        run.append(item)
        filled += n
        if filled >= target:
            out.append(run)
            run, filled = [], 0
    if run:
        out.append(run)
    return out


def _context() -> Any:
    # fork is cheap and safe while this is the only thread (report, the first refresh);
    # a serving process has threads, and forking those is not, so it spawns
    return mp.get_context("fork" if threading.active_count() == 1 and "fork" in mp.get_all_start_methods()
                          else "spawn")


def make_pool(workers: int, shared: Shared | None = None, chunks: Any = None, results: Any = None,
              spool: str | None = None) -> ProcessPoolExecutor:
    """Helper processes that die with their parent: a kill -9 of the exporter must not leave
    40-55 MB helpers reading on. ``shared``, ``chunks``, ``results`` and ``spool`` are what
    :func:`_read_chunks` reads with and hands its batches over through."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=_context(), initializer=_start_helper,
                               initargs=(os.getpid(), shared, chunks, results, spool))


# in a helper process: what its chunks are read with, the queue of chunks, where batches go
_shared: Shared | None = None
_queue: Any = None
_results: Any = None
_spool: str | None = None


def _start_helper(parent: int, shared: Shared | None, chunks: Any, results: Any, spool: str | None) -> None:
    global _shared, _queue, _results, _spool  # noqa: PLW0603 - one each per helper process, set before it reads
    _shared, _queue, _results, _spool = shared, chunks, results, spool
    _die_with_parent(parent)


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


class HelperLost(RuntimeError):
    """A helper process of a split read ended without handing over what it read."""


@contextmanager
def _released(lock: Any) -> Iterator[None]:
    try:
        yield
    finally:
        lock.release()


# the shared queue: two runs of chunk indices, [next, end) each, the helpers' first, then the parent's
_HELPERS, _PARENT = 0, 2


def _take(chunks: Any, mine: int) -> int | None:
    """The next chunk for a process: the next of its own run (``mine``: _HELPERS or _PARENT),
    read in plan order; once that run is done, the last chunk left in the other one; None
    when every chunk is taken.

    In plan order, because a resumed session's file repeats requests of the files before it:
    read first, the original copies stand and the repeats are dropped unpriced; the other way
    round every repeat would be priced and then replaced. A helper leaves the parent's last
    chunk to it: the parent reads it while the helpers pack and send their batches, instead of
    waiting for them with nothing to do.
    """
    lock = chunks.get_lock()
    # a process killed while it held the lock (a few microseconds) must not stop the others for good
    if not lock.acquire(timeout=LOCK_SECONDS):
        raise HelperLost("the queue of chunks stayed locked: a process of the read died holding it")
    with _released(lock):
        first: int = chunks[mine]
        end: int = chunks[mine + 1]
        if first < end:
            chunks[mine] = first + 1
            return first
        other = _PARENT if mine == _HELPERS else _HELPERS
        first, end = chunks[other], chunks[other + 1]
        if first < end - (1 if mine == _HELPERS else 0):
            chunks[other + 1] = end - 1
            return end - 1
        return None


class Helpers:
    """Helper processes reading the chunks of a shared queue until none is left, while the
    caller reads its share (see :func:`_take`); each chunk's batch is handed over as soon as it
    is read, so the caller folds them in while it still reads, and what is left for it after
    the last chunk is one chunk's batch, not a helper's whole share.

    Not a task per chunk: a pool queues a task ahead of each worker, which the caller could
    not take back; on a 500 MB read its last two chunks kept the caller waiting 0.35-0.7 s.

    A batch (0.1-1 MB) is written to a file in ``spool`` and only its name goes through the
    queue: a name is written to the pipe in one piece, so a helper killed at any moment leaves
    no half message that the caller would wait on for good, and its death is seen through the
    pool (or, after its last chunk, as a name that never comes: ``HelperLost``).
    """

    def __init__(self, shared: Shared, plans: list[list[tuple[str, str]]], processes: int, spool: str) -> None:
        # the parent's run is its share of the chunks, at the end of the plan
        mid = len(plans) - len(plans) // (processes + 1)
        ctx = _context()
        # the last read's leftovers (a process killed before it cleaned up) go first: one read's worth at most
        shutil.rmtree(spool, ignore_errors=True)
        os.makedirs(spool, mode=0o700)
        self._spool = spool
        self._queue = ctx.Array("q", [0, mid, mid, len(plans)])
        self._results = ctx.Queue()
        self._received = 0
        self._pool = make_pool(processes, shared, self._queue, self._results, spool)
        self._futures: list[Future[int]] = [self._pool.submit(_read_chunks, plans) for _ in range(processes)]

    def claim(self) -> int | None:
        """The index of the caller's next chunk; None once every chunk is taken."""
        return _take(self._queue, _PARENT)

    def ready(self) -> Iterator[Result]:
        """The chunks' batches that are in, without waiting for more."""
        while True:
            try:
                name = self._results.get_nowait()
            except queue.Empty:
                return
            yield self._take_over(name)

    def rest(self) -> Iterator[Result]:
        """The batches not yet handed out, once the helpers have found the queue empty."""
        sent = sum(fut.result() for fut in self._futures)  # a helper's failure is raised here
        while self._received < sent:
            try:
                # a helper puts a batch's name before it returns: only a helper killed in between leaves it out
                name = self._results.get(timeout=LOCK_SECONDS)
            except queue.Empty:
                raise HelperLost(f"{sent - self._received} of the helpers' batches never came") from None
            yield self._take_over(name)

    def _take_over(self, name: str) -> Result:
        self._received += 1
        path = os.path.join(self._spool, name)
        with open(path, "rb") as f:
            data = f.read()
        os.unlink(path)
        res: Result = pickle.loads(data)  # noqa: S301 - written by this read's own helper, in a 0700 folder
        return res

    def close(self) -> None:
        lock = self._queue.get_lock()
        if lock.acquire(timeout=LOCK_SECONDS):  # on a failure: no helper starts another chunk
            with _released(lock):
                self._queue[_HELPERS] = self._queue[_HELPERS + 1]
                self._queue[_PARENT] = self._queue[_PARENT + 1]
        self._pool.shutdown(cancel_futures=True)
        self._results.close()
        shutil.rmtree(self._spool, ignore_errors=True)


def _read_chunks(plans: list[list[tuple[str, str]]]) -> int:
    """Read chunks of the queue in a helper process, each into a batch of its own that is
    handed over as soon as it is read; the parent dedups across chunks, prices nothing twice,
    commits. Returns how many batches were handed over."""
    # imported here: the ingestor imports this module, and a helper reads with one of its own
    from exporter.logs.ingestor import Ingestor

    task = _shared
    assert task is not None and _spool is not None  # set by _start_helper before the pool hands over a task
    gc.disable()  # as the parent does for a large read (see the ingestor's _collector_paused)
    ing = Ingestor(task.sources, None, load_pricer(task.overrides), clock=lambda: task.now,
                   max_line_bytes=task.max_line, workers=1)
    ing.files = task.files
    ing.known = task.known
    ing.in_long_line = set(task.skipping)
    ing.quiet = True
    by_name = {s.name: s for s in task.sources}
    sent = 0
    while (i := _take(_queue, _HELPERS)) is not None:
        # label ids as the parent's were at the start: each batch maps its own new ones
        ing.dim_list = list(task.dim_list)
        ing.dims = {d: n for n, d in enumerate(ing.dim_list)}
        batch = ing.new_batch(task.now)
        updates = []
        for name, path in plans[i]:
            upd, _ = ing.tail(by_name[name], path, batch)
            if upd is not None:
                updates.append(upd)
        errors = {name: st.error for name, st in ing.status.items() if st.error}
        stats = batch.stats
        res = Result(
            pending=b"".join(starmap(PAGE_ENTRY.pack, batch.pending.items())), unkeyed=b"".join(batch.unkeyed),
            replacing=batch.replacing, lines=dict(batch.lines),
            deltas=batch.deltas,
            new_dims=batch.new_dims, dim_base=len(task.dim_list), file_updates=updates, errors=errors,
            stats=(stats.records, stats.bytes_read, stats.files_read),
            unpriced=ing.unpriced_seen[:],
            skipping=batch.skipping,
        )
        name = f"{os.getpid()}-{i}"
        with open(os.path.join(_spool, name), "wb") as f:
            f.write(pickle.dumps(res, protocol=pickle.HIGHEST_PROTOCOL))
        _results.put(name)  # whole before its name is sent
        ing.unpriced_seen.clear()
        sent += 1
    # every name in the pipe before the caller learns how many there are
    _results.close()
    _results.join_thread()
    return sent


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

    add_sums(batch.deltas, {(hour, lut[dim]): v for (hour, dim), v in res.deltas.items()})
    pending = batch.pending
    # built and joined in C: only the requests both processes kept go through Python
    theirs = dict(PAGE_ENTRY.iter_unpack(their_pending))
    for k in theirs.keys() & pending.keys():
        row, held = theirs.pop(k), pending[k]
        # both processes kept a copy of this request: the deltas hold both, keep the one that beats
        if k not in batch.replacing and k not in res.replacing:
            # both processes took the request as new: one of those lines was a duplicate
            source = dim_list[row_dim(row)][0]
            batch.lines[(source, readers.COUNTED)] -= 1
            batch.lines[(source, readers.DUPLICATE)] += 1
        elif k in batch.replacing and k in res.replacing:
            batch.add_row(batch.replacing[k], 1)  # the stored copy was taken out twice
        if beats(row, held, dim_list):
            batch.add_row(held, -1)
            pending[k] = row
        else:
            batch.add_row(row, -1)
    pending.update(theirs)
    del theirs
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
    return Merged(res.file_updates, res.errors, res.unpriced, nbytes)
