"""The receiver's rows counted exactly once, committed before the request is answered.

Each request's rows become increments of the hourly aggregates (``usage_hourly``, the same
table as the logs', so ``claude_estimated_cost_usd_total{source}``, pools, blocks and ``report``
see them like any source's) and of the attributed aggregates (``otlp_hourly``). A committer
thread takes the requests that are waiting, folds them into one ingestor batch and commits it
with what this module keeps, in one transaction, serialized with the log refresh; only then is
each request answered. A request whose commit failed is answered 503 (the sender retries) and
nothing of it is kept, in memory or on disk.

Counting once:

- **Retries.** An event is remembered by its ``request_id`` (a digest of the record when it has
  none), a delta point by (series, start, time), for ``dedup_window`` (15 minutes): a retried
  request, or the same batch sent twice, is a duplicate. What is remembered is stored with the
  commit, so a ``kill -9`` after the commit and before the answer loses nothing and, when the
  sender retries, counts nothing twice.
- **Cumulative sums.** Each stream (series and start time: a process) keeps its last time and
  value; a point adds what it grew by since, a new start time (a restart) or a value that fell
  (a reset) starts again from 0, and a point not newer than the last is a duplicate. Two
  processes of one session are two streams.
- **Events and metrics of one session** describe the same requests: per (user, session, model)
  a ledger keeps what the metrics said and what the events said, and what counts is the larger
  of the two, figure by figure. Events are exact (per request, priced at its own size); the
  metrics count only while, and as far as, they are ahead. A metric point without a session
  counts only for a user who sends no events. Ledgers and streams idle for two days are
  forgotten (an idle cumulative process re-sends its totals every interval, so it is never
  idle; a session resumed later starts both sides from 0).
- **Prices.** An event is priced like a transcript request (the long-context rule by its own
  input); a token point at the base rates of its model, day and speed (its requests' sizes are
  not known). Claude Code's own figures (``cost_usd_micros``, ``claude_code.cost.usage``) are
  kept beside the estimate, as ``claude_estimated_reported_cost_usd_total``.
"""

from __future__ import annotations

import hashlib
import json
import queue
import sqlite3
import struct
import threading
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, MutableMapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TypeVar

from exporter.logsetup import get_logger
from exporter.config import PoolConfig, SourceConfig
from exporter.core.pricing import Pricer
from exporter.core.records import Tokens
from exporter.logs.dedup import (AGG_COLUMNS, AGG_COST_PICO, AGG_INPUT, AGG_REPORTED_PICO, AGG_REQUESTS,
                                 AGG_UNPRICED, AGG_WIDTH, Batch)
from exporter.logs.ingestor import Ingestor
from exporter.otlp.decode import (COUNTED, DUPLICATE, ITEM_RESULTS, LOGS, METRICS,
                                  REFUSALS, SUPERSEDED, Decoded, Event, Point)
from exporter.otlp.view import HOURLY_DAYS, AttrKey, OtlpSnapshot, TelemetryView

__all__ = ["IDLE_SECONDS", "MAX_VALUES", "Outcome", "Sink", "stored_snapshot"]

log = get_logger()

