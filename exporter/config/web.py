"""The web config file: TLS, basic auth and response headers, in the style of exporter-toolkit's ``web.yml``.

The same file a Go exporter takes works here for the keys both understand::

    tls_server_config:
      cert_file: server.crt        # relative paths are relative to this file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional
      client_ca_file: clients.crt                    # required by the Verify* types
      min_version: TLS12                             # TLS10..TLS13 [TLS12]
    basic_auth_users:
      prometheus: $2b$12$...       # bcrypt hashes only, never plain passwords
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}

Every problem is reported with its path, as in the main config. Checking a password
costs a bcrypt round (tens of milliseconds by design); a successful check is cached by
a hash of the credentials so that a scrape every 15 s pays it once, not every time.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import ssl
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.logsetup import get_logger

from exporter import logsetup
from exporter.config.load import _Checker, _typename, read_yaml_file
from exporter.config.model import BreakerWebhookConfig, ConfigError, SourceConfig

log = get_logger()

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# exporter-toolkit's names. Python's ssl cannot ask for a client certificate without
# verifying it against a CA, so the two "accept any certificate" policies are refused
# rather than silently made stricter or looser.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNSUPPORTED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
# the headers exporter-toolkit allows, with the values it allows where it restricts them
HEADER_VALUES: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
# htpasswd's range of costs. bcrypt itself takes up to 31, but one check at cost 31 runs for
# days, and every wrong password would hold a check slot that long.
BCRYPT_COSTS = range(4, 18)
# version, cost, 22 characters of salt and 31 of digest in bcrypt's base64 alphabet. The salt
# is 128 bits in 132, so its last character can only be one of four (bcrypt refuses the rest).
BCRYPT_RE = re.compile(r"\$2[aby]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{21}[.Oeu][./A-Za-z0-9]{31}")
AUTH_CACHE_SIZE = 256
AUTH_MAX_WAITING = 32  # requests waiting for a bcrypt check; more are refused at once
AUTH_MAX_FAILURES = 10  # wrong answers a client address may cost in a window before it is refused unchecked
AUTH_FAILURE_WINDOW = 60.0  # seconds
AUTH_MAX_CLIENTS = 10_000  # client addresses whose failures are remembered (oldest forgotten first)


@dataclass(frozen=True)
class TLSConfig:
    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"
    max_version: str | None = None

    def context(self) -> ssl.SSLContext:
        """A server-side context; raises ssl.SSLError or OSError when a file is unusable."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = TLS_VERSIONS[self.min_version]
        if self.max_version:
            ctx.maximum_version = TLS_VERSIONS[self.max_version]
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.verify_mode = CLIENT_AUTH[self.client_auth_type]
        if self.client_ca_file is not None:
            ctx.load_verify_locations(cafile=self.client_ca_file)
        return ctx


@dataclass(frozen=True)
class WebConfig:
    """What the HTTP server enforces; the empty WebConfig is plain HTTP with no auth."""

    tls: TLSConfig | None = None
    # user -> bcrypt hash; repr=False keeps hashes out of any log line that prints the config
    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)
    origin: str = "none"

    @property
    def auth_required(self) -> bool:
        return bool(self.users)


def load_web_config(path: str | os.PathLike[str] | None) -> WebConfig:
    """The web config at ``path`` (None: plain HTTP, no auth); raises ConfigError listing every problem."""
    if path is None:
        return WebConfig()
    path = Path(path).expanduser()
    return parse_web_config(read_yaml_file(path), origin=str(path), base_dir=path.parent)


def parse_web_config(raw: Any, origin: str = "web config", base_dir: Path | None = None) -> WebConfig:
    """Check a parsed web config document; raise ConfigError with every ``path: problem``."""
    base = base_dir or Path.cwd()
    c = _Checker()
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([("(top level): must be a mapping of tls_server_config, basic_auth_users, "
                            "http_server_config")], origin)
    top = c.mapping(raw, "", ("tls_server_config", "basic_auth_users", "http_server_config"))
    tls = _parse_tls(c, top.get("tls_server_config"), base) if top.get("tls_server_config") is not None else None
    users = _parse_users(c, top.get("basic_auth_users"))
    hs = c.mapping(top.get("http_server_config"), "http_server_config", ("headers", "http2"))
    c.boolean(hs.get("http2"), "http_server_config.http2", True)  # accepted for compatibility; HTTP/1.1 only
    headers = _parse_headers(c, hs.get("headers"))
    if c.problems:
        raise ConfigError(c.problems, origin)
    return WebConfig(tls=tls, users=users, headers=headers, origin=origin)


