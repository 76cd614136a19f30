"""What a person sees: the status page in a real headless browser, and the report table.

The page tests render ``/`` of a running exporter in Debian's ``chromium`` (``--dump-dom``
for what the browser built, ``--screenshot`` for a picture kept under ``test-artifacts/``)
and read pool names, figures and breaker states from the rendered DOM. They skip when
chromium is not installed. ``UPDATE_DOCS_SCREENSHOT=1`` also refreshes
``docs/status-page.png`` for the README.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import pytest

from exporter.demo.org import SPEED_ENV
from exporter.expose.report import write_table
from tests.conftest import ROOT, clean_env, http_get, sample

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless-browser test: Debian package 'chromium' is not installed "
                             "(apt-get install -y chromium)")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", f"--user-data-dir={profile}", *args],
        check=False, capture_output=True, text=True, timeout=90, env={**os.environ, "HOME": str(tmp_path)})


def dump_dom(tmp_path: Path, url: str) -> str:
    r = _chromium(tmp_path, "--dump-dom", url)
    assert r.returncode == 0 and "<html" in r.stdout, r.stderr[-2000:]
    return r.stdout


def screenshot(tmp_path: Path, url: str, out: Path, width: int, height: int) -> tuple[int, int]:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    r = _chromium(tmp_path, f"--screenshot={out}", f"--window-size={width},{height}", url)
    assert r.returncode == 0 and out.exists(), r.stderr[-2000:]
    head = out.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


class Page(HTMLParser):
    """The rendered DOM as a person reads it: text per pool section and per source row."""

    def __init__(self, dom: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict[str, str]]] = []
        self.pools: dict[str, dict[str, str]] = {}  # pool -> {"breaker": ..., "text": ...}
        self.sources: dict[str, str] = {}
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(dom)

    BLOCKS: ClassVar[set[str]] = {"td", "th", "tr", "dt", "dd", "div", "p", "section", "header", "footer", "h1", "h2", "h3", "li", "br"}

    def _gap(self, tag: str) -> None:
        """Cells and blocks are apart on screen: keep their words apart in the text too."""
        if tag in self.BLOCKS:
            self.handle_data(" ")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        self._gap(tag)
        if tag in ("meta", "link", "img", "br", "input"):
            return
        self.stack.append((tag, a))
        if "data-pool" in a:
            self.pools[a["data-pool"]] = {"breaker": a.get("data-breaker", ""), "text": ""}

    def handle_endtag(self, tag: str) -> None:
        self._gap(tag)
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if any(t in ("style", "title") for t, _ in self.stack):
            return
        self.text.append(data)
        for _tag, a in self.stack:
            if "data-pool" in a:
                self.pools[a["data-pool"]]["text"] += data
            if "data-source" in a:
                self.sources[a["data-source"]] = self.sources.get(a["data-source"], "") + data + " "

    def pool_text(self, pool: str) -> str:
        return " ".join(self.pools[pool]["text"].split())

    @property
    def all_text(self) -> str:
        return " ".join("".join(self.text).split())


def _stable_breaker(url: str, pool: str, timeout: float = 30.0) -> dict:
    """The pool's breaker JSON once two reads a few seconds apart agree (the last spend ingested)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        body = json.loads(http_get(f"{url}/breaker/{pool}")[1])
        if last is not None and body == last:
            return body
        last = body
        time.sleep(3)
    raise AssertionError(f"breaker of {pool} kept changing: {last}")


