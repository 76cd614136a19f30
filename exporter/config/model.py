"""What a config says, as frozen dataclasses, and the limits every value is checked against."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path


DEFAULT_LISTEN = "0.0.0.0:9833"
DEFAULT_STATE_DIR = "~/.local/state/claude-budget-exporter"
DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_KEY_ENV = "ANTHROPIC_ADMIN_API_KEY"
MIN_POLL_INTERVAL = 60.0
# Bounds on what the config may say: far past any real use, so that no stored or computed figure
# can overflow what renders it (Decimal's 28 digits, a timer's range). Written once, used below.
#: a pool's credit in USD: a billion dollars is past any Claude budget; a cent is the least a credit can be
MAX_CREDIT_USD = Decimal(10**9)
MIN_CREDIT_USD = Decimal("0.01")
#: a price override in USD per million tokens (or per 1,000 searches): list prices are under $100
MAX_PRICE_USD = Decimal(10**6)
#: characters per token of a jsonl source: tokenizers give a few; a byte fallback is under one
MIN_CHARS_PER_TOKEN, MAX_CHARS_PER_TOKEN = Decimal("0.1"), Decimal(1000)
#: seconds: a log refresh at least hourly (/healthz calls a refresher stale after 10 intervals), an
#: Admin API poll at least daily, and a bill taken as complete within the two days re-read every poll
MAX_REFRESH_INTERVAL = 3600.0
MAX_POLL_INTERVAL = 86400.0
MAX_SETTLE_AFTER = 2 * 86400.0
# Tests and the demo poll a local fake Admin API faster than Anthropic allows for the real one.
FAST_POLL_ENV = "CLAUDE_BUDGET_EXPORTER_FAST_POLL"
SOURCE_KINDS = ("claude_code", "cli_json", "jsonl", "rate_limits", "otlp")
USAGE_KINDS = ("claude_code", "cli_json", "jsonl", "otlp")  # the kinds whose records are requests with a cost
# The Agent SDK's monthly credit per user or seat, in USD, as Anthropic states it from
# 2026-06-15 (no rollover): an assumption dated 2026-11 that ``credit_usd`` overrides.
PLAN_CREDITS = {
    "pro": Decimal(20), "max5x": Decimal(100), "max20x": Decimal(200),
    "team_standard": Decimal(20), "team_premium": Decimal(100),  # per seat
    "enterprise_usage": Decimal(20),  # usage-based Enterprise, per user
    "enterprise_premium": Decimal(200),  # seat-based Enterprise, per Premium seat
    "enterprise_standard": Decimal(0),  # seat-based Enterprise, Standard seats: no Agent SDK credit
    "team": Decimal(100),  # deprecated: the old name of team_premium
}
# plans whose credit is per seat (or per user), so they take ``seats``
SEAT_PLANS = frozenset({"team_standard", "team_premium", "enterprise_usage", "enterprise_premium",
                        "enterprise_standard", "team"})
SEAT_TIERS = {"standard": "team_standard", "premium": "team_premium"}  # plan: team, seats: {tier: n}
PRICE_KEYS = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")
JSONL_FIELDS = (
    "timestamp",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "input_chars",
    "output_chars",
    "cost_usd",
    "request_id",
    "entrypoint",
)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(Exception):
    """Raised with every problem found; each problem is ``path: message``."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


@dataclass(frozen=True)
class AdminApiConfig:
    #: the organisation's name: the ``org`` label of its billed series ("default" for a single one)
    name: str = "default"
    key_env: str = DEFAULT_KEY_ENV
    key_file: Path | None = None
    base_url: str = DEFAULT_BASE_URL
    poll_interval: float = 300.0
    claude_code_report: bool = False
    settle_after: float = 6 * 3600.0  # seconds after a UTC day's end before its bill counts as complete
    #: which billed endpoints: the Usage and Cost Analytics API, the legacy cost and usage
    #: reports, or the analytics API falling back to the legacy one where it is refused
    api: str = "auto"
    #: per-actor series (users, service accounts): none, the top N by spend then "other", or a short
    #: stable hash in place of the email
    actor_labels: str = "none"
    actor_top_n: int = 20
    #: each organisation and workspace spend limit (USD) becomes a pool of its own
    pools_from_spend_limits: bool = False

    def read_key(self) -> str | None:
        """The admin key, or None. Read at use, never stored in the config's repr."""
        if self.key_file is not None:
            try:
                key = self.key_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                return None
            return key or None
        key = os.environ.get(self.key_env, "").strip()
        return key or None

    def key_problem(self) -> str | None:
        """Why no admin key can be read, in words for a person (never the key); None when one can."""
        if self.key_file is not None:
            try:
                key = self.key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                return f"cannot read the admin key file {self.key_file}: {exc.strerror or exc}"
            except UnicodeDecodeError:
                return f"the admin key file {self.key_file} is not text"
            return None if key else f"the admin key file {self.key_file} is empty"
        if not os.environ.get(self.key_env, "").strip():
            return f"no admin key in ${self.key_env} (it is not set, or empty)"
        return None


DEFAULT_OTLP_LISTEN = "0.0.0.0:4318"  # OTLP/HTTP's own port
#: attributes an otlp source may keep, per source: each is a label value set and a pool dimension
MAX_OTLP_ATTRIBUTES = 8


