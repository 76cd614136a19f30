"""Pool arithmetic against hand-computed figures (every expectation is a literal)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.budget import (
    PoolInputs,
    PoolMatcher,
    compute_pool,
    day_in_period,
    matches_model,
    period_bounds,
)
from exporter.config import PeriodConfig, PoolConfig, PoolMatch
from tests.conftest import examples

D = Decimal
CENT = D("0.01")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def pool(credit: str = "200", *, reset_day: int = 1, tz: str = "UTC", reset_time: str = "00:00",
         open_below: str = "0.05", **match: tuple[str, ...]) -> PoolConfig:
    return PoolConfig(
        name="p", credit_usd=D(credit), period=PeriodConfig(reset_day, tz, reset_time),
        match=PoolMatch(**match), open_below=D(open_below),
    )


def cents(x: Decimal) -> Decimal:
    return x.quantize(CENT)


# --------------------------------------------------------------------------- period bounds


@pytest.mark.parametrize(("now", "start", "end"), [
    # non-leap February: day 31 means the 28th
    (utc(2026, 2, 10), utc(2026, 1, 31), utc(2026, 2, 28)),
    (utc(2026, 2, 27, 23, 59, 59), utc(2026, 1, 31), utc(2026, 2, 28)),
    (utc(2026, 2, 28), utc(2026, 2, 28), utc(2026, 3, 31)),
    (utc(2026, 3, 30, 23, 59), utc(2026, 2, 28), utc(2026, 3, 31)),
    # leap February: the 29th
    (utc(2028, 2, 28, 12), utc(2028, 1, 31), utc(2028, 2, 29)),
    (utc(2028, 2, 29), utc(2028, 2, 29), utc(2028, 3, 31)),
    # April has 30 days
    (utc(2026, 4, 15), utc(2026, 3, 31), utc(2026, 4, 30)),
    (utc(2026, 4, 30, 0, 0, 1), utc(2026, 4, 30), utc(2026, 5, 31)),
    # across a year end
    (utc(2026, 12, 31, 8), utc(2026, 12, 31), utc(2027, 1, 31)),
])
def test_reset_day_31_uses_the_last_day_of_short_months(now, start, end):
    assert period_bounds(PeriodConfig(reset_day=31), now) == (start, end)


def test_reset_day_30_in_february():
    assert period_bounds(PeriodConfig(reset_day=30), utc(2026, 2, 14)) == (utc(2026, 1, 30), utc(2026, 2, 28))
    assert period_bounds(PeriodConfig(reset_day=30), utc(2026, 3, 1)) == (utc(2026, 2, 28), utc(2026, 3, 30))


def test_period_from_a_frozen_clock():
    with freeze_time("2026-02-28 00:00:00"):
        assert period_bounds(PeriodConfig(reset_day=31), datetime.now(UTC)) == (utc(2026, 2, 28), utc(2026, 3, 31))


def test_berlin_midnight_reset_across_spring_forward():
    # 29 March 2026 clocks go 02:00 CET -> 03:00 CEST; local midnight is 23:00 UTC before, 22:00 after
    berlin = PeriodConfig(reset_day=29, timezone="Europe/Berlin")
    start, end = period_bounds(berlin, utc(2026, 4, 10, 12))
    assert (start, end) == (utc(2026, 3, 28, 23), utc(2026, 4, 28, 22))
    assert end - start == timedelta(days=31, hours=-1)
    # one second before local midnight of the 29th is still the previous period, which began on
    # 28 February (2026 has no 29 February) at 00:00 CET
    assert period_bounds(berlin, utc(2026, 3, 28, 22, 59, 59)) == (utc(2026, 2, 27, 23), utc(2026, 3, 28, 23))

    monthly = PeriodConfig(reset_day=1, timezone="Europe/Berlin")
    assert period_bounds(monthly, utc(2026, 3, 15)) == (utc(2026, 2, 28, 23), utc(2026, 3, 31, 22))


def test_new_york_midnight_reset_across_fall_back():
    # 1 November 2026 clocks go 02:00 EDT -> 01:00 EST; midnight that day is still EDT (04:00 UTC)
    ny = PeriodConfig(reset_day=1, timezone="America/New_York")
    assert period_bounds(ny, utc(2026, 10, 20)) == (utc(2026, 10, 1, 4), utc(2026, 11, 1, 4))
    start, end = period_bounds(ny, utc(2026, 11, 10))
    assert (start, end) == (utc(2026, 11, 1, 4), utc(2026, 12, 1, 5))
    assert end - start == timedelta(days=30, hours=1)
    # 23:59:59 EDT on 31 October is still October's period
    assert period_bounds(ny, utc(2026, 11, 1, 3, 59, 59))[1] == utc(2026, 11, 1, 4)


def test_ambiguous_local_reset_is_the_first_occurrence():
    # 01:30 happens twice on 1 November 2026 in New York: first at 05:30 UTC (EDT)
    ny = PeriodConfig(reset_day=1, timezone="America/New_York", reset_time="01:30")
    assert period_bounds(ny, utc(2026, 11, 15)) == (utc(2026, 11, 1, 5, 30), utc(2026, 12, 1, 6, 30))


def test_nonexistent_local_reset_moves_forward_by_the_gap():
    # 02:30 does not exist on 29 March 2026 in Berlin: it is read as 03:30 CEST = 01:30 UTC
    berlin = PeriodConfig(reset_day=29, timezone="Europe/Berlin", reset_time="02:30")
    assert period_bounds(berlin, utc(2026, 4, 1)) == (utc(2026, 3, 29, 1, 30), utc(2026, 4, 29, 0, 30))
    # Chile skipped local midnight on 8 September 2024 (00:00 -> 01:00): the reset is 01:00 -03
    santiago = PeriodConfig(reset_day=8, timezone="America/Santiago")
    assert period_bounds(santiago, utc(2024, 9, 20))[0] == utc(2024, 9, 8, 4)


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        period_bounds(PeriodConfig(), datetime(2026, 6, 1))


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize(("pattern", "model", "expected"), [
    ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", True),
    ("claude-sonnet-4-5", "claude-sonnet-4-5", True),
    ("claude-sonnet-4-5", "claude-sonnet-4-5@20250929", True),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20250929", True),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5", False),
    ("claude-sonnet-4", "claude-sonnet-4-5", False),
    ("claude-sonnet-4", "claude-sonnet-4-5-20250929", False),
    ("claude-sonnet-4", "claude-sonnet-4-20250514", True),
    ("claude-sonnet-4-5", "claude-sonnet-4-5-1m", False),
    ("claude-opus-4-6", "claude-sonnet-4-6", False),
    # the names pricing reads the same way: -latest, dots, Bedrock and Vertex spellings
    ("claude-sonnet-4-5", "claude-sonnet-4-5-latest", True),
    ("claude-sonnet-4-5", "claude-sonnet-4.5", True),
    ("claude-sonnet-4-5", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", True),
    ("claude-sonnet-4-5-20250929", "global.anthropic.claude-sonnet-4-5-20250929-v1:0", True),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5@20250929", True),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20260101", False),
    ("claude-opus-4-6", "global.anthropic.claude-opus-4-6-v1", True),
    ("claude-opus-4-6", "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-opus-4-6-v1",
     True),
    ("claude-sonnet-4", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", False),
    ("claude-sonnet-4-0", "claude-sonnet-4-20250514", True),
    ("claude-opus-4", "claude-opus-4-1-20250805", False),
])
def test_model_names_match_their_dated_ids(pattern, model, expected):
    assert matches_model(pattern, model) is expected


@pytest.mark.parametrize("model", [
    "claude-sonnet-4-5-latest", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5@20250929",
    "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "global.anthropic.claude-opus-4-6-v1", "claude-opus-4-0",
    "claude-mythos-5-1-20261001", "claude-3-5-haiku-latest",
])
def test_pools_and_pricing_read_a_model_name_alike(model):
    """A pool naming the model's priced label takes the model: one reader of names for both."""
    from exporter.prices import load_pricer

    label = load_pricer().model_label(model)
    assert label != "other"
    assert matches_model(label, model), (label, model)


