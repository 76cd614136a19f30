"""A log file rewritten in place: truncated and written again, its first bytes the same as before,
and grown past the old offset between two refreshes (or while the exporter was down).

What was written before the offset must not be lost, and nothing may count twice: the file
is read again from its start, and the dedup index drops what was counted already.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import structlog.testing

from exporter.logs import ingestor as ingest
from exporter.state import StateDB
from tests.test_ingest import Harness, line, usd


@pytest.fixture(params=["poll", "watch"])
def h(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Harness]:
    harness = Harness(tmp_path, watch=request.param == "watch")
    yield harness
    harness.ing.close()


def lines(prefix: str, first: int, last: int, out: int) -> tuple[bytes, Decimal]:
    """Lines ``<prefix>01``... of equal length (so offsets fall on line breaks), and their cost."""
    data = b"".join(line(f"{prefix}{i:02d}", out=out + i) for i in range(first, last + 1))
    return data, sum((usd(out=out + i) for i in range(first, last + 1)), Decimal(0))


def events(logs: list[dict], name: str) -> list[dict]:
    return [e for e in logs if e["event"] == name]


def test_a_file_rewritten_past_its_offset_is_read_again_and_counts_nothing_twice(h: Harness) -> None:
    """The issue's case: 26 new requests, 21 of them written before the old offset."""
    shared, shared_usd = lines("s", 1, 3, 100)  # the session's first lines, the same in both versions
    assert len(shared) > ingest.HEAD_BYTES  # the first bytes match: the file is not "replaced"
    old, old_usd = lines("o", 4, 24, 200)
    p = h.write("p/a.jsonl", shared + old)
    h.refresh()
    assert h.requests() == 24

    new, new_usd = lines("n", 1, 26, 300)
    p.write_bytes(shared + new)  # truncated in place (same inode) and rewritten, longer than before
    assert p.stat().st_size > len(shared + old)
    with structlog.testing.capture_logs() as logs:
        h.refresh()
    assert h.requests() == 24 + 26
    assert h.total_usd() == shared_usd + old_usd + new_usd  # exact, to the picodollar
    assert (h.lines("counted"), h.lines("duplicate"), h.lines("malformed_json")) == (50, 3, 0)
    (said,) = events(logs, "log_file_rewritten")
    assert said["path"] == str(p) and said["source"] == "claude-code"
    assert not events(logs, "log_file_replaced") and not events(logs, "log_file_truncated")

    # from here on the file is followed as usual: an append is read once, and no rewrite is seen
    more, more_usd = lines("m", 1, 1, 400)
    h.write("p/a.jsonl", more)
    with structlog.testing.capture_logs() as logs:
        stats = h.refresh()
    assert stats.bytes_read == len(more)
    assert not events(logs, "log_file_rewritten")
    assert h.requests() == 51 and h.total_usd() == shared_usd + old_usd + new_usd + more_usd


def test_a_rewrite_while_the_exporter_was_down_is_seen_after_the_restart(h: Harness) -> None:
    """The fingerprint is stored with the offset: a restart does not forget it. Here the old
    offset falls inside a line of the new version, which must not be read as a broken line."""
    shared, shared_usd = lines("s", 1, 3, 100)
    old, old_usd = lines("o", 4, 10, 200)
    p = h.write("p/a.jsonl", shared + old)
    h.refresh()
    h.restart()
    new = b"".join(line(f"new-{i}", out=7, inp=123_456 + i) for i in range(12))  # longer lines
    new_usd = usd(out=7, inp=123_456) * 12 + Decimal(sum(range(12)) * 3) / 10**6
    p.write_bytes(shared + new)
    assert (len(shared + old) - len(shared)) % len(line("new-0", out=7, inp=123_456))  # mid-line
    with structlog.testing.capture_logs() as logs:
        h.refresh()
    assert len(events(logs, "log_file_rewritten")) == 1
    assert h.requests() == 10 + 12
    assert h.total_usd() == shared_usd + old_usd + new_usd
    assert h.lines("malformed_json") == 0 and h.lines("duplicate") == 3
    h.restart()
    assert h.refresh().bytes_read == 0  # the new offset and fingerprint were stored
    assert h.requests() == 22


