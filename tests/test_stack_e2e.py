"""The shipped monitoring, end to end: two exporters, a real Prometheus loaded with the
shipped rules, a real Alertmanager with the shipped routes, and the dashboards' queries.

Two "machines" each run an exporter over their own Claude Code log folder with the same
pools; machine A also holds the admin key and polls the fake Admin API. Prometheus scrapes
both as job ``claude-budget-exporter`` and evaluates every second. The scenario:

1. every query of every dashboard panel returns data, for each pool;
2. the fleet recording rules equal the sum of both machines' estimates plus the bill, to
   the cent, worked out here from the lines and amounts the test writes;
3. log lines drive pool ``agent-sdk`` under 20% left: ClaudePoolCreditLow fires and reaches
   the team receiver; more lines take it under 10%: ClaudePoolCreditCritical reaches the
   pager and the exporters' breaker webhooks, ``GET /breaker/agent-sdk`` turns 503 on both
   machines and ``check`` exits 1 (each exporter's own threshold is not reached: it is
   Alertmanager that opens them);
4. credit is restored: machine A restarts with the pool's credit raised, as an operator
   does for a top-up or the next period's larger credit (the period itself cannot be moved
   without moving the clock, and the fleet's credit is the max over instances, so the key
   instance's config is enough). Machine B keeps running, so its breaker, held open by
   Alertmanager, can close only by Alertmanager's "resolved": the alerts resolve, the
   pager and the breaker webhooks get the resolution, both breakers close, ``check`` exits 0.

Timing: the shipped ``for:`` values (2m..30m) and Alertmanager's group timers (30s..4h) are
divided by 60 in the test copies (a production minute is a test second); the shipped files
themselves are unchanged and stay covered by ``promtool``/``amtool`` in test_rules.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config.model import FAST_POLL_ENV
from tests.conftest import Exporter, clean_env, http_get, parse_metrics, run_cli, sample
from tests.fake_admin_api import FakeAdminApi
from tests.stack import (
    Alertmanager,
    Prometheus,
    WebhookRecorder,
    alertmanager_test_config,
    prometheus_config,
    require_binary,
    scale_durations,
    wait_until,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"
SHIPPED_ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
SHIPPED_BREAKER_URL = "http://exporter:9833/alertmanager/webhook"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
JOB = "claude-budget-exporter"
FACTOR = 60  # production minutes -> test seconds

KEY = "sk-ant-admin01-stack-e2e-key-0123456789abcdef"
WS = "wrkspc_01AgentSDK"
HAIKU = "claude-haiku-4-5-20251001"
# one request: 100k input at $1/MTok + 20k output at $5/MTok = $0.20
LINE_USD = Decimal("0.20")
CENT = Decimal("0.01")

# pool -> (team, entrypoint its lines carry, credit)
POOLS = {"agent-sdk": ("platform", "sdk-cli", Decimal(5)), "interactive": ("research", "cli", Decimal(100))}
RESTORED_CREDIT = Decimal(2000)
# billed per UTC day and pool, in cents as the cost report writes them (fractional cents)
BILLED_YESTERDAY_CENTS = {"agent-sdk": ("61.2345", "48.8766"), "interactive": ("22.5", "21.0")}
BILLED_TODAY_CENTS = {"agent-sdk": ("12.5",), "interactive": ("3.25",)}
WORKSPACE = {"agent-sdk": WS, "interactive": None}


def _usd(cents: tuple[str, ...]) -> Decimal:
    return sum((Decimal(c) for c in cents), Decimal(0)) / 100


def _line(n: str, at: datetime, entrypoint: str) -> bytes:
    obj = {"type": "assistant", "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "requestId": f"req_{n}",
           "entrypoint": entrypoint, "isSidechain": False, "message": {
               "id": f"msg_{n}", "model": HAIKU, "role": "assistant", "content": [],
               "usage": {"input_tokens": 100_000, "output_tokens": 20_000, "cache_read_input_tokens": 0,
                         "cache_creation_input_tokens": 0}}}
    return json.dumps(obj).encode() + b"\n"


# --------------------------------------------------------------------------- the world


@dataclass
class Machine:
    """One machine: its log folder, its exporter, and the lines written per (pool, UTC day)."""

    name: str
    root: Path
    with_key: bool
    fake_url: str
    exporter: Exporter | None = None
    lines: dict[tuple[str, date], int] = field(default_factory=dict)
    written: int = 0

    @property
    def transcript(self) -> Path:
        return self.root / "projects" / "p" / "session.jsonl"

    @property
    def url(self) -> str:
        assert self.exporter is not None
        return self.exporter.url

    def write(self, pool: str, count: int, at: datetime) -> None:
        """Append ``count`` requests of ``pool``'s entrypoint, timestamped ``at``."""
        entrypoint = POOLS[pool][1]
        self.transcript.parent.mkdir(parents=True, exist_ok=True)
        with open(self.transcript, "ab") as f:
            for _ in range(count):
                self.written += 1
                f.write(_line(f"{self.name}_{self.written}", at, entrypoint))
        key = (pool, at.date())
        self.lines[key] = self.lines.get(key, 0) + count

    def estimated(self, pool: str, day: date) -> Decimal:
        return self.lines.get((pool, day), 0) * LINE_USD

    def config(self, credit: dict[str, Decimal], reset_day: int) -> Path:
        pools = [{
            "name": name, "credit_usd": str(credit[name]), "team": team,
            "period": {"reset_day": reset_day, "timezone": "UTC"},
            "match": {"workspaces": [WORKSPACE[name] or "default"], "sources": ["claude-code"],
                      "entrypoints": [entrypoint]},
            "breaker": {"open_below": 0.05},
        } for name, (team, entrypoint, _) in POOLS.items()]
        # each machine's account reports its subscription windows through the statusline command's records
        records = self.root / "statusline.jsonl"
        if not records.exists():
            soon = int(datetime.now(UTC).timestamp())
            records.write_text(json.dumps({"type": "statusline", "timestamp": datetime.now(UTC).isoformat(),
                                           "rate_limits": {"five_hour": {"used_percentage": 42, "resets_at": soon + 3600},
                                                           "seven_day": {"used_percentage": 12,
                                                                         "resets_at": soon + 86400}}}) + "\n")
        pools.append({"name": f"five-hour-{self.name}", "team": "platform",
                      "window": {"source": "claude-max", "name": "five_hour"}})
        cfg: dict[str, Any] = {
            "refresh_interval": "200ms",
            "sources": [{"name": "claude-code", "kind": "claude_code", "paths": [str(self.root / "projects")]},
                        {"name": "claude-max", "kind": "rate_limits", "paths": [str(records)]}],
            "pools": pools,
        }
        if self.with_key:
            cfg["admin_api"] = {"key_env": "TEST_ADMIN_KEY", "base_url": self.fake_url, "poll_interval": "1s",
                                "settle_after": "0s", "api": "legacy"}  # yesterday complete whatever time the test runs
        path = self.root / f"config-{len(list(self.root.glob('config-*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        return path

    def start(self, config: Path, port: int | None = None) -> Exporter:
        env = clean_env(**{FAST_POLL_ENV: "1"}, **({"TEST_ADMIN_KEY": KEY} if self.with_key else {}))
        e = Exporter(["--config", str(config), "--state-dir", str(self.root / "state")], env,
                     self.root / "exporter.log")
        if port is not None:
            e.port = port
        self.exporter = e  # before start(): a process that never turns healthy is still stopped
        return e.start()

    def check(self, pool: str) -> tuple[int, str]:
        r = run_cli("check", "--pool", pool, "--url", self.url, env=clean_env())
        return r.returncode, r.stdout + r.stderr

    def breaker(self, pool: str) -> tuple[int, dict[str, Any]]:
        code, body = http_get(f"{self.url}/breaker/{pool}")
        return code, json.loads(body)


