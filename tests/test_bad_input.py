"""Bad input in log folders, case by case: what a user can count on when files are huge,
damaged, lying about their numbers or not files at all.

Each case is read through the real Ingestor and state database; the rule is the same
everywhere: a bad line is skipped and counted under its reason, the good lines around
it are read, no total moves by a bad line, and a refresh always finishes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
import structlog.testing

from exporter.logs import ingestor as ingest
from exporter.logs import parse as readers
from exporter.config.model import JSONL_FIELDS, SourceConfig
from exporter.logs.dedup import AGG_REQUESTS
from exporter.logs.ingestor import Ingestor
from exporter.prices import load_pricer
from exporter.state import StateDB
from tests.conftest import sample

NOW = 1795000000.0  # 2026-11-18T07:06:40Z
TS = "2026-11-17T10:00:00.000Z"
HAIKU = "claude-haiku-4-5-20251001"


def cc_line(n: int, *, ts: str = TS, model: str = HAIKU, **usage) -> bytes:
    u = {"input_tokens": 1000, "output_tokens": 100, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
    u.update(usage)
    return json.dumps({"type": "assistant", "timestamp": ts, "requestId": f"req_{n}",
                       "message": {"id": f"msg_{n}", "model": model, "usage": u}}).encode() + b"\n"


class Logs:
    def __init__(self, tmp: Path, kind: str = "claude_code", max_line: int = ingest.MAX_LINE_BYTES) -> None:
        self.dir = tmp / "logs"
        self.dir.mkdir(exist_ok=True)
        fields = {f: f for f in JSONL_FIELDS} if kind == "jsonl" else {}
        self.source = SourceConfig(name="src", kind=kind, paths=(str(self.dir),), fields=fields)
        self.db = StateDB(tmp / "state")
        self.ing = Ingestor([self.source], self.db, load_pricer(), clock=lambda: NOW, max_line_bytes=max_line)

    def write(self, name: str, data: bytes) -> Path:
        p = self.dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "ab") as f:
            f.write(data)
        return p

    def refresh(self, timeout: float = 20.0) -> None:
        """A refresh in a thread, so that one that hangs fails the test instead of the suite."""
        err: list[BaseException] = []

        def run() -> None:
            try:
                self.ing.refresh()
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                err.append(exc)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(timeout)
        assert not t.is_alive(), f"refresh still running after {timeout}s"
        if err:
            raise err[0]

    def lines(self, result: str) -> int:
        return self.ing.line_counts.get(("src", result), 0)

    def requests(self) -> int:
        return sum(v[AGG_REQUESTS] for v in self.ing.aggregates.values())

    def tokens(self) -> int:
        return sum(sum(v[1:6]) for v in self.ing.aggregates.values())

    def counts(self) -> dict[str, int]:
        return {res: n for (src, res), n in self.ing.line_counts.items() if src == "src" and n}


@pytest.fixture
def logs(tmp_path: Path) -> Logs:
    return Logs(tmp_path)


def test_a_line_over_10_mb_is_skipped_and_counted_too_long(logs: Logs) -> None:
    huge = b'{"type":"assistant","message":{"usage":{"output_tokens":1},"x":"' + b"a" * (11 << 20) + b'"}}\n'
    logs.write("a.jsonl", cc_line(1) + huge + cc_line(2))
    logs.refresh()
    assert logs.counts() == {"counted": 2, "too_long": 1}
    assert logs.requests() == 2 and logs.tokens() == 2 * 1100


def test_long_lines_are_skipped_across_read_chunks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 4096)
    logs = Logs(tmp_path, max_line=10_000)
    long_line = b'{"usage": "' + b"z" * 50_000 + b'"}\n'
    logs.write("a.jsonl", cc_line(1) + long_line + cc_line(2) + long_line + long_line + cc_line(3))
    logs.refresh()
    assert logs.counts() == {"counted": 3, "too_long": 3}
    assert logs.requests() == 3


@pytest.mark.parametrize("rest", [5_000, 20_000])
def test_a_long_line_still_being_written_is_counted_once(tmp_path: Path, monkeypatch, rest: int) -> None:
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 4096)
    logs = Logs(tmp_path, max_line=10_000)
    long_line = b'{"usage": "' + b"z" * (30_000 + rest) + b'"}\n'
    logs.write("a.jsonl", cc_line(1) + long_line[:30_000])  # a refresh comes while it is being written
    logs.refresh()
    logs.write("a.jsonl", long_line[30_000:] + cc_line(2))
    logs.refresh()
    assert logs.counts() == {"counted": 2, "too_long": 1}


def test_nul_bytes(logs: Logs) -> None:
    good = cc_line(1)
    logs.write("a.jsonl", good[:20] + b"\x00" + good[20:])  # inside a line
    logs.write("a.jsonl", b"\x00" * 4096 + b"\n")  # a block of zeros where a crash left a hole
    logs.write("a.jsonl", cc_line(2))
    logs.write("b.jsonl", b"\x00" * 100_000)  # nothing but zeros, no newline yet
    logs.refresh()
    assert logs.requests() == 1
    assert logs.lines("counted") == 1
    assert logs.lines("malformed_json") == 2
    assert logs.counts().keys() <= {"counted", "malformed_json"}


def test_invalid_utf8(logs: Logs) -> None:
    bad = cc_line(1).replace(b"claude-haiku", b"claude-\xff\xfehaiku")
    logs.write("a.jsonl", bad + cc_line(2) + b'{"usage": "\xc3"}\n')
    logs.refresh()
    assert logs.counts() == {"counted": 1, "invalid_utf8": 2}


@pytest.mark.parametrize("value", ["100", [100], {"n": 100}, True, 1.5, "NaN", -1, -(2**63), 10**12, 2**64,
                                   readers.MAX_TOKENS_PER_REQUEST + 1])
def test_wrong_types_negative_and_absurd_token_counts_are_rejected(logs: Logs, value) -> None:
    for field in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        logs.write(f"{field}.jsonl", cc_line(hash(field) % 1000, **{field: value}))
    logs.write("nested.jsonl", cc_line(2000, cache_creation={"ephemeral_5m_input_tokens": value}))
    logs.write("web.jsonl", cc_line(2001, server_tool_use={"web_search_requests": value}))
    logs.write("good.jsonl", cc_line(1))
    logs.refresh()
    assert logs.counts() == {"counted": 1, "bad_usage": 6}
    assert logs.tokens() == 1100  # nothing of the rejected lines reached a total


def test_null_and_integral_float_counts_are_accepted(logs: Logs) -> None:
    logs.write("a.jsonl", cc_line(1, input_tokens=None) + cc_line(2, output_tokens=100.0))
    logs.refresh()
    assert logs.counts() == {"counted": 2}
    assert logs.tokens() == 100 + 1100


def test_generic_jsonl_rejects_the_same_way(tmp_path: Path) -> None:
    logs = Logs(tmp_path, kind="jsonl")
    rows = [
        {"timestamp": TS, "model": HAIKU, "input_tokens": 10, "output_tokens": 5},
        {"timestamp": TS, "model": HAIKU, "input_tokens": -10},
        {"timestamp": TS, "model": HAIKU, "input_tokens": "10"},
        {"timestamp": TS, "model": HAIKU, "input_chars": 10**15},
        {"timestamp": TS, "model": HAIKU, "cost_usd": "-1"},
        {"timestamp": TS, "model": HAIKU, "cost_usd": "Infinity"},
        {"timestamp": TS, "model": 7, "input_tokens": 1},
        {"timestamp": "2099-01-01T00:00:00Z", "model": HAIKU, "input_tokens": 1},
        {"timestamp": NOW * 1000 + 8 * 86400 * 1000, "model": HAIKU, "input_tokens": 1},  # epoch ms, 8 days ahead
        {"model": HAIKU, "input_tokens": 1},
        ["not", "an", "object"],
        "a bare string",
    ]
    logs.write("t.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    logs.refresh()
    assert logs.counts() == {"counted": 1, "bad_usage": 6, "bad_timestamp": 3, "malformed_json": 2}
    assert logs.tokens() == 15


def test_timestamps_far_in_the_future_are_rejected(logs: Logs) -> None:
    an_hour_ahead = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW + 3600))  # clock skew: fine
    eight_days_ahead = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW + 8 * 86400))  # past the week
    for n, ts in enumerate((an_hour_ahead, eight_days_ahead, "9999-12-31T23:59:59Z", "2026-13-45T99:00:00Z",
                            "yesterday", "")):
        logs.write("a.jsonl", cc_line(n, ts=ts))
    logs.write("a.jsonl", json.dumps({"type": "assistant", "timestamp": 1e300, "requestId": "r", "message": {
        "id": "m", "model": HAIKU, "usage": {"output_tokens": 1}}}).encode() + b"\n")
    logs.refresh()
    assert logs.counts() == {"counted": 1, "bad_timestamp": 6}


def test_symlink_loops_fifos_dangling_links_and_folders_named_jsonl(tmp_path: Path) -> None:
    logs = Logs(tmp_path)
    logs.write("p/good.jsonl", cc_line(1))
    (logs.dir / "p" / "loop").symlink_to(logs.dir)  # a folder linking to its parent
    (logs.dir / "self").symlink_to(logs.dir / "self")  # a link to itself
    (logs.dir / "p" / "dangling.jsonl").symlink_to(tmp_path / "gone.jsonl")
    os.mkfifo(logs.dir / "p" / "pipe.jsonl")  # opening this for reading would wait for a writer forever
    (logs.dir / "p" / "folder.jsonl").mkdir()
    logs.write("p/folder.jsonl/inner.jsonl", cc_line(2))
    os.mknod(logs.dir / "p" / "empty.jsonl")
    started = time.monotonic()
    logs.refresh(timeout=10)
    assert time.monotonic() - started < 5
    assert logs.requests() == 2 and logs.counts() == {"counted": 2}
    assert logs.ing.status["src"].files == 3  # good, folder.jsonl/inner, empty; not the pipe or the link
    logs.refresh(timeout=10)  # and again, with the folder listings cached
    assert logs.requests() == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_an_unreadable_file_is_reported_and_the_rest_is_read(logs: Logs) -> None:
    logs.write("good.jsonl", cc_line(1))
    secret = logs.write("secret.jsonl", cc_line(2))
    secret.chmod(0)
    logs.refresh()
    assert logs.requests() == 1
    assert "secret.jsonl" in (logs.ing.status["src"].error or "")
    secret.chmod(0o644)
    logs.refresh()
    assert logs.requests() == 2


def test_the_running_exporter_counts_every_reason_and_keeps_serving(tmp_path: Path, exporter_factory) -> None:
    """The same damage under `serve`: /metrics shows each reason, /healthz stays ok."""
    d = tmp_path / "logs"
    d.mkdir()
    now = time.time()
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60))
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 8 * 86400))
    with open(d / "a.jsonl", "wb") as f:
        f.write(cc_line(1, ts=ts))
        f.write(b'{"type":"assistant","message":{"usage":{}},"x":"' + b"a" * (10 << 20) + b'"}\n')
        f.write(cc_line(2, ts=ts).replace(b"claude-haiku", b"\xff"))
        f.write(cc_line(3, ts=ts, output_tokens=-5))
        f.write(cc_line(4, ts=future))
        f.write(b'{"type":"assistant","message":{"usage"\n')
        f.write(b"\x00\x00\x00\n")
    os.mkfifo(d / "pipe.jsonl")
    (d / "loop").symlink_to(d)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"refresh_interval: 200ms\nsources: [{{name: cc, kind: claude_code, paths: ['{d}']}}]\n")
    e = exporter_factory(["--config", str(cfg), "--state-dir", str(tmp_path / "state")]).start()
    s = e.wait_for(lambda s: sample(s, "claude_log_lines_total", source="cc", result="counted") == 1,
                   what="the first refresh")
    got = {r: sample(s, "claude_log_lines_total", source="cc", result=r) for r in readers.RESULTS}
    assert {r: n for r, n in got.items() if n} == {"counted": 1, "too_long": 1, "invalid_utf8": 1,
                                                  "bad_usage": 1, "bad_timestamp": 1, "malformed_json": 2}
    assert sample(s, "claude_estimated_tokens_total", source="cc", model="claude-haiku-4-5",
                  token_type="input") == 1000
    assert Decimal(repr(sample(s, "claude_estimated_cost_usd_total", source="cc", model="claude-haiku-4-5"))) \
        == Decimal("0.0015")  # 1000 input at $1/MTok + 100 output at $5/MTok
    code, _ = __import__("tests.conftest", fromlist=["http_get"]).http_get(e.url + "/healthz")
    assert code == 200


def test_a_loop_of_links_named_jsonl_is_one_unreadable_file_and_the_source_stays_up(tmp_path: Path) -> None:
    """Before: one link to itself named x.jsonl set the source's error, so claude_source_up was 0
    while every other file was read."""
    from exporter.config import parse_config
    from exporter.refresh import Refresher

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "good.jsonl").write_bytes(cc_line(1) + b"\n")
    (logs / "loop.jsonl").symlink_to(logs / "loop.jsonl")
    cfg = parse_config({"state_dir": str(tmp_path / "state"),
                        "sources": [{"name": "src", "kind": "claude_code", "paths": [str(logs)]}]})
    refresher = Refresher(cfg, clock=lambda: NOW)
    try:
        with structlog.testing.capture_logs() as events:
            refresher.refresh_logs()
            refresher.refresh_logs()
        src = next(s for s in refresher.snapshot().sources if s.name == "src")
        assert src.up and src.error is None
        assert (src.files, src.unreadable) == (1, 1)
        said = [e for e in events if e["event"] == "log_file_unreadable"]
        assert len(said) == 1 and said[0]["path"].endswith("loop.jsonl")  # said once, not every refresh
    finally:
        refresher.stop()
