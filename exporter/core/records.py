"""The shapes every log reader produces and every later stage consumes.

NamedTuples rather than frozen dataclasses: a cold read builds a few hundred thousand
of them, and a tuple is built several times faster while staying immutable.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

# token_type label values, in the order Tokens stores them
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")


class Tokens(NamedTuple):
    """Token counts of one request (or a sum of requests). ``input`` is uncached input."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    web_search_requests: int = 0

    @property
    def total(self) -> int:
        return self[0] + self[1] + self[2] + self[3] + self[4]

    @property
    def total_input(self) -> int:
        """All input tokens of the request: what the long-context cliff is measured on."""
        return self[0] + self[2] + self[3] + self[4]

    def as_tuple(self) -> tuple[int, int, int, int, int, int]:
        return tuple(self)  # type: ignore[return-value]

    def __add__(self, other: tuple[int, ...]) -> Tokens:  # type: ignore[override]  # element-wise, not concatenation
        return Tokens(*(a + b for a, b in zip(self, other, strict=True)))


class UsageRecord(NamedTuple):
    """One billed request as a local log saw it.

    ``dedup_key`` is None when the source has no request identity (each line counts).
    ``cost_usd`` is a cost the record states itself (CLI JSON, a pipeline log); None means
    price the tokens. ``reported_usd`` is what the log claimed the request cost (Claude Code's
    own client-side figure in a CLI result), kept beside our estimate and never in it.
    """

    source: str
    timestamp: float  # seconds since the epoch, UTC
    model: str
    tokens: Tokens
    dedup_key: str | None = None
    entrypoint: str = ""
    service_tier: str = "standard"
    inference_geo: str = ""
    speed: str = ""
    cost_usd: Decimal | None = None
    reported_usd: Decimal | None = None