def test_matcher_estimated_rows_need_sources_and_are_narrowed():
    m = PoolMatcher(PoolMatch(sources=("claude-code",), entrypoints=("sdk-cli", "sdk-py"),
                              models=("claude-sonnet-4-5",)))
    assert m.matches_estimated("claude-code", "claude-sonnet-4-5-20250929", "sdk-cli")
    assert not m.matches_estimated("claude-code", "claude-sonnet-4-5-20250929", "cli")
    assert not m.matches_estimated("claude-code", "claude-sonnet-4-5-20250929", "")
    assert not m.matches_estimated("token-metrics", "claude-sonnet-4-5", "sdk-cli")
    assert not m.matches_estimated("claude-code", "claude-opus-4-6", "sdk-py")
    # no workspaces or keys: no billed spend at all
    assert not m.takes_billed and m.billed_basis == "none"
    assert not m.matches_cost(None, "claude-sonnet-4-5")
    assert not m.matches_usage(None, None, "claude-sonnet-4-5")


def test_matcher_empty_lists_put_no_limit():
    m = PoolMatcher(PoolMatch(sources=("logs",)))
    assert m.matches_estimated("logs", "anything-at-all", "")
    assert m.matches_estimated("logs", "claude-haiku-4-5", "claude-vscode")


def test_matcher_billed_rows_and_the_default_workspace():
    m = PoolMatcher(PoolMatch(workspaces=("default", "wrkspc_01A")))
    assert m.billed_basis == "cost_report" and not m.takes_estimated
    assert m.matches_cost(None, "claude-opus-4-6")
    assert m.matches_cost("wrkspc_01A", "claude-opus-4-6")
    assert not m.matches_cost("wrkspc_01B", "claude-opus-4-6")
    assert m.matches_usage(None, "apikey_x", "claude-opus-4-6")
    # log rows never count for a pool without sources
    assert not m.matches_estimated("claude-code", "claude-opus-4-6", "cli")


