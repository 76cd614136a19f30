"""Ingest benchmark: the exporter's cold `report --json` beside ccusage, totals, and a live refresh.

On one generated corpus of Claude Code transcripts (about 500 MB, 3,000 files, 120k
unique requests; cached under bench/out/) it runs, one process at a time:

  a. `python -m exporter report --json` on a fresh state directory: wall time, peak RSS;
  b. `ccusage claude daily --json --offline` (the native binary) the same way;
  c. the ratios against the targets (wall <= 0.75x, peak RSS <= 0.5x ccusage's);
  d. totals to the cent: report vs ccusage, report vs the generator's own truth,
     ccusage vs that truth;
  e. `serve` on the same corpus: after its first ingest, 1 MB of new lines is appended
     to live session files and the work of the refresh that picks them up is read from
     the `claude_refresh_duration_seconds` gauge.

The corpus leaves out requests past 200k input tokens (ccusage prices only the tokens of
each type past 200k at the premium, Anthropic prices every token of the request) and API
error lines that carry tokens (ccusage counts them); both tools agree on everything else,
so the totals must match to the cent. `--all-features` puts them back (then only the
comparison with the generator's truth is meaningful).

Prints a table of figures and writes them as JSON beside the corpus. Not a timed test:
it measures and reports; `--strict` turns a missed target into exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from tests.corpus import Expected, Features, append, generate, session_files  # noqa: E402

OUT = HERE / "out"
WALL_TARGET = 0.75
RSS_TARGET = 0.5
REFRESH_TARGET = 0.050
CENT = Decimal("0.005")  # two figures equal "to the cent" when they differ by at most half a cent


# ----------------------------------------------------------------------------- processes


@dataclass
class Run:
    """One measured subprocess."""

    cmd: list[str]
    rc: int
    wall: float
    cpu: float  # user + system seconds: steadier than wall time on a busy machine
    maxrss_mb: float
    stdout: bytes
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def measure(cmd: list[str], env: dict[str, str], cwd: Path = REPO, timeout: float = 1800) -> Run:
    """Run one process alone; wall time and peak RSS from wait4 (that child only)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(cmd, p.returncode, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, out.read(),
                   err.read().decode("utf-8", "replace"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


# ----------------------------------------------------------------------------- corpus


def corpus_dir(args: argparse.Namespace) -> Path:
    tag = "all" if args.all_features else "cmp"
    return OUT / f"corpus-{args.files}f-{args.requests}r-{args.size_mb:g}mb-s{args.seed}-{tag}"


def bench_features(all_features: bool) -> Features:
    if all_features:
        return Features()
    return Features(long_context=False, api_errors=False)


def get_corpus(args: argparse.Namespace) -> tuple[Path, Expected, str]:
    """The cached corpus when it is complete and clean, else a freshly generated one."""
    root = corpus_dir(args)
    done, dirty = root / "expected.json", root / "DIRTY"
    if done.exists() and not dirty.exists() and not args.regenerate:
        return root, Expected.from_json(json.loads(done.read_text())), "reused"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    t0 = time.perf_counter()
    exp = generate(root, files=args.files, requests=args.requests, seed=args.seed, days=args.days, end=end,
                   size_mb=args.size_mb, features=bench_features(args.all_features))
    took = time.perf_counter() - t0
    done.write_text(json.dumps(exp.to_json()))
    return root, exp, f"generated in {took:.1f}s"


# ----------------------------------------------------------------------------- totals


def family(model: str) -> str:
    """claude-sonnet-4-5-20250929 -> claude-sonnet-4-5: the tools may name models either way."""
    return re.sub(r"-\d{8}$", "", model)


@dataclass
class Totals:
    """Per (day, model family): tokens and USD, as one tool reported them."""

    rows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    day_usd: dict[str, Decimal] = field(default_factory=dict)
    total_usd: Decimal = Decimal(0)


def totals_from_expected(exp: Expected) -> Totals:
    t = Totals()
    for day, models in exp.days.items():
        for model, a in models.items():
            if not a.requests:
                continue
            t.rows[(day, family(model))] = {
                "requests": a.requests, "input": a.input, "output": a.output, "cache_read": a.cache_read,
                "cache_write": a.cache_write_5m + a.cache_write_1h, "cache_write_5m": a.cache_write_5m,
                "cache_write_1h": a.cache_write_1h, "usd": a.cost_usd}
            t.day_usd[day] = t.day_usd.get(day, Decimal(0)) + a.cost_usd
    t.total_usd = sum(t.day_usd.values(), Decimal(0))
    return t


def _dec(x: Any) -> Decimal:
    return Decimal(str(x)) if x is not None else Decimal(0)


def totals_from_report(doc: dict[str, Any]) -> Totals:
    """`report --json`: {"days": [{"date", "estimated_usd", "models": [{...}]}], "totals": {...}}."""
    t = Totals()
    for d in doc.get("days", []):
        day = d["date"]
        for m in d.get("models", []):
            t.rows[(day, family(m["model"]))] = {
                "requests": m.get("requests"), "input": m.get("input_tokens"), "output": m.get("output_tokens"),
                "cache_read": m.get("cache_read_tokens"),
                "cache_write": (m.get("cache_write_5m_tokens") or 0) + (m.get("cache_write_1h_tokens") or 0),
                "cache_write_5m": m.get("cache_write_5m_tokens"), "cache_write_1h": m.get("cache_write_1h_tokens"),
                "usd": _dec(m.get("estimated_usd"))}
        t.day_usd[day] = _dec(d.get("estimated_usd"))
    tot = doc.get("totals", {})
    t.total_usd = _dec(tot.get("estimated_usd")) if "estimated_usd" in tot else sum(t.day_usd.values(), Decimal(0))
    return t


def totals_from_ccusage(doc: dict[str, Any]) -> Totals:
    """ccusage daily --json: {"daily": [{"date", "totalCost", "modelBreakdowns": [...]}], "totals": {...}}.

    ccusage has no request counts and one cacheCreationTokens (5m + 1h); its breakdowns leave
    out `<synthetic>` (whose tokens it adds to the day's token sums at $0).
    """
    t = Totals()
    for d in doc.get("daily", []):
        day = d["date"]
        for m in d.get("modelBreakdowns", []):
            t.rows[(day, family(m["modelName"]))] = {
                "requests": None, "input": m["inputTokens"], "output": m["outputTokens"],
                "cache_read": m["cacheReadTokens"], "cache_write": m["cacheCreationTokens"],
                "cache_write_5m": None, "cache_write_1h": None, "usd": _dec(m["cost"])}
        t.day_usd[day] = _dec(d["totalCost"])
    t.total_usd = _dec(doc.get("totals", {}).get("totalCost"))
    return t


@dataclass
class Comparison:
    name: str
    ok: bool
    total_a: Decimal
    total_b: Decimal
    max_day_diff: Decimal
    problems: list[str]


def compare(name: str, a: Totals, b: Totals) -> Comparison:
    """Same days, same models, same tokens (where both report them), USD within half a cent."""
    problems: list[str] = []
    for key in sorted(set(a.rows) | set(b.rows)):
        ra, rb = a.rows.get(key), b.rows.get(key)
        if ra is None or rb is None:
            problems.append(f"{key[0]} {key[1]}: only in {'the first' if rb is None else 'the second'}")
            continue
        for f in ("requests", "input", "output", "cache_read", "cache_write", "cache_write_5m", "cache_write_1h"):
            if ra[f] is not None and rb[f] is not None and ra[f] != rb[f]:
                problems.append(f"{key[0]} {key[1]} {f}: {ra[f]} != {rb[f]}")
        if abs(ra["usd"] - rb["usd"]) > CENT:
            problems.append(f"{key[0]} {key[1]} usd: {ra['usd']:.4f} != {rb['usd']:.4f}")
    max_diff = Decimal(0)
    for day in sorted(set(a.day_usd) | set(b.day_usd)):
        diff = abs(a.day_usd.get(day, Decimal(0)) - b.day_usd.get(day, Decimal(0)))
        max_diff = max(max_diff, diff)
        if diff > CENT:
            problems.append(f"{day} day usd: {a.day_usd.get(day)} != {b.day_usd.get(day)}")
    if abs(a.total_usd - b.total_usd) > CENT:
        problems.append(f"total usd: {a.total_usd:.4f} != {b.total_usd:.4f}")
    return Comparison(name, not problems, a.total_usd, b.total_usd, max_diff, problems)


# ----------------------------------------------------------------------------- metrics


Scrape = dict[str, list[tuple[str, float]]]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def scrape(port: int) -> Scrape | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    out: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            try:
                out.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
            except ValueError:
                pass
    return out


def msum(metrics: Scrape, name: str) -> float | None:
    samples = metrics.get(name)
    return None if samples is None else sum(v for _, v in samples)


def refresh_work(metrics: Scrape) -> float | None:
    """The last refresh's work: the label-free gauge, or the sum over its phases."""
    samples = metrics.get("claude_refresh_duration_seconds")
    if not samples:
        return None
    plain = [v for labels, v in samples if not labels]
    return plain[0] if plain else sum(v for _, v in samples)


@dataclass
class Incremental:
    ok: bool
    note: str
    ingest_seconds: float | None = None
    lines_seen: float | None = None
    serve_rss_mb: float | None = None
    appended_bytes: int = 0
    appended_lines: int = 0
    appended_requests: int = 0
    refreshes: list[float] = field(default_factory=list)
    visible_after: float | None = None
    usd_after: Decimal | None = None
    usd_expected: Decimal | None = None


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _wait_stable(port: int, proc: subprocess.Popen[bytes], want_lines: float, timeout: float,
                 interval: float = 0.02, settle: float = 5.0) -> tuple[Scrape | None, list[tuple[float, float]]]:
    """Poll /metrics until claude_log_lines_total reaches want_lines and holds still for a second
    (or, should the exporter count lines another way, holds still above 0 for ``settle`` seconds).

    Returns the last scrape, and (lines, refresh work) of every scrape where the line count
    moved: the gauge read with a new line count is the work of the refresh that read them.
    """
    deadline = time.monotonic() + timeout
    moves: list[tuple[float, float]] = []
    last_lines: float | None = None
    still_since = time.monotonic()
    metrics = None
    while time.monotonic() < deadline and proc.poll() is None:
        m = scrape(port)
        if m is not None:
            metrics = m
            lines = msum(m, "claude_log_lines_total")
            if lines is not None and lines != last_lines:
                work = refresh_work(m)
                moves.append((lines, work if work is not None else float("nan")))
                last_lines, still_since = lines, time.monotonic()
            elif lines is not None and lines > 0:
                still = time.monotonic() - still_since
                if (lines >= want_lines and still > 1.0) or still > settle:
                    return metrics, moves
        time.sleep(interval)
    return metrics, moves


def run_incremental(root: Path, exp: Expected, env: dict[str, str], args: argparse.Namespace) -> Incremental:
    state = Path(tempfile.mkdtemp(prefix="bench-serve-state-"))
    port = free_port()
    cmd = [python(), "-m", "exporter", "serve", "--listen", f"127.0.0.1:{port}", "--state-dir", str(state)]
    log = open(state / "serve.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    dirty = root / "DIRTY"
    sizes: dict[Path, int] = {}
    try:
        t0 = time.monotonic()
        want = exp.lines - exp.skipped.get("partial_pending", 0)
        metrics, _ = _wait_stable(port, proc, want, timeout=args.serve_timeout, interval=0.25)
        if proc.poll() is not None:
            return Incremental(False, f"serve exited with {proc.returncode}: {_tail(state / 'serve.log')}")
        if metrics is None or msum(metrics, "claude_log_lines_total") is None:
            return Incremental(False, "serve never showed claude_log_lines_total on /metrics")
        res = Incremental(True, "", ingest_seconds=time.monotonic() - t0,
                          lines_seen=msum(metrics, "claude_log_lines_total"), serve_rss_mb=_rss_mb(proc.pid))
        if res.lines_seen is not None and res.lines_seen < want:
            res.note = f"first ingest: {res.lines_seen:.0f} of {want} lines within {args.serve_timeout:.0f}s"
        before_lines = res.lines_seen or 0.0

        # append ~1 MB to live sessions; remember sizes to put the cached corpus back afterwards
        dirty.write_text("appended lines not yet removed\n")
        sizes = {p: p.stat().st_size for p in session_files(root)}
        time.sleep(1.0)  # let any refresh in flight finish, so the append lands in a fresh one
        t_append = time.monotonic()
        added = append(root, size_mb=args.append_mb, seed=args.seed + 1, files=20)
        res.appended_bytes, res.appended_lines = added.bytes, added.lines
        res.appended_requests = added.totals().requests
        # serve refreshes on its own interval (refresh_interval, 15s by default): wait it out
        metrics, moves = _wait_stable(port, proc, before_lines + added.lines, timeout=args.append_timeout,
                                      settle=args.append_timeout)
        if metrics is not None:
            after = msum(metrics, "claude_log_lines_total") or 0
            if after >= before_lines + added.lines:
                res.visible_after = time.monotonic() - t_append
            else:
                res.ok = False
                res.note = f"serve saw {after - before_lines:.0f} of {added.lines} appended lines"
            # the refresh(es) that read the appended lines: the first scrape(s) after the append
            # whose line count moved (a refresh racing the writes may split the work in two)
            res.refreshes = [work for lines, work in moves if lines > before_lines]
            usd = msum(metrics, "claude_estimated_cost_usd_total")
            if usd is not None:
                res.usd_after = Decimal(str(usd))
                res.usd_expected = exp.totals().cost_usd + added.totals().cost_usd
        return res
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        for p in session_files(root):  # put the cached corpus back as it was
            if p in sizes and p.stat().st_size != sizes[p]:
                os.truncate(p, sizes[p])
        dirty.unlink(missing_ok=True)
        if not args.keep:
            shutil.rmtree(state, ignore_errors=True)


def _tail(path: Path, n: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip()
    except OSError:
        return ""


# ----------------------------------------------------------------------------- main


def ccusage_path() -> str | None:
    r = subprocess.run(["bash", str(HERE / "setup_ccusage.sh")], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"ccusage setup failed: {r.stderr.strip()[-400:]}", file=sys.stderr)
        return None
    return r.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=500)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--requests", type=int, default=120_000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3, help="runs of each tool, alternating (median reported)")
    ap.add_argument("--append-mb", type=float, default=1.0)
    ap.add_argument("--serve-timeout", type=float, default=900, help="seconds to wait for serve's first ingest")
    ap.add_argument("--append-timeout", type=float, default=120,
                    help="seconds to wait for serve to pick up the appended lines")
    ap.add_argument("--skip-ccusage", action="store_true")
    ap.add_argument("--skip-serve", action="store_true")
    ap.add_argument("--all-features", action="store_true",
                    help="also >200k-token requests and API error lines with tokens (ccusage totals will differ)")
    ap.add_argument("--regenerate", action="store_true", help="do not reuse the cached corpus")
    ap.add_argument("--keep", action="store_true", help="keep state directories (paths are printed)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target or a comparison fails")
    args = ap.parse_args(argv)

    OUT.mkdir(parents=True, exist_ok=True)
    root, exp, how = get_corpus(args)
    total = exp.totals()
    print(f"corpus  {root}  ({how})")
    print(f"        {exp.files} files, {exp.bytes / 2**20:.1f} MB, {exp.lines:,} lines, {total.requests:,} unique "
          f"requests, {exp.duplicate_lines:,} duplicate lines, {len(exp.days)} days, "
          f"${total.cost_usd:,.2f} by the generator's prices")
    skipped = ", ".join(f"{k} {v}" for k, v in exp.skipped.items() if v)
    print(f"        lines to skip: {skipped or 'none'}; long-context requests: {exp.long_context_requests}")

    home = Path(tempfile.mkdtemp(prefix="bench-home-"))  # nothing of the user's own setup leaks in
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(root), "HOME": str(home), "TZ": "UTC", "NO_COLOR": "1"}
    env.pop("ANTHROPIC_ADMIN_API_KEY", None)
    cc = None if args.skip_ccusage else ccusage_path()

    # an installed package carries its bytecode; a source tree gets it here once, so no run
    # pays for compiling the exporter (where PYTHONDONTWRITEBYTECODE is set, every run would)
    subprocess.run([python(), "-m", "compileall", "-q", str(REPO / "exporter")], check=True)
    ours: list[Run] = []
    theirs: list[Run] = []
    state_dirs: list[Path] = []
    for i in range(max(1, args.runs)):
        if cc:
            theirs.append(measure([cc, "claude", "daily", "--json", "--offline", "--timezone", "UTC"], env))
        state = Path(tempfile.mkdtemp(prefix="bench-report-state-"))
        state_dirs.append(state)
        r = measure([python(), "-m", "exporter", "report", "--json", "--state-dir", str(state)], env)
        ours.append(r)
        if not r.ok and i == 0:
            break  # the command is missing or broken: no point repeating it
    if not args.keep:
        for s in state_dirs:
            shutil.rmtree(s, ignore_errors=True)

    results: dict[str, Any] = {"corpus": {"path": str(root), "files": exp.files, "bytes": exp.bytes,
                                          "lines": exp.lines, "requests": total.requests,
                                          "usd": str(total.cost_usd)},
                               "when": datetime.now(UTC).isoformat(timespec="seconds")}
    failures: list[str] = []

    def figures(runs: list[Run]) -> tuple[float, float, float] | None:
        good = [r for r in runs if r.ok]
        if not good:
            return None
        return (statistics.median(r.wall for r in good), statistics.median(r.maxrss_mb for r in good),
                statistics.median(r.cpu for r in good))

    o, t = figures(ours), figures(theirs)
    print()
    print(f"{'cold run (median of ' + str(len(ours)) + ')':34s} {'wall s':>8s} {'peak RSS MB':>12s} {'CPU s':>8s}")
    if o:
        print(f"{'report --json':34s} {o[0]:8.2f} {o[1]:12.1f} {o[2]:8.2f}   runs: "
              + " ".join(f"{r.wall:.2f}s/{r.maxrss_mb:.0f}MB" for r in ours))
    else:
        print(f"{'report --json':34s} {'failed':>8s}   rc={ours[0].rc}: {ours[0].stderr.strip()[-500:]}")
        failures.append("report --json did not run")
    if t:
        print(f"{'ccusage claude daily --json':34s} {t[0]:8.2f} {t[1]:12.1f} {t[2]:8.2f}   runs: "
              + " ".join(f"{r.wall:.2f}s/{r.maxrss_mb:.0f}MB" for r in theirs))
    elif cc:
        print(f"{'ccusage':34s} {'failed':>8s}   rc={theirs[0].rc}: {theirs[0].stderr.strip()[-300:]}")
    if o and t:
        wr, rr = o[0] / t[0], o[1] / t[1]
        print(f"{'ratio (ours / ccusage)':34s} {wr:8.2f} {rr:12.2f} {o[2] / t[2]:8.2f}   "
              f"targets: wall <= {WALL_TARGET}, "
              f"RSS <= {RSS_TARGET}:  wall {'PASS' if wr <= WALL_TARGET else 'FAIL'}, "
              f"RSS {'PASS' if rr <= RSS_TARGET else 'FAIL'}")
        if wr > WALL_TARGET:
            failures.append(f"wall ratio {wr:.2f} > {WALL_TARGET}")
        if rr > RSS_TARGET:
            failures.append(f"RSS ratio {rr:.2f} > {RSS_TARGET}")
        results["ratios"] = {"wall": wr, "rss": rr, "cpu": o[2] / t[2]}
    results["report"] = ({"wall_s": o[0], "rss_mb": o[1], "cpu_s": o[2]} if o
                         else {"error": ours[0].stderr[-2000:]})
    if t:
        results["ccusage"] = {"wall_s": t[0], "rss_mb": t[1], "cpu_s": t[2]}

    # ---- totals
    truth = totals_from_expected(exp)
    comparisons: list[Comparison] = []
    rep_doc = cc_doc = None
    if o:
        try:
            rep_doc = json.loads(next(r for r in ours if r.ok).stdout)
        except ValueError as e:
            failures.append(f"report --json printed no JSON: {e}")
    if t:
        cc_doc = json.loads(next(r for r in theirs if r.ok).stdout)
    if rep_doc is not None:
        comparisons.append(compare("report vs generator truth", totals_from_report(rep_doc), truth))
        if cc_doc is not None:
            comparisons.append(compare("report vs ccusage", totals_from_report(rep_doc), totals_from_ccusage(cc_doc)))
    if cc_doc is not None:
        comparisons.append(compare("ccusage vs generator truth", totals_from_ccusage(cc_doc), truth))
    if comparisons:
        print()
        print(f"{'totals (to the cent)':34s} {'USD first':>14s} {'USD second':>14s} {'max day diff':>13s}")
        for c in comparisons:
            print(f"{c.name:34s} {c.total_a:14.4f} {c.total_b:14.4f} {c.max_day_diff:13.4f}   "
                  f"{'EQUAL' if c.ok else 'DIFFERENT'}")
            for p in c.problems[:8]:
                print(f"    {p}")
            if len(c.problems) > 8:
                print(f"    ... {len(c.problems) - 8} more")
            if not c.ok and not (args.all_features and "ccusage" in c.name):
                failures.append(f"{c.name}: {len(c.problems)} differences")
        results["comparisons"] = [{"name": c.name, "equal": c.ok, "a": str(c.total_a), "b": str(c.total_b),
                                   "problems": c.problems[:50]} for c in comparisons]

    # ---- incremental refresh in serve
    if not args.skip_serve and o:
        print()
        inc = run_incremental(root, exp, env, args)
        if not inc.ok and inc.lines_seen is None:
            print(f"serve: {inc.note}")
            failures.append("serve did not come up")
        else:
            print(f"serve   first ingest done after {inc.ingest_seconds:.1f}s ({inc.lines_seen:,.0f} lines on "
                  f"/metrics, {exp.lines - exp.skipped.get('partial_pending', 0):,} expected), peak RSS "
                  f"{inc.serve_rss_mb or 0:.0f} MB" + (f"  [{inc.note}]" if inc.note else ""))
            print(f"        appended {inc.appended_bytes / 2**20:.2f} MB ({inc.appended_lines:,} lines, "
                  f"{inc.appended_requests:,} requests) to 20 live session files")
            if inc.refreshes:
                work = max(inc.refreshes)
                print(f"        claude_refresh_duration_seconds of the refresh that read them: {work * 1000:.1f} ms "
                      f"(target <= {REFRESH_TARGET * 1000:.0f} ms: {'PASS' if work <= REFRESH_TARGET else 'FAIL'})"
                      + (f"; split over {len(inc.refreshes)} refreshes: "
                         f"{', '.join(f'{x * 1000:.1f}' for x in inc.refreshes)} ms" if len(inc.refreshes) > 1 else ""))
                if work > REFRESH_TARGET:
                    failures.append(f"refresh {work * 1000:.1f} ms > {REFRESH_TARGET * 1000:.0f} ms")
            elif inc.visible_after is not None:
                print("        no claude_refresh_duration_seconds on /metrics")
                failures.append("no refresh duration metric")
            if inc.visible_after is not None:
                print(f"        new lines visible on /metrics {inc.visible_after:.2f}s after the append")
            if inc.usd_after is not None and inc.usd_expected is not None:
                same = abs(inc.usd_after - inc.usd_expected) <= CENT
                print(f"        claude_estimated_cost_usd_total: ${inc.usd_after:,.4f}, generator truth "
                      f"${inc.usd_expected:,.4f}: {'EQUAL' if same else 'DIFFERENT'}")
                if not same:
                    failures.append("serve totals differ from the truth")
            if not inc.ok:
                failures.append(inc.note)
        results["incremental"] = {
            "ok": inc.ok, "note": inc.note, "ingest_s": inc.ingest_seconds, "serve_rss_mb": inc.serve_rss_mb,
            "appended_bytes": inc.appended_bytes, "appended_lines": inc.appended_lines,
            "refresh_s": max(inc.refreshes) if inc.refreshes else None, "refreshes_s": inc.refreshes,
            "visible_after_s": inc.visible_after,
            "usd_after": str(inc.usd_after) if inc.usd_after is not None else None,
            "usd_expected": str(inc.usd_expected) if inc.usd_expected is not None else None}

    shutil.rmtree(home, ignore_errors=True)
    results["failures"] = failures
    out = OUT / "results.json"
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print()
    print(("all targets met" if not failures else "missed: " + "; ".join(failures)) + f"  (figures in {out})")
    return 1 if failures and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())
