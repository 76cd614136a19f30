"""``report``: daily estimated (and billed) spend by model, as JSON or a table."""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, TextIO

from exporter.state import AggKey

PICO = 10**12
_MICRO = Decimal("0.000001")


def _usd(value: Decimal | None) -> float | None:
    """Dollars for JSON: exact to the micro-dollar, so sums to the cent stay right."""
    return None if value is None else float(value.quantize(_MICRO, ROUND_HALF_EVEN))


def build_report(
    aggregates: Mapping[AggKey, list[int]],
    *,
    since: date | None = None,
    until: date | None = None,
    billed_by_day: Mapping[date, Decimal] | None = None,
) -> dict[str, Any]:
    """The ``report --json`` object from hourly aggregates (and billed USD per UTC day)."""
    per_day: dict[date, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0] * 9))
    for (hour, _source, model, _entry), v in aggregates.items():
        day = datetime.fromtimestamp(hour, UTC).date()
        if (since and day < since) or (until and day > until):
            continue
        acc = per_day[day][model]
        for i, x in enumerate(v):
            acc[i] += x
    billed = dict(billed_by_day or {})
    days_set = set(per_day) | {d for d in billed if (not since or d >= since) and (not until or d <= until)}
    days = []
    tot_est = Decimal(0)
    tot_billed: Decimal | None = None
    tot_req = 0
    tot_tokens = [0] * 6
    for day in sorted(days_set):
        models = []
        est_day = Decimal(0)
        for model, v in per_day.get(day, {}).items():
            if not any(v):
                continue
            usd = Decimal(v[7]) / PICO
            est_day += usd
            tot_req += v[0]
            for i in range(6):
                tot_tokens[i] += v[1 + i]
            models.append({
                "model": model, "estimated_usd": _usd(usd), "input_tokens": v[1], "output_tokens": v[2],
                "cache_read_tokens": v[3], "cache_write_5m_tokens": v[4], "cache_write_1h_tokens": v[5],
                "web_search_requests": v[6], "requests": v[0], "unpriced_tokens": v[8],
            })
        models.sort(key=lambda m: (-m["estimated_usd"], m["model"]))
        b = billed.get(day)
        if b is not None:
            tot_billed = (tot_billed or Decimal(0)) + b
        tot_est += est_day
        days.append({
            "date": day.isoformat(),
            "estimated_usd": _usd(est_day),
            "billed_usd": _usd(b),
            "drift_ratio": float(round(est_day / b, 6)) if b else None,
            "models": models,
        })
    return {
        "days": days,
        "totals": {
            "estimated_usd": _usd(tot_est),
            "billed_usd": _usd(tot_billed),
            "requests": tot_req,
            "input_tokens": tot_tokens[0], "output_tokens": tot_tokens[1], "cache_read_tokens": tot_tokens[2],
            "cache_write_5m_tokens": tot_tokens[3], "cache_write_1h_tokens": tot_tokens[4],
        },
    }


def write_json(report: dict[str, Any], out: TextIO) -> None:
    json.dump(report, out, indent=2)
    out.write("\n")


def _color(out: TextIO) -> bool:
    return bool(getattr(out, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ


def write_table(report: dict[str, Any], out: TextIO = sys.stdout) -> None:
    """An aligned table a person reads at a glance; colour only on a terminal without NO_COLOR."""
    color = _color(out)
    has_billed = any(d["billed_usd"] is not None for d in report["days"])
    head = ["Date", "Models", "Input", "Output", "Cache write", "Cache read", "Requests", "Estimated"]
    if has_billed:
        head += ["Billed", "Drift"]
    rows: list[list[str]] = []
    for d in report["days"]:
        ms = d["models"]
        row = [
            d["date"],
            ", ".join(_short(m["model"]) for m in ms) or "-",
            f"{sum(m['input_tokens'] for m in ms):,}",
            f"{sum(m['output_tokens'] for m in ms):,}",
            f"{sum(m['cache_write_5m_tokens'] + m['cache_write_1h_tokens'] for m in ms):,}",
            f"{sum(m['cache_read_tokens'] for m in ms):,}",
            f"{sum(m['requests'] for m in ms):,}",
            f"${d['estimated_usd']:,.2f}",
        ]
        if has_billed:
            row += ["-" if d["billed_usd"] is None else f"${d['billed_usd']:,.2f}",
                    "-" if d["drift_ratio"] is None else f"{d['drift_ratio']:.3f}"]
        rows.append(row)
    t = report["totals"]
    total = ["Total", "", f"{t['input_tokens']:,}", f"{t['output_tokens']:,}",
             f"{t['cache_write_5m_tokens'] + t['cache_write_1h_tokens']:,}", f"{t['cache_read_tokens']:,}",
             f"{t['requests']:,}", f"${t['estimated_usd']:,.2f}"]
    if has_billed:
        total += ["-" if t["billed_usd"] is None else f"${t['billed_usd']:,.2f}", ""]
    widths = [max(len(r[i]) for r in [head, *rows, total]) for i in range(len(head))]

    def fmt(r: list[str], style: str = "") -> str:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        line = "  ".join(cells).rstrip()
        return f"\x1b[{style}m{line}\x1b[0m" if color and style else line

    out.write(fmt(head, "1") + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for r in rows:
        out.write(fmt(r) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    out.write(fmt(total, "1;33") + "\n")
    if not rows:
        out.write("(no usage in the selected days)\n")


def _short(model: str) -> str:
    name = model.removeprefix("claude-")
    parts = name.split("-")
    if len(parts) > 1 and parts[-1].isdigit() and len(parts[-1]) == 8:
        name = "-".join(parts[:-1])
    return name
