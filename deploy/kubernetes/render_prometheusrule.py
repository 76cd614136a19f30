"""Write prometheusrule.yaml from the Prometheus rule files, so the two never drift.

Run from anywhere: python deploy/kubernetes/render_prometheusrule.py
(tests/test_rules.py fails when the committed file differs from the rule files).
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULE_FILES = (HERE.parent / "prometheus" / "recording_rules.yml", HERE.parent / "prometheus" / "alert_rules.yml")
OUT = HERE / "prometheusrule.yaml"

HEADER = """\
# Generated from deploy/prometheus/recording_rules.yml and alert_rules.yml by
# render_prometheusrule.py: edit those files, then run the script.
#
# The Prometheus Operator picks this up when the labels match its ruleSelector
# (kube-prometheus-stack selects `release: <its release name>` by default).
"""


class _Literal(str):
    """A string dumped as a YAML block, like the hand-written rule files."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


def _blocks(value: object) -> object:
    if isinstance(value, dict):
        return {k: _blocks(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_blocks(v) for v in value]
    if isinstance(value, str) and "\n" in value:
        return _Literal(value)
    return value


def render() -> str:
    groups = [g for f in RULE_FILES for g in yaml.safe_load(f.read_text(encoding="utf-8"))["groups"]]
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "claude-budget-exporter",
            "labels": {"app.kubernetes.io/name": "claude-budget-exporter", "release": "prometheus"},
        },
        "spec": {"groups": _blocks(groups)},
    }
    dumper = yaml.SafeDumper
    dumper.add_representer(_Literal, _literal)
    return HEADER + yaml.dump(doc, Dumper=dumper, sort_keys=False, width=120, allow_unicode=True)


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT.name}")
