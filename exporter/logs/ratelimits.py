"""Subscription window reports from a ``rate_limits`` source, tailed by byte offset.

Two kinds of line carry them:

* the records ``claude-budget-exporter statusline`` appends (Claude Code's statusline JSON:
  ``rate_limits.five_hour`` / ``seven_day`` with ``used_percentage`` 0..100 and ``resets_at`` in
  epoch seconds), or Claude Code's statusline JSON saved as it came;
* the Agent SDK's ``rate_limit_event`` lines a pipeline saves: ``rate_limit_info`` with
  ``rate_limit_type``, ``utilization`` 0..1, ``resets_at`` and ``status`` (the CLI's own stream
  spells them ``rateLimitType`` and ``resetsAt``; both are read).

Only the latest report of each (source, window) matters: it is kept in memory and in the state
database with the files' offsets, written in the ingestor's transaction. A line without a time
of its own is booked like a CLI result: at its file's modification time when the file was there
before its first read, else when it is read.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from exporter.config import SourceConfig
from exporter.core.windows import STATUSES, WINDOWS, WindowReport, newer
from exporter.logs import parse as readers
from exporter.logs.dedup import Batch

__all__ = ["RATE_LIMITS", "RateLimitTail", "parse_line"]

RATE_LIMITS = "rate_limits"
CHUNK = 1 << 20
MAX_LINE = 1 << 20  # a statusline record is a few hundred bytes; an SDK event less
SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_limit_files (
    path TEXT PRIMARY KEY, source TEXT NOT NULL, dev INTEGER NOT NULL, ino INTEGER NOT NULL, offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rate_limit_windows (
    source TEXT NOT NULL, window TEXT NOT NULL, reported_at REAL NOT NULL, used TEXT, resets_at REAL, status TEXT,
    PRIMARY KEY (source, window)
);
"""
_HUNDRED = Decimal(100)
_MAX_OVER = Decimal("1.5")  # a used fraction a little past 1 is rounding or overage: shown as 1; beyond, corrupt
_EARLIEST, _LATEST = 1_577_836_800.0, 4_102_444_800.0  # 2020 .. 2100: any other reset time is corrupt


