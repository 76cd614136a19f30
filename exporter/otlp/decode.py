"""OTLP requests as typed rows: Claude Code's api_request events and its cost and token metrics.

Decoding uses the OpenTelemetry project's own protobuf definitions (``opentelemetry-proto``):
the binary encoding with its generated classes, OTLP/JSON with protobuf's ``json_format``
(camelCase names, 64-bit integers as strings). What is taken:

- the log event ``claude_code.api_request`` (named by the record's body, its ``event_name`` or
  its ``event.name`` attribute), one per request: ``model``, ``input_tokens``,
  ``output_tokens``, ``cache_read_tokens``, ``cache_creation_tokens``, ``cost_usd_micros``
  (else ``cost_usd``), ``request_id``, ``speed``, with ``session.id``, the user and
  ``app.entrypoint``; numbers may come as integers, doubles or decimal strings;
- the metrics ``claude_code.token.usage`` (attribute ``type``: input, output, cacheRead,
  cacheCreation) and ``claude_code.cost.usage`` (USD): monotonic sums, in delta or
  cumulative temporality.

Everything else Claude Code sends (other events, other metrics) is ``ignored``. An event or a
point that cannot be taken is rejected with a reason; the receiver answers those with OTLP's
partial success. Attribute values are read from the record (or point) first, then from its
resource (``OTEL_RESOURCE_ATTRIBUTES``).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from exporter.core.records import Tokens
from exporter.logs.dedup import AGG_CACHE_READ, AGG_CACHE_WRITE_5M, AGG_INPUT, AGG_OUTPUT, AGG_REPORTED_PICO, PICO
from exporter.logs.parse import MAX_COST_PER_RECORD, MAX_FUTURE_SECONDS, MAX_TOKENS_PER_REQUEST, parse_timestamp

__all__ = [
    "API_REQUEST", "COST_METRIC", "ITEM_RESULTS", "LOGS", "METRICS", "REFUSALS", "SIGNALS", "TOKEN_METRIC",
    "Decoded", "Event", "Point", "Refused", "decode", "unpack",
]

LOGS, METRICS = "logs", "metrics"
SIGNALS = (LOGS, METRICS)
API_REQUEST = "claude_code.api_request"
TOKEN_METRIC = "claude_code.token.usage"
COST_METRIC = "claude_code.cost.usage"

# what became of an event or a metric point (the receiver's item counter, a closed label set)
COUNTED = "counted"
DUPLICATE = "duplicate"  # a retried request's copy, or a cumulative point already taken
IGNORED = "ignored"  # another event or metric of Claude Code's: not spend
SUPERSEDED = "superseded"  # a metric point its user's api_request events already count (no session to tell)
BAD_USAGE = "bad_usage"  # a count or cost that is not a non-negative number within bounds, no model
BAD_TIMESTAMP = "bad_timestamp"  # no time, or more than a week ahead of the clock
BAD_TEMPORALITY = "bad_temporality"  # a sum that is neither delta nor cumulative, or not monotonic
REJECTS = (BAD_USAGE, BAD_TIMESTAMP, BAD_TEMPORALITY)
ITEM_RESULTS = (COUNTED, DUPLICATE, IGNORED, SUPERSEDED, *REJECTS)
# why a whole request was refused (4xx), a closed label set
MALFORMED = "malformed"  # not an OTLP request of that signal in that encoding
BAD_ENCODING = "bad_encoding"  # a Content-Encoding other than gzip, or gzip that does not unpack
MEDIA_TYPE = "media_type"  # neither application/x-protobuf nor application/json
TOO_LARGE = "too_large"  # over max_body_bytes as sent, or unpacked
REFUSALS = (MALFORMED, BAD_ENCODING, MEDIA_TYPE, TOO_LARGE)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
UNPACKED_FACTOR = 4  # an unpacked body may be this many times max_body_bytes (OTLP compresses 5-20x)
MAX_TOTAL_TOKENS = 10**13  # a cumulative token count since a process started: past any real use
MAX_TOTAL_USD = Decimal(10**9)

# Claude Code's token types -> the aggregate column they add to (a cache write is a 5-minute one:
# neither the metric nor the event splits writes by lifetime)
TOKEN_COLUMNS = {"input": AGG_INPUT, "output": AGG_OUTPUT, "cacheRead": AGG_CACHE_READ,
                 "cacheCreation": AGG_CACHE_WRITE_5M}
COST_COLUMN = AGG_REPORTED_PICO  # a cost metric point adds to what Claude Code said it cost
USER_KEYS = ("user.account_uuid", "user.email", "user.id")
MAX_VALUE_CHARS = 256  # an attribute value kept (longer ones are cut)
MAX_ERRORS = 5  # reasons named in a partial-success message


class Refused(Exception):
    """A request refused whole: ``status`` to answer and ``reason`` (one of REFUSALS) to count."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class Event(NamedTuple):
    """One ``claude_code.api_request``: one request, priced by the exporter's own prices."""

    key: str  # request_id, or a digest of the record when it has none: a retry has the same
    time: float  # epoch seconds
    model: str
    tokens: Tokens
    speed: str
    reported_pico: int  # what Claude Code said it cost (cost_usd_micros), 0 when it does not say
    session: str
    user: str
    entrypoint: str
    attrs: tuple[str, ...]  # the source's configured attributes, in order ("" where absent)


