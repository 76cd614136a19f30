"""Configuration: the YAML file (or the built-in default), checked key by key.

Every problem is collected with its path in the file (``pools[0].period.reset_day:
must be 1..31``) so that one run of ``validate-config`` shows them all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


from exporter.config.model import (
    AdminApiConfig, BreakerWebhookConfig, Config, ConfigError, DEFAULT_BASE_URL, DEFAULT_KEY_ENV, DEFAULT_LISTEN,
    DEFAULT_STATE_DIR, DURATION_RE, FAST_POLL_ENV, JSONL_FIELDS, MAX_CHARS_PER_TOKEN, MAX_CREDIT_USD,
    MAX_POLL_INTERVAL, MAX_PRICE_USD, MAX_REFRESH_INTERVAL, MAX_SETTLE_AFTER, MIN_CHARS_PER_TOKEN, MIN_CREDIT_USD,
    MIN_POLL_INTERVAL, NAME_RE, PLAN_CREDITS, PRICE_KEYS, OtlpConfig, PeriodConfig, PoolConfig, PoolMatch,
    PriceOverride, DEFAULT_OTLP_LISTEN, MAX_OTLP_ATTRIBUTES,
    SEAT_PLANS, SEAT_TIERS, SOURCE_KINDS, SourceConfig, WindowRef, _DURATION_UNITS,
)

def parse_duration(text: str) -> float:
    """``90s``, ``5m``, ``1h`` to seconds; raises ValueError otherwise."""
    m = DURATION_RE.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"must be a duration like 90s, 5m or 1h, not {text!r}")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit():
        raise ValueError(f"must be HOST:PORT, not {text!r}")
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port {int(port)} is out of range: a port is 0..65535 (in {text!r})")
    return (host.strip("[]") or "0.0.0.0", int(port))


def default_claude_dirs(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The folders Claude Code writes transcripts to (``$CLAUDE_CONFIG_DIR`` wins)."""
    env = os.environ if env is None else env
    configured = env.get("CLAUDE_CONFIG_DIR", "").strip()
    if configured:
        out = []
        for part in configured.split(","):
            part = part.strip()
            if part:
                out.append(str(Path(part).expanduser() / "projects"))
        if out:
            return tuple(out)
    return ("~/.claude/projects", "~/.config/claude/projects")


def default_config(env: Mapping[str, str] | None = None) -> Config:
    """The built-in default: tail Claude Code's folders; poll the Admin API only with a key."""
    env = os.environ if env is None else env
    admin = AdminApiConfig() if env.get(DEFAULT_KEY_ENV, "").strip() else None
    return Config(
        admin_api=admin,
        sources=(SourceConfig(name="claude-code", kind="claude_code", paths=default_claude_dirs(env)),),
    )


# --------------------------------------------------------------------------- checking