@needs_chromium
def test_demo_status_page_shows_pools_figures_and_the_open_breaker(exporter_factory, tmp_path: Path):
    exp = exporter_factory(["--demo"], env=clean_env(**{SPEED_ENV: "600"})).start(wait=60)
    exp.wait_for(lambda m: sample(m, "claude_breaker_open", pool="agent-sdk") == 1, timeout=120,
                 what="the demo's agent-sdk breaker to open")
    breaker = _stable_breaker(exp.url, "agent-sdk")
    assert breaker["state"] == "open"

    dom = dump_dom(tmp_path, exp.url + "/")
    page = Page(dom)
    assert list(page.pools) == ["agent-sdk", "interactive", "team-api"]
    agent = page.pool_text("agent-sdk")
    assert "breaker OPEN" in agent and page.pools["agent-sdk"]["breaker"] == "open"
    # the figure a person reads is the one the breaker endpoint decides on
    assert f"${breaker['remaining_usd']:,.2f} left of $200.00" in agent, agent
    assert "team platform" in agent and "plan max20x" in agent
    assert re.search(r"Drift 0\.9\d\d 0\.9\d\d –", agent), agent  # period, yesterday, today (no complete day)
    assert re.search(r"Burn rate \$\d[\d,]*\.\d\d/h", agent), agent
    assert re.search(r"Runs dry \d{4}-\d\d-\d\d \d\d:\d\d UTC", agent), agent
    assert "below the open_below threshold of 5%" in agent
    for pool, credit in (("interactive", "$100.00"), ("team-api", "$600.00")):
        text = page.pool_text(pool)
        assert "breaker closed" in text and page.pools[pool]["breaker"] == "closed", text
        assert re.search(rf"\$\d[\d,]*\.\d\d left of {re.escape(credit)} \d+\.\d%", text), text
        assert re.search(r"Billed \$\d[\d,]*\.\d\d \$\d[\d,]*\.\d\d \$\d[\d,]*\.\d\d", text), text
        assert re.search(r"Estimated \$\d[\d,]*\.\d\d \$\d[\d,]*\.\d\d \$\d[\d,]*\.\d\d", text), text
    assert "estimated from usage report" in page.pool_text("team-api")
    for source in ("claude-code", "admin_api"):
        assert re.match(rf"{source} \S+ up (just now|\d+ s ago)", " ".join(page.sources[source].split())), \
            page.sources
    assert "Demo: a simulated organisation" in page.all_text
    # each pool's period as a chart the exporter drew (inline SVG): the days so far, the credit, the projection
    for pool in ("agent-sdk", "interactive", "team-api"):
        section = re.search(rf'<section[^>]*data-pool="{pool}".*?</section>', dom, re.S)
        assert section is not None
        chart = section.group(0)
        assert re.search(r'<svg[^>]*role="img"', chart) and f"Spend of {pool} this period" in chart, chart
        assert len(re.findall(r'<rect[^>]*class="billed"', chart)) >= 2, chart  # the demo bills from day one
        assert re.search(r'<line[^>]*class="credit"', chart) and re.search(r'<line[^>]*class="proj"', chart)
        assert re.search(r"\$[\d,.]+ projected", chart)
    assert not [t for t, _a in page.tags if t in ("image", "use", "foreignobject")]

    hrefs = {a.get("href") for t, a in page.tags if t == "a"}
    assert {"/metrics", "/breaker/agent-sdk", "/breaker/interactive", "/breaker/team-api"} <= hrefs
    # self-contained: nothing fetched from anywhere, refreshing itself, sized for phones
    assert all(h.startswith("/") for h in hrefs)
    assert not [t for t, a in page.tags if t in ("script", "link", "img", "iframe") or "src" in a]
    metas = [a for t, a in page.tags if t == "meta"]
    assert any(a.get("http-equiv") == "refresh" and int(a["content"]) <= 60 for a in metas)
    assert any(a.get("name") == "viewport" and "width=device-width" in a["content"] for a in metas)

    size = screenshot(tmp_path, exp.url + "/", ARTIFACTS / "status-page.png", 1200, 1600)
    assert size == (1200, 1600)
    assert (ARTIFACTS / "status-page.png").stat().st_size > 40_000, "a blank page would compress to little"
    assert screenshot(tmp_path, exp.url + "/", ARTIFACTS / "status-page-phone.png", 390, 1800) == (390, 1800)
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copy(ARTIFACTS / "status-page.png", ROOT / "docs" / "status-page.png")


@needs_chromium
def test_configured_status_page_escapes_what_it_shows(exporter_factory, tmp_path: Path):
    logs = tmp_path / "logs"
    logs.mkdir()
    hostile = '<img src=x onerror="document.title=1">&amp;'
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({
        "sources": [{"name": "claude-code", "kind": "claude_code", "paths": [str(logs)]}],
        "pools": [{"name": "solo", "credit_usd": 50, "team": hostile,
                   "match": {"sources": ["claude-code"]}, "breaker": {"open_below": 0.1}}],
    }))
    exp = exporter_factory(["--config", str(cfg), "--state-dir", str(tmp_path / "state")]).start()
    page = Page(dump_dom(tmp_path, exp.url + "/"))
    text = page.pool_text("solo")
    assert f"team {hostile}" in text, text  # shown as text, never parsed as markup
    assert not [t for t, _a in page.tags if t == "img"]
    assert "$50.00 left of $50.00 100.0%" in text and "breaker closed" in text
    assert "estimate only" in text and "not billed to this pool" in text
    assert "Demo" not in page.all_text and f"config: {cfg}" in page.all_text