def _file(c: _Checker, value: Any, path: str, base: Path, *, required: bool) -> Path | None:
    text = c.string(value, path, required=required)
    if not text:
        return None
    p = Path(text).expanduser()
    p = p if p.is_absolute() else base / p
    if not os.access(p, os.R_OK) or not p.is_file():
        c.err(path, f"cannot read {str(p)!r}")
        return None
    return p


def _parse_tls(c: _Checker, value: Any, base: Path) -> TLSConfig | None:
    path = "tls_server_config"
    m = c.mapping(value, path, ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version",
                                "max_version"))
    if not isinstance(value, dict):
        return None
    before = len(c.problems)
    cert = _file(c, m.get("cert_file"), f"{path}.cert_file", base, required=True)
    key = _file(c, m.get("key_file"), f"{path}.key_file", base, required=True)
    ca = _file(c, m.get("client_ca_file"), f"{path}.client_ca_file", base, required=False)
    auth = c.string(m.get("client_auth_type"), f"{path}.client_auth_type", default="")
    if auth in UNSUPPORTED_CLIENT_AUTH:
        c.err(f"{path}.client_auth_type", f"{auth} is not supported (a client certificate is always verified "
                                          "here): use VerifyClientCertIfGiven or RequireAndVerifyClientCert")
    elif auth and auth not in CLIENT_AUTH:
        c.err(f"{path}.client_auth_type", f"must be one of {', '.join(CLIENT_AUTH)}, not {auth!r}")
    if not auth:
        auth = "NoClientCert"
    if auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and "client_ca_file" not in m:
        c.err(f"{path}.client_ca_file", f"is required with client_auth_type: {auth}")
    if auth == "NoClientCert" and "client_ca_file" in m:
        c.err(f"{path}.client_auth_type", "client_ca_file is set but no client certificate is asked for: "
                                          "set VerifyClientCertIfGiven or RequireAndVerifyClientCert")
    default_min = "TLS12"
    versions: dict[str, str | None] = {}
    for k, default in (("min_version", default_min), ("max_version", None)):
        v = c.string(m.get(k), f"{path}.{k}", default="") or default
        if v is not None and v not in TLS_VERSIONS:
            c.err(f"{path}.{k}", f"must be one of {', '.join(TLS_VERSIONS)}, not {v!r}")
            v = default
        versions[k] = v
    low, high = versions["min_version"] or default_min, versions["max_version"]
    if high and TLS_VERSIONS[high] < TLS_VERSIONS[low]:
        c.err(f"{path}.max_version", "is below min_version")
    if len(c.problems) > before or cert is None or key is None:
        return None
    tls = TLSConfig(cert_file=cert, key_file=key, client_auth_type=auth, client_ca_file=ca,
                    min_version=versions["min_version"] or default_min, max_version=versions["max_version"])
    try:
        tls.context()  # a wrong key, a cert that is not PEM: found now, not at the first scrape
    except (ssl.SSLError, OSError, ValueError) as exc:
        c.err(path, f"cannot load the certificate, key or CA: {getattr(exc, 'reason', None) or exc}")
        return None
    return tls


def _parse_users(c: _Checker, value: Any) -> dict[str, bytes]:
    path = "basic_auth_users"
    if value is None:
        return {}
    if not isinstance(value, dict):
        c.err(path, f"must be a mapping of user name to bcrypt hash, not {_typename(value)}")
        return {}
    users: dict[str, bytes] = {}
    for user, hashed in value.items():
        p = f"{path}.{user}"
        if not isinstance(user, str) or not user or ":" in user:
            c.err(p, "user name must be a non-empty string without ':'")
            continue
        if not isinstance(hashed, str) or not hashed.startswith(BCRYPT_PREFIXES) or len(hashed) != 60:
            # never echo the value: it may be a plain password pasted by mistake
            c.err(p, "must be a bcrypt hash ($2b$..., 60 characters), e.g. from "
                     "htpasswd -nbBC 12 '' PASSWORD | tr -d ':\\n'")
            continue
        m = BCRYPT_RE.fullmatch(hashed)
        if m is None:
            c.err(p, "is not a valid bcrypt hash: its cost must be two digits, and its salt and digest "
                     "characters of ./A-Za-z0-9 with the salt's last one of . O e u; make it again with htpasswd")
            continue
        if int(m["cost"]) not in BCRYPT_COSTS:
            c.err(p, f"bcrypt cost {int(m['cost'])} is outside {BCRYPT_COSTS.start}..{BCRYPT_COSTS.stop - 1} "
                     "(each check at cost N takes 2^N rounds; 10-12 is usual)")
            continue
        users[user] = hashed.encode()
    return users


