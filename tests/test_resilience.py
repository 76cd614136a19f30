"""Faults: a misbehaving Admin API, kill -9, a corrupt state file, a full disk.

Every test runs the exporter as a real process against the fake Admin API over HTTP and a
generated log corpus, and checks what a user relies on: the process stays up, /metrics
answers, billed and estimated values never go backwards or count twice, and once the
fault is gone they equal the truth (the fake's data, the generator's own sums) exactly.
Randomness is seeded: a failure replays with the same fault sequence.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from exporter.config.model import FAST_POLL_ENV
from exporter.core.records import TOKEN_TYPES
from tests.conftest import (
    ROOT,
    Exporter,
    Samples,
    clean_env,
    http_get,
    parse_metrics,
    sample,
)
from tests.corpus import Expected, append, generate
from tests.fake_admin_api import FakeAdminApi, Fault

KEY = "sk-ant-admin01-resilience-test-key-0123456789"
WS = "wrkspc_01Resilience"
MODELS = ("claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001", "claude-opus-4-5-20251101")
TOKEN_KINDS = ("uncached_input_tokens", "output_tokens", "cache_read_input_tokens")
CENT = Decimal("0.01")


# ----------------------------------------------------------------------------- helpers


class RandomFaults(FakeAdminApi):
    """The fake, with a seeded random fault (or none) drawn for every report request.

    Each request draws the same number of random values, so the sequence of faults by
    request number depends on the seed alone. ``outage`` holds request numbers that always
    fail (a burst long enough to exhaust the client's retries).
    """

    KINDS = ("429", "500", "529", "slow", "truncated", "short_body", "reset", "not_report")

    def __init__(self, *, seed: int, rate: float, outage: range = range(0), **kw) -> None:
        super().__init__(**kw)
        self.rng = random.Random(seed)
        self.rate = rate
        self.outage = outage
        self.enabled = False
        self.drawn = 0
        self.served: Counter[str] = Counter()

    def _take_fault(self, endpoint: str) -> Fault | None:
        queued = super()._take_fault(endpoint)
        if queued is not None:
            return queued
        with self._lock:
            if not self.enabled:
                return None
            n = self.drawn
            self.drawn += 1
            draw, kind, x = self.rng.random(), self.rng.choice(self.KINDS), self.rng.random()
            if n in self.outage:
                fault = Fault("429", retry_after="0.1")
            elif draw < self.rate:
                fault = Fault(kind, retry_after=f"{0.1 + 0.4 * x:.2f}", seconds=0.1 + 0.7 * x)
            else:
                return None
            self.served[fault.kind] += 1
            return fault


def billed_truth(fake: FakeAdminApi, today: date) -> dict[str, Decimal]:
    """Billed USD per window as the exporter must show it, from the fake's own entries."""
    out = {"today": Decimal(0), "yesterday": Decimal(0), "period": Decimal(0)}
    now = fake.now
    for e in fake.spend():
        if e.at >= now:
            continue
        d, usd = e.at.date(), e.amount_cents / 100
        if d == today:
            out["today"] += usd
        if d == today - timedelta(days=1):
            out["yesterday"] += usd
        if today.replace(day=1) <= d <= today:
            out["period"] += usd
    return out


def billed_served(s: Samples) -> dict[str, Decimal]:
    """Sum of claude_billed_cost_usd per window, exact (each sample's shortest repr)."""
    out = {"today": Decimal(0), "yesterday": Decimal(0), "period": Decimal(0)}
    for (name, labels), v in s.items():
        if name == "claude_billed_cost_usd":
            out[dict(labels)["window"]] += Decimal(repr(v))
    return out


def tokens_served(s: Samples) -> dict[str, int]:
    out = dict.fromkeys(TOKEN_TYPES, 0)
    for (name, labels), v in s.items():
        if name == "claude_estimated_tokens_total":
            out[dict(labels)["token_type"]] += int(v)
    return out


def tokens_truth(exp: Expected) -> dict[str, int]:
    t = exp.totals()
    return {"input": t.input, "output": t.output, "cache_read": t.cache_read,
            "cache_write_5m": t.cache_write_5m, "cache_write_1h": t.cache_write_1h}


def cost_served(s: Samples) -> Decimal:
    return sum((Decimal(repr(v)) for (n, _), v in s.items() if n == "claude_estimated_cost_usd_total"), Decimal(0))


def lines_served(s: Samples) -> int:
    return int(sum(v for (n, _), v in s.items() if n == "claude_log_lines_total"))


def complete_lines(root: Path) -> int:
    """Every complete line in the corpus: each must be counted once, whatever became of it."""
    return sum(p.read_bytes().count(b"\n") for p in root.rglob("*.jsonl"))


def add_spend(fake: FakeAdminApi, rng: random.Random, day: date, now: datetime) -> None:
    """One billed entry on ``day`` at a random moment before the fake's now, fractional cents."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = min(start + timedelta(days=1), now)
    at = start + (end - start) * rng.uniform(0.0, 0.999)
    fake.add_spend(at, f"{rng.randint(1, 99999) / 1000:.3f}", workspace_id=rng.choice([WS, None]),
                   model=rng.choice(MODELS), token_type=rng.choice(TOKEN_KINDS), tokens=rng.randint(1, 50_000))


def seed_fake(fake: FakeAdminApi, rng: random.Random, now: datetime, days: int = 6) -> None:
    today = now.date()
    for back in range(days, -1, -1):
        for _ in range(4):
            add_spend(fake, rng, today - timedelta(days=back), now)


def write_config(path: Path, logs: list[Path], *, fake: FakeAdminApi | None, poll: str = "1s",
                 refresh: str = "200ms", today: date | None = None) -> Path:
    paths = ", ".join(str(p) for p in logs)
    text = f"refresh_interval: {refresh}\nsources:\n  - name: claude-code\n    kind: claude_code\n    paths: [{paths}]\n"
    if fake is not None:
        reset_day = min(((today or datetime.now(UTC).date()) - timedelta(days=8)).day, 28)
        text += (f"admin_api:\n  key_env: TEST_ADMIN_KEY\n  base_url: {fake.url}\n  poll_interval: {poll}\n  settle_after: 0s\n  api: legacy\n"
                 f"pools:\n  - name: team\n    credit_usd: 500\n    period: {{reset_day: {reset_day}, timezone: UTC}}\n"
                 f"    match: {{workspaces: [{WS}], sources: [claude-code]}}\n")
    path.write_text(text)
    return path


def env_for(fake: FakeAdminApi | None) -> dict[str, str]:
    return clean_env(TEST_ADMIN_KEY=KEY, **{FAST_POLL_ENV: "1"}) if fake else clean_env()


def log_events(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def alive(e: Exporter) -> bool:
    return e.proc is not None and e.proc.poll() is None


# ----------------------------------------------------------------------------- Admin API faults


def test_admin_api_fault_storm_never_loses_or_doubles_billed_spend(tmp_path: Path, exporter_factory) -> None:
    """Seeded 429/500/529/slow/truncated/short/reset/not-a-report answers over many poll cycles."""
    rng = random.Random(6001)
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.date()
    fake = RandomFaults(key=KEY, now=now, seed=6002, rate=0.4, outage=range(30, 36)).start()
    try:
        seed_fake(fake, rng, now)
        (tmp_path / "logs").mkdir()
        cfg = write_config(tmp_path / "config.yaml", [tmp_path / "logs"], fake=fake, today=today)
        args = ["--config", str(cfg), "--state-dir", str(tmp_path / "state")]
        e = exporter_factory(args, env_for(fake)).start()
        e.wait_for(lambda s: billed_served(s) == billed_truth(fake, today), what="the first full poll")

        fake.enabled = True
        last = billed_served(e.metrics())
        scrapes, worst, down_seen, next_add = 0, 0.0, 0, time.monotonic() + 1.5
        deadline = time.monotonic() + 75
        while time.monotonic() < deadline:
            if time.monotonic() >= next_add:  # spend keeps arriving on the revisable days
                add_spend(fake, rng, today - timedelta(days=rng.randint(0, 1)), now)
                next_add = time.monotonic() + 1.5
            assert alive(e), e.log_path.read_text()[-3000:]
            truth = billed_truth(fake, today)
            t0 = time.perf_counter()
            code, body = http_get(e.url + "/metrics", timeout=5)
            worst = max(worst, time.perf_counter() - t0)
            assert code == 200
            scrapes += 1
            s = parse_metrics(body.decode())
            got = billed_served(s)
            for w in got:
                assert got[w] >= last[w], f"{w} went backwards: {last[w]} -> {got[w]}"
                assert got[w] <= truth[w], f"{w} counted twice: {got[w]} > truth {truth[w]}"
            last = got
            down_seen += sample(s, "claude_source_up", source="admin_api") == 0
            polls = sum(ev.get("event") in ("billing.poll_ok", "billing.poll_failed") for ev in log_events(e.log_path))
            if polls >= 20 and fake.drawn > max(fake.outage) + 5 and len(fake.served) == len(fake.KINDS) \
                    and down_seen:
                break
            time.sleep(0.1)
        events = log_events(e.log_path)
        failed = sum(ev.get("event") == "billing.poll_failed" for ev in events)
        ok = sum(ev.get("event") == "billing.poll_ok" for ev in events)
        print(f"\nfault storm: {fake.drawn} requests drawn, faults {dict(fake.served)}, polls ok {ok} "
              f"failed {failed}, {scrapes} scrapes, worst scrape {worst * 1000:.1f} ms")
        assert ok + failed >= 20, "too few poll cycles ran under faults"
        assert set(fake.served) == set(fake.KINDS), fake.served
        assert failed >= 1 and down_seen, "the outage did not make a poll fail"

        # faults stop: the values catch up with the truth exactly, with nothing counted twice
        fake.enabled = False
        truth = billed_truth(fake, today)
        s = e.wait_for(lambda s: billed_served(s) == truth and sample(s, "claude_source_up", source="admin_api") == 1,
                       timeout=40, what="recovery to the truth")
        assert alive(e)

        # ...and equal a fault-free run from an empty state, sample for sample
        clean = exporter_factory(["--config", str(cfg), "--state-dir", str(tmp_path / "state-clean")],
                                 env_for(fake)).start()
        c = clean.wait_for(lambda s: billed_served(s) == truth, what="the fault-free run")
        s = e.metrics()

        def billed(x: Samples) -> Samples:
            return {k: v for k, v in x.items()
                    if k[0].startswith(("claude_billed_cost", "claude_billed_tokens", "claude_billed_spend",
                                        "claude_billed_complete"))}

        assert billed(s) and billed(s) == billed(c)
    finally:
        fake.stop()


# ----------------------------------------------------------------------------- kill -9


def test_kill9_at_random_points_never_loses_or_doubles(tmp_path: Path, exporter_factory) -> None:
    """24 kills during start-up, ingest, commit and polling; after each restart the totals are exact."""
    rng = random.Random(6101)
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.date()
    root = tmp_path / "corpus"
    exp = generate(root, files=40, requests=8000, seed=6102, days=10)
    fake = FakeAdminApi(key=KEY, now=now).start()
    try:
        seed_fake(fake, rng, now)
        cfg = write_config(tmp_path / "config.yaml", [root / "projects"], fake=fake, poll="500ms", today=today)
        args = ["--config", str(cfg), "--state-dir", str(tmp_path / "state")]
        env = env_for(fake)
        phases: Counter[str] = Counter()

        def settled(s: Samples) -> bool:
            return (tokens_served(s) == tokens_truth(exp) and billed_served(s) == billed_truth(fake, today)
                    and sample(s, "claude_source_up", source="admin_api") == 1)

        def wait_event(e: Exporter, event: str, after: int = 0, timeout: float = 30.0) -> None:
            deadline = time.monotonic() + timeout
            while sum(ev.get("event") == event for ev in log_events(e.log_path)) <= after:
                assert time.monotonic() < deadline and alive(e), f"no {event}: {e.log_path.read_text()[-2000:]}"
                time.sleep(0.005)

        def kill(e: Exporter, aimed: str) -> None:
            e.kill9()
            events = [ev.get("event") for ev in log_events(e.log_path)]
            hit = ("start-up" if "listening" not in events else
                   "in first refresh" if "logs_ingested" not in events else
                   "refresh/poll")
            phases[f"{aimed} -> {hit}"] += 1

        kills = 0
        for i in range(12):
            # new lines and new billed spend arrive while the exporter is down
            exp.merge(append(root, size_mb=3.0, seed=6200 + i, at=now - timedelta(minutes=1)))
            add_spend(fake, rng, today - timedelta(days=rng.randint(0, 1)), now)
            e = exporter_factory(args, env).start(wait=0)
            aim = rng.choice(["start-up", "first refresh", "poll"])
            delay = rng.uniform(0.0, 0.25)
            if aim == "start-up":  # imports, opening and loading the state
                time.sleep(rng.uniform(0.1, 0.6))
            elif aim == "first refresh":  # reading the appended lines and committing them
                wait_event(e, "listening")
                time.sleep(delay * 0.4)
            else:  # the poller storing billed days, the log refresher tailing
                wait_event(e, "billing.poll_ok")
                time.sleep(delay)
            kill(e, aim)
            kills += 1

            e = exporter_factory(args, env).start(wait=60)
            s = e.wait_for(settled, timeout=60, what=f"settled totals after kill {kills}")
            assert cost_served(s).quantize(CENT) == exp.totals().cost_usd.quantize(CENT)
            assert lines_served(s) == complete_lines(root), "a line was counted twice or not at all"

            # lines arrive while it runs; kill it somewhere in the refresh, commit or poll
            exp.merge(append(root, size_mb=0.5, seed=6300 + i, at=now - timedelta(minutes=1)))
            add_spend(fake, rng, today, now)
            time.sleep(rng.uniform(0.0, 0.5))
            kill(e, "running")
            kills += 1

        e = exporter_factory(args, env).start(wait=60)
        s = e.wait_for(settled, timeout=60, what="final totals")
        assert cost_served(s).quantize(CENT) == exp.totals().cost_usd.quantize(CENT)
        assert lines_served(s) == complete_lines(root)
        print(f"\nkill -9: {kills} kills, by phase {dict(phases)}")
        # the kills landed in more than one phase (start-up or the first refresh, and the running loops):
        # a run whose every kill hit the same moment tested less than it claims
        assert len({k.split(" -> ")[1] for k in phases}) >= 2, phases
    finally:
        fake.stop()


# ----------------------------------------------------------------------------- corrupt state


def _wal_pages(wal: Path) -> set[int]:
    """Page numbers that have a frame in a WAL file (32-byte header, 24-byte frame headers)."""
    data = wal.read_bytes() if wal.exists() else b""
    if len(data) < 32:
        return set()
    page_size = struct.unpack(">I", data[8:12])[0]
    pages, pos = set(), 32
    while pos + 24 + page_size <= len(data):
        pages.add(struct.unpack(">I", data[pos:pos + 4])[0])
        pos += 24 + page_size
    return pages


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
@pytest.mark.parametrize("with_wal", [False, True], ids=["no-wal", "with-wal"])
def test_corrupt_state_is_moved_aside_and_rebuilt_from_the_logs(tmp_path: Path, exporter_factory, damage: str,
                                                                 with_wal: bool) -> None:
    kept, gone = tmp_path / "kept", tmp_path / "gone"
    exp_kept = generate(kept, files=8, requests=600, seed=6401, days=5)
    exp_gone = generate(gone, files=4, requests=300, seed=6402, days=5)
    both = Expected()
    both.merge(exp_kept)
    both.merge(exp_gone)
    cfg = write_config(tmp_path / "config.yaml", [kept / "projects", gone / "projects"], fake=None)
    state = tmp_path / "state"
    db = state / "state.sqlite3"
    args = ["--config", str(cfg), "--state-dir", str(state)]

    e = exporter_factory(args).start()
    e.wait_for(lambda s: tokens_served(s) == tokens_truth(both), what="first ingest")
    assert e.stop() == 0
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    if with_wal:
        # a second run commits a little more and dies: its WAL is left beside the database
        more = append(kept, size_mb=0.2, seed=6403, at=datetime.now(UTC) - timedelta(minutes=1))
        exp_kept.merge(more)
        both.merge(more)
        e = exporter_factory(args).start()
        e.wait_for(lambda s: tokens_served(s) == tokens_truth(both), what="the appended lines")
        e.kill9()
        assert Path(f"{db}-wal").stat().st_size > 0

    shutil.rmtree(gone)  # logs deleted since (Claude Code's 30-day purge): what only the state knew
    # damage the WAL cannot paper over: it hits a page (numbered from 1) the WAL holds no newer copy of
    with open(db, "rb") as f:
        page = int.from_bytes(f.read(18)[16:18], "big") or 65536  # the header's page size (1 means 65536)
    pages = db.stat().st_size // page
    in_wal = _wal_pages(Path(f"{db}-wal"))
    victim = next(p for p in [*range(pages // 2, pages), *range(1, pages // 2)] if p + 1 not in in_wal)
    with open(db, "r+b") as f:
        if damage == "truncated":
            f.truncate(victim * page)
        else:
            f.seek(victim * page)
            f.write(random.Random(6404).randbytes(page))

    e = exporter_factory(args).start(wait=60)
    s = e.wait_for(lambda s: tokens_served(s) == tokens_truth(exp_kept), what="rebuilt totals")
    assert cost_served(s).quantize(CENT) == exp_kept.totals().cost_usd.quantize(CENT)
    assert lines_served(s) == complete_lines(kept)

    # reported: a structured event and a plain stderr line, both naming the file and where it went
    text = e.log_path.read_text()
    events = [ev for ev in log_events(e.log_path) if ev.get("event") == "state_corrupt"]
    assert len(events) == 1, text[-3000:]
    moved = Path(events[0]["moved_to"])
    assert events[0]["path"] == str(db) and "cannot come back" in events[0]["consequence"]
    assert moved.name.startswith("state.sqlite3.corrupt-") and moved.exists()
    moved_wal = Path(f"{moved}-wal")
    assert (moved_wal.exists() and moved_wal.stat().st_size > 0) == with_wal  # the WAL went with it
    assert any(line.startswith(f"claude-budget-exporter: state database {db} is corrupt") and str(moved) in line
               for line in text.splitlines()), text[-3000:]

    # the rebuilt state is kept: a restart neither rebuilds again nor counts twice
    e.stop()
    e = exporter_factory(args).start(wait=60)
    s = e.metrics()
    assert tokens_served(s) == tokens_truth(exp_kept)
    assert not any(ev.get("event") == "state_corrupt" for ev in log_events(e.log_path))
    assert [p.name for p in state.glob("state.sqlite3.corrupt-*") if not p.name.endswith(("-wal", "-shm"))] \
        == [moved.name]


# ----------------------------------------------------------------------------- full disk


def _userns_tmpfs_works() -> bool:
    if not (shutil.which("unshare") and shutil.which("nsenter")):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d && umount $d && rmdir $d"],
                           check=False, capture_output=True, timeout=10)
    return probe.returncode == 0


class TinyDiskExporter(Exporter):
    """The exporter in its own user and mount namespace, with ``state_dir`` on a small tmpfs.

    The disk fills for real (ENOSPC from the kernel), so SQLite's own write path fails the
    way it does on a full disk. The test reaches the tmpfs through ``/proc/<pid>/root``.
    """

    def __init__(self, args: list[str], env, log_path: Path, state: Path, size: str) -> None:
        super().__init__(args, env, log_path)
        self.state, self.size = state, size
        self.lines: list[str] = []

    def start(self, wait: float = 30.0) -> Exporter:
        # stderr through a pipe: the log file must not be on the disk we fill
        self.proc = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
             'mount -t tmpfs -o size="$0" tmpfs "$1" && shift && exec "$@"', self.size, str(self.state),
             sys.executable, "-m", "exporter", "--log-format", "json", "serve",
             "--listen", f"127.0.0.1:{self.port}", *self.args],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                if http_get(self.url + "/healthz", timeout=1.0)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("exporter not healthy")

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path, "ab") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()

    @property
    def disk(self) -> Path:
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/root{self.state}")

    def fill(self) -> None:
        # unbuffered: a buffered file would flush its rest again at close and raise ENOSPC there
        with open(self.disk / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass

    def free(self) -> None:
        (self.disk / "filler").unlink()


@pytest.mark.skipif(not _userns_tmpfs_works(), reason="needs user namespaces to mount a small tmpfs")
def test_full_disk_is_reported_serving_goes_on_and_nothing_doubles_after(tmp_path: Path) -> None:
    rng = random.Random(6501)
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.date()
    root = tmp_path / "corpus"
    exp = generate(root, files=10, requests=1500, seed=6502, days=5)
    fake = FakeAdminApi(key=KEY, now=now).start()
    state = tmp_path / "state"
    state.mkdir()
    e = None
    try:
        seed_fake(fake, rng, now)
        cfg = write_config(tmp_path / "config.yaml", [root / "projects"], fake=fake, poll="500ms", today=today)
        e = TinyDiskExporter(["--config", str(cfg), "--state-dir", str(state)], env_for(fake),
                             tmp_path / "exporter.log", state, "48m").start()

        def settled(s: Samples) -> bool:
            return tokens_served(s) == tokens_truth(exp) and billed_served(s) == billed_truth(fake, today)

        before = e.wait_for(settled, what="first ingest and poll")
        e.fill()
        mark = len(log_events(e.log_path))
        # new lines and new billed spend arrive while the disk is full
        exp.merge(append(root, size_mb=0.5, seed=6503, at=now - timedelta(minutes=1)))
        add_spend(fake, rng, today, now)
        s = e.wait_for(lambda s: sample(s, "claude_source_up", source="claude-code") == 0, what="the write failure")
        # several refresh cycles fail (each says so in the log) before the values are compared
        deadline = time.monotonic() + 30
        while sum(ev.get("event") == "state_write_failed" for ev in log_events(e.log_path)[mark:]) < 3:
            assert time.monotonic() < deadline, "the refresher stopped trying while the disk was full"
            time.sleep(0.1)
        for _ in range(10):
            s = e.metrics()  # serving goes on, with the last committed values
            assert tokens_served(s) == tokens_served(before)
            assert billed_served(s) == billed_served(before)
            time.sleep(0.1)
        events = log_events(e.log_path)[mark:]
        failures = [ev for ev in events if ev.get("event") == "state_write_failed"]
        assert failures and failures[0]["path"] == str(state / "state.sqlite3"), events[-5:]
        assert "full" in failures[0]["error"] or "disk" in failures[0]["error"]

        e.free()
        s = e.wait_for(lambda s: settled(s) and sample(s, "claude_source_up", source="claude-code") == 1
                       and sample(s, "claude_source_up", source="admin_api") == 1, timeout=40,
                       what="catching up once the disk has room")
        assert lines_served(s) == complete_lines(root)
        assert any(ev.get("event") == "state_writable_again" for ev in log_events(e.log_path))
        assert e.proc is not None and e.proc.poll() is None
    finally:
        if e is not None:
            e.stop()
        fake.stop()


# ----------------------------------------------------------------------------- memory after a failed commit


def test_a_failed_commit_moves_nothing_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit that fails (disk full) must leave the ingestor as it was, new label ids included.

    A request first seen during a failed commit is committed on the next refresh; after a
    restart, a bigger copy of it must replace it under its own model, not another one's.
    """
    import sqlite3

    from exporter.state import StateDB
    from tests.test_ingest import Harness, line

    opus, haiku = "claude-opus-4-5-20251101", "claude-haiku-4-5-20251001"
    h = Harness(tmp_path)
    h.write("a.jsonl", line("1", model=opus, out=100, entrypoint="ep-new-1"))
    real = StateDB.add_line_counts
    calls = {"n": 0}

    def full_once(conn, counts):
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlite3.OperationalError("database or disk is full")
        return real(conn, counts)

    monkeypatch.setattr(StateDB, "add_line_counts", staticmethod(full_once))
    with pytest.raises(sqlite3.OperationalError):
        h.refresh()
    h.refresh()  # the disk has room again: the same line is committed once
    h.restart()
    # a request with another new label, then the bigger copy of the first request
    h.write("a.jsonl", line("2", model=haiku, out=50, entrypoint="ep-new-2"))
    h.write("a.jsonl", line("1", model=opus, out=300, entrypoint="ep-new-1"))
    h.refresh()
    by_model: dict[str, int] = Counter()
    for (_hour, _src, model, _ep), v in h.ing.aggregates.items():
        by_model[model] += v[2]  # output tokens
    assert {m: n for m, n in by_model.items() if n} == {opus: 300, haiku: 50}
    h.restart()
    by_model = Counter()
    for (_hour, _src, model, _ep), v in h.ing.aggregates.items():
        by_model[model] += v[2]
    assert {m: n for m, n in by_model.items() if n} == {opus: 300, haiku: 50}


@pytest.mark.skipif(not _userns_tmpfs_works(), reason="needs user namespaces to mount a small tmpfs")
def test_read_only_state_dir_at_start_is_reported_with_its_path(tmp_path: Path) -> None:
    """A state_dir on a read-only file system at start: exit 2 and one line naming the directory.

    (At run time a file system cannot be remounted read-only under open files, short of an
    error remount; a write that fails there takes the full-disk path above.)
    """
    state = tmp_path / "state"
    state.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = write_config(tmp_path / "config.yaml", [logs], fake=None)
    r = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         'mount -t tmpfs -o size=1m,ro tmpfs "$0" && exec "$@"', str(state),
         sys.executable, "-m", "exporter", "--log-format", "json", "serve", "--config", str(cfg),
         "--state-dir", str(state), "--listen", "127.0.0.1:0"],
        env=clean_env(), capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"state_dir {state}: Read-only file system" in r.stderr
