"""The exporter's memory: one SQLite database (WAL) under ``state_dir``.

File offsets, dedup keys with their token totals, hourly aggregates and line counts
are written in one transaction per refresh, so a kill -9 at any point neither loses
nor double counts, and totals outlive the logs they came from. The billed side keeps
its own ``billed_*`` tables in the same file.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

SCHEMA_VERSION = 1
DB_NAME = "state.sqlite3"
log = structlog.get_logger()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, source TEXT NOT NULL, dev INTEGER NOT NULL, ino INTEGER NOT NULL,
    offset INTEGER NOT NULL, head BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS dims (
    id INTEGER PRIMARY KEY, source TEXT NOT NULL, model TEXT NOT NULL, entrypoint TEXT NOT NULL
);
-- one row per deduplicated request: its key's 64-bit hash and its packed figures (ingest.ROW)
CREATE TABLE IF NOT EXISTS requests (key INTEGER PRIMARY KEY, hour INTEGER NOT NULL, row BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS usage_hourly (
    hour INTEGER NOT NULL, source TEXT NOT NULL, model TEXT NOT NULL, entrypoint TEXT NOT NULL,
    requests INTEGER NOT NULL, input INTEGER NOT NULL, output INTEGER NOT NULL,
    cache_read INTEGER NOT NULL, cache_write_5m INTEGER NOT NULL, cache_write_1h INTEGER NOT NULL,
    web_search INTEGER NOT NULL, cost_pico INTEGER NOT NULL, unpriced_tokens INTEGER NOT NULL,
    PRIMARY KEY (hour, source, model, entrypoint)
);
CREATE TABLE IF NOT EXISTS line_counts (
    source TEXT NOT NULL, result TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (source, result)
);
"""

# the numeric columns of usage_hourly, in order; an aggregate is a list of these
AGG_COLUMNS = ("requests", "input", "output", "cache_read", "cache_write_5m", "cache_write_1h",
               "web_search", "cost_pico", "unpriced_tokens")
AggKey = tuple[int, str, str, str]  # (hour epoch, source, model, entrypoint)


@dataclass(frozen=True, slots=True)
class FileState:
    path: str
    source: str
    dev: int
    ino: int
    offset: int
    head: bytes  # the first bytes of the file, to tell a reused inode from the file we read


class StateError(Exception):
    """The state database cannot be opened or written; the message says why and where."""


class StateDB:
    """A connection to the state database. One per thread; writers serialise on SQLite's lock."""

    def __init__(self, state_dir: Path, *, readonly: bool = False) -> None:
        self.path = Path(state_dir).expanduser() / DB_NAME
        try:
            if not readonly:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
            self.conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None,
                                        check_same_thread=False)
            self.conn.execute("PRAGMA busy_timeout = 30000")
            if not readonly:
                self.conn.execute("PRAGMA journal_mode = WAL")
                self.conn.execute("PRAGMA synchronous = NORMAL")
                self._migrate()
            else:
                self.conn.execute("SELECT count(*) FROM meta").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state database {self.path}: {exc}") from None
        except OSError as exc:
            raise StateError(f"state directory {self.path.parent}: {exc.strerror or exc}") from None

    def _migrate(self) -> None:
        check = self.conn.execute("PRAGMA quick_check").fetchone()
        if check and check[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {check[0]}")
        self.conn.executescript(_SCHEMA)
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self.conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"written by a newer version (schema {row[0]} > {SCHEMA_VERSION})")

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ---------------------------------------------------------------- reads

    def files(self) -> dict[str, FileState]:
        rows = self.conn.execute("SELECT path, source, dev, ino, offset, head FROM files")
        return {r[0]: FileState(r[0], r[1], r[2], r[3], r[4], bytes(r[5])) for r in rows}

    def request_rows(self) -> dict[int, bytes]:
        """Dedup key -> the packed row of the largest copy seen (ingest.ROW)."""
        return dict(self.conn.execute("SELECT key, row FROM requests"))

    def dims(self) -> list[tuple[str, str, str]]:
        """(source, model, entrypoint) by id; ids are dense from 0."""
        return [(r[1], r[2], r[3]) for r in self.conn.execute(
            "SELECT id, source, model, entrypoint FROM dims ORDER BY id")]

    def aggregates(self) -> dict[AggKey, list[int]]:
        rows = self.conn.execute(f"SELECT hour, source, model, entrypoint, {', '.join(AGG_COLUMNS)} FROM usage_hourly")
        return {(r[0], r[1], r[2], r[3]): list(r[4:]) for r in rows}

    def line_counts(self) -> dict[tuple[str, str], int]:
        return {(r[0], r[1]): r[2] for r in self.conn.execute("SELECT source, result, count FROM line_counts")}

    # ---------------------------------------------------------------- writes (inside transaction())

    @staticmethod
    def put_file(conn: sqlite3.Connection, f: FileState) -> None:
        conn.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                     (f.path, f.source, f.dev, f.ino, f.offset, f.head))

    @staticmethod
    def drop_files(conn: sqlite3.Connection, paths: list[str]) -> None:
        conn.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in paths])

    @staticmethod
    def put_dims(conn: sqlite3.Connection, rows: list[tuple[int, str, str, str]]) -> None:
        conn.executemany("INSERT INTO dims VALUES (?, ?, ?, ?)", rows)

    @staticmethod
    def put_requests(conn: sqlite3.Connection, rows: Iterable[tuple[int, int, bytes]]) -> None:
        """Rows sorted by key: B-tree inserts in order are several times faster than random ones."""
        conn.executemany("INSERT OR REPLACE INTO requests VALUES (?, ?, ?)", rows)

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

    @staticmethod
    def prune_requests(conn: sqlite3.Connection, before_hour: int) -> int:
        """Forget dedup keys older than the retention window; their totals stay in usage_hourly."""
        return conn.execute("DELETE FROM requests WHERE hour < ?", (before_hour,)).rowcount


def rebuild_hint(path: Path) -> str:
    return f"move {path} aside (or delete it) and restart to rebuild from the logs still on disk"


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(f"{path}{suffix}")
        except FileNotFoundError:
            pass
