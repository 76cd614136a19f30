"""The exporter's memory: one SQLite database (WAL) under ``state_dir``.

File offsets, dedup keys with their token totals, hourly aggregates and line counts
are written in one transaction per refresh, so a kill -9 at any point neither loses
nor double counts, and totals outlive the logs they came from. The billed side keeps
its own ``billed_*`` tables in the same file.

A database found corrupt at start (cut short, overwritten, not a database) is moved
aside as ``state.sqlite3.corrupt-<UTC time>`` with its ``-wal`` and ``-shm`` and a new
one is built from the logs still on disk; usage whose log files are gone cannot come
back, and the billed days are fetched again. A commit that fails (disk full, read-only
file system, I/O error) is rolled back and counted: the caller keeps its last committed
values and tries again on its next cycle.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice, starmap
from pathlib import Path
from typing import TypeVar


from exporter.logsetup import get_logger
from exporter.logs.dedup import (
    AGG_CACHE_READ,
    AGG_CACHE_WRITE_1H,
    AGG_CACHE_WRITE_5M,
    AGG_COLUMNS,
    AGG_COST_PICO,
    AGG_INPUT,
    AGG_OUTPUT,
    AGG_REPORTED_PICO,
    AGG_REQUESTS,
    AGG_UNPRICED,
    AGG_WEB_SEARCH,
    PAGE_ENTRY,
    ROW,
    AggKey,
)

__all__ = [
    # the aggregate columns, defined with the row format and named here for the readers of aggregates
    "AGG_CACHE_READ", "AGG_CACHE_WRITE_1H", "AGG_CACHE_WRITE_5M", "AGG_COLUMNS", "AGG_COST_PICO", "AGG_INPUT",
    "AGG_OUTPUT", "AGG_REPORTED_PICO", "AGG_REQUESTS", "AGG_UNPRICED", "AGG_WEB_SEARCH",
    "CORRUPT_MARK", "DB_NAME", "LOSS_NOTE", "PAGE_ENTRIES", "SCHEMA_VERSION", "SIDE_FILES",
    "AggKey", "FileState", "StateCorrupt", "StateDB", "StateError", "is_corruption", "quarantine", "rebuild_hint",
]

SCHEMA_VERSION = 3
DB_NAME = "state.sqlite3"
SIDE_FILES = ("-wal", "-shm")
CORRUPT_MARK = ".corrupt-"
log = get_logger()
T = TypeVar("T")

# SQLite's primary result codes that mean "the file is damaged", not "busy" or "full"
_CORRUPT_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB
# databases this process has already checked (dev, inode): a second connection skips quick_check
_checked: set[tuple[int, int]] = set()
_checked_lock = threading.Lock()

# The dedup index is stored as the ingest keeps it: entries of a key's hash and its packed row
# (PAGE_ENTRY, ROW: their format belongs to exporter.logs.dedup), a page of them per blob.
PAGE_ENTRIES = 1 << 13  # entries per page: about 850 KB, so a write or a read never holds much more

# Schemas 1 and 2 packed a row without reported_pico (the last field): kept to read them and migrate.
_ROW_2 = struct.Struct("<11q")
_PAGE_ENTRY_2 = struct.Struct(f"<q{_ROW_2.size}s")
_NO_REPORTED = bytes(ROW.size - _ROW_2.size)  # what an old row is widened with: reported_pico = 0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, source TEXT NOT NULL, dev INTEGER NOT NULL, ino INTEGER NOT NULL,
    offset INTEGER NOT NULL, head BLOB NOT NULL
);
-- the last bytes before a file's offset (FileState.tail), stored with the offset they end at: they
-- stand only while that is the files row's offset (a release before this table moves offsets
-- without it). Apart from files so that such a release still reads and writes that table.
CREATE TABLE IF NOT EXISTS file_tails (path TEXT PRIMARY KEY, offset INTEGER NOT NULL, tail BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS dims (
    id INTEGER PRIMARY KEY, source TEXT NOT NULL, model TEXT NOT NULL, entrypoint TEXT NOT NULL
);
-- the dedup index, which a process holds whole in memory: pages of (key's 64-bit hash, packed
-- figures of the largest copy seen: ROW) entries. Each commit appends one page of what
-- it added or replaced, and a later page's entry for a key stands over an earlier one's;
-- the hourly prune writes the index anew, without what fell out of the retention window.
CREATE TABLE IF NOT EXISTS request_pages (id INTEGER PRIMARY KEY, entries BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS usage_hourly (
    hour INTEGER NOT NULL, source TEXT NOT NULL, model TEXT NOT NULL, entrypoint TEXT NOT NULL,
    requests INTEGER NOT NULL, input INTEGER NOT NULL, output INTEGER NOT NULL,
    cache_read INTEGER NOT NULL, cache_write_5m INTEGER NOT NULL, cache_write_1h INTEGER NOT NULL,
    web_search INTEGER NOT NULL, cost_pico INTEGER NOT NULL, unpriced_tokens INTEGER NOT NULL,
    reported_pico INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, source, model, entrypoint)
);
CREATE TABLE IF NOT EXISTS line_counts (
    source TEXT NOT NULL, result TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (source, result)
);
"""

