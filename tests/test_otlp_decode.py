"""The OTLP decoder: both encodings, gzip, Claude Code's api_request event and its two sums, and
every way a request or an item is refused."""

from __future__ import annotations

import gzip
import time

import pytest
from google.protobuf import json_format

from exporter.core.records import Tokens
from exporter.logs.dedup import AGG_CACHE_READ, AGG_INPUT, AGG_REPORTED_PICO
from exporter.otlp.decode import (BAD_ENCODING, BAD_TEMPORALITY, BAD_TIMESTAMP, BAD_USAGE, IGNORED, JSON, LOGS,
                                  MALFORMED, MEDIA_TYPE, METRICS, PROTOBUF, TOO_LARGE, Refused, decode, unpack)
from tests.otlp_requests import CUMULATIVE, S, api_request, logs_request, metrics_request, point

NOW = time.time()


def _decode(signal: str, message: object, attributes: tuple[str, ...] = (), *, as_json: bool = False):
    if as_json:
        data, kind = json_format.MessageToJson(message).encode(), JSON  # type: ignore[arg-type]
    else:
        data, kind = message.SerializeToString(), PROTOBUF  # type: ignore[attr-defined]
    return decode(signal, data, kind, attributes, NOW)


@pytest.mark.parametrize("as_json", [False, True])
def test_api_request_event_is_read_in_both_encodings(as_json: bool) -> None:
    req = logs_request([api_request(NOW - 60, inp=1200, out=300, cr=5000, cw=700, request_id="req_abc",
                                    query_source="main", speed="fast", **{"app.entrypoint": "sdk-cli"})],
                       resource={"team": "platform", "user.account_uuid": "acc-1"})
    d = _decode(LOGS, req, ("team", "query_source", "missing"), as_json=as_json)
    assert len(d.events) == 1 and d.rejected == 0
    ev = d.events[0]
    assert ev.key == "req_abc"
    assert ev.tokens == Tokens(1200, 300, 5000, 700)
    assert ev.model == "claude-sonnet-4-5-20250929"
    assert ev.speed == "fast" and ev.entrypoint == "sdk-cli" and ev.session == "s1"
    assert ev.user == "acc-1"  # the account id before the email, from the resource when the record has none
    assert ev.attrs == ("platform", "main", "")
    assert ev.reported_pico == 1234 * 10**6  # cost_usd_micros
    assert abs(ev.time - (NOW - 60)) < 1e-3


def test_numbers_may_be_strings_or_doubles_and_the_name_may_be_in_any_of_three_places() -> None:
    records = [
        api_request(NOW, inp="1500", out=20.0, cost_usd_micros=None, cost_usd="0.25", request_id="a"),  # type: ignore[arg-type]
        {**api_request(NOW, request_id="b"), "body": "something else"},  # event.name attribute names it
        {**api_request(NOW, request_id="c", **{"event.name": None}), "body": "claude_code.api_request"},
    ]
    d = _decode(LOGS, logs_request(records))
    assert [e.key for e in d.events] == ["a", "b", "c"]
    assert d.events[0].tokens == Tokens(1500, 20) and d.events[0].reported_pico == 25 * 10**10


def test_other_events_are_ignored_and_bad_ones_rejected_with_reasons() -> None:
    records = [
        {"time": NOW, "body": "claude_code.user_prompt", "attrs": {"event.name": "user_prompt"}},
        api_request(NOW, inp=-5, request_id="neg"),
        api_request(NOW, inp=1.5, request_id="frac"),  # type: ignore[arg-type]
        api_request(NOW, model=None, request_id="nomodel"),  # type: ignore[arg-type]
        api_request(NOW, inp="lots", request_id="word"),  # type: ignore[arg-type]
        api_request(NOW + 30 * 86400, request_id="future"),
        api_request(NOW, request_id="ok"),
    ]
    d = _decode(LOGS, logs_request(records))
    assert [e.key for e in d.events] == ["ok"]
    assert d.results[IGNORED] == 1
    assert d.results[BAD_USAGE] == 4 and d.results[BAD_TIMESTAMP] == 1
    assert d.rejected == 5 and d.errors


