"""5-hour blocks: `report --blocks --json` beside `ccusage claude blocks --json --offline`, in the same run.

On two corpora of Claude Code transcripts, one process at a time:
  a. the benchmark corpus of bench_ingest.py (about 500 MB, 120k requests over 28 days: busy
     days, blocks back to back), reused from bench/out/ when it is there;
  b. a corpus with gaps: few requests over four weeks (gaps under, near and over 5 hours
     between them), plus hand-written sessions with requests a second either side of a
     block's 5-hour mark and of a 5-hour gap.
For each it runs `python -m exporter report --blocks --json` on a fresh state directory and
the ccusage native binary, and compares block by block: start, end, cost to the cent (at
most half a cent apart), input, output, cache read and cache write tokens, and requests
(ccusage's `entries`). ccusage's gap entries are left out, as ours has none.

Prints the figures side by side and writes them to bench/out/blocks.json. Not a timed test;
`--strict` turns a difference into exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from bench_ingest import CENT, OUT, Run, ccusage_path, get_corpus, measure, python  # noqa: E402

from tests.corpus import Features, generate  # noqa: E402

FIELDS = ("input", "output", "cache_read", "cache_write", "requests")


def ours(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["start"]: {"end": b["end"], "usd": Decimal(str(b["cost_usd"])), "input": b["input_tokens"],
                         "output": b["output_tokens"], "cache_read": b["cache_read_tokens"],
                         "cache_write": b["cache_write_tokens"], "requests": b["requests"]}
            for b in doc["blocks"]}


def _iso(text: str) -> str:
    """ccusage's 2026-11-01T22:00:00.000Z as ours: 2026-11-01T22:00:00Z."""
    return datetime.fromisoformat(text).astimezone(UTC).isoformat().replace("+00:00", "Z")


