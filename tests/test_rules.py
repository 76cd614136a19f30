"""The shipped Prometheus rules and Alertmanager config, checked with the real tools.

``promtool test rules`` runs the unit tests in deploy/prometheus/tests (every alert
fires, waits out its ``for:``, and resolves; the fleet recording rules add up two
instances). The rest keeps the files honest: every alert is tested and documented,
the critical pool alert reaches the breaker webhook, and the Kubernetes
PrometheusRule is the same rules, not a copy that drifts. All three files are
generated from the mixin (mixin/, tests/test_mixin.py).
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

from exporter import __version__

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"
RULE_FILES = (PROM / "recording_rules.yml", PROM / "alert_rules.yml")
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
K8S = ROOT / "deploy" / "kubernetes"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/claude-budget-exporter/claude-budget-exporter/blob/main/docs/runbook.md#"
DASHBOARD_URL = "http://localhost:3000/d/claude-budget-overview"
BREAKER_WEBHOOK = "http://exporter:9833/alertmanager/webhook"


INSTALL_HINTS = {
    "promtool": "Debian: apt-get install prometheus",
    "amtool": "Debian: apt-get install prometheus-alertmanager",
    "kubectl": "kubectl with its built-in kustomize",
}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed ({INSTALL_HINTS[name]})")
    return path


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alerts() -> list[dict[str, Any]]:
    return [r for g in load(PROM / "alert_rules.yml")["groups"] for r in g["rules"]]


def duration(text: str) -> int:
    """promtool-style durations (``1h30m``, ``90s``) to seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([dhms])", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"unreadable duration {text!r}"
    return sum(int(n) * units[u] for n, u in parts)


# --------------------------------------------------------------------------- promtool


def test_rule_files_pass_promtool_check() -> None:
    out = run(tool("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert out.returncode == 0, out.stdout + out.stderr


def test_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool rule tests found"
    out = run(tool("promtool"), "test", "rules", *(p.name for p in RULE_TESTS), cwd=PROM / "tests")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(RULE_TESTS), out.stdout


def test_shipped_prometheus_config_loads_the_rules() -> None:
    out = run(tool("promtool"), "check", "config", str(PROM / "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 rule files found" in out.stdout, out.stdout


def test_kubernetes_rules_load_in_prometheus(tmp_path: Path) -> None:
    """The PrometheusRule's groups, written out as a rule file, load in a Prometheus config."""
    spec = prometheus_rule()["spec"]
    (tmp_path / "k8s_rules.yml").write_text(yaml.safe_dump({"groups": spec["groups"]}), encoding="utf-8")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"evaluation_interval": "2s", "scrape_interval": "2s"},
        "rule_files": ["k8s_rules.yml"],
        "scrape_configs": [{"job_name": "claude-budget-exporter",
                            "static_configs": [{"targets": ["127.0.0.1:9833"]}]}],
    }), encoding="utf-8")
    out = run(tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 27 rules found" in out.stdout, out.stdout


def test_a_broken_expectation_fails(tmp_path: Path) -> None:
    """The unit tests can fail: the same test with one expected value off by a cent does."""
    source = (PROM / "tests" / "recording_rules_test.yml").read_text(encoding="utf-8")
    broken = source.replace("value: 125.25", "value: 125.26", 1)
    assert broken != source
    (tmp_path / "tests").mkdir()
    for f in RULE_FILES:
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "tests" / "broken_test.yml").write_text(broken, encoding="utf-8")
    out = run(tool("promtool"), "test", "rules", "broken_test.yml", cwd=tmp_path / "tests")
    assert out.returncode != 0
    assert "claude:pool_spend_usd:hybrid" in out.stdout + out.stderr


# --------------------------------------------------------------------------- coverage of the tests