# usage_hourly's numeric columns are AGG_COLUMNS, in that order: an aggregate is a list of them


@dataclass(frozen=True, slots=True)
class FileState:
    path: str
    source: str
    dev: int
    ino: int
    offset: int
    head: bytes  # the first bytes of the file, to tell a reused inode from the file we read
    # the last bytes before ``offset`` (b"": not known), to tell a file rewritten in place from one appended to
    tail: bytes = b""


class StateError(Exception):
    """The state database cannot be opened or written; the message says why and where."""


class StateCorrupt(StateError):
    """The database file is damaged (failed integrity check, not a database, malformed)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"state database {path} is corrupt: {reason}; {rebuild_hint(path)}")


def is_corruption(exc: BaseException) -> bool:
    """True for SQLite errors that mean a damaged file, as opposed to busy, full or read-only."""
    if isinstance(exc, StateCorrupt):
        return True
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.IntegrityError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _CORRUPT_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


class StateDB:
    """A connection to the state database. One per thread; writers serialise on SQLite's lock.

    ``rebuild_if_corrupt``: a database that fails its integrity check is moved aside (see
    :func:`quarantine`) and a new, empty one is made; without it :class:`StateCorrupt`
    is raised. Only the process that owns the state (holds its lock) may pass it.
    """

    def __init__(self, state_dir: Path, *, readonly: bool = False, rebuild_if_corrupt: bool = False) -> None:
        self.path = Path(state_dir).expanduser() / DB_NAME
        self.readonly = readonly
        self.rebuilt_from: Path | None = None  # where a corrupt database was moved at open
        self.write_errors = 0  # commits that failed since this connection was opened
        self.writable = True  # False from a failed commit until the next one succeeds
        self.last_write_error: str | None = None
        self._rebuild = rebuild_if_corrupt and not readonly
        try:
            self._open()
        except StateCorrupt:
            if not self._moved_aside():  # _open moved the corrupt file aside when it may rebuild
                raise
            self._open()

    def _moved_aside(self) -> bool:
        return self.rebuilt_from is not None

    def _open(self) -> None:
        readonly = self.readonly
        conn: sqlite3.Connection | None = None
        try:
            if not readonly:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
            conn = self.conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None,
                                               check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            if not readonly:
                # a new database's pages (an existing one keeps its own): the dedup index is stored as
                # blobs of ~1 MB, which 4 KB pages chain through hundreds of overflow pages; with
                # 32 KB pages a first read's commit of 120k requests took 0.19 s instead of 0.43 s
                conn.execute("PRAGMA page_size = 32768")
                conn.execute("PRAGMA journal_mode = WAL")
                # a checkpoint every 4 MB of WAL, whatever the page size (the default is 1,000 pages)
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA wal_autocheckpoint = {max(64, (4 << 20) // page_size)}")
                conn.execute("PRAGMA synchronous = NORMAL")
                # after a checkpoint the WAL is cut back to this, not kept at the size of the
                # largest commit (a first read's whole history) for the life of the process
                conn.execute("PRAGMA journal_size_limit = 8388608")
                self._migrate()
            else:
                conn.execute("SELECT count(*) FROM meta").fetchone()
        except (StateCorrupt, sqlite3.DatabaseError) as exc:
            if not is_corruption(exc):
                _close_quietly(conn)
                raise StateError(f"state database {self.path}: {exc}") from None
            reason = exc.reason if isinstance(exc, StateCorrupt) else str(exc)
            if self._rebuild and self.rebuilt_from is None:
                # moved while still open: closing a connection checkpoints its WAL into the
                # database and deletes it, which would destroy what there is to look at
                self.rebuilt_from = quarantine(self.path, reason)
            _close_quietly(conn)
            raise StateCorrupt(self.path, reason) from None
        except OSError as exc:
            _close_quietly(conn)
            raise StateError(f"state directory {self.path.parent}: {exc.strerror or exc}") from None

    def _migrate(self) -> None:
        ident = _identity(self.path)
        with _checked_lock:
            known_good = ident is not None and ident in _checked
        if not known_good:
            rows = self.conn.execute("PRAGMA quick_check").fetchall()
            if rows and rows[0][0] != "ok":
                first = str(rows[0][0]).splitlines()
                raise StateCorrupt(self.path, "integrity check failed: " + "; ".join(first[:3]))
        self.conn.executescript(_SCHEMA)
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self.conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"written by a newer version (schema {row[0]} > {SCHEMA_VERSION})")
        elif int(row[0]) < SCHEMA_VERSION:
            self._upgrade()
        ident = _identity(self.path)
        if ident is not None:
            with _checked_lock:
                _checked.add(ident)

    def _upgrade(self) -> None:
        """Bring an older schema to this one in place, in one transaction.

        1 -> 2: the dedup index moves from one SQL row per request to pages.
        2 -> 3: a row gains ``reported_pico`` (what the log said the request cost): the
        ``usage_hourly`` table gains the column, 0 for the rows already there, and every
        dedup index entry is rewritten to the new width with it 0.
        """
        conn = self.conn
        with self.transaction():
            # read again under the write lock: another process may have upgraded it meanwhile
            version = int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
            if version >= SCHEMA_VERSION:
                return
            if version < 2 and self.has_table("requests"):
                rows = conn.execute("SELECT key, row FROM requests").fetchall()
                StateDB.put_requests(conn, ((k, _widened(r)) for k, r in rows))
                conn.execute("DROP TABLE requests")
            elif version == 2:
                for (page_id,) in conn.execute("SELECT id FROM request_pages ORDER BY id").fetchall():
                    (entries,) = conn.execute("SELECT entries FROM request_pages WHERE id = ?", (page_id,)).fetchone()
                    conn.execute("UPDATE request_pages SET entries = ? WHERE id = ?",
                                 (_widened_page(entries), page_id))
            if "reported_pico" not in self._columns("usage_hourly"):
                conn.execute("ALTER TABLE usage_hourly ADD COLUMN reported_pico INTEGER NOT NULL DEFAULT 0")
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        log.info("state_migrated", path=str(self.path), schema=SCHEMA_VERSION, from_schema=version)

    def _columns(self, table: str) -> set[str]:
        return {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}

    def _schema(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return SCHEMA_VERSION if row is None else int(row[0])

    @classmethod
    def open_or_rebuild(cls, state_dir: Path, load: Callable[[StateDB], T]) -> tuple[StateDB, T]:
        """Open the owner's connection and ``load`` what it holds; a corrupt database is rebuilt.

        ``load`` reads every table the caller needs (an ingestor's offsets, dedup keys and
        aggregates): damage that the quick check does not see surfaces there, and is handled
        the same way: the file is moved aside and ``load`` runs again on a new database.
        """
        db = cls(state_dir, rebuild_if_corrupt=True)
        try:
            return db, load(db)
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                db.close()
                raise StateError(f"state database {db.path}: {exc}") from None
            with _checked_lock:
                _checked.clear()
            moved = quarantine(db.path, str(exc))  # before closing: see _open
            _close_quietly(db.conn)
        db = cls(state_dir, rebuild_if_corrupt=True)
        db.rebuilt_from = moved
        return db, load(db)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; on any failure rolled back, and a failed write is counted.

        A COMMIT that fails (disk full, read-only file system) must not leave the
        transaction open: the next BEGIN would fail forever after the disk is freed.
        """
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                self._rollback_quietly()
                raise
        except sqlite3.Error as exc:
            self._write_failed(exc)
            raise
        self._write_ok()

    def _rollback_quietly(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite rolled back itself, or cannot: the first error is the one to report

    def _write_failed(self, exc: sqlite3.Error) -> None:
        if isinstance(exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)):
            return  # a bug, not the disk
        self.write_errors += 1
        self.writable = False
        self.last_write_error = str(exc)
        log.error("state_write_failed", path=str(self.path), error=str(exc),
                  code=getattr(exc, "sqlite_errorname", None), failed_commits=self.write_errors,
                  corrupt=is_corruption(exc),
                  hint=(f"restart to move {self.path} aside and rebuild it" if is_corruption(exc) else
                        "nothing was committed: the last committed values are served and the same lines are "
                        "read again on the next refresh once the state directory is writable "
                        "(free space, or remount it read-write)"))

    def _write_ok(self) -> None:
        if not self.writable:
            log.info("state_writable_again", path=str(self.path), failed_commits=self.write_errors)
        self.writable = True
        self.last_write_error = None

    # ---------------------------------------------------------------- reads

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def put_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def defer_checkpoints(self) -> None:
        """Leave the WAL for a later commit (on any connection) to copy into the database."""
        self.conn.execute("PRAGMA wal_autocheckpoint = 0")

    def has_table(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                 (name,)).fetchone() is not None

    def files(self) -> dict[str, FileState]:
        if not self.has_table("file_tails"):  # a state written before it, read as it is
            rows = self.conn.execute("SELECT path, source, dev, ino, offset, head, NULL FROM files")
        else:
            rows = self.conn.execute(
                "SELECT f.path, f.source, f.dev, f.ino, f.offset, f.head, t.tail FROM files f"
                " LEFT JOIN file_tails t ON t.path = f.path AND t.offset = f.offset")
        return {r[0]: FileState(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), bytes(r[6] or b"")) for r in rows}

    def request_rows(self) -> dict[int, bytes]:
        """Dedup key -> the packed row of the largest copy seen (ROW).

        A reader that may not migrate (a running older exporter owns the state) reads an
        older schema as it is, its rows widened to today's ROW in memory.
        """
        if not self.has_table("request_pages"):  # schema 1
            if not self.has_table("requests"):
                return {}
            return {k: _widened(r) for k, r in self.conn.execute("SELECT key, row FROM requests")}
        old = self._schema() < 3
        entry = _PAGE_ENTRY_2 if old else PAGE_ENTRY
        rows: dict[int, bytes] = {}
        for (entries,) in self.conn.execute("SELECT entries FROM request_pages ORDER BY id"):
            if len(entries) % entry.size:
                raise sqlite3.DatabaseError("malformed dedup index page: cut short")
            if old:
                rows.update((k, r + _NO_REPORTED) for k, r in entry.iter_unpack(entries))
            else:
                rows.update(entry.iter_unpack(entries))
        return rows

    def dims(self) -> list[tuple[str, str, str]]:
        """(source, model, entrypoint) by id; ids are dense from 0."""
        return [(r[1], r[2], r[3]) for r in self.conn.execute(
            "SELECT id, source, model, entrypoint FROM dims ORDER BY id")]

    def aggregates(self) -> dict[AggKey, list[int]]:
        have = self._columns("usage_hourly")  # an older schema read as it is: a missing column is 0
        cols = ", ".join(c if c in have else "0" for c in AGG_COLUMNS)
        rows = self.conn.execute(f"SELECT hour, source, model, entrypoint, {cols} FROM usage_hourly")
        return {(r[0], r[1], r[2], r[3]): list(r[4:]) for r in rows}

    def line_counts(self) -> dict[tuple[str, str], int]:
        return {(r[0], r[1]): r[2] for r in self.conn.execute("SELECT source, result, count FROM line_counts")}

    # ---------------------------------------------------------------- writes (inside transaction())

    @staticmethod
    def put_files(conn: sqlite3.Connection, files: Iterable[FileState]) -> None:
        files = list(files)
        conn.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                         [(f.path, f.source, f.dev, f.ino, f.offset, f.head) for f in files])
        conn.executemany("INSERT OR REPLACE INTO file_tails VALUES (?, ?, ?)",
                         [(f.path, f.offset, f.tail) for f in files])

    @staticmethod
    def drop_files(conn: sqlite3.Connection, paths: list[str]) -> None:
        conn.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in paths])
        conn.executemany("DELETE FROM file_tails WHERE path = ?", [(p,) for p in paths])

    @staticmethod
    def put_dims(conn: sqlite3.Connection, rows: list[tuple[int, str, str, str]]) -> None:
        conn.executemany("INSERT INTO dims VALUES (?, ?, ?, ?)", rows)

    @staticmethod
    def put_requests(conn: sqlite3.Connection, entries: Iterable[tuple[int, bytes]]) -> int:
        """Append (key, row) entries to the dedup index, where they stand over any earlier entry
        of the same key; returns the pages written."""
        it = iter(entries)
        pages = 0
        while page := b"".join(starmap(PAGE_ENTRY.pack, islice(it, PAGE_ENTRIES))):
            conn.execute("INSERT INTO request_pages (entries) VALUES (?)", (page,))
            pages += 1
        return pages

    @staticmethod
    def rewrite_requests(conn: sqlite3.Connection, entries: Iterable[tuple[int, bytes]]) -> int:
        """Write the dedup index anew, as just these entries (the hourly prune); returns the pages."""
        conn.execute("DELETE FROM request_pages")
        return StateDB.put_requests(conn, entries)

    @staticmethod
    def add_aggregates(conn: sqlite3.Connection, deltas: dict[AggKey, list[int]]) -> None:
        cols = ", ".join(AGG_COLUMNS)
        sets = ", ".join(f"{c} = {c} + excluded.{c}" for c in AGG_COLUMNS)
        conn.executemany(
            f"INSERT INTO usage_hourly (hour, source, model, entrypoint, {cols}) VALUES"
            f" (?, ?, ?, ?, {', '.join('?' * len(AGG_COLUMNS))})"
            f" ON CONFLICT (hour, source, model, entrypoint) DO UPDATE SET {sets}",
            [(*k, *v) for k, v in deltas.items()],
        )

    @staticmethod
    def add_line_counts(conn: sqlite3.Connection, counts: dict[tuple[str, str], int]) -> None:
        conn.executemany(
            "INSERT INTO line_counts VALUES (?, ?, ?)"
            " ON CONFLICT (source, result) DO UPDATE SET count = count + excluded.count",
            [(s, r, n) for (s, r), n in counts.items()],
        )


