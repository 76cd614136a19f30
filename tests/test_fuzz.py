"""Fuzzing what comes from outside: log lines and config files.

Whatever bytes a log holds, a parser returns usage records that make sense or one reason
from the closed set that labels ``claude_log_lines_total``; it never raises. Whatever
YAML a config file holds, loading it gives a Config or a ConfigError whose every problem
reads ``path: message`` with a path that points into the document.
"""

from __future__ import annotations

import math
import re
import string
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from exporter.logs import parse as readers
from exporter.config.load import (
    JSONL_FIELDS,
    Config,
    ConfigError,
    SourceConfig,
    load_config,
    parse_config,
)
from exporter.core.records import UsageRecord
from exporter.config.web import WebConfig, parse_web_config
from tests.conftest import examples

NOW = time.time()
FUZZ = settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------- values

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "0", "-1", "1e400", "NaN", "2026-11-01T12:00:00Z", "9999-12-31T23:59:59+14:00",
                     "0001-01-01T00:00:00-23:59", "claude-sonnet-4-5", "<synthetic>", "\x00", "\ud800"]),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)
counts = st.one_of(st.integers(min_value=-10, max_value=10**6), st.sampled_from([0, 50_000_000, 50_000_001, 2**63,
                                                                                  -(2**63), 1.0, 1.5, True]),
                   json_values)
timestamps = st.one_of(
    st.just("2026-11-01T12:00:00.000Z"),
    st.floats(min_value=0, max_value=4e12), st.integers(min_value=-(2**63), max_value=2**63),
    st.datetimes().map(lambda d: d.isoformat()), st.text(max_size=40), json_values,
)


def _maybe(d: dict[str, Any], key: str, strategy_value: Any) -> None:
    if strategy_value is not _ABSENT:
        d[key] = strategy_value


_ABSENT = object()


def optional(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.just(_ABSENT), strategy)


clean_counts = st.integers(min_value=0, max_value=200_000) | st.none()
clean_timestamps = st.integers(min_value=1_600_000_000, max_value=int(NOW)).map(
    lambda t: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t)))


@st.composite
def claude_lines(draw) -> dict[str, Any]:
    if draw(st.booleans()):  # half the time nearly right, so the checks past the first are reached
        obj = _claude_line(draw, clean_counts, clean_timestamps, st.text(max_size=8), clean=True)
    else:
        obj = _claude_line(draw, counts, timestamps, json_values)
    if draw(st.integers(0, 3)) == 0:  # a subagent's turn carried in a progress line of its parent
        outer: dict[str, Any] = {"type": draw(st.just("progress") | json_values),
                                 "data": draw(st.fixed_dictionaries({"message": st.just(obj)}, optional={
                                     "type": st.just("agent_progress") | json_values}) | json_values)}
        for k, strat in (("timestamp", clean_timestamps | timestamps), ("entrypoint", json_values),
                         ("message", json_values)):
            _maybe(outer, k, draw(optional(strat)))
        return outer
    return obj


def _claude_line(draw, counts, timestamps, json_values, clean: bool = False) -> dict[str, Any]:
    usage: dict[str, Any] = {}
    for k in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        _maybe(usage, k, draw(optional(counts)))
    _maybe(usage, "cache_creation", draw(optional(st.one_of(
        st.fixed_dictionaries({}, optional={"ephemeral_5m_input_tokens": counts, "ephemeral_1h_input_tokens": counts}),
        json_values))))
    _maybe(usage, "server_tool_use", draw(optional(st.one_of(
        st.fixed_dictionaries({"web_search_requests": counts}), json_values))))
    for k in ("service_tier", "inference_geo", "speed"):
        _maybe(usage, k, draw(optional(json_values)))
    message: dict[str, Any] = {"usage": draw(st.just(usage) | st.just(usage) | json_values)}
    _maybe(message, "model", draw(optional(st.one_of(st.sampled_from(
        ["claude-sonnet-4-5-20250929", "claude-opus-4-6", "<synthetic>", ""]), json_values))))
    _maybe(message, "id", draw(optional(json_values)))
    obj: dict[str, Any] = {"type": draw(st.sampled_from(["assistant", "assistant", "user"]) | json_values),
                           "message": draw(st.just(message) | st.just(message) | json_values)}
    if clean:
        obj = {"type": "assistant", "message": {**message, "usage": usage,
                                                "model": draw(st.sampled_from(["claude-haiku-4-5", "x"]))},
               "timestamp": draw(timestamps)}
    for k, strat in (("timestamp", timestamps), ("requestId", json_values), ("entrypoint", json_values),
                     ("isApiErrorMessage", st.booleans() | json_values), ("isSidechain", json_values)):
        _maybe(obj, k, draw(optional(strat)))
    return obj


