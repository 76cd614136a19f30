"""Tailing by offset: growth, half-written lines, truncation, rotation, deletion, dedup, restarts."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import structlog.testing
from freezegun import freeze_time

from exporter.config import SourceConfig
from exporter.logs.dedup import AGG_COST_PICO, AGG_REQUESTS
from exporter.logs.ingestor import Ingestor
from exporter.prices import load_pricer
from exporter.state import StateDB

NOW = 1795000000.0  # 2026-11-18T07:06:40Z
SONNET = "claude-sonnet-4-5-20250929"


def line(mid: str, *, out: int = 100, inp: int = 10, cr: int = 0, cw5: int = 0, cw1h: int = 0,
         model: str = SONNET, ts: str = "2026-11-17T10:00:00.000Z", req: str | None = None, **extra) -> bytes:
    obj = {
        "type": "assistant", "timestamp": ts, "requestId": req or f"req_{mid}", "entrypoint": "cli",
        "sessionId": "s1", "isSidechain": False,
        "message": {"id": f"msg_{mid}", "model": model, "role": "assistant", "content": [{"type": "text", "text": "x"}],
                    "usage": {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": cr,
                              "cache_creation_input_tokens": cw5 + cw1h,
                              "cache_creation": {"ephemeral_5m_input_tokens": cw5, "ephemeral_1h_input_tokens": cw1h}}},
    }
    obj.update(extra)
    return json.dumps(obj).encode() + b"\n"


def progress_line(mid: str, *, outer_ts: str | None = "2026-11-17T10:00:01.000Z", inner: dict | None = None,
                  data_type: str = "agent_progress", **kw) -> bytes:
    """A subagent's turn as Claude Code streams it into the parent transcript: the entry its own
    file (``<session>/subagents/agent-<id>.jsonl``) holds, nested in ``data.message`` of a progress line."""
    if inner is None:
        entry = json.loads(line(mid, isSidechain=True, **kw))
        del entry["entrypoint"]  # the nested entry leaves it to the outer line
    else:
        entry = inner
    obj = {"parentUuid": "p0", "isSidechain": False, "userType": "external", "cwd": "/w", "sessionId": "s1",
           "version": "2.0.60", "entrypoint": "cli", "type": "progress",
           "data": {"type": data_type, "agentId": "a1b2c3d", "prompt": "look around", "message": entry},
           "toolUseID": "agent_msg_x", "parentToolUseID": "toolu_task1", "uuid": f"u-{mid}", "timestamp": outer_ts}
    return json.dumps(obj).encode() + b"\n"


def usd(inp: int = 10, out: int = 100, cr: int = 0, cw5: int = 0, cw1h: int = 0) -> Decimal:
    """Sonnet 4.5 list price, computed here by hand."""
    return (Decimal(inp) * 3 + Decimal(out) * 15 + Decimal(cr) * Decimal("0.3") + Decimal(cw5) * Decimal("3.75")
            + Decimal(cw1h) * 6) / 1_000_000


class Harness:
    """``watch``: the ingestor stats only what inotify names, with no periodic full scan to
    hide a missed event; every test here runs that way and polling."""

    def __init__(self, tmp: Path, watch: bool = False, clock: Callable[[], float] = lambda: NOW) -> None:
        self.logs = tmp / "projects"
        self.logs.mkdir()
        self.state_dir = tmp / "state"
        self.source = SourceConfig(name="claude-code", kind="claude_code", paths=(str(self.logs),))
        self.watch = watch
        self.clock = clock
        self.open()

    def open(self) -> None:
        self.db = StateDB(self.state_dir)
        self.ing = Ingestor([self.source], self.db, load_pricer(), clock=self.clock, watch=self.watch,
                            full_scan_seconds=1e9)

    def restart(self) -> None:
        self.ing.close()
        self.db.close()
        self.open()

    def refresh(self):
        return self.ing.refresh()

    def total_usd(self) -> Decimal:
        return sum((Decimal(v[AGG_COST_PICO]) for v in self.ing.aggregates.values()), Decimal(0)) / 10**12

    def requests(self) -> int:
        return sum(v[AGG_REQUESTS] for v in self.ing.aggregates.values())

    def lines(self, result: str) -> int:
        return self.ing.line_counts.get(("claude-code", result), 0)

    def write(self, rel: str, data: bytes, mode: str = "ab") -> Path:
        p = self.logs / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, mode) as f:
            f.write(data)
        return p


@pytest.fixture(params=["poll", "watch"])
def h(tmp_path: Path, request: pytest.FixtureRequest) -> Harness:
    harness = Harness(tmp_path, watch=request.param == "watch")
    yield harness
    harness.ing.close()


def test_growth_is_read_once_and_half_lines_wait_for_their_newline(h: Harness) -> None:
    h.write("p/a.jsonl", line("1"))
    h.refresh()
    assert h.total_usd() == usd()
    full = line("2", out=200)
    h.write("p/a.jsonl", full[:40])  # a line still being written
    h.refresh()
    assert h.requests() == 1
    h.write("p/a.jsonl", full[40:])
    h.refresh()
    assert h.requests() == 2
    assert h.total_usd() == usd() + usd(out=200)
    stats = h.refresh()
    assert stats.bytes_read == 0  # nothing new: nothing read


def test_dedup_keeps_the_largest_copy_across_files_and_refreshes(h: Harness) -> None:
    h.write("p/a.jsonl", line("1", out=1))  # streamed placeholder
    h.refresh()
    assert h.total_usd() == usd(out=1)
    h.write("p/a.jsonl", line("1", out=500) + line("1", out=500))  # final copies, one per content block
    h.write("p/b.jsonl", line("1", out=500))  # a resumed session copies the line
    h.refresh()
    assert h.requests() == 1
    assert h.total_usd() == usd(out=500)
    h.write("p/c.jsonl", line("1", out=2))  # a smaller copy later changes nothing
    h.refresh()
    assert h.total_usd() == usd(out=500)
    assert h.lines("counted") == 1 and h.lines("duplicate") == 4


def test_rejects_are_counted_by_reason(h: Harness) -> None:
    h.write("p/a.jsonl", b"".join([
        line("1"),
        line("2", isApiErrorMessage=True),
        line("3", model="<synthetic>"),
        b'{"type":"assistant","message":{"usage":' + b"\n",
        b'{"type":"assistant","message":{"id":"m","model":"x","usage":{"input_tokens":"\xff\xfe"}}}\n',
        line("4", inp=-5),
        line("5", out=10**12),
        line("6", ts="2099-01-01T00:00:00Z"),
        b'{"type":"user","message":{"role":"user","content":"hello"}}\n',
    ]))
    h.refresh()
    assert h.requests() == 1
    assert (h.lines("api_error"), h.lines("synthetic"), h.lines("malformed_json"), h.lines("invalid_utf8"),
            h.lines("bad_usage"), h.lines("bad_timestamp"), h.lines("ignored")) == (1, 1, 1, 1, 2, 1, 1)


def test_truncated_file_is_read_again_from_the_start(h: Harness) -> None:
    p = h.write("p/a.jsonl", line("1") + line("2"))
    h.refresh()
    p.write_bytes(line("3", out=7))  # truncated and rewritten, same inode
    h.refresh()
    assert h.requests() == 3
    assert h.total_usd() == usd() * 2 + usd(out=7)


def test_rotation_reads_the_tail_of_the_old_file_then_the_new_one(h: Harness) -> None:
    p = h.write("p/a.jsonl", line("1"))
    h.refresh()
    h.write("p/a.jsonl", line("2"))  # appended after our last read
    os.rename(p, str(p) + ".1")  # rotated away (no longer matches *.jsonl)
    h.write("p/a.jsonl", line("3"))
    h.refresh()
    assert h.requests() == 3


def test_deleted_files_keep_their_totals_and_restarts_neither_lose_nor_double(h: Harness) -> None:
    a = h.write("p/a.jsonl", line("1") + line("2"))
    h.write("p/sub/subagents/agent-1.jsonl", line("3", isSidechain=True))
    h.refresh()
    before = h.total_usd()
    assert h.requests() == 3
    a.unlink()  # the 30-day purge
    h.refresh()
    assert h.total_usd() == before
    h.restart()
    h.refresh()
    assert h.total_usd() == before and h.requests() == 3
    h.write("p/sub/subagents/agent-1.jsonl", line("4"))
    h.write("p/b.jsonl", line("1"))  # a resumed copy of a deleted file's line
    h.restart()
    h.refresh()
    assert h.requests() == 4
    assert h.total_usd() == before + usd()


def test_replaced_file_with_a_reused_inode_is_read_from_the_start(h: Harness) -> None:
    p = h.write("p/a.jsonl", line("1", out=1))
    h.refresh()
    p.write_bytes(line("9", out=3) + line("8", out=4))  # same inode, longer, different content
    h.refresh()
    assert h.requests() == 3


def test_overlong_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.ing.max_line = 1000
    h.write("p/a.jsonl", line("1") + b'{"usage": "' + b"x" * 5000 + b'"}\n' + line("2"))
    h.refresh()
    assert h.requests() == 2
    assert h.lines("too_long") == 1


def test_one_hour_cache_writes_and_long_context_are_priced(h: Harness) -> None:
    h.write("p/a.jsonl", line("1", inp=10, out=100, cw1h=1000) + line("2", inp=150_000, cr=50_001, out=1000))
    h.refresh()
    long_ctx = (Decimal(150_000) * 6 + Decimal(50_001) * Decimal("0.6") + Decimal(1000) * Decimal("22.5")) / 10**6
    assert h.total_usd() == usd(cw1h=1000) + long_ctx


def test_a_message_without_request_id_is_deduplicated_on_its_message_id(h: Harness) -> None:
    one = json.loads(line("9", out=1))
    del one["requestId"]
    final = json.loads(line("9", out=50))
    del final["requestId"]
    h.write("p/a.jsonl", (json.dumps(one) + "\n" + json.dumps(final) + "\n" + json.dumps(final) + "\n").encode())
    h.refresh()
    assert h.requests() == 1 and h.total_usd() == usd(out=50)


def test_subagent_turns_in_progress_lines_count_once_with_or_without_the_subagent_file(h: Harness) -> None:
    """A subagent's request is in its own file and in the parent's progress lines: one request
    while both are there, the same after the subagent file is deleted, and a new progress copy
    still counts with no file of its own."""
    parent = (line("m1") + progress_line("sub1", out=5)  # the streamed placeholder copy
              + progress_line("sub1", out=50)
              + b'{"type":"progress","data":{"type":"hook_progress","hookEvent":"PostToolUse"},'
                b'"timestamp":"2026-11-17T10:00:02.000Z"}\n'
              + b'{"type":"progress","data":{"type":"agent_progress","message":{"type":"user","message":'
                b'{"role":"user","content":[{"type":"tool_result","content":"ok"}]}}}}\n')
    h.write("p/s1.jsonl", parent)
    sub = h.write("p/s1/subagents/agent-a1b2c3d.jsonl", line("sub1", out=50, isSidechain=True))
    h.refresh()
    assert h.requests() == 2
    assert h.total_usd() == usd() + usd(out=50)
    assert (h.lines("counted"), h.lines("duplicate"), h.lines("ignored")) == (2, 2, 2)

    sub.unlink()  # the 30-day purge, or a subagent file never written
    h.refresh()
    assert h.requests() == 2 and h.total_usd() == usd() + usd(out=50)
    untimed = json.loads(line("sub3", out=80, isSidechain=True))
    del untimed["timestamp"]
    h.write("p/s1.jsonl", progress_line("sub2", out=70, outer_ts="2026-11-17T12:30:00.000Z")
            + progress_line("sub3", inner=untimed, outer_ts="2026-11-17T12:30:00.000Z"))
    h.refresh()
    assert h.requests() == 4
    assert h.total_usd() == usd() + usd(out=50) + usd(out=70) + usd(out=80)
    # booked at the turn's own time (10:00), or the outer line's (12:30) when the turn has none;
    # the entrypoint is the outer line's when the turn names none
    ten = int(datetime(2026, 11, 17, 10, tzinfo=UTC).timestamp())
    by_hour = {(hour, entrypoint): v[AGG_REQUESTS] for (hour, _s, _m, entrypoint), v in h.ing.aggregates.items()}
    assert by_hour == {(ten, "cli"): 3, (ten + 2 * 3600, "cli"): 1}


def test_a_state_that_never_saw_the_subagent_file_counts_the_progress_copies(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.write("p/s1.jsonl", line("m1") + progress_line("sub1", out=5) + progress_line("sub1", out=50))
    h.refresh()
    assert h.requests() == 2 and h.total_usd() == usd() + usd(out=50)
    assert (h.lines("counted"), h.lines("duplicate")) == (2, 1)


def test_lines_dated_ahead_of_a_clock_that_is_behind_are_kept_at_their_own_time(tmp_path: Path) -> None:
    """The exporter's clock two days behind the logs: their lines are counted at their own hours,
    not rejected as bad timestamps (and lost: the offset moves past them). Once the clock is
    right nothing is counted twice; a date years ahead is still a bad timestamp, and the lines
    after it are read."""
    hour = lambda iso: int(datetime.fromisoformat(iso).timestamp())  # noqa: E731
    with freeze_time("2026-11-15T10:00:00Z") as frozen:  # the logs are written on the 17th
        h = Harness(tmp_path, clock=lambda: time.time())
        h.write("p/a.jsonl", line("1", ts="2026-11-17T10:00:00.000Z")
                + line("2", out=200, ts="2026-11-17T11:30:00.000Z")
                + line("3", ts="2028-11-17T10:00:00.000Z")  # a broken writer's date: too far to be a clock
                + line("4", out=400, cw1h=1000, ts="2026-11-17T11:59:59.000Z"))
        with structlog.testing.capture_logs() as logs:
            h.refresh()
            h.refresh()
        assert h.requests() == 3 and h.lines("bad_timestamp") == 1
        assert h.total_usd() == usd() + usd(out=200) + usd(out=400, cw1h=1000)
        by_hour = {k[0]: v[AGG_REQUESTS] for k, v in h.ing.aggregates.items()}
        assert by_hour == {hour("2026-11-17T10:00:00+00:00"): 1, hour("2026-11-17T11:00:00+00:00"): 2}
        said = [e for e in logs if e["event"] == "log_lines_future_dated"]
        assert len(said) == 1 and said[0]["source"] == "claude-code"

        frozen.move_to("2026-11-17T12:30:00Z")  # the clock is put right
        h.write("p/a.jsonl", line("5", out=500, ts="2026-11-17T12:15:00.000Z") + line("2", out=200))
        h.restart()
        h.refresh()
        assert h.requests() == 4 and (h.lines("counted"), h.lines("duplicate")) == (4, 1)
        assert h.total_usd() == usd() + usd(out=200) + usd(out=400, cw1h=1000) + usd(out=500)
        assert h.lines("bad_timestamp") == 1
        h.ing.close()