class Point(NamedTuple):
    """One data point of a cost or token sum."""

    column: int  # the aggregate column it adds to (a token type, or Claude Code's cost)
    cumulative: bool
    series: int  # 64-bit digest of the metric, its resource and its attributes
    start: int  # start_time_unix_nano
    time: int  # time_unix_nano
    value: int  # tokens, or picodollars
    model: str
    speed: str
    session: str
    user: str
    entrypoint: str
    attrs: tuple[str, ...]


@dataclass
class Decoded:
    """What one request carried: the rows to take, and the items left out with their reasons."""

    signal: str
    events: list[Event] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    results: Counter[str] = field(default_factory=Counter)  # IGNORED and reject reasons
    errors: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return sum(self.results[r] for r in REJECTS)

    def reject(self, reason: str, why: str) -> None:
        self.results[reason] += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(why)


# --------------------------------------------------------------------------- the body


def unpack(body: bytes, content_type: str | None, content_encoding: str | None, max_bytes: int) -> tuple[bytes, str]:
    """(the request's message bytes, PROTOBUF or JSON); raises Refused."""
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype not in (PROTOBUF, JSON):
        raise Refused(415, MEDIA_TYPE, f"Content-Type must be {PROTOBUF} or {JSON}, not {ctype or 'none'!r}")
    coding = (content_encoding or "identity").strip().lower()
    if coding == "gzip":
        limit = max_bytes * UNPACKED_FACTOR
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(body, limit + 1)
            if len(data) > limit or inflater.unconsumed_tail:
                raise Refused(413, TOO_LARGE, f"the body unpacks to over {limit} bytes")
            data += inflater.flush()
        except (zlib.error, EOFError, gzip.BadGzipFile) as exc:
            raise Refused(400, BAD_ENCODING, f"the gzip body does not unpack: {exc}") from None
        if not inflater.eof:
            raise Refused(400, BAD_ENCODING, "the gzip body is cut short")
        return data, ctype
    if coding not in ("identity", ""):
        raise Refused(415, BAD_ENCODING, f"Content-Encoding must be gzip or none, not {coding!r}")
    return body, ctype


