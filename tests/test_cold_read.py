"""The cold-read machinery: block decoding, the split across processes, the paged dedup index.

Each test holds the fast path to an independent answer: the line-by-line parser, a read
in one process, the generator's own truth, or a database written by the previous schema.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from exporter.logs import parse as readers
from exporter.config import SourceConfig
from exporter.logs.dedup import (
    AGG_COST_PICO,
    AGG_OUTPUT,
    AGG_REQUESTS,
    PAGE_ENTRY,
    Row,
    key_hash,
    row_hour,
    row_total,
    unpack_row,
)
from exporter.logs.ingestor import Ingestor
from exporter.prices import load_pricer
from exporter.state import PAGE_ENTRIES, StateDB
from tests.corpus import generate
from tests.test_ingest import NOW, SONNET, line, progress_line, usd

CENT = Decimal("0.01")
# a row as schemas 1 and 2 packed it: today's ROW without its last field, reported_pico
OLD_ROW = struct.Struct("<11q")


def _ingestor(logs: Path, state_dir: Path, *, workers: int, clock=lambda: NOW) -> tuple[StateDB, Ingestor]:
    source = SourceConfig(name="claude-code", kind="claude_code", paths=(str(logs),))
    db = StateDB(state_dir)
    # parallel_min_bytes=0: split even a small read, which a real run does only past 64 MB
    return db, Ingestor([source], db, load_pricer(), clock=clock, workers=workers, parallel_min_bytes=0)


def _view(ing: Ingestor) -> tuple[dict, dict, dict]:
    """What a read leaves behind, with label ids replaced by the labels (ids depend on read order)."""
    rows = {}
    for key, row in ing.known.items():
        r = unpack_row(row)
        rows[key] = r._replace(dim=ing.dim_list[r.dim])
    aggs = {k: v for k, v in ing.aggregates.items() if any(v)}
    return aggs, dict(ing.line_counts), rows


# ----------------------------------------------------------------------------- block decoding


ODD_LINES = [
    line("a1", out=5),
    line("a1", out=50),  # a later, larger copy of the same request
    line("a1", out=7),
    line("b1", inp=3),
    b'{"type":"user","message":{"role":"user","content":"no usage here"}}\n',
    b'{"type":"summary","summary":"caf\xc3\xa9"}\n',  # valid UTF-8 outside usage
    b'{"type":"user","message":{"content":"\xff\xfe bad bytes, no usage"}}\n',
    line("c1")[:-1].replace(b'"x"', b'"\xed\xa0\x80"') + b"\n",  # a surrogate: not UTF-8
    line("d1", isApiErrorMessage=True),
    line("e1", model="<synthetic>"),
    line("f1", ts="2099-01-01T00:00:00Z"),  # far in the future
    line("g1")[:-1].replace(b'"input_tokens": 10', b'"input_tokens": null') + b"\n",  # careful path: null is 0
    line("h1")[:-1].replace(b'"input_tokens": 10', b'"input_tokens": -4') + b"\n",
    line("i1")[:-1].replace(b'"output_tokens": 100', b'"output_tokens": 12.5') + b"\n",
    b'{"type":"assistant","message":{"id":"msg_x","usage":{"input_tokens":1}}' + b"\n",  # cut short
    b"[1, 2, 3]\n",
    b"\n",
    b"   \n",
    line("j1", req=None)[:-1].replace(b'"requestId": "req_j1", ', b"") + b"\n",
    line("k1", out=9)[:-1].replace(b'"id": "msg_k1", ', b"") + b"\n",  # no message id: counts every time
    line("k1", out=9)[:-1].replace(b'"id": "msg_k1", ', b"") + b"\n",
]


def _by_line(lines: list[bytes], parse=None) -> tuple[dict[str, int], list]:
    """The reference: each line alone through the line parser, as a read line by line sees it."""
    parse = parse or readers.parse_claude_code("cc")
    counts: dict[str, int] = {}
    records = []
    for raw in lines:
        text = raw.rstrip(b"\n")
        if not text.strip():
            continue
        if b'"usage"' in text:
            got = parse(text, NOW)
            if isinstance(got, str):
                counts[got] = counts.get(got, 0) + 1
            elif got:
                records.extend(got)
            else:
                counts[readers.IGNORED] = counts.get(readers.IGNORED, 0) + 1
        elif text.endswith(b"}"):
            counts[readers.IGNORED] = counts.get(readers.IGNORED, 0) + 1
        else:
            counts[readers.MALFORMED] = counts.get(readers.MALFORMED, 0) + 1
    return counts, records


def _fold(records: list) -> tuple[dict, list]:
    """The reference's copies folded the way the block does: the largest total per key, first on ties."""
    best: dict = {}
    unkeyed = []
    for rec in records:
        if rec.dedup_key is None:
            unkeyed.append(rec)
            continue
        held = best.get(rec.dedup_key)
        if held is None or rec.tokens.total > held.tokens.total:
            best[rec.dedup_key] = rec
    return best, unkeyed


@pytest.mark.parametrize("order", ["as written", "reversed", "odd lines first"])
def test_a_block_names_every_reason_and_folds_copies_exactly_as_a_read_line_by_line(order: str) -> None:
    lines = list(ODD_LINES)
    if order == "reversed":
        lines.reverse()
    elif order == "odd lines first":
        lines = lines[4:] + lines[:4]
    want_counts, want_records = _by_line(lines)
    assert want_counts[readers.INVALID_UTF8] == 1 and want_counts[readers.BAD_USAGE] == 2  # the reference sees them

    blk = readers.ClaudeBlock()
    readers.scan_claude_block(b"".join(lines), NOW, readers.parse_claude_code("cc"), blk)

    assert dict(blk.counts) == want_counts
    got = {}
    for (total, ts, decoded, copies) in blk.best.values():
        rec = readers.claude_record("cc", decoded, ts)
        assert rec.tokens.total == total
        got[rec.dedup_key] = (rec, copies)
    for rec in blk.records:  # lines only the careful path could read
        got.setdefault(rec.dedup_key, (rec, 1))
    want_best, want_unkeyed = _fold(want_records)
    assert {k: r for k, (r, _) in got.items()} == want_best
    assert got["msg_a1\x1freq_a1"][1] == 3  # three copies of one request, one kept
    assert [readers.claude_record("cc", d, ts) for _, ts, d in blk.unkeyed] == want_unkeyed