# --------------------------------------------------------------------------- the report table


def _report(billed: bool = True) -> dict:
    def model(name: str, usd: float, n: int) -> dict:
        return {"model": name, "estimated_usd": usd, "input_tokens": 1000 * n, "output_tokens": 200 * n,
                "cache_read_tokens": 50_000 * n, "cache_write_5m_tokens": 3000 * n, "cache_write_1h_tokens": 10 * n,
                "web_search_requests": 0, "requests": n, "unpriced_tokens": 0}

    days = [
        {"date": "2026-03-08", "estimated_usd": 19.0, "billed_usd": 20.0, "drift_ratio": 0.95,
         "models": [model("claude-opus-4-5-20251101", 15.0, 30), model("claude-haiku-4-5-20251001", 4.0, 9)]},
        {"date": "2026-03-09", "estimated_usd": 12.5, "billed_usd": None, "drift_ratio": None,
         "models": [model("claude-sonnet-4-5-20250929", 12.5, 40)]},
        {"date": "2026-03-10", "estimated_usd": 6.0, "billed_usd": 2.0, "drift_ratio": 3.0,
         "models": [model("claude-sonnet-4-5-20250929", 6.0, 11)]},
    ]
    if not billed:
        for d in days:
            d["billed_usd"] = d["drift_ratio"] = None
    return {"days": days, "totals": {
        "estimated_usd": 37.5, "billed_usd": 22.0 if billed else None, "requests": 90,
        "input_tokens": 90_000, "output_tokens": 18_000, "cache_read_tokens": 4_500_000,
        "cache_write_5m_tokens": 270_000, "cache_write_1h_tokens": 900}}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _table(report: dict, out: io.StringIO | None = None) -> list[str]:
    from datetime import date

    out = out or io.StringIO()
    write_table(report, out, today=date(2026, 3, 10))
    return out.getvalue().splitlines()


def test_report_table_aligns_totals_and_keeps_drift_honest(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    lines = _table(_report())
    table = lines[:7]  # header, rule, three days, rule, total
    # right-aligned: every figure ends at the same column (today's mark stands after it)
    assert len({len(line.rstrip("*")) for line in table if "─" not in line}) == 1, "\n".join(table)
    head = table[0].split()
    assert head[:2] == ["Date", "Models"] and head[-3:] == ["Estimated", "Billed", "Drift"]
    assert table[2].split()[:3] == ["2026-03-08", "opus-4-5,", "haiku-4-5"]
    assert table[2].endswith("$19.00  $20.00   0.950")
    assert table[3].endswith("$12.50       -       -")
    # today's bill is partial: marked, and kept out of the total drift (19 / 20, not 25 / 22)
    assert table[4].endswith("$6.00   $2.00*  3.000*")
    assert table[6].startswith("Total") and table[6].endswith("$37.50  $22.00   0.950")
    assert "90" in table[6].split() and "4,500,000" in table[6].split()
    assert any("1 complete day with both" in n for n in lines[7:])
    assert any(n.startswith("* today so far") for n in lines[7:])
    assert "\x1b[" not in "\n".join(lines), "no colour into a pipe or file"


def test_report_table_colours_only_a_terminal_without_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = "\n".join(_table(_report(), Tty()))
    assert "\x1b[1m" in coloured and "\x1b[32m0.950" in coloured  # bold header, drift within 5% in green
    assert "\x1b[2m3.000*" in coloured  # a partial day's drift is dimmed, not judged
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in "\n".join(_table(_report(), Tty()))


def test_report_table_without_billed_days_has_no_billed_columns():
    lines = _table(_report(billed=False))
    assert lines[0].split()[-1] == "Estimated"
    assert "Drift" not in lines[0] and "Billed" not in lines[0]
    assert lines[6].startswith("Total") and lines[6].endswith("$37.50")
    assert "with an admin key" in lines[-1]
