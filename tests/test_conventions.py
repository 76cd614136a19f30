"""What a Prometheus operator expects of an exporter: the exporter-toolkit flag spellings, the
client library's process and Python families, a build_info with version, revision and Python,
one token_type vocabulary across billed and estimated series, and an exposition that
``promtool check metrics`` finds nothing to say about.

The live part runs ``serve --demo`` (no key, no logs, a simulated organisation on 127.0.0.1)
started with the toolkit's ``--web.listen-address``.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.buildinfo import REVISION_ENV, revision
from exporter.cli import build_parser
from exporter.core.records import TOKEN_TYPES
from exporter.demo.org import SPEED_ENV
from exporter.expose.metrics import _token_type
from tests.conftest import ROOT, Samples, clean_env, free_port, http_get, parse_metrics, run_cli

# --------------------------------------------------------------------------- flags


def test_the_exporter_toolkit_flag_spellings_are_accepted_beside_ours() -> None:
    parser = build_parser()
    ours = parser.parse_args(["serve", "--listen", "127.0.0.1:9833", "--web-config-file", "web.yml"])
    toolkit = parser.parse_args(["serve", "--web.listen-address", "127.0.0.1:9833", "--web.config.file", "web.yml"])
    assert (ours.listen, ours.web_config_file) == (toolkit.listen, toolkit.web_config_file) == (
        "127.0.0.1:9833", "web.yml")
    assert parser.parse_args(["serve", "--web.listen-address=:9833"]).listen == ":9833"
    checked = parser.parse_args(["validate-config", "--web.config.file", "web.yml"])
    assert checked.web_config_file == "web.yml"


def test_web_config_file_under_the_toolkit_spelling_is_read(tmp_path: Path) -> None:
    config, web = tmp_path / "config.yaml", tmp_path / "web.yml"
    config.write_text("sources: []\n", encoding="utf-8")
    web.write_text("tls_server_config: {cert_file: missing.crt}\n", encoding="utf-8")
    r = run_cli("validate-config", str(config), "--web.config.file", str(web), env=clean_env())
    assert r.returncode == 2 and "tls_server_config.cert_file" in r.stderr, r.stderr
    web.write_text("basic_auth_users: {}\n", encoding="utf-8")
    r = run_cli("validate-config", str(config), "--web.config.file", str(web), env=clean_env())
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- build info and vocabulary


def test_revision_is_a_commit_of_this_checkout_a_given_one_or_unknown(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(REVISION_ENV, raising=False)
    got = revision()
    git = shutil.which("git")
    if git and (ROOT / ".git").exists():
        head = subprocess.run([git, "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
        if head.returncode == 0:
            assert got == head.stdout.strip()[:12]
    assert re.fullmatch(r"[0-9a-f]{12}|unknown", got)
    # a package outside any checkout (an installed wheel) cannot tell
    assert revision(tmp_path / "site-packages" / "exporter") == "unknown"
    # a checkout on a branch in packed-refs, and on a detached HEAD
    git_dir = tmp_path / "co" / ".git"
    git_dir.mkdir(parents=True)
    sha = "0123456789abcdef0123456789abcdef01234567"
    (git_dir / "HEAD").write_text("ref: refs/heads/main\n")
    (git_dir / "packed-refs").write_text(f"# pack-refs with: peeled\n{sha} refs/heads/main\n")
    assert revision(tmp_path / "co" / "exporter") == sha[:12]
    (git_dir / "HEAD").write_text(sha + "\n")
    assert revision(tmp_path / "co" / "exporter") == sha[:12]
    (git_dir / "HEAD").write_text("ref: refs/heads/../../../../etc/passwd\n")
    assert revision(tmp_path / "co" / "exporter") == "unknown"
    # an image says its own, as a short label value or not at all
    monkeypatch.setenv(REVISION_ENV, "v0.1.0-3-gabc1234")
    assert revision() == "v0.1.0-3-gabc1234"
    monkeypatch.setenv(REVISION_ENV, 'bad"value\n')
    assert revision() == "unknown"


def test_the_cost_reports_token_types_take_the_estimates_words() -> None:
    api = {"uncached_input_tokens": "input", "output_tokens": "output", "cache_read_input_tokens": "cache_read",
           "cache_creation.ephemeral_5m_input_tokens": "cache_write_5m",
           "cache_creation.ephemeral_1h_input_tokens": "cache_write_1h"}
    assert {_token_type(k) for k in api} == set(TOKEN_TYPES)
    for raw, word in api.items():
        assert _token_type(raw) == word
        assert _token_type(word) == word
    assert _token_type(None) == "none"
    assert _token_type("cache_creation.ephemeral_9h_input_tokens") == "other"


# --------------------------------------------------------------------------- a live exporter


@pytest.fixture(scope="module")
def demo_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The /metrics text of ``serve --demo`` once billed and estimated series are both in it."""
    log = tmp_path_factory.mktemp("conventions") / "exporter.log"
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--log-format", "json", "serve", "--demo",
             "--web.listen-address", f"127.0.0.1:{port}"],
            env=clean_env(**{SPEED_ENV: "300"}), stdout=out, stderr=out, cwd=ROOT)
    try:
        deadline = time.monotonic() + 90
        text = ""
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                code, body = http_get(f"http://127.0.0.1:{port}/metrics", timeout=2.0)
            except OSError:
                code, body = 0, b""
            text = body.decode() if code == 200 else ""
            s = parse_metrics(text) if text else {}
            if _names(s) >= {"claude_billed_cost_usd", "claude_estimated_tokens_total", "claude_pool_remaining_usd"}:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no billed and estimated series in 90 s:\n{log.read_text()[-3000:]}")
        yield text
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _names(s: Samples) -> set[str]:
    return {name for name, _ in s}


def test_live_metrics_pass_promtool_check_metrics(demo_metrics: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    out = subprocess.run([promtool, "check", "metrics"], input=demo_metrics, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


def test_live_metrics_carry_the_runtime_families_and_the_build(demo_metrics: str) -> None:
    s = parse_metrics(demo_metrics)
    names = _names(s)
    for family in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                   "process_start_time_seconds", "python_info", "python_gc_collections_total"):
        assert family in names, family
    (labels,) = [dict(lb) for name, lb in s if name == "claude_exporter_build_info"]
    assert set(labels) == {"version", "revision", "python_version"}
    assert labels["python_version"] == platform.python_version()
    assert labels["revision"] == "unknown" or re.fullmatch(r"[0-9a-f]{12}", labels["revision"])


def test_billed_and_estimated_series_speak_one_token_vocabulary(demo_metrics: str) -> None:
    s = parse_metrics(demo_metrics)
    words = set(TOKEN_TYPES)
    by_family: dict[str, set[str]] = {}
    for name, lb in s:
        labels = dict(lb)
        if "token_type" in labels:
            by_family.setdefault(name, set()).add(labels["token_type"])
    assert by_family["claude_billed_cost_usd"] - {"none"} == words, by_family
    for family in ("claude_estimated_tokens_total", "claude_billed_tokens", "claude_block_tokens"):
        assert by_family.get(family, set()) <= words, (family, by_family.get(family))
    assert by_family["claude_estimated_tokens_total"] == words
