"""Prices a user is billed: each expected figure is worked out by hand from the list prices.

Dates matter: the 4.6 long-context premium ends on 2026-03-13, the Sonnet 4 one on
2026-04-30, Opus 4.6 fast mode runs from 2026-02-07 until 2026-06-29, Sonnet 5.5's cache
read drops on 2026-10-07 and genai-prices lists batch prices from 2026-10-14, so the
tests price on days either side of those changes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price
from genai_prices import data_snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config import PriceOverride
from exporter.core.pricing import ModelPrices, Pricer, Rates
from exporter.prices import load_pricer
from exporter.core.records import Tokens
from tests.conftest import examples

JUNE = datetime(2026, 6, 1, 12, tzinfo=UTC).timestamp()  # after 2026-03-13, before batch variants
NOVEMBER = datetime(2026, 11, 2, 8, tzinfo=UTC).timestamp()  # genai-prices batch variants in force
FEBRUARY = datetime(2026, 2, 1, tzinfo=UTC).timestamp()  # genai-prices still has the 4.6 tiers
M = Decimal(10**6)


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return load_pricer()


def usd(pricer: Pricer, model: str, tokens: Tokens, when: float = JUNE, **kw: str) -> Decimal | None:
    cost = pricer.cost_usd(model, tokens, when=when, **kw)
    pico = pricer.cost_pico(model, tokens, when=when, **kw)
    assert (cost is None) == (pico is None)
    if cost is not None:
        assert cost == Decimal(pico) / 10**12  # the two forms agree exactly
        assert isinstance(pico, int)
    return cost


def test_sonnet_4_5_plain_request(pricer: Pricer) -> None:
    tokens = Tokens(input=1_000, output=500, cache_read=20_000, cache_write_5m=3_000)
    expected = (1_000 * Decimal("3") + 500 * Decimal("15") + 20_000 * Decimal("0.3")
                + 3_000 * Decimal("3.75")) / M
    assert expected == Decimal("0.02775")
    assert usd(pricer, "claude-sonnet-4-5", tokens) == expected
    assert pricer.cost_pico("claude-sonnet-4-5", tokens, when=JUNE) == 27_750_000_000


def test_cache_writes_5m_and_1h_have_their_own_prices(pricer: Pricer) -> None:
    five = usd(pricer, "claude-sonnet-4-5", Tokens(cache_write_5m=10_000))
    hour = usd(pricer, "claude-sonnet-4-5", Tokens(cache_write_1h=10_000))
    assert five == 10_000 * Decimal("3.75") / M == Decimal("0.0375")
    assert hour == 10_000 * Decimal("6") / M == Decimal("0.06")
    # opus 4.1: 18.75 and 30 per MTok
    assert usd(pricer, "claude-opus-4-1-20250805", Tokens(cache_write_5m=1_000, cache_write_1h=1_000)) == (
        1_000 * Decimal("18.75") + 1_000 * Decimal("30")) / M


def test_long_context_cliff_at_200k_charges_every_token_at_premium(pricer: Pricer) -> None:
    at_limit = Tokens(input=1, cache_read=199_999, output=1_000)  # total input exactly 200,000
    over = Tokens(input=2, cache_read=199_999, output=1_000)  # 200,001
    assert usd(pricer, "claude-sonnet-4-5-20250929", at_limit) == (
        1 * Decimal("3") + 199_999 * Decimal("0.3") + 1_000 * Decimal("15")) / M == Decimal("0.0750027")
    assert usd(pricer, "claude-sonnet-4-5-20250929", over) == (
        2 * Decimal("6") + 199_999 * Decimal("0.6") + 1_000 * Decimal("22.5")) / M == Decimal("0.1425114")


def test_cliff_counts_cache_writes_as_input(pricer: Pricer) -> None:
    tokens = Tokens(input=1, cache_write_5m=100_000, cache_write_1h=100_000, output=10)  # 200,001
    assert usd(pricer, "claude-sonnet-4-5", tokens) == (
        1 * Decimal("6") + 100_000 * Decimal("7.5") + 100_000 * Decimal("12") + 10 * Decimal("22.5")) / M


def test_output_alone_does_not_trip_the_cliff(pricer: Pricer) -> None:
    tokens = Tokens(input=100_000, output=150_000)
    assert usd(pricer, "claude-sonnet-4-5", tokens) == (100_000 * Decimal("3") + 150_000 * Decimal("15")) / M


def day(text: str, hms: str = "12:00:00") -> float:
    return datetime.fromisoformat(f"{text}T{hms}+00:00").timestamp()


def test_opus_4_6_premium_past_200k_ends_on_2026_03_13(pricer: Pricer) -> None:
    tokens = Tokens(input=250_000, output=10_000)
    premium = (250_000 * Decimal("10") + 10_000 * Decimal("37.5")) / M
    standard = (250_000 * Decimal("5") + 10_000 * Decimal("25")) / M
    assert premium == Decimal("2.875") and standard == Decimal("1.5")
    assert usd(pricer, "claude-opus-4-6", tokens, day("2026-03-12", "23:59:59")) == premium
    assert usd(pricer, "claude-opus-4-6", tokens, day("2026-03-13", "00:00:00")) == standard
    assert usd(pricer, "claude-opus-4-6", tokens, NOVEMBER) == standard
    # at the threshold itself: no premium on either side
    assert usd(pricer, "claude-opus-4-6", Tokens(input=200_000, output=10_000), FEBRUARY) == (
        200_000 * Decimal("5") + 10_000 * Decimal("25")) / M


def test_sonnet_4_6_300k_request_in_april_costs_the_standard_price(pricer: Pricer) -> None:
    """The issue's own example: a 300k-token Sonnet 4.6 request in April 2026."""
    tokens = Tokens(input=20_000, cache_read=280_000, output=2_000)
    assert usd(pricer, "claude-sonnet-4-6", tokens, day("2026-04-10")) == (
        20_000 * Decimal("3") + 280_000 * Decimal("0.3") + 2_000 * Decimal("15")) / M == Decimal("0.174")
    assert usd(pricer, "claude-sonnet-4-6", tokens, day("2026-03-12")) == (
        20_000 * Decimal("6") + 280_000 * Decimal("0.6") + 2_000 * Decimal("22.5")) / M == Decimal("0.333")


