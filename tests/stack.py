"""A real Prometheus and Alertmanager for end-to-end tests, on free 127.0.0.1 ports.

Both run as subprocesses from the system packages (Debian: ``prometheus`` and
``prometheus-alertmanager``) with their data in a temporary folder; a test that needs
them skips with the package to install when they are absent. ``WebhookRecorder`` is a
tiny HTTP server that keeps every JSON body POSTed to it: it stands for the pager and the
team chat in tests. ``scale_durations`` and ``alertmanager_test_config`` turn the shipped
rule and Alertmanager files into fast test copies without retyping them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, TypeVar

import pytest
import yaml

from tests.conftest import free_port

T = TypeVar("T")

PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
}


def require_binary(*names: str) -> str:
    """The first of ``names`` on PATH, or skip the test saying which package provides it."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    package = PACKAGES.get(names[0], names[0])
    pytest.skip(f"{' / '.join(names)} not installed (Debian: apt-get install {package})")


def wait_until(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Call ``probe`` until it returns something other than None/False; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except (OSError, AssertionError, KeyError, ValueError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def _http_json(url: str, data: bytes | None = None, timeout: float = 5.0) -> Any:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


# --------------------------------------------------------------------------- durations

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
            "y": 31_536_000_000}


def duration_ms(text: str) -> int:
    """A Prometheus/Alertmanager duration (``1h30m``, ``500ms``) in milliseconds."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * _UNIT_MS[u] for n, u in parts)


def scaled(text: str, factor: int) -> str:
    """``text`` divided by ``factor`` as milliseconds (``5m`` / 60 -> ``5000ms``)."""
    return f"{duration_ms(text) // factor}ms"


_FOR_LINE = re.compile(r"^(\s*for:\s*)(\S+)\s*$", re.MULTILINE)


def scale_durations(rule_text: str, factor: int) -> str:
    """The rule file with every ``for:`` divided by ``factor`` (1 minute becomes 1 s at 60).

    The shipped ``for:`` values (2m to 30m) are right for production and far too slow for a
    test; dividing them all by the same factor keeps their order (the warning still waits
    longer than the critical).
    """
    out, n = _FOR_LINE.subn(lambda m: m.group(1) + scaled(m.group(2), factor), rule_text)
    if n == 0:
        raise ValueError("no `for:` found to shorten")
    return out


# --------------------------------------------------------------------------- webhook recorder


@dataclass(frozen=True)
class Received:
    path: str
    body: dict[str, Any]
    at: float  # time.monotonic() on arrival

    def alerts(self, status: str | None = None) -> list[dict[str, Any]]:
        return [a for a in self.body.get("alerts", []) if status is None or a.get("status") == status]

    def has(self, alertname: str, status: str) -> bool:
        return any(a["labels"].get("alertname") == alertname for a in self.alerts(status))


class WebhookRecorder:
    """Records every JSON POST (Alertmanager's webhook body) by path; answers 200."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with recorder._lock:
                    recorder.received.append(Received(self.path, json.loads(body or b"{}"), time.monotonic()))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="webhook-recorder")

    def start(self) -> WebhookRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def first(self, path: str, alertname: str, status: str) -> Received | None:
        """The first notification on ``path`` carrying ``alertname`` with ``status``."""
        return next((r for r in self.at(path) if r.has(alertname, status)), None)


# --------------------------------------------------------------------------- processes


class _Daemon:
    """A server subprocess with its output in a log file, ready when ``/-/ready`` answers 200."""

    name = "daemon"

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> Self:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's life
        self.proc = subprocess.Popen([self.binary, *self.args()], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir)
        log.close()

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1.0) as r:
                    return r.status == 200
            except (OSError, urllib.error.HTTPError):
                return False

        try:
            wait_until(ready, timeout, f"{self.name} to be ready", interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Prometheus(_Daemon):
    """``prometheus`` with a config file, its TSDB in ``workdir``, the lifecycle API on."""

    name = "prometheus"

    def __init__(self, workdir: Path, config: Mapping[str, Any], binary: str | None = None) -> None:
        super().__init__(binary or require_binary("prometheus"), workdir)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")

    def args(self) -> list[str]:
        return [
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ]

    def api(self, path: str, **params: str | float) -> Any:
        query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
        body = _http_json(f"{self.url}/api/v1/{path}", data=query.encode() if params else None)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant vector result of ``expr`` (scalars come back as one unlabelled sample)."""
        data = self.api("query", query=expr, **({"time": at} if at is not None else {}))
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def values(self, expr: str, by: str) -> dict[str, str]:
        """Instant result as {label ``by``: value string}; the value keeps Prometheus's digits."""
        return {s["metric"].get(by, ""): s["value"][1] for s in self.query(expr)}

    def alerts(self) -> list[dict[str, Any]]:
        return self.api("alerts")["alerts"]

    def alert_state(self, alertname: str, **labels: str) -> str | None:
        """``pending``/``firing`` for the alert with these labels, None when it is not active."""
        for a in self.alerts():
            if a["labels"].get("alertname") == alertname and all(a["labels"].get(k) == v for k, v in labels.items()):
                return a["state"]
        return None

    def targets_up(self) -> dict[str, bool]:
        return {t["scrapeUrl"]: t["health"] == "up" for t in self.api("targets")["activeTargets"]}


class Alertmanager(_Daemon):
    """``prometheus-alertmanager`` with a config file, clustering off, its data in ``workdir``."""

    name = "alertmanager"

    def __init__(self, workdir: Path, config: Mapping[str, Any], binary: str | None = None) -> None:
        super().__init__(binary or require_binary("prometheus-alertmanager", "alertmanager"), workdir)
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")

    def args(self) -> list[str]:
        return [
            f"--config.file={self.config_path}",
            f"--storage.path={self.workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
        ]

    def alerts(self, active: bool = True) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds (v2 API); inhibited ones included."""
        flag = "true" if active else "false"
        return _http_json(f"{self.url}/api/v2/alerts?active={flag}&inhibited=true&silenced=true")


# --------------------------------------------------------------------------- configs


def prometheus_config(*, rule_files: Iterable[Path], alertmanager: str, targets: Sequence[str],
                      job: str = "claude-budget-exporter", interval: str = "1s") -> dict[str, Any]:
    """Scrape ``targets`` as ``job`` and evaluate rules every ``interval``; alerts to ``alertmanager``."""
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
    }


_ROUTE_TIMERS = ("group_wait", "group_interval", "repeat_interval")


def alertmanager_test_config(shipped: Mapping[str, Any], *, urls: Mapping[str, Sequence[str]],
                             factor: int) -> dict[str, Any]:
    """The shipped Alertmanager config with webhook URLs replaced and route timers divided.

    ``urls`` maps a URL of the shipped file (``http://exporter:9833/alertmanager/webhook``)
    to the URLs that replace it; each replacement keeps the original entry's other keys.
    Every URL in the shipped file must be mapped, so nothing is sent off this machine.
    """
    config = json.loads(json.dumps(shipped))  # deep copy

    def scale_route(route: dict[str, Any]) -> None:
        for key in _ROUTE_TIMERS:
            if key in route:
                route[key] = scaled(route[key], factor)
        for child in route.get("routes", []):
            scale_route(child)

    scale_route(config["route"])
    for receiver in config["receivers"]:
        hooks = []
        for hook in receiver.get("webhook_configs", []):
            if hook["url"] not in urls:
                raise KeyError(f"receiver {receiver['name']}: no test URL for {hook['url']}")
            hooks += [{**hook, "url": u} for u in urls[hook["url"]]]
        receiver["webhook_configs"] = hooks
        other = set(receiver) - {"name", "webhook_configs"}
        if other:
            raise KeyError(f"receiver {receiver['name']}: cannot point {sorted(other)} at a test server")
    return config