def theirs(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for b in doc["blocks"]:
        if b.get("isGap"):
            continue
        t = b["tokenCounts"]
        out[_iso(b["startTime"])] = {
            "end": _iso(b["endTime"]), "usd": Decimal(str(b["costUSD"])), "input": t["inputTokens"],
            "output": t["outputTokens"], "cache_read": t["cacheReadInputTokens"],
            "cache_write": t["cacheCreationInputTokens"], "requests": b["entries"]}
    return out


def synthetic_entries(root: Path) -> list[tuple[datetime, dict[str, int]]]:
    """The ``<synthetic>`` lines of a corpus (Claude Code's own turns, no API call), deduplicated as
    ccusage does: ccusage counts them as block entries with their tokens at $0, we skip them."""
    seen: dict[tuple[str, str], tuple[datetime, dict[str, int]]] = {}
    for path in (root / "projects").rglob("*.jsonl"):
        for raw in path.read_bytes().split(b"\n"):
            if b'"model":"<synthetic>"' not in raw:
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            msg = obj.get("message") or {}
            u = msg.get("usage") or {}
            tokens = {"input": u.get("input_tokens", 0), "output": u.get("output_tokens", 0),
                      "cache_read": u.get("cache_read_input_tokens", 0),
                      "cache_write": u.get("cache_creation_input_tokens", 0)}
            key = (str(msg.get("id")), str(obj.get("requestId")))
            old = seen.get(key)
            if old is None or sum(tokens.values()) > sum(old[1].values()):
                seen[key] = (datetime.fromisoformat(obj["timestamp"]), tokens)
    return list(seen.values())


def discount(blocks: dict[str, dict[str, Any]], synthetic: list[tuple[datetime, dict[str, int]]]) -> int:
    """ccusage's blocks without the synthetic entries (in place); how many were taken out."""
    spans = sorted((datetime.fromisoformat(start), datetime.fromisoformat(b["end"]), start)
                   for start, b in blocks.items())
    taken = 0
    for at, tokens in synthetic:
        for lo, hi, start in spans:
            if lo <= at < hi:
                b = blocks[start]
                for k, n in tokens.items():
                    b[k] -= n
                b["requests"] -= 1
                taken += 1
                break
    for start in [s for s, b in blocks.items() if b["requests"] == 0]:
        del blocks[start]  # a block of synthetic entries only
    return taken


def compare(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> list[str]:
    """Every difference, one line each (empty: the same blocks)."""
    problems = []
    for start in sorted(a.keys() | b.keys()):
        x, y = a.get(start), b.get(start)
        if x is None or y is None:
            problems.append(f"{start}: only in {'ccusage' if x is None else 'ours'}")
            continue
        if x["end"] != y["end"]:
            problems.append(f"{start}: end {x['end']} vs {y['end']}")
        if abs(x["usd"] - y["usd"]) > CENT:
            problems.append(f"{start}: ${x['usd']} vs ${y['usd']}")
        for f in FIELDS:
            if x[f] != y[f]:
                problems.append(f"{start}: {f} {x[f]} vs {y[f]}")
    return problems


# ----------------------------------------------------------------------------- the corpus with gaps


def _line(n: int, at: datetime, model: str, usage: tuple[int, int, int, int], session: str) -> str:
    inp, out, cr, cw = usage
    return json.dumps({
        "parentUuid": None, "isSidechain": False, "userType": "external", "cwd": "/home/dev/src/edges",
        "sessionId": session, "version": "2.0.30", "type": "assistant", "entrypoint": "cli",
        "uuid": f"edge-{session}-{n}", "requestId": f"req_edge_{session}_{n}",
        "timestamp": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "message": {"id": f"msg_edge_{session}_{n}", "type": "message", "role": "assistant", "model": model,
                    "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                    "usage": {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": cr,
                              "cache_creation_input_tokens": cw,
                              "cache_creation": {"ephemeral_5m_input_tokens": cw, "ephemeral_1h_input_tokens": 0},
                              "service_tier": "standard"}}}, separators=(",", ":"))


def edge_sessions(projects: Path, end: datetime) -> None:
    """Requests a second either side of the 5-hour marks: of a block's start (measured from the
    hour the block starts on) and of the gap since the last request."""
    s = datetime(end.year, end.month, end.day, tzinfo=UTC) - timedelta(days=3)
    base = s.replace(hour=9)
    times = [
        base + timedelta(minutes=17),                                  # block 09:00-14:00
        base + timedelta(hours=4, minutes=59, seconds=59),             # 13:59:59: still in it
        base + timedelta(hours=5, seconds=1),                          # 14:00:01: a new block at 14:00
        base + timedelta(hours=9, minutes=59),                         # 18:59: in that block
        base + timedelta(hours=10, minutes=30),                        # 19:30: 5 h after 14:00 is past: new block
        base + timedelta(hours=15, minutes=29, seconds=59),            # 4:59:59 after the last: a new block (19+5)
        base + timedelta(hours=20, minutes=30),                        # 5:00:01 after the last
        base + timedelta(days=1, hours=3, minutes=5),                  # a long gap
        base + timedelta(days=1, hours=3, minutes=6),
    ]
    folder = projects / "-home-dev-src-edges"
    folder.mkdir(parents=True, exist_ok=True)
    models = ("claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001", "claude-opus-4-5-20251101")
    lines = [_line(i, at, models[i % 3], (1000 + 37 * i, 2000 + 11 * i, 30_000 + i, 4000 * (i % 2)), "edges1")
             for i, at in enumerate(times)]
    (folder / "edges1.jsonl").write_text("\n".join(lines) + "\n")


def gap_corpus(seed: int) -> Path:
    root = OUT / f"corpus-blocks-gaps-s{seed}"
    done = root / "done"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    generate(root, files=30, requests=240, seed=seed, days=28, end=end,
             features=Features(long_context=False, api_errors=False))
    edge_sessions(root / "projects", end)
    done.write_text("")
    return root


# ----------------------------------------------------------------------------- main


def run_pair(name: str, root: Path, cc: str | None) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="bench-home-"))
    state = Path(tempfile.mkdtemp(prefix="bench-blocks-state-"))
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(root), "HOME": str(home), "TZ": "UTC", "NO_COLOR": "1"}
    env.pop("ANTHROPIC_ADMIN_API_KEY", None)
    try:
        mine = measure([python(), "-m", "exporter", "report", "--blocks", "--json", "--state-dir", str(state)], env)
        if not mine.ok:
            raise SystemExit(f"report --blocks failed: {mine.stderr[-600:]}")
        a = ours(json.loads(mine.stdout))
        result: dict[str, Any] = {"corpus": name, "ours": _summary(a, mine)}
        if cc is not None:
            other = measure([cc, "claude", "blocks", "--json", "--offline"], env)
            if not other.ok:
                raise SystemExit(f"ccusage failed: {other.stderr[-600:]}")
            b = theirs(json.loads(other.stdout))
            result["ccusage"] = _summary(b, other)
            result["differences_raw"] = compare(a, b)
            synthetic = synthetic_entries(root)
            result["synthetic_entries"] = discount(b, synthetic)
            result["ccusage_without_synthetic"] = _summary(b, other)
            result["differences"] = compare(a, b)
        return result
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def _summary(blocks: dict[str, dict[str, Any]], run: Run) -> dict[str, Any]:
    return {"blocks": len(blocks), "usd": str(sum((b["usd"] for b in blocks.values()), Decimal(0))),
            "requests": sum(b["requests"] for b in blocks.values()),
            "tokens": sum(b[f] for b in blocks.values() for f in FIELDS[:4]),
            "wall_s": round(run.wall, 2), "rss_mb": round(run.maxrss_mb, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=500)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--requests", type=int, default=120_000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-ccusage", action="store_true")
    ap.add_argument("--skip-big", action="store_true", help="only the corpus with gaps")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the blocks differ")
    args = ap.parse_args(argv)
    args.all_features, args.regenerate = False, False

    OUT.mkdir(parents=True, exist_ok=True)
    cc = None if args.skip_ccusage else ccusage_path()
    results = []
    corpora: list[tuple[str, Path]] = []
    if not args.skip_big:
        root, _exp, how = get_corpus(args)
        print(f"corpus  {root.name} ({how})")
        corpora.append(("benchmark", root))
    gaps = gap_corpus(args.seed + 6)
    print(f"corpus  {gaps.name}")
    corpora.append(("gaps", gaps))
    differ = False
    print(f"\n{'corpus':10s} {'tool':9s} {'blocks':>6s} {'requests':>9s} {'tokens':>14s} {'USD':>12s} "
          f"{'wall s':>7s} {'RSS MB':>7s}")
    for name, root in corpora:
        r = run_pair(name, root, cc)
        results.append(r)
        for tool, label in (("ours", "ours"), ("ccusage", "ccusage"), ("ccusage_without_synthetic", "ccusage-s")):
            if tool in r:
                s = r[tool]
                print(f"{name:10s} {label:9s} {s['blocks']:6d} {s['requests']:9,d} {s['tokens']:14,d} "
                      f"{Decimal(s['usd']):12,.4f} {s['wall_s']:7.2f} {s['rss_mb']:7.1f}")
        if "differences" in r:
            raw, diffs = r["differences_raw"], r["differences"]
            differ = differ or bool(diffs)
            print(f"{'':10s} as ccusage prints them: {len(raw)} differences (blocks holding <synthetic> entries); "
                  f"without its {r['synthetic_entries']} <synthetic> entries (ccusage-s): "
                  + ("the same blocks, to the cent" if not diffs else f"{len(diffs)} differences:"))
            for d in diffs[:20]:
                print(f"{'':12s}{d}")
    (OUT / "blocks.json").write_text(json.dumps(results, indent=2))
    return 1 if args.strict and differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