@st.composite
def cli_lines(draw) -> dict[str, Any]:
    per_model = st.fixed_dictionaries({}, optional={
        "inputTokens": counts, "outputTokens": counts, "cacheReadInputTokens": counts,
        "cacheCreationInputTokens": counts, "webSearchRequests": counts, "costUSD": json_values | st.decimals()
        .map(str)})
    obj: dict[str, Any] = {}
    _maybe(obj, "type", draw(optional(st.sampled_from(["result", "system"]) | json_values)))
    _maybe(obj, "modelUsage", draw(optional(st.one_of(
        st.dictionaries(st.sampled_from(["claude-haiku-4-5", "", "<synthetic>"]) | st.text(max_size=8), per_model,
                        max_size=3),
        st.lists(per_model.map(lambda d: {**d, "model": "claude-haiku-4-5"}), max_size=3), json_values))))
    _maybe(obj, "usage", draw(optional(st.fixed_dictionaries({}, optional={
        "input_tokens": counts, "output_tokens": counts, "cache_creation_input_tokens": counts,
        "cache_creation": st.fixed_dictionaries({}, optional={
            "ephemeral_5m_input_tokens": counts, "ephemeral_1h_input_tokens": counts}) | json_values,
        "server_tool_use": st.fixed_dictionaries({"web_search_requests": counts}) | json_values,
        "model": json_values}) | json_values)))
    models = st.sampled_from(["claude-haiku-4-5", "gpt-4o", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"])
    for k, strat in (("total_cost_usd", json_values), ("cost_usd", json_values | st.decimals().map(str)),
                     ("total_cost", json_values), ("session_id", json_values), ("uuid", json_values),
                     ("is_error", json_values), ("timestamp", timestamps), ("model", models | json_values)):
        _maybe(obj, k, draw(optional(strat)))
    return obj


@st.composite
def jsonl_lines(draw) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    clean = draw(st.booleans())
    for f in JSONL_FIELDS:
        strat = {"timestamp": clean_timestamps if clean else timestamps,
                 "model": st.sampled_from(["claude-haiku-4-5"]) | json_values,
                 "cost_usd": json_values | st.decimals().map(str)}.get(f, clean_counts if clean else counts)
        _maybe(obj, f, draw(optional(strat)))
    return obj


def _encode(obj: Any) -> bytes | None:
    try:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return None  # lone surrogates, ints over 64 bits: a writer could not have produced them either


def _mangle(draw, line: bytes) -> bytes:
    """Sometimes damage a good line the ways files get damaged."""
    how = draw(st.sampled_from(["none", "none", "truncate", "nul", "bad_utf8", "flip", "crlf"]))
    if how == "truncate" and line:
        return line[: draw(st.integers(0, len(line) - 1))]
    if how == "nul":
        i = draw(st.integers(0, len(line)))
        return line[:i] + b"\x00" + line[i:]
    if how == "bad_utf8":
        i = draw(st.integers(0, len(line)))
        return line[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + line[i:]
    if how == "flip" and line:
        i = draw(st.integers(0, len(line) - 1))
        return line[:i] + bytes([line[i] ^ draw(st.integers(1, 255))]) + line[i + 1:]
    if how == "crlf":
        return line + b"\r"
    return line


# ----------------------------------------------------------------------------- the contract

RESULTS_OK = {*readers.REJECT_REASONS, readers.NON_CLAUDE}
JSONL_SOURCE = SourceConfig(name="tokens", kind="jsonl", paths=("x",), fields={f: f for f in JSONL_FIELDS},
                            chars_per_token=Decimal(4))


def _check(parsed: Any, source: str) -> None:
    if isinstance(parsed, str):
        assert parsed in RESULTS_OK, parsed
        return
    assert isinstance(parsed, list), type(parsed)  # [] is IGNORED: a valid line without usage
    for rec in parsed:
        assert isinstance(rec, UsageRecord)
        assert rec.source == source
        assert isinstance(rec.model, str) and rec.model and rec.model != "<synthetic>"
        assert isinstance(rec.timestamp, float) and math.isfinite(rec.timestamp)
        assert rec.timestamp <= NOW + readers.MAX_FUTURE_SECONDS
        for name in ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h", "web_search_requests"):
            v = getattr(rec.tokens, name)
            assert type(v) is int and 0 <= v <= readers.MAX_TOKENS_PER_REQUEST * 2, (name, v)
        for money in (rec.cost_usd, rec.reported_usd):
            if money is not None:
                assert isinstance(money, Decimal) and money.is_finite() and money >= 0
        assert rec.dedup_key is None or isinstance(rec.dedup_key, str)
        assert isinstance(rec.entrypoint, str)


PARSERS = {
    "claude_code": (readers.parse_claude_code("cc"), "cc", claude_lines()),
    "cli_json": (readers.parse_cli_json("cli"), "cli", cli_lines()),
    "jsonl": (readers.parse_jsonl(JSONL_SOURCE), "tokens", jsonl_lines()),
}


def _fuzz_parser(kind: str):
    parse, source, lines = PARSERS[kind]

    @FUZZ
    @given(data=st.data())
    def run(data) -> None:
        line = _encode(data.draw(lines))
        assume(line is not None)
        _check(parse(_mangle(data.draw, line), NOW), source)

    return run


test_claude_code_parser_never_raises = _fuzz_parser("claude_code")
test_cli_json_parser_never_raises = _fuzz_parser("cli_json")
test_jsonl_parser_never_raises = _fuzz_parser("jsonl")


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")))
@example(b'{"usage"')
@example(b'{"type":"assistant","message":{"usage":{}},"timestamp":"2026-01-01T00:00:00Z"}\xff')
@example(b"\x00" * 10)
def test_every_parser_takes_arbitrary_bytes(line: bytes) -> None:
    for parse, source, _ in PARSERS.values():
        _check(parse(line, NOW), source)
        _check(parse(b'{"usage": 1, "x": "' + line + b'"}', NOW), source)


# ----------------------------------------------------------------------------- the config loader

TOP = ["listen", "state_dir", "admin_api", "sources", "pricing", "pools", "refresh_interval", "breaker_webhook",
       "web_config_file"]
NESTED_KEYS = ["name", "kind", "paths", "fields", "chars_per_token", "plan", "credit_usd", "seats", "team", "period",
               "match", "breaker", "reset_day", "timezone", "reset_time", "workspaces", "sources", "entrypoints",
               "models", "open_below", "key_env", "key_file", "base_url", "poll_interval", "overrides", "input",
               "output", "cache_read", "long_context", "token_env", "claude-sonnet-4-5", *JSONL_FIELDS]
yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**66), max_value=2**66), st.floats(),
    st.text(alphabet=string.printable, max_size=20),
    st.sampled_from(["5m", "90s", "0s", "1h", "-1m", "max20x", "team", "claude_code", "jsonl", "cli_json", "UTC",
                     "Europe/Paris", "Mars/Olympus", "../../etc/passwd", "a" * 300, "25:00", "00:00",
                     "http://127.0.0.1:1", "ftp://x", "0.0.0.0:9833", "host:99999", "1e999", "NaN", "-0"]),
)
yaml_keys = st.sampled_from(NESTED_KEYS) | st.text(max_size=8) | st.integers(-3, 3) | st.none() | st.booleans()
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(yaml_keys, inner, max_size=5)), max_leaves=20)


