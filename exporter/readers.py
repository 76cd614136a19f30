"""Line parsers for the three kinds of usage log. Pure: bytes in, records or a reason out.

Each parser returns either a list of UsageRecord (possibly empty for a line that
carries no usage) or a reason string from REJECT_REASONS. The reasons become the
``result`` label of ``claude_log_lines_total`` and so form a closed set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from exporter.config import SourceConfig
from exporter.usage import Tokens, UsageRecord

# result label values of claude_log_lines_total
COUNTED = "counted"  # a usage record was taken (it may still be a duplicate, counted apart)
DUPLICATE = "duplicate"  # the same request seen before (another content block, a resumed session)
IGNORED = "ignored"  # a valid line that carries no usage (user turns, summaries)
MALFORMED = "malformed_json"
INVALID_UTF8 = "invalid_utf8"
API_ERROR = "api_error"
SYNTHETIC = "synthetic"
BAD_USAGE = "bad_usage"  # usage fields of the wrong type, negative or absurd
BAD_TIMESTAMP = "bad_timestamp"  # missing, unparseable or far in the future
TOO_LONG = "too_long"
REJECT_REASONS = (MALFORMED, INVALID_UTF8, API_ERROR, SYNTHETIC, BAD_USAGE, BAD_TIMESTAMP, TOO_LONG)
RESULTS = (COUNTED, DUPLICATE, IGNORED, *REJECT_REASONS)

MAX_TOKENS_PER_REQUEST = 50_000_000  # far past any context window: larger counts are corrupt
MAX_FUTURE_SECONDS = 86_400.0

Parsed = list[UsageRecord] | str
LineParser = Callable[[bytes, float], Parsed]


class _BadUsage(Exception):
    pass


def _count(value: Any) -> int:
    """A token count: a non-negative int below the sanity bound (None means 0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise _BadUsage
    if value < 0 or value > MAX_TOKENS_PER_REQUEST:
        raise _BadUsage
    return value


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_timestamp(value: Any) -> float | None:
    """ISO-8601 (``2026-11-01T12:00:00.123Z``) or epoch seconds/milliseconds to epoch seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0:
            return None
        return float(value) / 1000.0 if value > 1e11 else float(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        # naive timestamps in usage logs are UTC by convention of every writer we know
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _decode(line: bytes) -> Any | str:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return INVALID_UTF8
        return MALFORMED


def _check_ts(ts: float | None, now: float) -> str | None:
    if ts is None or ts > now + MAX_FUTURE_SECONDS:
        return BAD_TIMESTAMP
    return None


# ------------------------------------------------------------------ Claude Code transcripts


def parse_claude_code(source: str) -> LineParser:
    """Parser for Claude Code transcript lines (``~/.claude/projects/**/*.jsonl``)."""

    def parse(line: bytes, now: float) -> Parsed:
        # Most lines (user turns, tool results, summaries) carry no usage; skipping them
        # before decoding is what keeps a cold read of a big history fast.
        if b'"usage"' not in line:
            return []
        obj = _decode(line)
        if isinstance(obj, str):
            return obj
        if not isinstance(obj, dict) or obj.get("type") != "assistant":
            return []
        message = obj.get("message")
        if not isinstance(message, dict):
            return []
        usage = message.get("usage")
        if not isinstance(usage, dict):
            return []
        if obj.get("isApiErrorMessage") is True:
            return API_ERROR
        model = message.get("model")
        if model == "<synthetic>":
            return SYNTHETIC
        if not isinstance(model, str) or not model:
            return BAD_USAGE
        ts = parse_timestamp(obj.get("timestamp"))
        if (bad := _check_ts(ts, now)) is not None:
            return bad
        try:
            creation = usage.get("cache_creation")
            cw_total = _count(usage.get("cache_creation_input_tokens"))
            if isinstance(creation, dict):
                cw5 = _count(creation.get("ephemeral_5m_input_tokens"))
                cw1h = _count(creation.get("ephemeral_1h_input_tokens"))
                # older transcripts give only the total: it was all 5-minute writes then
                if cw5 + cw1h < cw_total:
                    cw5 += cw_total - cw5 - cw1h
            elif creation is None:
                cw5, cw1h = cw_total, 0
            else:
                raise _BadUsage
            stu = usage.get("server_tool_use")
            web = _count(stu.get("web_search_requests")) if isinstance(stu, dict) else 0
            tokens = Tokens(
                input=_count(usage.get("input_tokens")),
                output=_count(usage.get("output_tokens")),
                cache_read=_count(usage.get("cache_read_input_tokens")),
                cache_write_5m=cw5,
                cache_write_1h=cw1h,
                web_search_requests=web,
            )
        except _BadUsage:
            return BAD_USAGE
        mid, rid = message.get("id"), obj.get("requestId")
        key = f"{mid}\x1f{rid}" if isinstance(mid, str) and isinstance(rid, str) and mid and rid else None
        return [UsageRecord(
            source=source,
            timestamp=ts,  # type: ignore[arg-type]
            model=model,
            tokens=tokens,
            dedup_key=key,
            entrypoint=_str(obj.get("entrypoint")),
            service_tier=_str(usage.get("service_tier")) or "standard",
            inference_geo=_str(usage.get("inference_geo")),
            speed=_str(usage.get("speed")),
        )]

    return parse


# ------------------------------------------------------------------ claude -p --output-format json


def _money(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    if not isinstance(value, (int, float, str)):
        raise _BadUsage
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise _BadUsage from None
    if not amount.is_finite() or amount < 0:
        raise _BadUsage
    return amount


def parse_cli_json(source: str) -> LineParser:
    """Parser for saved ``claude -p --output-format json`` results, one per line.

    The result carries no timestamp of its own; when the line has none, the time it was
    read stands in (the caller passes it as ``now``). ``costUSD`` per model is Claude
    Code's own list-price computation and is taken as the record's cost.
    """

    def parse(line: bytes, now: float) -> Parsed:
        obj = _decode(line)
        if isinstance(obj, str):
            return obj
        if not isinstance(obj, dict):
            return MALFORMED
        if obj.get("type") not in (None, "result"):
            return []
        if obj.get("is_error") is True and not obj.get("modelUsage") and not obj.get("usage"):
            return API_ERROR
        ts = parse_timestamp(obj.get("timestamp")) if "timestamp" in obj else now
        if (bad := _check_ts(ts, now)) is not None:
            return bad
        ident = obj.get("uuid") or obj.get("session_id")
        base_key = ident if isinstance(ident, str) and obj.get("uuid") else None
        records: list[UsageRecord] = []
        try:
            model_usage = obj.get("modelUsage")
            items: list[tuple[str, Mapping[str, Any]]] = []
            if isinstance(model_usage, dict):
                items = [(m, u) for m, u in model_usage.items() if isinstance(u, dict)]
            elif isinstance(model_usage, list):
                items = [(u.get("model"), u) for u in model_usage if isinstance(u, dict)]
            elif model_usage is not None:
                raise _BadUsage
            if not items:
                usage = obj.get("usage")
                if not isinstance(usage, dict):
                    return []
                model = obj.get("model") or usage.get("model") or "unknown"
                items = [(model, {
                    "inputTokens": usage.get("input_tokens"),
                    "outputTokens": usage.get("output_tokens"),
                    "cacheReadInputTokens": usage.get("cache_read_input_tokens"),
                    "cacheCreationInputTokens": usage.get("cache_creation_input_tokens"),
                    "costUSD": obj.get("total_cost_usd"),
                })]
            for model, u in items:
                if not isinstance(model, str) or not model:
                    raise _BadUsage
                if model == "<synthetic>":
                    continue
                tokens = Tokens(
                    input=_count(u.get("inputTokens", u.get("input_tokens"))),
                    output=_count(u.get("outputTokens", u.get("output_tokens"))),
                    cache_read=_count(u.get("cacheReadInputTokens", u.get("cache_read_input_tokens"))),
                    cache_write_5m=_count(u.get("cacheCreationInputTokens", u.get("cache_creation_input_tokens"))),
                    web_search_requests=_count(u.get("webSearchRequests")),
                )
                cost = _money(u.get("costUSD", u.get("cost")))
                records.append(UsageRecord(
                    source=source, timestamp=ts, model=model, tokens=tokens,  # type: ignore[arg-type]
                    dedup_key=f"{base_key}\x1f{model}" if base_key else None,
                    entrypoint="sdk-cli", cost_usd=cost,
                ))
        except _BadUsage:
            return BAD_USAGE
        return records

    return parse


# ------------------------------------------------------------------ generic JSONL token logs


def _get_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def parse_jsonl(source: SourceConfig) -> LineParser:
    """Parser for a pipeline's own token log, mapped field by field from the config."""
    fields = dict(source.fields)
    cpt = source.chars_per_token
    name = source.name

    def chars_to_tokens(value: Any) -> int:
        chars = _count(value)
        return int(-(-Decimal(chars) // cpt)) if chars else 0  # round up: a budget errs high

    def parse(line: bytes, now: float) -> Parsed:
        obj = _decode(line)
        if isinstance(obj, str):
            return obj
        if not isinstance(obj, dict):
            return MALFORMED
        get = (lambda k: _get_path(obj, fields[k]) if k in fields else None)  # noqa: E731
        ts = parse_timestamp(get("timestamp"))
        if (bad := _check_ts(ts, now)) is not None:
            return bad
        model = get("model")
        if not isinstance(model, str) or not model:
            return BAD_USAGE
        try:
            inp = get("input_tokens")
            out = get("output_tokens")
            tokens = Tokens(
                input=_count(inp) if inp is not None else chars_to_tokens(get("input_chars")),
                output=_count(out) if out is not None else chars_to_tokens(get("output_chars")),
                cache_read=_count(get("cache_read_tokens")),
                cache_write_5m=_count(get("cache_write_5m_tokens")),
                cache_write_1h=_count(get("cache_write_1h_tokens")),
            )
            cost = _money(get("cost_usd"))
        except _BadUsage:
            return BAD_USAGE
        if tokens.total == 0 and cost is None:
            return []
        rid = get("request_id")
        return [UsageRecord(
            source=name, timestamp=ts, model=model, tokens=tokens,  # type: ignore[arg-type]
            dedup_key=str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None,
            entrypoint=_str(get("entrypoint")), cost_usd=cost,
        )]

    return parse


def parser_for(source: SourceConfig) -> LineParser:
    if source.kind == "claude_code":
        return parse_claude_code(source.name)
    if source.kind == "cli_json":
        return parse_cli_json(source.name)
    return parse_jsonl(source)