def _wait_away_from_midnight() -> None:
    """The scenario's days are UTC days: do not let one end while it runs."""
    now = datetime.now(UTC)
    left = (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - now).total_seconds()
    if left < 150:
        time.sleep(left + 5)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    prometheus_bin = require_binary("prometheus")
    alertmanager_bin = require_binary("prometheus-alertmanager", "alertmanager")
    _wait_away_from_midnight()
    print(f"logs and data under {tmp_path}")
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    # the period starts yesterday (00:00 UTC): yesterday is a complete billed day inside it
    reset_day = yesterday.day

    with ExitStack() as cleanup:
        fake = FakeAdminApi(key=KEY, now=now).start()
        cleanup.callback(fake.stop)
        for pool, cents in BILLED_YESTERDAY_CENTS.items():
            for i, amount in enumerate(cents):
                fake.add_spend(yesterday + timedelta(hours=3 + i), amount, workspace_id=WORKSPACE[pool],
                               model=HAIKU, token_type=("uncached_input_tokens", "output_tokens")[i % 2],
                               tokens=10_000)
        for pool, cents in BILLED_TODAY_CENTS.items():
            for amount in cents:
                fake.add_spend(max(today, now - timedelta(minutes=10)), amount, workspace_id=WORKSPACE[pool],
                               model=HAIKU, token_type="output_tokens", tokens=2_000)

        a = Machine("a", tmp_path / "a", with_key=True, fake_url=fake.url)
        b = Machine("b", tmp_path / "b", with_key=False, fake_url=fake.url)
        at_yesterday = yesterday + timedelta(hours=12)
        at_today = max(today + timedelta(seconds=1), now - timedelta(minutes=2))
        a.write("agent-sdk", 4, at_yesterday)
        a.write("interactive", 1, at_yesterday)
        b.write("agent-sdk", 1, at_yesterday)
        b.write("interactive", 1, at_yesterday)
        a.write("agent-sdk", 2, at_today)
        a.write("interactive", 1, at_today)
        b.write("agent-sdk", 2, at_today)
        b.write("interactive", 1, at_today)
        credit = {name: c for name, (_, _, c) in POOLS.items()}
        for m in (a, b):
            cleanup.callback(lambda m=m: m.exporter.stop() if m.exporter is not None else None)
            m.start(m.config(credit, reset_day))

        recorder = WebhookRecorder().start()
        cleanup.callback(recorder.stop)
        shipped = yaml.safe_load(SHIPPED_ALERTMANAGER.read_text(encoding="utf-8"))
        # the pager and the team chat are the recorder; the breaker receiver posts to both
        # exporters (each machine's `check` must agree) and to the recorder, which keeps a copy
        am_config = alertmanager_test_config(shipped, factor=FACTOR, urls={
            SHIPPED_BREAKER_URL: [f"{m.url}/alertmanager/webhook" for m in (a, b)] + [recorder.url("/breaker")],
            "http://pager-gateway:8080/alertmanager": [recorder.url("/pager")],
            "http://team-chat-gateway:8080/alertmanager": [recorder.url("/team")],
        })
        (tmp_path / "alertmanager").mkdir()
        alertmanager = Alertmanager(tmp_path / "alertmanager", am_config, binary=alertmanager_bin)
        cleanup.callback(alertmanager.stop)
        alertmanager.start()

        prom_dir = tmp_path / "prometheus"
        prom_dir.mkdir()
        rule_files = [prom_dir / "recording_rules.yml", prom_dir / "alert_rules.yml"]
        rule_files[0].write_text((PROM / "recording_rules.yml").read_text(encoding="utf-8"), encoding="utf-8")
        rule_files[1].write_text(scale_durations((PROM / "alert_rules.yml").read_text(encoding="utf-8"), FACTOR),
                                 encoding="utf-8")
        prometheus = Prometheus(prom_dir, prometheus_config(
            rule_files=rule_files, alertmanager=f"127.0.0.1:{alertmanager.port}",
            targets=[f"127.0.0.1:{m.exporter.port}" for m in (a, b) if m.exporter]), binary=prometheus_bin)
        cleanup.callback(prometheus.stop)
        prometheus.start()
        yield {"machines": {"a": a, "b": b}, "fake": fake, "prometheus": prometheus, "alertmanager": alertmanager,
               "recorder": recorder, "today": today.date(), "yesterday": yesterday.date(), "reset_day": reset_day,
               "credit": credit}