@st.composite
def config_docs(draw) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(yaml_values)
    doc = draw(st.dictionaries(st.sampled_from(TOP) | st.text(max_size=6), yaml_values, max_size=6))
    if draw(st.booleans()):  # a nearly valid pool, so the deeper checks are reached
        doc["pools"] = [draw(st.fixed_dictionaries({"name": st.sampled_from(["p", "p", ""]) | yaml_scalars}, optional={
            "credit_usd": yaml_scalars, "plan": yaml_scalars, "seats": yaml_scalars,
            "period": st.fixed_dictionaries({}, optional={"reset_day": yaml_scalars, "timezone": yaml_scalars,
                                                          "reset_time": yaml_scalars}),
            "match": st.fixed_dictionaries({}, optional={k: yaml_values for k in ("workspaces", "sources", "models")}),
            "breaker": st.fixed_dictionaries({}, optional={"open_below": yaml_scalars})}))
            for _ in range(draw(st.integers(1, 2)))]
    if draw(st.booleans()):
        doc["sources"] = [draw(st.fixed_dictionaries({"name": yaml_scalars, "kind": yaml_scalars}, optional={
            "paths": yaml_values, "fields": yaml_values, "chars_per_token": yaml_scalars}))]
    return doc


PATH_RE = re.compile(r"^(?P<path>\(top level\)|\(file\)|line \d+, column \d+|[^\s].*?): (?P<msg>\S.*)$", re.DOTALL)


