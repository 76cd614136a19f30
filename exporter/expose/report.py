"""``report``: daily estimated (and billed) spend by model, as JSON or a table."""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from operator import add
from typing import Any, TextIO

from exporter.state import (AGG_CACHE_READ, AGG_CACHE_WRITE_1H, AGG_CACHE_WRITE_5M, AGG_COST_PICO,
                            AGG_INPUT, AGG_OUTPUT, AGG_REPORTED_PICO, AGG_REQUESTS, AGG_UNPRICED, AGG_WEB_SEARCH, AggKey)

PICO = 10**12
_MICRO = Decimal("0.000001")


def _usd(value: Decimal | None) -> float | None:
    """Dollars for JSON: exact to the micro-dollar, so sums to the cent stay right."""
    return None if value is None else float(value.quantize(_MICRO, ROUND_HALF_EVEN))


def _reported(pico: int) -> float | None:
    return _usd(Decimal(pico) / PICO) if pico else None


def build_report(
    aggregates: Mapping[AggKey, list[int]],
    *,
    since: date | None = None,
    until: date | None = None,
    billed_by_day: Mapping[date, Decimal] | None = None,
    billed_error: str | None = None,
) -> dict[str, Any]:
    """The ``report --json`` object from hourly aggregates (and billed USD per UTC day).

    ``billed_error``: why fresh billed figures could not be fetched (the billed figures are then the
    last stored ones, or none); null when they were, or when no Admin API is configured.

    ``reported_usd`` (per model, per day, in the totals) is the sum of what the logs themselves
    said the requests cost (Claude Code's own figure in CLI results), beside our estimate;
    null where the logs reported nothing (a reported $0 reads as nothing reported).
    """
    per_day: dict[date, dict[str, list[int]]] = defaultdict(dict)
    days_of: dict[int, date] = {}  # UTC day number -> date: a few dozen days, not one per hour
    for (hour, _source, model, _entry), v in aggregates.items():
        n = hour // 86400
        day = days_of.get(n)
        if day is None:
            day = days_of[n] = datetime.fromtimestamp(n * 86400, UTC).date()
        if (since and day < since) or (until and day > until):
            continue
        by_model = per_day[day]
        acc = by_model.get(model)
        by_model[model] = list(v) if acc is None else list(map(add, acc, v))
    billed = dict(billed_by_day or {})
    days_set = set(per_day) | {d for d in billed if (not since or d >= since) and (not until or d <= until)}
    days = []
    tot_est = Decimal(0)
    tot_billed: Decimal | None = None
    tot_req = 0
    tot_tokens = [0] * 6
    tot_reported = 0  # picodollars
    for day in sorted(days_set):
        models = []
        est_day = Decimal(0)
        reported_day = 0
        for model, v in per_day.get(day, {}).items():
            if not any(v):
                continue
            usd = Decimal(v[AGG_COST_PICO]) / PICO
            est_day += usd
            reported_day += v[AGG_REPORTED_PICO]
            tot_req += v[AGG_REQUESTS]
            for i in range(6):
                tot_tokens[i] += v[AGG_INPUT + i]
            models.append({
                "model": model, "estimated_usd": _usd(usd), "input_tokens": v[AGG_INPUT],
                "output_tokens": v[AGG_OUTPUT], "cache_read_tokens": v[AGG_CACHE_READ],
                "cache_write_5m_tokens": v[AGG_CACHE_WRITE_5M], "cache_write_1h_tokens": v[AGG_CACHE_WRITE_1H],
                "web_search_requests": v[AGG_WEB_SEARCH], "requests": v[AGG_REQUESTS],
                "unpriced_tokens": v[AGG_UNPRICED], "reported_usd": _reported(v[AGG_REPORTED_PICO]),
            })
        models.sort(key=lambda m: (-float(m["estimated_usd"] or 0), str(m["model"])))
        b = billed.get(day)
        if b is not None:
            tot_billed = (tot_billed or Decimal(0)) + b
        tot_est += est_day
        tot_reported += reported_day
        days.append({
            "date": day.isoformat(),
            "estimated_usd": _usd(est_day),
            "billed_usd": _usd(b),
            "drift_ratio": float(round(est_day / b, 6)) if b else None,
            "reported_usd": _reported(reported_day),
            "models": models,
        })
    return {
        "billed_error": billed_error,
        "days": days,
        "totals": {
            "estimated_usd": _usd(tot_est),
            "billed_usd": _usd(tot_billed),
            "reported_usd": _reported(tot_reported),
            "requests": tot_req,
            "input_tokens": tot_tokens[0], "output_tokens": tot_tokens[1], "cache_read_tokens": tot_tokens[2],
            "cache_write_5m_tokens": tot_tokens[3], "cache_write_1h_tokens": tot_tokens[4],
        },
    }


def write_json(report: dict[str, Any], out: TextIO) -> None:
    out.write(json.dumps(report, indent=2))  # one write: the encoder in C, not one write per token
    out.write("\n")


