"""The configuration: its model (frozen dataclasses), how a YAML file becomes one, and the web config.

    >>> from exporter.config import parse_config
    >>> parse_config({"pools": [{"name": "p", "credit_usd": 50, "match": {"workspaces": ["default"]}}]}).pools[0].credit_usd
    Decimal('50')
"""

from exporter.config.load import (
    default_claude_dirs,
    default_config,
    load_config,
    parse_config,
    parse_duration,
    parse_listen,
)
from exporter.config.model import (
    MIN_POLL_INTERVAL,
    PLAN_CREDITS,
    PRICE_KEYS,
    SOURCE_KINDS,
    USAGE_KINDS,
    AdminApiConfig,
    BreakerWebhookConfig,
    Config,
    ConfigError,
    OtlpConfig,
    PeriodConfig,
    PoolConfig,
    PoolMatch,
    PriceOverride,
    SourceConfig,
    WindowRef,
)

__all__ = [
    "MIN_POLL_INTERVAL", "PLAN_CREDITS", "PRICE_KEYS", "SOURCE_KINDS", "AdminApiConfig", "BreakerWebhookConfig",
    "Config", "ConfigError", "OtlpConfig", "PeriodConfig", "PoolConfig", "PoolMatch", "PriceOverride", "SourceConfig",
    "USAGE_KINDS", "WindowRef", "default_claude_dirs", "default_config", "load_config", "parse_config",
    "parse_duration", "parse_listen",
]