def test_an_event_without_request_id_gets_a_key_a_retry_shares() -> None:
    req = logs_request([api_request(NOW, request_id=None), api_request(NOW + 1, request_id=None)])
    first, again = _decode(LOGS, req), _decode(LOGS, req)
    keys = [e.key for e in first.events]
    assert keys == [e.key for e in again.events] and len(set(keys)) == 2


@pytest.mark.parametrize("as_json", [False, True])
def test_token_and_cost_points_of_both_temporalities(as_json: bool) -> None:
    t0 = int(NOW - 120) * S
    t1 = t0 + 60 * S
    delta = metrics_request([point(1000, t0, t1, type="input"), point(400, t0, t1, type="cacheRead"),
                             point(9, t0, t1, type="someNewType")],
                            [point(0.5, t0, t1, type=None)], resource={"team": "data"})
    d = _decode(METRICS, delta, ("team",), as_json=as_json)
    assert [(p.column, p.value, p.cumulative) for p in d.points] == [
        (AGG_INPUT, 1000, False), (AGG_CACHE_READ, 400, False), (AGG_REPORTED_PICO, 5 * 10**11, False)]
    assert d.results[IGNORED] == 1  # a token type of no price
    assert d.points[0].attrs == ("data",) and d.points[0].start == t0 and d.points[0].time == t1
    assert d.points[0].series != d.points[1].series  # the type is part of the series
    cumulative = _decode(METRICS, metrics_request([point(1000, t0, t1)], temporality=CUMULATIVE), as_json=as_json)
    assert cumulative.points[0].cumulative


def test_sums_that_cannot_be_counted_are_rejected() -> None:
    t0, t1 = int(NOW - 60) * S, int(NOW) * S
    assert _decode(METRICS, metrics_request([point(5, t0, t1)], monotonic=False)).results[BAD_TEMPORALITY] == 1
    assert _decode(METRICS, metrics_request([point(5, t0, t1)], temporality=0)).results[BAD_TEMPORALITY] == 1
    assert _decode(METRICS, metrics_request([point(5, t1, t0)])).results[BAD_TEMPORALITY] == 1
    assert _decode(METRICS, metrics_request([point(-5, t0, t1)])).results[BAD_USAGE] == 1
    assert _decode(METRICS, metrics_request([point(5, t0, 0)])).results[BAD_TIMESTAMP] == 1
    other = metrics_request([point(5, t0, t1)])
    other.resource_metrics[0].scope_metrics[0].metrics[0].name = "claude_code.lines_of_code.count"
    assert _decode(METRICS, other).results[IGNORED] == 1


def test_bodies_refused_whole() -> None:
    body = logs_request([api_request(NOW)]).SerializeToString()
    with pytest.raises(Refused) as exc:
        decode(LOGS, b"\xff\x00not protobuf", PROTOBUF, (), NOW)
    assert exc.value.status == 400 and exc.value.reason == MALFORMED
    with pytest.raises(Refused) as exc:
        decode(LOGS, b"{not json", JSON, (), NOW)
    assert exc.value.reason == MALFORMED
    with pytest.raises(Refused) as exc:
        unpack(body, "text/plain", None, 1 << 20)
    assert exc.value.status == 415 and exc.value.reason == MEDIA_TYPE
    with pytest.raises(Refused) as exc:
        unpack(body, PROTOBUF, "br", 1 << 20)
    assert exc.value.status == 415 and exc.value.reason == BAD_ENCODING
    with pytest.raises(Refused) as exc:
        unpack(b"\x1f\x8bnot gzip at all", PROTOBUF, "gzip", 1 << 20)
    assert exc.value.status == 400 and exc.value.reason == BAD_ENCODING
    with pytest.raises(Refused) as exc:
        unpack(gzip.compress(body)[:-8], PROTOBUF, "gzip", 1 << 20)
    assert exc.value.reason == BAD_ENCODING
    bomb = gzip.compress(b"\0" * (5 << 20))
    with pytest.raises(Refused) as exc:
        unpack(bomb, PROTOBUF, "gzip", 1 << 20)  # 5 MiB unpacked from a 1 MiB limit: refused while unpacking
    assert exc.value.status == 413 and exc.value.reason == TOO_LARGE
    assert unpack(gzip.compress(body), "application/x-protobuf; charset=utf-8", "GZIP", 1 << 20) == (body, PROTOBUF)