def _nested(mid: str, **kw) -> dict:
    return json.loads(line(mid, isSidechain=True, **kw))


def _untimed(mid: str) -> dict:
    entry = _nested(mid, out=33)
    del entry["timestamp"]
    return entry


def _with(entry: dict, **usage) -> dict:
    entry["message"]["usage"].update(usage)
    return entry


PROGRESS_LINES = [
    line("m1"),
    progress_line("p1", out=5),  # a subagent's placeholder copy
    progress_line("p1", out=50),
    progress_line("p2", inner=_untimed("p2"), outer_ts="2026-11-17T12:30:00.000Z"),  # the outer line's time
    line("p2", out=40, isSidechain=True),  # the subagent file's copy, larger
    progress_line("p3", inner={**_nested("p3", out=9), "entrypoint": "sdk-cli"}),  # its own entrypoint
    progress_line("p4", inner=_with(_nested("p4"), input_tokens=None)),  # careful path: null is 0
    progress_line("p5", isApiErrorMessage=True),
    progress_line("p6", model="<synthetic>"),
    progress_line("p7", ts="2099-01-01T00:00:00Z"),
    progress_line("p8", inner=_with(_nested("p8"), output_tokens=-1)),
    progress_line("p9", inner=_with(_nested("p9"), output_tokens=7.5)),
    progress_line("pa", outer_ts="not a time"),  # the turn's own time stands
    progress_line("pb", inner={"type": "assistant", "message": {"id": "msg_pb", "model": SONNET,
                                                                  "usage": {"input_tokens": 1}}},
                  outer_ts=None),  # no time at all
    progress_line("pc", inner={k: v for k, v in _nested("pc").items() if k != "requestId"}),
    progress_line("pd", inner={**_nested("pd"), "message": {**_nested("pd")["message"], "id": None}}),  # unkeyed
    progress_line("pd", inner={**_nested("pd"), "message": {**_nested("pd")["message"], "id": None}}),
    progress_line("pe", inner={"type": "user", "message": {"role": "user", "content": [{"type": "tool_result"}]}}),
    progress_line("pf", data_type="hook_progress", inner={"type": "assistant"}),
    progress_line("pg")[:-1].replace(b'"text": "x"', b'"text": "\xff"') + b"\n",  # not UTF-8
    b'{"type":"progress","data":{"type":"bash_progress","output":"ok","elapsedTimeSeconds":2}}\n',
    b'{"type":"progress","data":"no object here"}\n',
    b'{"type":"progress","data":{"message":"a string"}}\n',
    b'{"type":"progress","data":{"message":{"type":"assistant","message":"a string"}}}\n',
    b'{"type":"progress","timestamp":"2026-11-17T10:00:00Z","data":{"message":{"type":"assistant",'
    b'"message":{"id":"msg_ph","model":"x","usage":"none"}}}}\n',
]


@pytest.mark.parametrize("order", ["as written", "reversed"])
def test_progress_lines_give_the_same_requests_on_every_path(order: str) -> None:
    """The line parser, the block fold (a cold read) and the careful parser agree on subagent
    turns carried in progress lines: the same records, the same reasons."""
    lines = PROGRESS_LINES if order == "as written" else PROGRESS_LINES[::-1]
    want_counts, want_records = _by_line(lines)
    careful_counts, careful_records = _by_line(lines, readers._parse_claude_code_careful("cc"))
    assert careful_counts == want_counts
    assert careful_records == want_records
    assert want_counts == {readers.IGNORED: 7, readers.API_ERROR: 1, readers.SYNTHETIC: 1,
                           readers.BAD_TIMESTAMP: 2, readers.BAD_USAGE: 2, readers.INVALID_UTF8: 1}

    blk = readers.ClaudeBlock()
    readers.scan_claude_block(b"".join(lines), NOW, readers.parse_claude_code("cc"), blk)
    assert dict(blk.counts) == want_counts
    got = {}
    for (total, ts, decoded, _copies) in blk.best.values():
        rec = readers.claude_record("cc", decoded, ts)
        assert rec.tokens.total == total
        got[rec.dedup_key] = rec
    for rec in blk.records:  # lines only the careful path could read
        got.setdefault(rec.dedup_key, rec)
    want_best, want_unkeyed = _fold(want_records)
    assert got == want_best
    assert [readers.claude_record("cc", d, ts) for _, ts, d in blk.unkeyed] == want_unkeyed
    # and what they are: one request per key, the largest copy, the subagent's times and entrypoints
    assert {k.split("\x1f")[0]: r.tokens.output for k, r in want_best.items()} == {
        "msg_m1": 100, "msg_p1": 50, "msg_p2": 40, "msg_p3": 9, "msg_p4": 100, "msg_pa": 100, "msg_pc": 100}
    assert "msg_pc\x1f" in want_best  # no request id: the message id alone
    assert want_best["msg_p3\x1freq_p3"].entrypoint == "sdk-cli"
    assert want_best["msg_p1\x1freq_p1"].entrypoint == "cli"
    assert want_best["msg_p4\x1freq_p4"].tokens.input == 0
    assert len(want_unkeyed) == 2
    untimed = next(r for r in want_records if r.dedup_key == "msg_p2\x1freq_p2" and r.tokens.output == 33)
    assert untimed.timestamp == datetime(2026, 11, 17, 12, 30, tzinfo=UTC).timestamp()


def test_a_block_of_many_lines_with_one_bad_line_keeps_every_good_line() -> None:
    good = [line(f"m{i}", out=100 + i) for i in range(500)]
    lines = good[:317] + [b'{"type":"assistant","message":{"usage":\n'] + good[317:]
    blk = readers.ClaudeBlock()
    readers.scan_claude_block(b"".join(lines), NOW, readers.parse_claude_code("cc"), blk)
    assert dict(blk.counts) == {readers.MALFORMED: 1}
    assert len(blk.best) == 500
    assert sum(total for total, *_ in blk.best.values()) == sum(110 + i for i in range(500))


