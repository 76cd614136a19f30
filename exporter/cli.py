"""The ``claude-budget-exporter`` command: serve, report, check, validate-config."""

from __future__ import annotations

import argparse
import fcntl
import gc
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from datetime import date
from pathlib import Path
from collections.abc import Callable
from typing import Any


from exporter.logsetup import get_logger
from exporter import __version__, logsetup
from exporter.config import Config, ConfigError, load_config, parse_listen

log = get_logger()
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
EXIT_NO_BILL = 3  # report: printed, but the Admin API's billed figures could not be fetched
ADMIN_API_WAIT = "2m"  # report: how long a failing Admin API is retried before reporting without it
SWITCH_INTERVAL = 0.001  # seconds; see serve


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE",
                   help="YAML config file (default: the built-in config that tails Claude Code's folders)")
    p.add_argument("--state-dir", metavar="DIR", help="where the state database lives (overrides state_dir)")


def _utc_day(text: str) -> date:
    """A ``--since``/``--until`` day, refused in words a person reads (not Python's)."""
    m = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day: write it as YYYY-MM-DD, e.g. 2026-03-01")
    year, month, day = (int(g) for g in m.groups())
    if year < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day: there is no year 0")
    if not 1 <= month <= 12:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day: there is no month {month} (months are 01..12)")
    import calendar  # here: only a --since/--until day needs it, not every start (7 ms)

    last = calendar.monthrange(year, month)[1]
    if not 1 <= day <= last:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day: {calendar.month_name[month]} {year} has days "
                                         f"01..{last}")
    return date(year, month, day)


def _duration(text: str) -> float:
    from exporter.config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="claude-budget-exporter",
        description="Prometheus exporter for Claude credit: billed and estimated spend, drift, remaining pool "
                    "credit and a circuit breaker.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="default: info for serve, warning for the commands a person or a script runs")
    parser.add_argument("--log-format", default="auto", choices=["auto", "json", "console"],
                        help="auto: key=value on a terminal, JSON lines otherwise")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the exporter (the main job)")
    _add_config(serve)
    # the exporter-toolkit's spellings (--web.listen-address, --web.config.file) are accepted beside ours
    serve.add_argument("--listen", "--web.listen-address", dest="listen", metavar="HOST:PORT",
                       help="address to serve on (default 0.0.0.0:9833)")
    serve.add_argument("--web-config-file", "--web.config.file", dest="web_config_file", metavar="FILE",
                       help="TLS and basic auth (exporter-toolkit web.yml format) for every endpoint but /healthz; "
                            "overrides web_config_file")
    serve.add_argument("--demo", action="store_true",
                       help="run against a built-in simulated organisation (no key or logs needed; "
                            "never contacts the real Admin API)")

    report = sub.add_parser(
        "report", help="daily estimated and billed spend, and drift",
        epilog="exit codes: 0 printed; 1 the state cannot be read; 2 bad arguments or config; 3 printed, but "
               "billed figures could not be fetched from the Admin API (the table and the JSON's billed_error say "
               "why; billed figures shown are the last stored ones)")
    _add_config(report)
    report.add_argument("--since", type=_utc_day, metavar="YYYY-MM-DD", help="first UTC day")
    report.add_argument("--until", type=_utc_day, metavar="YYYY-MM-DD", help="last UTC day (not before --since)")
    report.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    report.add_argument("--blocks", action="store_true",
                        help="5-hour blocks (as ccusage computes them) instead of days")
    report.add_argument("--admin-api-wait", type=_duration, default=ADMIN_API_WAIT, metavar="DURATION",
                        help=f"with an admin key: how long to keep retrying the Admin API (429 after its "
                             f"retry-after, 5xx, timeouts) before reporting without fresh billed figures "
                             f"(default {ADMIN_API_WAIT})")

    check = sub.add_parser("check", help="exit 0 if the pool's breaker is closed, 1 if open, 2 if unknown")
    _add_config(check)
    check.add_argument("--pool", required=True, help="pool name")
    check.add_argument("--url", help="a running exporter, e.g. http://127.0.0.1:9833")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the exporter")
    check.add_argument("--user", help="basic auth user for an exporter behind a web config "
                                      "(password from $CLAUDE_BUDGET_EXPORTER_PASSWORD)")
    check.add_argument("--ca-file", metavar="FILE", help="CA certificate to trust for an https:// exporter")

    from exporter.statusline import add_arguments as statusline_arguments

    statusline_arguments(sub.add_parser(
        "statusline", help="for Claude Code's statusLine setting: record its rate limits, print one status line"))

    validate = sub.add_parser("validate-config", help="check a config file; exit 2 listing every problem")
    validate.add_argument("config_file", nargs="?", metavar="FILE")
    validate.add_argument("--config", "-c", metavar="FILE", dest="config")
    validate.add_argument("--web-config-file", "--web.config.file", dest="web_config_file", metavar="FILE",
                          help="check this web config file too")
    return parser