def test_sonnet_4_and_4_5_keep_the_premium_until_their_1m_beta_ends(pricer: Pricer) -> None:
    tokens = Tokens(input=200_001, output=1_000)
    premium = (200_001 * Decimal("6") + 1_000 * Decimal("22.5")) / M
    standard = (200_001 * Decimal("3") + 1_000 * Decimal("15")) / M
    for model in ("claude-sonnet-4-20250514", "claude-sonnet-4-0", "claude-sonnet-4-5-20250929"):
        assert usd(pricer, model, tokens, day("2026-04-29", "23:59:59")) == premium, model
    assert usd(pricer, "claude-sonnet-4-6", tokens, day("2026-04-29")) == standard
    # from 2026-04-30 Anthropic refuses such requests; Sonnet 4's correction ends there
    assert usd(pricer, "claude-sonnet-4-20250514", tokens, day("2026-04-30", "00:00:00")) == standard


def test_models_without_a_cliff_stay_flat(pricer: Pricer) -> None:
    tokens = Tokens(input=500_000, output=1_000)
    assert usd(pricer, "claude-opus-4-8", tokens) == (500_000 * Decimal("5") + 1_000 * Decimal("25")) / M


def test_haiku_5_5_cliff_is_100k(pricer: Pricer) -> None:
    assert usd(pricer, "claude-haiku-5-5", Tokens(input=100_000, output=1_000)) == (
        100_000 * Decimal("0.1") + 1_000 * Decimal("0.5")) / M == Decimal("0.0105")
    assert usd(pricer, "claude-haiku-5-5", Tokens(input=100_001, output=1_000)) == (
        100_001 * Decimal("0.5") + 1_000 * Decimal("2.5")) / M == Decimal("0.0525005")


