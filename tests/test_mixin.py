"""The monitoring mixin (mixin/): the shipped rules, alerts and dashboards are what it generates,
and its config (job selector, fleet labels, thresholds, links) reaches every one of them.

The committed files are checked with the real tools elsewhere (``promtool test rules`` in
test_rules.py, the dashboards' queries in test_dashboards.py and test_stack_e2e.py); here
they are held to the mixin, and a changed config is generated and checked with promtool.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixin import build

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SELECTOR = 'job="claude-budget-exporter"'
RAW_METRIC = re.compile(r'(?<![\w:$])(claude_[a-z0-9_]+|up)(?![\w:])(\{[^}]*\})?')


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return path


@pytest.fixture(scope="module")
def shipped() -> dict[str, str]:
    return build.render()


def test_regenerating_the_mixin_changes_nothing(shipped: dict[str, str]) -> None:
    diffs = build.differences(shipped, ROOT)
    assert not diffs, "the committed files are not what the mixin generates; run `make mixin`:\n" + "\n".join(diffs)


def test_the_mixin_writes_every_shipped_rule_file_and_dashboard(shipped: dict[str, str]) -> None:
    assert set(shipped) == {
        "deploy/prometheus/recording_rules.yml", "deploy/prometheus/alert_rules.yml",
        "deploy/kubernetes/prometheusrule.yaml",
        *(p.relative_to(ROOT).as_posix() for p in (ROOT / "grafana" / "dashboards").glob("*.json"))}
    for rel, text in shipped.items():
        if rel.endswith((".yml", ".yaml")):
            assert text.startswith("# Generated from mixin/"), rel


def test_check_mode_finds_a_hand_edit(tmp_path: Path, shipped: dict[str, str]) -> None:
    for rel, text in shipped.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    assert build.main(["--check", "--out", str(tmp_path)]) == 0
    alerts = tmp_path / "deploy" / "prometheus" / "alert_rules.yml"
    alerts.write_text(alerts.read_text(encoding="utf-8").replace("< 0.2", "< 0.25"), encoding="utf-8")
    (tmp_path / "grafana" / "dashboards" / "extra.json").write_text("{}", encoding="utf-8")
    diffs = build.differences(shipped, tmp_path)
    assert len(diffs) == 2 and "-        expr: claude:pool_remaining_ratio:hybrid < 0.25" in diffs[0], diffs
    assert "extra.json" in diffs[1]
    assert build.main(["--check", "--out", str(tmp_path)]) == 1


def test_every_raw_series_the_rules_and_dashboards_read_is_selected(shipped: dict[str, str]) -> None:
    """No rule reads the exporters' series without the job selector; no dashboard query
    without its $job (and, on an instance's own series, $instance) variable."""
    for rel in ("deploy/prometheus/recording_rules.yml", "deploy/prometheus/alert_rules.yml"):
        for group in yaml.safe_load(shipped[rel])["groups"]:
            for rule in group["rules"]:
                for m in RAW_METRIC.finditer(rule["expr"]):
                    assert m.group(2) and SHIPPED_SELECTOR in m.group(2), (rel, rule["expr"])
    for rel, text in shipped.items():
        if rel.endswith(".json"):
            for expr in _dashboard_queries(json.loads(text)):
                if expr.startswith("label_values(up{" + SHIPPED_SELECTOR):
                    continue  # the job and instance variables themselves
                for m in RAW_METRIC.finditer(expr):
                    sel = m.group(2) or ""
                    assert 'job=~"$job"' in sel and 'instance=~"$instance"' in sel, (rel, expr)
                assert 'job=~"$job"' in expr, (rel, expr)


def _dashboard_queries(dash: dict[str, Any]) -> list[str]:
    out = [t["expr"] for p in dash["panels"] if p["type"] != "row" for t in p["targets"]]
    out += [v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    out += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    return out


OVERRIDES = """
{
  _config+:: {
    exporterSelector: 'job=~"claude-.+"',
    fleetLabels: ['cluster', 'job'],
    creditWarningRatio: 0.3,
    creditCriticalRatio: 0.15,
    runbookURL: 'https://runbooks.example/claude.md',
    grafanaURL: 'https://grafana.example',
  },
}
"""


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    config = tmp_path_factory.mktemp("mixin") / "overrides.libsonnet"
    config.write_text(OVERRIDES, encoding="utf-8")
    return build.render(config)


def test_the_config_reaches_every_rule_alert_and_dashboard(custom: dict[str, str]) -> None:
    for rel, text in custom.items():
        assert SHIPPED_SELECTOR not in text, rel
    rules = yaml.safe_load(custom["deploy/prometheus/recording_rules.yml"])["groups"]
    alerts = {r["alert"]: r for g in yaml.safe_load(custom["deploy/prometheus/alert_rules.yml"])["groups"]
              for r in g["rules"]}
    for group in rules:
        for rule in group["rules"]:
            assert "by (" not in rule["expr"] or "by (cluster, job" in rule["expr"], rule["expr"]
    assert alerts["ClaudePoolCreditLow"]["expr"].endswith("< 0.3")
    assert alerts["ClaudePoolCreditCritical"]["expr"].endswith("< 0.15")
    assert "under the 30% warning line. At 15% the breaker opens" in alerts["ClaudePoolCreditLow"]["annotations"][
        "description"]
    assert "cluster='%s',job='%s',pool='%s'" in alerts["ClaudePoolCreditLow"]["annotations"]["description"]
    for name, rule in alerts.items():
        ann = rule["annotations"]
        assert ann["runbook_url"] == "https://runbooks.example/claude.md#" + name.lower()
        assert ann["dashboard_url"].startswith("https://grafana.example/d/claude-budget-overview")
    assert alerts["ClaudeExporterAbsent"]["expr"] == 'absent(up{job=~"claude-.+"})'
    overview = json.loads(custom["grafana/dashboards/overview.json"])
    job_var = next(v for v in overview["templating"]["list"] if v["name"] == "job")
    assert job_var["query"]["query"] == 'label_values(up{job=~"claude-.+"}, job)'
    ratio = next(p for p in overview["panels"] if p.get("title") == "Credit left")
    assert [s["value"] for s in ratio["fieldConfig"]["defaults"]["thresholds"]["steps"]][:3] == [None, 0.15, 0.3]


def test_the_generated_rules_of_another_config_load(tmp_path: Path, custom: dict[str, str]) -> None:
    for rel in ("deploy/prometheus/recording_rules.yml", "deploy/prometheus/alert_rules.yml"):
        (tmp_path / Path(rel).name).write_text(custom[rel], encoding="utf-8")
    out = subprocess.run([promtool(), "check", "rules", "recording_rules.yml", "alert_rules.yml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


FLEETS_TEST = """
rule_files: [recording_rules.yml, alert_rules.yml]
evaluation_interval: 1m
tests:
  # two fleets in one Prometheus: each cluster's job is added up apart, and only its own
  # pool runs low
  - interval: 1m
    input_series:
      - series: 'claude_pool_credit_usd{cluster="eu",job="claude-a",instance="a:9833",pool="p"}'
        values: '100x20'
      - series: 'claude_estimated_spend_usd{cluster="eu",job="claude-a",instance="a:9833",pool="p",window="period"}'
        values: '40x20'
      - series: 'claude_estimated_spend_usd{cluster="eu",job="claude-a",instance="b:9833",pool="p",window="period"}'
        values: '35x20'
      - series: 'claude_pool_credit_usd{cluster="us",job="claude-a",instance="c:9833",pool="p"}'
        values: '100x20'
      - series: 'claude_estimated_spend_usd{cluster="us",job="claude-a",instance="c:9833",pool="p",window="period"}'
        values: '10x20'
      - series: 'claude_estimated_spend_usd{cluster="us",job="node",instance="c:9100",pool="p",window="period"}'
        values: '1000x20'
    promql_expr_test:
      - expr: claude:pool_remaining_usd:hybrid
        eval_time: 5m
        exp_samples:
          - labels: 'claude:pool_remaining_usd:hybrid{cluster="eu",job="claude-a",pool="p"}'
            value: 25
          - labels: 'claude:pool_remaining_usd:hybrid{cluster="us",job="claude-a",pool="p"}'
            value: 90
    alert_rule_test:
      - eval_time: 15m
        alertname: ClaudePoolCreditLow
        exp_alerts:
          - exp_labels: {severity: warning, cluster: eu, job: claude-a, pool: p}
            exp_annotations:
              summary: A Claude pool has less than 30% of its credit left.
              description: >-
                Pool p has 25% of its credit left ($25.00 of $100.00), under the 30% warning line.
                At 15% the breaker opens.
              runbook_url: https://runbooks.example/claude.md#claudepoolcreditlow
              dashboard_url: https://grafana.example/d/claude-budget-overview?var-job=claude-a&var-pool=p
"""


def test_each_fleet_is_added_up_apart(tmp_path: Path, custom: dict[str, str]) -> None:
    for rel in ("deploy/prometheus/recording_rules.yml", "deploy/prometheus/alert_rules.yml"):
        (tmp_path / Path(rel).name).write_text(custom[rel], encoding="utf-8")
    (tmp_path / "fleets_test.yml").write_text(FLEETS_TEST, encoding="utf-8")
    out = subprocess.run([promtool(), "test", "rules", "fleets_test.yml"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
