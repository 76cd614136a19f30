"""Soak: the exporter under a steady stream of log lines, polls and scrapes, watched for leaks.

The exporter has no fake clock, so the soak is accelerated by rate, not by time: a new
transcript line every few milliseconds, a log refresh every 200 ms (75x the default 15 s),
an Admin API poll every second against the fake (300x the default 5 min) whose data grows
while it runs, and a scrape every second. Every ``--sample-every`` seconds it prints the
exporter's RSS, open file descriptors, threads, CPU time, state file sizes and scrape
latency; at the end it checks the served totals against what it wrote, exactly, and
says whether RSS was flat after warm-up and whether descriptors grew.

``--mode steady`` (the default) writes new requests during warm-up, then only copies of
earlier ones (as resumed sessions do): lines, parsing, dedup, commits, polls and scrapes
go on at the same rate while the dedup index stops growing, so any RSS growth is a leak.
``--mode growing`` writes a new request every turn to the end and reports the bytes of
RSS per new request (the dedup index holds every request for 45 days, by design).

    .venv/bin/python bench/soak.py --minutes 60                  # the full hour, steady
    .venv/bin/python bench/soak.py --minutes 5 --mode growing    # a quick look at growth

It stops by itself after ``--minutes``; Ctrl-C stops it early and still prints the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.config.model import FAST_POLL_ENV
from tests.conftest import free_port, parse_metrics
from tests.fake_admin_api import FakeAdminApi

KEY = "sk-ant-admin01-soak-key-0123456789abcdef"
WS = "wrkspc_01Soak"
MODELS = ("claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001", "claude-opus-4-5-20251101")
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")


class Writer(threading.Thread):
    """Writes turns as Claude Code does: a user line, a streamed placeholder, two content-block copies."""

    def __init__(self, root: Path, interval: float, lines_per_file: int, seed: int) -> None:
        super().__init__(name="writer", daemon=True)
        self.repeat = threading.Event()  # set: every turn copies an earlier request (a resumed session)
        self._recent: list[tuple[bytes, ...]] = []
        self.root, self.interval, self.lines_per_file = root, interval, lines_per_file
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.lines = 0
        self.requests = 0
        self.files = 0
        self.truth = dict.fromkeys(TOKEN_TYPES, 0)
        self._f = None
        self._in_file = 0

    def _open_next(self) -> None:
        if self._f is not None:
            self._f.close()
        d = self.root / "projects" / f"-home-soak-p{self.files % 5}"
        d.mkdir(parents=True, exist_ok=True)
        self._f = open(d / f"session-{self.files:05d}.jsonl", "ab")  # noqa: SIM115 - closed on rotation
        self.files += 1
        self._in_file = 0

    def _turn(self) -> list[bytes]:
        if self.repeat.is_set() and self._recent:
            return list(self.rng.choice(self._recent))  # the same ids and tokens: all duplicates
        n = self.requests
        self.requests += 1
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        r = self.rng
        u = {"input": r.randint(1, 5000), "output": r.randint(10, 4000), "cache_read": r.randint(0, 200_000),
             "cache_write_5m": r.randint(0, 20_000), "cache_write_1h": 0}
        for k in TOKEN_TYPES:
            self.truth[k] += u[k]
        model = MODELS[n % len(MODELS)]

        def assistant(out: int) -> bytes:
            obj = {"type": "assistant", "timestamp": ts, "requestId": f"req_soak_{n}", "entrypoint": "cli",
                   "sessionId": f"s{self.files}", "isSidechain": False,
                   "message": {"id": f"msg_soak_{n}", "model": model, "role": "assistant",
                               "content": [{"type": "text", "text": "ok"}],
                               "usage": {"input_tokens": u["input"], "output_tokens": out,
                                         "cache_read_input_tokens": u["cache_read"],
                                         "cache_creation_input_tokens": u["cache_write_5m"],
                                         "cache_creation": {"ephemeral_5m_input_tokens": u["cache_write_5m"],
                                                            "ephemeral_1h_input_tokens": 0}}}}
            return json.dumps(obj).encode() + b"\n"

        user = json.dumps({"type": "user", "timestamp": ts, "message": {"role": "user", "content": "go on"}})
        turn = [user.encode() + b"\n", assistant(1), assistant(u["output"]), assistant(u["output"])]
        self._recent = [*self._recent[-999:], tuple(turn)]
        return turn

    def run(self) -> None:
        self._open_next()
        pending: list[bytes] = []
        next_at = time.monotonic()
        while not self.stop.is_set():
            if not pending:
                if self._in_file >= self.lines_per_file:
                    self._open_next()
                pending = self._turn()
            line = pending.pop(0)
            self._f.write(line)
            self._f.flush()
            self.lines += 1
            self._in_file += 1
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1.0:
                next_at = time.monotonic()  # fell behind (a loaded machine): do not burst
        # finish the turn in progress so every request has its full copy
        for line in pending:
            self._f.write(line)
            self.lines += 1
        self._f.close()


class Scraper(threading.Thread):
    def __init__(self, url: str, interval: float) -> None:
        super().__init__(name="scraper", daemon=True)
        self.url, self.interval = url, interval
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.failures = 0
        self.last = ""
        self.lock = threading.Lock()

    def run(self) -> None:
        n = 0
        while not self.stop.wait(self.interval):
            n += 1
            paths = ["/metrics"] + (["/", "/breaker/team", "/healthz"] if n % 10 == 0 else [])
            for p in paths:
                t = time.perf_counter()
                try:
                    with urllib.request.urlopen(self.url + p, timeout=10) as r:
                        body = r.read().decode()
                except OSError as exc:
                    if getattr(exc, "code", None) not in (503,):  # an open breaker answers 503
                        self.failures += 1
                    continue
                if p == "/metrics":
                    with self.lock:
                        self.latencies.append(time.perf_counter() - t)
                        self.last = body

    def take(self) -> tuple[list[float], str]:
        with self.lock:
            lat, self.latencies = self.latencies, []
            return lat, self.last


def proc_stats(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = {line.split(":")[0]: line.split(":")[1].strip() for line in status.splitlines() if ":" in line}
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "hwm_mb": int(fields["VmHWM"].split()[0]) / 1024,
            "threads": int(fields["Threads"]), "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "cpu_s": (int(stat[11]) + int(stat[12])) / tick}


def counted(samples) -> int:
    return int(sum(v for (n, lab), v in samples.items()
                   if n == "claude_log_lines_total" and dict(lab).get("result") == "counted"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="how long to run (real minutes) [60]")
    ap.add_argument("--line-ms", type=float, default=4.0, help="a new log line every this many ms [4]")
    ap.add_argument("--refresh", default="200ms", help="exporter refresh_interval [200ms]")
    ap.add_argument("--poll", default="1s", help="Admin API poll_interval against the fake [1s]")
    ap.add_argument("--scrape-every", type=float, default=1.0, help="seconds between scrapes [1]")
    ap.add_argument("--sample-every", type=float, default=30.0, help="seconds between printed samples [30]")
    ap.add_argument("--warmup", type=float, default=None, help="seconds of warm-up [10%% of the run, >= 60]")
    ap.add_argument("--lines-per-file", type=int, default=20_000, help="start a new session file after N lines")
    ap.add_argument("--mode", choices=["steady", "growing"], default="steady",
                    help="steady: after warm-up every turn repeats an earlier request (lines, parsing, dedup and "
                         "commits go on; the dedup index stops growing, so RSS must be flat); growing: every turn "
                         "is a new request to the end [steady]")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    ap.add_argument("--strict", action="store_true", help="exit 1 if totals differ or descriptors grew")
    args = ap.parse_args()

    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else max(60.0, duration * 0.1)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    logs, state = work / "logs", work / "state"
    logs.mkdir()
    now = datetime.now(UTC)
    fake = FakeAdminApi(key=KEY, now=now).start()
    rng = random.Random(args.seed)
    billed_cents = [0]

    def add_spend(at: datetime) -> None:
        cents = rng.randint(1, 5000)
        fake.add_spend(at, str(cents), workspace_id=WS, model=rng.choice(MODELS), token_type="output_tokens",
                       tokens=cents * 10)
        billed_cents[0] += cents

    for back in range(5, 0, -1):
        for h in range(0, 24, 6):
            add_spend(now.replace(hour=h, minute=0, second=0, microsecond=0) - timedelta(days=back))
    stop_api = threading.Event()

    def api_clock() -> None:  # the fake's clock follows the real one; spend keeps arriving
        i = 0
        while not stop_api.wait(1.0):
            t = datetime.now(UTC)
            fake.set_now(t)
            i += 1
            if i % 5 == 0:
                add_spend(t - timedelta(seconds=1))

    threading.Thread(target=api_clock, daemon=True).start()
    cfg = work / "config.yaml"
    cfg.write_text(f"""refresh_interval: {args.refresh}