def test_us_inference_is_1_1x_on_4_6_and_later_only(pricer: Pricer) -> None:
    tokens = Tokens(input=1_000, output=1_000, cache_read=10_000)
    sonnet = (1_000 * Decimal("3") + 1_000 * Decimal("15") + 10_000 * Decimal("0.3")) / M
    assert usd(pricer, "claude-sonnet-4-6", tokens, inference_geo="us") == sonnet * Decimal("1.1") == Decimal(
        "0.0231")
    assert usd(pricer, "claude-sonnet-4-6", tokens, inference_geo="global") == sonnet
    assert usd(pricer, "claude-sonnet-4-5", tokens, inference_geo="us") == sonnet
    for later in ("claude-opus-4-6", "claude-opus-4-7", "claude-opus-4-8", "claude-sonnet-5", "claude-haiku-5-5",
                  "claude-fable-5", "claude-mythos-5-2"):
        assert usd(pricer, later, tokens, inference_geo="us") == usd(pricer, later, tokens) * Decimal("1.1"), later
    for earlier in ("claude-opus-4-5", "claude-haiku-4-5", "claude-opus-4-1", "claude-3-5-haiku-20241022"):
        assert usd(pricer, earlier, tokens, inference_geo="us") == usd(pricer, earlier, tokens), earlier


def test_us_inference_multiplies_the_long_context_premium(pricer: Pricer) -> None:
    tokens = Tokens(input=200_001, output=100)
    assert usd(pricer, "claude-opus-4-6", tokens, FEBRUARY, inference_geo="us") == (
        200_001 * Decimal("10") + 100 * Decimal("37.5")) / M * Decimal("1.1")


@pytest.mark.parametrize("when", [JUNE, NOVEMBER])
def test_batch_is_half_price_before_and_after_genai_lists_it(pricer: Pricer, when: float) -> None:
    tokens = Tokens(input=1_000, output=1_000, cache_read=4_000, cache_write_1h=2_000, web_search_requests=1)
    expected = (1_000 * Decimal("1.5") + 1_000 * Decimal("7.5") + 4_000 * Decimal("0.15")
                + 2_000 * Decimal("3")) / M + Decimal("10") / 1_000  # web search has no batch rate
    assert usd(pricer, "claude-sonnet-4-5", tokens, when, service_tier="batch") == expected
    assert usd(pricer, "claude-sonnet-4-5", tokens, when, service_tier="priority") == (
        1_000 * Decimal("3") + 1_000 * Decimal("15") + 4_000 * Decimal("0.3") + 2_000 * Decimal("6")) / M + Decimal(
        "0.01")


def test_batch_past_the_cliff_and_on_retired_models(pricer: Pricer) -> None:
    assert usd(pricer, "claude-sonnet-4-5", Tokens(input=200_001, output=10), NOVEMBER, service_tier="batch") == (
        200_001 * Decimal("3") + 10 * Decimal("11.25")) / M
    assert usd(pricer, "claude-sonnet-4-6", Tokens(input=200_001, output=10), FEBRUARY, service_tier="batch") == (
        200_001 * Decimal("3") + 10 * Decimal("11.25")) / M
    # genai-prices has no batch variant for Opus 4.1 at all
    assert usd(pricer, "claude-opus-4-1", Tokens(input=1_000, output=1_000), service_tier="batch") == (
        1_000 * Decimal("7.5") + 1_000 * Decimal("37.5")) / M