def _load(args: argparse.Namespace) -> Config:
    config = load_config(getattr(args, "config", None) or getattr(args, "config_file", None))
    overrides: dict[str, Any] = {}
    if getattr(args, "state_dir", None):
        overrides["state_dir"] = Path(args.state_dir).expanduser()
    if getattr(args, "web_config_file", None):
        overrides["web_config_file"] = Path(args.web_config_file).expanduser()
    if getattr(args, "listen", None):
        parse_listen(args.listen)
        overrides["listen"] = args.listen
    if overrides:
        from dataclasses import replace

        config = replace(config, **overrides)
    return config


def config_warnings(config: Config) -> list[str]:
    """What a valid config names that this machine cannot give: an admin key that cannot be read, a
    log path that does not exist. ``path: what; what serve does about it``."""
    from exporter.logs.discover import missing_paths

    out = []
    for i, org in enumerate(config.orgs):
        problem = org.key_problem()
        if problem is not None:
            where = f"admin_api[{i}]" if config.several_orgs else "admin_api"
            where += ".key_file" if org.key_file is not None else ".key_env"
            out.append(f"{where}: {problem}; serve will show the Admin API as down and fetch no bill")
    for i, source in enumerate(config.sources):
        missing, alone = missing_paths(source)
        for path in missing:
            j = source.paths.index(path)
            then = "the source will be down" if alone else "its other paths will be read"
            out.append(f"sources[{i}].paths[{j}]: {path} does not exist; {then}")
    return out


