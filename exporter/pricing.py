"""List prices of Claude models, resolved once and applied to millions of requests.

The price source is the ``genai-prices`` package, corrected by the shipped table
``price_overrides.yaml`` and then by the config's ``pricing.overrides``.  Asking
genai-prices per request is far too slow for a large log corpus, so a model's prices are
resolved once per (model, UTC date, batch, US-only geo, fast) into a small frozen
:class:`ModelPrices` holding integer picodollars per token; pricing a request is then a dict
hit and a handful of integer multiplies.

Exactness: every cost is an integer number of picodollars (1e-12 USD).  Shipped prices have
at most a few decimals per million tokens, so a per-token price in picodollars is an exact
integer, and so are its 50% (batch) and 1.1x (US-only) forms.  A config override with more
than six decimals per million tokens (or a ratio that does not divide evenly) is rounded,
half to even, to whole picodollars per token; that is the only rounding anywhere.

Rules (Anthropic's, where genai-prices differs):
- long-context cliff: once a request's total input (uncached input + cache reads + cache
  writes) *exceeds* the threshold, every token of that request, output included, is charged
  at the premium price;
- ``service_tier == "batch"``: the batch prices (50%); web search stays at list price;
- ``speed == "fast"``: the fast-mode prices where the model has them, flat over the whole
  context window; the standard prices where it has none;
- ``inference_geo == "us"``: 1.1x the whole request on Claude 4.6 and later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from functools import cache
from importlib.resources import files
from typing import Any

import yaml

from exporter import genai_snapshot
from exporter.config import PRICE_KEYS, PriceOverride
from exporter.usage import Tokens

__all__ = ["OTHER", "ModelPrices", "Pricer", "Rates"]

OTHER = "other"
"""The Prometheus label of every model that has no price."""

PICO_PER_USD = 10**12
_DAY = 86_400
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MTOK = Decimal(10**6)  # USD per MTok -> picodollars per token
_PER_SEARCH = Decimal(10**9)  # USD per 1,000 searches -> picodollars per search
_NO_CLIFF = 1 << 62  # a threshold no request's input exceeds
_CACHE_LIMIT = 200_000  # resolved entries kept before the cache is dropped (random model names)
_NOT_PRICED = frozenset({"", "<synthetic>"})

# our field name -> genai-prices ModelPrice attribute
_GENAI_KEYS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write_5m": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
}
_DATED = r"(?:[-@](?:\d{8}|\d{4}-\d{2}-\d{2}|latest))?"
_VERSION_RE = re.compile(r"^claude-(?:[a-z]+-)?(\d+)(?:[-.](\d{1,2})(?!\d))?(?!\d)")
_CTX = Context(prec=60)


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens, as charged: batch, fast and US-only multipliers applied."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal

    @classmethod
    def from_pico(cls, pico: tuple[int, int, int, int, int]) -> Rates:
        return cls(*(Decimal(p).scaleb(-6) for p in pico))


@dataclass(frozen=True, slots=True)
class ModelPrices:
    """One model's prices for one UTC date and variant; the costs are exact picodollars.

    ``base_pico`` / ``long_context_pico`` are picodollars per token in the order of
    ``Tokens`` (input, output, cache_read, cache_write_5m, cache_write_1h).
    """

    model: str  # the canonical id (Prometheus label)
    base_pico: tuple[int, int, int, int, int]
    web_search_pico: int  # per search
    long_context_threshold: int | None = None
    long_context_pico: tuple[int, int, int, int, int] | None = None
    batch: bool = False
    fast: bool = False
    us_geo_multiplier: Decimal = Decimal(1)
    _threshold: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cliff = self.long_context_threshold is not None and self.long_context_pico is not None
        object.__setattr__(self, "_threshold", self.long_context_threshold if cliff else _NO_CLIFF)

    @property
    def base(self) -> Rates:
        return Rates.from_pico(self.base_pico)

    @property
    def long_context(self) -> Rates | None:
        return Rates.from_pico(self.long_context_pico) if self.long_context_pico is not None else None

    @property
    def web_search(self) -> Decimal:
        """USD per 1,000 searches."""
        return Decimal(self.web_search_pico).scaleb(-9)

    def cost_pico(self, t: Tokens, long_context: bool | None = None) -> int:
        """Picodollars for one request.

        ``long_context`` None decides the cliff from the request's own total input; True or
        False forces it, for token counts that are already split by context window (the
        usage report's ``context_window``), where per-request totals are not known.
        """
        if long_context is None:
            long_context = t.input + t.cache_read + t.cache_write_5m + t.cache_write_1h > self._threshold
        r = self.long_context_pico if long_context and self.long_context_pico is not None else self.base_pico
        return (t.input * r[0] + t.output * r[1] + t.cache_read * r[2] + t.cache_write_5m * r[3]
                + t.cache_write_1h * r[4] + t.web_search_requests * self.web_search_pico)

    def cost_usd(self, t: Tokens, long_context: bool | None = None) -> Decimal:
        return Decimal(self.cost_pico(t, long_context)).scaleb(-12)


# --------------------------------------------------------------------------- the shipped table


@dataclass(frozen=True)
class _Defaults:
    batch_multiplier: Decimal
    web_search: Decimal
    cache_multipliers: Mapping[str, Decimal]
    long_context_multipliers: Mapping[str, Decimal]
    long_context_threshold: int
    us_geo_multiplier: Decimal
    us_geo_from_version: tuple[int, int]


@dataclass(frozen=True)
class _Shipped:
    defaults: _Defaults
    models: Mapping[str, PriceOverride]
    fast_multipliers: Mapping[str, Decimal]


def _dec(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"price_overrides.yaml: {where}: must be a number")
    number = Decimal(str(value))
    if not number.is_finite() or number < 0:
        raise ValueError(f"price_overrides.yaml: {where}: must be a finite number >= 0")
    return number


def _parse_shipped(raw: Any) -> _Shipped:
    d = raw["defaults"]
    major, _, minor = str(d["us_geo_from_version"]).partition(".")
    defaults = _Defaults(
        batch_multiplier=_dec(d["batch_multiplier"], "defaults.batch_multiplier"),
        web_search=_dec(d["web_search"], "defaults.web_search"),
        cache_multipliers={k: _dec(v, f"defaults.cache_multipliers.{k}") for k, v in d["cache_multipliers"].items()},
        long_context_multipliers={k: _dec(v, f"defaults.long_context_multipliers.{k}")
                                  for k, v in d["long_context_multipliers"].items()},
        long_context_threshold=int(d["long_context_threshold"]),
        us_geo_multiplier=_dec(d["us_geo_multiplier"], "defaults.us_geo_multiplier"),
        us_geo_from_version=(int(major), int(minor or 0)),
    )
    models: dict[str, PriceOverride] = {}
    fast: dict[str, Decimal] = {}
    allowed = {*PRICE_KEYS, "web_search", "long_context_threshold", "long_context", "fast_multiplier"}
    for name, entry in (raw.get("models") or {}).items():
        unknown = set(entry) - allowed
        if unknown:
            raise ValueError(f"price_overrides.yaml: models.{name}: unknown keys {sorted(unknown)}")
        lc = entry.get("long_context") or {}
        if set(lc) - set(PRICE_KEYS):
            raise ValueError(f"price_overrides.yaml: models.{name}.long_context: unknown keys")
        models[name] = PriceOverride(
            **{k: _dec(entry[k], f"models.{name}.{k}") for k in (*PRICE_KEYS, "web_search") if k in entry},
            long_context_threshold=entry.get("long_context_threshold"),
            long_context={k: _dec(v, f"models.{name}.long_context.{k}") for k, v in lc.items()},
        )
        if "fast_multiplier" in entry:
            fast[name] = _dec(entry["fast_multiplier"], f"models.{name}.fast_multiplier")
    return _Shipped(defaults=defaults, models=models, fast_multipliers=fast)


@cache
def _shipped() -> _Shipped:
    """The package's correction table, read once per process."""
    text = files("exporter").joinpath("price_overrides.yaml").read_text(encoding="utf-8")
    return _parse_shipped(yaml.safe_load(text))


@cache
def _anthropic() -> Any:
    """genai-prices' Anthropic models: from the shipped copy of the installed release's data
    (see :mod:`exporter.genai_snapshot`), or from the package itself for any other release."""
    snapshot = genai_snapshot.load()
    return snapshot if snapshot is not None else genai_snapshot.live_anthropic()[0]


# --------------------------------------------------------------------------- resolution


def _base_and_tier(value: Any) -> tuple[Decimal | None, int | None, Decimal | None]:
    """genai-prices price -> (base, first tier start, first tier price)."""
    if value is None:
        return None, None, None
    if isinstance(value, Decimal):
        return value, None, None
    tiers = getattr(value, "tiers", None)
    if tiers:
        return value.base, tiers[0].start, tiers[0].price
    return getattr(value, "base", value), None, None


def _version(label: str) -> tuple[int, int] | None:
    m = _VERSION_RE.match(label)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


@dataclass(frozen=True)
class _Identity:
    """Who a model string is: its genai-prices entry and the overrides that apply to it."""

    label: str
    genai: Any  # genai_prices ModelInfo or None
    shipped: tuple[PriceOverride, ...]
    config: tuple[PriceOverride, ...]
    fast_multiplier: Decimal | None


class Pricer:
    """Prices requests; one per config, shared by every reader.

    Safe to share between threads: the caches are plain dicts, and two threads racing on a
    new entry only resolve it twice.
    """

    def __init__(self, overrides: Mapping[str, PriceOverride] | None = None, *, provider: Any = None) -> None:
        self._shipped = _shipped()
        self._overrides = dict(overrides or {})
        self.overrides: Mapping[str, PriceOverride] = self._overrides  # what a helper process needs to rebuild it
        self._provider = provider if provider is not None else _anthropic()  # genai-prices' Anthropic models
        self._ids: dict[str, _Identity | None] = {}
        self._resolved: dict[tuple[str, int, str, str, str], ModelPrices | None] = {}
        self._by_variant: dict[tuple[str, int, bool, bool, bool], ModelPrices | None] = {}

    # ---------------------------------------------------------------- hot path

    def cost_pico(self, model: str, tokens: Tokens, when: float, service_tier: str = "standard",
                  inference_geo: str = "", speed: str = "") -> int | None:
        """Picodollars (1e-12 USD) for one request at epoch seconds ``when``; None if unpriced."""
        key = (model, int(when // _DAY), service_tier, inference_geo, speed)
        try:
            p = self._resolved[key]
        except KeyError:
            p = self._resolve_key(key)
        if p is None:
            return None
        t = tokens
        # by index: any tuple in Tokens order will do, so a reader need not build a Tokens first
        r = p.long_context_pico if t[0] + t[2] + t[3] + t[4] > p._threshold else p.base_pico
        return (t[0] * r[0] + t[1] * r[1] + t[2] * r[2] + t[3] * r[3]  # type: ignore[index]
                + t[4] * r[4] + t[5] * p.web_search_pico)  # type: ignore[index]

    def cost_usd(self, model: str, tokens: Tokens, *, when: float, service_tier: str = "standard",
                 inference_geo: str = "", speed: str = "") -> Decimal | None:
        """USD for one request, exactly ``cost_pico / 10**12``; None if unpriced."""
        pico = self.cost_pico(model, tokens, when=when, service_tier=service_tier,
                              inference_geo=inference_geo, speed=speed)
        return None if pico is None else Decimal(pico).scaleb(-12)

    def prices(self, model: str, *, when: float, service_tier: str = "standard", inference_geo: str = "",
               speed: str = "") -> ModelPrices | None:
        """The resolved prices a request with these attributes would be charged; None if unpriced."""
        key = (model, int(when // _DAY), service_tier, inference_geo, speed)
        p = self._resolved.get(key, self)
        return self._resolve_key(key) if p is self else p  # type: ignore[return-value]

    def model_label(self, model: str) -> str:
        """The canonical id for metric labels, from a closed set; ``other`` when unpriced."""
        ident = self._identity(model)
        return ident.label if ident is not None else OTHER

    def known(self, model: str) -> bool:
        return self._identity(model) is not None

    # ---------------------------------------------------------------- resolution

    def _resolve_key(self, key: tuple[str, int, str, str, str]) -> ModelPrices | None:
        model, day, tier, geo, speed = key
        batch = tier == "batch"
        us = geo.lower() == "us"
        fast = speed == "fast"
        vkey = (model, day, batch, us, fast)
        try:
            p = self._by_variant[vkey]
        except KeyError:
            ident = self._identity(model)
            p = None if ident is None else self._build(ident, day, batch, us, fast)
            if len(self._by_variant) >= _CACHE_LIMIT:
                self._by_variant.clear()
            self._by_variant[vkey] = p
        if len(self._resolved) >= _CACHE_LIMIT:
            self._resolved.clear()
        self._resolved[key] = p
        return p

    def _identity(self, model: str) -> _Identity | None:
        try:
            return self._ids[model]
        except KeyError:
            pass
        ident = self._identify(model)
        if len(self._ids) >= _CACHE_LIMIT:
            self._ids.clear()
        self._ids[model] = ident
        return ident

    def _identify(self, model: str) -> _Identity | None:
        if model.strip() in _NOT_PRICED:
            return None
        genai = self._provider.find_model(model)
        genai_id = genai.id if genai is not None else None

        def matching(table: Mapping[str, Any]) -> list[str]:
            """Keys that apply to ``model``, least specific first (so the most specific wins the merge)."""
            ranked = []
            for k in table:
                if k == model:
                    rank = 3
                elif _applies_by_name(k, model):
                    rank = 2
                elif genai is not None and (k == genai_id or (self._genai_alias(k) is genai)):
                    rank = 1
                else:
                    continue
                ranked.append((rank, len(k), k))
            return [k for *_, k in sorted(ranked)]

        shipped_keys = matching(self._shipped.models)
        config_keys = matching(self._overrides)
        if genai is not None:
            label = genai_id
        else:
            named = [k for k in (*shipped_keys, *config_keys) if k == model or _applies_by_name(k, model)]
            if not named:
                return None
            label = min(named, key=lambda k: (len(k), k))
        fast_keys = matching(self._shipped.fast_multipliers)
        ident = _Identity(
            label=label,
            genai=genai,
            shipped=tuple(self._shipped.models[k] for k in shipped_keys),
            config=tuple(self._overrides[k] for k in config_keys),
            fast_multiplier=self._shipped.fast_multipliers[fast_keys[-1]] if fast_keys else None,
        )
        if genai is None:  # known only through overrides: those must give input and output prices
            overrides = (*ident.shipped, *ident.config)
            if not (any(o.input is not None for o in overrides) and any(o.output is not None for o in overrides)):
                return None
        return ident

    def _genai_alias(self, key: str) -> Any:
        """The genai-prices model an *undated* override key names (``claude-sonnet-4`` -> sonnet-4-0)."""
        if re.search(r"[-@](\d{8}|\d{4}-\d{2}-\d{2})$", key):
            return None
        return self._provider.find_model(key)

    def _build(self, ident: _Identity, day: int, batch: bool, us: bool, fast: bool) -> ModelPrices | None:
        d = self._shipped.defaults
        when = _EPOCH + timedelta(days=day)
        with localcontext(_CTX):
            base: dict[str, Decimal | None] = dict.fromkeys(PRICE_KEYS)
            premium: dict[str, Decimal | None] = dict.fromkeys(PRICE_KEYS)
            threshold: int | None = None
            web_search: Decimal | None = None
            standard: Any = None
            if ident.genai is not None:
                standard = ident.genai.get_prices(when)
                for k, attr in _GENAI_KEYS.items():
                    b, start, tier_price = _base_and_tier(getattr(standard, attr, None))
                    base[k] = b
                    if start is not None:
                        threshold = start if threshold is None else min(threshold, start)
                        premium[k] = tier_price
                web_search = _base_and_tier(getattr(standard, "web_searches_kcount", None))[0]
            for o in (*ident.shipped, *ident.config):
                for k in PRICE_KEYS:
                    if (v := getattr(o, k)) is not None:
                        base[k] = v
                for k, v in o.long_context.items():
                    premium[k] = v
                if o.long_context_threshold is not None:
                    threshold = o.long_context_threshold
                if o.web_search is not None:
                    web_search = o.web_search
            if base["input"] is None or base["output"] is None:
                return None
            for k, mult in d.cache_multipliers.items():
                if base[k] is None:
                    base[k] = base["input"] * mult  # type: ignore[operator]
            if threshold is None and any(v is not None for v in premium.values()):
                threshold = d.long_context_threshold
            if threshold is not None:
                for k in PRICE_KEYS:
                    if premium[k] is None:
                        premium[k] = base[k] * d.long_context_multipliers[k]  # type: ignore[operator]
            if web_search is None:
                web_search = d.web_search

            ratio = dict.fromkeys(PRICE_KEYS, Decimal(1))
            if batch:
                variant = self._variant_ratios(ident.genai, standard, when, {"processing": "batch"})
                for k in PRICE_KEYS:
                    ratio[k] *= variant.get(k, variant.get("input", d.batch_multiplier))
            if fast:
                variant = self._variant_ratios(ident.genai, standard, when, {"speed": "fast"})
                if ident.fast_multiplier is not None:
                    variant = dict.fromkeys(PRICE_KEYS, ident.fast_multiplier)
                if variant:
                    for k in PRICE_KEYS:
                        ratio[k] *= variant.get(k, variant.get("input", Decimal(1)))
                    threshold = None  # fast mode is one flat price over the whole window
                else:
                    fast = False  # no fast prices: charged as standard
            geo = d.us_geo_multiplier if us and _geo_applies(ident.label, d.us_geo_from_version) else Decimal(1)

            def pico(prices: Mapping[str, Decimal | None]) -> tuple[int, int, int, int, int]:
                return tuple(_to_int(prices[k] * _MTOK * ratio[k] * geo) for k in PRICE_KEYS)  # type: ignore

            return ModelPrices(
                model=ident.label,
                base_pico=pico(base),
                web_search_pico=_to_int(web_search * _PER_SEARCH * geo),
                long_context_threshold=threshold,
                long_context_pico=pico(premium) if threshold is not None else None,
                batch=batch,
                fast=fast,
                us_geo_multiplier=geo,
            )

    @staticmethod
    def _variant_ratios(genai: Any, standard: Any, when: datetime, context: dict[str, str]) -> dict[str, Decimal]:
        """genai-prices' variant price / standard price per field, for the variant in force that day."""
        if genai is None:
            return {}
        for variant in genai.price_variants or ():
            if variant.when != context:
                continue
            if variant.constraint is not None and not variant.constraint.active(when):
                continue
            out = {}
            for k, attr in _GENAI_KEYS.items():
                v = _base_and_tier(getattr(variant.prices, attr, None))[0]
                s = _base_and_tier(getattr(standard, attr, None))[0]
                if v is not None and s:
                    out[k] = v / s
            return out
        return {}


def _applies_by_name(key: str, model: str) -> bool:
    """``claude-sonnet-4-5`` applies to ``claude-sonnet-4-5-20250929`` (and ``@20250929``, ``-latest``)."""
    return _name_re(key).match(model) is not None


@cache
def _name_re(key: str) -> re.Pattern[str]:
    return re.compile(re.escape(key) + _DATED + "$", re.IGNORECASE)


def _geo_applies(label: str, from_version: tuple[int, int]) -> bool:
    v = _version(label)
    return v is not None and v >= from_version


def _to_int(value: Decimal) -> int:
    """Whole picodollars; exact for shipped prices, half-even rounding for finer overrides."""
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))
