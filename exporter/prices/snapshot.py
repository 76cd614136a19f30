"""genai-prices' Claude data, kept beside the package so a command need not import it.

Importing genai-prices builds every provider's price objects (with pydantic and an HTTP
client for its auto-update): 0.15-0.25 s and 15 MB on every start, for about a hundred
Claude entries. ``genai_prices.json`` holds exactly the data of the providers we price
(``anthropic``; the Claude models of ``aws`` for Bedrock ids and of ``google`` for Vertex
ids) of one genai-prices release, and :func:`load` serves it only while that very release
is installed; any other release is read live (see :func:`exporter.prices.providers`). The objects here
answer the few questions the pricer asks (``find_model``, ``get_prices``,
``price_variants``) with genai-prices' own rules, and a test holds every answer equal to
the live package's.

Regenerate after upgrading genai-prices: ``python -m exporter.prices.snapshot``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib.resources import files
from collections.abc import Callable
from typing import Any

FILE = "genai_prices.json"
PROVIDERS = ("anthropic", "aws", "google")
DIST = "genai_prices"


# ---------------------------------------------------------------------------- the data as JSON


def dump_all(providers: dict[str, Any], version: str) -> dict[str, Any]:
    """The JSON form of the live providers we price."""
    return {"genai_prices_version": version,
            "providers": [dump(providers[p], version) for p in PROVIDERS]}


def _claude(provider: Any) -> list[Any]:
    """The provider's Claude models: all of Anthropic's; on a cloud, those named for Claude."""
    if provider.id == "anthropic":
        return list(provider.models)
    return [m for m in provider.models if "claude" in m.id.lower()]


def dump(provider: Any, version: str) -> dict[str, Any]:
    """The JSON form of a live genai-prices provider; raises ValueError on a shape it cannot hold."""
    return {
        "genai_prices_version": version,
        "provider": provider.id,
        "models": [{
            "id": m.id,
            "match": _dump_clause(m.match),
            "prices": ([{"start_date": _dump_constraint(c.constraint), "prices": _dump_price(c.prices)}
                        for c in m.prices] if isinstance(m.prices, list) else _dump_price(m.prices)),
            "price_variants": [{"when": dict(v.when), "start_date": _dump_constraint(v.constraint),
                                "prices": _dump_price(v.prices)} for v in m.price_variants or ()],
        } for m in _claude(provider)],
    }


def _dump_clause(clause: Any) -> dict[str, Any]:
    for name in ("starts_with", "ends_with", "contains", "equals", "regex"):
        if hasattr(clause, name):
            return {name: getattr(clause, name)}
    for name, attr in (("or", "or_"), ("and", "and_")):
        if hasattr(clause, attr):
            return {name: [_dump_clause(c) for c in getattr(clause, attr)]}
    raise ValueError(f"unknown match clause {clause!r}")


def _dump_constraint(constraint: Any) -> str | None:
    if constraint is None:
        return None
    if type(constraint).__name__ == "StartDateConstraint":
        return str(constraint.start_date.isoformat())
    raise ValueError(f"unsupported price constraint {constraint!r}")


def _dump_price(price: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in vars(price).items():
        if value is None or key.startswith("_"):
            continue
        if isinstance(value, Decimal):
            out[key] = str(value)
        elif hasattr(value, "tiers"):
            out[key] = {"base": str(value.base), "tiers": [[t.start, str(t.price)] for t in value.tiers]}
        else:
            raise ValueError(f"unsupported price {key}={value!r}")
    return out


# ---------------------------------------------------------------------------- the data as objects


class Tier:
    __slots__ = ("start", "price")

    def __init__(self, start: int, price: Decimal) -> None:
        self.start, self.price = start, price


class TieredPrice:
    __slots__ = ("base", "tiers")

    def __init__(self, base: Decimal, tiers: list[Tier]) -> None:
        self.base, self.tiers = base, sorted(tiers, key=lambda t: t.start)


class Prices:
    """A price set: each price key an attribute; a key the set does not name is None."""

    def __init__(self, raw: dict[str, Any]) -> None:
        for key, value in raw.items():
            setattr(self, key, Decimal(value) if isinstance(value, str) else
                    TieredPrice(Decimal(value["base"]), [Tier(s, Decimal(p)) for s, p in value["tiers"]]))

    def __getattr__(self, name: str) -> None:
        if name.startswith("__"):
            raise AttributeError(name)
        return None


class StartDate:
    """In force from a UTC date on."""

    __slots__ = ("start_date",)

    def __init__(self, start: date) -> None:
        self.start_date = start

    def active(self, when: datetime) -> bool:
        return (when.astimezone(UTC) if when.tzinfo is not None else when).date() >= self.start_date


class Variant:
    __slots__ = ("when", "constraint", "prices")

    def __init__(self, raw: dict[str, Any]) -> None:
        self.when = dict(raw["when"])
        self.constraint = StartDate(date.fromisoformat(raw["start_date"])) if raw["start_date"] else None
        self.prices = Prices(raw["prices"])


class Model:
    """One model: who it matches, its prices over time and its request variants."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.id: str = raw["id"]
        self._match = _clause(raw["match"])
        prices = raw["prices"]
        if isinstance(prices, list):
            self._dated = [(StartDate(date.fromisoformat(p["start_date"])) if p["start_date"] else None,
                            Prices(p["prices"])) for p in prices]
        else:
            self._dated = [(None, Prices(prices))]
        self.price_variants = [Variant(v) for v in raw["price_variants"]] or None

    def is_match(self, ref: str) -> bool:
        return bool(self._match(ref.lower()))

    def get_prices(self, when: datetime) -> Prices:
        """The last price set in force at ``when``; the first one when none is."""
        for constraint, prices in reversed(self._dated):
            if constraint is None or constraint.active(when):
                return prices
        return self._dated[0][1]


