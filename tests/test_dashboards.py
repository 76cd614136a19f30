"""The Grafana dashboards and provisioning: structure a user relies on at a glance.

Every dashboard loads from any Prometheus data source (``${datasource}``), keeps its
uid, shows units and coloured thresholds, and every query is valid PromQL naming
only metrics the exporter emits or the shipped recording rules define. "Emits" is
what a real exporter serves: one runs here with pools, two log sources and the fake
Admin API, so a metric renamed in the code fails these tests, not a dashboard user.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config.model import FAST_POLL_ENV
from tests.conftest import Exporter, clean_env, sample
from tests.fake_admin_api import FakeAdminApi

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"
PROVISIONING = ROOT / "grafana" / "provisioning"
PROM = ROOT / "deploy" / "prometheus"
EXPECTED_UIDS = {"overview.json": "claude-budget-overview", "team.json": "claude-budget-team"}

METRIC_RE = re.compile(r"\bclaude[_:][A-Za-z0-9_:]*")

KEY = "sk-ant-admin01-dashboards-test-key-0123456789"
WS = "wrkspc_01AgentSDK"
HAIKU = "claude-haiku-4-5-20251001"


def _transcript_line(n: int, at: datetime, entrypoint: str, model: str = HAIKU) -> str:
    return json.dumps({
        "type": "assistant", "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "requestId": f"req_{n}",
        "entrypoint": entrypoint, "message": {
            "id": f"msg_{n}", "model": model, "role": "assistant", "content": [],
            "usage": {"input_tokens": 1000, "output_tokens": 200, "cache_read_input_tokens": 300,
                      "cache_creation_input_tokens": 0}}})


@pytest.fixture(scope="module")
def emitted_metrics(tmp_path_factory: pytest.TempPathFactory) -> frozenset[str]:
    """Every sample name a running exporter serves (counters with ``_total``, as Prometheus
    stores them), from one with billed and estimated spend, pools, an unpriced model and the
    Claude Code report: everything a normal setup shows."""
    tmp = tmp_path_factory.mktemp("emitted")
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    fake = FakeAdminApi(key=KEY, now=now).start()
    fake.add_spend(yesterday + timedelta(hours=3), "41.25", workspace_id=WS, model=HAIKU,
                   token_type="output_tokens", tokens=80_000)
    fake.add_spend(yesterday + timedelta(hours=4), "7.5", workspace_id=None, model=HAIKU,
                   token_type="uncached_input_tokens", tokens=75_000)
    fake.add_spend(max(today, now - timedelta(minutes=10)), "2.5", workspace_id=WS, model=HAIKU,
                   token_type="output_tokens", tokens=5_000)
    fake.add_claude_code(yesterday.date(), "dev@example.com", HAIKU, "35.5", input_tokens=1000, output_tokens=100)

    transcripts = tmp / "claude" / "projects" / "p"
    transcripts.mkdir(parents=True)
    recent = max(today + timedelta(seconds=1), now - timedelta(minutes=1))
    (transcripts / "s.jsonl").write_text("\n".join([
        _transcript_line(1, yesterday + timedelta(hours=12), "sdk-cli"),
        _transcript_line(2, recent, "sdk-cli"),
        _transcript_line(3, recent, "cli"),
        _transcript_line(4, recent, "sdk-cli", model="claude-imaginary-9"),  # no price: unpriced tokens
        "{not json",
    ]) + "\n")
    token_log = tmp / "agents" / "tokens.jsonl"
    token_log.parent.mkdir()
    token_log.write_text(json.dumps({"ts": recent.isoformat(), "model": HAIKU, "input_tokens": 5000,
                                     "output_tokens": 700}) + "\n")
    records = tmp / "statusline.jsonl"  # what `claude-budget-exporter statusline` appends
    records.write_text(json.dumps({"type": "statusline", "timestamp": recent.isoformat(), "rate_limits": {
        "five_hour": {"used_percentage": 42, "resets_at": int(now.timestamp()) + 3600},
        "seven_day": {"used_percentage": 12, "resets_at": int(now.timestamp()) + 86400}}}) + "\n")
    reset_day = yesterday.day  # the period began yesterday: complete billed days in it
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({
        "refresh_interval": "200ms",
        # settle_after 0s: yesterday complete (and its drift shown) whatever time of day the test runs
        "admin_api": {"key_env": "TEST_ADMIN_KEY", "base_url": fake.url, "poll_interval": "1s", "settle_after": "0s",
                      "claude_code_report": True},
        "sources": [
            {"name": "claude-code", "kind": "claude_code", "paths": [str(tmp / "claude" / "projects")]},
            {"name": "token-metrics", "kind": "jsonl", "paths": [str(token_log)],
             "fields": {"timestamp": "ts", "model": "model", "input_tokens": "input_tokens",
                        "output_tokens": "output_tokens"}},
            {"name": "claude-max", "kind": "rate_limits", "paths": [str(records)]},
        ],
        "pools": [
            {"name": "agent-sdk", "credit_usd": 200, "team": "platform",
             "period": {"reset_day": reset_day, "timezone": "UTC"},
             "match": {"workspaces": [WS], "sources": ["claude-code"], "entrypoints": ["sdk-cli"]}},
            {"name": "interactive", "plan": "max5x", "team": "research",
             "period": {"reset_day": reset_day, "timezone": "UTC"},
             "match": {"workspaces": ["default"], "sources": ["claude-code", "token-metrics"]}},
            {"name": "five-hour", "team": "research", "window": {"source": "claude-max", "name": "five_hour"}},
        ],
    }), encoding="utf-8")
    exporter = Exporter(["--config", str(config), "--state-dir", str(tmp / "state")],
                        clean_env(TEST_ADMIN_KEY=KEY, **{FAST_POLL_ENV: "1"}), tmp / "exporter.log")
    try:
        exporter.start()
        samples = exporter.wait_for(
            lambda s: sample(s, "claude_source_up", source="admin_api") == 1
            and sample(s, "claude_spend_drift_ratio", pool="agent-sdk", window="yesterday") is not None
            and any(name == "claude_unpriced_tokens_total" for name, _ in s)
            and sample(s, "claude_pool_window_info", pool="five-hour", source="claude-max", window="five_hour") == 1,
            what="billed, estimated and unpriced spend, and a window pool")
    finally:
        exporter.stop()
        fake.stop()
    return frozenset(name for name, _ in samples)


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows' nested panels included, rows themselves not)."""
    for p in dash["panels"]:
        if p["type"] == "row":
            yield from p.get("panels", [])
        else:
            yield p


