"""Helpers shared by the Admin API and billing tests: a generated dataset and a virtual clock.

The expectations are computed here from the generated entries themselves, never from the
fake's aggregation, so a bug in the fake's grouping can not hide a bug in the client.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from tests.fake_admin_api import FakeAdminApi

KEY = "sk-ant-admin01-Zq9TESTKEYdoNotLeak-7f3c2b1a"
NOW = datetime(2026, 3, 10, 13, 37, tzinfo=UTC)
WORKSPACES = (None, "wrkspc_01Alpha", "wrkspc_01Beta")  # None is the default workspace
MODELS = ("claude-sonnet-4-5-20250929", "claude-opus-4-6", "claude-haiku-4-5-20251001")
TOKEN_TYPES = (
    "uncached_input_tokens", "output_tokens", "cache_read_input_tokens",
    "cache_creation.ephemeral_5m_input_tokens", "cache_creation.ephemeral_1h_input_tokens",
)
USAGE_ATTR = {
    "uncached_input_tokens": "input", "output_tokens": "output", "cache_read_input_tokens": "cache_read",
    "cache_creation.ephemeral_5m_input_tokens": "cache_write_5m",
    "cache_creation.ephemeral_1h_input_tokens": "cache_write_1h",
}


@dataclass(frozen=True)
class Entry:
    at: datetime
    amount_cents: Decimal
    workspace_id: str | None
    model: str
    token_type: str
    tokens: int
    api_key_id: str


@dataclass
class Dataset:
    entries: list[Entry] = field(default_factory=list)

    def load_into(self, fake: FakeAdminApi) -> list[int]:
        return [fake.add_spend(e.at, e.amount_cents, workspace_id=e.workspace_id, model=e.model,
                               token_type=e.token_type, tokens=e.tokens, api_key_id=e.api_key_id)
                for e in self.entries]

    def billed(self, now: datetime) -> dict[tuple[date, str | None], Decimal]:
        """Expected billed USD per (UTC day, workspace) as of ``now``: cents / 100, exactly."""
        out: dict[tuple[date, str | None], Decimal] = defaultdict(Decimal)
        for e in self.entries:
            if e.at < now:
                out[(e.at.date(), e.workspace_id)] += e.amount_cents / 100
        return dict(out)

    def billed_day(self, now: datetime, day: date, workspaces: set[str | None] | None = None) -> Decimal:
        return sum((v for (d, ws), v in self.billed(now).items()
                    if d == day and (workspaces is None or ws in workspaces)), Decimal(0))

    def tokens(self, now: datetime) -> dict[tuple[date, str, str], int]:
        """Expected tokens per (day, model, Tokens attribute)."""
        out: dict[tuple[date, str, str], int] = defaultdict(int)
        for e in self.entries:
            if e.at < now:
                out[(e.at.date(), e.model, USAGE_ATTR[e.token_type])] += e.tokens
        return dict(out)


def generate(seed: int, *, now: datetime = NOW, days: int = 40, per_day: int = 12) -> Dataset:
    """Spend over ``days`` days up to and past ``now`` (entries after ``now`` have not accrued yet)."""
    rng = random.Random(seed)
    ds = Dataset()
    first = (now - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    day = first
    while day <= now.replace(hour=23, minute=59):
        for _ in range(per_day):
            at = day + timedelta(minutes=rng.randrange(24 * 60), seconds=rng.randrange(60))
            # cents with up to four fractional digits: "1234.5678" cents is $12.345678
            cents = Decimal(rng.randrange(0, 5_000_000)) / Decimal(10) ** rng.choice((0, 1, 2, 3, 4))
            ds.entries.append(Entry(
                at=at, amount_cents=cents, workspace_id=rng.choice(WORKSPACES), model=rng.choice(MODELS),
                token_type=rng.choice(TOKEN_TYPES), tokens=rng.randrange(1, 200_000),
                api_key_id=rng.choice(("apikey_01One", "apikey_01Two")),
            ))
        day += timedelta(days=1)
    # make sure the interesting cases are there whatever the seed: default workspace,
    # fractional cents, spend later today that has not accrued yet
    ds.entries.append(Entry(now - timedelta(hours=30), Decimal("0.0001"), None, MODELS[0], TOKEN_TYPES[0], 1,
                            "apikey_01One"))
    ds.entries.append(Entry(now - timedelta(minutes=1), Decimal("123.45"), None, MODELS[1], TOKEN_TYPES[1], 77,
                            "apikey_01Two"))
    ds.entries.append(Entry(now + timedelta(minutes=1), Decimal("999.99"), "wrkspc_01Alpha", MODELS[0],
                            TOKEN_TYPES[1], 55, "apikey_01One"))
    return ds


class VirtualTime:
    """A monotonic clock that only moves when someone sleeps: waits are asserted, not spent."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)