def _fraction(value: Any, scale: Decimal) -> Decimal | None:
    """A used share as a Decimal 0..1; ValueError when it is not one."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("not finite")
    try:
        number = Decimal(str(value)) / scale
    except InvalidOperation:
        raise ValueError("not a number") from None
    if not number.is_finite() or number < 0 or number > _MAX_OVER:
        raise ValueError("out of range")
    return min(number, Decimal(1))


def _reset_time(value: Any) -> float | None:
    if value is None:
        return None
    ts = readers.parse_timestamp(value)
    if ts is None or not _EARLIEST <= ts <= _LATEST:
        raise ValueError("not a reset time")
    return ts


def parse_line(source: str, line: bytes, when: float, now: float) -> list[WindowReport] | str:
    """The window reports of one line, or a line result (``ignored`` for a line that has none).

    ``when``: the time of a line that carries none; ``now``: lines dated past it by more than the
    ingest allows are ``bad_timestamp``.
    """
    obj = readers._decode_object(line)
    if isinstance(obj, str):
        return obj
    ts: float | None = when
    if "timestamp" in obj:
        ts = readers.parse_timestamp(obj["timestamp"])
    info = obj.get("rate_limit_info")
    windows: list[tuple[str, Any, Decimal, Any, Any]] = []  # (window, used, scale, resets, status)
    if obj.get("type") == "rate_limit_event" or isinstance(info, dict):
        if not isinstance(info, dict):
            return readers.BAD_USAGE
        name = info.get("rate_limit_type", info.get("rateLimitType"))
        if name not in WINDOWS:
            return readers.IGNORED  # a window this version does not know
        windows.append((name, info.get("utilization"), Decimal(1), info.get("resets_at", info.get("resetsAt")),
                        info.get("status")))
    else:
        limits = obj.get("rate_limits")
        if not isinstance(limits, dict):
            return readers.IGNORED
        for name, w in limits.items():
            if name in WINDOWS and isinstance(w, dict):
                windows.append((name, w.get("used_percentage"), _HUNDRED, w.get("resets_at"), None))
        if not windows:
            return readers.IGNORED
    reason = readers._check_ts(ts, now)
    if reason is not None or ts is None:
        return reason or readers.BAD_TIMESTAMP
    out = []
    for name, used, scale, resets, status in windows:
        try:
            fraction = _fraction(used, scale)
            reset_at = _reset_time(resets)
        except ValueError:
            return readers.BAD_USAGE
        if fraction is None and reset_at is None and status not in STATUSES:
            continue
        out.append(WindowReport(source=source, window=name, reported_at=ts, used=fraction, resets_at=reset_at,
                                status=status if status in STATUSES else None))
    return out or readers.IGNORED


@dataclass
class _File:
    source: str
    dev: int
    ino: int
    offset: int


class RateLimitTail:
    """The ``rate_limits`` sources' files, their offsets and the latest report of each window."""

    def __init__(self, sources: Iterable[SourceConfig], conn: sqlite3.Connection | None) -> None:
        self.sources = {s.name for s in sources if s.kind == RATE_LIMITS}
        self.files: dict[str, _File] = {}
        self.latest: dict[tuple[str, str], WindowReport] = {}
        self._files_out: dict[str, _File] = {}
        self._gone: list[str] = []
        self._reports_out: dict[tuple[str, str], WindowReport] = {}
        if conn is not None and self.sources and _has_tables(conn):
            for path, source, dev, ino, offset in conn.execute(
                    "SELECT path, source, dev, ino, offset FROM rate_limit_files"):
                self.files[path] = _File(source, dev, ino, offset)
            for source, window, at, used, resets, status in conn.execute(
                    "SELECT source, window, reported_at, used, resets_at, status FROM rate_limit_windows"):
                if source in self.sources and window in WINDOWS:
                    self.latest[(source, window)] = WindowReport(
                        source, window, at, Decimal(used) if used is not None else None, resets, status)

    def read(self, listed: Iterable[tuple[SourceConfig, str, os.stat_result]], batch: Batch,
             errors: dict[str, str]) -> None:
        """Read what is new in each listed file into the batch's line counts and the pending reports;
        ``errors`` gets a source's unreadable file."""
        self._files_out, self._gone, self._reports_out = {}, [], {}
        seen = set()
        for source, path, st in listed:
            seen.add(path)
            prev = self.files.get(path)
            same = prev is not None and (prev.dev, prev.ino) == (st.st_dev, st.st_ino) and st.st_size >= prev.offset
            if same and prev is not None and st.st_size == prev.offset:
                continue
            start = prev.offset if same and prev is not None else 0
            # lines without a time: a backlog keeps the file's age, an append is booked when read
            when = min(batch.now, st.st_mtime) if prev is None else batch.now
            try:
                offset = self._tail(source.name, path, start, when, batch)
            except OSError as exc:
                errors[source.name] = f"{path}: {exc.strerror or exc}"
                continue
            self._files_out[path] = _File(source.name, st.st_dev, st.st_ino, offset)
        listed_sources = {s for s in self.sources if s not in errors}
        self._gone = [p for p, f in self.files.items() if p not in seen and f.source in listed_sources]

    def _tail(self, source: str, path: str, start: int, when: float, batch: Batch) -> int:
        offset = start
        carry = b""
        skipping = False
        with open(path, "rb", buffering=0) as f:
            f.seek(start)
            while chunk := f.read(CHUNK):
                batch.stats.bytes_read += len(chunk)
                data = carry + chunk
                last = data.rfind(b"\n")
                if last < 0:
                    carry = data
                    if len(carry) > MAX_LINE:
                        if not skipping:
                            batch.count(source, readers.TOO_LONG)
                        skipping, offset, carry = True, offset + len(carry), b""
                    continue
                lines = data[:last].split(b"\n")
                if skipping:
                    lines, skipping = lines[1:], False
                for line in lines:
                    if not line.strip():
                        continue
                    if len(line) > MAX_LINE:
                        batch.count(source, readers.TOO_LONG)
                        continue
                    self._take(source, parse_line(source, line, when, batch.now), batch)
                offset += last + 1
                carry = data[last + 1:]
        return offset

    def _take(self, source: str, parsed: list[WindowReport] | str, batch: Batch) -> None:
        if isinstance(parsed, str):
            batch.count(source, parsed)
            return
        batch.count(source, readers.COUNTED)
        for report in parsed:
            key = (source, report.window)
            if newer(report, self._reports_out.get(key) or self.latest.get(key)):
                self._reports_out[key] = report

    def store(self, conn: sqlite3.Connection) -> None:
        """Write what :meth:`read` found, inside the caller's transaction."""
        if not self._files_out and not self._gone and not self._reports_out:
            return
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.executemany("INSERT OR REPLACE INTO rate_limit_files VALUES (?, ?, ?, ?, ?)",
                         [(p, f.source, f.dev, f.ino, f.offset) for p, f in self._files_out.items()])
        conn.executemany("DELETE FROM rate_limit_files WHERE path = ?", [(p,) for p in self._gone])
        conn.executemany("INSERT OR REPLACE INTO rate_limit_windows VALUES (?, ?, ?, ?, ?, ?)",
                         [(r.source, r.window, r.reported_at, None if r.used is None else str(r.used), r.resets_at,
                           r.status) for r in self._reports_out.values()])

    def stored(self) -> None:
        """The commit succeeded: memory moves on."""
        self.files.update(self._files_out)
        for p in self._gone:
            self.files.pop(p, None)
        self.latest.update(self._reports_out)
        self._files_out, self._gone, self._reports_out = {}, [], {}

    def reports(self) -> tuple[WindowReport, ...]:
        """The latest report of every window, in a stable order."""
        return tuple(sorted(self.latest.values()))


def _has_tables(conn: sqlite3.Connection) -> bool:
    found = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                         "('rate_limit_files', 'rate_limit_windows')").fetchone()
    return bool(found[0] == 2)