# --------------------------------------------------------------------------- dashboards


def _panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in dash["panels"]:
        if p["type"] == "row":
            yield from p.get("panels", [])
        else:
            yield p


# Grafana's built-in variables as Grafana fills them for this Prometheus (1 s scrapes):
# $__rate_interval is at least four scrape intervals; the range covers the whole run.
GRAFANA_VARS = {"$__rate_interval": "15s", "$__interval": "1s", "$__range": "5m", "$__range_s": "300"}


def _fill(expr: str, pool: str, team: str) -> str:
    for k, v in GRAFANA_VARS.items():
        expr = expr.replace(k, v)
    expr = expr.replace("${pool}", pool).replace("$pool", pool).replace("${team}", team).replace("$team", team)
    # the job variable on its one value, the instance variable on "All" (both machines)
    expr = expr.replace("$job", JOB).replace("$instance", ".*")
    assert "$" not in expr, f"unfilled variable in {expr!r}"
    return expr


def empty_dashboard_queries(prometheus: Prometheus, pool: str, team: str) -> list[str]:
    """Every panel query and query variable of every dashboard that returns no data for ``pool``."""
    empty = []
    end = time.time()
    for path in DASHBOARDS:
        dash = json.loads(path.read_text(encoding="utf-8"))
        for v in dash["templating"]["list"]:
            if v["type"] != "query":
                continue
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
            assert m, q
            values = {s["metric"].get(m.group(2)) for s in prometheus.query(_fill(m.group(1), pool, team))}
            if m.group(2) == "instance":
                if len(values - {None}) != 2:  # both machines
                    empty.append(f"{path.name} variable {v['name']}: {q} -> {sorted(filter(None, values))}")
            elif {"pool": pool, "team": team, "job": JOB}[m.group(2)] not in values:
                empty.append(f"{path.name} variable {v['name']}: {q} -> {sorted(filter(None, values))}")
        for p in _panels(dash):
            for t in p["targets"]:
                expr = _fill(t["expr"], pool, team)
                if t.get("range") and not t.get("instant"):
                    result = prometheus.query_range(expr, end - 30, end, 1)
                else:
                    result = prometheus.query(expr)
                if not result:
                    empty.append(f"{path.name} panel {p['title']!r} {t['refId']}: {expr}")
    return empty


