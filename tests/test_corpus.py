"""The corpus generator's truth must be true: checked against a naive re-read of its files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.corpus import (
    LONG_CONTEXT_THRESHOLD,
    Expected,
    Features,
    append,
    complete_pending,
    generate,
    price_request,
    session_files,
)

END = datetime(2026, 10, 10, 6, 30, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent


def naive_read(root: Path) -> dict:
    """Read every file the slow, obvious way: dedup on (message.id, requestId) keeping the max."""
    best: dict[tuple[str, str], tuple[int, dict]] = {}
    skipped: dict[str, int] = defaultdict(int)
    for path in session_files(root):
        data = path.read_bytes()
        lines = data.split(b"\n")
        if lines[-1]:
            skipped["partial_pending"] += 1
        for raw in lines[:-1]:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                skipped["invalid_utf8"] += 1
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                skipped["malformed_json"] += 1
                continue
            if obj.get("type") != "assistant":
                continue
            if obj.get("isApiErrorMessage"):
                skipped["api_error"] += 1
                continue
            msg = obj["message"]
            if msg["model"] == "<synthetic>":
                skipped["synthetic"] += 1
                continue
            u = msg["usage"]
            cc = u["cache_creation"]
            assert u["cache_creation_input_tokens"] == cc["ephemeral_5m_input_tokens"] + cc["ephemeral_1h_input_tokens"]
            tokens = (u["input_tokens"], u["output_tokens"], u["cache_read_input_tokens"],
                      cc["ephemeral_5m_input_tokens"], cc["ephemeral_1h_input_tokens"])
            rec = {"day": obj["timestamp"][:10], "model": msg["model"], "tokens": tokens,
                   "entrypoint": obj["entrypoint"]}
            key = (msg["id"], obj["requestId"])
            if key not in best or sum(tokens) > best[key][0]:
                best[key] = (sum(tokens), rec)
    days: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(lambda: [0] * 6 + [Decimal(0)]))
    for _, rec in best.values():
        row = days[rec["day"]][rec["model"]]
        row[0] += 1
        for i, n in enumerate(rec["tokens"]):
            row[1 + i] += n
        row[6] += price_request(rec["model"], *rec["tokens"])
    return {"days": days, "skipped": dict(skipped), "requests": [r for _, r in best.values()]}


def assert_matches(exp: Expected, naive: dict) -> None:
    got = {(d, m): (a.requests, a.input, a.output, a.cache_read, a.cache_write_5m, a.cache_write_1h, a.cost_usd)
           for d, models in exp.days.items() for m, a in models.items() if a.requests}
    want = {(d, m): tuple(row) for d, models in naive["days"].items() for m, row in models.items()}
    assert got == want
    assert {k: v for k, v in exp.skipped.items() if v} == naive["skipped"]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Expected]:
    root = tmp_path_factory.mktemp("corpus")
    return root, generate(root, files=30, requests=900, seed=7, days=4, end=END)


def test_expected_equals_a_naive_reread(small: tuple[Path, Expected]) -> None:
    root, exp = small
    naive = naive_read(root)
    assert_matches(exp, naive)
    assert exp.totals().requests == 900 - len([p for p in exp.pending if p.counted is None])
    # every oddity is present, so a reader that fails to skip one shows it
    assert all(exp.skipped[r] >= 1 for r in ("malformed_json", "invalid_utf8", "api_error", "synthetic",
                                             "partial_pending"))


def test_layout_has_subagents_resumes_and_sidechains(small: tuple[Path, Expected]) -> None:
    root, exp = small
    files = session_files(root)
    assert len(files) == exp.files == 30
    subs = [p for p in files if p.parent.name == "subagents"]
    assert subs and all(p.name.startswith("agent-") for p in subs)
    assert all(p.parent.parent.parent.parent == root / "projects" for p in subs)
    # a resumed session repeats lines of an earlier file verbatim
    seen: dict[bytes, Path] = {}
    repeated = 0
    for p in files:
        for line in p.read_bytes().split(b"\n"):
            if b'"type":"assistant"' in line:
                if line in seen and seen[line] != p:
                    repeated += 1
                seen.setdefault(line, p)
    assert repeated > 0
    text = b"".join(p.read_bytes() for p in files)
    assert b'"isSidechain":true' in text
    assert b'"ephemeral_1h_input_tokens":0' in text
    assert exp.by_model()["claude-sonnet-4-5-20250929"].cache_write_1h > 0
    for ep in (b"cli", b"sdk-cli", b"claude-vscode", b"sdk-py"):
        assert b'"entrypoint":"' + ep + b'"' in text


def test_placeholder_copies_are_smaller_and_come_first(small: tuple[Path, Expected]) -> None:
    root, _ = small
    smaller = 0
    for p in session_files(root):
        copies: dict[tuple[str, str], list[int]] = defaultdict(list)
        for raw in p.read_bytes().split(b"\n"):
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if obj.get("type") == "assistant" and "requestId" in obj:
                u = obj["message"]["usage"]
                copies[(obj["message"]["id"], obj["requestId"])].append(u["output_tokens"])
        for outs in copies.values():
            if len(outs) > 1:
                assert outs[0] < max(outs), "the first copy must be the placeholder"
                assert all(o == max(outs) for o in outs[1:])
                smaller += 1
    assert smaller > 50


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", files=8, requests=120, seed=11, days=3, end=END)
    b = generate(tmp_path / "b", files=8, requests=120, seed=11, days=3, end=END)
    c = generate(tmp_path / "c", files=8, requests=120, seed=12, days=3, end=END)
    assert a.to_json() == b.to_json()
    fa, fb = session_files(tmp_path / "a"), session_files(tmp_path / "b")
    assert [p.relative_to(tmp_path / "a") for p in fa] == [p.relative_to(tmp_path / "b") for p in fb]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(fa, fb, strict=True))
    assert a.to_json() != c.to_json()


def test_long_context_is_priced_at_the_premium_and_can_be_switched_off(tmp_path: Path) -> None:
    on = generate(tmp_path / "on", files=10, requests=1500, seed=5, days=2, end=END)
    assert on.long_context_requests > 0
    lc = [r for r in naive_read(tmp_path / "on")["requests"]
          if r["model"].startswith("claude-sonnet-4-5")
          and sum(r["tokens"]) - r["tokens"][1] > LONG_CONTEXT_THRESHOLD]
    assert len(lc) == on.long_context_requests
    inp, out, cr, cw5, cw1h = lc[0]["tokens"]
    premium = (inp * 6 + out * Decimal("22.5") + cr * Decimal("0.6") + cw5 * Decimal("7.5") + cw1h * 12) / 10**6
    assert price_request(lc[0]["model"], *lc[0]["tokens"]) == premium

    off = generate(tmp_path / "off", files=10, requests=1500, seed=5, days=2, end=END, long_context=False)
    assert off.long_context_requests == 0
    assert off.max_total_input <= LONG_CONTEXT_THRESHOLD


def test_all_features_off_is_a_plain_corpus(tmp_path: Path) -> None:
    exp = generate(tmp_path, files=6, requests=60, seed=2, days=2, end=END, features=Features.none())
    assert not any(exp.skipped.values())
    assert exp.duplicate_lines == 0 and not exp.pending
    assert_matches(exp, naive_read(tmp_path))


def test_append_and_complete_pending_add_exactly_their_truth(tmp_path: Path) -> None:
    exp = generate(tmp_path, files=12, requests=300, seed=9, days=2, end=END)
    size = sum(p.stat().st_size for p in session_files(tmp_path))
    added = append(tmp_path, size_mb=0.25, seed=9, at=END, files=5)
    grown = sum(p.stat().st_size for p in session_files(tmp_path)) - size
    assert 0.15 * 2**20 < grown < 0.4 * 2**20 and grown == added.bytes
    assert added.totals().requests > 30
    exp.merge(added)
    assert_matches(exp, naive_read(tmp_path))

    assert exp.pending
    exp.merge(complete_pending(tmp_path, exp))
    assert exp.skipped["partial_pending"] == 0
    assert_matches(exp, naive_read(tmp_path))
    assert all(p.read_bytes().endswith(b"\n") for p in session_files(tmp_path))


def test_size_target_and_json_round_trip(tmp_path: Path) -> None:
    exp = generate(tmp_path, files=20, requests=400, seed=4, days=3, end=END, size_mb=3)
    assert 2.4 * 2**20 < exp.bytes < 3.6 * 2**20
    assert Expected.from_json(json.loads(json.dumps(exp.to_json()))).to_json() == exp.to_json()


def test_command_line_prints_the_expected_totals(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tests.corpus", "--out", str(tmp_path / "c"), "--files", "5", "--requests", "50",
         "--seed", "3", "--days", "2", "--end", "2026-10-10T06:30:00Z", "--no-long-context"],
        cwd=REPO, capture_output=True, check=True, text=True)
    printed = json.loads(out.stdout)
    again = generate(tmp_path / "d", files=5, requests=50, seed=3, days=2, end=END, long_context=False)
    assert printed == json.loads(json.dumps(again.to_json()))
