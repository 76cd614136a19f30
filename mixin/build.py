"""Write the shipped monitoring files from the mixin (``make mixin``).

    python mixin/build.py                 # write them from the defaults in mixin/config.libsonnet
    python mixin/build.py --check         # exit 1, with a diff, when a committed file differs
    python mixin/build.py --config my.libsonnet --out DIR
                                          # your overrides ({ _config+:: {...} }), written under DIR

Files, under the repository root (or ``--out``):

    deploy/prometheus/recording_rules.yml   prometheusRules
    deploy/prometheus/alert_rules.yml       prometheusAlerts
    deploy/kubernetes/prometheusrule.yaml   both, as a Prometheus Operator PrometheusRule
    grafana/dashboards/*.json               grafanaDashboards

Jsonnet is evaluated by the ``jsonnet`` package from PyPI (the test extra installs it). Rule
files are written as YAML with each rule's explanation above it (the mixin's ``_comments``),
dashboards as JSON with sorted keys.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECORDING = "deploy/prometheus/recording_rules.yml"
ALERTING = "deploy/prometheus/alert_rules.yml"
OPERATOR = "deploy/kubernetes/prometheusrule.yaml"
DASHBOARDS = "grafana/dashboards"
GENERATED = "Generated from mixin/ by `make mixin` (python mixin/build.py): edit the mixin, not this file."

#: the order rule fields are written in (jsonnet hands them back sorted)
RULE_ORDER = ("record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations")
ANNOTATION_ORDER = ("summary", "description", "runbook_url", "dashboard_url")


def evaluate(config: Path | None = None) -> dict[str, Any]:
    """The mixin's parts as plain data: rules, alerts, dashboards, and the headers and comments
    the YAML files carry."""
    import _jsonnet  # the jsonnet package on PyPI

    overrides = f" + (import {json.dumps(str(config.resolve()))})" if config else ""
    snippet = f"""
        local m = (import 'mixin.libsonnet'){overrides};
        {{
          rules: m.prometheusRules,
          alerts: m.prometheusAlerts,
          dashboards: m.grafanaDashboards,
          files: m._files,
          comments: m._comments,
        }}
    """
    return json.loads(_jsonnet.evaluate_snippet(str(HERE / "build.jsonnet"), snippet, jpathdir=[str(HERE)]))


# --------------------------------------------------------------------------- YAML


class _Literal(str):
    """A string written as a YAML block (``|``): every PromQL expression of more than one line."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # lists indented under their key, as people write them


class _Folded(str):
    """A long annotation written as a folded block (``>-``), broken between words and never
    inside a template action (``{{ ... }}``), so it reads as the sentence it is."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


_Dumper.add_representer(_Literal, _literal)
_WORD = re.compile(r"(?:\{\{.*?\}\}|[^\s{]|\{(?!\{))+")
FOLD_AT = 100  # columns


def _fold(value: str, indent: int) -> str | None:
    """``>-`` and the lines of a folded block at ``indent``, or None when folding would not
    read back as the same string (runs of spaces, edge spaces)."""
    words = _WORD.findall(value)
    if " ".join(words) != value:
        return None
    lines, line = [], ""
    for w in words:
        if line and indent + len(line) + 1 + len(w) > FOLD_AT:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    lines.append(line)
    return ">-\n" + "".join(" " * indent + ln + "\n" for ln in lines)


def _ordered(mapping: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    first = [k for k in order if k in mapping]
    return {k: mapping[k] for k in first + sorted(set(mapping) - set(first))}


def _rule(rule: dict[str, Any]) -> dict[str, Any]:
    rule = _ordered(rule, RULE_ORDER)
    if "labels" in rule:
        rule["labels"] = _ordered(rule["labels"], ("severity",))
    if "annotations" in rule:
        rule["annotations"] = {k: _Folded(v) if k == "description" else v
                               for k, v in _ordered(rule["annotations"], ANNOTATION_ORDER).items()}
    return {k: _Literal(v) if isinstance(v, str) and "\n" in v else v for k, v in rule.items()}


def _dump(value: Any) -> str:
    """YAML of ``value``; each _Folded string written as a folded block (see _fold)."""
    folded: list[str] = []

    def placeholder(dumper: yaml.SafeDumper, v: _Folded) -> yaml.ScalarNode:
        folded.append(str(v))
        return dumper.represent_scalar("tag:yaml.org,2002:str", f"FOLDEDxPLACEHOLDERx{len(folded) - 1}")

    class Dumper(_Dumper):
        pass

    Dumper.add_representer(_Folded, placeholder)
    text = yaml.dump(value, Dumper=Dumper, sort_keys=False, width=1 << 16, allow_unicode=True)

    def block(m: re.Match[str]) -> str:
        v = folded[int(m.group(3))]
        body = _fold(v, len(m.group(1)) + 2)
        return m.group(1) + m.group(2) + (body.rstrip("\n") if body else json.dumps(v))

    return re.sub(r"^( *)((?:- )?[\w.]+: )FOLDEDxPLACEHOLDERx(\d+)$", block, text, flags=re.MULTILINE)


def _comment(text: str, indent: str) -> str:
    return "".join(f"{indent}# {line}".rstrip() + "\n" for line in text.rstrip("\n").split("\n"))


def _rule_key(rule: dict[str, Any]) -> str:
    name = rule.get("record") or rule.get("alert") or ""
    labels = rule.get("labels") or {}
    if rule.get("record") and labels:
        return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return str(name)


def _groups(groups: list[dict[str, Any]], comments: dict[str, str], indent: str) -> str:
    """``groups:`` with each rule's explanation above it, at ``indent``."""
    out = [f"{indent}groups:\n"]
    for gi, group in enumerate(groups):
        if gi:
            out.append("\n")
        rest = {k: v for k, v in group.items() if k not in ("name", "rules")}
        out.append(f"{indent}  - name: {group['name']}\n")
        if rest:
            out.append("".join(f"{indent}    {line}\n" for line in _dump(rest).splitlines()))
        out.append(f"{indent}    rules:\n")
        for ri, rule in enumerate(group["rules"]):
            if ri:
                out.append("\n")
            note = comments.get(_rule_key(rule)) or comments.get(str(rule.get("record") or rule.get("alert")))
            if note:
                out.append(_comment(note, indent + "      "))
            out.append("".join(f"{indent}      {line}\n" for line in _dump([_rule(rule)]).splitlines()))
    return "".join(out)


