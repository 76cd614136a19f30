"""The shipped copy of genai-prices' Claude data (Anthropic, Bedrock, Vertex) answers exactly as the package does."""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, date, datetime, timedelta
from importlib.resources import files

import pytest

from exporter.prices import snapshot as genai_snapshot
from exporter import prices
from exporter.core.pricing import PriceData, Pricer
from tests.conftest import FAST_LAYER

LIVE_ALL, LIVE_VERSION = genai_snapshot.live()
LIVE = LIVE_ALL["anthropic"]
# taken from the installed package itself: these tests hold the reading of the data to the
# package's own answers whatever release is installed; the shipped file is checked apart
SNAP_ALL = {pid: genai_snapshot.Provider(json.loads(json.dumps(genai_snapshot.dump(p, LIVE_VERSION))))
            for pid, p in LIVE_ALL.items()}
SNAP = SNAP_ALL["anthropic"]
SHIPPED = json.loads(files("exporter.prices").joinpath(genai_snapshot.FILE).read_text(encoding="utf-8"))


def _literals(clause: dict) -> list[str]:
    """Strings a clause is written around; a regex's with its date patterns filled in both ways."""
    (kind, value), = clause.items()
    if kind in ("or", "and"):
        return [s for c in value for s in _literals(c)]
    if kind != "regex":
        return [value]
    text = value.strip("^$").replace(r"\d{4}-\d{2}-\d{2}", "2026-10-14").replace(r"\d{8}", "20261014")
    return [text.replace("[-@]", sep) for sep in "-@"]


def _refs() -> list[str]:
    base = {m.id for m in LIVE.models}
    for provider in LIVE_ALL.values():
        for m in genai_snapshot.dump(provider, LIVE_VERSION)["models"]:
            base.add(m["id"])
            base.update(_literals(m["match"]))
    base.update(re.sub(r"(\d{4})-(\d{2})-(\d{2})", r"\1\2\3", b) for b in list(base))  # compact dates too
    base.update(re.sub(r"(20\d{2})(\d{2})(\d{2})", r"\1-\2-\3", b) for b in list(base))  # and dashed
    refs = set(base)
    for ref in base:
        refs.update({ref.upper(), f"{ref}-20250929", f"{ref}@20250929", f"{ref}-latest", f"{ref}-2025-09-29",
                     f"{ref}-20251301", f"anthropic.{ref}-20241022-v2:0", f"us.anthropic.{ref}-v1:0"})
    refs.update({
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "global.anthropic.claude-opus-4-6-v1",
        "eu.anthropic.claude-opus-4-6-v1", "apac.anthropic.claude-sonnet-4-20250514-v1:0",
        "claude-sonnet-4-5@20250929", "claude-opus-4-6@20260205", "claude-haiku-5-5@20261001",
        "claude-sonnet-4-5-20250929", "claude-opus-4-5-20251101", "claude-haiku-4-5-20251001",
        "claude-opus-4-1-20250805", "claude-sonnet-4-20250514", "claude-3-7-sonnet-20250219",
        "claude-3-5-haiku-20241022", "claude-opus-4-6", "claude-sonnet-4-6", "claude-3-5-sonnet-v2@20241022",
        "gpt-4o", "", "claude", "<synthetic>", "CLAUDE-SONNET-4-5",
    })
    return sorted(refs)


def _days() -> list[datetime]:
    starts = set()
    for m in genai_snapshot.dump(LIVE, LIVE_VERSION)["models"]:
        dated = m["prices"] if isinstance(m["prices"], list) else []
        starts.update(p["start_date"] for p in [*dated, *m["price_variants"]] if p["start_date"])
    days = {date(2023, 1, 1), date(2025, 6, 1), date(2026, 11, 20)}
    for s in starts:
        d = date.fromisoformat(s)
        days.update({d - timedelta(days=1), d, d + timedelta(days=1)})
    return [datetime(d.year, d.month, d.day, 12, tzinfo=UTC) for d in sorted(days)]


@pytest.mark.parametrize("provider", genai_snapshot.PROVIDERS)
def test_the_snapshot_finds_the_same_model_for_every_reference(provider: str) -> None:
    refs = _refs()
    assert len(refs) > 100
    for ref in refs:
        if provider != "anthropic" and "claude" not in ref.lower():
            continue  # a cloud's other vendors' models are not kept, and never asked for
        live, snap = LIVE_ALL[provider].find_model(ref), SNAP_ALL[provider].find_model(ref)
        assert (snap.id if snap else None) == (live.id if live else None), (provider, ref)