def _print_problems(what: str, exc: ConfigError) -> None:
    print(f"claude-budget-exporter: invalid {what} {exc.source}:", file=sys.stderr)
    for p in exc.problems:
        print(f"  {p}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "statusline":  # usually answered by exporter.entry before this module is imported
        from exporter.statusline import run

        return run(args)
    logsetup.configure(args.log_level or ("info" if args.command == "serve" else "warning"), args.log_format)
    try:
        config = _load(args)
    except ConfigError as exc:
        _print_problems("config", exc)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"claude-budget-exporter: --listen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if config.admin_api is not None:
        logsetup.register_secret(config.admin_api.read_key())
    for deprecation in config.deprecations:
        path, _, hint = deprecation.partition(": ")
        log.warning("config_deprecated", path=path, hint=hint)
    if args.command in ("serve", "validate-config") and config.web_config_file is not None:
        from exporter.config.web import load_web_config

        try:
            load_web_config(config.web_config_file)
        except ConfigError as exc:
            _print_problems("web config", exc)
            return EXIT_USAGE
    if args.command == "validate-config":
        from exporter.config.web import otlp_token_problems, webhook_token_problems

        token_problems = webhook_token_problems(config.breaker_webhook) + otlp_token_problems(config.sources)
        if token_problems:  # serve would start, but refuse every webhook call
            _print_problems("config", ConfigError(token_problems, config.origin))
            return EXIT_USAGE
        print(f"{config.origin}: ok ({len(config.sources)} source(s), {len(config.pools)} pool(s))")
        for warning in config_warnings(config):  # serve would start, but without what these name
            print(f"warning: {warning}", file=sys.stderr)
        return EXIT_OK
    if args.command == "serve":
        return serve(config, demo=args.demo)
    if args.command == "report":
        code = report(config, args, exiting=argv is None)
        if argv is None:  # the program itself, not a caller in the same process
            _exit_now(code)
        return code
    if args.command == "check":
        return run_check(config, args)
    return EXIT_USAGE


# ---------------------------------------------------------------------- state-dir lock


class StateLock:
    """An flock on ``state_dir/lock``: one serving exporter per state; report reads beside it."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        os.close(self.fd)


# ---------------------------------------------------------------------- serve


def serve(config: Config, *, demo: bool = False) -> int:
    from exporter.demo import org as demo_mode
    from exporter.app import build_app
    from exporter.state import StateError

    if demo:
        taken = _cannot_listen(*parse_listen(config.listen))
        if taken is not None:  # before the simulated organisation is built: a second or two, and a temp folder
            print(f"claude-budget-exporter: cannot listen on {config.listen}: {taken}", file=sys.stderr)
            return EXIT_USAGE
        try:
            config = demo_mode.start_demo(config).config
        except demo_mode.DemoError as exc:
            print(f"claude-budget-exporter: --demo: {exc}", file=sys.stderr)
            return EXIT_USAGE
    else:
        demo_mode.log_if_nothing_to_read(config)
    try:
        lock = StateLock(config.state_dir)
    except OSError as exc:
        print(f"claude-budget-exporter: state_dir {config.state_dir}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    if not lock.try_acquire():
        print(f"claude-budget-exporter: another exporter is serving from {config.state_dir}", file=sys.stderr)
        return EXIT_USAGE
    host, port = parse_listen(config.listen)
    try:
        app = build_app(config)
    except StateError as exc:
        log.error("state_unusable", error=str(exc))
        print(f"claude-budget-exporter: {exc}", file=sys.stderr)
        return EXIT_FAIL
    try:
        server = app.make_server(host, port)
        try:
            receivers = app.make_receivers(server.web)  # the otlp sources' listeners
        except OSError:
            server.shutdown()
            raise
    except ConfigError as exc:  # the web config file: TLS, basic auth, headers
        _print_problems("web config", exc)
        return EXIT_USAGE
    except OSError as exc:
        otlp = getattr(exc, "listen", None)  # an otlp source's address (exporter.otlp.receiver.ListenError)
        where = exc.strerror if otlp else f"{config.listen}: {exc.strerror or exc}"
        print(f"claude-budget-exporter: cannot listen on {where}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("shutting_down", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # a /metrics render holds the GIL for ~100 ms of pure Python; hand it over every 1 ms instead of
    # every 5 ms, so the scrapes it overlaps are answered in between (a process-wide choice: the program's)
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
    server.start()
    log.info("listening", address=f"{host}:{server.port}", config=config.origin, state_dir=str(config.state_dir),
             version=__version__)
    app.start(on_filled=_freeze_heap)
    for receiver in receivers:
        receiver.start()
        log.info("otlp_listening", **receiver.describe())
    while not stop.wait(1.0):
        pass
    for receiver in receivers:
        receiver.shutdown()
    server.shutdown()
    app.stop()
    lock.release()
    return EXIT_OK


def _cannot_listen(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port`` (a port taken, an address not of this
    machine), found by binding it for a moment; None when it could (or the port is 0: any)."""
    import socket

    if port == 0:
        return None
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                                 flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            probe.bind(address)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


# ---------------------------------------------------------------------- report


def _freeze_heap() -> None:
    """What the first fill loaded (the dedup index, the aggregates) lives as long as the process:
    out of the collector's sight, later collections stop re-walking it during every refresh."""
    gc.collect()
    gc.freeze()


def report(config: Config, args: argparse.Namespace, *, exiting: bool = False) -> int:
    """``exiting``: the process ends right after (see :func:`_exit_now`)."""
    if exiting:
        # a process that ends after one read frees nothing the collector would find: left on,
        # its first collection after a large read walks the whole batch (0.026 s) for nothing
        gc.disable()
    from concurrent.futures import BrokenExecutor

    from exporter.app import build_report
    from exporter.expose import report as rep
    from exporter.logs.coldread import HelperLost
    from exporter.state import StateError

    if args.since is not None and args.until is not None and args.since > args.until:
        _say(f"claude-budget-exporter: --since {args.since} is after --until {args.until}: no day lies between them")
        return EXIT_USAGE
    lock = StateLock(config.state_dir)
    owner = lock.try_acquire()
    if not owner:
        _say("claude-budget-exporter: a running exporter owns this state; showing what it has read")
    billed_problems: list[str] = []

    def poll_billed(cfg: Config, since: date | None) -> None:
        if not args.blocks:  # blocks show no bill: nothing to wait for
            billed_problems.extend(_poll_billed(cfg, since, retry_for=args.admin_api_wait))

    try:
        got = build_report(config, exiting=exiting, progress=_progress_bar() if owner and sys.stderr.isatty() else None,
                           since=args.since, lock_acquired=owner, poll_billed=poll_billed)
    except (StateError, sqlite3.DatabaseError) as exc:
        _say(f"claude-budget-exporter: {exc}")
        return EXIT_FAIL
    except (OSError, BrokenExecutor, HelperLost) as exc:  # a full disk, a helper of a split read killed
        _say(f"claude-budget-exporter: the read failed, nothing of it was stored: {exc}")
        return EXIT_FAIL
    billed_error = "; ".join(billed_problems) or None
    if args.blocks:
        data = rep.build_blocks(got.aggregates, now=time.time(), since=args.since, until=args.until)
    else:
        data = rep.build_report(got.aggregates, since=args.since, until=args.until, billed_by_day=got.billed_by_day,
                                billed_error=billed_error)
    if not got.first_read:  # closing would checkpoint what was just deferred
        got.state.close()
    lock.release()
    try:
        if args.json:
            rep.write_json(data, sys.stdout)
        elif args.blocks:
            rep.write_blocks_table(data, sys.stdout)
        else:
            rep.write_table(data, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left (``| head``): nothing more to say, and no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL
    return EXIT_NO_BILL if billed_error is not None and not args.blocks else EXIT_OK


def _exit_now(code: int) -> None:
    """Exit without freeing the heap object by object: after a large read that costs over 0.1 s,
    and the operating system takes the memory back at once. Output and logs are flushed first."""
    import logging

    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def _say(text: str) -> None:
    """One line to stderr through the logs' scrubber: an error may quote what the API or a proxy
    echoed, the admin key included."""
    print(logsetup.redact(text), file=sys.stderr)


def _poll_billed(config: Config, since: date | None, *, retry_for: float | None = None) -> list[str]:
    """With an admin key, bring the stored billed days up to date (one poll) before reporting.
    Returns why, per organisation, fresh billed figures could not be had (none: all polled)."""
    if config.admin_api is None:
        return []  # logs only: nothing to poll, and no need to load the HTTP client
    from exporter.app import make_billing_pollers

    problems = []
    # registers each key with the scrubber
    for poller in make_billing_pollers(config, time.time, retry_for=retry_for):
        org = "" if not config.several_orgs else f" ({poller.org})"
        try:
            snap = poller.poll(since=since)
        except Exception as exc:  # noqa: BLE001 - a bug in the poll: the report of the stored bill still stands
            problems.append(logsetup.redact(f"Admin API{org}: the poll failed ({type(exc).__name__}: {exc})"))
        else:
            if not snap.up:
                problems.append(logsetup.redact(f"Admin API{org}: {snap.error}"))
        finally:
            if poller.client is not None:
                poller.client.close()
    for problem in problems:
        _say(f"claude-budget-exporter: {problem}; billed figures are the last stored ones")
    return problems


def _progress_bar() -> Callable[[int, int], None]:
    started = time.monotonic()
    shown = [False]

    def progress(done: int, total: int) -> None:
        if done < 0:
            if shown[0]:
                sys.stderr.write("\r\x1b[K")
            return
        if time.monotonic() - started < 1.0 or total <= 0:
            return
        shown[0] = True
        frac = min(1.0, done / total)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\rreading logs [{bar:<30}] {frac:4.0%} {done / 1e6:,.0f}/{total / 1e6:,.0f} MB")
        sys.stderr.flush()

    return progress


# ---------------------------------------------------------------------- check


CLOSED, OPEN, UNKNOWN = 0, 1, 2


def _verdict(code: int, line: str) -> int:
    print(line, file=sys.stdout if code != UNKNOWN else sys.stderr)
    return code


PASSWORD_ENV = "CLAUDE_BUDGET_EXPORTER_PASSWORD"


def run_check(config: Config, args: argparse.Namespace) -> int:
    if args.url:
        password = os.environ.get(PASSWORD_ENV) if args.user else None
        if args.user and password is None:
            return _verdict(UNKNOWN, f"unknown: --user needs the password in ${PASSWORD_ENV}")
        return check_url(args.url, args.pool, args.timeout, user=args.user, password=password,
                         ca_file=args.ca_file)
    return check_state(config, args.pool)


def check_url(url: str, pool: str, timeout: float, *, user: str | None = None, password: str | None = None,
              ca_file: str | None = None, quiet_unreachable: bool = False) -> int:
    """Ask a running exporter; basic auth and a private CA for exporters behind a web config."""
    import base64
    import json
    import ssl
    import urllib.error
    import urllib.request
    from urllib.parse import quote

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
        return _verdict(UNKNOWN, f"unknown: cannot reach {url}: {reason}")
    try:
        data = json.loads(body)
    except ValueError:
        return _verdict(UNKNOWN, f"unknown: {target} answered {code} without JSON")
    if code == 401:
        return _verdict(UNKNOWN, f"unknown: {target} wants credentials (--user, ${PASSWORD_ENV})")
    if code == 404:
        return _verdict(UNKNOWN, f"unknown: {data.get('error', 'no such pool')}")
    state = data.get("state")
    if state == "unknown":
        return _verdict(UNKNOWN, f"unknown: {pool}: {data.get('reason', '')}")
    if code == 200 and state == "closed":
        return _verdict(CLOSED, f"closed: {pool}: {data.get('reason', '')}")
    if code == 503 and state == "open":
        return _verdict(OPEN, f"open: {pool}: {data.get('reason', '')}")
    return _verdict(UNKNOWN, f"unknown: {target} answered {code} state={state!r}")


def check_state(config: Config, pool: str) -> int:
    """The pool's breaker without ``--url``: the serving exporter's answer when one serves this
    state (breakers Alertmanager opened live in its memory), else computed from the state on disk."""
    from exporter.app import pool_from_state
    from exporter.state import StateError

    if config.pool(pool) is None and not (config.admin_api is not None and config.admin_api.pools_from_spend_limits
                                          and pool.startswith("limit-")):
        names = ", ".join(p.name for p in config.pools) or "none"
        return _verdict(UNKNOWN, f"unknown: no pool named {pool!r} in the local config ({config.origin}; its pools: "
                                 f"{names}); to ask a running exporter, give its address: --url http://HOST:9833")
    if not (config.state_dir / "state.sqlite3").exists():
        return _verdict(UNKNOWN, f"unknown: no state in {config.state_dir}; run serve or report first")
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
        decision = pool_from_state(config, pool)
    except StateError as exc:
        return _verdict(UNKNOWN, f"unknown: {exc}")
    note = "from state on disk" + ("" if not serving else "; the running exporter did not answer, so breakers "
                                   "Alertmanager opened are not seen")
    return _verdict(OPEN if decision.open else CLOSED, f"{decision.state}: {pool}: {decision.reason} ({note})")