def test_matcher_api_keys_without_workspaces_bill_from_the_usage_report():
    m = PoolMatcher(PoolMatch(api_keys=("apikey_01",), models=("claude-haiku-4-5",)))
    assert m.billed_basis == "usage_report"
    assert not m.matches_cost(None, "claude-haiku-4-5")  # the cost report cannot split by key
    assert m.matches_usage("wrkspc_01A", "apikey_01", "claude-haiku-4-5-20251001")
    assert not m.matches_usage("wrkspc_01A", "apikey_02", "claude-haiku-4-5")
    assert not m.matches_usage("wrkspc_01A", None, "claude-haiku-4-5")
    assert not m.matches_usage("wrkspc_01A", "apikey_01", "claude-opus-4-6")


# --------------------------------------------------------------------------- one shared scenario

NOW = utc(2026, 6, 10, 14, 30)  # period 2026-06-01 .. 2026-07-01 for reset_day 1, UTC

BILLED = {
    date(2026, 5, 31): D("50"),  # previous period
    date(2026, 6, 1): D("10"),
    date(2026, 6, 5): D("20"),
    date(2026, 6, 8): D("8"),
    date(2026, 6, 9): D("4"),  # after the cutoff: partial, must not count in spend or drift
}
CUTOFF = date(2026, 6, 8)
ESTIMATED = {
    utc(2026, 5, 31, 10): D("40"),  # previous period
    utc(2026, 6, 1, 9): D("6"),
    utc(2026, 6, 1, 15): D("5"),
    utc(2026, 6, 5, 10): D("22"),
    utc(2026, 6, 7, 10): D("3"),  # no billed entry that day: not in the drift
    utc(2026, 6, 8, 10): D("9.9"),
    utc(2026, 6, 9, 8): D("2"),
    utc(2026, 6, 9, 20): D("3"),
    utc(2026, 6, 10, 11): D("1.2"),
    utc(2026, 6, 10, 12): D("0.9"),
    utc(2026, 6, 10, 13): D("0.6"),
    utc(2026, 6, 10, 14): D("0.3"),
}
USAGE = {
    utc(2026, 5, 31, 9): D("48"),
    utc(2026, 6, 1, 9): D("9.5"),
    utc(2026, 6, 5, 10): D("19"),
    utc(2026, 6, 8, 10): D("8.5"),
    utc(2026, 6, 9, 12): D("4.4"),
    utc(2026, 6, 10, 12): D("2.2"),
    utc(2026, 6, 10, 14): D("0.4"),
}