def _clause(raw: dict[str, Any]) -> Callable[[str], bool]:
    """A predicate on a lower-cased model reference; clause strings compare case-insensitively."""
    (kind, value), = raw.items()
    if kind == "starts_with":
        v = value.lower()
        return lambda ref: ref.startswith(v)
    if kind == "ends_with":
        v = value.lower()
        return lambda ref: ref.endswith(v)
    if kind == "contains":
        v = value.lower()
        return lambda ref: v in ref
    if kind == "equals":
        v = value.lower()
        return lambda ref: ref == v
    if kind == "regex":
        pattern = re.compile(value)
        return lambda ref: pattern.search(ref) is not None
    parts = [_clause(c) for c in value]
    if kind == "or":
        return lambda ref: any(p(ref) for p in parts)
    if kind == "and":
        return lambda ref: all(p(ref) for p in parts)
    raise ValueError(f"unknown match clause {kind!r}")


# a compact date suffix (-20251211) that genai-prices retries in its dashed form (-2025-12-11)
_COMPACT_DATE = re.compile(r"-(20\d\d)(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?=-|:|$)")


def _dashed_dates(ref: str) -> str:
    def dashed(m: re.Match[str]) -> str:
        try:
            return "-" + date(int(m[1]), int(m[2]), int(m[3])).isoformat()
        except ValueError:  # 20250231: not a date, left alone
            return m[0]

    return _COMPACT_DATE.sub(dashed, ref)


class Provider:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.id: str = raw["provider"]
        self.version: str = raw["genai_prices_version"]
        self.models = [Model(m) for m in raw["models"]]

    def find_model(self, ref: str) -> Model | None:
        """The first model matching the reference, or its compact-dated form written with dashes."""
        ref = ref.lower()
        found = next((m for m in self.models if m.is_match(ref)), None)
        if found is None and (dashed := _dashed_dates(ref)) != ref:
            found = next((m for m in self.models if m.is_match(dashed)), None)
        return found


# ---------------------------------------------------------------------------- which to use


def installed_version() -> str | None:
    """The installed genai-prices release, read off its dist-info folder (no import, no metadata
    scan); None when there is none, or more than one."""
    spec = importlib.util.find_spec(DIST)
    if spec is None or not spec.submodule_search_locations:
        return None
    found: set[str] = set()
    for location in spec.submodule_search_locations:
        site = os.path.dirname(location)
        try:
            names = os.listdir(site)
        except OSError:
            continue
        found.update(name[len(DIST) + 1:-len(".dist-info")] for name in names
                     if name.startswith(DIST + "-") and name.endswith(".dist-info"))
    # two releases' metadata side by side (one left behind by an upgrade): which one is
    # imported cannot be told this way, so the package itself is read
    return found.pop() if len(found) == 1 else None


def load(version: str | None = None) -> dict[str, Provider] | None:
    """The shipped snapshot by provider id, if it was taken from the genai-prices release
    installed (or ``version``)."""
    try:
        raw = json.loads(files("exporter.prices").joinpath(FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if raw.get("genai_prices_version") != (version if version is not None else installed_version()):
        return None
    return {p["provider"]: Provider(p) for p in raw["providers"]}


def live() -> tuple[dict[str, Any], str]:
    """genai-prices' own providers that we price (the slow import), and its release."""
    from genai_prices import __version__, data_snapshot

    return {p.id: p for p in data_snapshot.get_snapshot().providers if p.id in PROVIDERS}, __version__


def main() -> int:
    providers, version = live()
    path = os.path.join(os.path.dirname(__file__), FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dump_all(providers, version), f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{path}: genai-prices {version}, {', '.join(PROVIDERS)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
