"""``claude-budget-exporter statusline``: the command for Claude Code's ``statusLine`` setting.

Claude Code runs it on every status update with its statusline JSON on stdin. It appends one
compact record (time, session, model, the ``rate_limits`` windows, the session cost) to a JSONL
file that a ``rate_limits`` source tails, and prints one short line: the windows used in %, the
time to their reset, the session cost and, given an exporter's URL and a pool, what the pool has
left.

It must never break Claude Code's status line: whatever goes wrong (no JSON, an unwritable file,
an exporter that does not answer) it prints a plain line and exits 0. It is quick: it imports
only the standard library (``urllib`` only with ``--url``), and the entry point sends it here
before the rest of the program is imported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

#: the state directory's default (exporter.config.model.DEFAULT_STATE_DIR: importing the config
#: costs this command more than everything else it does)
DEFAULT_STATE_DIR = "~/.local/state/claude-budget-exporter"
DEFAULT_FILE = "statusline.jsonl"
FALLBACK = "claude-budget-exporter: no status"
#: the windows Claude Code reports, and how the line names them
WINDOWS = {"five_hour": "5h", "seven_day": "7d", "seven_day_opus": "7d opus", "seven_day_sonnet": "7d sonnet"}
MAX_INPUT = 1 << 20  # Claude Code's JSON is a few kilobytes
MAX_TEXT = 200  # a session id or model id longer than this is not one


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="FILE", help=f"JSONL file to append to (default: {DEFAULT_STATE_DIR}/"
                                                 f"{DEFAULT_FILE}, or under --state-dir)")
    p.add_argument("--state-dir", metavar="DIR", help="the exporter's state directory, for the default file")
    p.add_argument("--url", help="a running exporter, e.g. http://127.0.0.1:9833, to show a pool's remaining credit")
    p.add_argument("--pool", help="the pool to show (with --url)")
    p.add_argument("--timeout", type=float, default=0.3, help="seconds to wait for the exporter (default 0.3)")
    p.add_argument("--no-record", action="store_true", help="print the line only, append nothing")


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run; exit 0 whatever happens."""
    try:
        parser = argparse.ArgumentParser(prog="claude-budget-exporter statusline", add_help=True)
        add_arguments(parser)
        args, _unknown = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # --help (exit 0), or arguments argparse refused
        if exc.code in (0, None):
            return 0
        _print(FALLBACK)
        return 0
    return run(args)


def run(args: argparse.Namespace, stdin: Any = None, now: float | None = None) -> int:
    line = FALLBACK
    try:
        data = _read(stdin if stdin is not None else sys.stdin)
        at = time.time() if now is None else now
        if data is not None:
            record = build_record(data, at)
            if not args.no_record:
                _append(_out_path(args), record)
            pool = _pool_text(args.url, args.pool, args.timeout) if args.url and args.pool else None
            line = status_text(record, at, pool)
    except Exception:  # noqa: BLE001 - a status line must never fail: the plain line instead
        line = FALLBACK
    _print(line)
    return 0


def _print(text: str) -> None:
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except Exception:  # noqa: BLE001, S110 - nobody reads: nothing more to do
        pass


def _read(stream: Any) -> dict[str, Any] | None:
    raw = stream.buffer.read(MAX_INPUT + 1) if hasattr(stream, "buffer") else stream.read(MAX_INPUT + 1)
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not raw or len(raw) > MAX_INPUT:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- the record


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_TEXT else None


def _number(value: Any, lo: float, hi: float) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or not lo <= value <= hi:
        return None
    return value


def build_record(data: dict[str, Any], now: float) -> dict[str, Any]:
    """The compact record of one statusline call: only the fields a rate_limits source reads, checked."""
    record: dict[str, Any] = {
        "type": "statusline",
        "timestamp": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    session = _text(data.get("session_id"))
    if session is not None:
        record["session_id"] = session
    model = data.get("model")
    if isinstance(model, dict):
        model_id, shown = _text(model.get("id")), _text(model.get("display_name"))
        if model_id is not None:
            record["model"] = model_id
        if shown is not None:
            record["model_name"] = shown
    cost = data.get("cost")
    if isinstance(cost, dict):
        usd = _number(cost.get("total_cost_usd"), 0, 1e6)
        if usd is not None:
            record["cost_usd"] = usd
    limits = data.get("rate_limits")
    windows: dict[str, dict[str, float | int]] = {}
    if isinstance(limits, dict):
        for name in WINDOWS:
            w = limits.get(name)
            if not isinstance(w, dict):
                continue
            used = _number(w.get("used_percentage"), 0, 150)
            resets = _number(w.get("resets_at"), 1_577_836_800, 4_102_444_800)
            if used is None and resets is None:
                continue
            windows[name] = {k: v for k, v in (("used_percentage", used), ("resets_at", resets)) if v is not None}
    if windows:
        record["rate_limits"] = windows
    return record


def _out_path(args: argparse.Namespace) -> str:
    out: str | None = args.out
    if out:
        return os.path.expanduser(out)
    state_dir: str = args.state_dir or DEFAULT_STATE_DIR
    return os.path.join(os.path.expanduser(state_dir), DEFAULT_FILE)


def _append(path: str, record: dict[str, Any]) -> None:
    """One write of one whole line, appended: concurrent sessions never interleave inside a record."""
    line = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")
    folder = os.path.dirname(path)
    if folder and not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the line


def until(seconds: float) -> str:
    """Time to a reset, short: 37m, 2h13m, 4d2h."""
    minutes = max(0, int(seconds // 60))
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def status_text(record: dict[str, Any], now: float, pool: str | None = None) -> str:
    parts: list[str] = []
    name = record.get("model_name") or record.get("model")
    if name:
        parts.append(str(name))
    for window, label in WINDOWS.items():
        w = record.get("rate_limits", {}).get(window)
        if w is None:
            continue
        used, resets = w.get("used_percentage"), w.get("resets_at")
        text = f"{label} {used:.0f}%" if used is not None else label
        if resets is not None:
            text += f" resets {until(resets - now)}" if resets > now else " reset"
        parts.append(text)
    if "cost_usd" in record:
        parts.append(f"session ${record['cost_usd']:,.2f}")
    if pool:
        parts.append(pool)
    return " | ".join(parts) if parts else FALLBACK


def _pool_text(url: str, pool: str, timeout: float) -> str | None:
    """``agent-sdk $12.34 left`` (``five-hour 58% left`` for a window pool) from the exporter's
    /breaker answer; None when it does not answer in time."""
    import urllib.error
    import urllib.request
    from urllib.parse import quote

    target = f"{url.rstrip('/')}/breaker/{quote(pool, safe='')}"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as r:  # noqa: S310 - the user's own exporter URL
            body = r.read(65536)
    except urllib.error.HTTPError as exc:  # 503: the breaker is open, and the body says the rest
        if exc.code != 503:
            return None
        body = exc.read(65536)
    except Exception:  # noqa: BLE001 - an exporter that is down must not cost the status line
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    shown = pool[:MAX_TEXT]
    if isinstance(data.get("window"), dict) and isinstance(data.get("remaining_ratio"), (int, float)):
        text = f"{shown} {data['remaining_ratio'] * 100:.0f}% left"
    elif isinstance(data.get("remaining_usd"), (int, float)):
        text = f"{shown} ${data['remaining_usd']:,.2f} left"
    else:
        return None
    return text + (" (breaker open)" if data.get("state") == "open" else "")