def test_both_workspaces_and_logs_hybrid_spend_to_the_cent():
    p = pool(workspaces=("wrkspc_01A",), sources=("claude-code",))
    s = compute_pool(p, PoolInputs(BILLED, CUTOFF, USAGE, ESTIMATED), NOW)
    assert (s.period_start, s.period_end) == (utc(2026, 6, 1), utc(2026, 7, 1))
    assert s.billed_basis == "cost_report" and s.estimate_basis == "logs"
    assert dict(s.billed) == {"today": D("0"), "yesterday": D("4"), "period": D("42")}
    assert dict(s.estimated) == {"today": D("3.0"), "yesterday": D("5"), "period": D("53.9")}
    # drift over 1, 5 and 8 June: (6+5 + 22 + 9.9) / (10 + 20 + 8) = 42.9 / 38
    assert s.drift["period"].quantize(D("0.0001")) == D("1.1289")
    assert s.drift["yesterday"] is None  # 9 June is not complete yet
    # spend = 38 billed + (2+3+1.2+0.9+0.6+0.3) / (42.9/38) = 38 + 7.086247 = 45.086247
    assert s.billed_through == CUTOFF
    assert s.spend_billed == D("38")
    assert cents(s.spend_estimated) == D("7.09")
    assert cents(s.spend) == D("45.09")
    assert cents(s.remaining) == D("154.91")
    assert s.remaining_ratio.quantize(D("0.0001")) == D("0.7746")
    # burn: hours 11:00..14:00 (3.0 raw, 3.0*38/42.9 calibrated) over the 3.5 h since 11:00
    assert s.burn_rate_per_hour.quantize(D("0.000001")) == D("0.759241")
    # 154.913753 / 0.759241 = 204.037719 h after now
    assert utc(2026, 6, 19, 2, 32, 15) <= s.exhaustion <= utc(2026, 6, 19, 2, 32, 16)
    # 489.5 h left in June at the burn rate: 45.086247 + 371.648 = 416.73
    assert cents(s.projected_spend) == D("416.73")
    assert not s.breaker_open_by_threshold


def test_drift_direction_an_overstating_estimate_is_scaled_down():
    p = pool("100", workspaces=("w",), sources=("s",))
    inputs = PoolInputs(
        billed_by_day={date(2026, 6, 1): D("10")}, billed_complete_through=date(2026, 6, 1),
        estimated_by_hour={utc(2026, 6, 1, 5): D("20"), utc(2026, 6, 2, 5): D("6")},
    )
    s = compute_pool(p, inputs, utc(2026, 6, 2, 6))
    assert s.drift["period"] == D("2") and s.drift["yesterday"] == D("2")
    assert s.calibration == D("2")
    assert s.spend == D("13")  # 10 billed + 6 estimated / 2


def test_drift_yesterday_when_yesterday_is_complete():
    p = pool(workspaces=("w",), sources=("s",))
    s = compute_pool(p, PoolInputs(BILLED, date(2026, 6, 9), USAGE, ESTIMATED), NOW)
    assert s.drift["yesterday"] == D("1.25")  # 5 / 4
    # period now includes 9 June: (42.9 + 5) / (38 + 4) = 47.9 / 42
    assert s.drift["period"].quantize(D("0.0001")) == D("1.1405")
    # 42 billed + 3.0 today / (47.9/42) = 42 + 2.630480
    assert cents(s.spend) == D("44.63")


def test_only_logs_uses_the_estimate_alone():
    p = pool(sources=("claude-code",))
    s = compute_pool(p, PoolInputs(BILLED, CUTOFF, USAGE, ESTIMATED), NOW)
    assert s.billed_basis == "none" and s.billed is None
    assert s.drift == {"yesterday": None, "period": None} and s.calibration is None
    assert s.spend == D("53.9") and s.spend_billed == D("0")
    assert s.remaining == D("146.1")
    assert s.burn_rate_per_hour.quantize(D("0.000001")) == D("0.857143")  # 3.0 / 3.5


def test_only_workspaces_uses_billed_then_usage_at_list_price():
    p = pool(workspaces=("wrkspc_01A",))
    s = compute_pool(p, PoolInputs(BILLED, CUTOFF, USAGE, ESTIMATED), NOW)
    assert s.billed_basis == "cost_report" and s.estimate_basis == "usage_report"
    assert dict(s.estimated) == {"today": D("2.6"), "yesterday": D("4.4"), "period": D("44.0")}
    # drift = (9.5 + 19 + 8.5) / 38 = 37/38; spend = 38 + 7.0 * 38/37
    assert s.drift["period"].quantize(D("0.0001")) == D("0.9737")
    assert cents(s.spend) == D("45.19")
    assert cents(s.remaining) == D("154.81")