@pytest.mark.parametrize("provider", genai_snapshot.PROVIDERS)
def test_the_snapshot_gives_the_same_prices_on_every_day_a_price_changes(provider: str) -> None:
    kept = {s.id: s for s in SNAP_ALL[provider].models}
    assert kept
    for m in LIVE_ALL[provider].models:
        snap = kept.get(m.id)
        if snap is None:
            assert provider != "anthropic" and "claude" not in m.id.lower(), m.id
            continue
        for when in _days():
            lp, sp = m.get_prices(when), snap.get_prices(when)
            for key in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok",
                        "web_searches_kcount"):
                a, b = getattr(lp, key, None), getattr(sp, key, None)
                if hasattr(a, "tiers"):
                    assert (b.base, [(t.start, t.price) for t in b.tiers]) == \
                        (a.base, [(t.start, t.price) for t in a.tiers]), (m.id, when, key)
                else:
                    assert b == a, (m.id, when, key)


def test_a_pricer_on_the_snapshot_resolves_every_request_as_one_on_genai_prices() -> None:
    live, snap = Pricer(data=PriceData(prices.shipped(), LIVE_ALL)), Pricer(data=PriceData(prices.shipped(), SNAP_ALL))
    variants = list(itertools.product(("standard", "batch"), ("", "us"), ("", "fast")))
    compared = 0
    refs = _refs()
    # the fast layer asks every seventh reference (each model still several times); make test asks all
    for ref in refs[::7] if FAST_LAYER else refs:
        assert snap.model_label(ref) == live.model_label(ref), ref
        for when, (tier, geo, speed) in itertools.product(_days(), variants):
            kw = dict(when=when.timestamp(), service_tier=tier, inference_geo=geo, speed=speed)
            assert snap.prices(ref, **kw) == live.prices(ref, **kw), (ref, when, tier, geo, speed)
            compared += 1
    assert compared > (1_000 if FAST_LAYER else 10_000)


def test_the_shipped_snapshot_is_the_installed_release_data() -> None:
    if SHIPPED["genai_prices_version"] != LIVE_VERSION:
        pytest.skip(f"genai-prices {LIVE_VERSION} is installed, the shipped copy is of {SHIPPED['genai_prices_version']}:"
                    " prices come from the package itself (python -m exporter.genai_snapshot writes a new copy)")
    assert SHIPPED == genai_snapshot.dump_all(LIVE_ALL, LIVE_VERSION)
    assert genai_snapshot.installed_version() == LIVE_VERSION
    loaded = genai_snapshot.load()
    assert loaded is not None and set(loaded) == set(genai_snapshot.PROVIDERS)


def test_another_release_installed_means_the_package_is_read_live() -> None:
    assert genai_snapshot.load(version="0.0.1") is None
    assert genai_snapshot.load(version=SHIPPED["genai_prices_version"]) is not None


def test_clauses_the_anthropic_data_does_not_use_yet_read_as_the_package_reads_them() -> None:
    """A synthetic provider in genai-prices' own types: every clause kind, conditional prices and
    a compact date that only matches in its dashed form."""
    from decimal import Decimal

    from genai_prices import types as t

    def price(x: str) -> t.ModelPrice:
        return t.ModelPrice(input_mtok=Decimal(x), output_mtok=Decimal(x) * 5)

    live = t.Provider(id="anthropic", name="Anthropic", api_pattern="", models=[
        t.ModelInfo(id="dated", match=t.ClauseEquals(equals="claude-x-2026-10-14"), prices=price("1")),
        t.ModelInfo(id="ends", match=t.ClauseEndsWith(ends_with="-Tail"), prices=price("2")),
        t.ModelInfo(id="both", match=t.ClauseAnd(and_=[t.ClauseContains(contains="mid"),
                                                       t.ClauseStartsWith(starts_with="claude-y")]),
                    prices=[t.ConditionalPrice(prices=price("3")),
                            t.ConditionalPrice(constraint=t.StartDateConstraint(start_date=date(2026, 3, 1)),
                                               prices=t.ModelPrice(input_mtok=t.TieredPrices(
                                                   base=Decimal(4), tiers=[t.Tier(start=200_000, price=Decimal(8))]),
                                                   output_mtok=Decimal(20)))]),
    ])
    snap = genai_snapshot.Provider(json.loads(json.dumps(genai_snapshot.dump(live, "test"))))
    for ref in ("claude-x-20261014", "claude-x-2026-10-14", "claude-x-20261314", "CLAUDE-Z-TAIL", "claude-y-mid",
                "claude-mid-y", "claude-y"):
        a, b = live.find_model(ref), snap.find_model(ref)
        assert (b.id if b else None) == (a.id if a else None), ref
    assert snap.find_model("claude-x-20261014").id == "dated"
    pricers = Pricer(data=PriceData(prices.shipped(), {"anthropic": live})), Pricer(data=PriceData(prices.shipped(), {"anthropic": snap}))
    for day in (date(2026, 2, 28), date(2026, 3, 1)):
        when = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        assert pricers[1].prices("claude-y-mid", when=when) == pricers[0].prices("claude-y-mid", when=when)
