"""List prices of Claude models, resolved once and applied to millions of requests.

The price source is the ``genai-prices`` package (its ``anthropic`` provider, and its
``aws`` and ``google`` providers for Bedrock and Vertex ids), corrected by the shipped
table ``price_overrides.yaml`` (each entry dated) and then by the config's
``pricing.overrides``.  Asking
genai-prices per request is far too slow for a large log corpus, so a model's prices are
resolved once per (model, UTC date, batch, US-only geo, fast) into a small frozen
:class:`ModelPrices` holding integer picodollars per token; pricing a request is then a dict
hit and a handful of integer multiplies.

Exactness: every cost is an integer number of picodollars (1e-12 USD).  Shipped prices have
at most a few decimals per million tokens, so a per-token price in picodollars is an exact
integer, and so are its 50% (batch) and 1.1x (US-only) forms.  A config override with more
than six decimals per million tokens (or a ratio that does not divide evenly) is rounded,
half to even, to whole picodollars per token; that is the only rounding anywhere.

Who a model string is comes from :mod:`exporter.modelnames`, the same reading pool
``models:`` matching uses. A Bedrock or Vertex id is priced as the Claude model it names,
times its platform's price ratio for that model (genai-prices' ``aws``/``google`` input
price over the Anthropic one: 1.1 for regional Bedrock endpoints of recent models).

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
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Any

from exporter.config.model import PRICE_KEYS, PriceOverride
from exporter.core import modelnames
from exporter.core.records import Tokens

__all__ = ["OTHER", "ModelPrices", "PriceData", "Pricer", "Rates", "Shipped", "parse_shipped"]

OTHER = "other"
"""The Prometheus label of every model that has no price."""

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
class _Entry:
    """One dated correction of the shipped table: in force on UTC days ``[from_day, until_day)``."""

    prices: PriceOverride
    source: str
    from_day: int | None = None
    until_day: int | None = None
    fast_multiplier: Decimal | None = None
    us_geo: bool | None = None

    def active(self, day: int) -> bool:
        return (self.from_day is None or day >= self.from_day) and (self.until_day is None or day < self.until_day)


@dataclass(frozen=True)
class Shipped:
    defaults: _Defaults
    models: Mapping[str, tuple[_Entry, ...]]


def _dec(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"price_overrides.yaml: {where}: must be a number")
    number = Decimal(str(value))
    if not number.is_finite() or number < 0:
        raise ValueError(f"price_overrides.yaml: {where}: must be a finite number >= 0")
    return number


def _day(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, date):
        raise ValueError(f"price_overrides.yaml: {where}: must be a date (YYYY-MM-DD)")
    return (value - _EPOCH.date()).days


_ENTRY_KEYS = {*PRICE_KEYS, "web_search", "long_context_threshold", "long_context", "fast_multiplier",
               "source", "from", "until", "us_geo"}


def parse_shipped(raw: Any) -> Shipped:
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
    models: dict[str, tuple[_Entry, ...]] = {}
    for name, entries in (raw.get("models") or {}).items():
        if not isinstance(entries, list):
            raise ValueError(f"price_overrides.yaml: models.{name}: must be a list of dated entries")
        out = []
        for i, entry in enumerate(entries):
            where = f"models.{name}[{i}]"
            unknown = set(entry) - _ENTRY_KEYS
            if unknown:
                raise ValueError(f"price_overrides.yaml: {where}: unknown keys {sorted(unknown)}")
            if not str(entry.get("source") or "").strip():
                raise ValueError(f"price_overrides.yaml: {where}: says no source")
            lc = entry.get("long_context") or {}
            if set(lc) - set(PRICE_KEYS):
                raise ValueError(f"price_overrides.yaml: {where}.long_context: unknown keys")
            out.append(_Entry(
                prices=PriceOverride(
                    **{k: _dec(entry[k], f"{where}.{k}") for k in (*PRICE_KEYS, "web_search") if k in entry},
                    long_context_threshold=entry.get("long_context_threshold"),
                    long_context={k: _dec(v, f"{where}.long_context.{k}") for k, v in lc.items()},
                ),
                source=str(entry["source"]),
                from_day=_day(entry.get("from"), f"{where}.from"),
                until_day=_day(entry.get("until"), f"{where}.until"),
                fast_multiplier=(_dec(entry["fast_multiplier"], f"{where}.fast_multiplier")
                                 if "fast_multiplier" in entry else None),
                us_geo=entry.get("us_geo"),
            ))
        models[name] = tuple(out)
    return Shipped(defaults=defaults, models=models)


@dataclass(frozen=True)
class PriceData:
    """What prices come from: the shipped correction table (parsed by :func:`parse_shipped`) and
    genai-prices' providers by id (``anthropic``, ``aws``, ``google``). Loaded by
    :mod:`exporter.prices`; the pricer itself reads no file."""

    shipped: Shipped
    providers: Mapping[str, Any]


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
    """Who a model string is: its genai-prices entries and the overrides that apply to it."""

    label: str
    genai: Any  # genai-prices' Anthropic model, or None
    platform: Any  # genai-prices' aws/google model for a Bedrock/Vertex id, or None
    shipped: tuple[_Entry, ...]
    config: tuple[PriceOverride, ...]
    own_config: bool  # a config override names this very id: it is taken as the platform's price


class Pricer:
    """Prices requests; one per config, shared by every reader.

    Safe to share between threads: the caches are plain dicts, and two threads racing on a
    new entry only resolve it twice.
    """

    def __init__(self, overrides: Mapping[str, PriceOverride] | None = None, *, data: PriceData) -> None:
        self._shipped = data.shipped
        self._overrides = dict(overrides or {})
        self.overrides: Mapping[str, PriceOverride] = self._overrides  # what a helper process needs to rebuild it
        self.data = data
        providers = data.providers
        self._provider = providers["anthropic"]
        self._platforms = {modelnames.BEDROCK: providers.get("aws"), modelnames.VERTEX: providers.get("google")}
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
        name = modelnames.parse(model)
        genai = self._provider.find_model(model) if name.platform == modelnames.ANTHROPIC else None
        if genai is None:
            genai = self._provider.find_model(name.ref)
        cloud = self._platforms.get(name.platform)
        platform = cloud.find_model(model) if cloud is not None else None
        genai_id = genai.id if genai is not None else None
        lowered = model.strip().lower()

        def matching(table: Mapping[str, Any]) -> list[str]:
            """Keys that apply to ``model``, least specific first (so the most specific wins the merge)."""
            ranked = []
            for k in table:
                if k.lower() == lowered:
                    rank = 3
                elif modelnames.matches(k.lower(), lowered):
                    rank = 2
                elif genai is not None and (k == genai_id or (self._genai_alias(k) is genai)):
                    rank = 1
                else:
                    continue
                ranked.append((rank, len(k), k))
            return [k for *_, k in sorted(ranked)]

        shipped_keys = matching(self._shipped.models)
        config_keys = matching(self._overrides)
        if genai_id is not None:
            label = str(genai_id)
        else:
            named = [k for k in (*shipped_keys, *config_keys) if modelnames.matches(k.lower(), lowered)]
            if named:
                label = min(named, key=lambda k: (len(k), k))
            elif platform is not None:
                label = str(platform.id)  # a Claude model only the cloud's price list knows
            else:
                return None
        ident = _Identity(
            label=label,
            genai=genai,
            platform=platform,
            shipped=tuple(e for k in shipped_keys for e in self._shipped.models[k]),
            config=tuple(self._overrides[k] for k in config_keys),
            own_config=any(k.lower() == lowered for k in config_keys),
        )
        if genai is None and platform is None:  # known only through overrides: those must give input and output
            prices = (*(e.prices for e in ident.shipped), *ident.config)
            if not (any(o.input is not None for o in prices) and any(o.output is not None for o in prices)):
                return None
        return ident

    def _genai_alias(self, key: str) -> Any:
        """The genai-prices model an *undated* override key names (``claude-sonnet-4`` -> sonnet-4-0)."""
        if modelnames.parse(key).date is not None:
            return None
        return self._provider.find_model(key)

    def _build(self, ident: _Identity, day: int, batch: bool, us: bool, fast: bool) -> ModelPrices | None:
        d = self._shipped.defaults
        when = _EPOCH + timedelta(days=day)
        shipped = [e for e in ident.shipped if e.active(day)]
        with localcontext(_CTX):
            base: dict[str, Decimal | None] = dict.fromkeys(PRICE_KEYS)
            premium: dict[str, Decimal | None] = dict.fromkeys(PRICE_KEYS)
            threshold: int | None = None
            web_search: Decimal | None = None
            source = ident.genai if ident.genai is not None else ident.platform
            standard: Any = None
            if source is not None:
                standard = source.get_prices(when)
                for k, attr in _GENAI_KEYS.items():
                    b, start, tier_price = _base_and_tier(getattr(standard, attr, None))
                    base[k] = b
                    if start is not None:
                        threshold = start if threshold is None else min(threshold, start)
                        premium[k] = tier_price
                web_search = _base_and_tier(getattr(standard, "web_searches_kcount", None))[0]
            # the cloud's price for this id over Anthropic's for the model: 1.1 on a regional endpoint
            factor = Decimal(1)
            if ident.genai is not None and ident.platform is not None and not ident.own_config:
                theirs = _base_and_tier(getattr(ident.platform.get_prices(when), "input_mtok", None))[0]
                ours = base["input"]
                if theirs and ours:
                    factor = theirs / ours
            for o in (*(e.prices for e in shipped), *ident.config):
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
                    base[k] = base["input"] * mult
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
                fast_multipliers = [e.fast_multiplier for e in shipped if e.fast_multiplier is not None]
                if fast_multipliers:
                    variant = dict.fromkeys(PRICE_KEYS, fast_multipliers[-1])
                if variant:
                    for k in PRICE_KEYS:
                        ratio[k] *= variant.get(k, variant.get("input", Decimal(1)))
                    threshold = None  # fast mode is one flat price over the whole window
                else:
                    fast = False  # no fast prices that day: charged as standard
            geo_flags = [e.us_geo for e in ident.shipped if e.us_geo is not None]
            geo_applies = geo_flags[-1] if geo_flags else _geo_applies(ident.label, d.us_geo_from_version)
            geo = d.us_geo_multiplier if us and geo_applies else Decimal(1)

            def pico(prices: Mapping[str, Decimal | None]) -> tuple[int, int, int, int, int]:
                return tuple(_to_int(prices[k] * _MTOK * ratio[k] * geo * factor)  # type: ignore
                             for k in PRICE_KEYS)

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


def _geo_applies(label: str, from_version: tuple[int, int]) -> bool:
    v = _version(label)
    return v is not None and v >= from_version


def _to_int(value: Decimal) -> int:
    """Whole picodollars; exact for shipped prices, half-even rounding for finer overrides."""
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))
