"""Line parsers for the three kinds of usage log. Pure: bytes in, records or a reason out.

Each parser returns either a list of UsageRecord (possibly empty for a line that
carries no usage) or a reason string from REJECT_REASONS (or NON_CLAUDE, a valid line
that is not Claude spend). The reasons become the ``result`` label of
``claude_log_lines_total`` and so form a closed set.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Annotated, Any

import msgspec
import orjson

from exporter.config import SourceConfig
from exporter.core.records import Tokens, UsageRecord

__all__ = [
    "API_ERROR", "BAD_TIMESTAMP", "BAD_USAGE", "COUNTED", "DUPLICATE", "IGNORED", "INVALID_UTF8", "MALFORMED",
    "MAX_COST_PER_RECORD", "MAX_FUTURE_SECONDS", "MAX_TOKENS_PER_REQUEST", "NON_CLAUDE", "REJECT_REASONS", "RESULTS",
    "SYNTHETIC", "SYNTHETIC_MODEL", "TOO_LONG",
    "ClaudeBlock", "LineParser", "Parsed", "cache_writes", "claude_fields", "claude_record", "is_claude_model",
    "parse_claude_code", "parse_cli_json", "parse_jsonl", "parse_timestamp", "parser_for", "request_reason",
    "scan_claude_block",
]

# result label values of claude_log_lines_total
COUNTED = "counted"  # a usage record was taken (it may still be a duplicate, counted apart)
DUPLICATE = "duplicate"  # the same request seen before (another content block, a resumed session)
IGNORED = "ignored"  # a valid line that carries no usage (user turns, summaries)
NON_CLAUDE = "non_claude"  # a valid line whose usage is all another vendor's models (a proxy): not Claude spend
MALFORMED = "malformed_json"
INVALID_UTF8 = "invalid_utf8"
API_ERROR = "api_error"
SYNTHETIC = "synthetic"
BAD_USAGE = "bad_usage"  # usage fields of the wrong type, negative or absurd
BAD_TIMESTAMP = "bad_timestamp"  # missing, unparseable, or more than MAX_FUTURE_SECONDS ahead
TOO_LONG = "too_long"
REJECT_REASONS = (MALFORMED, INVALID_UTF8, API_ERROR, SYNTHETIC, BAD_USAGE, BAD_TIMESTAMP, TOO_LONG)
RESULTS = (COUNTED, DUPLICATE, IGNORED, NON_CLAUDE, *REJECT_REASONS)

MAX_TOKENS_PER_REQUEST = 50_000_000  # far past any context window: larger counts are corrupt
MAX_COST_PER_RECORD = Decimal(100_000)  # USD; a stated cost above this is corrupt, not spend
# How far ahead of the exporter's clock a line's time may be and still count: a week.
#
# A line dated ahead of the clock is real usage when the clock is what is wrong (behind after a
# jump, a VM restored from a snapshot, logs written on a machine with the right time): it counts,
# booked at its own hour, where it belongs once the clock is right. It is not deferred: the
# offset is one number per file, so holding a line back holds back every line after it, and a
# budget breaker must not go blind to spend for as long as a clock is wrong (a pool's period
# spend includes the hours ahead of the clock; the burn rate does not). Past a week the date is
# taken for a broken writer's (2099, milliseconds read as seconds): the line is a bad_timestamp,
# as a line without a usable time is, and the file is read on past it.
MAX_FUTURE_SECONDS = 7 * 86_400.0

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
    return int(value)


def _str_or_empty(value: object) -> str:
    """A string field as written, "" for anything else (a null, a number)."""
    return value if type(value) is str else ""


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
    """The decoded line, or a reason string (a line that is a bare JSON string is malformed,
    so that a returned str is always a reason and never becomes a label value)."""
    try:
        obj = orjson.loads(line)
        return MALFORMED if isinstance(obj, str) else obj
    except orjson.JSONDecodeError:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return INVALID_UTF8
        return MALFORMED


def _decode_object(line: bytes) -> dict[str, Any] | str:
    """A line that must be one JSON object per record (CLI results, token logs), or a reason."""
    obj = _decode(line)
    if type(obj) is str or type(obj) is dict:
        return obj
    return MALFORMED


def _check_ts(ts: float | None, now: float) -> str | None:
    """BAD_TIMESTAMP for a line without a usable time or one more than MAX_FUTURE_SECONDS ahead of ``now``."""
    if ts is None or ts > now + MAX_FUTURE_SECONDS:
        return BAD_TIMESTAMP
    return None


# ------------------------------------------------------------------ Claude Code transcripts
#
# Three paths read a transcript line: the line parser (a typed decode of one line), the block
# fold (a cold read: many lines per decode call) and the careful parser (a generic decode of a
# line the typed decode refused). The rules that decide what a line with usage counts as are
# the two functions below. The line parser, the careful parser and claude_fields (what every
# kept copy goes through) call them; the block fold, the cold read's per-line loop, writes them
# inline (a call per line there costs 10-25% of the loop) with a comment naming what it copies,
# and tests/test_cold_read.py holds the three paths to the same answers.

SYNTHETIC_MODEL = "<synthetic>"  # what Claude Code names the model of turns it wrote itself


def request_reason(api_error: object, model: object, ts: float | None, now: float) -> str | None:
    """Why a transcript line that carries usage is not a request to count (a reason), or None.

    In this order: an API error message (``isApiErrorMessage: true``; whatever tokens it
    carries were not billed), a ``<synthetic>`` model (a turn Claude Code wrote itself), no
    model name (bad usage), and no usable time or one more than MAX_FUTURE_SECONDS (a week) ahead of ``now``
    (``ts`` is None when the line has none or it does not parse).
    """
    if api_error is True:
        return API_ERROR
    if model == SYNTHETIC_MODEL:
        return SYNTHETIC
    if type(model) is not str or not model:
        return BAD_USAGE
    return _check_ts(ts, now)


def cache_writes(total: int, w5m: int, w1h: int) -> tuple[int, int]:
    """(5-minute, 1-hour) cache writes of a request.

    ``total`` is ``cache_creation_input_tokens``; ``w5m`` and ``w1h`` the split that
    ``cache_creation`` gives (0 and 0 when it is absent). Older transcripts give only the
    total, and a split may cover only part of it: what the split leaves out were 5-minute
    writes, the only kind there was then. A split larger than the total stands as it is.
    The request's cache writes are therefore ``max(total, w5m + w1h)``.
    """
    if w5m + w1h < total:
        w5m = total - w1h
    return w5m, w1h


# Token counts out of range fail the typed decode in C; the careful path then names the reason.
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS_PER_REQUEST)]


# gc=False: a cold read decodes a few hundred thousand of these, none of which can be part of
# a reference cycle; untracked, they cost the garbage collector nothing.
class _CacheCreation(msgspec.Struct, gc=False):
    ephemeral_5m_input_tokens: _Count = 0
    ephemeral_1h_input_tokens: _Count = 0


class _ServerToolUse(msgspec.Struct, gc=False):
    web_search_requests: _Count = 0


# The fields of these structs are in the order Claude Code writes them: the decoder tries the
# next field in order first, which made a block's decode 4-6% faster than another order.
class _Usage(msgspec.Struct, gc=False):
    input_tokens: _Count = 0
    cache_creation_input_tokens: _Count = 0
    cache_read_input_tokens: _Count = 0
    cache_creation: _CacheCreation | None = None
    output_tokens: _Count = 0
    server_tool_use: _ServerToolUse | None = None
    service_tier: str | None = None
    inference_geo: str | None = None
    speed: str | None = None


class _Message(msgspec.Struct, gc=False):
    model: str | None = None
    id: str | None = None
    usage: _Usage | None = None


class _Progress(msgspec.Struct, gc=False):
    """``data`` of a ``type: "progress"`` line: ``message`` is the transcript entry it carries.

    The other JSON types are accepted so that a line whose ``data`` is not such an object
    still decodes with its block (it carries no request) instead of being read alone.
    """

    message: _Line | str | int | float | bool | list[Any] | None = None


class _Line(msgspec.Struct, gc=False):
    """The few fields of a transcript line that matter; the rest (content) is skipped unbuilt.

    ``data`` is absent from every line but progress lines: a line without it builds nothing more.
    """

    entrypoint: str | None = None
    message: _Message | None = None
    requestId: str | None = None  # noqa: N815 - the transcript's own key
    type: str | None = None
    timestamp: datetime | None = None
    isApiErrorMessage: bool | None = None  # noqa: N815
    data: _Progress | str | int | float | bool | list[Any] | None = None


_line_decoder = msgspec.json.Decoder(_Line)
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


class ClaudeBlock:
    """What a block of whole transcript lines holds, its copies of one request already folded.

    ``best`` maps (message id, request id) to ``[token total, epoch seconds, line, copies]``
    of the largest copy in the block; ``unkeyed`` holds ``(total, seconds, line)`` of lines
    without a message id (each one counts); ``records`` the requests of lines that only
    the careful path could read; ``counts`` the lines that carry no request, by result.
    """

    __slots__ = ("counts", "best", "unkeyed", "records")

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.best: dict[tuple[str, str | None], list[Any]] = {}
        self.unkeyed: list[tuple[int, float, _Line]] = []
        self.records: list[UsageRecord] = []


def _seconds(when: datetime) -> float:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)  # naive timestamps in usage logs are UTC
    return when.timestamp()


def _progress_entry(line: _Line) -> _Line | None:
    """The transcript entry a progress line carries (a subagent's turn), or None.

    Claude Code streams a subagent's turns into the parent transcript as they happen::

        {"type": "progress", "timestamp": "<when the parent wrote it>", "entrypoint": "cli",
         "parentToolUseID": "toolu_...", "sessionId": "...", "uuid": "...",
         "data": {"type": "agent_progress", "agentId": "a1b2c3d", "prompt": "...",
                  "message": {"type": "assistant", "timestamp": "<the turn's own time>",
                              "requestId": "req_...", "uuid": "...",
                              "message": {"id": "msg_...", "model": "claude-...",
                                          "usage": {...}, "content": [...]}}}}

    ``data.message`` is the entry as the subagent's own transcript
    (``<session>/subagents/agent-<agentId>.jsonl``) holds it, so its ``message.id`` and its
    ``requestId`` (both inside ``data.message``) make the same dedup key as that copy: the
    request counts once when both files are read, and still counts when the subagent's file
    is gone. The timestamp is ``data.message.timestamp``, else the outer line's; the
    entrypoint ``data.message.entrypoint``, else the outer line's. ``data.type`` is not
    checked (an entry of type ``assistant`` with usage is a request copy whatever carries it).
    """
    data = line.data
    if type(data) is not _Progress or line.type != "progress":
        return None
    inner = data.message
    if type(inner) is not _Line or inner.message is None:
        return None
    if inner.timestamp is None:
        inner.timestamp = line.timestamp
    if inner.entrypoint is None:
        inner.entrypoint = line.entrypoint
    return inner


def _line_reason(line: _Line, now: float) -> str | None:
    """Why a decoded line with usage is not a request (a reason), or None when it is one."""
    when = line.timestamp
    return request_reason(line.isApiErrorMessage, line.message.model,  # type: ignore[union-attr]
                          None if when is None else _seconds(when), now)


def claude_fields(line: _Line) -> tuple[str, str, str, str, str, tuple[int, int, int, int, int, int]]:
    """(model, entrypoint, service tier, inference geo, speed, token counts in Tokens order) of a
    decoded transcript line that passed the checks: what pricing and the aggregates need."""
    message: _Message = line.message  # type: ignore[assignment]  # checked by the caller
    u: _Usage = message.usage  # type: ignore[assignment]
    # cache_writes, inline (this runs for every request a cold read keeps)
    cw5 = u.cache_creation_input_tokens
    cw1h = 0
    cc = u.cache_creation
    if cc is not None:
        cw1h = cc.ephemeral_1h_input_tokens
        if cc.ephemeral_5m_input_tokens + cw1h >= cw5:
            cw5 = cc.ephemeral_5m_input_tokens
        else:
            cw5 -= cw1h
    stu = u.server_tool_use
    return (message.model, line.entrypoint or "", u.service_tier or "standard",  # type: ignore[return-value]
            u.inference_geo or "", u.speed or "",
            (u.input_tokens, u.output_tokens, u.cache_read_input_tokens, cw5, cw1h,
             stu.web_search_requests if stu is not None else 0))


def claude_record(source: str, line: _Line, ts: float) -> UsageRecord:
    """The request a decoded transcript line (one that passed the checks) stands for."""
    model, entrypoint, tier, geo, speed, tokens = claude_fields(line)
    mid, rid = line.message.id, line.requestId  # type: ignore[union-attr]
    # (message.id, requestId); a message id alone where a writer left the request id out
    return UsageRecord(source, ts, model, Tokens(*tokens), f"{mid}\x1f{rid or ''}" if mid else None,
                       entrypoint, tier, geo, speed)


def parse_claude_code(source: str) -> LineParser:
    """Parser for Claude Code transcript lines (``~/.claude/projects/**/*.jsonl``), one at a time.

    A typed decode builds only the fields that matter and skips the content, which is most
    of each line. Anything the typed decode refuses (nulls, floats, wrong types, bad JSON)
    goes through the careful path, which decides the reject reason. A cold read uses
    :func:`scan_claude_block` instead, which applies the same rules to many lines per call.
    A subagent's turn nested in a progress line is one more copy of its request, under the
    same rules and dedup key (see :func:`_progress_entry`); all three paths read it alike.
    """
    decode = _line_decoder.decode
    careful = _parse_claude_code_careful(source)

    def parse_usage_line(line: bytes, now: float) -> Parsed:
        if not line.isascii():  # the typed decode does not check the UTF-8 of what it skips
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return INVALID_UTF8
        try:
            obj = decode(line)
        except _DECODE_ERRORS:
            return careful(line, now)
        message = obj.message
        if message is None:
            if obj.data is None or (entry := _progress_entry(obj)) is None:
                return []
            obj, message = entry, entry.message
        if obj.type != "assistant" or message is None or message.usage is None:
            return []
        reason = _line_reason(obj, now)
        if reason is not None:
            return reason
        return [claude_record(source, obj, _seconds(obj.timestamp))]  # type: ignore[arg-type]

    def parse(line: bytes, now: float) -> Parsed:
        # Most lines (user turns, tool results, summaries) carry no usage; skipping them
        # before decoding is what keeps a read line by line fast.
        if b'"usage"' not in line:
            return []
        return parse_usage_line(line, now)

    parse.usage_line = parse_usage_line  # type: ignore[attr-defined]  # for a caller that already looked
    return parse


def scan_claude_block(block: bytes, now: float, parse: LineParser, out: ClaudeBlock) -> None:
    """Fold a block of whole transcript lines (ending in a newline) into ``out``.

    The block's UTF-8 is checked and all its lines decoded in one call each, so the cost
    per line is a few attribute reads. A block holding a line either call refuses is cut
    in two at a line break until the line is alone; that line goes through ``parse`` (from
    :func:`parse_claude_code`), which names its reason exactly as a read line by line would.
    """
    try:
        if not block.isascii():  # the typed decode does not check the UTF-8 of what it skips
            block.decode("utf-8")
        lines = _line_decoder.decode_lines(block)
    except (UnicodeDecodeError, *_DECODE_ERRORS):
        lines = None
    if lines is not None:
        _fold_lines(lines, now, out)
        return
    half = len(block) // 2
    cut = block.find(b"\n", half, len(block) - 1)
    if cut < 0:
        cut = block.rfind(b"\n", 0, half)
    if cut >= 0:
        scan_claude_block(block[:cut + 1], now, parse, out)
        scan_claude_block(block[cut + 1:], now, parse, out)
        return
    _fold_one(block.rstrip(b"\n"), now, parse, out)


def _fold_one(line: bytes, now: float, parse: LineParser, out: ClaudeBlock) -> None:
    """A line the block decode refused, read alone: a JSON object line ends in "}", so one
    that does not and has no usage was cut short (malformed); one that does has nothing to count."""
    if b'"usage"' in line:
        parsed = parse.usage_line(line, now)  # type: ignore[attr-defined]
        if type(parsed) is str:
            out.counts[parsed] += 1
        elif parsed:
            out.records.extend(parsed)
        else:
            out.counts[IGNORED] += 1
    elif line.endswith((b"}", b"}\r")):
        out.counts[IGNORED] += 1
    elif line and not line.isspace():
        out.counts[MALFORMED] += 1


def _fold_lines(lines: list[_Line], now: float, out: ClaudeBlock) -> None:
    """Fold decoded transcript lines into ``out``: the cold read's loop, run once per line."""
    counts, best, unkeyed = out.counts, out.best, out.unkeyed
    ignored = 0
    horizon = now + MAX_FUTURE_SECONDS  # _check_ts's bound
    synthetic = SYNTHETIC_MODEL
    for line in lines:
        message = line.message
        if message is None:
            # only a line without a message (a summary, a progress line) pays for this test
            if line.data is None or (line := _progress_entry(line)) is None:  # type: ignore[assignment]
                ignored += 1
                continue
            message = line.message
        if (u := message.usage) is None or line.type != "assistant":  # type: ignore[union-attr]
            ignored += 1
            continue
        # request_reason, inline (see the top of this section): the same checks in the same order
        if line.isApiErrorMessage:
            counts[API_ERROR] += 1
            continue
        model = message.model  # type: ignore[union-attr]
        if model == synthetic:
            counts[SYNTHETIC] += 1
            continue
        if not model:
            counts[BAD_USAGE] += 1
            continue
        when = line.timestamp
        if when is None:
            counts[BAD_TIMESTAMP] += 1
            continue
        ts = when.timestamp() if when.tzinfo is not None else _seconds(when)
        if ts > horizon:
            counts[BAD_TIMESTAMP] += 1
            continue
        # the token total of claude_fields' counts, without building them; the cache writes are
        # max(total, split), as cache_writes says, inline
        cw = u.cache_creation_input_tokens
        cc = u.cache_creation
        if cc is not None and cc.ephemeral_5m_input_tokens + cc.ephemeral_1h_input_tokens > cw:
            cw = cc.ephemeral_5m_input_tokens + cc.ephemeral_1h_input_tokens
        total = u.input_tokens + u.output_tokens + u.cache_read_input_tokens + cw
        mid = message.id  # type: ignore[union-attr]
        if not mid:
            unkeyed.append((total, ts, line))
            continue
        key = (mid, line.requestId)
        held = best.get(key)
        if held is None:
            best[key] = [total, ts, line, 1]
        else:
            held[3] += 1
            # dedup.wins, inline: the larger total, then the earlier hour, then the labels
            if total > held[0] or total == held[0] and _earlier(ts, line, held[1], held[2]):
                held[0], held[1], held[2] = total, ts, line
    if ignored:
        counts[IGNORED] += ignored


def _earlier(ts: float, line: _Line, held_ts: float, held: _Line) -> bool:
    """Whether a copy whose total ties the held one's stands over it in a block: booked in an
    earlier hour, or in the same hour under a (model, entrypoint) that sorts first (the rule of
    ``dedup.wins``: a block's copies fold as the copies of different blocks and files do)."""
    hour, held_hour = int(ts) // 3600, int(held_ts) // 3600
    if hour != held_hour:
        return hour < held_hour
    return ((line.message.model, line.entrypoint or "")  # type: ignore[union-attr]  # checked by the caller
            < (held.message.model, held.entrypoint or ""))  # type: ignore[union-attr]


def _parse_claude_code_careful(source: str) -> LineParser:
    """The same rules on a generic decode: tells every reject reason apart, accepts nulls as 0."""

    def parse(line: bytes, now: float) -> Parsed:
        obj = _decode(line)
        if type(obj) is str:
            return obj
        if type(obj) is not dict:
            return []
        when, entrypoint = obj.get("timestamp"), obj.get("entrypoint")
        if obj.get("message") is None and obj.get("type") == "progress":
            # a subagent's turn carried in its parent's transcript: see _progress_entry
            data = obj.get("data")
            obj = data.get("message") if type(data) is dict else None
            if type(obj) is not dict:
                return []
            if obj.get("timestamp") is not None:
                when = obj.get("timestamp")
            if obj.get("entrypoint") is not None:
                entrypoint = obj.get("entrypoint")
        if obj.get("type") != "assistant":
            return []
        message = obj.get("message")
        if type(message) is not dict:
            return []
        usage = message.get("usage")
        if type(usage) is not dict:
            return []
        model = message.get("model")
        ts = parse_timestamp(when)
        reason = request_reason(obj.get("isApiErrorMessage"), model, ts, now)
        if reason is not None:
            return reason
        assert ts is not None and type(model) is str  # what request_reason let through
        g = usage.get
        creation = g("cache_creation")
        stu = g("server_tool_use")
        if not (creation is None or type(creation) is dict) or not (stu is None or type(stu) is dict):
            return BAD_USAGE
        try:
            inp, out, cr, cw = (_count(g(k)) for k in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                                                       "cache_creation_input_tokens"))
            split = (0, 0) if creation is None else (_count(creation.get("ephemeral_5m_input_tokens")),
                                                     _count(creation.get("ephemeral_1h_input_tokens")))
            web = _count(stu.get("web_search_requests")) if stu is not None else 0
        except _BadUsage:
            return BAD_USAGE
        cw5, cw1h = cache_writes(cw, *split)
        mid, rid = message.get("id"), obj.get("requestId")
        key = f"{mid}\x1f{rid if type(rid) is str else ''}" if type(mid) is str and mid else None
        return [UsageRecord(
            source, ts, model, Tokens(inp, out, cr, cw5, cw1h, web), key,
            _str_or_empty(entrypoint), _str_or_empty(g("service_tier")) or "standard",
            _str_or_empty(g("inference_geo")), _str_or_empty(g("speed")),
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
    if not amount.is_finite() or amount < 0 or amount > MAX_COST_PER_RECORD:
        raise _BadUsage
    return amount


def is_claude_model(model: str) -> bool:
    """Whether a model name is Claude's: ``claude-...``, Bedrock's ``us.anthropic.claude-...``,
    Vertex's ``claude-...@20250929``. A proxy routing Claude Code to another vendor writes that
    vendor's names (``gpt-4o``, ``gemini-2.5-pro``): their usage is not Claude spend."""
    return "claude" in model.lower()


def _stated_cost(obj: Mapping[str, Any]) -> Decimal | None:
    """The run's cost as the result states it: ``total_cost_usd``, or the older ``cost_usd``
    or ``total_cost``."""
    for key in ("total_cost_usd", "cost_usd", "total_cost"):
        amount = _money(obj.get(key))
        if amount is not None:
            return amount
    return None


def _cache_split(usage: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """(5-minute, 1-hour) cache writes from ``usage.cache_creation``; None when it is absent."""
    cc = usage.get("cache_creation") if usage is not None else None
    if cc is None:
        return None
    if type(cc) is not dict:
        raise _BadUsage
    return _count(cc.get("ephemeral_5m_input_tokens")), _count(cc.get("ephemeral_1h_input_tokens"))


def _pick(u: Mapping[str, Any], camel: str, snake: str) -> Any:
    return u.get(camel, u.get(snake))


def _cli_records(source: str, obj: Mapping[str, Any], ts: float) -> tuple[list[UsageRecord], bool]:
    """The records of one result, and whether it named a model that is not Claude's."""
    model_usage, usage = obj.get("modelUsage"), obj.get("usage")
    if usage is not None and type(usage) is not dict:
        raise _BadUsage
    if model_usage is None:
        items: list[tuple[Any, Mapping[str, Any]]] = []
    elif type(model_usage) is dict:
        items = [(m, u) for m, u in model_usage.items() if type(u) is dict]
    elif type(model_usage) is list:  # the seeds' array form
        items = [(u.get("model"), u) for u in model_usage if type(u) is dict]
    else:
        raise _BadUsage
    uuid = obj.get("uuid")
    base_key = uuid if type(uuid) is str and uuid else None
    split = _cache_split(usage)
    non_claude = False

    # the run's service tier, geography and speed (one for the whole run): what fast mode, batch
    # and US-only inference are priced on
    attrs = usage or {}
    tier = _str_or_empty(attrs.get("service_tier")) or "standard"
    geo, speed = _str_or_empty(attrs.get("inference_geo")), _str_or_empty(attrs.get("speed"))

    def record(model: str, tokens: Tokens, cost: Decimal | None, reported: Decimal | None) -> UsageRecord:
        return UsageRecord(source, ts, model, tokens, f"{base_key}\x1f{model}" if base_key else None,
                           "sdk-cli", tier, geo, speed, cost_usd=cost, reported_usd=reported)

    if items:
        rows: list[tuple[str, list[int], Decimal | None]] = []
        for model, u in items:
            if type(model) is not str or not model:
                raise _BadUsage
            if model == SYNTHETIC_MODEL:
                continue
            counts = [_count(_pick(u, "inputTokens", "input_tokens")), _count(_pick(u, "outputTokens", "output_tokens")),
                      _count(_pick(u, "cacheReadInputTokens", "cache_read_input_tokens")),
                      _count(_pick(u, "cacheCreationInputTokens", "cache_creation_input_tokens")), 0,
                      _count(_pick(u, "webSearchRequests", "web_search_requests"))]
            rows.append((model, counts, _money(_pick(u, "costUSD", "cost"))))
        if split is not None and split[1]:
            # one model: the split is its own; several: the model whose writes the split adds up to
            target: list[int] | None
            if len(rows) == 1:
                target = rows[0][1]
            else:
                matching = [c for _, c, _ in rows if c[3] == split[0] + split[1]]
                target = matching[0] if len(matching) == 1 else None
            if target is not None:
                target[4] = min(split[1], target[3])
                target[3] -= target[4]
        records = []
        for model, counts, reported in rows:
            if not is_claude_model(model):
                non_claude = True
                continue
            if reported is None and len(rows) == 1:
                reported = _stated_cost(obj)
            records.append(record(model, Tokens(*counts), None, reported))
        return records, non_claude

    named = obj.get("model") or (usage.get("model") if usage is not None else None)
    if named is not None and (type(named) is not str or not named):
        raise _BadUsage
    model = named or "unknown"  # a result that names no model is Claude Code's own: counted, and unpriced
    if named and not is_claude_model(named):
        return [], True
    if usage is None:
        # the older result format: no tokens, only the run's cost, booked as stated
        cost = _stated_cost(obj)
        return ([record(model, Tokens(), cost, cost)] if cost is not None else []), False
    g = usage.get
    cw5, cw1h = cache_writes(_count(g("cache_creation_input_tokens")), *(split or (0, 0)))
    stu = g("server_tool_use")
    if stu is not None and type(stu) is not dict:
        raise _BadUsage
    tokens = Tokens(_count(g("input_tokens")), _count(g("output_tokens")), _count(g("cache_read_input_tokens")),
                    cw5, cw1h, _count(stu.get("web_search_requests")) if stu is not None else 0)
    return [record(model, tokens, None, _stated_cost(obj))], False


def parse_cli_json(source: str) -> LineParser:
    """Parser for saved ``claude -p --output-format json`` results, one per line.

    Tokens per model come from ``modelUsage`` (``inputTokens``, ``outputTokens``,
    ``cacheReadInputTokens``, ``cacheCreationInputTokens``, ``webSearchRequests``), or,
    without it, from ``usage`` (``input_tokens``, ... , ``server_tool_use.web_search_requests``).
    They are priced at our prices (the record states no cost); what Claude Code itself
    computed (``costUSD`` per model, or ``total_cost_usd``, its client-side estimate at list
    price) is kept beside it as the reported cost.

    Cache writes: ``modelUsage`` gives only their total; ``usage.cache_creation`` splits the
    run's writes into 5-minute and 1-hour ones. With one model in ``modelUsage`` the split is
    that model's. With several, ``usage`` is one sum over all of them and the split cannot be
    shared out by model: it is applied to the one model whose ``cacheCreationInputTokens``
    equals the split's total, and otherwise every write is booked as a 5-minute one (priced
    1.25x input instead of 2x: the estimate errs low on that part, which the reported cost
    beside it shows).

    A result that names a model that is not Claude's (a proxy to another vendor) does not
    count as Claude spend: a line with only such models is ``non_claude``; one with Claude
    models as well counts those. The older format (``cost_usd`` or ``total_cost`` and no
    ``usage`` or ``modelUsage``) is one record with no tokens and that cost as stated.

    The result carries no timestamp of its own; when the line has none, ``when`` stands in
    (the caller passes the time it is to be booked at; see the ingestor), else ``now``.
    """

    def parse(line: bytes, now: float, when: float | None = None) -> Parsed:
        obj = _decode_object(line)
        if isinstance(obj, str):
            return obj
        if obj.get("type") not in (None, "result"):
            return []
        if obj.get("is_error") is True and not obj.get("modelUsage") and not obj.get("usage"):
            return API_ERROR
        if "timestamp" in obj:
            ts = parse_timestamp(obj.get("timestamp"))
        else:
            ts = now if when is None else when
        if (bad := _check_ts(ts, now)) is not None:
            return bad
        try:
            records, non_claude = _cli_records(source, obj, ts)  # type: ignore[arg-type]
        except _BadUsage:
            return BAD_USAGE
        if not records and non_claude:
            return NON_CLAUDE
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
        # round up: a budget errs high (Decimal's // truncates toward zero, so no -(-a // b) trick)
        return int((Decimal(chars) / cpt).to_integral_value(rounding=ROUND_CEILING)) if chars else 0

    def parse(line: bytes, now: float) -> Parsed:
        obj = _decode_object(line)
        if isinstance(obj, str):
            return obj

        def get(k: str) -> Any:
            return _get_path(obj, fields[k]) if k in fields else None

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
            # ids are the pipeline's own: two sources may both count from 1
            dedup_key=f"{name}\x1f{rid}" if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None,
            entrypoint=_str_or_empty(get("entrypoint")), cost_usd=cost,
        )]

    return parse


def parser_for(source: SourceConfig) -> LineParser:
    if source.kind == "claude_code":
        return parse_claude_code(source.name)
    if source.kind == "cli_json":
        return parse_cli_json(source.name)
    return parse_jsonl(source)