def _on_every_path(lines: list[bytes]) -> tuple[dict[str, int], list]:
    """The line parser, the careful parser and the block fold on the same lines: they must give
    the same reasons and the same records (the block's copies folded); returns the line parser's."""
    want_counts, want_records = _by_line(lines)
    careful_counts, careful_records = _by_line(lines, readers._parse_claude_code_careful("cc"))
    assert careful_counts == want_counts
    assert careful_records == want_records

    blk = readers.ClaudeBlock()
    readers.scan_claude_block(b"".join(lines), NOW, readers.parse_claude_code("cc"), blk)
    assert dict(blk.counts) == want_counts
    got = {}
    for (total, ts, decoded, _copies) in blk.best.values():
        rec = readers.claude_record("cc", decoded, ts)
        assert rec.tokens.total == total  # the fold's own total agrees with the record it keeps
        got[rec.dedup_key] = rec
    for rec in blk.records:  # lines only the careful path could read
        got.setdefault(rec.dedup_key, rec)
    want_best, want_unkeyed = _fold(want_records)
    assert got == want_best
    assert [readers.claude_record("cc", d, ts) for _, ts, d in blk.unkeyed] == want_unkeyed
    return want_counts, want_records


def _usage(mid: str, usage: dict, **kw) -> bytes:
    """A transcript line whose usage is exactly ``usage`` beside 10 input and 100 output tokens."""
    entry = json.loads(line(mid, **kw))
    entry["message"]["usage"] = {"input_tokens": 10, "output_tokens": 100, **usage}
    return json.dumps(entry).encode() + b"\n"


def _split(w5m: int | None, w1h: int | None) -> dict:
    return {"ephemeral_5m_input_tokens": w5m, "ephemeral_1h_input_tokens": w1h}


# (cache_creation_input_tokens, cache_creation) as written -> (5-minute, 1-hour) writes counted
CACHE_CASES = {
    "only the total (an older transcript)": ({"cache_creation_input_tokens": 500}, (500, 0)),
    "a split of zeros beside the total": ({"cache_creation_input_tokens": 500, "cache_creation": _split(0, 0)},
                                          (500, 0)),
    "the split adds up to the total": ({"cache_creation_input_tokens": 500, "cache_creation": _split(200, 300)},
                                       (200, 300)),
    "the split covers part of the total": ({"cache_creation_input_tokens": 500, "cache_creation": _split(0, 300)},
                                           (200, 300)),
    "the split is larger than the total": ({"cache_creation_input_tokens": 500, "cache_creation": _split(400, 300)},
                                           (400, 300)),
    "1-hour writes above the total": ({"cache_creation_input_tokens": 500, "cache_creation": _split(0, 700)},
                                      (0, 700)),
    "a split and no total": ({"cache_creation": _split(100, 50)}, (100, 50)),
    "a split with only its 5-minute count": ({"cache_creation_input_tokens": 500,
                                              "cache_creation": {"ephemeral_5m_input_tokens": 120}}, (500, 0)),
    "cache_creation null": ({"cache_creation_input_tokens": 500, "cache_creation": None}, (500, 0)),
    "no cache writes at all": ({}, (0, 0)),
    "a null count in the split (careful path)": ({"cache_creation_input_tokens": 500,
                                                  "cache_creation": _split(None, 300)}, (200, 300)),
    "a null total (careful path)": ({"cache_creation_input_tokens": None, "cache_creation": _split(200, 300)},
                                    (200, 300)),
}


@pytest.mark.parametrize("case", list(CACHE_CASES))
def test_cache_writes_are_split_alike_on_every_path(case: str) -> None:
    usage, (w5m, w1h) = CACHE_CASES[case]
    _, records = _on_every_path([_usage("x1", usage)])
    assert [(r.tokens.cache_write_5m, r.tokens.cache_write_1h) for r in records] == [(w5m, w1h)]
    assert records[0].tokens.total == 10 + 100 + w5m + w1h
    # and the rule itself, as the three paths share it
    total = usage.get("cache_creation_input_tokens") or 0
    split = usage.get("cache_creation") or {}
    assert readers.cache_writes(total, split.get("ephemeral_5m_input_tokens") or 0,
                                split.get("ephemeral_1h_input_tokens") or 0) == (w5m, w1h)


def test_cache_writes_in_one_block_fold_to_the_largest_copy_on_every_path() -> None:
    """Copies of one request that differ only in how they state their cache writes: the copy whose
    writes count for more is kept, by the fold's total as by the records'."""
    lines = [_usage("y1", CACHE_CASES[c][0]) for c in CACHE_CASES]
    lines += [_usage(f"z{i}", CACHE_CASES[c][0]) for i, c in enumerate(CACHE_CASES)]
    for order in (lines, lines[::-1]):
        _, records = _on_every_path(order)
        assert len(records) == 2 * len(CACHE_CASES)
    best, _ = _fold(_by_line(lines)[1])
    assert best["msg_y1\x1freq_y1"].tokens.total == 10 + 100 + 700  # 1-hour writes above the total


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _without(raw: bytes, *path: str) -> bytes:
    entry = json.loads(raw)
    obj = entry
    for k in path[:-1]:
        obj = obj[k]
    del obj[path[-1]]
    return json.dumps(entry).encode() + b"\n"


def _set(raw: bytes, value: object, *path: str) -> bytes:
    entry = json.loads(raw)
    obj = entry
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value
    return json.dumps(entry).encode() + b"\n"


