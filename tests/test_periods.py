"""Daily, weekly and rolling pool periods at their edges, on a frozen clock (every expectation a literal)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from freezegun import freeze_time

from exporter.config import ConfigError, PeriodConfig, PoolConfig, PoolMatch, parse_config
from exporter.core.budget import PoolInputs, compute_pool, period_bounds, rolling_exhaustion
from exporter.expose.statuspage import render
from exporter.refresh import Refresher

D = Decimal


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


def pool(period: PeriodConfig, credit: str = "10") -> PoolConfig:
    return PoolConfig(name="p", credit_usd=D(credit), period=period, match=PoolMatch(sources=("s",)))


# --------------------------------------------------------------------------- days and weeks


def test_a_day_in_berlin_is_23_hours_on_the_spring_forward_and_resets_at_local_time():
    day = PeriodConfig(every="day", timezone="Europe/Berlin", reset_time="06:00")
    with freeze_time("2026-03-29 03:59:59"):  # 05:59:59 CEST: still the day that began at 06:00 CET on the 28th
        assert period_bounds(day, now()) == (utc(2026, 3, 28, 5), utc(2026, 3, 29, 4))
    with freeze_time("2026-03-29 04:00:00"):  # 06:00 CEST
        start, end = period_bounds(day, now())
    assert (start, end) == (utc(2026, 3, 29, 4), utc(2026, 3, 30, 4))
    with freeze_time("2026-03-28 12:00:00"):
        start, end = period_bounds(PeriodConfig(every="day", timezone="Europe/Berlin"), now())
    assert (start, end) == (utc(2026, 3, 27, 23), utc(2026, 3, 28, 23))
    with freeze_time("2026-03-29 12:00:00"):
        start, end = period_bounds(PeriodConfig(every="day", timezone="Europe/Berlin"), now())
    assert (start, end) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))
    assert end - start == timedelta(hours=23)


def test_a_berlin_week_across_the_spring_forward_starts_on_local_monday_midnight():
    week = PeriodConfig(every="week", weekday=0, timezone="Europe/Berlin")
    # Monday 23 March 00:00 CET is 22 March 23:00 UTC; Monday 30 March 00:00 CEST is 29 March 22:00 UTC
    with freeze_time("2026-03-22 22:59:59.999999"):
        assert period_bounds(week, now()) == (utc(2026, 3, 15, 23), utc(2026, 3, 22, 23))
    with freeze_time("2026-03-22 23:00:00"):
        assert period_bounds(week, now()) == (utc(2026, 3, 22, 23), utc(2026, 3, 29, 22))
    with freeze_time("2026-03-29 21:59:59"):
        start, end = period_bounds(week, now())
    assert (start, end) == (utc(2026, 3, 22, 23), utc(2026, 3, 29, 22))
    assert end - start == timedelta(days=7, hours=-1)
    with freeze_time("2026-03-29 22:00:00"):
        assert period_bounds(week, now())[0] == utc(2026, 3, 29, 22)


def test_a_new_york_week_from_sunday_across_the_fall_back_is_169_hours():
    week = PeriodConfig(every="week", weekday=6, timezone="America/New_York", reset_time="00:00")
    # Sunday 1 November 2026 00:00 EDT (04:00 UTC) to Sunday 8 November 00:00 EST (05:00 UTC)
    with freeze_time("2026-11-01 03:59:59"):
        assert period_bounds(week, now())[1] == utc(2026, 11, 1, 4)
    with freeze_time("2026-11-05 12:00:00"):
        start, end = period_bounds(week, now())
    assert (start, end) == (utc(2026, 11, 1, 4), utc(2026, 11, 8, 5))
    assert end - start == timedelta(days=7, hours=1)


def test_a_weekly_pool_counts_only_the_hours_of_its_week():
    week = PeriodConfig(every="week", weekday=0, timezone="Europe/Berlin")
    hours = {utc(2026, 3, 22, 22): D("4"), utc(2026, 3, 22, 23): D("1.25"), utc(2026, 3, 29, 21): D("2")}
    with freeze_time("2026-03-29 21:30:00"):
        s = compute_pool(pool(week), PoolInputs(estimated_by_hour=hours), now())
    assert s.spend == D("3.25")  # 22:00 UTC on the 22nd is 23:00 CET Sunday: the week before
    assert s.period_end == utc(2026, 3, 29, 22)
    with freeze_time("2026-03-29 22:00:00"):
        s = compute_pool(pool(week), PoolInputs(estimated_by_hour=hours), now())
    assert s.spend == D("0") and s.remaining == D("10")


# --------------------------------------------------------------------------- rolling windows


def test_a_rolling_window_drops_its_oldest_hour_when_the_clock_passes_the_hour():
    rolling = PeriodConfig(rolling_hours=5)
    hours = {utc(2026, 6, 1, h): D(v) for h, v in ((5, "100"), (6, "6"), (8, "1"), (10, "0.5"))}
    with freeze_time("2026-06-01 10:59:59") as frozen:
        s = compute_pool(pool(rolling), PoolInputs(estimated_by_hour=hours), now())
        assert (s.period_start, s.period_end) == (utc(2026, 6, 1, 6), utc(2026, 6, 1, 11))
        assert s.spend == D("7.5")  # 06, 08 and 10; 05 is out
        assert s.remaining == D("2.5") and s.remaining_ratio == D("0.25")
        frozen.tick(timedelta(seconds=1))
        s = compute_pool(pool(rolling), PoolInputs(estimated_by_hour=hours), now())
    assert (s.period_start, s.period_end) == (utc(2026, 6, 1, 7), utc(2026, 6, 1, 12))
    assert s.spend == D("1.5")
    assert s.estimated["period"] == D("1.5")
    assert s.billed is None  # a window of hours shows no billed windows


@pytest.mark.parametrize(("burn", "expected"), [
    # $6 in the oldest hour leaves at 11:00; the burn alone fills five hours with at most 5 x burn
    ("1", None),
    ("1.5", None),
    # 10:00-11:00 +3 = 9, then the $6 leaves: 3; 6 by 12:00, 9 by 13:00, $1 more by 13:20
    ("3", utc(2026, 6, 1, 13, 20)),
    # 5 hours x 2.5 is over the credit: 8.5 at 11:00 less the $6 leaving, then 5, 7.5 and $10 at 14:00
    ("2.5", utc(2026, 6, 1, 14)),
])
def test_a_rolling_forecast_lets_old_spend_drop_out(burn, expected):
    buckets = [D("6"), D("0"), D("0"), D("0"), D("0")]  # 06:00 ... 10:00
    got = rolling_exhaustion(buckets, utc(2026, 6, 1, 10), utc(2026, 6, 1, 11), D("10"), D(burn))
    assert got == expected


def test_a_rolling_forecast_is_now_when_the_window_is_over_its_credit():
    assert rolling_exhaustion([D("11")], utc(2026, 6, 1, 10, 5), utc(2026, 6, 1, 11), D("10"), D("0")) == \
        utc(2026, 6, 1, 10, 5)


def test_a_rolling_pool_projects_the_window_the_burn_fills():
    rolling = PeriodConfig(rolling_hours=24)
    # $2 an hour for the last 3 hours and $30 a day ago: a calendar forecast would run dry, this one does not
    hours = {utc(2026, 6, 1, 13): D("30"), **{utc(2026, 6, 2, h): D("2") for h in (9, 10, 11)}}
    with freeze_time("2026-06-02 12:00:00"):
        s = compute_pool(pool(rolling, credit="60"), PoolInputs(estimated_by_hour=hours), now())
    assert s.spend == D("36")
    assert s.burn_rate_per_hour == D("2")
    assert s.projected_spend == D("48")  # 24 h x $2: under the credit once the $30 hour has left
    assert s.exhaustion is None
    with freeze_time("2026-06-02 12:00:00"):
        calendar = compute_pool(pool(PeriodConfig(every="week"), credit="60"), PoolInputs(estimated_by_hour=hours),
                                now())
    assert calendar.exhaustion is not None


def test_a_rolling_pool_is_calibrated_by_the_last_week_of_complete_days():
    rolling = PeriodConfig(rolling_hours=5)
    p = PoolConfig(name="p", credit_usd=D("10"), period=rolling,
                   match=PoolMatch(sources=("s",), workspaces=("w",)))
    inputs = PoolInputs(
        billed_by_day={datetime(2026, 5, d).date(): D("4") for d in (25, 31)},
        billed_complete_through=datetime(2026, 5, 31).date(),
        estimated_by_hour={utc(2026, 5, 25, 9): D("5"), utc(2026, 5, 31, 9): D("5"), utc(2026, 6, 1, 10): D("2.5")},
    )
    with freeze_time("2026-06-01 10:30:00"):
        s = compute_pool(p, inputs, now())
    assert s.drift["period"] == D("1.25") and s.drift["yesterday"] == D("1.25")
    assert s.spend == D("2")  # 2.5 / 1.25
    assert s.billed is None and s.spend_billed == D("0")


# --------------------------------------------------------------------------- config


def test_rolling_periods_parse_and_leave_no_reset_to_give():
    cfg = parse_config({"sources": [{"name": "s", "kind": "jsonl", "paths": ["/x"]}],
                        "pools": [{"name": f"r{k}", "credit_usd": 5, "period": {"rolling": k},
                                   "match": {"sources": ["s"]}} for k in ("5h", "24h", "7d", "30d")]})
    assert [p.period.rolling_hours for p in cfg.pools] == [5, 24, 168, 720]
    with pytest.raises(ConfigError) as exc:
        parse_config({"sources": [{"name": "s", "kind": "jsonl", "paths": ["/x"]}],
                      "pools": [{"name": "a", "credit_usd": 5, "period": {"rolling": "6h"}, "match": {"sources": ["s"]}},
                                {"name": "b", "credit_usd": 5, "period": {"rolling": "5h", "every": "day"},
                                 "match": {"sources": ["s"]}}]})
    assert exc.value.problems == [
        "pools[0].period.rolling: must be one of 5h, 24h, 7d, 30d, not '6h'",
        "pools[1].period.every: a rolling period has no reset: give rolling or a calendar period",
    ]


# --------------------------------------------------------------------------- while serving


def _transcript(path: Path, stamps: list[str]) -> None:
    lines = [json.dumps({"type": "assistant", "timestamp": ts, "requestId": f"req_{i}", "message": {
        "id": f"msg_{i}", "model": "claude-sonnet-4-5", "usage": {"input_tokens": 0, "output_tokens": 200_000}}})
        for i, ts in enumerate(stamps)]
    path.write_text("\n".join(lines) + "\n")


def test_a_daily_and_a_rolling_pool_reset_while_serving(tmp_path: Path):
    logs = tmp_path / "projects"
    logs.mkdir()
    # $3 a request (200,000 output tokens of Sonnet 4.5): 21:10 and 21:50 UTC on 29 March, 22:50 Berlin time
    _transcript(logs / "s.jsonl", ["2026-03-29T21:10:00Z", "2026-03-29T21:50:00Z"])
    cfg = parse_config({
        "state_dir": str(tmp_path / "state"),
        "sources": [{"name": "s", "kind": "claude_code", "paths": [str(logs)]}],
        "pools": [
            {"name": "daily", "credit_usd": 20, "period": {"every": "day", "timezone": "Europe/Berlin"},
             "match": {"sources": ["s"]}},
            {"name": "rolling", "credit_usd": 20, "period": {"rolling": "5h"}, "match": {"sources": ["s"]}},
        ],
    })
    with freeze_time("2026-03-29 21:59:00") as frozen:
        refresher = Refresher(cfg, clock=lambda: time.time())
        try:
            refresher.refresh_logs()
            daily, rolling = refresher.snapshot().pools
            assert daily.spend == D("6") and daily.period_end == utc(2026, 3, 29, 22)
            assert rolling.spend == D("6")
            frozen.move_to("2026-03-29 22:00:01")  # midnight in Berlin: a new day
            refresher.refresh_logs()
            daily, rolling = refresher.snapshot().pools
            assert daily.spend == D("0") and daily.period_start == utc(2026, 3, 29, 22)
            assert daily.remaining == D("20") and not refresher.snapshot().decisions["daily"].open
            assert rolling.spend == D("6")  # the window still holds 21:00
            snap = refresher.snapshot()
            page = render(snap, snap.decisions, now=time.time())
            assert "the last 5 h (rolling)" in page and "at this rate the window holds" in page
            frozen.move_to("2026-03-30 02:00:00")  # 21:00 leaves the 5-hour window
            refresher.refresh_logs()
            assert refresher.snapshot().pools[1].spend == D("0")
        finally:
            refresher.stop()
