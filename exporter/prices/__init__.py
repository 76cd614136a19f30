"""Where prices come from: genai-prices' data (a shipped copy, see :mod:`.snapshot`) and the
shipped correction table ``price_overrides.yaml``, read once per process.

The pricer in :mod:`exporter.core.pricing` is pure: it is handed this data.

    >>> from exporter.prices import load_pricer
    >>> load_pricer().model_label("us.anthropic.claude-sonnet-4-5-20250929-v1:0")
    'claude-sonnet-4-5'
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from typing import Any

import yaml

from exporter.config import PriceOverride
from exporter.core.pricing import PriceData, Pricer, Shipped, parse_shipped
from exporter.prices import snapshot

__all__ = ["load", "load_pricer", "providers", "shipped"]


@cache
def shipped() -> Shipped:
    """The package's correction table."""
    text = files("exporter.prices").joinpath("price_overrides.yaml").read_text(encoding="utf-8")
    # libyaml's loader where PyYAML has it: 1 ms instead of 11 at every start
    return parse_shipped(yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))  # noqa: S506 - a safe loader


@cache
def providers() -> Mapping[str, Any]:
    """genai-prices' providers we price, by id: from the shipped copy of the installed
    release's data, or from the package itself for any other release."""
    loaded = snapshot.load()
    return loaded if loaded is not None else snapshot.live()[0]


def load() -> PriceData:
    return PriceData(shipped=shipped(), providers=providers())


def load_pricer(overrides: Mapping[str, PriceOverride] | None = None) -> Pricer:
    """A pricer on the shipped data, with the config's overrides on top."""
    return Pricer(overrides, data=load())