def _color(out: TextIO) -> bool:
    return bool(getattr(out, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ


_DRIFT_FINE, _DRIFT_WARN = Decimal("0.05"), Decimal("0.15")


def _drift_style(ratio: Decimal) -> str:
    """Green within 5% of the bill, yellow within 15%, red beyond."""
    off = abs(ratio - 1)
    return "32" if off <= _DRIFT_FINE else "33" if off <= _DRIFT_WARN else "31"


def _money(value: float) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def write_table(report: dict[str, Any], out: TextIO = sys.stdout, *, today: date | None = None) -> None:
    """An aligned table a person reads at a glance, like ccusage's daily view.

    Numbers are right-aligned with a totals row. The Billed and Drift columns appear when
    the Admin API has billed days; today's bill is partial, so its cells are marked and it
    is left out of the total drift, which covers complete days with both figures. Colour
    only on a terminal, and never with ``NO_COLOR`` set.
    """
    color = _color(out)
    today_iso = (today or datetime.now(UTC).date()).isoformat()
    days = report["days"]
    has_billed = any(d["billed_usd"] is not None for d in days)
    partial = has_billed and any(d["date"] == today_iso and d["billed_usd"] is not None for d in days)
    head = ["Date", "Models", "Input", "Output", "Cache write", "Cache read", "Requests", "Estimated"]
    if has_billed:
        # with a partial day, figures carry a mark column: headers end where the digits do
        head += ["Billed" + (" " if partial else ""), "Drift" + (" " if partial else "")]
    Cell = tuple[str, str]  # (text, ANSI style)
    rows: list[list[Cell]] = []
    drift_est = drift_billed = Decimal(0)
    drift_days = 0
    for d in days:
        ms = d["models"]
        row: list[Cell] = [
            (d["date"], ""),
            (", ".join(_short(m["model"]) for m in ms) or "-", "2" if not ms else ""),
            (f"{sum(m['input_tokens'] for m in ms):,}", ""),
            (f"{sum(m['output_tokens'] for m in ms):,}", ""),
            (f"{sum(m['cache_write_5m_tokens'] + m['cache_write_1h_tokens'] for m in ms):,}", ""),
            (f"{sum(m['cache_read_tokens'] for m in ms):,}", ""),
            (f"{sum(m['requests'] for m in ms):,}", ""),
            (_money(d["estimated_usd"]), ""),
        ]
        if has_billed:
            is_today = d["date"] == today_iso
            mark = "*" if is_today else (" " if partial else "")
            if d["billed_usd"] is None:
                row += [("-" + (" " if partial else ""), "2"), ("-" + (" " if partial else ""), "2")]
            else:
                ratio = None if d["drift_ratio"] is None else Decimal(str(d["drift_ratio"]))
                row += [(_money(d["billed_usd"]) + mark, ""),
                        ("-" + mark, "2") if ratio is None else (f"{ratio:.3f}{mark}",
                                                                 "2" if is_today else _drift_style(ratio))]
                if not is_today and d["billed_usd"]:
                    drift_est += Decimal(str(d["estimated_usd"]))
                    drift_billed += Decimal(str(d["billed_usd"]))
                    drift_days += 1
        rows.append(row)
    t = report["totals"]
    total: list[Cell] = [(c, "") for c in (
        "Total", "", f"{t['input_tokens']:,}", f"{t['output_tokens']:,}",
        f"{t['cache_write_5m_tokens'] + t['cache_write_1h_tokens']:,}", f"{t['cache_read_tokens']:,}",
        f"{t['requests']:,}", _money(t["estimated_usd"]))]
    if has_billed:
        pad = " " if partial else ""
        total.append(("-" + pad if t["billed_usd"] is None else _money(t["billed_usd"]) + pad, ""))
        if drift_billed:
            ratio = drift_est / drift_billed
            total.append((f"{ratio:.3f}{pad}", _drift_style(ratio)))
        else:
            total.append(("-" + pad, "2"))
    widths = [max(len(r[i][0]) for r in [[(h, "") for h in head], *rows, total]) for i in range(len(head))]

    def paint(text: str, style: str) -> str:
        return f"\x1b[{style}m{text}\x1b[0m" if color and style else text

    def line(cells: list[Cell], row_style: str = "") -> str:
        parts = []
        for i, ((text, style), w) in enumerate(zip(cells, widths, strict=True)):
            padded = text.ljust(w) if i < 2 else text.rjust(w)
            parts.append(paint(padded, ";".join(s for s in (row_style, style) if s)))
        return "  ".join(parts).rstrip()

    try:
        "─".encode(getattr(out, "encoding", None) or "utf-8")
        dash = "─"
    except (UnicodeEncodeError, LookupError):
        dash = "-"
    rule = "  ".join(dash * w for w in widths)
    out.write(line([(h, "") for h in head], "1") + "\n")
    out.write(paint(rule, "2") + "\n")
    out.writelines(line(r) + "\n" for r in rows)
    out.write(paint(rule, "2") + "\n")
    out.write(line(total, "1") + "\n")
    if not rows:
        out.write("(no usage in the selected days)\n")
    notes = []
    if has_billed:
        notes.append(f"Drift = estimated / billed. The total drift covers the {drift_days} complete day"
                     f"{'s' if drift_days != 1 else ''} with both.")
        if partial:
            notes.append("* today so far: the bill is still partial.")
    elif rows and not report.get("billed_error"):
        notes.append("No billed days: with an admin key, Billed and Drift columns compare the estimate with the bill.")
    if report.get("billed_error"):
        shown = "the billed figures shown are the last stored ones" if has_billed else "no billed figures are stored"
        notes.append(f"Billed figures could not be fetched: {report['billed_error']}; {shown}.")
    out.writelines(paint(n, "33" if n.startswith("Billed figures could not") else "2") + "\n" for n in notes)


def _short(model: str) -> str:
    name = model.removeprefix("claude-")
    parts = name.split("-")
    if len(parts) > 1 and parts[-1].isdigit() and len(parts[-1]) == 8:
        name = "-".join(parts[:-1])
    return name


# --------------------------------------------------------------------------- report --blocks

_BLOCK_COLUMNS = (AGG_REQUESTS, AGG_INPUT, AGG_OUTPUT, AGG_CACHE_READ, AGG_CACHE_WRITE_5M, AGG_CACHE_WRITE_1H,
                  AGG_COST_PICO)


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def build_blocks(aggregates: Mapping[AggKey, list[int]], *, now: float, since: date | None = None,
                 until: date | None = None) -> dict[str, Any]:
    """The ``report --blocks --json`` object: every source's requests together, as one account's 5-hour
    blocks (see :mod:`exporter.core.blocks`), oldest first, without gap entries. ``since`` and ``until``
    pick the blocks by the UTC day they start on."""
    from exporter.core import blocks as bk

    hours = bk.sum_hours((key[0], [v[c] for c in _BLOCK_COLUMNS]) for key, v in aggregates.items())
    out = []
    for b in bk.blocks(hours):
        day = datetime.fromtimestamp(b.start, UTC).date()
        if (since and day < since) or (until and day > until):
            continue
        f = b.figures
        row: dict[str, Any] = {
            "start": _rfc3339(b.start), "end": _rfc3339(b.end), "cost_usd": _usd(b.cost_usd),
            "input_tokens": f[bk.INPUT], "output_tokens": f[bk.OUTPUT], "cache_read_tokens": f[bk.CACHE_READ],
            "cache_write_tokens": f[bk.CACHE_WRITE_5M] + f[bk.CACHE_WRITE_1H], "requests": f[bk.REQUESTS],
            "active": b.active(now),
        }
        if row["active"]:
            row["burn_rate_usd_per_hour"] = _usd(b.burn_rate_per_hour(now))
            row["projected_usd"] = _usd(b.projected_usd(now))
        out.append(row)
    return {"blocks": out}


def write_blocks_table(report: dict[str, Any], out: TextIO = sys.stdout) -> None:
    """One row per block (UTC), a totals row, and the active block's burn rate and projection."""
    color = _color(out)
    head = ["Block (UTC)", "Requests", "Input", "Output", "Cache write", "Cache read", "Cost"]
    rows = []
    totals = [0, 0, 0, 0, 0]
    cost = 0.0
    for b in report["blocks"]:
        start, end = b["start"], b["end"]
        figures = [b["requests"], b["input_tokens"], b["output_tokens"], b["cache_write_tokens"],
                   b["cache_read_tokens"]]
        for i, n in enumerate(figures):
            totals[i] += n
        cost += b["cost_usd"]
        rows.append([f"{start[:10]} {start[11:16]}-{end[11:16]}{' *' if b['active'] else ''}",
                     *(f"{n:,}" for n in figures), _money(b["cost_usd"])])
    total = ["Total", *(f"{n:,}" for n in totals), _money(cost)]
    widths = [max(len(r[i]) for r in [head, *rows, total]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                              strict=True))).rstrip()

    bold, dim = ("\x1b[1m", "\x1b[2m") if color else ("", "")
    reset = "\x1b[0m" if color else ""
    rule = "  ".join("-" * w for w in widths)
    out.write(f"{bold}{line(head)}{reset}\n{dim}{rule}{reset}\n")
    out.writelines(line(r) + "\n" for r in rows)
    out.write(f"{dim}{rule}{reset}\n{bold}{line(total)}{reset}\n")
    if not rows:
        out.write("(no usage in the selected days)\n")
    for b in report["blocks"]:
        if b["active"]:
            out.write(f"{dim}* active: {_money(b['burn_rate_usd_per_hour'])} an hour since it began, "
                      f"{_money(b['projected_usd'])} by {b['end'][11:16]} UTC at that rate{reset}\n")