def test_web_search_is_10_dollars_per_thousand(pricer: Pricer) -> None:
    assert usd(pricer, "claude-sonnet-4-5", Tokens(web_search_requests=3)) == 3 * Decimal("10") / 1_000
    assert usd(pricer, "claude-sonnet-4-6", Tokens(web_search_requests=3), inference_geo="us") == Decimal("0.033")


def test_fast_mode(pricer: Pricer) -> None:
    tokens = Tokens(input=1_000, output=1_000)
    # Opus 5 and 4.8: 10 / 50; Opus 5.5: 8 / 40
    for model in ("claude-opus-4-8", "claude-opus-5"):
        assert usd(pricer, model, tokens, NOVEMBER, speed="fast") == (
            1_000 * Decimal(10) + 1_000 * Decimal(50)) / M, model
    assert usd(pricer, "claude-opus-5-5", tokens, NOVEMBER, speed="fast") == (
        1_000 * Decimal(8) + 1_000 * Decimal(40)) / M
    # no fast prices: standard
    assert usd(pricer, "claude-sonnet-4-5", tokens, speed="fast") == usd(pricer, "claude-sonnet-4-5", tokens)


def test_opus_4_6_fast_mode_from_2026_02_07_until_2026_06_29(pricer: Pricer) -> None:
    tokens = Tokens(input=1_000, output=1_000)
    fast = (1_000 * Decimal(30) + 1_000 * Decimal(150)) / M
    standard = (1_000 * Decimal(5) + 1_000 * Decimal(25)) / M
    assert usd(pricer, "claude-opus-4-6", tokens, day("2026-02-06", "23:59:59"), speed="fast") == standard
    assert usd(pricer, "claude-opus-4-6", tokens, day("2026-02-07", "00:00:00"), speed="fast") == fast
    assert usd(pricer, "claude-opus-4-6", tokens, day("2026-06-28", "23:59:59"), speed="fast") == fast
    assert usd(pricer, "claude-opus-4-6", tokens, day("2026-06-29", "00:00:00"), speed="fast") == standard
    # flat over the whole window, even while the long-context premium was in force
    assert usd(pricer, "claude-opus-4-6", Tokens(input=300_000), day("2026-02-10"), speed="fast") == (
        300_000 * Decimal(30) / M)


def test_model_specific_cache_read_prices(pricer: Pricer) -> None:
    reads = Tokens(cache_read=1_000_000)
    assert usd(pricer, "claude-opus-5-5", reads, NOVEMBER) == Decimal("0.20")  # 0.05x of $4
    assert usd(pricer, "claude-sonnet-5-5", reads, day("2026-10-06", "23:59:59")) == Decimal("0.20")  # 0.1x of $2
    assert usd(pricer, "claude-sonnet-5-5", reads, day("2026-10-07", "00:00:00")) == Decimal("0.10")  # 0.05x
    assert usd(pricer, "claude-fable-5-1", reads, NOVEMBER) == Decimal("0.25")  # 0.025x of $10
    assert usd(pricer, "claude-mythos-5-1", reads, NOVEMBER) == Decimal("0.25")
    assert usd(pricer, "claude-fable-5-2", reads, NOVEMBER) == Decimal("0.20")  # 0.025x of $8
    assert usd(pricer, "claude-sonnet-5", reads, NOVEMBER) == Decimal("0.20")  # 0.1x of $2
    assert usd(pricer, "claude-fable-5", reads, NOVEMBER) == Decimal("1")  # 0.1x of $10