def rule_file(groups: list[dict[str, Any]], header: str, comments: dict[str, str]) -> str:
    return _comment(GENERATED, "") + "#\n" + _comment(header, "") + _groups(groups, comments, "")


def prometheus_rule(groups: list[dict[str, Any]], comments: dict[str, str]) -> str:
    meta = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "claude-budget-exporter",
            "labels": {"app.kubernetes.io/name": "claude-budget-exporter", "release": "prometheus"},
        },
    }
    header = (
        "The recording rules and alerts of deploy/prometheus/ as one PrometheusRule.\n"
        "The Prometheus Operator picks this up when the labels match its ruleSelector\n"
        "(kube-prometheus-stack selects `release: <its release name>` by default)."
    )
    return (_comment(GENERATED, "") + "#\n" + _comment(header, "") + _dump(meta) + "spec:\n"
            + _groups(groups, comments, "  "))


# --------------------------------------------------------------------------- files


def render(config: Path | None = None) -> dict[str, str]:
    """Every generated file, relative path -> text."""
    m = evaluate(config)
    rules, alerts = m["rules"]["groups"], m["alerts"]["groups"]
    files = {
        RECORDING: rule_file(rules, m["files"]["recording_rules.yml"], m["comments"]),
        ALERTING: rule_file(alerts, m["files"]["alert_rules.yml"], m["comments"]),
        OPERATOR: prometheus_rule(rules + alerts, m["comments"]),
    }
    for name, dashboard in sorted(m["dashboards"].items()):
        files[f"{DASHBOARDS}/{name}"] = json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return files


def differences(files: dict[str, str], root: Path) -> list[str]:
    """A unified diff per file under ``root`` that is not what the mixin generates."""
    out = []
    for rel, text in files.items():
        path = root / rel
        have = path.read_text(encoding="utf-8") if path.exists() else ""
        if have != text:
            out.append("".join(difflib.unified_diff(have.splitlines(True), text.splitlines(True),
                                                    f"{rel} (committed)", f"{rel} (generated)")) or rel)
    stale = sorted(p.relative_to(root).as_posix() for p in (root / DASHBOARDS).glob("*.json")
                   if p.relative_to(root).as_posix() not in files)
    out += [f"{rel}: not generated by the mixin (remove it, or add it to the mixin)" for rel in stale]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a file differs")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="a jsonnet file of overrides, e.g. { _config+:: { exporterSelector: 'job=\"claude\"' } }")
    parser.add_argument("--out", type=Path, default=ROOT, metavar="DIR", help="where to write (the repository)")
    args = parser.parse_args(argv)
    files = render(args.config)
    if args.check:
        diffs = differences(files, args.out)
        for d in diffs:
            print(d)
        if diffs:
            print("the generated files are out of date: run `make mixin`", file=sys.stderr)
        return 1 if diffs else 0
    for rel, text in files.items():
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