def _parse_headers(c: _Checker, value: Any) -> dict[str, str]:
    path = "http_server_config.headers"
    if value is None:
        return {}
    if not isinstance(value, dict):
        c.err(path, f"must be a mapping of header name to value, not {_typename(value)}")
        return {}
    out: dict[str, str] = {}
    canonical = {k.lower(): k for k in HEADER_VALUES}
    for name, v in value.items():
        p = f"{path}.{name}"
        key = canonical.get(str(name).lower())
        if key is None:
            c.err(p, f"not a header that may be set (allowed: {', '.join(HEADER_VALUES)})")
            continue
        if not isinstance(v, str) or not v or "\n" in v or "\r" in v:
            c.err(p, f"must be a one-line string, not {_typename(v)}")
            continue
        bad = next(((i, ch) for i, ch in enumerate(v) if not (" " <= ch <= "~" or ch == "\t")), None)
        if bad is not None:
            # HTTP/1.1 sends header bytes as they are: outside printable ASCII a value either
            # cannot be encoded at all (every answer would fail) or means different things to
            # different clients
            c.err(p, f"must be printable ASCII: character {bad[0] + 1} is U+{ord(bad[1]):04X}")
            continue
        allowed = HEADER_VALUES[key]
        if allowed is not None and v.lower() not in allowed:
            c.err(p, f"must be one of {', '.join(allowed)}, not {v!r}")
            continue
        out[key] = v
    return out


# --------------------------------------------------------------------------- checking credentials


class BasicAuth:
    """Checks ``Authorization: Basic`` against the bcrypt hashes, caching successes.

    - The cache key is a SHA-256 of user, password and stored hash, so the cache holds no
      password, and a changed hash (a new web config) misses. Failures are not cached: an
      attacker cannot fill memory with them.
    - An unknown user is checked against a real bcrypt hash of the configured users' cost,
      so the time of an answer does not tell which user names exist.
    - The work an attacker can queue is bounded: at most two bcrypt rounds run at once, at
      most ``max_waiting`` requests wait for one (the rest are refused at once), and a
      client address with ``max_failures`` wrong answers in a minute is refused without
      bcrypt until the minute is over. A scrape whose credentials were checked once is
      answered from the cache, so a flood from elsewhere does not delay it.
    """

    def __init__(self, users: Mapping[str, bytes], *, cache_size: int = AUTH_CACHE_SIZE,
                 max_waiting: int = AUTH_MAX_WAITING, max_failures: int = AUTH_MAX_FAILURES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.users = dict(users)
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._bcrypt_slots = threading.BoundedSemaphore(2)
        self._waiting = 0
        self._max_waiting = max_waiting
        self._max_failures = max_failures
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()  # client -> (window start, count)
        self._clock = clock
        self._dummy: bytes | None = None
        self.bcrypt_checks = 0  # how many times bcrypt actually ran (tests and the benchmark read it)
        self.refused = 0  # answered no without bcrypt: too many waiting, or a client over its failures

    def check(self, header: str | None, client: str = "") -> bool:
        creds = _basic_credentials(header)
        if creds is None:
            return False
        user, password = creds
        hashed = self.users.get(user)
        key = hashlib.sha256(b"\0".join((user.encode(), password, hashed or b""))).digest()
        if hashed is not None:
            with self._lock:
                if key in self._ok:
                    self._ok.move_to_end(key)
                    return True
        if self._throttled(client):
            return False
        ok = self._bcrypt(password, hashed if hashed is not None else self._dummy_hash())
        if not ok or hashed is None:
            self._failed(client)
            return False
        with self._lock:
            self._ok[key] = None
            while len(self._ok) > self._cache_size:
                self._ok.popitem(last=False)
        return True

    def _dummy_hash(self) -> bytes:
        """A real hash at the highest cost among the users, made once: checking an unknown user
        costs what checking a known one does."""
        if self._dummy is None:
            import bcrypt

            costs = [int(h[4:6]) for h in self.users.values() if h[4:6].isdigit()] or [10]
            self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=max(costs)))
        return self._dummy

    def _throttled(self, client: str) -> bool:
        now = self._clock()
        with self._lock:
            start, count = self._failures.get(client, (now, 0))
            if now - start < AUTH_FAILURE_WINDOW and count >= self._max_failures:
                self.refused += 1
                return True
        return False

    def _failed(self, client: str) -> None:
        now = self._clock()
        with self._lock:
            start, count = self._failures.pop(client, (now, 0))
            if now - start >= AUTH_FAILURE_WINDOW:
                start, count = now, 0
            self._failures[client] = (start, count + 1)
            while len(self._failures) > AUTH_MAX_CLIENTS:
                self._failures.popitem(last=False)

    def _bcrypt(self, password: bytes, hashed: bytes) -> bool:
        import bcrypt

        with self._lock:
            if self._waiting >= self._max_waiting:
                self.refused += 1
                return False
            self._waiting += 1
        try:
            with self._bcrypt_slots:
                self.bcrypt_checks += 1
                try:
                    return bool(bcrypt.checkpw(password, hashed))
                except ValueError:
                    return False
        finally:
            with self._lock:
                self._waiting -= 1