# (model, input, output) in USD per million tokens, from the published price list
FAMILIES = [
    ("claude-opus-4-20250514", "15", "75"), ("claude-opus-4-1-20250805", "15", "75"),
    ("claude-opus-4-5-20251101", "5", "25"), ("claude-opus-4-6", "5", "25"), ("claude-opus-4-7", "5", "25"),
    ("claude-opus-4-8", "5", "25"), ("claude-opus-5", "5", "25"), ("claude-opus-5-5", "4", "20"),
    ("claude-sonnet-4-20250514", "3", "15"), ("claude-sonnet-4-5-20250929", "3", "15"),
    ("claude-sonnet-4-6", "3", "15"), ("claude-sonnet-5", "2", "10"), ("claude-sonnet-5-5", "2", "10"),
    ("claude-haiku-4-5-20251001", "1", "5"), ("claude-3-5-haiku-20241022", "0.80", "4"),
    ("claude-haiku-5-5", "0.10", "0.50"), ("claude-fable-5", "10", "50"), ("claude-mythos-5", "10", "50"),
    ("claude-mythos-5-1", "10", "50"), ("claude-mythos-preview", "10", "50"), ("claude-fable-5-1", "10", "50"),
    ("claude-fable-5-2", "8", "40"),
]


@pytest.mark.parametrize(("model", "inp", "out"), FAMILIES)
def test_each_family_at_its_list_price(pricer: Pricer, model: str, inp: str, out: str) -> None:
    tokens = Tokens(input=10_000, output=2_000, cache_write_5m=1_000, cache_write_1h=1_000)
    expected = (10_000 * Decimal(inp) + 2_000 * Decimal(out) + 1_000 * Decimal(inp) * Decimal("1.25")
                + 1_000 * Decimal(inp) * 2) / M
    assert usd(pricer, model, tokens, NOVEMBER) == expected


def test_mythos_models_are_priced_not_other(pricer: Pricer) -> None:
    for model in ("claude-mythos-5", "claude-mythos-5-1", "claude-mythos-preview", "claude-mythos-5-1-20261001"):
        assert pricer.known(model), model
    assert pricer.model_label("claude-mythos-5-1-20261001") == "claude-mythos-5-1"
    assert pricer.model_label("claude-mythos-preview") == "claude-mythos-preview"


def test_bedrock_ids(pricer: Pricer) -> None:
    tokens = Tokens(input=10_000, output=1_000, cache_read=100_000)
    sonnet = (10_000 * Decimal(3) + 1_000 * Decimal(15) + 100_000 * Decimal("0.3")) / M
    # a regional (in-geography) Bedrock endpoint costs 10% more than the global one
    assert usd(pricer, "us.anthropic.claude-sonnet-4-5-20250929-v1:0", tokens, NOVEMBER) == sonnet * Decimal("1.1")
    assert usd(pricer, "eu.anthropic.claude-sonnet-4-5-20250929-v1:0", tokens, NOVEMBER) == sonnet * Decimal("1.1")
    assert usd(pricer, "anthropic.claude-sonnet-4-5-20250929-v1:0", tokens, NOVEMBER) == sonnet * Decimal("1.1")
    assert usd(pricer, "global.anthropic.claude-sonnet-4-5-20250929-v1:0", tokens, NOVEMBER) == sonnet
    opus = (10_000 * Decimal(5) + 1_000 * Decimal(25) + 100_000 * Decimal("0.5")) / M
    assert usd(pricer, "global.anthropic.claude-opus-4-6-v1", tokens, NOVEMBER) == opus
    assert usd(pricer, "us.anthropic.claude-opus-4-6-v1", tokens, NOVEMBER) == opus * Decimal("1.1")
    # before the 1.1x regional surcharge era, older models cost the same in every region
    assert usd(pricer, "us.anthropic.claude-sonnet-4-20250514-v1:0", tokens, NOVEMBER) == sonnet
    # the long-context premium applies on Bedrock too, regional surcharge on top
    big = Tokens(input=250_000, output=1_000)
    assert usd(pricer, "us.anthropic.claude-sonnet-4-5-20250929-v1:0", big, FEBRUARY) == (
        250_000 * Decimal(6) + 1_000 * Decimal("22.5")) / M * Decimal("1.1")
    for model in ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "global.anthropic.claude-opus-4-6-v1",
                  "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-opus-4-6-v1"):
        assert pricer.known(model), model
    assert pricer.model_label("us.anthropic.claude-sonnet-4-5-20250929-v1:0") == "claude-sonnet-4-5"
    assert pricer.model_label("global.anthropic.claude-opus-4-6-v1") == "claude-opus-4-6"