class _Checker:
    """Walks the raw YAML, collecting ``path: problem`` strings instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.deprecations: list[str] = []

    def err(self, path: str, msg: str) -> None:
        self.problems.append(f"{path}: {msg}")

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.err(path, f"must be a mapping, not {_typename(value)}")
            return {}
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                self.err(_join(path, _key_text(key)), f"unknown key (allowed: {', '.join(allowed)})")
        return value

    def string(self, value: Any, path: str, *, required: bool = False, default: str = "") -> str:
        if value is None:
            if required:
                self.err(path, "is required")
            return default
        if not isinstance(value, str) or (required and not value.strip()):
            self.err(path, f"must be a non-empty string, not {_typename(value)}")
            return default
        return value

    def name(self, value: Any, path: str) -> str:
        text = self.string(value, path, required=True)
        if text and not NAME_RE.match(text):
            self.err(path, "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return text

    def boolean(self, value: Any, path: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.err(path, f"must be true or false, not {_typename(value)}")
            return default
        return value

    def decimal(
        self, value: Any, path: str, *, minimum: Decimal | None = Decimal(0), maximum: Decimal | None = None,
        exclusive_min: bool = False,
    ) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            self.err(path, f"must be a number, not {_typename(value)}")
            return None
        try:
            # str() first so that 0.1 from YAML is 0.1, not the float's binary expansion
            number = Decimal(str(value))
        except InvalidOperation:
            self.err(path, f"must be a number, not {value!r}")
            return None
        if not number.is_finite():
            self.err(path, "must be a finite number")
            return None
        if minimum is not None and (number <= minimum if exclusive_min else number < minimum):
            self.err(path, f"must be {'greater than' if exclusive_min else 'at least'} {minimum}")
            return None
        if maximum is not None and number > maximum:
            self.err(path, f"must be at most {maximum}")
            return None
        return number

    def integer(self, value: Any, path: str, lo: int, hi: int) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.err(path, f"must be an integer {lo}..{hi}, not {_typename(value)}")
            return None
        if not lo <= value <= hi:
            self.err(path, f"must be {lo}..{hi}")
            return None
        return value

    def string_list(self, value: Any, path: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.err(path, f"must be a list of strings, not {_typename(value)}")
            return ()
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.err(f"{path}[{i}]", f"must be a non-empty string, not {_typename(item)}")
            else:
                out.append(item)
        return tuple(out)

    def duration(self, value: Any, path: str, default: float, minimum: float = 0.0,
                 maximum: float | None = None, why: str = "") -> float:
        if value is None:
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.err(path, str(exc))
            return default
        if seconds < minimum:
            self.err(path, f"must be at least {_fmt_seconds(minimum)}")
            return default
        if maximum is not None and not seconds <= maximum:  # "not <=": also refuses inf
            self.err(path, f"must be at most {_fmt_seconds(maximum)}{why}")
            return default
        return seconds

    def path(self, value: Any, path: str) -> Path | None:
        text = self.string(value, path)
        if not text:
            return None
        try:
            return Path(text).expanduser()
        except RuntimeError:  # "~nobody": no such user, no home to expand to
            self.err(path, f"cannot expand {text.split('/', 1)[0]!r}: no such user's home")
            return None


def _key_text(key: Any) -> str:
    """A key as it can stand in a path: quoted when it is empty or would blur the ``path: message`` form."""
    text = str(key)
    return text if text.strip() == text and text and ":" not in text and "\n" not in text else repr(text)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _typename(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


def _fmt_seconds(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g}d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    return f"{seconds / 60:g}m" if seconds >= 60 else f"{seconds:g}s"


_TOP_KEYS = ("listen", "state_dir", "admin_api", "sources", "pricing", "pools", "refresh_interval",
             "breaker_webhook", "web_config_file")


def load_config(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Config:
    """The config at ``path``, or the built-in default when ``path`` is None."""
    if path is None:
        return default_config(env)
    raw = read_yaml_file(path)
    try:
        return parse_config(raw, origin=str(path), env=env)
    except RecursionError:  # a document nested deeply enough to load but not to check
        raise ConfigError(["(file): nested too deeply to read"], str(path)) from None


ADMIN_APIS = ("auto", "analytics", "legacy")
PERIOD_EVERY = ("month", "week", "day")
POOL_WINDOWS = ("five_hour", "seven_day", "seven_day_opus", "seven_day_sonnet")  # as exporter.core.windows
ROLLING_HOURS = {"5h": 5, "24h": 24, "7d": 7 * 24, "30d": 30 * 24}  # period.rolling: the window in hours
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ACTOR_LABELS = ("none", "top", "hashed")
MAX_ACTOR_TOP_N = 200  # labels per family: past this a per-actor series is no longer a dashboard
MATCH_KEYS = ("workspaces", "api_keys", "actors", "products", "orgs", "sources", "entrypoints", "models")
OTLP_KEYS = ("listen", "token_env", "token_file", "attributes", "attribute_labels", "attribute_top_n",
             "dedup_window", "max_body_bytes")
#: a telemetry attribute's name as OpenTelemetry writes them (user.email, organization.id, team)
ATTRIBUTE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
MAX_TELEMETRY_VALUES = 100  # values a pool's telemetry match lists for one attribute
MAX_ORGS = 20  # organisations one exporter polls: each is an org label value and a poller
MAX_NESTING = 64  # no config nests past a handful of levels; the YAML parser takes seconds to fail at 3,000


def _flow_depth(text: str) -> int:
    """The deepest nesting of [ and { in the text (quotes not told apart: an upper bound). A linear
    scan, so a hostile file is refused at once instead of deep in the parser's recursion."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}" and depth:
            depth -= 1
    return deepest


def read_yaml_file(path: str | os.PathLike[str]) -> Any:
    """A YAML file's document; ConfigError naming the line and column of a syntax error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"(file): cannot read: {exc.strerror or exc}"], str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError(["(file): is not UTF-8 text"], str(path)) from None
    if _flow_depth(text) > MAX_NESTING:
        raise ConfigError([f"(file): nested too deeply to read (more than {MAX_NESTING} levels)"], str(path))
    import yaml  # here, not at start: a command without a config file never needs it (20 ms)

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: not valid YAML: {problem}"], str(path)) from None
    except RecursionError:
        raise ConfigError(["(file): nested too deeply to read"], str(path)) from None


def parse_config(raw: Any, origin: str = "config", env: Mapping[str, str] | None = None) -> Config:
    """Check a parsed YAML document; raise ConfigError listing every problem."""
    env = os.environ if env is None else env
    c = _Checker()
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): must be a mapping of keys such as listen, sources, pools"], origin)
    top = c.mapping(raw, "", _TOP_KEYS)

    listen = c.string(top.get("listen"), "listen", default=DEFAULT_LISTEN)
    try:
        parse_listen(listen)
    except ValueError as exc:
        c.err("listen", str(exc))
    state_dir = c.path(top.get("state_dir"), "state_dir") or Path(DEFAULT_STATE_DIR).expanduser()
    refresh = c.duration(top.get("refresh_interval"), "refresh_interval", 15.0, minimum=0.1,
                         maximum=MAX_REFRESH_INTERVAL)

    fast = env.get(FAST_POLL_ENV) == "1"
    orgs: tuple[AdminApiConfig, ...] = ()
    if isinstance(top.get("admin_api"), list):
        parsed = []
        for i, item in enumerate(top["admin_api"][:MAX_ORGS + 1]):
            name = c.name(item.get("name") if isinstance(item, dict) else None, f"admin_api[{i}].name")
            body = {k: v for k, v in item.items() if k != "name"} if isinstance(item, dict) else item
            parsed.append(replace(_parse_admin(c, body, f"admin_api[{i}]", fast), name=name))
        if len(top["admin_api"]) > MAX_ORGS:
            c.err("admin_api", f"at most {MAX_ORGS} organisations")
        if not parsed:
            c.err("admin_api", "an empty list: give one organisation or more, or leave admin_api out")
        names = [o.name for o in parsed]
        for i, name in enumerate(names):
            if names.index(name) != i:
                c.err(f"admin_api[{i}].name", f"duplicate organisation name {name!r}")
        orgs = tuple(parsed)
        admin = orgs[0] if orgs else None
    else:
        admin = _parse_admin(c, top.get("admin_api"), "admin_api", fast) if "admin_api" in top else None
        orgs = (admin,) if admin is not None else ()

    if "sources" in top:
        sources = _parse_sources(c, top.get("sources"), "sources")
    else:
        sources = default_config(env).sources
    source_names = {s.name for s in sources}

    pricing = c.mapping(top.get("pricing"), "pricing", ("overrides",))
    overrides = _parse_overrides(c, pricing.get("overrides"), "pricing.overrides")

    pools = _parse_pools(c, top.get("pools"), "pools", source_names)
    _check_source_kinds(c, pools, sources)
    _check_telemetry(c, pools, sources)
    listens = [(i, s.otlp.listen) for i, s in enumerate(sources) if s.otlp is not None]
    for i, addr in listens:
        if [a for _, a in listens].count(addr) > 1 or addr == listen:
            c.err(f"sources[{i}].listen", f"{addr} is also another listener's address")
    org_names = {o.name for o in orgs}
    for i, pool in enumerate(pools):
        for j, org in enumerate(pool.match.orgs):
            if org not in org_names:
                c.err(f"pools[{i}].match.orgs[{j}]", f"no organisation named {org!r} under admin_api")
        if pool.spend_limit is not None and admin is None:
            c.err(f"pools[{i}].spend_limit", "a spend limit comes from the Admin API: configure admin_api")
    if orgs and all(o.api == "legacy" for o in orgs):
        for i, pool in enumerate(pools):
            for k in ("actors", "products"):
                if getattr(pool.match, k):
                    c.err(f"pools[{i}].match.{k}", "only the Usage and Cost Analytics API attributes spend to "
                                                   "actors and products; admin_api.api is legacy")

    hook = c.mapping(top.get("breaker_webhook"), "breaker_webhook", ("token_env", "token_file"))
    webhook = BreakerWebhookConfig(
        token_env=c.string(hook.get("token_env"), "breaker_webhook.token_env") or None,
        token_file=c.path(hook.get("token_file"), "breaker_webhook.token_file"),
    )
    web_config = c.path(top.get("web_config_file"), "web_config_file")

    if c.problems:
        raise ConfigError(c.problems, origin)
    return Config(
        deprecations=tuple(c.deprecations),
        listen=listen,
        state_dir=state_dir,
        admin_api=admin,
        orgs=orgs,
        sources=sources,
        price_overrides=overrides,
        pools=pools,
        refresh_interval=refresh,
        breaker_webhook=webhook,
        web_config_file=web_config,
        origin=origin,
    )


def _parse_admin(c: _Checker, value: Any, path: str, fast: bool = False) -> AdminApiConfig:
    m = c.mapping(value, path, ("key_env", "key_file", "base_url", "poll_interval", "claude_code_report",
                                "settle_after", "api", "actor_labels", "actor_top_n",
                                "pools_from_spend_limits"))
    key_env = c.string(m.get("key_env"), f"{path}.key_env", default=DEFAULT_KEY_ENV)
    key_file = c.path(m.get("key_file"), f"{path}.key_file")
    if "key_env" in m and "key_file" in m:
        c.err(path, "give key_env or key_file, not both")
    base_url = c.string(m.get("base_url"), f"{path}.base_url", default=DEFAULT_BASE_URL).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", base_url):
        c.err(f"{path}.base_url", f"must be an http(s) URL, not {base_url!r}")
    poll = c.duration(m.get("poll_interval"), f"{path}.poll_interval", 300.0,
                      minimum=0.5 if fast else MIN_POLL_INTERVAL, maximum=MAX_POLL_INTERVAL)
    ccr = c.boolean(m.get("claude_code_report"), f"{path}.claude_code_report", False)
    settle = c.duration(m.get("settle_after"), f"{path}.settle_after", 6 * 3600.0, maximum=MAX_SETTLE_AFTER,
                        why=" (the last two days are re-read every poll)")
    api = c.string(m.get("api"), f"{path}.api", default="auto")
    if api not in ADMIN_APIS:
        c.err(f"{path}.api", f"must be one of {', '.join(ADMIN_APIS)}, not {api!r}")
    actor_labels = c.string(m.get("actor_labels"), f"{path}.actor_labels", default="none")
    if actor_labels not in ACTOR_LABELS:
        c.err(f"{path}.actor_labels", f"must be one of {', '.join(ACTOR_LABELS)}, not {actor_labels!r}")
    top_n = c.integer(m.get("actor_top_n"), f"{path}.actor_top_n", 1, MAX_ACTOR_TOP_N) or 20
    return AdminApiConfig(key_env=key_env, key_file=key_file, base_url=base_url, poll_interval=poll,
                          claude_code_report=ccr, settle_after=settle, api=api, actor_labels=actor_labels,
                          actor_top_n=top_n,
                          pools_from_spend_limits=c.boolean(m.get("pools_from_spend_limits"),
                                                            f"{path}.pools_from_spend_limits", False))


def _parse_sources(c: _Checker, value: Any, path: str) -> tuple[SourceConfig, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        c.err(path, f"must be a list of sources, not {_typename(value)}")
        return ()
    out: list[SourceConfig] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        p = f"{path}[{i}]"
        otlp_kind = isinstance(item, dict) and item.get("kind") == "otlp"
        m = c.mapping(item, p, ("name", "kind", *OTLP_KEYS) if otlp_kind else
                      ("name", "kind", "paths", "fields", "chars_per_token"))
        if not isinstance(item, dict):
            continue
        if otlp_kind:
            name = c.name(m.get("name"), f"{p}.name")
            if name in seen:
                c.err(f"{p}.name", f"duplicate source name {name!r}")
            seen.add(name)
            out.append(SourceConfig(name=name, kind="otlp", paths=(), otlp=_parse_otlp(c, m, p)))
            continue
        name = c.name(m.get("name"), f"{p}.name")
        if name in seen:
            c.err(f"{p}.name", f"duplicate source name {name!r}")
        seen.add(name)
        kind = c.string(m.get("kind"), f"{p}.kind", required=True)
        if kind and kind not in SOURCE_KINDS:
            c.err(f"{p}.kind", f"must be one of {', '.join(SOURCE_KINDS)}, not {kind!r}")
        paths = c.string_list(m.get("paths"), f"{p}.paths")
        if not paths and "paths" in m:
            c.err(f"{p}.paths", "must name at least one folder or glob")
        if "paths" not in m:
            if kind == "claude_code":
                paths = default_claude_dirs()
            else:
                c.err(f"{p}.paths", "is required")
        fields: dict[str, str] = {}
        if "fields" in m:
            if kind != "jsonl":
                c.err(f"{p}.fields", "only jsonl sources take a field mapping")
            fm = c.mapping(m.get("fields"), f"{p}.fields", JSONL_FIELDS)
            for k, v in fm.items():
                if k in JSONL_FIELDS:
                    fields[k] = c.string(v, f"{p}.fields.{k}", required=True)
        elif kind == "jsonl":
            fields = {k: k for k in JSONL_FIELDS}
        cpt = c.decimal(m.get("chars_per_token"), f"{p}.chars_per_token", minimum=MIN_CHARS_PER_TOKEN,
                        maximum=MAX_CHARS_PER_TOKEN)
        if "chars_per_token" in m and kind != "jsonl":
            c.err(f"{p}.chars_per_token", "only jsonl sources count characters")
        out.append(SourceConfig(name=name, kind=kind, paths=paths, fields=fields,
                                chars_per_token=cpt if cpt is not None else Decimal(4)))
    return tuple(out)


def _parse_otlp(c: _Checker, m: dict[str, Any], p: str) -> OtlpConfig:
    """An otlp source's receiver: where it listens, who may send, which attributes it keeps."""
    listen = c.string(m.get("listen"), f"{p}.listen", default=DEFAULT_OTLP_LISTEN)
    try:
        parse_listen(listen)
    except ValueError as exc:
        c.err(f"{p}.listen", str(exc))
    token_env = c.string(m.get("token_env"), f"{p}.token_env") or None
    token_file = c.path(m.get("token_file"), f"{p}.token_file")
    if token_env and token_file is not None:
        c.err(p, "give token_env or token_file, not both")
    attributes = c.string_list(m.get("attributes"), f"{p}.attributes")
    for j, a in enumerate(attributes):
        if not ATTRIBUTE_RE.match(a):
            c.err(f"{p}.attributes[{j}]", f"must be an attribute name such as team or user.email, not {a!r}")
        elif attributes.index(a) != j:
            c.err(f"{p}.attributes[{j}]", f"{a!r} is listed twice")
    if len(attributes) > MAX_OTLP_ATTRIBUTES:
        c.err(f"{p}.attributes", f"at most {MAX_OTLP_ATTRIBUTES} attributes")
    labels = c.string(m.get("attribute_labels"), f"{p}.attribute_labels", default="none")
    if labels not in ACTOR_LABELS:
        c.err(f"{p}.attribute_labels", f"must be one of {', '.join(ACTOR_LABELS)}, not {labels!r}")
    top_n = c.integer(m.get("attribute_top_n"), f"{p}.attribute_top_n", 1, MAX_ACTOR_TOP_N) or 20
    window = c.duration(m.get("dedup_window"), f"{p}.dedup_window", 900.0, minimum=60.0, maximum=86400.0,
                        why=" (what is remembered is held in memory)")
    max_body = c.integer(m.get("max_body_bytes"), f"{p}.max_body_bytes", 1024, 64 << 20) or (8 << 20)
    return OtlpConfig(listen=listen, token_env=token_env, token_file=token_file, attributes=attributes,
                      attribute_labels=labels, attribute_top_n=top_n, dedup_window=window, max_body_bytes=max_body)


def _parse_telemetry(c: _Checker, value: Any, path: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A pool's ``match.telemetry``: ``{attribute: [values]}``, each attribute a closed list of values."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        c.err(path, f"must be a mapping of attribute to values (team: [platform]), not {_typename(value)}")
        return ()
    out = []
    for key, values in value.items():
        kp = _join(path, _key_text(key))
        if not isinstance(key, str) or not ATTRIBUTE_RE.match(key):
            c.err(kp, "must be an attribute name such as team or user.email")
            continue
        listed = c.string_list(values, kp)
        if not listed:
            c.err(kp, "names no values")
        elif len(listed) > MAX_TELEMETRY_VALUES:
            c.err(kp, f"at most {MAX_TELEMETRY_VALUES} values")
        out.append((key, tuple(listed)))
    return tuple(sorted(out))


def _check_telemetry(c: _Checker, pools: tuple[PoolConfig, ...], sources: tuple[SourceConfig, ...]) -> None:
    """A pool's telemetry match needs otlp sources among its sources that keep those attributes."""
    by_name = {s.name: s for s in sources}
    for i, pool in enumerate(pools):
        if not pool.match.telemetry:
            continue
        otlp = [by_name[n] for n in pool.match.sources if n in by_name and by_name[n].otlp is not None]
        if not otlp:
            c.err(f"pools[{i}].match.telemetry", "telemetry attributes come from otlp sources: name one in "
                                                 "match.sources")
            continue
        kept = {a for s in otlp for a in (s.otlp.attributes if s.otlp is not None else ())}
        for attribute, _ in pool.match.telemetry:
            if attribute not in kept:
                c.err(f"pools[{i}].match.telemetry.{attribute}",
                      f"no otlp source of the pool keeps {attribute!r}: add it to that source's attributes")


def _parse_overrides(c: _Checker, value: Any, path: str) -> dict[str, PriceOverride]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        c.err(path, f"must be a mapping of model name to prices, not {_typename(value)}")
        return {}
    out: dict[str, PriceOverride] = {}
    allowed = (*PRICE_KEYS, "web_search", "long_context_threshold", "long_context")
    for model, prices in value.items():
        p = f"{path}.{model}"
        if not isinstance(model, str) or not model.strip():
            c.err(p, "model name must be a non-empty string")
            continue
        m = c.mapping(prices, p, allowed)
        if not isinstance(prices, dict):
            continue
        kw: dict[str, Any] = {k: c.decimal(m.get(k), f"{p}.{k}", maximum=MAX_PRICE_USD)
                              for k in (*PRICE_KEYS, "web_search")}
        kw["long_context_threshold"] = c.integer(m.get("long_context_threshold"), f"{p}.long_context_threshold",
                                                 1, 100_000_000)
        lc = c.mapping(m.get("long_context"), f"{p}.long_context", PRICE_KEYS)
        kw["long_context"] = {k: d for k in PRICE_KEYS
                              if (d := c.decimal(lc.get(k), f"{p}.long_context.{k}", maximum=MAX_PRICE_USD))
                              is not None}
        out[model] = PriceOverride(**kw)
    return out


def _parse_seats(c: _Checker, value: Any, path: str, plan: str, given: bool) -> tuple[int | None, Decimal | None]:
    """``seats`` of a per-seat plan: a count, or for ``plan: team`` a count per tier
    (``{standard: 5, premium: 2}``). Returns (all seats, the plan's credit)."""
    if plan == "team" and isinstance(value, dict):
        tiers = c.mapping(value, path, tuple(SEAT_TIERS))
        counts = {t: c.integer(tiers.get(t), f"{path}.{t}", 0, 100_000) or 0 for t in SEAT_TIERS}
        if not any(counts.values()):
            c.err(path, "names no seats")
            return None, None
        return sum(counts.values()), sum((PLAN_CREDITS[SEAT_TIERS[t]] * n for t, n in counts.items()), Decimal(0))
    seats = c.integer(value, path, 1, 100_000)
    if plan in SEAT_PLANS and not given:
        c.err(path, f"is required with plan: {plan}")
    if given and plan not in SEAT_PLANS:
        c.err(path, f"only per-seat plans ({', '.join(sorted(SEAT_PLANS - {'team'}))}) take seats")
    if plan not in PLAN_CREDITS:
        return seats, None
    return seats, PLAN_CREDITS[plan] * ((seats or 1) if plan in SEAT_PLANS else 1)


def _parse_window_pool(c: _Checker, m: dict[str, Any], p: str, name: str, source_names: set[str]) -> PoolConfig:
    """A pool on a subscription window: ``window: {source: NAME, name: five_hour}``, a team and a breaker."""
    for k in ("plan", "credit_usd", "seats", "period", "match", "spend_limit"):
        if k in m:
            c.err(f"{p}.{k}", "a pool on a window has no credit, period or match: its headroom is what the window "
                              "has left")
    wm = c.mapping(m.get("window"), f"{p}.window", ("source", "name"))
    source = c.string(wm.get("source"), f"{p}.window.source", required=True)
    if source and source not in source_names:
        c.err(f"{p}.window.source", f"no source named {source!r}")
    window = c.string(wm.get("name"), f"{p}.window.name", required=True)
    if window and window not in POOL_WINDOWS:
        c.err(f"{p}.window.name", f"must be one of {', '.join(POOL_WINDOWS)}, not {window!r}")
    bm = c.mapping(m.get("breaker"), f"{p}.breaker", ("open_below",))
    open_below = c.decimal(bm.get("open_below"), f"{p}.breaker.open_below", maximum=Decimal(1))
    return PoolConfig(name=name, credit_usd=Decimal(0), team=c.string(m.get("team"), f"{p}.team"),
                      open_below=open_below if open_below is not None else Decimal("0.05"),
                      window=WindowRef(source=source, name=window))


def _check_source_kinds(c: _Checker, pools: tuple[PoolConfig, ...], sources: tuple[SourceConfig, ...]) -> None:
    """A window pool reads a rate_limits source; a pool's spend comes from the other kinds."""
    kinds = {s.name: s.kind for s in sources}
    for i, pool in enumerate(pools):
        if pool.window is not None:
            if kinds.get(pool.window.source, "rate_limits") != "rate_limits":
                c.err(f"pools[{i}].window.source", f"{pool.window.source!r} is a {kinds[pool.window.source]} "
                                                   "source: a window is reported by a rate_limits source")
            continue
        for j, src in enumerate(pool.match.sources):
            if kinds.get(src) == "rate_limits":
                c.err(f"pools[{i}].match.sources[{j}]", f"{src!r} reports subscription windows, not spend: "
                                                        "give it to a pool as window.source")


def _parse_pools(c: _Checker, value: Any, path: str, source_names: set[str]) -> tuple[PoolConfig, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        c.err(path, f"must be a list of pools, not {_typename(value)}")
        return ()
    out: list[PoolConfig] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        p = f"{path}[{i}]"
        m = c.mapping(item, p, ("name", "plan", "credit_usd", "seats", "team", "period", "match", "breaker",
                                "spend_limit", "window"))
        if not isinstance(item, dict):
            continue
        name = c.name(m.get("name"), f"{p}.name")
        if name in seen:
            c.err(f"{p}.name", f"duplicate pool name {name!r}")
        seen.add(name)
        if "window" in m:
            out.append(_parse_window_pool(c, m, p, name, source_names))
            continue
        plan = c.string(m.get("plan"), f"{p}.plan")
        if plan and plan not in PLAN_CREDITS:
            c.err(f"{p}.plan", f"must be one of {', '.join(k for k in PLAN_CREDITS if k != 'team')}, not {plan!r}")
        credit = c.decimal(m.get("credit_usd"), f"{p}.credit_usd", minimum=MIN_CREDIT_USD, maximum=MAX_CREDIT_USD)
        spend_limit = c.string(m.get("spend_limit"), f"{p}.spend_limit") or None
        if spend_limit is not None and not re.match(r"^spl_[A-Za-z0-9_-]{1,100}$", spend_limit):
            c.err(f"{p}.spend_limit", f"must be a spend limit id (spl_...), not {spend_limit!r}")
        if spend_limit is not None and ("credit_usd" in m or plan or "period" in m):
            c.err(p, "a pool on a spend_limit takes its credit and period from it: drop credit_usd, plan and period")
        elif plan and "credit_usd" in m:
            c.err(p, "give plan or credit_usd, not both")
        elif not plan and "credit_usd" not in m and spend_limit is None:
            c.err(p, "needs plan, credit_usd or spend_limit")
        seats, plan_credit = _parse_seats(c, m.get("seats"), f"{p}.seats", plan, "seats" in m)
        if plan == "team" and isinstance(m.get("seats"), int):
            c.deprecations.append(f"{p}.plan: 'team' is read as team_premium ($100 a seat); Team Standard seats "
                                  f"have $20: write team_standard, team_premium, or seats: {{standard: N, premium: M}}")
        if plan == "enterprise_standard":
            c.err(f"{p}.plan", "Enterprise Standard seats have no Agent SDK credit: give credit_usd")
        if credit is None:
            credit = plan_credit
        team = c.string(m.get("team"), f"{p}.team")

        pm = c.mapping(m.get("period"), f"{p}.period", ("every", "weekday", "reset_day", "timezone", "reset_time",
                                                         "rolling"))
        rolling = c.string(pm.get("rolling"), f"{p}.period.rolling")
        if rolling and rolling not in ROLLING_HOURS:
            c.err(f"{p}.period.rolling", f"must be one of {', '.join(ROLLING_HOURS)}, not {rolling!r}")
        if "rolling" in pm:
            for k in ("every", "weekday", "reset_day", "reset_time", "timezone"):
                if k in pm:
                    c.err(f"{p}.period.{k}", "a rolling period has no reset: give rolling or a calendar period")
        every = c.string(pm.get("every"), f"{p}.period.every", default="month")
        if every not in PERIOD_EVERY:
            c.err(f"{p}.period.every", f"must be one of {', '.join(PERIOD_EVERY)}, not {every!r}")
        weekday = c.string(pm.get("weekday"), f"{p}.period.weekday", default="monday").lower()
        if weekday not in WEEKDAYS:
            c.err(f"{p}.period.weekday", f"must be a day of the week (monday ... sunday), not {weekday!r}")
        if every != "week" and "weekday" in pm:
            c.err(f"{p}.period.weekday", "only a period of every: week has a weekday")
        if every != "month" and "reset_day" in pm:
            c.err(f"{p}.period.reset_day", "only a period of every: month has a reset_day (a week has a weekday)")
        reset_day = c.integer(pm.get("reset_day"), f"{p}.period.reset_day", 1, 31) or 1
        tz = c.string(pm.get("timezone"), f"{p}.period.timezone", default="UTC")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
            c.err(f"{p}.period.timezone", f"unknown time zone {tz!r}")
        reset_time = c.string(pm.get("reset_time"), f"{p}.period.reset_time", default="00:00")
        if not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", reset_time):
            c.err(f"{p}.period.reset_time", f"must be HH:MM, not {reset_time!r}")

        mm = c.mapping(m.get("match"), f"{p}.match", (*MATCH_KEYS, "telemetry"))
        match = PoolMatch(**{k: c.string_list(mm.get(k), f"{p}.match.{k}") for k in MATCH_KEYS},
                          telemetry=_parse_telemetry(c, mm.get("telemetry"), f"{p}.match.telemetry"))
        for j, src in enumerate(match.sources):
            if src not in source_names:
                c.err(f"{p}.match.sources[{j}]", f"no source named {src!r}")
        if spend_limit is None and not (match.workspaces or match.api_keys or match.actors or match.products
                                        or match.sources):
            c.err(f"{p}.match", "names no workspaces, api_keys, actors, products or sources, so the pool would "
                                "take no spend")

        bm = c.mapping(m.get("breaker"), f"{p}.breaker", ("open_below",))
        open_below = c.decimal(bm.get("open_below"), f"{p}.breaker.open_below", maximum=Decimal(1))
        out.append(PoolConfig(
            name=name, credit_usd=credit if credit is not None else Decimal(0), plan=plan, seats=seats, team=team,
            period=PeriodConfig(reset_day=reset_day, timezone=tz, reset_time=reset_time, every=every,
                                weekday=WEEKDAYS.index(weekday) if weekday in WEEKDAYS else 0,
                                rolling_hours=ROLLING_HOURS.get(rolling, 0)), match=match,
            open_below=open_below if open_below is not None else Decimal("0.05"), spend_limit=spend_limit,
        ))
    return tuple(out)
