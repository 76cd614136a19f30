"""Hostile-input benchmark: a misbehaving Admin API and a flood of breaker alerts against ``serve``.

Starts a stand-in Admin API on 127.0.0.1 that answers each poll with one kind of misbehaviour
at a time (endless unique pages, a 200 MB page, a body trickled a byte every 5 s, amounts of
"1e400" and "1e999999999", a bucket date out of range), with a good answer between them, and
``serve`` polling it every half second. For each kind it prints how long the poll took to end
(the source marked down), the refusal counted, and whether /metrics and /healthz kept answering;
then it posts 40 webhook calls of 6,000 unique alerts each and prints the sizes of the answers.
Throughout, the exporter's peak RSS (VmHWM) is read from /proc.

Targets (issue: hold under attack): the exporter keeps serving, marks the source down, each
poll ends within the request deadline (60 s), RSS stays under 200 MB, answers stay small.
Not a timed test: it measures and prints; ``--strict`` turns a missed target into exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scrape import free_port, proc_rss_mb  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-ant-admin01-bench-hostile-0123456789"
TARGET_RSS_MB = 200.0
DEADLINE_S = 60.0  # the client's overall deadline per request (exporter.billing.client.REQUEST_DEADLINE)
KINDS = ("endless_pages", "huge_page", "trickle", "amount_1e400", "amount_1e999999999", "date_out_of_range")


def _day(offset: int) -> str:
    d = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=offset)
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def _report(amount: str = "100", start: str | None = None, *, more: str | None = None) -> bytes:
    results = [{"currency": "USD", "amount": amount, "workspace_id": None, "description": None, "model": None,
                "cost_type": None, "token_type": None, "service_tier": None, "context_window": None}]
    data = [{"starting_at": start or _day(-1), "ending_at": _day(0), "results": results}]
    return json.dumps({"data": data, "has_more": more is not None, "next_page": more}).encode()


class Hostile(BaseHTTPRequestHandler):
    mode = "good"
    pages = 0
    stop = threading.Event()

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, body: bytes, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        mode = type(self).mode
        if "usage_report" in self.path or mode == "good":
            self._send(json.dumps({"data": [], "has_more": False, "next_page": None}).encode()
                       if "usage_report" in self.path else _report())
            return
        try:
            if mode == "endless_pages":
                type(self).pages += 1
                self._send(_report(more=f"page-{type(self).pages}-{os.urandom(8).hex()}"))
            elif mode == "huge_page":
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()  # no length: streamed until the client gives up
                chunk = b" " * (1 << 20)
                for _ in range(200):
                    self.wfile.write(chunk)
            elif mode == "trickle":
                body = _report()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                for b in body:
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
                    if type(self).stop.wait(5):
                        return
            elif mode.startswith("amount_"):
                self._send(_report(amount=mode.removeprefix("amount_")))
            elif mode == "date_out_of_range":
                self._send(_report(start="0001-01-01T00:00:00+05:00"))
        except OSError:
            pass  # the client hung up: what the exporter is meant to do


def metrics(port: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
    return out


def up(port: int) -> float | None:
    return metrics(port).get('claude_source_up{source="admin_api"}')


def refused(port: int) -> float:
    return sum(v for k, v in metrics(port).items() if k.startswith("claude_admin_api_refused_total"))


def healthz_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait(pred, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if pred():
                return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--alerts", type=int, default=6000)
    ap.add_argument("--posts", type=int, default=40)
    args = ap.parse_args()

    api = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    api.daemon_threads = True
    threading.Thread(target=api.serve_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    (tmp / "logs").mkdir()
    cfg = tmp / "config.yaml"
    cfg.write_text(f"""refresh_interval: 1s
sources: [{{name: claude-code, kind: claude_code, paths: ['{tmp / "logs"}']}}]
admin_api: {{key_env: BENCH_KEY, base_url: "http://127.0.0.1:{api.server_address[1]}", poll_interval: 500ms,
             api: legacy}}
pools: [{{name: team, credit_usd: 100, match: {{workspaces: [default]}}}}]
""")
    port = free_port()
    env = {**os.environ, "BENCH_KEY": KEY, "CLAUDE_BUDGET_EXPORTER_FAST_POLL": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "serve", "--config", str(cfg), "--state-dir",
                             str(tmp / "state"), "--listen", f"127.0.0.1:{port}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    failures: list[str] = []
    body = b""
    try:
        if wait(lambda: up(port) == 1, 60) is None:
            print("the exporter never polled the stand-in API")
            return 1
        print(f"{'misbehaviour':<22} {'poll ended':>11} {'refused +':>10} {'scrapes':>8} {'healthz':>8} {'peak RSS':>9}")
        for kind in KINDS:
            Hostile.mode = "good"
            wait(lambda: up(port) == 1, 60)
            before = refused(port)
            Hostile.mode = kind
            took = wait(lambda: up(port) == 0, DEADLINE_S + 30)
            scrapes_ok = wait(lambda: metrics(port) is not None, 5) is not None
            health = healthz_ok(port)
            grew = refused(port) - before
            _now, peak = proc_rss_mb(proc.pid)
            print(f"{kind:<22} {'never' if took is None else f'{took:.1f} s':>11} {grew:>10.0f} "
                  f"{'ok' if scrapes_ok else 'FAIL':>8} {'ok' if health else 'FAIL':>8} {peak:>7.0f} MB")
            if took is None or took > DEADLINE_S + 5 or not scrapes_ok or not health:
                failures.append(kind)
        Hostile.mode = "good"
        recovered = wait(lambda: up(port) == 1, 60)
        print(f"recovered after the last one: {'no' if recovered is None else f'{recovered:.1f} s'}")

        # the webhook flood: unique alerts for the pool, 40 posts
        sizes = []
        for n in range(args.posts):
            # as small as an alert gets, so that 6,000 fit under the webhook's 1 MiB body cap
            alerts = [{"status": "firing", "labels": {"breaker": "open", "pool": "team", "n": f"{n}-{i}"},
                       "fingerprint": f"{n:03d}{i:05d}"} for i in range(args.alerts)]
            body = json.dumps({"version": "4", "status": "firing", "alerts": alerts},
                              separators=(",", ":")).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/alertmanager/webhook", data=body,
                                         headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    sizes.append(len(r.read()))
            except urllib.error.HTTPError as e:
                sizes.append(len(e.read()))
            except urllib.error.URLError:
                sizes.append(0)  # refused before the body was read (past the body cap)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/breaker/team", timeout=10) as r:
                breaker = len(r.read())
        except urllib.error.HTTPError as e:
            breaker = len(e.read())
        _now, peak = proc_rss_mb(proc.pid)
        print(f"webhook flood: {args.posts} posts x {args.alerts} alerts ({len(body) / 1e6:.1f} MB each): "
              f"answers {min(sizes)}-{max(sizes)} bytes, /breaker/team {breaker} bytes, peak RSS {peak:.0f} MB")
        if peak > TARGET_RSS_MB:
            failures.append(f"peak RSS {peak:.0f} MB over {TARGET_RSS_MB:.0f} MB")
        if breaker > 64 * 1024:
            failures.append(f"/breaker answer of {breaker} bytes")
    finally:
        Hostile.stop.set()
        proc.terminate()
        proc.wait(10)
        api.shutdown()
    print("targets: " + ("all met" if not failures else "MISSED: " + ", ".join(failures)))
    return 1 if failures and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