def test_api_keys_without_workspaces_bill_entirely_from_the_usage_report():
    p = pool(api_keys=("apikey_01",))
    s = compute_pool(p, PoolInputs({}, CUTOFF, USAGE, {}), NOW)
    assert s.billed_basis == "usage_report"
    assert dict(s.billed) == {"today": D("2.6"), "yesterday": D("4.4"), "period": D("44.0")}
    assert s.drift["period"] == D("1")
    assert s.spend == D("44.0")


def test_a_pool_with_no_spend():
    p = pool(workspaces=("w",), sources=("s",))
    s = compute_pool(p, PoolInputs(), NOW)
    assert s.spend == D("0") and s.remaining == D("200") and s.remaining_ratio == D("1")
    assert dict(s.billed) == {"today": D("0"), "yesterday": D("0"), "period": D("0")}
    assert s.drift == {"yesterday": None, "period": None}
    assert s.burn_rate_per_hour == D("0") and s.exhaustion is None
    assert s.projected_spend == D("0") and not s.breaker_open_by_threshold


def test_zero_bill_leaves_drift_undefined():
    p = pool(workspaces=("w",), sources=("s",))
    inputs = PoolInputs({date(2026, 6, 9): D("0")}, date(2026, 6, 9), {}, {utc(2026, 6, 9, 3): D("2")})
    s = compute_pool(p, inputs, NOW)
    assert s.drift["yesterday"] is None and s.drift["period"] is None
    assert s.spend == D("0")  # billed 0 for the 9th; nothing after the cutoff


def test_first_minutes_of_a_utc_period():
    p = pool(reset_day=15, workspaces=("w",), sources=("s",))
    inputs = PoolInputs(
        billed_by_day={date(2026, 6, 13): D("30")}, billed_complete_through=date(2026, 6, 13),
        estimated_by_hour={utc(2026, 6, 13, 9): D("33"), utc(2026, 6, 14, 23): D("5"),
                           utc(2026, 6, 15, 0): D("0.40")},
    )
    s = compute_pool(p, inputs, utc(2026, 6, 15, 0, 5))
    assert s.period_start == utc(2026, 6, 15)
    assert s.spend == D("0.40")  # the previous period's drift does not calibrate this one
    assert s.billed_through is None and s.spend_billed == D("0")
    assert dict(s.billed) == {"today": D("0"), "yesterday": D("0"), "period": D("0")}
    assert s.remaining == D("199.60")


def test_first_minutes_of_a_berlin_period_count_hours_exactly():
    # 15 June 00:00 CEST = 14 June 22:00 UTC
    p = pool(reset_day=15, tz="Europe/Berlin", sources=("s",))
    inputs = PoolInputs(estimated_by_hour={utc(2026, 6, 14, 21): D("2"), utc(2026, 6, 14, 22): D("0.30")})
    s = compute_pool(p, inputs, utc(2026, 6, 14, 22, 5))
    assert s.period_start == utc(2026, 6, 14, 22)
    assert s.spend == D("0.30")


def test_billed_days_go_to_the_period_holding_their_utc_noon():
    # New York: October starts 1 Oct 04:00 UTC, so the UTC day 1 October (noon 12:00 UTC) is October's
    ny = pool(tz="America/New_York", workspaces=("w",))
    billed = {date(2026, 9, 30): D("7"), date(2026, 10, 1): D("11"), date(2026, 10, 2): D("13")}
    s = compute_pool(ny, PoolInputs(billed, date(2026, 10, 2)), utc(2026, 10, 3, 12))
    assert s.billed["period"] == D("24") and s.spend == D("24")
    # Berlin: March starts 28 Feb 23:00 UTC; 28 Feb's noon is February's, 1 March is March's
    berlin = pool(tz="Europe/Berlin", workspaces=("w",))
    billed = {date(2026, 2, 28): D("7"), date(2026, 3, 1): D("11")}
    s = compute_pool(berlin, PoolInputs(billed, date(2026, 3, 1)), utc(2026, 3, 2, 12))
    assert s.billed["period"] == D("11") and s.spend == D("11")