def exprs(dash: dict[str, Any]) -> Iterator[str]:
    for p in panels(dash):
        for t in p["targets"]:
            yield t["expr"]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            yield v["query"]["query"] if isinstance(v["query"], dict) else v["query"]


def recording_rules() -> set[str]:
    groups = yaml.safe_load((PROM / "recording_rules.yml").read_text(encoding="utf-8"))["groups"]
    return {r["record"] for g in groups for r in g["rules"] if "record" in r}


def rule_texts() -> Iterator[tuple[str, str]]:
    """(where, text) for every expression and annotation in the shipped rules."""
    for f in ("recording_rules.yml", "alert_rules.yml"):
        for g in yaml.safe_load((PROM / f).read_text(encoding="utf-8"))["groups"]:
            for r in g["rules"]:
                name = r.get("record") or r.get("alert")
                yield f"{f}:{name}", r["expr"]
                for k, v in r.get("annotations", {}).items():
                    yield f"{f}:{name}:{k}", v


by_file = pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)


def test_both_dashboards_are_shipped() -> None:
    assert {p.name for p in dashboard_files()} == set(EXPECTED_UIDS)


@by_file
def test_dashboard_has_its_stable_uid(path: Path) -> None:
    dash = load_dashboard(path)
    assert dash["uid"] == EXPECTED_UIDS[path.name]
    assert dash["title"].startswith("Claude budget")
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids repeat"


@by_file
def test_datasource_is_a_variable_used_everywhere(path: Path) -> None:
    dash = load_dashboard(path)
    (var,) = [v for v in dash["templating"]["list"] if v["name"] == "datasource"]
    assert var["type"] == "datasource" and var["query"] == "prometheus"
    # a grafana.com import fills the one input in: the variable starts on the data source chosen there
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    assert var["current"]["value"] == "${DS_PROMETHEUS}"
    ref = {"type": "prometheus", "uid": "${datasource}"}
    for p in panels(dash):
        assert p["datasource"] == ref, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == ref, p["title"]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == ref, v["name"]
    # no data source uid from someone's Grafana baked in
    text = path.read_text(encoding="utf-8")
    assert '"uid": "claude-budget-prometheus"' not in text


