"""Shared fixtures: the exporter as a real subprocess on a free port, and a metrics reader."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without anything that would point the exporter at real data."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("ANTHROPIC_ADMIN_API_KEY", "CLAUDE_CONFIG_DIR", "NO_COLOR")}
    env["HOME"] = env.get("TEST_HOME", "/nonexistent-home")
    env.update(extra)
    return env


class Exporter:
    """``python -m exporter serve`` on 127.0.0.1 and a free port."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.args = args
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: float = 30.0) -> Exporter:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--log-format", "json", "serve",
             "--listen", f"127.0.0.1:{self.port}", *self.args],
            env=self.env, stdout=log, stderr=log, cwd=ROOT,
        )
        log.close()
        if wait <= 0:
            return self
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exporter exited {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                code, _ = http_get(self.url + "/healthz", timeout=1.0)
                if code == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"exporter not healthy in {wait}s:\n{self.log_path.read_text()}")

    def metrics(self) -> Samples:
        code, body = http_get(self.url + "/metrics")
        assert code == 200
        return parse_metrics(body.decode())

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def wait_for(self, predicate, timeout: float = 20.0, what: str = "condition") -> Samples:
        deadline = time.monotonic() + timeout
        last: Samples = {}
        while time.monotonic() < deadline:
            last = self.metrics()
            if predicate(last):
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def exporter_factory(tmp_path: Path) -> Iterator:
    started: list[Exporter] = []

    def make(args: list[str], env: Mapping[str, str] | None = None) -> Exporter:
        e = Exporter(args, env or clean_env(), tmp_path / f"exporter-{len(started)}.log")
        started.append(e)
        return e

    yield make
    for e in started:
        e.stop()


def run_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120.0,
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], env=dict(env or clean_env()),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


# ---------------------------------------------------------------------------------- the whole suite

ADMIN_KEY_RE = re.compile(rb"sk-ant-admin01-[A-Za-z0-9_\-]{8,}")


@pytest.fixture(scope="session", autouse=True)
def no_admin_key_in_any_output(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole suite: no file any test left behind (exporter logs, state databases, WAL
    files, reports, configs) holds an admin key. Files that hold one on purpose are named for it."""
    yield
    root = tmp_path_factory.getbasetemp()
    leaks = []
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink() or "key" in path.name.lower():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if ADMIN_KEY_RE.search(data):
            leaks.append(str(path.relative_to(root)))
    assert not leaks, f"an admin key was written to: {leaks[:10]}"


# ---------------------------------------------------------------------------------- the two layers

# what starts a process: the exporter, the command, Prometheus, Alertmanager, a browser, a helper read
_STARTS_A_PROCESS = re.compile(r"run_cli\(|exporter_factory|subprocess\.|Popen\(|Prometheus\(|Alertmanager\("
                               r"|chromium|ProcessPool|start_method|_run_report\(|python_m\(")


def _starts_a_process(obj: object, seen: set[int]) -> bool:
    import inspect

    if id(obj) in seen:
        return False
    seen.add(id(obj))
    try:
        source = inspect.getsource(obj)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False
    if _STARTS_A_PROCESS.search(source):
        return True
    # the module's own helpers it calls by name
    module = inspect.getmodule(obj)
    for name in set(re.findall(r"\b([_a-z][_a-z0-9]*)\(", source)):
        helper = getattr(module, name, None)
        if inspect.isfunction(helper) and helper.__module__ == getattr(module, "__name__", None):
            if _starts_a_process(helper, seen):
                return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that starts a process (directly, through a helper of its module or a fixture)
    ``subprocess``: ``make test-fast`` leaves those out, ``make test`` runs everything."""
    for item in items:
        if item.get_closest_marker("e2e") or item.get_closest_marker("subprocess"):
            continue
        fn = getattr(item, "function", None)
        seen: set[int] = set()
        found = fn is not None and _starts_a_process(fn, seen)
        if not found:
            fixtures = getattr(item, "_fixtureinfo", None)
            for name in getattr(fixtures, "names_closure", ()):
                defs = fixtures.name2fixturedefs.get(name, ()) if fixtures is not None else ()
                if any(_starts_a_process(d.func, seen) for d in defs):
                    found = True
                    break
        if found:
            item.add_marker(pytest.mark.subprocess)


def examples(n: int) -> int:
    """Hypothesis examples for a property test: all of them in ``make test``, a tenth in the fast
    layer (``make test-fast`` sets TEST_LAYER=fast), where a quick signal matters more."""
    return max(10, n // 10) if os.environ.get("TEST_LAYER") == "fast" else n


FAST_LAYER = os.environ.get("TEST_LAYER") == "fast"