HORIZON = NOW + readers.MAX_FUTURE_SECONDS
CHECK_LINES = {
    "an API error": (line("c1", isApiErrorMessage=True), readers.API_ERROR),
    "isApiErrorMessage false": (line("c2", isApiErrorMessage=False), None),
    "a synthetic turn": (line("c3", model="<synthetic>"), readers.SYNTHETIC),
    "an API error before synthetic": (line("c4", model="<synthetic>", isApiErrorMessage=True), readers.API_ERROR),
    "synthetic before a bad time": (line("c5", model="<synthetic>", ts="2099-01-01T00:00:00Z"), readers.SYNTHETIC),
    "an empty model": (line("c6", model=""), readers.BAD_USAGE),
    "a null model": (_set(line("c7"), None, "message", "model"), readers.BAD_USAGE),
    "no model": (_without(line("c8"), "message", "model"), readers.BAD_USAGE),
    "no model before a bad time": (line("c9", model="", ts="2099-01-01T00:00:00Z"), readers.BAD_USAGE),
    "no timestamp": (_without(line("ca"), "timestamp"), readers.BAD_TIMESTAMP),
    "a timestamp that is not one": (line("cb", ts="not a time"), readers.BAD_TIMESTAMP),
    "a day ahead exactly": (line("cc", ts=_iso(HORIZON)), None),
    "a second past a day ahead": (line("cd", ts=_iso(HORIZON + 1)), readers.BAD_TIMESTAMP),
    "a naive timestamp (UTC)": (line("ce", ts="2026-11-17T10:00:00"), None),
    "epoch seconds (careful path)": (_set(line("cf"), NOW - 3600, "timestamp"), None),
    "epoch milliseconds (careful path)": (_set(line("cg"), (NOW - 3600) * 1000, "timestamp"), None),
}


@pytest.mark.parametrize("case", list(CHECK_LINES))
def test_each_line_check_gives_the_same_reason_on_every_path(case: str) -> None:
    raw, reason = CHECK_LINES[case]
    counts, records = _on_every_path([raw])
    if reason is None:
        assert counts == {} and len(records) == 1
    else:
        assert counts == {reason: 1} and records == []


def test_the_line_checks_in_one_block_give_the_same_reasons_on_every_path() -> None:
    lines = [raw for raw, _ in CHECK_LINES.values()]
    for order in (lines, lines[::-1], lines[1::2] + lines[::2]):
        counts, records = _on_every_path(order)
        want: dict[str, int] = {}
        for _, reason in CHECK_LINES.values():
            if reason is not None:
                want[reason] = want.get(reason, 0) + 1
        assert counts == want
        assert len(records) == sum(reason is None for _, reason in CHECK_LINES.values())


# ----------------------------------------------------------------------------- the parallel read


@pytest.mark.parametrize("workers", [2, 3])
def test_a_read_split_across_processes_leaves_exactly_what_one_process_leaves(tmp_path: Path, workers: int) -> None:
    corpus = tmp_path / "c"
    end = datetime.fromtimestamp(NOW, UTC)
    exp = generate(corpus, files=40, requests=1500, seed=71, days=6, end=end)
    one_db, one = _ingestor(corpus / "projects", tmp_path / "one", workers=1)
    many_db, many = _ingestor(corpus / "projects", tmp_path / "many", workers=workers)
    one.refresh()
    many.refresh()
    assert _view(many) == _view(one)
    usd = Decimal(sum(v[AGG_COST_PICO] for v in many.aggregates.values())) / 10**12
    assert usd.quantize(CENT) == exp.totals().cost_usd.quantize(CENT)
    # and what was committed is what a restart reads back
    many_db.close()
    _, again = _ingestor(corpus / "projects", tmp_path / "many", workers=1)
    assert _view(again) == _view(many)


def test_a_split_read_in_a_serving_process_spawns_its_helpers_and_leaves_the_same(tmp_path: Path) -> None:
    """With other threads running (a serving exporter) helpers are spawned, not forked: they get
    what they read with, the chunk queue and the way back for their batches by pickling."""
    import threading

    from exporter.logs import coldread

    corpus = tmp_path / "c"
    generate(corpus, files=24, requests=800, seed=72, days=3, end=datetime.fromtimestamp(NOW, UTC))
    _, one = _ingestor(corpus / "projects", tmp_path / "one", workers=1)
    one.refresh()
    stop = threading.Event()
    serving = threading.Thread(target=stop.wait, daemon=True)
    serving.start()
    try:
        assert coldread._context().get_start_method() == "spawn"
        _, many = _ingestor(corpus / "projects", tmp_path / "many", workers=2)
        many.refresh()
    finally:
        stop.set()
    assert _view(many) == _view(one)