@by_file
def test_every_panel_queries_something_with_a_unit_and_thresholds(path: Path) -> None:
    for p in panels(load_dashboard(path)):
        assert p["targets"], f"{p['title']}: no queries"
        for t in p["targets"]:
            assert t["expr"].strip(), f"{p['title']}: empty query"
            assert t["refId"]
        defaults = p["fieldConfig"]["defaults"]
        assert defaults.get("unit"), f"{p['title']}: no unit"
        steps = defaults["thresholds"]["steps"]
        assert steps and steps[0]["value"] is None and all(s["color"] for s in steps), p["title"]
        assert p.get("description"), f"{p['title']}: no description"


@by_file
def test_money_ratios_and_dates_have_their_units(path: Path) -> None:
    units = {}
    for p in panels(load_dashboard(path)):
        units.setdefault(p["fieldConfig"]["defaults"]["unit"], []).append(p)
    assert {"currencyUSD", "percentunit", "dateTimeAsIso"} <= set(units)
    for p in panels(load_dashboard(path)):
        expr = " ".join(t["expr"] for t in p["targets"])
        unit = p["fieldConfig"]["defaults"]["unit"]
        if "_usd" in expr and "ratio" not in expr and "exhaustion" not in expr:
            assert unit == "currencyUSD", p["title"]
        if "ratio" in expr:
            assert unit == "percentunit", p["title"]
        if unit == "dateTimeAsIso":
            # Grafana's date units read milliseconds
            assert all(t["expr"].rstrip().endswith("* 1000") for t in p["targets"]), p["title"]


@by_file
def test_credit_left_is_coloured_at_the_alert_lines(path: Path) -> None:
    ratio_panels = [p for p in panels(load_dashboard(path))
                    if any(t["expr"].startswith("claude:pool_remaining_ratio:hybrid") for t in p["targets"])]
    assert ratio_panels
    for p in ratio_panels:
        steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["value"] for s in steps][:3] == [None, 0.10, 0.20], p["title"]
        assert steps[0]["color"] == "red"


def test_overview_shows_what_a_team_needs() -> None:
    text = " ".join(exprs(load_dashboard(DASHBOARDS / "overview.json")))
    for needed in (
        "claude:pool_remaining_usd:hybrid",                   # remaining credit
        "claude:pool_spend_usd:hybrid",                       # spend (hybrid)
        'claude:pool_billed_spend_usd:max{job=~"$job",pool=~"$pool",window="period"}',     # billed
        'claude:pool_estimated_spend_usd:sum{job=~"$job",pool=~"$pool",window="period"}',  # estimated
        "claude:pool_spend_drift:ratio",                      # drift
        "claude:pool_burn_rate_usd_per_hour",                 # burn rate
        "claude:pool_exhaustion_timestamp_seconds:projected",  # forecast
        "sum by (model) (claude_billed_cost_usd",             # by model
        "sum by (workspace_id) (claude_billed_cost_usd",      # by workspace
        "claude_source_last_success_timestamp_seconds",       # freshness
        'up{job=~"$job",instance=~"$instance"}',             # exporter health
        "claude_breaker_open",
    ):
        assert needed in text, needed


def test_team_view_filters_by_team_then_pool() -> None:
    dash = load_dashboard(DASHBOARDS / "team.json")
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance", "team", "pool"]
    assert variables["team"]["query"]["query"] == 'label_values(claude_pool_info{job=~"$job",instance=~"$instance"}, team)'
    assert '$team' in variables["pool"]["query"]["query"]
    for p in panels(dash):
        for t in p["targets"]:
            assert 'pool=~"$pool"' in t["expr"], p["title"]


def test_a_live_exporter_emits_the_contract_metrics(emitted_metrics: frozenset[str]) -> None:
    """The live set is a real one: the pool, billed, estimate and health families are in it."""
    for family in ("claude_pool_remaining_usd", "claude_billed_cost_usd", "claude_estimated_cost_usd_total",
                   "claude_spend_drift_ratio", "claude_pool_exhaustion_timestamp_seconds",
                   "claude_unpriced_tokens_total", "claude_source_up", "claude_exporter_build_info"):
        assert family in emitted_metrics, sorted(n for n in emitted_metrics if n.startswith("claude_"))


def test_every_metric_named_is_emitted_or_recorded(emitted_metrics: frozenset[str]) -> None:
    known = emitted_metrics | recording_rules()
    unknown: dict[str, str] = {}
    sources = list(rule_texts())
    for path in dashboard_files():
        sources += [(path.name, e) for e in exprs(load_dashboard(path))]
    for where, text in sources:
        for name in METRIC_RE.findall(text):
            if name not in known:
                unknown[name] = where
    assert not unknown, f"metrics neither emitted nor recorded: {unknown}"