# --------------------------------------------------------------------------- the breaker webhook's token

TOKEN_MAX_BYTES = 4096
# a file rewritten in place to the same size within one tick of a coarse file-system clock keeps
# its stat: read it again after this long anyway
TOKEN_REREAD_SECONDS = 10.0


class TokenUnavailable(Exception):
    """A configured webhook token that cannot be read or used: every webhook call is refused.

    ``path`` is the config key (``breaker_webhook.token_file`` or ``.token_env``); ``reason``
    names the file or variable and what is wrong with it, for the log and validate-config;
    ``public`` says the same without the file's location, for an unauthenticated caller. None
    of them holds any part of a token.
    """

    def __init__(self, path: str, reason: str, public: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.public = public


class WebhookToken:
    """The bearer token the Alertmanager webhook requires, read from its file or variable when asked.

    No token configured: :meth:`current` returns None and no token is required. Configured
    but missing, empty, unreadable or not usable in a header: :meth:`current` raises
    :class:`TokenUnavailable`, and the webhook refuses every call (it never falls back to
    no authentication). A token file is read again whenever its identity, size or times
    change (a Kubernetes secret swaps a symlink; an editor rewrites the file), so rotating
    it needs no restart. With both keys set the file wins, as in the config.

    Changes of state are logged once each: ``breaker_webhook_token_unreadable`` (warning)
    when it cannot be used, ``breaker_webhook_token_readable`` when it can again. Safe across
    threads.
    """

    def __init__(self, hook: BreakerWebhookConfig, *, environ: Mapping[str, str] | None = None,
                 log_changes: bool = True) -> None:
        self.token_env = hook.token_env
        self.token_file = hook.token_file
        self._environ = environ if environ is not None else os.environ
        self._log_changes = log_changes
        self._lock = threading.Lock()
        self._key: tuple[int, ...] | None = None  # the file's stat when last read
        self._read: str | TokenUnavailable | None = None  # what that read gave
        self._read_at = 0.0  # time.monotonic() of that read
        self._ok: bool | None = None  # the state last logged; None before the first check

    @property
    def configured(self) -> bool:
        return self.token_file is not None or bool(self.token_env)

    @property
    def path(self) -> str:
        return "breaker_webhook.token_file" if self.token_file is not None else "breaker_webhook.token_env"

    def current(self) -> str | None:
        """The token to require now; None when none is configured. Raises TokenUnavailable."""
        if not self.configured:
            return None
        with self._lock:
            got = self._from_file() if self.token_file is not None else self._from_env()
            self._note(got)
        if isinstance(got, TokenUnavailable):
            # a fresh one each time: raising the cached one again would grow its traceback
            raise TokenUnavailable(got.path, got.reason, got.public)
        return got

    def ready(self) -> bool:
        """False when a token is configured and cannot be used (logging the change, as current does)."""
        try:
            self.current()
        except TokenUnavailable:
            return False
        return True

    def problem(self) -> TokenUnavailable | None:
        """What is wrong with the configured token, if anything (for validate-config)."""
        try:
            self.current()
        except TokenUnavailable as exc:
            return exc
        return None

    def _note(self, got: str | TokenUnavailable) -> None:
        ok = not isinstance(got, TokenUnavailable)
        if ok == self._ok or not self._log_changes:
            return
        if isinstance(got, TokenUnavailable):
            log.warning("breaker_webhook_token_unreadable", path=got.path, reason=got.reason,
                        hint="every Alertmanager webhook call is refused with 503 until the token can be read")
        elif self._ok is not None:
            log.info("breaker_webhook_token_readable", path=self.path)
        self._ok = ok

    def _bad(self, reason: str, public: str) -> TokenUnavailable:
        return TokenUnavailable(self.path, reason, public)

    def _from_env(self) -> str | TokenUnavailable:
        name = self.token_env
        value = self._environ.get(name or "")
        if value is None:
            return self._bad(f"environment variable {name} is not set", "its environment variable is not set")
        return self._usable(value, f"environment variable {name}")

    def _from_file(self) -> str | TokenUnavailable:
        path = self.token_file
        assert path is not None
        try:
            st = os.stat(path)
        except OSError as exc:
            self._key = None
            return self._bad(f"cannot read {str(path)!r}: {exc.strerror or exc}",
                             "the file cannot be read (missing or not permitted)")
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
        if key == self._key and self._read is not None and time.monotonic() - self._read_at < TOKEN_REREAD_SECONDS:
            return self._read
        if not stat.S_ISREG(st.st_mode):
            got: str | TokenUnavailable = self._bad(f"{str(path)!r} is not a regular file",
                                                    "it is not a regular file")
        else:
            try:
                with open(path, "rb") as f:
                    raw = f.read(TOKEN_MAX_BYTES + 1)
            except OSError as exc:
                got = self._bad(f"cannot read {str(path)!r}: {exc.strerror or exc}",
                                "the file cannot be read (missing or not permitted)")
            else:
                got = self._decode(raw, f"file {str(path)!r}")
        self._key, self._read, self._read_at = key, got, time.monotonic()
        return got

    def _decode(self, raw: bytes, where: str) -> str | TokenUnavailable:
        if len(raw) > TOKEN_MAX_BYTES:
            return self._bad(f"{where} is over {TOKEN_MAX_BYTES} bytes: not a token", "it is too long for a token")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._bad(f"{where} is not UTF-8 text", "it is not text")
        return self._usable(text, where)

    def _usable(self, text: str, where: str) -> str | TokenUnavailable:
        token = text.strip()
        if not token:
            return self._bad(f"{where} is empty", "it is empty")
        if any(not (" " <= ch <= "~") for ch in token):
            # Alertmanager sends it in a header: a second line or a non-ASCII character never matches
            return self._bad(f"{where} must hold one line of printable ASCII (the token, nothing else)",
                             "it is not one line of printable ASCII")
        logsetup.register_secret(token)
        return token


def webhook_token_problems(hook: BreakerWebhookConfig) -> list[str]:
    """``path: problem`` for a configured webhook token that cannot be used now (validate-config)."""
    problem = WebhookToken(hook, log_changes=False).problem()
    return [str(problem)] if problem is not None else []


def otlp_token_problems(sources: Iterable[SourceConfig]) -> list[str]:
    """``path: problem`` for each otlp source's configured bearer token that cannot be used now
    (validate-config): serve would start, and refuse every request to that source with 503."""
    out = []
    for source in sources:
        cfg = source.otlp
        if cfg is None or (cfg.token_env is None and cfg.token_file is None):
            continue
        problem = WebhookToken(BreakerWebhookConfig(token_env=cfg.token_env, token_file=cfg.token_file),
                               log_changes=False).problem()
        if problem is not None:
            key = "token_file" if cfg.token_file is not None else "token_env"
            out.append(f"sources[{source.name}].{key}: {problem.reason}")
    return out


def _basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    import base64
    import binascii

    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


__all__ = ["BasicAuth", "TLSConfig", "TokenUnavailable", "WebConfig", "WebhookToken", "load_web_config",
           "parse_web_config", "webhook_token_problems"]
