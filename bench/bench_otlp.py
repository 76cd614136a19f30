"""The OTLP receiver under a fleet: N simulated developers, each sending one batch a minute.

Every developer is a Claude Code process with telemetry on: once a minute (at its own phase
in the minute) it sends what Claude Code's SDK would, one ``/v1/logs`` request with the
``claude_code.api_request`` events of the requests made since its last batch, and one
``/v1/metrics`` request with the delta points of ``claude_code.token.usage`` (per type and
model) and ``claude_code.cost.usage``, protobuf and gzip, on keep-alive connections. Payloads
are built with the OpenTelemetry project's own protobuf classes (what its SDK encodes), so
the load generator costs little of the machine's two cores.

It prints, per minute and overall: requests answered, errors, the ingest latency (send to
the 200 that says it is committed) p50/p99/max, the exporter's CPU (of one core) and RSS.
At the end the fleet's total on ``/metrics`` is held to the generator's own pricing
(``tests/corpus.py``), to the cent. Not a timed test: it prints figures.

    .venv/bin/python bench/bench_otlp.py                      # 1,000 developers, 5 minutes
    .venv/bin/python bench/bench_otlp.py --developers 200 --minutes 2
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest  # noqa: E402
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality  # noqa: E402

from tests.conftest import free_port, parse_metrics  # noqa: E402
from tests.corpus import MODELS, price_request  # noqa: E402

S = 1_000_000_000
TYPES = (("input", 0), ("output", 1), ("cacheRead", 2), ("cacheCreation", 3))
TEAMS = ("platform", "data", "web", "mobile", "ml", "infra", "security", "growth")


def _kv(attrs: dict[str, object]) -> list[KeyValue]:
    out = []
    for k, v in attrs.items():
        if isinstance(v, int):
            out.append(KeyValue(key=k, value=AnyValue(int_value=v)))
        elif isinstance(v, float):
            out.append(KeyValue(key=k, value=AnyValue(double_value=v)))
        else:
            out.append(KeyValue(key=k, value=AnyValue(string_value=str(v))))
    return out


@dataclass
class Developer:
    n: int
    rng: random.Random
    email: str = ""
    team: str = ""
    session: str = ""
    last_ns: int = 0
    usd: Decimal = Decimal(0)
    requests: int = 0

    def __post_init__(self) -> None:
        self.email = f"dev{self.n:05d}@example.com"
        self.team = TEAMS[self.n % len(TEAMS)]
        self.session = str(uuid.UUID(int=self.rng.getrandbits(128)))
        self.last_ns = time.time_ns()

    def batch(self) -> tuple[bytes, bytes]:
        """(logs, metrics) requests for the minute since the last batch, serialized and gzipped."""
        now_ns = time.time_ns()
        resource = _kv({"service.name": "claude-code", "service.version": "2.1.0", "os.type": "linux",
                        "host.arch": "amd64", "team": self.team})
        std = {"session.id": self.session, "user.account_uuid": f"acc-{self.n}", "user.email": self.email,
               "organization.id": "org-1", "terminal.type": "xterm-256color", "app.entrypoint": "cli"}
        logs = ExportLogsServiceRequest()
        rl = logs.resource_logs.add()
        rl.resource.attributes.extend(resource)
        records = rl.scope_logs.add()
        records.scope.name = "com.anthropic.claude_code.events"
        sums: dict[tuple[str, int], int] = {}
        cost: dict[str, float] = {}
        for _ in range(self.rng.randint(1, 6)):  # requests this minute
            model = self.rng.choice(list(MODELS))
            tokens = (self.rng.randint(10, 5000), self.rng.randint(50, 3000), self.rng.randint(0, 150_000),
                      self.rng.randint(0, 20_000))
            usd = price_request(model, tokens[0], tokens[1], tokens[2], tokens[3], 0)
            self.usd += usd
            self.requests += 1
            at = self.rng.randint(self.last_ns, now_ns)
            rec = records.log_records.add()
            rec.time_unix_nano = at
            rec.observed_time_unix_nano = at
            rec.body.string_value = "claude_code.api_request"
            rec.attributes.extend(_kv({**std, "event.name": "api_request", "model": model,
                                       "input_tokens": tokens[0], "output_tokens": tokens[1],
                                       "cache_read_tokens": tokens[2], "cache_creation_tokens": tokens[3],
                                       "cost_usd": float(usd), "cost_usd_micros": int(usd * 1_000_000),
                                       "duration_ms": self.rng.randint(500, 30_000),
                                       "request_id": f"req_{uuid.UUID(int=self.rng.getrandbits(128)).hex}",
                                       "speed": "normal", "query_source": "main"}))
            for _name, i in TYPES:
                if tokens[i]:
                    sums[(model, i)] = sums.get((model, i), 0) + tokens[i]
            cost[model] = cost.get(model, 0.0) + float(usd)
        metrics = ExportMetricsServiceRequest()
        rm = metrics.resource_metrics.add()
        rm.resource.attributes.extend(resource)
        sm = rm.scope_metrics.add()
        sm.scope.name = "com.anthropic.claude_code"
        tok = sm.metrics.add()
        tok.name, tok.unit = "claude_code.token.usage", "tokens"
        tok.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
        tok.sum.is_monotonic = True
        for (model, i), n in sums.items():
            dp = tok.sum.data_points.add()
            dp.start_time_unix_nano, dp.time_unix_nano, dp.as_double = self.last_ns, now_ns, float(n)
            dp.attributes.extend(_kv({**std, "model": model, "type": TYPES[i][0], "query_source": "main",
                                      "speed": "normal"}))
        usd_metric = sm.metrics.add()
        usd_metric.name, usd_metric.unit = "claude_code.cost.usage", "USD"
        usd_metric.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
        usd_metric.sum.is_monotonic = True
        for model, usd_sum in cost.items():
            dp = usd_metric.sum.data_points.add()
            dp.start_time_unix_nano, dp.time_unix_nano, dp.as_double = self.last_ns, now_ns, usd_sum
            dp.attributes.extend(_kv({**std, "model": model, "query_source": "main", "speed": "normal"}))
        self.last_ns = now_ns
        return gzip.compress(logs.SerializeToString(), 6), gzip.compress(metrics.SerializeToString(), 6)


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    sent_bytes: int = 0


def _proc(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, RSS bytes, peak RSS bytes) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return cpu, rss, hwm


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _developer(dev: Developer, client: httpx.AsyncClient, base: str, start: float, end: float,
                     phase: float, stats: Stats) -> None:
    k = 0
    while True:
        at = start + phase + 60.0 * k
        if at >= end:
            return
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        logs, metrics = dev.batch()
        for path, body in (("/v1/logs", logs), ("/v1/metrics", metrics)):
            t = time.monotonic()
            for attempt in range(6):  # as the SDK: retry what was not answered, or answered 429/5xx
                try:
                    r = await client.post(base + path, content=body, headers={
                        "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
                    if r.status_code == 200:
                        stats.latencies.append(time.monotonic() - t)
                        break
                    stats.errors[str(r.status_code)] = stats.errors.get(str(r.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    stats.errors[type(exc).__name__] = stats.errors.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(2 ** attempt)
            stats.sent_bytes += len(body)
        k += 1


async def _run(devs: list[Developer], base: str, minutes: float, pid: int, stats: Stats) -> list[dict[str, float]]:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    rows: list[dict[str, float]] = []
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        start = time.monotonic()
        end = start + minutes * 60
        rng = random.Random(7)
        tasks = [asyncio.create_task(_developer(d, client, base, start, end, rng.uniform(0, 60), stats))
                 for d in devs]
        cpu0, _, _ = _proc(pid)
        t0, seen = time.monotonic(), 0
        while not all(t.done() for t in tasks):
            await asyncio.sleep(min(60.0, max(0.1, end - time.monotonic() + 1)))
            cpu1, rss, hwm = _proc(pid)
            t1 = time.monotonic()
            window = stats.latencies[seen:]
            rows.append({"minute": round((t1 - start) / 60, 2), "answered": len(window),
                         "p50_ms": _pct(window, 0.5) * 1000, "p99_ms": _pct(window, 0.99) * 1000,
                         "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0), "rss_mb": rss / 2**20, "peak_rss_mb": hwm / 2**20})
            print("  minute {minute:5.2f}: {answered:5d} answered, p50 {p50_ms:6.1f} ms, p99 {p99_ms:7.1f} ms, "
                  "exporter CPU {cpu_pct:5.1f}% of a core, RSS {rss_mb:6.1f} MB".format(**rows[-1]), flush=True)
            cpu0, t0, seen = cpu1, t1, len(stats.latencies)
        await asyncio.gather(*tasks)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--developers", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="otlp-", dir=out))
    port, otlp_port = free_port(), free_port()
    config = work / "config.yaml"
    config.write_text(json.dumps({
        "state_dir": str(work / "state"),
        "sources": [{"name": "fleet", "kind": "otlp", "listen": f"127.0.0.1:{otlp_port}",
                     "attributes": ["team", "user.email"], "attribute_labels": "top"}],
        "pools": [{"name": team, "credit_usd": 100_000, "team": team,
                   "match": {"sources": ["fleet"], "telemetry": {"team": [team]}}} for team in TEAMS]
        + [{"name": "fleet", "credit_usd": 1_000_000, "match": {"sources": ["fleet"]}}],
    }))
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_ADMIN_API_KEY", "CLAUDE_CONFIG_DIR")}
    env["HOME"] = str(work)
    log = open(work / "exporter.log", "wb")  # noqa: SIM115 - the child's for its life
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "--log-format", "json", "serve", "--config",
                             str(config), "--listen", f"127.0.0.1:{port}"], env=env, stdout=log, stderr=log, cwd=ROOT)
    base = f"http://127.0.0.1:{otlp_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.post(base + "/v1/logs", content=b"", headers={"Content-Type": "application/x-protobuf"})
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"the exporter did not start; see {work / 'exporter.log'}") from None
                time.sleep(0.2)
        rng = random.Random(args.seed)
        devs = [Developer(n, random.Random(rng.getrandbits(64))) for n in range(args.developers)]
        print(f"{args.developers} developers, a logs and a metrics batch each a minute, for {args.minutes:g} "
              f"minutes, against 127.0.0.1:{otlp_port} (pid {proc.pid}); {os.cpu_count()} cores", flush=True)
        stats = Stats()
        cpu_start, _, _ = _proc(proc.pid)
        wall = time.monotonic()
        rows = asyncio.run(_run(devs, base, args.minutes, proc.pid, stats))
        cpu_end, rss, hwm = _proc(proc.pid)
        wall = time.monotonic() - wall
        # the fleet's total, once the refresher has published the last commits
        want = sum((d.usd for d in devs), Decimal(0))
        got = 0.0
        for _ in range(60):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                samples = parse_metrics(r.read().decode())
            got = sum(v for (name, labels), v in samples.items()
                      if name == "claude_estimated_cost_usd_total" and dict(labels).get("source") == "fleet")
            if abs(got - float(want)) < 0.005:
                break
            time.sleep(1)
        lat = stats.latencies
        summary = {
            "developers": args.developers, "minutes": args.minutes, "requests_answered": len(lat),
            "errors": stats.errors, "api_requests_sent": sum(d.requests for d in devs),
            "ingest_p50_ms": round(_pct(lat, 0.5) * 1000, 1), "ingest_p99_ms": round(_pct(lat, 0.99) * 1000, 1),
            "ingest_max_ms": round(max(lat, default=0) * 1000, 1),
            "ingest_mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None,
            "exporter_cpu_pct_of_a_core": round(100 * (cpu_end - cpu_start) / wall, 1),
            "exporter_rss_mb": round(rss / 2**20, 1), "exporter_peak_rss_mb": round(hwm / 2**20, 1),
            "state_mb": round(sum(f.stat().st_size for f in (work / "state").iterdir()) / 2**20, 1),
            "sent_mb": round(stats.sent_bytes / 2**20, 1),
            "total_usd_metrics": round(got, 6), "total_usd_truth": str(want),
            "totals_equal": abs(got - float(want)) < 0.005, "per_minute": rows,
        }
        print(json.dumps({k: v for k, v in summary.items() if k != "per_minute"}, indent=1))
        (out / "otlp_results.json").write_text(json.dumps(summary, indent=1))
        return 0 if summary["totals_equal"] and not stats.errors else 1
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


if __name__ == "__main__":
    raise SystemExit(main())