def alert_timelines() -> dict[str, list[list[tuple[int, set[frozenset[tuple[str, str]]]]]]]:
    """alertname -> per test case, [(eval seconds, label sets expected firing)]."""
    seen: dict[str, list[list[tuple[int, set[frozenset[tuple[str, str]]]]]]] = {}
    for path in RULE_TESTS:
        for case in load(path)["tests"]:
            per_alert: dict[str, list[tuple[int, set[frozenset[tuple[str, str]]]]]] = {}
            for t in case.get("alert_rule_test", []):
                firing = {frozenset(a.get("exp_labels", {}).items()) for a in t.get("exp_alerts") or []}
                per_alert.setdefault(t["alertname"], []).append((duration(t["eval_time"]), firing))
            for name, timeline in per_alert.items():
                seen.setdefault(name, []).append(sorted(timeline, key=lambda x: x[0]))
    return seen


@pytest.mark.parametrize("name", [a["alert"] for a in alerts()])
def test_every_alert_is_tested_quiet_then_firing_then_resolved(name: str) -> None:
    """Some alert of this name is expected absent, then firing, then absent again, in one test case."""
    for timeline in alert_timelines().get(name, []):
        for labels in set().union(*(firing for _, firing in timeline)):
            states = [labels in firing for _, firing in timeline]
            first = states.index(True)
            if False in states[:first] and False in states[first:]:
                return
    pytest.fail(f"{name}: no test case where it does not fire yet, then fires, then resolves")