# --------------------------------------------------------------------------- helpers


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _cents(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(CENT)


def _scraped(machine: Machine, name: str, **labels: str) -> Decimal:
    code, body = http_get(machine.url + "/metrics")
    assert code == 200
    v = sample(parse_metrics(body.decode()), name, **labels)
    return Decimal(0) if v is None else Decimal(repr(v))


def _fleet(prometheus: Prometheus, record: str, pool: str, **labels: str) -> Decimal | None:
    selector = ",".join([f'pool="{pool}"', *(f'{k}="{v}"' for k, v in labels.items())])
    got = prometheus.query(f"{record}{{{selector}}}")
    assert len(got) <= 1, got
    return Decimal(got[0]["value"][1]) if got else None


def expected_fleet(world: dict[str, Any], credit: dict[str, Decimal]) -> dict[tuple[str, str], Decimal]:
    """The fleet figures per pool, from what the test wrote: (record, pool) -> USD or ratio."""
    today, yesterday = world["today"], world["yesterday"]
    ms = world["machines"].values()
    out: dict[tuple[str, str], Decimal] = {}
    for pool in POOLS:
        est_today = sum((m.estimated(pool, today) for m in ms), Decimal(0))
        est_yesterday = sum((m.estimated(pool, yesterday) for m in ms), Decimal(0))
        billed_y, billed_t = _usd(BILLED_YESTERDAY_CENTS[pool]), _usd(BILLED_TODAY_CENTS[pool])
        # the period began yesterday; the bill is complete through yesterday
        spend = billed_y + est_today
        out[("est_today", pool)] = est_today
        out[("est_yesterday", pool)] = est_yesterday
        out[("est_period", pool)] = est_today + est_yesterday
        out[("billed_yesterday", pool)] = billed_y
        out[("billed_today", pool)] = billed_t
        out[("billed_period", pool)] = billed_y + billed_t
        out[("spend", pool)] = spend
        out[("remaining", pool)] = credit[pool] - spend
        out[("ratio", pool)] = (credit[pool] - spend) / credit[pool]
        out[("drift_yesterday", pool)] = est_yesterday / billed_y
    return out


def fleet_mismatches(world: dict[str, Any], credit: dict[str, Decimal]) -> list[str]:
    """Where the recording rules differ (to the cent; ratios to 1e-4) from the hand figures and
    from the sum of the two exporters' own /metrics."""
    prom: Prometheus = world["prometheus"]
    exp = expected_fleet(world, credit)
    a, b = world["machines"]["a"], world["machines"]["b"]
    bad = []

    def cmp(what: str, got: Decimal | None, want: Decimal, step: Decimal = CENT) -> None:
        if got is None or got.quantize(step) != want.quantize(step):
            bad.append(f"{what}: got {got}, want {want}")

    for pool in POOLS:
        for window in ("today", "yesterday", "period"):
            got = _fleet(prom, "claude:pool_estimated_spend_usd:sum", pool, window=window)
            cmp(f"{pool} estimated {window}", got, exp[(f"est_{window}", pool)])
            both = (_scraped(a, "claude_estimated_spend_usd", pool=pool, window=window)
                    + _scraped(b, "claude_estimated_spend_usd", pool=pool, window=window))
            cmp(f"{pool} estimated {window} = a + b", got, both)
            cmp(f"{pool} billed {window}", _fleet(prom, "claude:pool_billed_spend_usd:max", pool, window=window),
                exp[(f"billed_{window}", pool)])
        cmp(f"{pool} settled bill", _fleet(prom, "claude:pool_billed_settled_spend_usd:max", pool),
            exp[("billed_yesterday", pool)])
        cmp(f"{pool} spend", _fleet(prom, "claude:pool_spend_usd:hybrid", pool), exp[("spend", pool)])
        cmp(f"{pool} remaining", _fleet(prom, "claude:pool_remaining_usd:hybrid", pool), exp[("remaining", pool)])
        cmp(f"{pool} credit", _fleet(prom, "claude:pool_credit_usd:max", pool), credit[pool])
        cmp(f"{pool} remaining ratio", _fleet(prom, "claude:pool_remaining_ratio:hybrid", pool),
            exp[("ratio", pool)], Decimal("0.0001"))
        cmp(f"{pool} drift yesterday", _fleet(prom, "claude:pool_spend_drift:ratio", pool, window="yesterday"),
            exp[("drift_yesterday", pool)], Decimal("0.0001"))
    return bad


def _wait_fleet(world: dict[str, Any], credit: dict[str, Decimal], what: str, timeout: float = 20.0) -> None:
    last: list[str] = []

    def probe() -> bool:
        nonlocal last
        last = fleet_mismatches(world, credit)
        return not last

    try:
        wait_until(probe, timeout, what, interval=0.5)
    except AssertionError:
        raise AssertionError(f"{what}: fleet rules differ:\n  " + "\n  ".join(last)) from None


# --------------------------------------------------------------------------- the scenario


def test_two_exporters_prometheus_alertmanager_dashboards_and_breaker(stack: dict[str, Any]) -> None:
    t0 = time.monotonic()
    prom: Prometheus = stack["prometheus"]
    am: Alertmanager = stack["alertmanager"]
    rec: WebhookRecorder = stack["recorder"]
    a, b = stack["machines"]["a"], stack["machines"]["b"]
    credit = dict(stack["credit"])

    # both machines scraped; machine A has polled the bill
    wait_until(lambda: prom.query(f'count(up{{job="{JOB}"}} == 1) == 2'), 20, "both exporters scraped")
    wait_until(lambda: prom.query('claude:pool_spend_drift:ratio{window="yesterday"}'), 20,
               "the first bill in Prometheus")

    # 1) the fleet recording rules, to the cent
    _wait_fleet(stack, credit, "fleet figures after the first scrapes")

    # spend keeps arriving on both machines: rates, burn rate and forecasts need growth
    now = datetime.now(UTC)
    a.write("agent-sdk", 1, now)
    b.write("interactive", 1, now)
    _wait_fleet(stack, credit, "fleet figures after new lines")
    wait_until(lambda: len(prom.query("claude:pool_exhaustion_timestamp_seconds:projected")) == 2, 20,
               "a forecast for both pools")

    # 2) every panel of every dashboard has data, for each pool and its team
    for pool, (team, _, _) in POOLS.items():
        empty = empty_dashboard_queries(prom, pool, team)
        assert not empty, "queries without data:\n  " + "\n  ".join(empty)
    t_dash = time.monotonic()

    # 3) under 20% left: the warning fires (and reaches the team), not the critical
    assert prom.alert_state("ClaudePoolCreditLow", pool="agent-sdk") is None
    now = datetime.now(UTC)
    a.write("agent-sdk", 2, now)
    b.write("agent-sdk", 8, now)
    exp = expected_fleet(stack, credit)
    assert Decimal("0.10") <= exp[("ratio", "agent-sdk")] < Decimal("0.20"), exp[("ratio", "agent-sdk")]
    _wait_fleet(stack, credit, "fleet figures under 20%")
    wait_until(lambda: prom.alert_state("ClaudePoolCreditLow", pool="agent-sdk") == "firing", 30,
               "ClaudePoolCreditLow firing")
    wait_until(lambda: rec.first("/team", "ClaudePoolCreditLow", "firing"), 20,
               "the warning at the team receiver")
    assert prom.alert_state("ClaudePoolCreditCritical", pool="agent-sdk") is None
    for m in (a, b):
        code, body = m.breaker("agent-sdk")
        assert code == 200, body
    assert not rec.at("/pager") and not rec.at("/breaker")

    # 4) under 10% left: the critical reaches the pager and both exporters' breakers
    now = datetime.now(UTC)
    b.write("agent-sdk", 3, now)
    exp = expected_fleet(stack, credit)
    assert exp[("ratio", "agent-sdk")] < Decimal("0.10"), exp[("ratio", "agent-sdk")]
    _wait_fleet(stack, credit, "fleet figures under 10%")
    wait_until(lambda: prom.alert_state("ClaudePoolCreditCritical", pool="agent-sdk") == "firing", 30,
               "ClaudePoolCreditCritical firing")
    page = wait_until(lambda: rec.first("/pager", "ClaudePoolCreditCritical", "firing"), 20, "the page")
    hook = wait_until(lambda: rec.first("/breaker", "ClaudePoolCreditCritical", "firing"), 20,
                      "the breaker webhook")
    warn = rec.first("/team", "ClaudePoolCreditLow", "firing")
    assert warn is not None and warn.at < min(hook.at, page.at), "the warning came first"
    (alert,) = [x for x in page.alerts("firing") if x["labels"]["alertname"] == "ClaudePoolCreditCritical"]
    assert alert["labels"]["pool"] == "agent-sdk" and alert["labels"]["breaker"] == "open"
    assert alert["annotations"]["runbook_url"].endswith("#claudepoolcreditcritical")
    assert "of its credit left" in alert["annotations"]["summary"]

    for m in (a, b):
        code, body = wait_until(lambda m=m: (r := m.breaker("agent-sdk"))[0] == 503 and r, 20,
                                f"machine {m.name}'s breaker open")
        # opened by Alertmanager: neither exporter alone sees the pool under its 5% threshold
        assert body["state"] == "open" and body["source"] == "alertmanager", body
        assert body["remaining_ratio"] > 0.05, body
        assert m.breaker("interactive")[0] == 200
        rc, out = m.check("agent-sdk")
        assert rc == 1 and out.startswith("open"), out
        assert m.check("interactive")[0] == 0
    # the warning is inhibited under the critical in Alertmanager
    held = {x["labels"]["alertname"]: x["status"]["state"] for x in am.alerts()
            if x["labels"].get("pool") == "agent-sdk"}
    assert held.get("ClaudePoolCreditCritical") == "active", held
    assert held.get("ClaudePoolCreditLow") == "suppressed", held
    t_open = time.monotonic()

    # 5) credit restored: machine A restarts with the raised credit; B's breaker must
    #    wait for Alertmanager's "resolved"
    credit["agent-sdk"] = RESTORED_CREDIT
    assert a.exporter is not None
    port = a.exporter.port
    a.exporter.stop()
    a.start(a.config(credit, stack["reset_day"]), port=port)
    wait_until(lambda: (_fleet(prom, "claude:pool_credit_usd:max", "agent-sdk") or 0) == RESTORED_CREDIT, 20,
               "the raised credit in Prometheus")
    wait_until(lambda: prom.alert_state("ClaudePoolCreditCritical", pool="agent-sdk") is None
               and prom.alert_state("ClaudePoolCreditLow", pool="agent-sdk") is None, 20,
               "the pool alerts resolved in Prometheus")
    resolved = wait_until(lambda: rec.first("/breaker", "ClaudePoolCreditCritical", "resolved"), 30,
                          "the resolution at the breaker webhook")
    wait_until(lambda: rec.first("/pager", "ClaudePoolCreditCritical", "resolved"), 30, "the page resolved")
    code, body = wait_until(lambda: (r := b.breaker("agent-sdk"))[0] == 200 and r, 10, "B's breaker closed")
    assert body["state"] == "closed", body
    for m in (a, b):
        code, body = m.breaker("agent-sdk")
        assert code == 200 and body["state"] == "closed", body
        rc, out = m.check("agent-sdk")
        assert rc == 0 and out.startswith("closed"), out
    assert resolved.at > hook.at
    # the fleet view after the top-up, still to the cent
    _wait_fleet(stack, credit, "fleet figures after the top-up")
    wait_until(lambda: not [x for x in am.alerts() if x["labels"].get("pool") == "agent-sdk"
                            and x["labels"]["alertname"].startswith("ClaudePoolCredit")], 20,
               "Alertmanager holding no pool credit alert")
    assert prom.alert_state("ClaudePoolProjectedExhaustion", pool="agent-sdk") is None
    # the warning, muted under the critical, is resolved at the team receiver too
    wait_until(lambda: rec.first("/team", "ClaudePoolCreditLow", "resolved"), 30, "the warning resolved")
    # B's breaker was closed by the resolution, not by a restart: B never restarted
    assert b.exporter is not None and b.exporter.proc is not None and b.exporter.proc.poll() is None
    hooks = [json.loads(line) for line in b.exporter.log_path.read_text().splitlines()
             if '"alertmanager_webhook"' in line]
    assert [h["status"] for h in hooks][:1] == ["firing"] and hooks[-1]["status"] == "resolved", hooks
    assert hooks[-1]["open_pools"] == [], hooks
    t_end = time.monotonic()
    print(f"timings: dashboards {t_dash - t0:.1f}s, breaker open {t_open - t0:.1f}s, resolved {t_end - t0:.1f}s")