def test_vertex_ids(pricer: Pricer) -> None:
    tokens = Tokens(input=10_000, output=1_000, cache_write_1h=1_000)
    assert usd(pricer, "claude-sonnet-4-5@20250929", tokens, NOVEMBER) == (
        10_000 * Decimal(3) + 1_000 * Decimal(15) + 1_000 * Decimal(6)) / M
    assert usd(pricer, "claude-opus-4-6@20260205", tokens, FEBRUARY) == (
        10_000 * Decimal(5) + 1_000 * Decimal(25) + 1_000 * Decimal(10)) / M
    assert pricer.model_label("claude-sonnet-4-5@20250929") == "claude-sonnet-4-5"
    assert pricer.model_label("claude-3-5-sonnet-v2@20241022") == "claude-3-5-sonnet"


def test_latest_and_dotted_aliases(pricer: Pricer) -> None:
    tokens = Tokens(input=1_000, output=1_000)
    for alias in ("claude-sonnet-4-5-latest", "claude-sonnet-4.5", "CLAUDE-SONNET-4-5-20250929"):
        assert usd(pricer, alias, tokens) == (1_000 * Decimal(3) + 1_000 * Decimal(15)) / M, alias
        assert pricer.model_label(alias) == "claude-sonnet-4-5", alias


def test_dated_ids_match_their_model(pricer: Pricer) -> None:
    tokens = Tokens(input=123, output=45, cache_read=6_789)
    for model, dated in [("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
                         ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),
                         ("claude-opus-4-1", "claude-opus-4-1-20250805"),
                         ("claude-sonnet-4-0", "claude-sonnet-4-20250514")]:
        assert usd(pricer, dated, tokens) == usd(pricer, model, tokens)
        assert pricer.model_label(dated) == model
        assert pricer.known(dated)
    assert pricer.model_label("claude-3-5-sonnet-20241022") == "claude-3-5-sonnet"


@pytest.mark.parametrize("model", ["<synthetic>", "", "gpt-4o", "claude-imaginary-9", "claude-opus-9"])
def test_unknown_model_is_none_never_zero(pricer: Pricer, model: str) -> None:
    tokens = Tokens(input=1_000, output=1_000)
    assert pricer.cost_pico(model, tokens, when=JUNE) is None
    assert pricer.cost_usd(model, tokens, when=JUNE) is None
    assert pricer.prices(model, when=JUNE) is None
    assert pricer.model_label(model) == "other"
    assert not pricer.known(model)