IDLE_SECONDS = 2 * 86400  # a ledger or a stream not touched for this long is forgotten
PRUNE_SECONDS = 3600  # how often idle ledgers and streams are forgotten
SEEN_REFRESH = 3600  # an unchanged stream's "seen" is written again at most this often
MAX_VALUES = 10_000  # distinct values kept per attribute and source; past it a value reads "other"
MAX_GROUP = 256  # requests folded into one commit at most
W = AGG_WIDTH
K = TypeVar("K")
_LEDGER = struct.Struct(f"<{2 * W}q")  # what the metrics said, then what the events said
_TOKEN_COLUMNS = range(AGG_INPUT, AGG_INPUT + 5)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS otlp_recent (taken INTEGER NOT NULL, keys BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS otlp_recent_taken ON otlp_recent (taken);
CREATE TABLE IF NOT EXISTS otlp_streams (key INTEGER PRIMARY KEY, seen INTEGER NOT NULL,
    time INTEGER NOT NULL, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS otlp_ledger (key INTEGER PRIMARY KEY, seen INTEGER NOT NULL, figures BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS otlp_users (key INTEGER PRIMARY KEY, seen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS otlp_attrs (id INTEGER PRIMARY KEY, source TEXT NOT NULL, attrs TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS otlp_hourly (hour INTEGER NOT NULL, attrs_id INTEGER NOT NULL, model TEXT NOT NULL,
    entrypoint TEXT NOT NULL, {", ".join(f"{c} INTEGER NOT NULL" for c in AGG_COLUMNS)},
    PRIMARY KEY (hour, attrs_id, model, entrypoint));
"""


def _key(*parts: object) -> int:
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        b = str(part).encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(4, "little"))
        h.update(b)
    return int.from_bytes(h.digest(), "big", signed=True)


@dataclass
class Outcome:
    """What one request became: per item result, and whether it was committed."""

    results: Counter[str] = field(default_factory=Counter)


@dataclass
class _Job:
    source: str
    decoded: Decoded
    future: Future[Outcome]


class _Tx:
    """One commit's changes, kept apart until the commit succeeds."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.recent: set[int] = set()
        self.streams: dict[int, tuple[int, int]] = {}
        self.streams_write: dict[int, tuple[int, int]] = {}
        self.ledger: dict[int, list[int]] = {}
        self.users: set[int] = set()
        self.sets: dict[tuple[str, tuple[str, ...]], int] = {}
        self.values: dict[tuple[str, int], set[str]] = {}
        self.attributed: dict[AttrKey, list[int]] = {}


class Sink:
    """Counts what the receivers decode; one per exporter, shared by every otlp source."""

    def __init__(self, sources: Iterable[SourceConfig], pools: Iterable[PoolConfig], ingestor: Ingestor,
                 pricer: Pricer, *, clock: Callable[[], float] = time.time) -> None:
        self.sources = {s.name: s.otlp for s in sources if s.otlp is not None}
        self.ingestor = ingestor
        self.pricer = pricer
        self.clock = clock
        self.window = int(max((c.dedup_window for c in self.sources.values()), default=900.0))
        self.view = TelemetryView(self.sources, pools)
        self._recent: set[int] = set()
        self._buckets: deque[tuple[int, array[int]]] = deque()  # (taken, keys) oldest first
        self._streams: dict[int, tuple[int, int, int]] = {}  # key -> (seen, time, value)
        self._ledger: dict[int, tuple[int, list[int]]] = {}  # key -> (seen, metrics then events)
        self._users: dict[int, int] = {}  # users who send events -> seen
        self._sets: dict[tuple[str, tuple[str, ...]], int] = {}
        self._next_set = 0  # the next attribute set id
        self._values: dict[tuple[str, int], set[str]] = {}  # (source, attribute index) -> values kept
        self._capped_said: set[tuple[str, int]] = set()
        self._unpriced_said: set[str] = set()
        self._next_prune = 0.0
        self._counts_lock = threading.Lock()
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.refused: Counter[tuple[str, str, str]] = Counter()
        self.items: Counter[tuple[str, str, str]] = Counter()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._load()

    # ------------------------------------------------------------------ state

    def _load(self) -> None:
        state = self.ingestor.state
        assert state is not None
        conn = state.conn
        now = self.clock()
        with self.ingestor.lock:
            conn.executescript(_SCHEMA)
            for taken, keys in conn.execute("SELECT taken, keys FROM otlp_recent WHERE taken >= ? ORDER BY taken",
                                            (int(now) - self.window,)):
                arr = array("q")
                arr.frombytes(keys)
                self._buckets.append((taken, arr))
                self._recent.update(arr)
            idle = int(now) - IDLE_SECONDS
            self._streams = {k: (seen, t, v) for k, seen, t, v in conn.execute(
                "SELECT key, seen, time, value FROM otlp_streams WHERE seen >= ?", (idle,))}
            self._ledger = {k: (seen, list(_LEDGER.unpack(f))) for k, seen, f in conn.execute(
                "SELECT key, seen, figures FROM otlp_ledger WHERE seen >= ?", (idle,))}
            self._users = dict(conn.execute("SELECT key, seen FROM otlp_users WHERE seen >= ?", (idle,)).fetchall())
            for set_id, source, values in _load_view(conn, self.view, now):
                self._sets.setdefault((source, values), set_id)
                self._next_set = max(self._next_set, set_id + 1)
                for i, v in enumerate(values):
                    self._values.setdefault((source, i), set()).add(v)

    # ------------------------------------------------------------------ the committer

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="otlp-commit", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)
            self._thread = None

    def submit(self, source: str, decoded: Decoded) -> Future[Outcome]:
        """Queue a decoded request; the future is done once it is committed (or failed to be)."""
        fut: Future[Outcome] = Future()
        self._queue.put(_Job(source, decoded, fut))
        return fut

    def take(self, source: str, decoded: Decoded) -> Outcome:
        """Commit one decoded request now, in this thread (what the committer does with a group)."""
        job = _Job(source, decoded, Future())
        self.commit([job])
        return job.future.result()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            stop = False
            while len(jobs) < MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                jobs.append(more)
            try:
                self.commit(jobs)
            except Exception as exc:  # noqa: BLE001 - the thread must live on; each request was answered
                log.error("otlp_commit_failed", requests=len(jobs), error=f"{type(exc).__name__}: {exc}")
            if stop:
                return

    def commit(self, jobs: list[_Job]) -> None:
        """Fold the jobs into one batch, commit it, then answer each job's future."""
        now = self.clock()
        tx = _Tx(now)
        outcomes = [Outcome() for _ in jobs]

        def fill(batch: Batch) -> Callable[[sqlite3.Connection], None]:
            for job, outcome in zip(jobs, outcomes, strict=True):
                cfg = self.sources.get(job.source)
                if cfg is None:
                    continue
                for ev in job.decoded.events:
                    outcome.results[self._event(batch, tx, job.source, ev)] += 1
                for pt in job.decoded.points:
                    outcome.results[self._point(batch, tx, job.source, pt)] += 1
            return lambda conn: self._write(conn, tx)

        try:
            self.ingestor.commit_with(fill, now)
        except BaseException as exc:
            for job in jobs:
                job.future.set_exception(exc)
            raise
        try:
            self._apply(tx)
            with self._counts_lock:
                for job, outcome in zip(jobs, outcomes, strict=True):
                    signal = job.decoded.signal
                    for result, n in (*outcome.results.items(), *job.decoded.results.items()):
                        self.items[(job.source, signal, result)] += n
        finally:  # committed: every request is answered 200, whatever became of this process's memory
            for job, outcome in zip(jobs, outcomes, strict=True):
                job.future.set_result(outcome)

    # ------------------------------------------------------------------ counting

    def _event(self, batch: Batch, tx: _Tx, source: str, ev: Event) -> str:
        k = _key("e", source, ev.key)
        if k in self._recent or k in tx.recent:
            return DUPLICATE
        tx.recent.add(k)
        add = [0] * W
        t = ev.tokens
        add[AGG_REQUESTS] = 1
        add[AGG_INPUT:AGG_INPUT + 5] = t[:5]
        cost = self.pricer.cost_pico(ev.model, t, ev.time, speed=ev.speed)
        if cost is None:
            self._say_unpriced(ev.model, source)
            add[AGG_UNPRICED] = t.total
        else:
            add[AGG_COST_PICO] = cost
        add[AGG_REPORTED_PICO] = ev.reported_pico
        tx.users.add(_key("u", source, ev.user))
        self._ledger_add(batch, tx, _key("l", source, ev.user, ev.session, ev.model), W, add, source, ev.model,
                         ev.entrypoint, ev.attrs, ev.time)
        return COUNTED

    def _point(self, batch: Batch, tx: _Tx, source: str, pt: Point) -> str:
        user = _key("u", source, pt.user)
        if not pt.session and (user in self._users or user in tx.users):
            return SUPERSEDED  # no session to reconcile it with: the user's events count its requests
        if pt.cumulative:
            skey = _key("s", pt.series, pt.start)
            held = tx.streams.get(skey)
            if held is None:
                old = self._streams.get(skey)
                held = (old[1], old[2]) if old is not None else None
            if held is not None and pt.time <= held[0]:
                return DUPLICATE
            grown = pt.value - held[1] if held is not None and pt.value >= held[1] else pt.value
            tx.streams[skey] = (pt.time, pt.value)
            old = self._streams.get(skey)
            if grown or old is None or tx.now - old[0] >= SEEN_REFRESH:
                tx.streams_write[skey] = (pt.time, pt.value)
        else:
            k = _key("p", source, pt.series, pt.start, pt.time)
            if k in self._recent or k in tx.recent:
                return DUPLICATE
            tx.recent.add(k)
            grown = pt.value
        if not grown:
            return COUNTED
        ts = pt.time / 1e9
        add = [0] * W
        add[pt.column] = grown
        if pt.column in _TOKEN_COLUMNS:
            prices = self.pricer.prices(pt.model, when=ts, speed=pt.speed)
            if prices is None:
                self._say_unpriced(pt.model, source)
                add[AGG_UNPRICED] = grown
            else:
                tokens = [0] * 6
                tokens[pt.column - AGG_INPUT] = grown
                add[AGG_COST_PICO] = prices.cost_pico(Tokens(*tokens), long_context=False)
        self._ledger_add(batch, tx, _key("l", source, pt.user, pt.session, pt.model), 0, add, source, pt.model,
                         pt.entrypoint, pt.attrs, ts)
        return COUNTED

    def _ledger_add(self, batch: Batch, tx: _Tx, lkey: int, side: int, add: list[int], source: str, model: str,
                    entrypoint: str, attrs: tuple[str, ...], ts: float) -> None:
        """Add to one side of a ledger (0: the metrics, W: the events) and book what the larger of the
        two grew by."""
        vec = tx.ledger.get(lkey)
        if vec is None:
            held = self._ledger.get(lkey)
            vec = tx.ledger[lkey] = list(held[1]) if held is not None else [0] * (2 * W)
        delta = [0] * W
        for i, x in enumerate(add):
            if x:
                before = max(vec[i], vec[W + i])
                vec[side + i] += x
                delta[i] = max(vec[i], vec[W + i]) - before
        if any(delta):
            self._book(batch, tx, delta, source, model, entrypoint, attrs, ts)

    def _book(self, batch: Batch, tx: _Tx, delta: list[int], source: str, model: str, entrypoint: str,
              attrs: tuple[str, ...], ts: float) -> None:
        hour = int(ts) // 3600 * 3600
        dk = (source, model, entrypoint)
        dim = batch.dims.get(dk)
        if dim is None:  # as Batch._keep_row hands out label ids
            dim = batch.dims[dk] = len(batch.dim_list)
            batch.dim_list.append(dk)
            batch.new_dims.append((dim, *dk))
        _add(batch.deltas, (hour, dim), delta)
        if attrs:
            _add(tx.attributed, (hour, self._set_id(tx, source, attrs), model, entrypoint), delta)

    def _set_id(self, tx: _Tx, source: str, attrs: tuple[str, ...]) -> int:
        key = (source, attrs)
        got = self._sets.get(key)
        if got is None:
            got = tx.sets.get(key)
        if got is not None:
            return got
        bounded = tuple(self._bounded(tx, source, i, v) for i, v in enumerate(attrs))
        if bounded != attrs:
            return self._set_id(tx, source, bounded)
        set_id = tx.sets[key] = self._next_set + len(tx.sets)
        return set_id

    def _bounded(self, tx: _Tx, source: str, index: int, value: str) -> str:
        """The value as kept: itself, or "other" past MAX_VALUES distinct values of the attribute."""
        kept = self._values.get((source, index), set())
        new = tx.values.setdefault((source, index), set())
        if value in kept or value in new:
            return value
        if len(kept) + len(new) >= MAX_VALUES:
            if (source, index) not in self._capped_said:
                self._capped_said.add((source, index))
                cfg = self.sources[source]
                log.warning("otlp_attribute_values_capped", source=source, attribute=cfg.attributes[index],
                            kept=MAX_VALUES, consequence="further values are counted as 'other'",
                            hint="an attribute with a value per request or session is no attribute to keep")
            return "other"
        new.add(value)
        return value

    def _say_unpriced(self, model: str, source: str) -> None:
        if model not in self._unpriced_said:
            self._unpriced_said.add(model)
            log.warning("model_unpriced", model=model, source=source,
                        hint="its tokens are counted in claude_unpriced_tokens_total; add a pricing.overrides entry")

    # ------------------------------------------------------------------ the commit and after

    def _write(self, conn: sqlite3.Connection, tx: _Tx) -> None:
        now = int(tx.now)
        if tx.recent:
            conn.execute("INSERT INTO otlp_recent VALUES (?, ?)", (now, array("q", tx.recent).tobytes()))
        conn.execute("DELETE FROM otlp_recent WHERE taken < ?", (now - self.window,))
        conn.executemany("INSERT OR REPLACE INTO otlp_streams VALUES (?, ?, ?, ?)",
                         [(k, now, t, v) for k, (t, v) in tx.streams_write.items()])
        conn.executemany("INSERT OR REPLACE INTO otlp_ledger VALUES (?, ?, ?)",
                         [(k, now, _LEDGER.pack(*v)) for k, v in tx.ledger.items()])
        conn.executemany("INSERT OR REPLACE INTO otlp_users VALUES (?, ?)", [(k, now) for k in tx.users])
        conn.executemany("INSERT INTO otlp_attrs VALUES (?, ?, ?)",
                         [(i, source, json.dumps(dict(zip(self.sources[source].attributes, values, strict=True))))
                          for (source, values), i in tx.sets.items()])
        cols = ", ".join(AGG_COLUMNS)
        sets = ", ".join(f"{c} = {c} + excluded.{c}" for c in AGG_COLUMNS)
        conn.executemany(
            f"INSERT INTO otlp_hourly (hour, attrs_id, model, entrypoint, {cols}) VALUES"
            f" (?, ?, ?, ?, {', '.join('?' * W)})"
            f" ON CONFLICT (hour, attrs_id, model, entrypoint) DO UPDATE SET {sets}",
            [(*k, *v) for k, v in tx.attributed.items()])
        if tx.now >= self._next_prune:
            idle = now - IDLE_SECONDS
            for table in ("otlp_streams", "otlp_ledger", "otlp_users"):
                conn.execute(f"DELETE FROM {table} WHERE seen < ?", (idle,))

    def _apply(self, tx: _Tx) -> None:
        """The commit succeeded: memory moves on."""
        now = int(tx.now)
        if tx.recent:
            self._recent.update(tx.recent)
            self._buckets.append((now, array("q", tx.recent)))
        while self._buckets and self._buckets[0][0] < now - self.window:
            _, keys = self._buckets.popleft()
            self._recent.difference_update(keys)
        for k, (t, v) in tx.streams.items():
            old = self._streams.get(k)
            self._streams[k] = (now if k in tx.streams_write or old is None else old[0], t, v)
        for k, vec in tx.ledger.items():
            self._ledger[k] = (now, vec)
        for k in tx.users:
            self._users[k] = now
        for (source, values), set_id in tx.sets.items():
            self._sets[(source, values)] = set_id
            self.view.add_set(set_id, source, values)
        self._next_set += len(tx.sets)
        for (source, index), new in tx.values.items():
            self._values.setdefault((source, index), set()).update(new)
        if tx.attributed:
            self.view.apply(tx.attributed, tx.now)
        if tx.now >= self._next_prune:
            idle = now - IDLE_SECONDS
            self._streams = {k: v for k, v in self._streams.items() if v[0] >= idle}
            self._ledger = {k: v for k, v in self._ledger.items() if v[0] >= idle}
            self._users = {k: v for k, v in self._users.items() if v >= idle}
            self._next_prune = tx.now + PRUNE_SECONDS

    # ------------------------------------------------------------------ what the receivers answered

    def answered(self, source: str, signal: str, code: int, refused: str | None = None) -> None:
        with self._counts_lock:
            self.requests[(source, signal, str(code))] += 1
            if refused is not None:
                self.refused[(source, signal, refused)] += 1

    def snapshot(self) -> OtlpSnapshot:
        with self._counts_lock:
            requests, refused, items = dict(self.requests), dict(self.refused), dict(self.items)
        # every label a source can have, at 0 until it happens: a rate() needs the series to exist
        for source in self.sources:
            for signal in (LOGS, METRICS):
                for reason in REFUSALS:
                    refused.setdefault((source, signal, reason), 0)
                for result in ITEM_RESULTS:
                    items.setdefault((source, signal, result), 0)
        return self.view.snapshot(self.clock(), requests, refused, items)

    @property
    def remembered(self) -> tuple[int, int, int]:
        """(keys remembered for retries, cumulative streams, ledgers): what this costs in memory."""
        return len(self._recent), len(self._streams), len(self._ledger)


def _load_view(conn: sqlite3.Connection, view: TelemetryView, now: float) -> list[tuple[int, str, tuple[str, ...]]]:
    """Fill a view from the stored attribute sets and attributed aggregates; the sets, as read."""
    sets = []
    for set_id, source, attrs in conn.execute("SELECT id, source, attrs FROM otlp_attrs ORDER BY id"):
        # stored by name: a config that added, dropped or reordered attributes reads them as it says
        cfg = view.sources.get(source)
        named = json.loads(attrs)
        values = tuple(named.get(a, "") for a in cfg.attributes) if cfg is not None else ()
        view.add_set(set_id, source, values)
        sets.append((set_id, source, values))
    since = int(now) - HOURLY_DAYS * 86400
    rows = conn.execute(f"SELECT hour, attrs_id, model, entrypoint, {', '.join(AGG_COLUMNS)} FROM otlp_hourly"
                        " WHERE hour >= ?", (since,))
    view.apply({(r[0], r[1], r[2], r[3]): list(r[4:]) for r in rows}, now)
    return sets


def stored_snapshot(conn: sqlite3.Connection, sources: Iterable[SourceConfig], pools: Iterable[PoolConfig],
                    now: float) -> OtlpSnapshot | None:
    """What a serving exporter's view holds, read from the state without writing (``check --pool``);
    None when no otlp source is configured."""
    cfgs = {s.name: s.otlp for s in sources if s.otlp is not None}
    if not cfgs:
        return None
    view = TelemetryView(cfgs, pools)
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'otlp_hourly'").fetchone():
        _load_view(conn, view, now)
    return view.snapshot(now, {}, {}, {})


def _add(into: MutableMapping[K, list[int]], key: K, delta: list[int]) -> None:
    d = into.get(key)
    if d is None:
        into[key] = list(delta)
    else:
        for i, x in enumerate(delta):
            d[i] += x