@dataclass(frozen=True)
class OtlpConfig:
    """An ``otlp`` source: Claude Code's own telemetry, received over OTLP/HTTP (exporter.otlp)."""

    listen: str = DEFAULT_OTLP_LISTEN
    #: a bearer token the senders must give (OTEL_EXPORTER_OTLP_HEADERS); none: the web config's basic auth
    token_env: str | None = None
    token_file: Path | None = None
    #: telemetry attributes kept per request (user.email, organization.id, team, ...): matchable in pools
    attributes: tuple[str, ...] = ()
    #: per-value series of those attributes: none, the top N of the month then "other", or a short hash
    attribute_labels: str = "none"
    attribute_top_n: int = 20
    #: how long a request, an event or a delta point is remembered: a retry within it never counts twice
    dedup_window: float = 900.0
    max_body_bytes: int = 8 << 20  # as sent (gzip or not); unpacked, 4 times that at most


@dataclass(frozen=True)
class SourceConfig:
    name: str
    kind: str
    paths: tuple[str, ...]
    fields: Mapping[str, str] = field(default_factory=dict)
    chars_per_token: Decimal = Decimal(4)
    otlp: OtlpConfig | None = None  # kind otlp: the receiver


@dataclass(frozen=True)
class PriceOverride:
    """USD per million tokens; None keeps the shipped price."""

    input: Decimal | None = None
    output: Decimal | None = None
    cache_read: Decimal | None = None
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None
    web_search: Decimal | None = None  # USD per 1,000 searches
    long_context_threshold: int | None = None
    long_context: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class PoolMatch:
    workspaces: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = ()
    actors: tuple[str, ...] = ()  # analytics billing: user email or user_/svac_ id
    orgs: tuple[str, ...] = ()  # several organisations: whose bills count (none named: all)
    products: tuple[str, ...] = ()  # analytics billing: claude_code, messages_api, ...
    sources: tuple[str, ...] = ()
    entrypoints: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    #: otlp sources: telemetry attribute -> the values that count (every attribute named must match)
    telemetry: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class PeriodConfig:
    reset_day: int = 1  # every month: the day of the month it resets on
    timezone: str = "UTC"
    reset_time: str = "00:00"
    every: str = "month"  # month, week or day
    weekday: int = 0  # every week: the day it resets on, 0 = Monday
    #: a rolling window of this many hours (5h, 24h, 7d, 30d) instead of a calendar period; 0: calendar
    rolling_hours: int = 0


@dataclass(frozen=True)
class WindowRef:
    """A pool on a subscription window: the ``rate_limits`` source reporting it, and which window."""

    source: str
    name: str  # five_hour, seven_day, seven_day_opus or seven_day_sonnet


@dataclass(frozen=True)
class PoolConfig:
    name: str
    credit_usd: Decimal
    plan: str = ""
    seats: int | None = None  # all seats, whatever their tier
    team: str = ""
    period: PeriodConfig = field(default_factory=PeriodConfig)
    match: PoolMatch = field(default_factory=PoolMatch)
    open_below: Decimal = Decimal("0.05")
    #: an Anthropic spend limit (``spl_...``) whose amount, period and period-to-date spend the pool takes
    spend_limit: str | None = None
    #: a subscription window: the pool's headroom is 1 - its used fraction; no credit, period or match
    window: WindowRef | None = None


@dataclass(frozen=True)
class BreakerWebhookConfig:
    """Bearer token for the Alertmanager webhook; None means no token is required."""

    token_env: str | None = None
    token_file: Path | None = None

    def read_token(self) -> str | None:
        if self.token_file is not None:
            try:
                return self.token_file.read_text(encoding="utf-8").strip() or None
            except OSError:
                return None
        if self.token_env:
            return os.environ.get(self.token_env, "").strip() or None
        return None


@dataclass(frozen=True)
class Config:
    listen: str = DEFAULT_LISTEN
    state_dir: Path = Path(DEFAULT_STATE_DIR).expanduser()
    admin_api: AdminApiConfig | None = None
    sources: tuple[SourceConfig, ...] = ()
    price_overrides: Mapping[str, PriceOverride] = field(default_factory=dict)
    pools: tuple[PoolConfig, ...] = ()
    refresh_interval: float = 15.0
    breaker_webhook: BreakerWebhookConfig = field(default_factory=BreakerWebhookConfig)
    web_config_file: Path | None = None
    origin: str = "built-in default"
    deprecations: tuple[str, ...] = ()  # "path: what to write instead", said in the log at start
    #: every organisation polled, ``admin_api`` first (several when ``admin_api`` is a list)
    orgs: tuple[AdminApiConfig, ...] = ()

    def __post_init__(self) -> None:
        if not self.orgs and self.admin_api is not None:
            object.__setattr__(self, "orgs", (self.admin_api,))
        elif self.orgs and self.admin_api is None:
            object.__setattr__(self, "admin_api", self.orgs[0])

    @property
    def several_orgs(self) -> bool:
        """``admin_api`` is a list of named organisations (each billed apart, in a state file of its own)."""
        return len(self.orgs) > 1 or (len(self.orgs) == 1 and self.orgs[0].name != "default")

    def source(self, name: str) -> SourceConfig | None:
        return next((s for s in self.sources if s.name == name), None)

    def pool(self, name: str) -> PoolConfig | None:
        return next((p for p in self.pools if p.name == name), None)