def test_half_hour_zone_hours_go_by_their_midpoint():
    # Kolkata (+05:30): 1 July 00:00 IST = 30 June 18:30 UTC; the 18:00 hour's midpoint is 18:30
    p = pool(tz="Asia/Kolkata", sources=("s",))
    inputs = PoolInputs(estimated_by_hour={utc(2026, 6, 30, 17): D("4"), utc(2026, 6, 30, 18): D("1.5")})
    s = compute_pool(p, inputs, utc(2026, 6, 30, 19))
    assert s.period_start == utc(2026, 6, 30, 18, 30)
    assert s.spend == D("1.5")


def test_projection_counts_the_real_hours_left_across_dst():
    # Berlin, March: ends 31 March 22:00 UTC (00:00 CEST), 166 h after 25 March 00:00 UTC
    p = pool("500", tz="Europe/Berlin", sources=("s",))
    inputs = PoolInputs(estimated_by_hour={utc(2026, 3, 24, h): D("1") for h in (21, 22, 23)})
    s = compute_pool(p, inputs, utc(2026, 3, 25))
    assert s.period_end == utc(2026, 3, 31, 22)
    assert s.burn_rate_per_hour == D("1")
    assert s.projected_spend == D("169")  # 3 spent + 166 h x $1
    assert s.exhaustion == utc(2026, 3, 25) + timedelta(hours=497)


@pytest.mark.parametrize(("spent", "is_open"), [
    ("94.99", False),
    ("95.00", False),  # remaining/credit == 0.05 exactly: not below
    ("95.01", True),   # 0.0499
    ("120", True),     # overage
])
def test_breaker_threshold_edge(spent, is_open):
    p = pool("100", open_below="0.05", sources=("s",))
    s = compute_pool(p, PoolInputs(estimated_by_hour={utc(2026, 6, 2, 3): D(spent)}), utc(2026, 6, 10))
    assert s.breaker_open_by_threshold is is_open


def test_overage_is_negative_remaining_and_exhaustion_is_now():
    p = pool("20", sources=("s",))
    s = compute_pool(p, PoolInputs(estimated_by_hour={utc(2026, 6, 2, 3): D("25.5")}), utc(2026, 6, 10))
    assert s.remaining == D("-5.5") and s.remaining_ratio == D("-0.275")
    assert s.exhaustion == utc(2026, 6, 10)
    assert s.burn_rate_per_hour == D("0")
    assert s.breaker_open_by_threshold


def test_future_cutoff_is_clamped_to_yesterday():
    # a cost report that claims today complete must not hide today's estimate
    p = pool(workspaces=("w",), sources=("s",))
    inputs = PoolInputs({date(2026, 6, 10): D("99")}, date(2026, 6, 10), {}, {utc(2026, 6, 10, 9): D("1")})
    s = compute_pool(p, inputs, NOW)
    assert s.spend == D("1")


# --------------------------------------------------------------------------- invariants

ZONES = ("UTC", "Europe/Berlin", "America/New_York", "America/Santiago", "Asia/Kolkata", "Australia/Lord_Howe")


@settings(max_examples=examples(300), deadline=None)
@given(
    now=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)),
    reset_day=st.integers(1, 31),
    zone=st.sampled_from(ZONES),
    reset_time=st.sampled_from(("00:00", "01:30", "02:30", "23:59")),
)
def test_periods_tile_time_and_every_utc_day_belongs_to_exactly_one(now, reset_day, zone, reset_time):
    period = PeriodConfig(reset_day, zone, reset_time)
    start, end = period_bounds(period, now)
    assert start <= now < end
    assert timedelta(days=27) < end - start < timedelta(days=32)
    assert period_bounds(period, end)[0] == end  # the next period starts where this one ends
    assert period_bounds(period, start - timedelta(microseconds=1))[1] == start
    prev_start = period_bounds(period, start - timedelta(microseconds=1))[0]
    day = now.date()
    owners = [(s, e) for s, e in ((prev_start, start), (start, end), (end, period_bounds(period, end)[1]))
              if day_in_period(day, s, e)]
    assert len(owners) == 1