def _check_problems(problems: list[str], doc: Any) -> None:
    assert problems, "a ConfigError with no problem in it"
    for p in problems:
        m = PATH_RE.match(p)
        assert m, f"not 'path: message': {p!r}"
        path = m["path"]
        if path.startswith(("(", "line ")):
            continue
        keys = {str(k) for k in doc} | {repr(str(k)) for k in doc} | set(TOP) if isinstance(doc, dict) else set()
        # the path starts at a key the document has (or a key whose absence is the problem)
        assert any(path == k or path.startswith((k + ".", k + "[")) for k in keys), (p, doc)


@FUZZ
@given(config_docs())
@example({"pools": [{"name": "p", "credit_usd": 1, "match": {"sources": ["x"]},
                     "period": {"timezone": "a" * 300}}]})
@example({"pools": [{"name": "p", "credit_usd": 1, "match": {"sources": ["claude-code"]},
                     "period": {"timezone": "Europe/\x00"}}]})
@example({"sources": [{"name": "s", "kind": "jsonl", "paths": ["x"], "fields": {"model": 5}}]})
@example({"pricing": {"overrides": {"m": {"input": "1e999999999"}}}})
@example({"refresh_interval": "1e400s"})
@example({"admin_api": {"poll_interval": "99999999999999999999999h"}})
@example({"refresh_interval": "99999999999999999999d"})
@example({"state_dir": "~0"})
@example({"pools": [{"name": "p", "credit_usd": 1e30, "match": {"workspaces": ["default"]}}]})
def test_config_loader_errors_always_name_a_path(doc: Any) -> None:
    try:
        cfg = parse_config(doc, env={})
    except ConfigError as exc:
        _check_problems(exc.problems, doc)
    else:
        assert isinstance(cfg, Config)


@settings(max_examples=examples(100), deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
@example("pools: [{name: p, credit_usd: 5\n")
@example("? [a, b]\n: c\n")
@example("a: &x [*x]\n")
@example("!!python/object:os.system {}\n")
@example("\ufeffsources: []\n")
@example("a: " + "[" * 3000)
@example("a: " + "[" * 3000 + "]" * 3000)
def test_config_files_of_any_text_load_or_fail_with_paths(text: str) -> None:
    path = Path(f"/tmp/fuzz-config-{id(text)}.yaml")
    try:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_config(path, env={})
        except ConfigError as exc:
            if exc.problems and exc.problems[0].startswith("(file): nested too deeply"):
                return
            try:
                doc = yaml.safe_load(text)
            except (yaml.YAMLError, RecursionError):
                doc = None
            if isinstance(doc, dict):
                _check_problems(exc.problems, doc)
            else:
                assert all(PATH_RE.match(p) for p in exc.problems), exc.problems
    finally:
        path.unlink(missing_ok=True)


@FUZZ
@given(st.dictionaries(st.sampled_from(["tls_server_config", "basic_auth_users", "http_server_config"])
                       | st.text(max_size=5), yaml_values, max_size=4) | yaml_values)
@example({"basic_auth_users": {"u": "$2b$04$" + "x" * 53}})
@example({"http_server_config": {"headers": {"X-Frame-Options": "deny\r\nSet-Cookie: a"}}})
@example({"tls_server_config": {"cert_file": "/dev/null", "key_file": "/dev/null"}})
def test_web_config_errors_always_name_a_path(doc: Any) -> None:
    try:
        wc = parse_web_config(doc, base_dir=Path("/nonexistent"))
    except ConfigError as exc:
        assert exc.problems
        for p in exc.problems:
            assert PATH_RE.match(p), p
    else:
        assert isinstance(wc, WebConfig)