def test_metric_check_catches_a_misspelt_name(emitted_metrics: frozenset[str]) -> None:
    assert "claude_pool_remaining_usd_typo" not in emitted_metrics | recording_rules()
    assert METRIC_RE.findall('x{a="claude-budget-exporter"} + claude:pool_spend_usd:hybrid') == [
        "claude:pool_spend_usd:hybrid"]


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Grafana's variables filled in as Grafana would, each query checked by promtool."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    subst = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "30s",
             "$pool": ".*", "$team": ".*", "$job": "claude-budget-exporter", "$instance": ".*"}
    rules = []
    for path in dashboard_files():
        dash = load_dashboard(path)
        for i, expr in enumerate([*exprs(dash), *(a["expr"] for a in dash["annotations"]["list"] if "expr" in a)]):
            if expr.startswith("label_values("):
                m = re.fullmatch(r"label_values\((.*),\s*\w+\)", expr)
                assert m, expr
                expr = m.group(1)
            for k, v in subst.items():
                expr = expr.replace(k, v)
            assert "$" not in expr, expr
            rules.append({"record": f"dashboard:{path.stem}:q{i}", "expr": expr})
    rule_file = tmp_path / "dashboard_queries.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}), encoding="utf-8")
    out = subprocess.run([promtool, "check", "rules", str(rule_file)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@by_file
def test_job_and_instance_variables_filter_every_query(path: Path) -> None:
    """$job (the exporters' jobs the mixin selects) on every query; $instance on every query of
    an instance's own series (the fleet's recorded series add instances up)."""
    dash = load_dashboard(path)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert list(variables)[:3] == ["datasource", "job", "instance"]
    assert variables["job"]["query"]["query"] == 'label_values(up{job="claude-budget-exporter"}, job)'
    assert variables["instance"]["query"]["query"].endswith('job=~"$job"}, instance)')
    for v in ("job", "instance"):
        # "All" is the regex of the values found, never .* (which would take in other jobs)
        assert variables[v]["includeAll"] and "allValue" not in variables[v], v
    raw = re.compile(r'(?<![\w:$])(claude_[a-z0-9_]+|up)(?![\w:])(\{[^}]*\})?')
    for expr in exprs(dash):
        if expr.startswith("label_values(up{"):
            continue
        assert 'job=~"$job"' in expr, expr
        for m in raw.finditer(expr):
            assert 'instance=~"$instance"' in (m.group(2) or ""), expr


@by_file
def test_firing_alerts_are_annotated(path: Path) -> None:
    (alerts,) = [a for a in load_dashboard(path)["annotations"]["list"] if a.get("expr")]
    assert alerts["expr"].startswith("ALERTS{") and 'alertstate="firing"' in alerts["expr"]
    assert 'job=~"$job"' in alerts["expr"] and alerts["enable"] is True
    assert alerts["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@by_file
def test_dashboard_imports_on_grafana_com(path: Path) -> None:
    """__inputs and __requires, as Grafana's "export for sharing externally" writes them."""
    dash = load_dashboard(path)
    (ds,) = dash["__inputs"]
    assert ds["type"] == "datasource" and ds["pluginId"] == "prometheus" and ds["name"] == "DS_PROMETHEUS"
    required = {(r["type"], r["id"]) for r in dash["__requires"]}
    assert {("grafana", "grafana"), ("datasource", "prometheus")} <= required
    assert {("panel", p["type"]) for p in panels(dash)} == {r for r in required if r[0] == "panel"}
    assert "id" not in dash  # Grafana assigns it on import


def test_provisioning_points_grafana_at_the_dashboards_and_prometheus() -> None:
    (ds_file,) = (PROVISIONING / "datasources").glob("*.yml")
    (datasource,) = yaml.safe_load(ds_file.read_text(encoding="utf-8"))["datasources"]
    assert datasource["type"] == "prometheus" and datasource["uid"]
    (dash_file,) = (PROVISIONING / "dashboards").glob("*.yml")
    (provider,) = yaml.safe_load(dash_file.read_text(encoding="utf-8"))["providers"]
    assert provider["type"] == "file"
    # docker-compose mounts grafana/dashboards where the provider looks
    compose = (ROOT / "deploy" / "docker-compose.yml").read_text(encoding="utf-8")
    assert f"../grafana/dashboards:{provider['options']['path']}:ro" in compose