admin_api: {{key_env: SOAK_ADMIN_KEY, base_url: "{fake.url}", poll_interval: {args.poll}}}
sources:
  - {{name: claude-code, kind: claude_code, paths: ["{logs / 'projects'}"]}}
pools:
  - name: team
    credit_usd: 100000
    match: {{workspaces: [{WS}], sources: [claude-code]}}
""")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_ADMIN_API_KEY", "CLAUDE_CONFIG_DIR")}
    env.update({"SOAK_ADMIN_KEY": KEY, FAST_POLL_ENV: "1", "HOME": str(work)})
    log_path = work / "exporter.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "--log-format", "json", "serve", "--config",
                                 str(cfg), "--state-dir", str(state), "--listen", f"127.0.0.1:{port}"],
                                stdout=log, stderr=log, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    writer = Writer(logs, args.line_ms / 1000, args.lines_per_file, args.seed)
    scraper = Scraper(url, args.scrape_every)
    writer.start()
    scraper.start()

    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    print(f"soak ({args.mode}): {args.minutes:g} real minutes, a line every {args.line_ms:g} ms (4 lines per request), "
          f"refresh {args.refresh}, poll {args.poll}, scrape every {args.scrape_every:g}s; warm-up {warmup:.0f}s; "
          f"exporter pid {proc.pid}")
    print(f"{'t(s)':>6} {'rss MB':>7} {'hwm MB':>7} {'fds':>4} {'thr':>4} {'cpu s':>7} {'lines':>9} "
          f"{'counted':>8} {'db MB':>6} {'wal MB':>6} {'p50 ms':>7} {'p99 ms':>7}")
    rows: list[dict[str, float]] = []
    started = time.monotonic()
    next_sample = started + min(args.sample_every, 10.0)
    while not stopping.is_set():
        t = time.monotonic() - started
        if proc.poll() is not None:
            print(f"exporter exited with {proc.returncode}", file=sys.stderr)
            break
        if not writer.is_alive():
            print("the log writer stopped: see the traceback above", file=sys.stderr)
            break
        if args.mode == "steady" and t >= warmup and not writer.repeat.is_set():
            writer.repeat.set()
        if time.monotonic() >= next_sample or t >= duration:
            st = proc_stats(proc.pid)
            lat, body = scraper.take()
            s = parse_metrics(body) if body else {}
            db = state / "state.sqlite3"
            row = {"t": t, **st, "lines": writer.lines, "counted": counted(s),
                   "db_mb": db.stat().st_size / 2**20 if db.exists() else 0.0,
                   "wal_mb": os.path.getsize(f"{db}-wal") / 2**20 if os.path.exists(f"{db}-wal") else 0.0,
                   "p50": statistics.median(lat) * 1000 if lat else float("nan"),
                   "p99": sorted(lat)[int(0.99 * (len(lat) - 1))] * 1000 if lat else float("nan")}
            rows.append(row)
            print(f"{t:6.0f} {row['rss_mb']:7.1f} {row['hwm_mb']:7.1f} {row['fds']:4.0f} {row['threads']:4.0f} "
                  f"{row['cpu_s']:7.1f} {row['lines']:9d} {row['counted']:8d} {row['db_mb']:6.1f} "
                  f"{row['wal_mb']:6.1f} {row['p50']:7.1f} {row['p99']:7.1f}", flush=True)
            next_sample += args.sample_every
            if t >= duration:
                break
        time.sleep(0.2)

    writer.stop.set()
    writer.join()
    # let the exporter read the last lines and poll once more, then check its totals exactly
    ok_tokens = ok_billed = False
    served: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        s = parse_metrics(urllib.request.urlopen(url + "/metrics", timeout=10).read().decode())
        served = dict.fromkeys(TOKEN_TYPES, 0)
        for (n, lab), v in s.items():
            if n == "claude_estimated_tokens_total":
                served[dict(lab)["token_type"]] += int(v)
        ok_tokens = served == writer.truth
        period = sum(v for (n, lab), v in s.items()
                     if n == "claude_billed_cost_usd" and dict(lab)["window"] == "period")
        month_start = datetime.now(UTC).date().replace(day=1)
        want = sum(e.amount_cents for e in fake.spend() if e.at.date() >= month_start and e.at < fake.now) / 100
        ok_billed = round(period, 6) == round(float(want), 6)
        if ok_tokens and ok_billed:
            break
        time.sleep(0.5)
    final = proc_stats(proc.pid) if proc.poll() is None else None
    scraper.stop.set()
    stop_api.set()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    fake.stop()

    errors = sum(1 for line in log_path.read_text(errors="replace").splitlines() if '"level": "error"' in line)
    after = [r for r in rows if r["t"] >= warmup] or rows[-1:]
    first, last = after[0], rows[-1]
    req_delta = last["counted"] - first["counted"]
    rss_delta = last["rss_mb"] - first["rss_mb"]
    span_h = max(1e-9, (last["t"] - first["t"]) / 3600)
    fds = [r["fds"] for r in after]
    threads = [r["threads"] for r in after]
    p99s = [r["p99"] for r in rows if r["p99"] == r["p99"]]
    print()
    print(f"ran {rows[-1]['t'] / 60:.1f} min: {writer.lines:,} lines, {writer.requests:,} requests, "
          f"{writer.files} session files; {len(rows)} samples; exporter exit code {code}; {errors} error log lines")
    print(f"RSS after warm-up ({first['t']:.0f}s): {first['rss_mb']:.1f} MB -> {last['rss_mb']:.1f} MB at end "
          f"({rss_delta:+.1f} MB, {rss_delta / span_h:+.1f} MB/h) while {req_delta:,} new requests were indexed"
          + (f": {rss_delta * 2**20 / req_delta:.0f} bytes per new request (the dedup index keeps every request "
             f"for 45 days)" if req_delta > 0 else " (only duplicates after warm-up: growth here would be a leak)"))
    print(f"peak RSS {max(r['hwm_mb'] for r in rows):.1f} MB; fds after warm-up min {min(fds):.0f} max {max(fds):.0f} "
          f"(end {fds[-1]:.0f}); threads min {min(threads):.0f} max {max(threads):.0f}; "
          f"CPU {last['cpu_s']:.0f} s in {last['t']:.0f} s; scrape p99 worst sample "
          f"{max(p99s) if p99s else float('nan'):.1f} ms; {scraper.failures} failed scrapes")
    print(f"totals: estimated tokens {'equal' if ok_tokens else 'DIFFER from'} what was written"
          f"{'' if ok_tokens else f' ({served} vs {writer.truth})'}; billed period "
          f"{'equals' if ok_billed else 'DIFFERS from'} the fake's data")
    if final:
        print(f"final RSS {final['rss_mb']:.1f} MB, fds {final['fds']:.0f}")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}")
    fd_grew = max(fds) > min(fds) + 2
    if args.strict and (not ok_tokens or not ok_billed or fd_grew or scraper.failures):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