def test_config_override_replaces_one_price_and_covers_dated_ids() -> None:
    pricer = load_pricer({"claude-sonnet-4-5": PriceOverride(input=Decimal("2.5"), cache_write_1h=Decimal("5"))})
    tokens = Tokens(input=1_000, output=1_000, cache_write_1h=1_000)
    expected = (1_000 * Decimal("2.5") + 1_000 * Decimal("15") + 1_000 * Decimal("5")) / M
    assert usd(pricer, "claude-sonnet-4-5", tokens) == expected
    assert usd(pricer, "claude-sonnet-4-5-20250929", tokens) == expected
    assert pricer.model_label("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    # batch halves the overridden price too
    assert usd(pricer, "claude-sonnet-4-5", Tokens(input=1_000), service_tier="batch") == 1_000 * Decimal("1.25") / M
    # the override is for that model only
    assert usd(pricer, "claude-sonnet-4-6", Tokens(input=1_000)) == 1_000 * Decimal("3") / M


def test_override_of_a_dated_id_is_for_that_id_and_wins_over_the_family() -> None:
    pricer = load_pricer({"claude-sonnet-4-5": PriceOverride(input=Decimal("2")),
                     "claude-sonnet-4-5-20250929": PriceOverride(input=Decimal("1"))})
    assert usd(pricer, "claude-sonnet-4-5-20250929", Tokens(input=1_000)) == 1_000 * Decimal("1") / M
    assert usd(pricer, "claude-sonnet-4-5-20260101", Tokens(input=1_000)) == 1_000 * Decimal("2") / M
    assert usd(pricer, "claude-sonnet-4-5", Tokens(input=1_000)) == 1_000 * Decimal("2") / M
    assert pricer.model_label("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"


def test_config_override_of_the_long_context_cliff() -> None:
    pricer = load_pricer({"claude-opus-4-8": PriceOverride(long_context_threshold=100_000,
                                                      long_context={"input": Decimal("7")})})
    # input premium from the override; output premium from the default 1.5x of 25
    assert usd(pricer, "claude-opus-4-8-20260101", Tokens(input=100_001, output=10)) == (
        100_001 * Decimal("7") + 10 * Decimal("37.5")) / M
    assert usd(pricer, "claude-opus-4-8", Tokens(input=100_000, output=10)) == (
        100_000 * Decimal("5") + 10 * Decimal("25")) / M


def test_override_adds_a_model_unknown_to_genai_prices() -> None:
    pricer = load_pricer({"acme-coder": PriceOverride(input=Decimal("1.2"), output=Decimal("4.8"),
                                                 cache_read=Decimal("0.12"), web_search=Decimal("5"))})
    tokens = Tokens(input=10_000, output=2_000, cache_read=50_000, cache_write_5m=1_000, web_search_requests=2)
    # 5-minute cache write not given: Anthropic's 1.25x of input
    expected = (10_000 * Decimal("1.2") + 2_000 * Decimal("4.8") + 50_000 * Decimal("0.12")
                + 1_000 * Decimal("1.5")) / M + 2 * Decimal("5") / 1_000
    assert usd(pricer, "acme-coder", tokens) == expected
    assert usd(pricer, "acme-coder-20260101", tokens) == expected
    assert pricer.model_label("acme-coder-20260101") == "acme-coder"
    assert pricer.known("acme-coder")
    # an override without output price cannot price anything
    assert load_pricer({"acme-half": PriceOverride(input=Decimal(1))}).cost_pico("acme-half", tokens, when=JUNE) is None


def test_config_override_is_quantized_to_whole_picodollars_per_token() -> None:
    pricer = load_pricer({"acme": PriceOverride(input=Decimal("0.0000025"), output=Decimal("0.0000035"))})
    prices = pricer.prices("acme", when=JUNE)
    assert prices is not None
    assert prices.base_pico[:2] == (2, 4)  # 2.5 and 3.5 picodollars, half to even
    assert pricer.cost_pico("acme", Tokens(input=1_000, output=1_000), when=JUNE) == 6_000


def test_prices_describe_the_request(pricer: Pricer) -> None:
    p = pricer.prices("claude-sonnet-4-6-20260217", when=FEBRUARY, inference_geo="us")
    assert isinstance(p, ModelPrices)
    assert p.model == "claude-sonnet-4-6"
    assert p.base == Rates(Decimal("3.3"), Decimal("16.5"), Decimal("0.33"), Decimal("4.125"), Decimal("6.6"))
    assert p.long_context_threshold == 200_000
    assert p.long_context is not None and p.long_context.output == Decimal("24.75")
    assert p.web_search == Decimal("11")
    # usage-report tokens come split by context window: the caller can force the premium
    assert p.cost_usd(Tokens(input=1_000), long_context=True) == 1_000 * Decimal("6.6") / M


def _anthropic_models() -> list[str]:
    provider = next(p for p in data_snapshot.get_snapshot().providers if p.id == "anthropic")
    return [m.id for m in provider.models]


@pytest.mark.parametrize("model", _anthropic_models())
def test_every_listed_model_is_priced_exactly(pricer: Pricer, model: str) -> None:
    """Each genai-prices model resolves to its list prices, and batch (0.5x) and US (1.1x) need no rounding."""
    from exporter import prices

    info = next(m for m in data_snapshot.get_snapshot().providers if m.id == "anthropic").find_model(model)
    for when in (FEBRUARY, NOVEMBER):
        corrected = {k for e in prices.shipped().models.get(model, ()) if e.active(int(when // 86_400))
                     for k in ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")
                     if getattr(e.prices, k) is not None}
        p = pricer.prices(model, when=when)
        assert p is not None and p.model == model
        listed = info.get_prices(datetime.fromtimestamp(when, UTC))
        for ours, attr, key in zip(p.base_pico, ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok",
                                                 "cache_write_1h_mtok"),
                                   ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h"), strict=True):
            theirs = getattr(listed, attr, None)
            if theirs is not None and key not in corrected:
                assert Decimal(ours) / 10**6 == getattr(theirs, "base", theirs)
        for x in (*p.base_pico, *(p.long_context_pico or ()), p.web_search_pico):
            assert x % 20 == 0  # so x * 0.5 and x * 1.1 are whole picodollars


@settings(max_examples=examples(300), deadline=None)
@given(
    model=st.sampled_from(["claude-sonnet-4-5-20250929", "claude-haiku-4-5", "claude-opus-4-1", "claude-haiku-5-5",
                           "claude-3-5-haiku-20241022", "claude-opus-5", "claude-fable-5-1", "claude-sonnet-5-5"]),
    inp=st.integers(0, 400_000), out=st.integers(0, 64_000), read=st.integers(0, 400_000),
    w5=st.integers(0, 100_000), w1=st.integers(0, 100_000), searches=st.integers(0, 20),
)
def test_agrees_with_genai_prices_where_the_rules_agree(model: str, inp: int, out: int, read: int, w5: int,
                                                        w1: int, searches: int) -> None:
    """Same figure as genai-prices' own calculator, to the last digit, for models we do not correct."""
    when = datetime(2026, 11, 2, tzinfo=UTC)
    usage = Usage(input_tokens=inp + read + w5 + w1, output_tokens=out, cache_read_tokens=read,
                  cache_write_tokens=w5 + w1, cache_write_5m_tokens=w5, cache_write_1h_tokens=w1,
                  web_searches=searches)
    theirs = calc_price(usage, model, provider_id="anthropic", genai_request_timestamp=when).total_price
    ours = _PRICER.cost_usd(model, Tokens(inp, out, read, w5, w1, searches), when=when.timestamp())
    assert ours == theirs


_PRICER = load_pricer()


def test_cost_is_per_utc_date() -> None:
    """Sonnet 4.6's premium ends at 2026-03-13 00:00 UTC, one second apart (cached per day)."""
    pricer = load_pricer()
    tokens = Tokens(input=210_000)
    before = datetime(2026, 3, 12, 23, 59, 59, tzinfo=UTC).timestamp()
    after = datetime(2026, 3, 13, 0, 0, 0, tzinfo=UTC).timestamp()
    assert pricer.cost_pico("claude-sonnet-4-6", tokens, when=before) == 210_000 * 6_000_000
    assert pricer.cost_pico("claude-sonnet-4-6", tokens, when=after) == 210_000 * 3_000_000
    assert pricer.cost_pico("claude-sonnet-4-6", tokens, when=before) == 210_000 * 6_000_000


def test_shipped_corrections_each_say_their_source() -> None:
    from exporter import prices

    for name, entries in prices.shipped().models.items():
        for e in entries:
            assert e.source.strip(), name
    # what genai-prices prices right is not corrected: the 4.6 long-context entries are gone
    assert "claude-sonnet-4-6" not in prices.shipped().models