@pytest.mark.timeout(60)
def test_a_helper_that_fails_fails_the_read_without_a_hang_and_the_next_read_is_whole(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    generate(corpus, files=24, requests=800, seed=73, days=3, end=datetime.fromtimestamp(NOW, UTC))
    _, one = _ingestor(corpus / "projects", tmp_path / "one", workers=1)
    one.refresh()
    _, many = _ingestor(corpus / "projects", tmp_path / "many", workers=2)
    parent, tail = os.getpid(), Ingestor.tail

    def failing_in_a_helper(self, source, path, batch):
        if os.getpid() != parent:
            raise RuntimeError("helper broke")
        return tail(self, source, path, batch)

    Ingestor.tail = failing_in_a_helper  # forked into the helper
    try:
        with pytest.raises(RuntimeError, match="helper broke"):
            many.refresh()
    finally:
        Ingestor.tail = tail
    assert not many.known and not many.files  # nothing of the failed read was kept
    many.refresh()
    assert _view(many) == _view(one)


@pytest.mark.timeout(120)
def test_a_helper_killed_mid_read_fails_the_read_without_a_hang_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """The kernel's OOM killer or a kill -9 aimed at a helper: the read fails (the serving
    exporter keeps its last values and tries again), nothing of it is kept, its spool is gone."""
    import signal

    corpus = tmp_path / "c"
    generate(corpus, files=24, requests=800, seed=75, days=3, end=datetime.fromtimestamp(NOW, UTC))
    _, one = _ingestor(corpus / "projects", tmp_path / "one", workers=1)
    one.refresh()
    _, many = _ingestor(corpus / "projects", tmp_path / "many", workers=2)
    parent, tail, calls = os.getpid(), Ingestor.tail, [0]

    def killed_in_a_helper(self, source, path, batch):
        if os.getpid() != parent:
            calls[0] += 1
            if calls[0] == 3:  # after it has handed over a batch or two
                os.kill(os.getpid(), signal.SIGKILL)
        return tail(self, source, path, batch)

    Ingestor.tail = killed_in_a_helper  # forked into the helper
    try:
        with pytest.raises(RuntimeError):  # the pool's BrokenProcessPool, or HelperLost
            many.refresh()
    finally:
        Ingestor.tail = tail
    assert not many.known and not many.files
    assert not (tmp_path / "many" / "read-spool").exists()
    many.refresh()
    assert _view(many) == _view(one)


def test_a_spool_that_cannot_be_made_fails_the_read_cleanly_and_the_next_read_is_whole(tmp_path: Path) -> None:
    """The helpers' batches go through a folder beside the state: where it cannot be made (a full
    disk, or as here a file in its place) the read fails with that error and stores nothing."""
    corpus = tmp_path / "c"
    generate(corpus, files=24, requests=800, seed=76, days=3, end=datetime.fromtimestamp(NOW, UTC))
    _, one = _ingestor(corpus / "projects", tmp_path / "one", workers=1)
    one.refresh()
    _, many = _ingestor(corpus / "projects", tmp_path / "many", workers=2)
    (tmp_path / "many" / "read-spool").write_text("in the way")
    with pytest.raises(OSError):
        many.refresh()
    assert not many.known and not many.files
    (tmp_path / "many" / "read-spool").unlink()
    many.refresh()
    assert _view(many) == _view(one)
    assert not (tmp_path / "many" / "read-spool").exists()  # removed when the read ended


def test_a_split_read_over_a_warm_state_replaces_a_stored_copy_once(tmp_path: Path) -> None:
    """Both processes find a larger copy of the same stored request: it is taken out once."""
    logs = tmp_path / "projects"
    logs.mkdir()
    (logs / "first.jsonl").write_bytes(line("r1", out=10) + line("r2", out=10) + line("r3", out=10))
    states = {}
    for name, workers in (("one", 1), ("many", 2)):
        _, ing = _ingestor(logs, tmp_path / name, workers=workers)
        ing.refresh()
        states[name] = ing
    # larger copies of r1 in files both processes read, and of r2 in one; r3 copied at the same size
    for i in range(6):
        (logs / f"resumed-{i}.jsonl").write_bytes(
            line("r1", out=20 + i) + (line("r2", out=40) if i == 0 else b"") + line("r3", out=10) + line(f"n{i}"))
    for ing in states.values():
        ing.refresh()
    one, many = states["one"], states["many"]
    assert _view(many) == _view(one)
    assert sum(v[AGG_REQUESTS] for v in one.aggregates.values()) == 3 + 6  # r1..r3 once each, n0..n5
    assert sum(v[AGG_OUTPUT] for v in one.aggregates.values()) == 25 + 40 + 10 + 6 * 100
    assert one.line_counts[("claude-code", readers.COUNTED)] == 3 + 6


def test_the_collector_paused_for_a_large_read_runs_again_after_it_even_when_it_fails(tmp_path: Path) -> None:
    """A serving process must not go on without its garbage collector after its first big read."""
    import gc

    logs = tmp_path / "projects"
    logs.mkdir()
    (logs / "a.jsonl").write_bytes(line("r1") + line("r2"))
    db, ing = _ingestor(logs, tmp_path / "state", workers=1)  # parallel_min_bytes=0: every read is large
    paused: list[bool] = []
    commit = ing._commit

    def watching(*args, **kw):
        paused.append(not gc.isenabled())
        return commit(*args, **kw)

    ing._commit = watching
    ing.refresh()
    assert paused == [True] and gc.isenabled()
    (logs / "a.jsonl").write_bytes(line("r1") + line("r2") + line("r3"))
    db.close()  # the next commit fails
    with pytest.raises(sqlite3.ProgrammingError):
        ing.refresh()
    assert paused == [True, True] and gc.isenabled()


OPUS_46 = "claude-opus-4-6"
# (first copy in plan order, second copy, where the copies are, the copy that must stand)
TIES = {
    "different hours": (("11:00:00", OPUS_46), ("10:59:59", SONNET), "files", ("10", SONNET)),
    "different hours, one block": (("11:00:00", OPUS_46), ("10:59:59", SONNET), "block", ("10", SONNET)),
    "one hour, different models": (("10:40:00", SONNET), ("10:20:00", OPUS_46), "files", ("10", OPUS_46)),
    "one hour, different models, one block": (("10:40:00", SONNET), ("10:20:00", OPUS_46), "block", ("10", OPUS_46)),
}


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("case", TIES)
def test_copies_of_equal_size_keep_the_same_copy_however_the_read_is_split(tmp_path: Path, case: str,
                                                                           workers: int) -> None:
    """Two copies of one request with the same token total: the one in the earlier hour stands,
    and within an hour the one whose model sorts first, whichever is read first, whether they
    share a block of lines or lie in different files, whichever process reads them."""
    (first_ts, first_model), (second_ts, second_model), where, (hour, model) = TIES[case]
    logs = tmp_path / "projects"
    logs.mkdir()
    first = line("tie", out=50, ts=f"2026-11-17T{first_ts}.000Z", model=first_model)
    second = line("tie", out=50, ts=f"2026-11-17T{second_ts}.000Z", model=second_model)
    # in plan order the copy that must not stand comes first: "the first copy read stands" would keep it
    for i in range(12):
        copies = first + second if where == "block" else (first if i % 2 == 0 else second)
        (logs / f"s{i:02d}.jsonl").write_bytes(copies + line(f"own{i}"))
    _, ing = _ingestor(logs, tmp_path / "state", workers=workers)
    ing.refresh()
    tie = {(datetime.fromtimestamp(k[0], UTC).strftime("%H"), k[2]): v[AGG_REQUESTS]
           for k, v in ing.aggregates.items() if v[AGG_REQUESTS]}
    tie[("10", SONNET)] -= 12  # the twelve own requests, at 10:00
    assert {k: n for k, n in tie.items() if n} == {(hour, model): 1}
    copies = 24 if where == "block" else 12
    assert ing.line_counts[("claude-code", readers.DUPLICATE)] == copies - 1


# ----------------------------------------------------------------------------- the paged dedup index


def test_a_schema_1_database_is_migrated_to_the_paged_index_without_losing_a_key(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    conn = sqlite3.connect(state / "state.sqlite3")
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE requests (key INTEGER PRIMARY KEY, hour INTEGER NOT NULL, row BLOB NOT NULL);
    """)
    rows = {k * 7919 - 10**6: OLD_ROW.pack(k, 3600 * k, 0, k, 0, 0, 0, 0, 0, k * 10, 0)
            for k in range(PAGE_ENTRIES + 5)}
    conn.executemany("INSERT INTO requests VALUES (?, ?, ?)", [(k, 0, r) for k, r in rows.items()])
    conn.commit()
    conn.close()

    db = StateDB(state)
    assert db.request_rows() == {k: Row(*OLD_ROW.unpack(r)).pack() for k, r in rows.items()}  # reported_pico 0
    assert not db.has_table("requests")
    assert db.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
    assert db.conn.execute("SELECT count(*) FROM request_pages").fetchone() == (2,)  # more than one page's worth


def test_the_hourly_prune_drops_old_keys_keeps_totals_and_rewrites_the_index(tmp_path: Path) -> None:
    logs = tmp_path / "projects"
    logs.mkdir()
    now = [NOW]
    old = datetime.fromtimestamp(NOW, UTC) - timedelta(days=44)
    stamp = lambda dt: dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")  # noqa: E731
    (logs / "a.jsonl").write_bytes(line("old1", ts=stamp(old)) + line("new1"))
    db, ing = _ingestor(logs, tmp_path / "state", workers=1, clock=lambda: now[0])
    ing.refresh()
    assert len(ing.known) == 2
    for i in range(3):  # three more commits, three more pages
        (logs / f"b{i}.jsonl").write_bytes(line(f"x{i}"))
        now[0] += 60
        ing.refresh()
    assert db.conn.execute("SELECT count(*) FROM request_pages").fetchone() == (4,)
    cost = sum(v[AGG_COST_PICO] for v in ing.aggregates.values())

    now[0] += 2 * 86400  # old1 is now past the 45-day window; an hour has passed, so the prune runs
    (logs / "c.jsonl").write_bytes(line("y1", ts=stamp(datetime.fromtimestamp(now[0], UTC))))
    ing.refresh()
    assert len(ing.known) == 5 and all(row_hour(r) > NOW - 45 * 86400 for r in ing.known.values())
    assert db.conn.execute("SELECT count(*) FROM request_pages").fetchone() == (1,)
    assert db.request_rows() == ing.known
    assert sum(v[AGG_COST_PICO] for v in ing.aggregates.values()) > cost  # y1 added, nothing taken away
    db.close()
    _, again = _ingestor(logs, tmp_path / "state", workers=1, clock=lambda: now[0])
    assert again.known == ing.known


def test_a_dedup_key_hashes_to_the_id_every_stored_state_holds() -> None:
    """The stored index holds these ids, not the keys: a different hash would count every copy of
    an already stored request again after an upgrade. The first 8 bytes of BLAKE2b, big-endian."""
    assert key_hash("msg_01XFDUDYJgAACzvnptvVoYEL\x1freq_011CVKm4Z2f4NuvXeQKdJt5W") == -7072999540739906309


def test_a_page_cut_short_is_reported_as_corruption(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "state")
    with db.transaction() as conn:
        conn.execute("INSERT INTO request_pages (entries) VALUES (?)", (struct.pack("<q", 1) + bytes(50),))
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        db.request_rows()


def test_a_split_read_leaves_no_helper_process_behind(tmp_path: Path) -> None:
    """The helper processes of a split read are gone once the read is committed."""
    corpus = tmp_path / "c"
    generate(corpus, files=6, requests=60, seed=72, days=2, end=datetime.fromtimestamp(NOW, UTC))
    _, ing = _ingestor(corpus / "projects", tmp_path / "s", workers=2)
    ing.refresh()
    import multiprocessing

    assert multiprocessing.active_children() == []
    assert os.path.exists(tmp_path / "s" / "state.sqlite3")


def _schema_1(state: Path, rows: dict[int, bytes]) -> None:
    """A state database as the previous release wrote it: today's tables, but the dedup index
    one SQL row per request."""
    from exporter.state import _SCHEMA

    old = _SCHEMA.replace("CREATE TABLE IF NOT EXISTS request_pages (id INTEGER PRIMARY KEY, entries BLOB NOT NULL);",
                          "CREATE TABLE IF NOT EXISTS requests (key INTEGER PRIMARY KEY, hour INTEGER NOT NULL,"
                          " row BLOB NOT NULL);")
    old = old.replace("    reported_pico INTEGER NOT NULL DEFAULT 0,\n", "")  # schema 3's column
    assert old.count("CREATE TABLE") == _SCHEMA.count("CREATE TABLE") and "reported_pico" not in old
    state.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(state / "state.sqlite3")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(old)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.executemany("INSERT INTO requests VALUES (?, 0, ?)", rows.items())
    conn.commit()
    conn.close()


def test_a_reader_beside_a_running_older_exporter_does_not_migrate_its_database(tmp_path: Path) -> None:
    """An upgrade with the old service still running: report reads the old schema as it is."""
    from exporter.cli import StateLock
    from tests.conftest import run_cli

    state = tmp_path / "state"
    rows = {7: OLD_ROW.pack(5, 3600, 0, 5, 0, 0, 0, 0, 0, 50, 0)}
    _schema_1(state, rows)
    held = StateLock(state)
    assert held.try_acquire()  # the running (older) exporter
    try:
        logs = tmp_path / "projects"
        logs.mkdir()
        cfg = tmp_path / "config.yaml"
        cfg.write_text(f"sources:\n  - name: cc\n    kind: claude_code\n    paths: [{logs}]\n")
        r = run_cli("report", "--json", "--config", str(cfg), "--state-dir", str(state))
        assert r.returncode == 0, r.stderr
        assert "a running exporter owns this state" in r.stderr
        db = StateDB(state, readonly=True)
        assert db.has_table("requests") and not db.has_table("request_pages")
        # and a read-only reader (check) reads the old index, its rows widened in memory
        assert db.request_rows() == {7: Row(total=5, hour=3600, dim=0, input=5, cost_pico=50).pack()}
    finally:
        held.release()


def test_the_prune_keeps_a_request_this_batch_replaced_with_a_newer_copy(tmp_path: Path) -> None:
    logs = tmp_path / "projects"
    logs.mkdir()
    now = [NOW]
    stamp = lambda dt: dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")  # noqa: E731
    old = datetime.fromtimestamp(NOW, UTC) - timedelta(days=44, hours=12)
    (logs / "a.jsonl").write_bytes(line("k1", out=5, ts=stamp(old)) + line("keep"))
    db, ing = _ingestor(logs, tmp_path / "state", workers=1, clock=lambda: now[0])
    ing.refresh()
    now[0] += 2 * 86400  # k1's stored copy is now past the window, and the prune is due
    recent = datetime.fromtimestamp(now[0], UTC) - timedelta(hours=1)
    (logs / "b.jsonl").write_bytes(line("k1", out=50, ts=stamp(recent)))  # a larger copy, stamped recently
    ing.refresh()
    key = next(k for k, r in ing.known.items() if row_total(r) == 60)  # 10 input + 50 output
    assert row_hour(ing.known[key]) > now[0] - 45 * 86400
    assert db.request_rows() == ing.known and len(ing.known) == 2
    (logs / "c.jsonl").write_bytes(line("k1", out=50, ts=stamp(recent)))  # the same copy again: a duplicate
    ing.refresh()
    assert sum(v[AGG_REQUESTS] for v in ing.aggregates.values()) == 2


def test_a_later_process_within_the_hour_does_not_rewrite_the_index(tmp_path: Path) -> None:
    logs = tmp_path / "projects"
    logs.mkdir()
    pages = lambda db: db.conn.execute("SELECT count(*) FROM request_pages").fetchone()[0]  # noqa: E731
    (logs / "a.jsonl").write_bytes(line("p1"))
    db, ing = _ingestor(logs, tmp_path / "state", workers=1)
    ing.refresh()  # a first read: nothing stored yet, so nothing to prune
    (logs / "b.jsonl").write_bytes(line("p2"))
    ing.refresh()
    assert pages(db) == 2
    db.close()
    db, ing = _ingestor(logs, tmp_path / "state", workers=1, clock=lambda: NOW + 60)
    (logs / "c.jsonl").write_bytes(line("p3"))
    ing.refresh()  # no prune on record: this process prunes, and writes the index anew
    assert pages(db) == 1
    db.close()
    for minutes in (10, 20):  # later processes within the hour append
        db, ing = _ingestor(logs, tmp_path / "state", workers=1, clock=lambda m=minutes: NOW + 60 * m)
        (logs / f"d{minutes}.jsonl").write_bytes(line(f"p{minutes}"))
        ing.refresh()
        db.close()
    db, ing = _ingestor(logs, tmp_path / "state", workers=1, clock=lambda: NOW + 3700)
    assert pages(db) == 3 and len(ing.known) == 5
    (logs / "e.jsonl").write_bytes(line("p9"))
    ing.refresh()  # an hour after the last prune: written anew again
    assert pages(db) == 1 and db.request_rows() == ing.known


def test_a_split_read_resuming_inside_an_overlong_line_skips_its_tail(tmp_path: Path) -> None:
    logs = tmp_path / "projects"
    logs.mkdir()
    results = {}
    for workers in (1, 2):
        d = logs / f"w{workers}"
        d.mkdir()
        for i in range(4):
            (d / f"s{i}.jsonl").write_bytes(line(f"w{workers}a{i}") + b'{"type":"user","x":"' + b"y" * 3000)
        source = SourceConfig(name="claude-code", kind="claude_code", paths=(str(d),))
        ing = Ingestor([source], StateDB(tmp_path / f"state{workers}"), load_pricer(), clock=lambda: NOW,
                       workers=workers, parallel_min_bytes=0, max_line_bytes=1000)
        ing.refresh()
        for i in range(4):
            with open(d / f"s{i}.jsonl", "ab") as f:
                f.write(b"y" * 500 + b'"}\n' + line(f"w{workers}b{i}"))
        ing.refresh()
        results[workers] = {r: n for (_, r), n in ing.line_counts.items()}
    assert results[2] == results[1] == {readers.COUNTED: 8, readers.TOO_LONG: 4}


# ----------------------------------------------------------------------------- schema 2 -> 3


# The tables as schema 2 (the release before reported_pico) wrote them.
SCHEMA_2 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE files (
    path TEXT PRIMARY KEY, source TEXT NOT NULL, dev INTEGER NOT NULL, ino INTEGER NOT NULL,
    offset INTEGER NOT NULL, head BLOB NOT NULL
);
CREATE TABLE dims (id INTEGER PRIMARY KEY, source TEXT NOT NULL, model TEXT NOT NULL, entrypoint TEXT NOT NULL);
CREATE TABLE request_pages (id INTEGER PRIMARY KEY, entries BLOB NOT NULL);
CREATE TABLE usage_hourly (
    hour INTEGER NOT NULL, source TEXT NOT NULL, model TEXT NOT NULL, entrypoint TEXT NOT NULL,
    requests INTEGER NOT NULL, input INTEGER NOT NULL, output INTEGER NOT NULL,
    cache_read INTEGER NOT NULL, cache_write_5m INTEGER NOT NULL, cache_write_1h INTEGER NOT NULL,
    web_search INTEGER NOT NULL, cost_pico INTEGER NOT NULL, unpriced_tokens INTEGER NOT NULL,
    PRIMARY KEY (hour, source, model, entrypoint)
);
CREATE TABLE line_counts (
    source TEXT NOT NULL, result TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (source, result)
);
INSERT INTO meta VALUES ('schema_version', '2');
"""


def _schema_2(state: Path, pages: list[dict[int, bytes]], aggregates: dict[tuple, list[int]]) -> None:
    state.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(state / "state.sqlite3")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA_2)
    old_entry = struct.Struct(f"<q{OLD_ROW.size}s")
    for page in pages:
        conn.execute("INSERT INTO request_pages (entries) VALUES (?)",
                     (b"".join(old_entry.pack(k, r) for k, r in page.items()),))
    conn.execute("INSERT INTO dims VALUES (0, 'claude-code', ?, 'cli')", (SONNET,))
    conn.executemany("INSERT INTO usage_hourly VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [(*k, *v) for k, v in aggregates.items()])
    conn.execute("INSERT INTO line_counts VALUES ('claude-code', 'counted', 3)")
    conn.commit()
    conn.close()


def test_a_schema_2_database_upgrades_in_place_and_goes_on_counting(tmp_path: Path) -> None:
    """Schema 3 adds reported_pico: existing aggregates get 0, the 88-byte index pages are rewritten
    to the new width (a later page still standing over an earlier one), and ingest goes on."""

    state = tmp_path / "state"
    hour = int(datetime(2026, 11, 17, 10, tzinfo=UTC).timestamp())  # the hour of line()'s default timestamp
    cost_a1 = int(usd(inp=10, out=100) * 10**12)
    a1, b1, c1 = (key_hash(f"msg_{m}\x1freq_{m}") for m in ("a1", "b1", "c1"))
    pages = [{a1: OLD_ROW.pack(105, hour, 0, 10, 95, 0, 0, 0, 0, 1, 0),  # a smaller copy, replaced below
              b1: OLD_ROW.pack(110, hour, 0, 10, 100, 0, 0, 0, 0, cost_a1, 0)},
             {a1: OLD_ROW.pack(110, hour, 0, 10, 100, 0, 0, 0, 0, cost_a1, 0),
              c1: OLD_ROW.pack(110, hour, 0, 10, 100, 0, 0, 0, 0, cost_a1, 0)}]
    old_aggs = {(hour, "claude-code", SONNET, "cli"): [3, 30, 300, 0, 0, 0, 0, 3 * cost_a1, 0]}
    _schema_2(state, pages, old_aggs)

    # a reader beside a running older exporter reads schema 2 as it is, and migrates nothing
    ro = StateDB(state, readonly=True)
    assert ro.aggregates() == {k: [*v, 0] for k, v in old_aggs.items()}
    assert ro.request_rows()[a1] == Row(total=110, hour=hour, dim=0, input=10, output=100, cost_pico=cost_a1).pack()
    ro.close()
    raw = sqlite3.connect(state / "state.sqlite3")
    assert raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
    raw.close()

    db = StateDB(state)
    assert db.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
    assert db.aggregates() == {k: [*v, 0] for k, v in old_aggs.items()}
    stored = [bytes(e) for (e,) in db.conn.execute("SELECT entries FROM request_pages ORDER BY id")]
    assert [len(e) for e in stored] == [2 * PAGE_ENTRY.size] * 2
    widened = {k: Row(*OLD_ROW.unpack(r)).pack() for k, r in {**pages[0], **pages[1]}.items()}
    assert db.request_rows() == widened
    # the later page's copy
    assert widened[a1] == Row(total=110, hour=hour, dim=0, input=10, output=100, cost_pico=cost_a1).pack()
    db.close()

    # the upgraded state dedups against what it held, and adds to it
    logs = tmp_path / "projects"
    logs.mkdir()
    (logs / "s.jsonl").write_bytes(line("a1") + line("b1") + line("d1"))
    _, ing = _ingestor(logs, state, workers=1)
    ing.refresh()
    (agg,) = ing.aggregates.values()
    assert agg == [4, 40, 400, 0, 0, 0, 0, 4 * cost_a1, 0, 0]
    assert ing.line_counts[("claude-code", readers.DUPLICATE)] == 2
    assert ing.line_counts[("claude-code", readers.COUNTED)] == 3 + 1
    # and a second open finds schema 3 as it left it
    again = StateDB(state)
    assert again.request_rows() == ing.known and len(ing.known) == 4


def _state_of(pid: int) -> str | None:
    """The process's state letter from /proc (None when it is gone; Z is a zombie: dead, not reaped)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(line.split()[1] for line in f if line.startswith("State:"))
    except (OSError, StopIteration):
        return None


def test_helper_processes_die_with_a_parent_killed_with_sigkill(tmp_path: Path) -> None:
    """Before: a kill -9 during a parallel cold read left its helpers (40-55 MB each) running."""
    import signal
    import subprocess
    import sys
    import time

    script = ("import os, sys, time\n"
              "from exporter.logs.coldread import make_pool\n"
              "pool = make_pool(2)\n"
              "pids = {pool.submit(os.getpid).result() for _ in range(8)}\n"
              "print(' '.join(map(str, sorted(pids))), flush=True)\n"
              "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        helpers = [int(p) for p in parent.stdout.readline().split()]  # type: ignore[union-attr]
        assert helpers and all(_state_of(p) not in (None, "Z") for p in helpers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_state_of(p) not in (None, "Z") for p in helpers):
            assert time.monotonic() < deadline, {p: _state_of(p) for p in helpers}
            time.sleep(0.05)
    finally:
        parent.kill()


def test_a_clock_jumping_ahead_prunes_nothing_the_logs_still_hold(tmp_path: Path) -> None:
    """Before: one refresh with the clock 50 days ahead pruned the whole dedup index, and a resumed
    session's copy of an old request was then counted again."""
    logs = tmp_path / "projects"
    logs.mkdir()
    now = [NOW]
    (logs / "a.jsonl").write_bytes(line("m1") + line("m2"))
    db, ing = _ingestor(logs, tmp_path / "state", workers=1, clock=lambda: now[0])
    ing.refresh()
    cost = sum(v[AGG_COST_PICO] for v in ing.aggregates.values())
    now[0] += 50 * 86400  # the clock jumps; the prune is due
    (logs / "b.jsonl").write_bytes(line("x1"))
    ing.refresh()
    assert len(ing.known) == 3
    now[0] = NOW + 3600  # the clock is put right; a resumed session copies m1 into a new file
    (logs / "resumed.jsonl").write_bytes(line("m1"))
    ing.refresh()
    assert ing.line_counts.get(("claude-code", "duplicate"), 0) == 1
    x1 = usd()  # the one new request, x1, at its list price
    assert sum(v[AGG_COST_PICO] for v in ing.aggregates.values()) == cost + int(x1 * 10**12)
    db.close()