def _widened(row: bytes) -> bytes:
    """A row of schemas 1 and 2 as today's ROW: reported_pico, its last field, is 0."""
    if len(row) != _ROW_2.size:
        raise sqlite3.DatabaseError("malformed dedup index row")
    return row + _NO_REPORTED


def _widened_page(entries: bytes) -> bytes:
    """A dedup index page of schema 2 rewritten to today's entry width."""
    if len(entries) % _PAGE_ENTRY_2.size:
        raise sqlite3.DatabaseError("malformed dedup index page: cut short")
    return b"".join(PAGE_ENTRY.pack(k, r + _NO_REPORTED) for k, r in _PAGE_ENTRY_2.iter_unpack(entries))


def rebuild_hint(path: Path) -> str:
    return f"move {path} aside (or delete it) and restart to rebuild from the logs still on disk"


LOSS_NOTE = ("rebuilding from the logs still on disk: usage whose log files were deleted since it was read "
             "(Claude Code deletes transcripts after 30 days) cannot come back; billed days are fetched again "
             "from the Admin API")


def quarantine(path: Path, reason: str, *, now: float | None = None) -> Path:
    """Move a corrupt database and its ``-wal``/``-shm`` aside; report it on the log and on stderr.

    The side files move with it: a stale WAL left beside a new database would be replayed
    into it. Returns the new name of the database file.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    target = path.with_name(f"{path.name}{CORRUPT_MARK}{stamp}")
    n = 1
    while any(os.path.lexists(f"{target}{s}") for s in ("", *SIDE_FILES)):
        n += 1
        target = path.with_name(f"{path.name}{CORRUPT_MARK}{stamp}-{n}")
    moved = []
    for suffix in ("", *SIDE_FILES):
        try:
            os.replace(f"{path}{suffix}", f"{target}{suffix}")
            moved.append(f"{target}{suffix}")
        except FileNotFoundError:
            pass
    log.error("state_corrupt", path=str(path), reason=reason, moved_to=str(target), files_moved=moved,
              consequence=LOSS_NOTE)
    print(f"claude-budget-exporter: state database {path} is corrupt ({reason}); moved it to {target}; "
          f"{LOSS_NOTE}", file=sys.stderr, flush=True)
    return target


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _close_quietly(conn: sqlite3.Connection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except sqlite3.Error:
            pass
