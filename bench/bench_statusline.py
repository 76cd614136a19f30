"""Start-up of `claude-budget-exporter statusline`, the command Claude Code runs on every status update.

Runs the installed command (and, for scale, a bare Python and the command's `--version`, which
imports the whole command line) one process at a time, with Claude Code's documented statusline
JSON on stdin, and prints the median and 90th percentile wall time. Not a timed test: it prints
figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bench_ingest import measure  # noqa: E402

SAMPLE = {
    "hook_event_name": "Status", "session_id": "abc123", "transcript_path": "/tmp/abc123.jsonl", "cwd": "/tmp",
    "model": {"id": "claude-opus-4-1", "display_name": "Opus"}, "version": "1.0.80",
    "cost": {"total_cost_usd": 0.01234, "total_duration_ms": 45000},
    "rate_limits": {"five_hour": {"used_percentage": 23.5, "resets_at": int(time.time()) + 8000},
                    "seven_day": {"used_percentage": 41.2, "resets_at": int(time.time()) + 300000}},
}


def run(cmd: list[str], runs: int, stdin: bytes) -> tuple[float, float]:
    """(median wall s, p90 wall s) of ``runs`` runs."""
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        feed = Path(tmp) / "in.json"
        feed.write_bytes(stdin)
        env = {**os.environ, "HOME": tmp}
        for _ in range(runs):
            # stdin from the file, through a shell that execs the command: every case pays the same for it
            r = measure(["sh", "-c", 'exec "$@" < "$0"', str(feed), *cmd], env)
            assert r.ok, r.stderr
            walls.append(r.wall)
    walls.sort()
    return statistics.median(walls), walls[int(0.9 * (len(walls) - 1))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args(argv)
    venv = REPO / ".venv" / "bin"
    command = str(venv / "claude-budget-exporter")
    python = str(venv / "python")
    payload = json.dumps(SAMPLE).encode()
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "statusline.jsonl")
        cases = [
            ("python -c pass (the floor)", [python, "-c", "pass"]),
            ("claude-budget-exporter statusline", [command, "statusline", "--out", out]),
            ("python -m exporter statusline", [python, "-m", "exporter", "statusline", "--out", out]),
            ("claude-budget-exporter --version", [command, "--version"]),
        ]
        print(f"{'':36s} {'median s':>9s} {'p90 s':>7s}   ({args.runs} runs each)")
        for name, cmd in cases:
            med, p90 = run(cmd, args.runs, payload)
            print(f"{name:36s} {med:9.3f} {p90:7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
