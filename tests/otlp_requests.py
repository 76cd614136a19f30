"""OTLP requests built with the OpenTelemetry project's own protobuf classes, for the in-process tests:
Claude Code's api_request events and its token and cost metric points, as a test wants them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
S = 1_000_000_000  # nanoseconds in a second


def any_value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=str(v))


def kvs(attrs: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


def api_request(t: float, model: str = "claude-sonnet-4-5-20250929", *, inp: int = 1000, out: int = 100,
                cr: int = 0, cw: int = 0, request_id: str | None = "req_1", session: str = "s1",
                user: str = "alice@example.com", **extra: Any) -> dict[str, Any]:
    """The attributes (and time) of one claude_code.api_request record."""
    attrs: dict[str, Any] = {"event.name": "api_request", "session.id": session, "user.email": user,
                             "model": model, "input_tokens": inp, "output_tokens": out, "cache_read_tokens": cr,
                             "cache_creation_tokens": cw, "cost_usd_micros": 1234, **extra}
    if request_id is not None:
        attrs["request_id"] = request_id
    return {"time": t, "attrs": {k: v for k, v in attrs.items() if v is not None}}


def logs_request(records: Iterable[Mapping[str, Any]], resource: Mapping[str, Any] | None = None,
                 body: str = "claude_code.api_request") -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend(kvs({"service.name": "claude-code", **(resource or {})}))
    sl = rl.scope_logs.add()
    sl.scope.name = "com.anthropic.claude_code.events"
    for r in records:
        rec = sl.log_records.add()
        rec.time_unix_nano = int(r["time"] * S)
        rec.body.string_value = r.get("body", body)
        rec.attributes.extend(kvs(r["attrs"]))
    return req


def point(value: float | int, start: int, end: int, *, model: str = "claude-sonnet-4-5-20250929",
          session: str | None = "s1", user: str = "alice@example.com", type: str | None = "input",
          **extra: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {"model": model, "user.email": user, **extra}
    if session is not None:
        attrs["session.id"] = session
    if type is not None:
        attrs["type"] = type
    return {"value": value, "start": start, "end": end, "attrs": attrs}


def metrics_request(tokens: Iterable[Mapping[str, Any]] = (), cost: Iterable[Mapping[str, Any]] = (), *,
                    temporality: int = DELTA, resource: Mapping[str, Any] | None = None,
                    monotonic: bool = True) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(kvs({"service.name": "claude-code", **(resource or {})}))
    sm = rm.scope_metrics.add()
    sm.scope.name = "com.anthropic.claude_code"
    for name, points in (("claude_code.token.usage", list(tokens)), ("claude_code.cost.usage", list(cost))):
        if not points:
            continue
        m = sm.metrics.add()
        m.name = name
        m.sum.aggregation_temporality = temporality
        m.sum.is_monotonic = monotonic
        for p in points:
            dp = m.sum.data_points.add()
            dp.start_time_unix_nano = p["start"]
            dp.time_unix_nano = p["end"]
            if isinstance(p["value"], int):
                dp.as_int = p["value"]
            else:
                dp.as_double = p["value"]
            dp.attributes.extend(kvs({k: v for k, v in p["attrs"].items() if k != "type" or name.endswith("token.usage")}))
    return req