def test_the_same_bytes_written_again_and_appended_to_are_not_read_twice(h: Harness) -> None:
    """A file truncated and written again with the bytes it had (a copy put back, a sync tool)
    and then appended to is no rewrite: only what is new is read."""
    first, first_usd = lines("a", 1, 5, 100)
    p = h.write("p/a.jsonl", first)
    h.refresh()
    more, more_usd = lines("b", 1, 2, 100)
    p.write_bytes(first + more)
    with structlog.testing.capture_logs() as logs:
        stats = h.refresh()
    assert stats.bytes_read == len(more)
    assert not events(logs, "log_file_rewritten")
    assert h.requests() == 7 and h.total_usd() == first_usd + more_usd
    assert h.lines("duplicate") == 0


def test_appends_to_many_files_never_look_like_rewrites(h: Harness) -> None:
    """The check on the hot path: a line at a time to each of 20 files, and nothing read twice."""
    total = Decimal(0)
    for rnd in range(3):
        for f in range(20):
            data, cost = lines(f"f{f:02d}r{rnd}-", 1, 2, 100)
            h.write(f"p{f % 4}/s{f}.jsonl", data)
            total += cost
        with structlog.testing.capture_logs() as logs:
            stats = h.refresh()
        assert not events(logs, "log_file_rewritten")
        assert stats.bytes_read == 20 * len(data)
    assert h.requests() == 120 and h.total_usd() == total and h.lines("duplicate") == 0


# ----------------------------------------------------------------------------- the stored fingerprint


def test_a_state_from_before_the_fingerprint_is_read_and_goes_on(tmp_path: Path) -> None:
    """A state whose files have no stored fingerprint (written by the previous release, which had no
    file_tails table) is read as it is; the file is then followed from its offset as before, and
    the fingerprint is stored with the next offset."""
    h = Harness(tmp_path)
    first, first_usd = lines("a", 1, 4, 100)
    p = h.write("p/a.jsonl", first)
    h.refresh()
    h.ing.close()
    h.db.close()
    raw = sqlite3.connect(h.state_dir / "state.sqlite3")
    raw.execute("DROP TABLE file_tails")
    raw.commit()
    raw.close()

    ro = StateDB(h.state_dir, readonly=True)  # a reader beside a running older exporter
    (state,) = ro.files().values()
    assert state.offset == len(first) and state.tail == b""
    ro.close()

    h.open()
    assert h.ing.files[str(p)].tail == b""
    more, more_usd = lines("b", 1, 1, 100)
    h.write("p/a.jsonl", more)
    assert h.refresh().bytes_read == len(more)
    assert h.ing.files[str(p)].tail == (first + more)[-ingest.TAIL_BYTES:]
    h.restart()
    assert h.ing.files[str(p)].tail == (first + more)[-ingest.TAIL_BYTES:]
    assert h.requests() == 5 and h.total_usd() == first_usd + more_usd
    h.ing.close()


def test_a_fingerprint_left_behind_by_an_older_release_is_not_used(tmp_path: Path) -> None:
    """An older release moves a file's offset and leaves its stored fingerprint as it was: one
    that was stored with another offset says nothing of the bytes before this one."""
    h = Harness(tmp_path)
    first, _ = lines("a", 1, 4, 100)
    h.write("p/a.jsonl", first)
    h.refresh()
    h.ing.close()
    h.db.close()
    raw = sqlite3.connect(h.state_dir / "state.sqlite3")
    raw.execute("UPDATE files SET offset = offset + 1")
    raw.commit()
    raw.close()
    h.open()
    (state,) = h.ing.files.values()
    assert state.offset == len(first) + 1 and state.tail == b""
    h.ing.close()


def test_a_file_gone_takes_its_fingerprint_with_it(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    p = h.write("p/a.jsonl", line("1"))
    h.refresh()
    assert h.db.conn.execute("SELECT count(*) FROM file_tails").fetchone() == (1,)
    p.unlink()
    h.refresh()
    assert h.db.conn.execute("SELECT count(*) FROM file_tails").fetchone() == (0,)
    h.ing.close()
