"""The OTLP sink in process, on a real state database: each event and each metric point counts once
(retries, delta and cumulative sums, restarts and resets, two processes of one session, events
and metrics of the same requests), nothing of a failed commit is kept, and what is remembered
survives a restart."""

from __future__ import annotations

import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest

from exporter.config import parse_config
from exporter.logs.dedup import AGG_COST_PICO, AGG_INPUT, AGG_REPORTED_PICO, AGG_REQUESTS, PICO
from exporter.logs.ingestor import Ingestor
from exporter.otlp import sink as sink_module
from exporter.otlp.decode import DUPLICATE, LOGS, METRICS, PROTOBUF, SUPERSEDED, decode
from exporter.otlp.sink import Sink, stored_snapshot
from exporter.prices import load_pricer
from exporter.state import StateDB
from tests.corpus import SONNET, price_request
from tests.otlp_requests import CUMULATIVE, S, api_request, logs_request, metrics_request, point

NOW = float(int(time.time()) // 3600 * 3600 + 1800)  # the middle of an hour: nothing straddles one
T0 = int(NOW - 600) * S


class Rig:
    """A state directory with an ingestor and a sink on it, as serve builds them."""

    def __init__(self, tmp: Path, **source: object) -> None:
        self.config = parse_config({
            "state_dir": str(tmp),
            "sources": [{"name": "fleet", "kind": "otlp", "listen": "127.0.0.1:0", "attributes": ["team"],
                         **source}],
            "pools": [{"name": "platform", "credit_usd": 100,
                       "match": {"sources": ["fleet"], "telemetry": {"team": ["platform"]}}}]})
        self.clock = NOW
        self.pricer = load_pricer({})
        self.state = StateDB(tmp)
        self.ing = Ingestor(self.config.sources, self.state, self.pricer, clock=lambda: self.clock)
        self.sink = Sink(self.config.sources, self.config.pools, self.ing, self.pricer, clock=lambda: self.clock)

    def send(self, signal: str, message: object) -> dict[str, int]:
        d = decode(signal, message.SerializeToString(), PROTOBUF, ("team",), self.clock)  # type: ignore[attr-defined]
        return dict(self.sink.take("fleet", d).results)

    def column(self, col: int) -> int:
        return sum(v[col] for k, v in self.ing.aggregates.items() if k[1] == "fleet")

    @property
    def usd(self) -> Decimal:
        return Decimal(self.column(AGG_COST_PICO)) / PICO

    def close(self) -> None:
        self.state.close()


@pytest.fixture
def rig(tmp_path: Path):
    r = Rig(tmp_path)
    yield r
    r.close()


def test_a_retried_event_batch_counts_once_also_after_a_restart(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    batch = logs_request([api_request(NOW - 60, request_id="r1", inp=1000, out=100),
                          api_request(NOW - 50, request_id="r2", inp=2000, out=200)])
    assert rig.send(LOGS, batch) == {"counted": 2}
    assert rig.send(LOGS, batch) == {DUPLICATE: 2}
    assert rig.column(AGG_REQUESTS) == 2
    assert rig.usd == price_request(SONNET, 1000, 100, 0, 0, 0) + price_request(SONNET, 2000, 200, 0, 0, 0)
    assert rig.column(AGG_REPORTED_PICO) == 2 * 1234 * 10**6  # Claude Code's own figure, beside ours
    rig.close()
    again = Rig(tmp_path)  # the keys were committed with the batch: a retry after a kill is still a duplicate
    assert again.send(LOGS, batch) == {DUPLICATE: 2}
    assert again.column(AGG_REQUESTS) == 2
    # past the window they are forgotten (memory is bounded); a copy that late would count again
    again.clock += 3600
    again.send(LOGS, logs_request([api_request(again.clock - 10, request_id="r3")]))
    assert again.sink.remembered[0] == 1
    again.close()


def test_delta_points_count_once_per_interval(rig: Rig) -> None:
    t1, t2 = T0 + 60 * S, T0 + 120 * S
    first = metrics_request([point(1000, T0, t1), point(50, T0, t1, type="output")])
    assert rig.send(METRICS, first) == {"counted": 2}
    assert rig.send(METRICS, first) == {DUPLICATE: 2}  # a duplicated batch
    rig.send(METRICS, metrics_request([point(500, t1, t2)]))
    assert rig.column(AGG_INPUT) == 1500 and rig.column(AGG_INPUT + 1) == 50
    assert rig.usd == price_request(SONNET, 1500, 50, 0, 0, 0)
    assert rig.column(AGG_REQUESTS) == 0  # metrics say nothing of requests


def test_cumulative_sums_with_restarts_resets_and_two_processes_of_one_session(rig: Rig) -> None:
    def cum(value: int, start: int, end: int) -> dict[str, int]:
        return rig.send(METRICS, metrics_request([point(value, start, end)], temporality=CUMULATIVE))

    cum(100, T0, T0 + 60 * S)
    cum(250, T0, T0 + 120 * S)
    assert rig.column(AGG_INPUT) == 250
    assert cum(250, T0, T0 + 120 * S) == {DUPLICATE: 1}  # the same export again
    assert cum(200, T0, T0 + 90 * S) == {DUPLICATE: 1}  # an older one, late
    assert cum(250, T0, T0 + 180 * S) == {"counted": 1}  # nothing new: no change
    restart = T0 + 200 * S  # the process restarted (a resumed session): a new start time
    cum(40, restart, restart + 60 * S)
    assert rig.column(AGG_INPUT) == 290
    cum(30, restart, restart + 120 * S)  # fell on the same start: a reset, counted from 0
    assert rig.column(AGG_INPUT) == 320
    # a second process of the same session, interleaved with the first: its own stream
    other = T0 + 10 * S
    cum(70, other, other + 100 * S)
    cum(95, restart, restart + 180 * S)
    cum(90, other, other + 400 * S)
    assert rig.column(AGG_INPUT) == 320 + 70 + 65 + 20


def test_events_and_metrics_of_one_session_count_once_whichever_comes_first(rig: Rig) -> None:
    t1, t2 = T0 + 60 * S, T0 + 120 * S
    # session s1: metrics first, then its events
    rig.send(METRICS, metrics_request([point(3000, T0, t1), point(300, T0, t1, type="output")],
                                      [point(0.0135, T0, t1, type=None)]))
    assert rig.usd == price_request(SONNET, 3000, 300, 0, 0, 0)
    rig.send(LOGS, logs_request([api_request(NOW - 500, request_id="a", inp=1000, out=100),
                                 api_request(NOW - 490, request_id="b", inp=2000, out=200)]))
    assert rig.column(AGG_INPUT) == 3000 and rig.column(AGG_REQUESTS) == 2
    # session s2: events first, then the metrics of the same requests, then one more request of both kinds
    rig.send(LOGS, logs_request([api_request(NOW - 400, request_id="c", session="s2", inp=500, out=50)]))
    rig.send(METRICS, metrics_request([point(500, T0, t1, session="s2"), point(50, T0, t1, session="s2",
                                                                              type="output")]))
    rig.send(METRICS, metrics_request([point(700, t1, t2, session="s2")]))
    rig.send(LOGS, logs_request([api_request(NOW - 300, request_id="d", session="s2", inp=700, out=0)]))
    assert rig.column(AGG_INPUT) == 3000 + 500 + 700
    assert rig.column(AGG_REQUESTS) == 4
    expected = sum((price_request(SONNET, i, o, 0, 0, 0) for i, o in ((1000, 100), (2000, 200), (500, 50),
                                                                      (700, 0))), Decimal(0))
    assert rig.usd == expected


def test_a_point_without_a_session_counts_only_for_a_user_without_events(rig: Rig) -> None:
    rig.send(LOGS, logs_request([api_request(NOW - 60, user="alice@example.com")]))
    t1 = T0 + 60 * S
    assert rig.send(METRICS, metrics_request([point(1000, T0, t1, session=None)])) == {SUPERSEDED: 1}
    assert rig.send(METRICS, metrics_request([point(777, T0, t1, session=None, user="bob@example.com")])) == {
        "counted": 1}
    assert rig.column(AGG_INPUT) == 1000 + 777


def test_nothing_of_a_failed_commit_is_kept(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = logs_request([api_request(NOW - 60, request_id="x", inp=4000)], resource={"team": "platform"})
    points = metrics_request([point(100, T0, T0 + 60 * S, session="s9")], resource={"team": "platform"})
    real = Sink._write

    def full_disk(self: Sink, conn: sqlite3.Connection, tx: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Sink, "_write", full_disk)
    for signal, message in ((LOGS, batch), (METRICS, points)):
        with pytest.raises(sqlite3.OperationalError):
            rig.send(signal, message)
    assert rig.column(AGG_INPUT) == 0 and rig.sink.remembered == (0, 0, 0)
    assert rig.ing.take_deltas() == {}
    monkeypatch.setattr(Sink, "_write", real)
    assert rig.send(LOGS, batch) == {"counted": 1}  # the sender's retry
    assert rig.send(METRICS, points) == {"counted": 1}
    assert rig.column(AGG_INPUT) == 4100
    snap = rig.sink.snapshot()
    assert sum(snap.estimated_hourly((("team", ("platform",)),)).values()) == rig.usd


def test_attributes_feed_pools_and_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sink_module, "MAX_VALUES", 3)
    rig = Rig(tmp_path, attribute_labels="top")
    for i, team in enumerate(["platform", "data", "web", "mobile", "ml", "platform"]):
        rig.send(LOGS, logs_request([api_request(NOW - 60, request_id=f"r{i}", inp=1000 * (i + 1))],
                                    resource={"team": team}))
    platform = price_request(SONNET, 1000, 100, 0, 0, 0) + price_request(SONNET, 6000, 100, 0, 0, 0)
    snap = rig.sink.snapshot()
    assert sum(snap.estimated_hourly((("team", ("platform",)),)).values()) == platform
    by_value = {k[3]: v for k, v in snap.spend.items() if k[1] == "today"}
    assert set(by_value) == {"platform", "data", "web", "other"}  # past 3 values: other
    assert sum(by_value.values()) == rig.usd
    rig.close()
    again = Rig(tmp_path, attribute_labels="top")  # rebuilt from the state
    assert again.sink.snapshot().spend == snap.spend
    assert again.sink.snapshot().hourly == snap.hourly
    again.close()
    readonly = StateDB(tmp_path, readonly=True)  # what `check --pool` reads beside a serving exporter
    stored = stored_snapshot(readonly.conn, again.config.sources, again.config.pools, NOW)
    readonly.close()
    assert stored is not None and stored.hourly == snap.hourly
