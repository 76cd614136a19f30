"""Config: every problem with its path, exit code 2, the built-in default."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from exporter.config import ConfigError, default_config, load_config, parse_config
from tests.conftest import run_cli

GOOD = """
listen: "127.0.0.1:9900"
state_dir: /tmp/x
admin_api:
  key_env: MY_KEY
  poll_interval: 2m
sources:
  - name: claude-code
    kind: claude_code
    paths: [/logs/claude]
  - name: token-metrics
    kind: jsonl
    paths: [/var/log/agents/*.jsonl]
    fields: {timestamp: ts, model: model, input_tokens: input_tokens, output_tokens: output_tokens,
             input_chars: prompt_chars, output_chars: completion_chars, cost_usd: cost}
    chars_per_token: 4
pricing:
  overrides:
    claude-sonnet-4-5: {input: 3, output: 15, cache_read: 0.3, cache_write_5m: 3.75, cache_write_1h: 6}
pools:
  - name: agent-sdk
    plan: max20x
    team: platform
    period: {reset_day: 15, timezone: UTC}
    match: {workspaces: [wrkspc_01AgentSDK], sources: [claude-code], entrypoints: [sdk-cli, sdk-py, sdk-ts]}
    breaker: {open_below: 0.05}
  - name: team-api
    plan: team
    seats: 7
    match: {workspaces: [default]}
"""


def test_good_config_parses_every_key(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    c = load_config(p)
    assert c.listen == "127.0.0.1:9900"
    assert c.admin_api is not None and c.admin_api.key_env == "MY_KEY" and c.admin_api.poll_interval == 120
    assert [s.name for s in c.sources] == ["claude-code", "token-metrics"]
    assert c.sources[1].fields["input_chars"] == "prompt_chars"
    assert c.price_overrides["claude-sonnet-4-5"].cache_read == Decimal("0.3")
    pool = c.pool("agent-sdk")
    assert pool is not None and pool.credit_usd == Decimal(200) and pool.period.reset_day == 15
    assert pool.match.entrypoints == ("sdk-cli", "sdk-py", "sdk-ts")
    assert c.pool("team-api").credit_usd == Decimal(700)


def test_every_problem_is_reported_with_its_path() -> None:
    raw = {
        "listen": "nope",
        "bogus": 1,
        "admin_api": {"poll_interval": "30s", "base_url": "ftp://x"},
        "sources": [{"name": "a", "kind": "weird", "paths": []}, {"name": "a", "kind": "jsonl"}],
        "pools": [{"name": "p", "plan": "max20x", "credit_usd": 5, "period": {"reset_day": 32, "timezone": "Mars/Base"},
                   "match": {"sources": ["missing"]}, "breaker": {"open_below": 2}}],
    }
    with pytest.raises(ConfigError) as ei:
        parse_config(raw)
    problems = "\n".join(ei.value.problems)
    for expected in [
        "listen: must be HOST:PORT",
        "bogus: unknown key",
        "admin_api.poll_interval: must be at least 1m",
        "admin_api.base_url: must be an http(s) URL",
        "sources[0].kind: must be one of",
        "sources[0].paths: must name at least one",
        "sources[1].name: duplicate source name",
        "sources[1].paths: is required",
        "pools[0]: give plan or credit_usd, not both",
        "pools[0].period.reset_day: must be 1..31",
        "pools[0].period.timezone: unknown time zone",
        "pools[0].match.sources[0]: no source named 'missing'",
        "pools[0].breaker.open_below: must be at most 1",
    ]:
        assert expected in problems, f"missing {expected!r} in:\n{problems}"


def test_wrong_types_are_named() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config({"sources": "x", "pools": [{"name": "p", "credit_usd": "lots", "match": {"models": 3}}]})
    problems = "\n".join(ei.value.problems)
    assert "sources: must be a list of sources, not a string" in problems
    assert "pools[0].credit_usd: must be a number" in problems
    assert "pools[0].match.models: must be a list of strings, not an integer" in problems


def test_default_config_honours_claude_config_dir() -> None:
    c = default_config({"CLAUDE_CONFIG_DIR": "/a, /b"})
    assert c.sources[0].paths == ("/a/projects", "/b/projects")
    assert c.admin_api is None
    assert default_config({"ANTHROPIC_ADMIN_API_KEY": "sk-ant-admin01-x"}).admin_api is not None
    assert default_config({}).sources[0].paths == ("~/.claude/projects", "~/.config/claude/projects")


def test_validate_config_exits_2_listing_every_problem(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("pools:\n  - name: x\n    period: {reset_day: 0}\n    match: {}\nlisten: 5\n")
    r = run_cli("validate-config", str(p))
    assert r.returncode == 2
    assert "pools[0].period.reset_day: must be 1..31" in r.stderr
    assert "pools[0]: needs plan, credit_usd or spend_limit" in r.stderr
    assert "listen: must be a non-empty string" in r.stderr
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    r = run_cli("validate-config", str(good))
    assert r.returncode == 0, r.stderr


def test_yaml_syntax_error_has_a_line_number(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("sources:\n  - name: [unclosed\n")
    r = run_cli("serve", "--config", str(p))
    assert r.returncode == 2
    assert "line 2" in r.stderr or "line 3" in r.stderr


def _pool(**kw) -> dict:
    return {"name": "p", "match": {"workspaces": ["default"]}, **kw}


@pytest.mark.parametrize(("pool", "credit"), [
    (_pool(plan="pro"), 20),
    (_pool(plan="max5x"), 100),
    (_pool(plan="max20x"), 200),
    (_pool(plan="team_standard", seats=10), 200),  # $20 a Team Standard seat
    (_pool(plan="team_premium", seats=3), 300),  # $100 a Team Premium seat
    (_pool(plan="team", seats={"standard": 5, "premium": 2}), 300),  # seats by tier: 5 x 20 + 2 x 100
    (_pool(plan="enterprise_usage", seats=4), 80),  # usage-based Enterprise: $20 a user
    (_pool(plan="enterprise_premium", seats=2), 400),  # seat-based Enterprise Premium: $200 a seat
    (_pool(plan="team", seats=7), 700),  # deprecated spelling, read as team_premium
])
def test_plan_presets_give_the_agent_sdk_credit(pool: dict, credit: int) -> None:
    c = parse_config({"pools": [pool]})
    assert c.pools[0].credit_usd == Decimal(credit)


def test_the_old_team_plan_still_works_and_says_it_is_deprecated() -> None:
    c = parse_config({"pools": [_pool(plan="team", seats=7)]})
    assert len(c.deprecations) == 1
    assert c.deprecations[0].startswith("pools[0].plan: ") and "team_standard" in c.deprecations[0]
    assert parse_config({"pools": [_pool(plan="team_premium", seats=7)]}).deprecations == ()


def test_the_deprecation_is_said_in_the_log(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("pools:\n  - {name: p, plan: team, seats: 2, match: {workspaces: [default]}}\n")
    r = run_cli("validate-config", str(p))
    assert r.returncode == 0
    assert "config_deprecated" in r.stderr and "pools[0].plan" in r.stderr


@pytest.mark.parametrize(("pool", "problem"), [
    (_pool(plan="enterprise_standard", seats=3), "pools[0].plan: Enterprise Standard seats have no Agent SDK credit"),
    (_pool(plan="team_standard"), "pools[0].seats: is required with plan: team_standard"),
    (_pool(plan="max20x", seats=2), "pools[0].seats: only per-seat plans"),
    (_pool(plan="team", seats={"standard": 0}), "pools[0].seats: names no seats"),
    (_pool(plan="team", seats={"gold": 1}), "pools[0].seats.gold: unknown key"),
    (_pool(plan="enterprise"), "pools[0].plan: must be one of"),
])
def test_plan_preset_problems_have_their_path(pool: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config({"pools": [pool]})
    assert any(p.startswith(problem) for p in ei.value.problems), ei.value.problems


# ----------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(("raw", "problem"), [
    ({"refresh_interval": "99999999999999999999d"}, "refresh_interval: must be at most 1h"),
    ({"refresh_interval": "61m"}, "refresh_interval: must be at most 1h"),
    ({"admin_api": {"poll_interval": "25h"}}, "admin_api.poll_interval: must be at most 1d"),
    ({"admin_api": {"poll_interval": "1" + "0" * 400 + "s"}}, "admin_api.poll_interval: must be at most 1d"),
    ({"admin_api": {"settle_after": "3d"}}, "admin_api.settle_after: must be at most 2d"),
    ({"pools": [_pool(credit_usd=1e30)]}, "pools[0].credit_usd: must be at most 1000000000"),
    ({"pools": [_pool(credit_usd="1e999999999")]}, "pools[0].credit_usd: must be at most"),
    ({"pools": [_pool(credit_usd="0.001")]}, "pools[0].credit_usd: must be at least 0.01"),
    ({"pricing": {"overrides": {"m": {"input": 10**7}}}}, "pricing.overrides.m.input: must be at most 1000000"),
    ({"pricing": {"overrides": {"m": {"web_search": "1e400"}}}}, "pricing.overrides.m.web_search: must be at most"),
    ({"pricing": {"overrides": {"m": {"long_context": {"output": 2e6}}}}},
     "pricing.overrides.m.long_context.output: must be at most"),
    ({"sources": [{"name": "t", "kind": "jsonl", "paths": ["x"], "chars_per_token": "1e-30"}]},
     "sources[0].chars_per_token: must be at least 0.1"),
    ({"state_dir": "~no-such-user-here/state"}, "state_dir: cannot expand '~no-such-user-here'"),
])
def test_durations_money_and_prices_are_bounded(raw: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(raw, env={})
    assert any(p.startswith(problem) for p in ei.value.problems), ei.value.problems


def test_values_at_the_bounds_are_accepted() -> None:
    c = parse_config({"refresh_interval": "1h", "admin_api": {"poll_interval": "24h", "settle_after": "2d"},
                      "pricing": {"overrides": {"m": {"input": 1_000_000, "web_search": 1_000_000}}},
                      "pools": [_pool(credit_usd=1_000_000_000), _pool(name="q", credit_usd="0.01")]}, env={})
    assert c.refresh_interval == 3600 and c.admin_api.poll_interval == 86400
    assert [p.credit_usd for p in c.pools] == [Decimal(10**9), Decimal("0.01")]
    assert c.price_overrides["m"].input == Decimal(10**6)


@pytest.mark.parametrize("text", [
    "a: " + "[" * 5000 + "]" * 5000 + "\n",
    "".join(" " * i + f"k{i}:\n" for i in range(3000)),
])
def test_a_config_nested_too_deeply_is_exit_2_with_its_reason(tmp_path: Path, text: str) -> None:
    p = tmp_path / "deep.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(p, env={})
    assert len(ei.value.problems) == 1 and ei.value.problems[0].startswith("(file): nested too deeply to read")
    r = run_cli("validate-config", str(p))
    assert r.returncode == 2, r.stderr
    assert "nested too deeply" in r.stderr and str(p) in r.stderr and "Traceback" not in r.stderr


def test_several_organisations_and_the_analytics_keys() -> None:
    c = parse_config({"admin_api": [{"name": "prod", "key_env": "A"}, {"name": "lab", "key_file": "/k", "api": "legacy"}],
                      "pools": [{"name": "p", "credit_usd": 5, "match": {"orgs": ["lab"], "workspaces": ["default"]}},
                                {"name": "w", "credit_usd": 5, "period": {"every": "week", "weekday": "friday"},
                                 "match": {"products": ["claude_code"], "actors": ["a@example.com"]}}]})
    assert [o.name for o in c.orgs] == ["prod", "lab"] and c.admin_api is c.orgs[0] and c.several_orgs
    assert c.orgs[1].api == "legacy" and c.pool("w").period.weekday == 4
    with pytest.raises(ConfigError) as e:
        parse_config({"admin_api": [{"name": "a"}, {"name": "a", "api": "newest"}],
                      "pools": [{"name": "p", "credit_usd": 5, "match": {"orgs": ["b"], "workspaces": ["x"]}},
                                {"name": "q", "spend_limit": "not-a-limit"},
                                {"name": "r", "credit_usd": 5, "period": {"every": "fortnight", "reset_day": 3},
                                 "match": {"sources": []}}]})
    problems = "\n".join(e.value.problems)
    for want in ("admin_api[1].name: duplicate organisation name 'a'", "admin_api[1].api: must be one of",
                 "pools[0].match.orgs[0]: no organisation named 'b'", "pools[1].spend_limit: must be a spend limit id",
                 "pools[2].period.every: must be one of month, week, day", "pools[2].period.reset_day"):
        assert want in problems, problems
    with pytest.raises(ConfigError) as e:
        parse_config({"admin_api": {"api": "legacy"},
                      "pools": [{"name": "p", "credit_usd": 5, "match": {"products": ["claude_code"]}}]})
    assert "pools[0].match.products: only the Usage and Cost Analytics API" in "\n".join(e.value.problems)