def _parse(data: bytes, ctype: str, message: Message) -> None:
    try:
        if ctype == PROTOBUF:
            message.ParseFromString(data)
        else:
            json_format.Parse(data.decode("utf-8"), message, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        kind = "protobuf" if ctype == PROTOBUF else "JSON"
        raise Refused(400, MALFORMED, f"not an OTLP {type(message).__name__} in {kind}: {exc}") from None


def decode(signal: str, data: bytes, ctype: str, attributes: tuple[str, ...], now: float) -> Decoded:
    """The rows of one request of ``signal`` (LOGS or METRICS); raises Refused for a body that is
    not such a request. ``attributes``: the source's configured attributes, kept per row."""
    out = Decoded(signal)
    if signal == LOGS:
        logs = ExportLogsServiceRequest()
        _parse(data, ctype, logs)
        _logs(logs, attributes, now, out)
    else:
        metrics = ExportMetricsServiceRequest()
        _parse(data, ctype, metrics)
        _metrics(metrics, attributes, now, out)
    return out


# --------------------------------------------------------------------------- attributes


def _text(v: AnyValue) -> str | None:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return str(v.int_value)
    if kind == "double_value":
        return repr(v.double_value)
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    return None  # arrays, maps and bytes are no attribute of ours


def _attrs(kvs: Iterable[KeyValue]) -> dict[str, str]:
    out = {}
    for kv in kvs:
        text = _text(kv.value)
        if text is not None:
            out[kv.key] = text[:MAX_VALUE_CHARS]
    return out


def _raw(kvs: Iterable[KeyValue]) -> dict[str, AnyValue]:
    return {kv.key: kv.value for kv in kvs}


class _Who(NamedTuple):
    session: str
    user: str
    entrypoint: str
    speed: str
    attrs: tuple[str, ...]


def _who(own: dict[str, str], resource: dict[str, str], attributes: tuple[str, ...]) -> _Who:
    def get(key: str) -> str:
        v = own.get(key)
        return v if v is not None else resource.get(key, "")

    user = next((v for k in USER_KEYS if (v := get(k))), "")
    return _Who(get("session.id"), user, get("app.entrypoint"), get("speed"), tuple(get(a) for a in attributes))


def _digest(*parts: bytes) -> int:
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(len(part).to_bytes(4, "little"))
        h.update(part)
    return int.from_bytes(h.digest(), "big", signed=True)


def _canonical(attrs: dict[str, str]) -> bytes:
    return "\x1f".join(f"{k}\x1e{v}" for k, v in sorted(attrs.items())).encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------- numbers


class _Bad(Exception):
    pass


def _number(v: AnyValue | None) -> Decimal | None:
    """An attribute's number (integer, double or decimal string); None when absent."""
    if v is None:
        return None
    kind = v.WhichOneof("value")
    try:
        if kind == "int_value":
            return Decimal(v.int_value)
        if kind == "double_value":
            if not math.isfinite(v.double_value):
                raise _Bad
            return Decimal(repr(v.double_value))
        if kind == "string_value":
            text = v.string_value.strip()
            if not text:
                return None
            d = Decimal(text)
            if not d.is_finite():
                raise _Bad
            return d
    except InvalidOperation:
        raise _Bad from None
    if kind is None:
        return None
    raise _Bad


def _tokens(v: AnyValue | None) -> int:
    d = _number(v)
    if d is None:
        return 0
    if d < 0 or d > MAX_TOKENS_PER_REQUEST or d != d.to_integral_value():
        raise _Bad
    return int(d)


def _pico(usd: Decimal, bound: Decimal) -> int:
    if usd < 0 or usd > bound:
        raise _Bad
    return int((usd * PICO).to_integral_value())


# --------------------------------------------------------------------------- logs


def _is_api_request(rec: object, body: AnyValue, attrs: dict[str, AnyValue]) -> bool:
    name = getattr(rec, "event_name", "")
    if name:
        return bool(name == API_REQUEST)
    if body.WhichOneof("value") == "string_value" and body.string_value == API_REQUEST:
        return True
    ev = attrs.get("event.name")
    return ev is not None and ev.WhichOneof("value") == "string_value" and ev.string_value in (
        "api_request", API_REQUEST)


def _logs(req: ExportLogsServiceRequest, attributes: tuple[str, ...], now: float, out: Decoded) -> None:
    for rl in req.resource_logs:
        resource = _attrs(rl.resource.attributes)
        resource_key = _canonical(resource)
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                raw = _raw(rec.attributes)
                if not _is_api_request(rec, rec.body, raw):
                    out.results[IGNORED] += 1
                    continue
                own = _attrs(rec.attributes)
                ns = rec.time_unix_nano or rec.observed_time_unix_nano
                ts = ns / 1e9 if ns else parse_timestamp(own.get("event.timestamp"))
                if ts is None or ts <= 0 or ts > now + MAX_FUTURE_SECONDS:
                    out.reject(BAD_TIMESTAMP, f"{API_REQUEST} without a usable time")
                    continue
                model = own.get("model", "")
                try:
                    if not model:
                        raise _Bad
                    tokens = Tokens(_tokens(raw.get("input_tokens")), _tokens(raw.get("output_tokens")),
                                    _tokens(raw.get("cache_read_tokens")), _tokens(raw.get("cache_creation_tokens")))
                    micros = _number(raw.get("cost_usd_micros"))
                    usd = micros / 1_000_000 if micros is not None else _number(raw.get("cost_usd"))
                    reported = _pico(usd, MAX_COST_PER_RECORD) if usd is not None else 0
                except _Bad:
                    out.reject(BAD_USAGE, f"{API_REQUEST} with no model, or a token count or cost that is not a "
                                          "non-negative number within bounds")
                    continue
                who = _who(own, resource, attributes)
                key = own.get("request_id") or (
                    f"#{_digest(resource_key, rec.SerializeToString(deterministic=True)):x}")
                out.events.append(Event(key, ts, model, tokens, who.speed, reported, who.session, who.user,
                                        who.entrypoint, who.attrs))


# --------------------------------------------------------------------------- metrics


def _metrics(req: ExportMetricsServiceRequest, attributes: tuple[str, ...], now: float, out: Decoded) -> None:
    delta, cumulative = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA, \
        AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    future_ns = int((now + MAX_FUTURE_SECONDS) * 1e9)
    for rm in req.resource_metrics:
        resource = _attrs(rm.resource.attributes)
        resource_key = _canonical(resource)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                name = metric.name
                kind = metric.WhichOneof("data")
                if name not in (TOKEN_METRIC, COST_METRIC):
                    out.results[IGNORED] += max(1, _point_count(metric, kind))
                    continue
                if kind != "sum":
                    for _ in range(max(1, _point_count(metric, kind))):
                        out.reject(BAD_TEMPORALITY, f"{name} is a {kind or 'metric without data'}, not a sum")
                    continue
                s = metric.sum
                temporality = s.aggregation_temporality
                if temporality not in (delta, cumulative) or not s.is_monotonic:
                    for _ in range(max(1, len(s.data_points))):
                        out.reject(BAD_TEMPORALITY, f"{name} is not a monotonic sum in delta or cumulative "
                                                    "temporality")
                    continue
                name_key = name.encode()
                for dp in s.data_points:
                    own = _attrs(dp.attributes)
                    if dp.time_unix_nano <= 0 or dp.time_unix_nano > future_ns:
                        out.reject(BAD_TIMESTAMP, f"a {name} point without a usable time")
                        continue
                    if dp.start_time_unix_nano > dp.time_unix_nano:
                        out.reject(BAD_TEMPORALITY, f"a {name} point that starts after it ends")
                        continue
                    value = dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
                    model = own.get("model", "")
                    try:
                        if not model or isinstance(value, float) and not math.isfinite(value):
                            raise _Bad
                        if name == COST_METRIC:
                            column = COST_COLUMN
                            amount = _pico(Decimal(repr(value)) if isinstance(value, float) else Decimal(value),
                                           MAX_TOTAL_USD)
                        else:
                            column = TOKEN_COLUMNS.get(own.get("type", ""), -1)
                            if column < 0:
                                out.results[IGNORED] += 1  # a token type of no price (none today)
                                continue
                            if value < 0 or value > MAX_TOTAL_TOKENS:
                                raise _Bad
                            amount = round(value)
                    except _Bad:
                        out.reject(BAD_USAGE, f"a {name} point with no model, or a value that is not a "
                                              "non-negative number within bounds")
                        continue
                    who = _who(own, resource, attributes)
                    series = _digest(name_key, resource_key, _canonical(own))
                    out.points.append(Point(column, temporality == cumulative, series, dp.start_time_unix_nano,
                                            dp.time_unix_nano, amount, model, who.speed, who.session, who.user,
                                            who.entrypoint, who.attrs))


def _point_count(metric: object, kind: str | None) -> int:
    data = getattr(metric, kind) if kind else None
    return len(getattr(data, "data_points", ())) if data is not None else 0
