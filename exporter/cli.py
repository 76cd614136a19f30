"""The ``claude-budget-exporter`` command: serve, report, check, validate-config."""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sqlite3
import sys
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import structlog

from exporter import __version__, logsetup
from exporter.config import Config, ConfigError, load_config, parse_listen

log = structlog.get_logger()
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE",
                   help="YAML config file (default: the built-in config that tails Claude Code's folders)")
    p.add_argument("--state-dir", metavar="DIR", help="where the state database lives (overrides state_dir)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="claude-budget-exporter",
        description="Prometheus exporter for Claude credit: billed and estimated spend, drift, remaining pool "
                    "credit and a circuit breaker.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default="auto", choices=["auto", "json", "console"],
                        help="auto: key=value on a terminal, JSON lines otherwise")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the exporter (the main job)")
    _add_config(serve)
    serve.add_argument("--listen", metavar="HOST:PORT", help="address to serve on (default 0.0.0.0:9833)")
    serve.add_argument("--web-config-file", metavar="FILE",
                       help="TLS and basic auth (exporter-toolkit web.yml format) for every endpoint but /healthz; "
                            "overrides web_config_file")
    serve.add_argument("--demo", action="store_true",
                       help="run against a built-in simulated organisation (no key or logs needed; "
                            "never contacts the real Admin API)")

    report = sub.add_parser("report", help="daily estimated and billed spend, and drift")
    _add_config(report)
    report.add_argument("--since", type=date.fromisoformat, metavar="YYYY-MM-DD", help="first UTC day")
    report.add_argument("--until", type=date.fromisoformat, metavar="YYYY-MM-DD", help="last UTC day")
    report.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    check = sub.add_parser("check", help="exit 0 if the pool's breaker is closed, 1 if open, 2 if unknown")
    _add_config(check)
    check.add_argument("--pool", required=True, help="pool name")
    check.add_argument("--url", help="a running exporter, e.g. http://127.0.0.1:9833")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the exporter")
    check.add_argument("--user", help="basic auth user for an exporter behind a web config "
                                      "(password from $CLAUDE_BUDGET_EXPORTER_PASSWORD)")
    check.add_argument("--ca-file", metavar="FILE", help="CA certificate to trust for an https:// exporter")

    validate = sub.add_parser("validate-config", help="check a config file; exit 2 listing every problem")
    validate.add_argument("config_file", nargs="?", metavar="FILE")
    validate.add_argument("--config", "-c", metavar="FILE", dest="config")
    validate.add_argument("--web-config-file", metavar="FILE", help="check this web config file too")
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
    logsetup.configure(args.log_level, args.log_format)
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
        from exporter.config.web import webhook_token_problems

        token_problems = webhook_token_problems(config.breaker_webhook)
        if token_problems:  # serve would start, but refuse every webhook call
            _print_problems("config", ConfigError(token_problems, config.origin))
            return EXIT_USAGE
        print(f"{config.origin}: ok ({len(config.sources)} source(s), {len(config.pools)} pool(s))")
        return EXIT_OK
    if args.command == "serve":
        return serve(config, demo=args.demo)
    if args.command == "report":
        code = report(config, args, exiting=argv is None)
        if argv is None:  # the program itself, not a caller in the same process
            _exit_now(code)
        return code
    if args.command == "check":
        from exporter.check import run_check

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
    except ConfigError as exc:  # the web config file: TLS, basic auth, headers
        _print_problems("web config", exc)
        return EXIT_USAGE
    except OSError as exc:
        print(f"claude-budget-exporter: cannot listen on {config.listen}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("shutting_down", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    log.info("listening", address=f"{host}:{server.port}", config=config.origin, state_dir=str(config.state_dir),
             version=__version__)
    app.start()
    while not stop.wait(1.0):
        pass
    server.shutdown()
    app.stop()
    lock.release()
    return EXIT_OK


# ---------------------------------------------------------------------- report


def report(config: Config, args: argparse.Namespace, *, exiting: bool = False) -> int:
    """``exiting``: the process ends right after (see :func:`_exit_now`)."""
    from exporter.expose import report as rep
    from exporter.logs.ingestor import Ingestor
    from exporter.prices import load_pricer
    from exporter.state import StateDB, StateError

    lock = StateLock(config.state_dir)
    owner = lock.try_acquire()
    pricer = load_pricer(config.price_overrides)
    try:
        if owner:  # only the owner may move a corrupt database aside and rebuild it
            state, ing = StateDB.open_or_rebuild(config.state_dir, lambda db: Ingestor(config.sources, db, pricer))
        else:  # read-only: a serving exporter owns it, perhaps an older one that a migration would break
            state = StateDB(config.state_dir, readonly=True)
            ing = Ingestor(config.sources, state, pricer)
    except (StateError, sqlite3.DatabaseError) as exc:
        _say(f"claude-budget-exporter: {exc}")
        return EXIT_FAIL
    # A first read commits the whole history at once. When the process ends right after, its
    # copy from the WAL into the database is left to the next commit on this state (SQLite's
    # own checkpoint, with any later connection) instead of costing this command 0.1 s.
    first_read = owner and exiting and not ing.files
    if first_read:
        state.defer_checkpoints()
    if owner:
        progress = _progress_bar() if sys.stderr.isatty() else None
        ing.refresh(progress=progress)
        if progress:
            progress(-1, -1)
        _poll_billed(config, args.since)
    else:
        _say("claude-budget-exporter: a running exporter owns this state; showing what it has read")
    billed = {}
    if state.has_table("billed_cost"):  # only an Admin API poller writes it: logs-only needs no HTTP client
        from exporter.billing.poller import stored_billed_by_day

        billed = stored_billed_by_day(state.conn)
    data = rep.build_report(ing.aggregates, since=args.since, until=args.until, billed_by_day=billed)
    if not first_read:  # closing would checkpoint what was just deferred
        state.close()
    lock.release()
    try:
        if args.json:
            rep.write_json(data, sys.stdout)
        else:
            rep.write_table(data, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left (``| head``): nothing more to say, and no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL
    return EXIT_OK


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


def _poll_billed(config: Config, since: date | None) -> None:
    """With an admin key, bring the stored billed days up to date (one poll) before reporting."""
    if config.admin_api is None:
        return  # logs only: nothing to poll, and no need to load the HTTP client
    from exporter.app import make_billing_poller

    poller = make_billing_poller(config, time.time)  # registers the key with the scrubber
    if poller is None:
        return
    try:
        snap = poller.poll(since=since)
    except Exception as exc:  # noqa: BLE001 - a bug in the poll: the report of the stored bill still stands
        _say(f"claude-budget-exporter: Admin API poll failed ({type(exc).__name__}: {exc}); "
             "billed figures are the last stored ones")
    else:
        if not snap.up:
            _say(f"claude-budget-exporter: Admin API: {snap.error}; billed figures are the last stored ones")
    finally:
        poller.client.close()


def _progress_bar():
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
