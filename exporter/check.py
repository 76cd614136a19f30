"""``check --pool NAME``: exit 0 when the breaker is closed, 1 when open, 2 when it cannot tell.

With ``--url`` it asks a running exporter's ``/breaker/<pool>``; without, it computes the
pool from the state on disk (logs already read, billed days already stored).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from urllib.parse import quote

from exporter.config import Config, parse_listen

CLOSED, OPEN, UNKNOWN = 0, 1, 2


def _say(code: int, line: str) -> int:
    print(line, file=sys.stdout if code != UNKNOWN else sys.stderr)
    return code


PASSWORD_ENV = "CLAUDE_BUDGET_EXPORTER_PASSWORD"


def run_check(config: Config, args: argparse.Namespace) -> int:
    if args.url:
        password = os.environ.get(PASSWORD_ENV) if args.user else None
        if args.user and password is None:
            return _say(UNKNOWN, f"unknown: --user needs the password in ${PASSWORD_ENV}")
        return check_url(args.url, args.pool, args.timeout, user=args.user, password=password,
                         ca_file=args.ca_file)
    return check_state(config, args.pool)


def check_url(url: str, pool: str, timeout: float, *, user: str | None = None, password: str | None = None,
              ca_file: str | None = None, quiet_unreachable: bool = False) -> int:
    """Ask a running exporter; basic auth and a private CA for exporters behind a web config."""
    target = f"{url.rstrip('/')}/breaker/{quote(pool, safe='')}"
    request = urllib.request.Request(target)
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as r:
            code, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        code, body = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        if quiet_unreachable:
            return None  # type: ignore[return-value]  # the caller has another way to tell
        reason = getattr(e, "reason", e)
        return _say(UNKNOWN, f"unknown: cannot reach {url}: {reason}")
    try:
        data = json.loads(body)
    except ValueError:
        return _say(UNKNOWN, f"unknown: {target} answered {code} without JSON")
    if code == 401:
        return _say(UNKNOWN, f"unknown: {target} wants credentials (--user, ${PASSWORD_ENV})")
    if code == 404:
        return _say(UNKNOWN, f"unknown: {data.get('error', 'no such pool')}")
    state = data.get("state")
    if state == "unknown":
        return _say(UNKNOWN, f"unknown: {pool}: {data.get('reason', '')}")
    if code == 200 and state == "closed":
        return _say(CLOSED, f"closed: {pool}: {data.get('reason', '')}")
    if code == 503 and state == "open":
        return _say(OPEN, f"open: {pool}: {data.get('reason', '')}")
    return _say(UNKNOWN, f"unknown: {target} answered {code} state={state!r}")


def check_state(config: Config, pool: str) -> int:
    from exporter.core.breaker import BreakerBoard
    from exporter.logs.ingestor import Ingestor
    from exporter.expose.pools import build_pool_states
    from exporter.prices import load_pricer
    from exporter.refresh import Snapshot, build_estimated, load_billing
    from exporter.state import StateDB, StateError

    if config.pool(pool) is None:
        names = ", ".join(p.name for p in config.pools) or "none configured"
        return _say(UNKNOWN, f"unknown: no pool named {pool!r} (pools: {names})")
    if not (config.state_dir / "state.sqlite3").exists():
        return _say(UNKNOWN, f"unknown: no state in {config.state_dir}; run serve or report first")
    # Breakers opened by Alertmanager live in the serving exporter's memory: when one serves this
    # state, its answer is the whole answer. Ask it first.
    from exporter.cli import StateLock

    lock = StateLock(config.state_dir)
    serving = not lock.try_acquire()
    lock.release()
    if serving and config.web_config_file is None:
        host, port = parse_listen(config.listen)
        host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        code = check_url(url, pool, 5.0, quiet_unreachable=True)
        if code is not None:
            return code
    try:
        state = StateDB(config.state_dir, readonly=True)
    except StateError as exc:
        return _say(UNKNOWN, f"unknown: {exc}")
    pricer = load_pricer(config.price_overrides)
    now = time.time()
    ing = Ingestor(config.sources, state, pricer, clock=lambda: now)
    snap = Snapshot(built_at=now, billing=load_billing(state), ready=True,
                    **build_estimated(ing, pricer, hourly_since=int(now) - 70 * 86400))
    state.close()
    at = datetime.fromtimestamp(now, UTC)
    states = build_pool_states(config, pricer, snap, at)
    st = next(s for s in states if s.pool == pool)
    decision = BreakerBoard().decide(pool, st, at)
    note = "from state on disk" + ("" if not serving else "; the running exporter did not answer, so breakers "
                                   "Alertmanager opened are not seen")
    return _say(OPEN if decision.open else CLOSED, f"{decision.state}: {pool}: {decision.reason} ({note})")