# --------------------------------------------------------------------------- alert content


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_alert_is_documented(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    ann = rule.get("annotations", {})
    assert ann.get("summary") and ann.get("description"), name
    assert ann.get("runbook_url") == RUNBOOK_URL + name.lower()
    # a static summary to group and page on, the figures in the description, a dashboard to open
    assert "{{" not in ann["summary"], name
    assert "{{" in ann["description"] or name == "ClaudeExporterAbsent", name
    assert ann.get("dashboard_url", "").startswith(DASHBOARD_URL), name
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert "for" in rule, f"{name}: fires on a single evaluation"
    headings = re.findall(r"^## (\S+)\s*$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)
    assert name in headings, f"docs/runbook.md has no '## {name}' section"


def test_critical_pool_alert_opens_the_breaker_and_pages_before_the_warning_is_passed() -> None:
    by_name = {a["alert"]: a for a in alerts()}
    crit, low = by_name["ClaudePoolCreditCritical"], by_name["ClaudePoolCreditLow"]
    assert crit["labels"] == {"severity": "critical", "breaker": "open"}
    assert low["labels"] == {"severity": "warning"}
    threshold = lambda rule: float(re.search(r"<\s*([0-9.]+)", rule["expr"]).group(1))  # noqa: E731
    # warning first, critical later, both with credit still left, critical quickly
    assert 0 < threshold(crit) < threshold(low) < 1
    assert duration(crit["for"]) <= duration(low["for"]) <= 15 * 60


def test_only_the_critical_pool_alert_carries_the_breaker_label() -> None:
    assert [a["alert"] for a in alerts() if "breaker" in a.get("labels", {})] == ["ClaudePoolCreditCritical"]


# --------------------------------------------------------------------------- Alertmanager


def test_alertmanager_config_passes_amtool() -> None:
    out = run(tool("amtool"), "check-config", str(ALERTMANAGER))
    assert out.returncode == 0, out.stdout + out.stderr


def routes_for(**labels: str) -> list[str]:
    out = run(tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}",
              *(f"{k}={v}" for k, v in labels.items()))
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip().split(",")


def test_critical_pool_alert_goes_to_the_pager_and_the_breaker_webhook() -> None:
    got = routes_for(alertname="ClaudePoolCreditCritical", severity="critical", breaker="open", pool="agent-sdk")
    assert sorted(got) == ["claude-breaker", "pager"]


def test_warnings_and_health_alerts_do_not_touch_the_breaker() -> None:
    assert routes_for(alertname="ClaudePoolCreditLow", severity="warning", pool="agent-sdk") == ["team"]
    assert routes_for(alertname="ClaudeExporterAbsent", severity="critical", job="claude-budget-exporter") == ["pager"]


def test_breaker_receiver_posts_to_the_exporter_webhook_with_resolutions() -> None:
    config = load(ALERTMANAGER)
    breaker_route = next(r for r in config["route"]["routes"] if r["receiver"] == "claude-breaker")
    assert breaker_route["continue"] is True
    assert breaker_route["group_by"] == ["pool"]
    receiver = next(r for r in config["receivers"] if r["name"] == "claude-breaker")
    hooks = receiver["webhook_configs"]
    assert [h["url"] for h in hooks] == [BREAKER_WEBHOOK]
    assert all(h.get("send_resolved", True) for h in hooks)


def test_critical_inhibits_warnings_of_the_same_pool_only() -> None:
    (rule,) = load(ALERTMANAGER)["inhibit_rules"]
    assert 'severity="critical"' in rule["source_matchers"]
    # without a pool on the source, an absent-exporter alert would mute every warning
    assert 'pool=~".+"' in rule["source_matchers"]
    assert rule["target_matchers"] == ['severity="warning"']
    assert rule["equal"] == ["pool"]


def test_breaker_token_option_is_valid_alertmanager_config(tmp_path: Path) -> None:
    """The commented bearer-token block, switched on, is accepted by Alertmanager."""
    config = load(ALERTMANAGER)
    hook = next(r for r in config["receivers"] if r["name"] == "claude-breaker")["webhook_configs"][0]
    hook["http_config"] = {"authorization": {"type": "Bearer",
                                             "credentials_file": "/etc/alertmanager/secrets/breaker-token"}}
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    out = run(tool("amtool"), "check-config", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


# --------------------------------------------------------------------------- Kubernetes


def prometheus_rule() -> dict[str, Any]:
    return load(K8S / "prometheusrule.yaml")


def test_prometheusrule_is_exactly_the_rule_files() -> None:
    expected = [g for f in RULE_FILES for g in load(f)["groups"]]
    assert prometheus_rule()["spec"]["groups"] == expected, (
        "deploy/kubernetes/prometheusrule.yaml is out of date: run `make mixin`"
    )


def test_kustomization_builds_every_piece() -> None:
    kubectl = tool("kubectl")
    out = run(kubectl, "kustomize", str(K8S))
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = sorted({d["kind"] for d in docs})
    for kind in ("Deployment", "DaemonSet", "Service", "ServiceMonitor", "PrometheusRule", "ConfigMap"):
        assert kind in kinds, kinds
    # the ServiceMonitor names the job as the alert rules expect
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    services = [d for d in docs if d["kind"] == "Service"]
    assert {s["metadata"]["labels"]["app.kubernetes.io/name"] for s in services} == {"claude-budget-exporter"}
    for d in docs:
        if d["kind"] in ("Deployment", "DaemonSet"):
            pod = d["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            (main,) = [c for c in pod["containers"] if c["name"] == "exporter"]
            assert main["securityContext"]["readOnlyRootFilesystem"] is True
            assert main["readinessProbe"]["httpGet"]["path"] == "/healthz"
            # the image the README says to build and tag, not a registry's that nobody publishes
            assert main["image"] == f"claude-budget-exporter:{__version__}", main["image"]


def test_the_manifests_take_the_image_the_readme_says_to_build() -> None:
    """No registry image nobody publishes: the tag the README and the Dockerfile build, at the
    package's version, set in one place (kustomization.yaml's images:)."""
    tag = f"claude-budget-exporter:{__version__}"
    (image,) = load(K8S / "kustomization.yaml")["images"]
    assert image == {"name": "claude-budget-exporter", "newTag": __version__}
    for manifest in ("deployment.yaml", "daemonset.yaml"):
        containers = load(K8S / manifest)["spec"]["template"]["spec"]["containers"]
        assert [c["image"] for c in containers if c["name"] == "exporter"] == ["claude-budget-exporter"]
    for doc in (ROOT / "deploy" / "README.md", ROOT / "deploy" / "Dockerfile"):
        assert f"-t {tag} ." in doc.read_text(encoding="utf-8"), doc


def test_compose_stack_mounts_the_shipped_files() -> None:
    compose = load(ROOT / "deploy" / "docker-compose.yml")
    services = compose["services"]
    assert set(services) >= {"exporter", "prometheus", "alertmanager", "grafana"}
    mounts = json.dumps(services)
    for needed in ("./prometheus:/etc/prometheus", "./alertmanager/alertmanager.yml",
                   "../grafana/provisioning", "../grafana/dashboards"):
        assert needed in mounts, needed
