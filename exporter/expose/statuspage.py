"""The landing page ``/``: what a person wants to see without Grafana, in one glance.

Plain server-rendered HTML with inline CSS: no script, no external assets, no build step.
It refreshes itself, reflows to one column on a phone, and escapes every value that came
from a config, a log or the Admin API. Pure: the snapshot, the breaker decisions and
``now`` come in, a string goes out.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import quote

#: ``Config.origin`` of ``serve --demo``; the page then says it shows a simulated organisation.
DEMO_ORIGIN = "built-in demo (a simulated organisation)"
REFRESH_SECONDS = 15
_CENT = Decimal("0.01")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def usd(value: Decimal | None) -> str:
    if value is None:
        return "–"
    rounded = Decimal(value).quantize(_CENT, rounding=ROUND_HALF_UP)
    return f"-${-rounded:,.2f}" if rounded < 0 else f"${rounded:,.2f}"


def pct(value: Decimal | None, places: int = 1) -> str:
    if value is None:
        return "–"
    return f"{Decimal(value) * 100:.{places}f}%"


def ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 5:
        return "just now"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def until(seconds: float) -> str:
    if seconds <= 0:
        return "now"
    if seconds < 90:
        return f"in {seconds:.0f} s"
    if seconds < 90 * 60:
        return f"in {seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"in {seconds / 3600:.1f} h"
    return f"in {seconds / 86400:.0f} days"


def when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%b %-d")


def _drift_words(ratio: Decimal | None) -> str:
    if ratio is None:
        return "no complete billed day yet"
    off = (Decimal(ratio) - 1) * 100
    if abs(off) < Decimal("0.05"):
        return "estimates match the bill"
    return f"estimates run {abs(off):.1f}% {'over' if off > 0 else 'under'} the bill"


def _level(ratio: Decimal | None, open_below: Decimal, is_open: bool) -> str:
    if is_open or (ratio is not None and ratio <= 0):
        return "bad"
    if ratio is not None and ratio < max(2 * open_below, Decimal("0.25")):
        return "warn"
    return "ok"


def _pool_card(s: Any, decision: Any, now: float) -> str:
    is_open = bool(decision.open) if decision is not None else bool(s.breaker_open_by_threshold)
    ratio = s.remaining_ratio
    level = _level(ratio, s.open_below, is_open)
    fill = min(Decimal(100), max(Decimal(0), (ratio or Decimal(0)) * 100))
    state = "open" if is_open else "closed"
    reason = decision.reason if decision is not None else ""
    tags = "".join(f'<span class="tag">{_e(t)}</span>' for t in (s.team and f"team {s.team}",
                                                                  s.plan and f"plan {s.plan}") if t)
    # spend: billed through the last complete day + calibrated estimate since
    if s.billed_basis == "analytics" and s.billed_until is not None and s.billed_through is not None:
        split = (f"billed {usd(s.spend_billed)} until {_e(s.billed_until.strftime('%Y-%m-%d %H:%M UTC'))}"
                 f" + estimate {usd(s.spend_estimated)} since")
    elif s.billed_through is not None:
        split = (f"billed {usd(s.spend_billed)} through {_e(_day(datetime.combine(s.billed_through, datetime.min.time(), UTC)))}"
                 f" + estimate {usd(s.spend_estimated)} since")
    elif s.billed_basis == "none":
        split = "estimate only (the pool names no workspaces, API keys, actors or products)"
    else:
        split = f"estimate {usd(s.spend_estimated)}: no complete billed day in this period yet"
    if s.calibration is not None:
        split += f", calibrated by drift {Decimal(s.calibration):.3f}"

    def cells(values: Mapping[str, Any] | None, fmt: Any) -> str:
        if values is None:
            return '<td colspan="3" class="muted">not billed to this pool</td>'
        return "".join(f'<td class="num">{_e(fmt(values.get(w)))}</td>' for w in ("period", "yesterday", "today"))

    def ratio3(value: Any) -> str:
        return "–" if value is None else f"{Decimal(value):.3f}"

    windows = f"""<div class="scroll"><table class="windows"><thead><tr><th></th><th>period</th><th>yesterday</th>
    <th>today</th></tr></thead><tbody>
    <tr><th>Billed</th>{cells(s.billed, usd)}</tr>
    <tr><th>Estimated</th>{cells(s.estimated, usd)}</tr>
    <tr><th>Drift</th>{cells({"period": s.drift.get("period"), "yesterday": s.drift.get("yesterday"),
                             "today": None}, ratio3)}</tr>
    </tbody></table></div>
    <p class="note">drift = estimated / billed on complete UTC days: {_e(_drift_words(s.drift.get("period")))}</p>"""
    end = s.period_end
    if s.exhaustion is None:
        dry = "not at the current rate"
    elif s.exhaustion >= end and not s.rolling:
        dry = f"after the reset ({_e(when(s.exhaustion))})"
    else:
        dry = f'<strong>{_e(when(s.exhaustion))}</strong> <span class="muted">{_e(until(s.exhaustion.timestamp() - now))}</span>'
    basis = f"billed from {s.billed_basis.replace('_', ' ')}, estimated from {s.estimate_basis.replace('_', ' ')}"
    hours = int((end - s.period_start).total_seconds() // 3600)
    if s.rolling:
        period = (f"the last {hours} h (rolling) <span class=\"muted\">the oldest hour leaves "
                  f"{_e(until(end.timestamp() - now))}</span>")
        projection = f"at this rate the window holds {usd(s.projected_spend)}"
    else:
        projection = f"projected {usd(s.projected_spend)} by the reset"
        period = (f"{_e(_day(s.period_start))} → {_e(_day(end))} "
                  f'<span class="muted">resets {_e(until(end.timestamp() - now))}</span>')
    name = _e(s.pool)
    return f"""
<section class="pool {level}" data-pool="{name}" data-breaker="{state}">
  <header><h2>{name}</h2>{tags}<span class="breaker {state}">breaker {state.upper() if is_open else state}</span></header>
  <div class="remaining"><span class="big">{usd(s.remaining)}</span> left of {usd(s.credit)}
    <span class="ratio">{pct(ratio)}</span></div>
  <div class="bar" role="meter" aria-label="remaining credit of {name}" aria-valuemin="0" aria-valuemax="100"
       aria-valuenow="{fill:.1f}"><div class="fill" style="width:{fill:.2f}%"></div>
    <div class="mark" style="left:{Decimal(s.open_below) * 100:.2f}%" title="breaker opens below {pct(s.open_below)}"></div></div>
  <p class="reason">{_e(reason)}</p>
  {_pool_chart(s)}
  {windows}
  <dl>
    <dt>Spend this period</dt><dd><span class="num">{usd(s.spend)}</span><br><span class="muted">{split}</span></dd>
    <dt>Burn rate</dt><dd><span class="num">{usd(s.burn_rate_per_hour)}/h</span>
      <span class="muted">{projection}</span></dd>
    <dt>Runs dry</dt><dd>{dry}</dd>
    <dt>Period</dt><dd>{period}</dd>
  </dl>
  <footer><span class="muted">{_e(basis)}</span> · <a href="/breaker/{_e(quote(s.pool, safe=''))}">/breaker/{name}</a></footer>
</section>"""


def _sources(snap: Any, now: float) -> str:
    rows = []
    billings = getattr(snap, "billings", ()) or ((snap.billing,) if snap.billing is not None else ())
    for src in snap.sources:
        fresh = ago(now - src.last_success) if src.last_success else "never"
        detail = f"{src.files} file{'s' if src.files != 1 else ''}" if src.kind not in ("admin_api", "otlp") else ""
        # the organisation's own bill: admin_api, or admin_api:<name> with several
        billing = next((b for b in billings if src.name in ("admin_api", f"admin_api:{b.org}")), None)
        missing = getattr(src, "missing", ())
        if missing and src.up:  # a source that is down says it in its error
            detail += f"; not found: {', '.join(missing)}"
        if src.kind == "admin_api" and billing is not None and billing.complete_through is not None:
            detail = f"bill complete through {_day(billing.complete_through - timedelta(days=1))}"
        state = "up" if src.up else "down"
        rows.append(f'<tr data-source="{_e(src.name)}"><td>{_e(src.name)}</td><td>{_e(src.kind)}</td>'
                    f'<td class="{state}">{state}</td><td>{_e(fresh)}</td><td>{_e(detail)}</td>'
                    f'<td class="err">{_e(src.error or "")}</td></tr>')
    if not rows:
        return '<p class="muted">No sources configured.</p>'
    return ('<div class="scroll"><table><thead><tr><th>source</th><th>kind</th><th>state</th><th>last success</th>'
            f'<th>detail</th><th>error</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def _estimated_by_model(snap: Any) -> str:
    by_model: dict[str, Decimal] = {}
    for (_source, model), amount in snap.estimated_cost.items():
        by_model[model] = by_model.get(model, Decimal(0)) + amount
    unpriced: dict[str, int] = {}
    for (_source, model), n in snap.unpriced_tokens.items():
        unpriced[model] = unpriced.get(model, 0) + n
        by_model.setdefault(model, Decimal(0))
    if not by_model:
        return ""
    rows = []
    for m, v in sorted(by_model.items(), key=lambda kv: (-kv[1], kv[0])):
        extra = f' <span class="muted">+ {unpriced[m]:,} tokens with no price</span>' if unpriced.get(m) else ""
        rows.append(f'<tr><td>{_e(m)}</td><td class="num">{usd(v)}{extra}</td></tr>')
    total = sum(by_model.values(), Decimal(0))
    return (f'<h3>Estimated from logs since the state began</h3><div class="scroll"><table class="models">'
            f'<tbody>{"".join(rows)}</tbody><tfoot><tr><th>total</th><td class="num">{usd(total)}</td></tr></tfoot>'
            f"</table></div>")


def render(snap: Any, decided: Mapping[str, Any], *, now: float, origin: str = "",
           refresh_seconds: int = REFRESH_SECONDS, warnings: Sequence[str] = ()) -> str:
    """The whole page for one snapshot (``exporter.snapshot.Snapshot``) and its breaker decisions.

    ``warnings``: plain-text lines shown above the pools, for what an operator must fix
    (a breaker webhook that refuses every call, say).
    """
    if not snap.ready:
        body = '<p class="notice">Starting: the first read of the logs is not done yet.</p>'
    elif snap.pools or getattr(snap, "window_pools", ()):
        body = ('<div class="pools">' + "".join(_pool_card(s, decided.get(s.pool), now) for s in snap.pools)
                + "".join(_window_card(w, decided.get(w.pool), now) for w in snap.window_pools) + "</div>")
    else:
        body = ('<p class="notice">No pools configured: add <code>pools:</code> to the config to track a credit, '
                "its drift and its breaker.</p>")
    banner = ""
    if origin == DEMO_ORIGIN:
        banner = ('<p class="demo">Demo: a simulated organisation, with spend running faster than real time. '
                  "Nothing here is real and the real Admin API is never contacted.</p>")
    banner += "".join(f'<p class="notice warning">{_e(w)}</p>' for w in warnings)
    breakers = " ".join(f'<a href="/breaker/{_e(quote(s.pool, safe=""))}">{_e(s.pool)}</a>'
                        for s in (*snap.pools, *getattr(snap, "window_pools", ())))
    as_of = when(datetime.fromtimestamp(snap.built_at, UTC))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{int(refresh_seconds)}">
<title>Claude credit · claude-budget-exporter</title>
<style>
:root{{--bg:#f5f6f8;--card:#fff;--fg:#1f2328;--muted:#656d76;--line:#d8dee4;--ok:#1a7f37;--warn:#b35900;
--bad:#cf222e;--track:#e6e9ee;--billed:#3b6fd6;--est:#a8c3f3}}
@media (prefers-color-scheme:dark){{:root{{--bg:#0d1117;--card:#161b22;--fg:#e6edf3;--muted:#8d96a0;
--line:#30363d;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--track:#30363d;--billed:#4f8ff7;--est:#2c5290}}}}
*{{box-sizing:border-box}}
body{{margin:0;padding:1rem;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,"DejaVu Sans",sans-serif}}
main{{max-width:78rem;margin:0 auto}}
h1{{font-size:1.35rem;margin:.2rem 0 .6rem}} h2{{font-size:1.15rem;margin:0}} h3{{font-size:1rem;margin:1.4rem 0 .4rem}}
a{{color:inherit}} .muted{{color:var(--muted)}} .num{{font-variant-numeric:tabular-nums}}
.top{{display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:baseline;justify-content:space-between}}
.demo,.notice{{background:var(--card);border:1px solid var(--line);border-left:4px solid var(--warn);
padding:.6rem .8rem;border-radius:6px}}
.pools{{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,22rem),1fr));gap:1rem}}
.pool{{background:var(--card);border:1px solid var(--line);border-top:4px solid var(--ok);border-radius:8px;
padding:.9rem 1rem}}
.pool.warn{{border-top-color:var(--warn)}} .pool.bad{{border-top-color:var(--bad)}}
.pool header{{display:flex;flex-wrap:wrap;gap:.4rem;align-items:center}}
.tag{{font-size:.75rem;color:var(--muted);border:1px solid var(--line);border-radius:99px;padding:0 .5rem}}
.breaker{{margin-left:auto;font-weight:600;font-size:.8rem;border-radius:99px;padding:.1rem .6rem;color:#fff;
background:var(--ok)}}
.breaker.open{{background:var(--bad)}}
.remaining{{margin:.7rem 0 .3rem}} .big{{font-size:1.7rem;font-weight:650;font-variant-numeric:tabular-nums}}
.ratio{{float:right;font-weight:600;margin-top:.7rem}}
.bar{{position:relative;height:.9rem;background:var(--track);border-radius:99px;overflow:hidden}}
.fill{{height:100%;background:var(--ok)}} .warn .fill{{background:var(--warn)}} .bad .fill{{background:var(--bad)}}
.mark{{position:absolute;top:0;bottom:0;width:2px;background:var(--fg);opacity:.55}}
.reason{{font-size:.82rem;color:var(--muted);margin:.45rem 0 .2rem}}
dl{{display:grid;grid-template-columns:max-content 1fr;gap:.35rem .9rem;margin:.6rem 0}}
dt{{color:var(--muted)}} dd{{margin:0}}
.windows{{min-width:100%;border:0;margin:.6rem 0 0}} .windows td,.windows th{{padding:.2rem .4rem;border:0}}
.windows thead th{{color:var(--muted);font-weight:500;font-size:.8rem;text-align:right}}
.windows tbody th{{color:var(--muted);font-weight:400}} .windows td{{text-align:right;font-variant-numeric:tabular-nums}}
.note{{font-size:.8rem;color:var(--muted);margin:.1rem 0 .4rem .4rem}}
.pool footer{{font-size:.8rem;border-top:1px solid var(--line);padding-top:.45rem}}
table{{border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:6px;min-width:100%}}
td,th{{padding:.3rem .7rem;text-align:left;border-bottom:1px solid var(--line);white-space:nowrap}}
td.num{{text-align:right}} .models{{min-width:auto}} .scroll{{overflow-x:auto}}
.up{{color:var(--ok);font-weight:600}} .down{{color:var(--bad);font-weight:600}} .err{{color:var(--bad);white-space:normal}}
nav{{margin-top:1.4rem;font-size:.9rem}} nav a{{margin-right:.8rem}}
.chart{{margin:.5rem 0 .2rem}} .chart svg{{display:block;width:100%;height:auto;overflow:visible}}
.chart figcaption{{font-size:.75rem;color:var(--muted);margin-top:.15rem}}
.chart text{{font:10px system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}}
.chart .lbl{{fill:var(--fg)}} .chart .tick{{fill:var(--muted)}}
.chart .axis{{stroke:var(--line)}} .chart .now{{stroke:var(--muted);stroke-dasharray:2 2;opacity:.7}}
.chart .billed{{fill:var(--billed)}} .chart .est{{fill:var(--est)}}
.chart .credit{{stroke:var(--bad);stroke-width:1.2}} .chart .trip{{stroke:var(--bad);stroke-dasharray:1 3;opacity:.7}}
.chart .proj{{stroke:var(--fg);stroke-width:1.2;stroke-dasharray:4 3;opacity:.75}}
.chart .spent{{fill:var(--fg)}} .chart .dry{{fill:var(--bad)}}
.chart .track{{fill:var(--track)}} .chart .used{{fill:var(--billed)}} .chart .elapsed{{fill:var(--est)}}
.key{{display:inline-block;width:.8em;height:.55em;margin:0 .25em 0 .5em;vertical-align:middle}}
.key.billed{{background:var(--billed)}} .key.est{{background:var(--est)}}
.key.proj{{border-top:2px dashed var(--fg);height:0}} .key.credit{{border-top:2px solid var(--bad);height:0}}
.windows-list{{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,18rem),1fr));gap:.6rem}}
.window{{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:.5rem .7rem}}
.window h4{{margin:0;font-size:.85rem;font-weight:600}}
@media (max-width:30rem){{body{{padding:.6rem}} dl{{grid-template-columns:1fr}} dt{{margin-top:.3rem}}}}
</style></head>
<body><main>
<div class="top"><h1>Claude credit</h1><span class="muted">as of {_e(as_of)} · refreshes every {int(refresh_seconds)} s</span></div>
{banner}
{body}
{_windows_section(snap, now) if snap.ready else ""}
<h3>Data freshness</h3>
{_sources(snap, now)}
{_estimated_by_model(snap)}
<nav><a href="/metrics">/metrics</a><a href="/healthz">/healthz</a>{' breakers: ' + breakers if breakers else ''}</nav>
<p class="muted">config: {_e(origin or "unknown")}</p>
</main></body></html>
"""


def _window_card(w: Any, decision: Any, now: float) -> str:
    """A pool on a subscription window: what is left of it, its reset and its last report."""
    is_open = bool(decision.open) if decision is not None else bool(w.breaker_open_by_threshold)
    ratio = w.headroom
    level = _level(ratio, w.open_below, is_open)
    fill = min(Decimal(100), max(Decimal(0), (ratio or Decimal(0)) * 100))
    state = "open" if is_open else "closed"
    reason = decision.reason if decision is not None else ""
    name = _e(w.pool)
    tags = "".join(f'<span class="tag">{_e(t)}</span>' for t in (w.team and f"team {w.team}",
                                                                  f"window {w.window}") if t)
    if w.reported_at is None:
        last = "never"
    else:
        last = ago(now - w.reported_at.timestamp()) + (" (stale)" if w.stale else "")
    if w.resets_at is None:
        resets = "–"
    elif w.reset:
        resets = f"reset {_e(ago(now - w.resets_at.timestamp()))}; waiting for a new report"
    else:
        resets = f"{_e(when(w.resets_at))} <span class=\"muted\">{_e(until(w.resets_at.timestamp() - now))}</span>"
    return f"""
<section class="pool {level}" data-pool="{name}" data-breaker="{state}" data-window="{_e(w.window)}">
  <header><h2>{name}</h2>{tags}<span class="breaker {state}">breaker {state.upper() if is_open else state}</span></header>
  <div class="remaining"><span class="big">{pct(ratio)}</span> of the window left
    <span class="ratio">{pct(w.used)} used</span></div>
  <div class="bar" role="meter" aria-label="window left of {name}" aria-valuemin="0" aria-valuemax="100"
       aria-valuenow="{fill:.1f}"><div class="fill" style="width:{fill:.2f}%"></div>
    <div class="mark" style="left:{Decimal(w.open_below) * 100:.2f}%" title="breaker opens below {pct(w.open_below)}"></div></div>
  <p class="reason">{_e(reason)}</p>
  {_window_bars(w.used, w.period_start, w.period_end, w.reset, now, w.open_below)}
  <dl>
    <dt>Resets</dt><dd>{resets}</dd>
    <dt>Last report</dt><dd>{_e(last)}{f" · status {_e(w.status)}" if w.status else ""}</dd>
  </dl>
  <footer><span class="muted">reported by {_e(w.source)}</span> · <a href="/breaker/{_e(quote(w.pool, safe=''))}">/breaker/{name}</a></footer>
</section>"""


# --------------------------------------------------------------------------- charts (inline SVG, drawn here)

#: a chart's drawing units: the SVG scales to its card's width, so text stays this size on a phone
_W, _H = 320, 150
_LEFT, _RIGHT, _TOP, _BOTTOM = 6, 6, 12, 18


def _n(value: float) -> str:
    """A coordinate, short."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _short_usd(value: Decimal) -> str:
    """Dollars for an axis: no cents past $100."""
    v = Decimal(value)
    return usd(v) if abs(v) < 100 else f"${v.quantize(Decimal(1), rounding=ROUND_HALF_UP):,}"


def _tick_label(moment: datetime, hourly: bool) -> str:
    return moment.astimezone(UTC).strftime("%H:%M") if hourly else _day(moment)


def _pool_chart(s: Any) -> str:
    """The period so far as cumulative spend by day (billed, then the calibrated estimate on top), the
    credit and the breaker's line, and the projection to the period's end at the current burn."""
    t0, t1 = float(s.period_start.timestamp()), float(s.period_end.timestamp())
    span = max(t1 - t0, 1.0)
    at = min(max(float(s.now.timestamp()), t0), t1)
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    buckets = tuple(s.buckets)
    credit = Decimal(s.credit)
    # the scale holds the credit and the spend; a projection far past them is cut at the top (its
    # figure is written), or the days would shrink to nothing under it
    base = max(credit, Decimal(s.spend), Decimal("0.01"))
    top = max(base * Decimal("1.15"), min(Decimal(s.projected_spend), base * Decimal("1.6")) * Decimal("1.08"))

    def x(t: float) -> float:
        return _LEFT + pw * min(max((t - t0) / span, 0.0), 1.0)

    def y(v: Decimal) -> float:
        return _TOP + ph * (1 - float(max(Decimal(0), min(Decimal(v), top)) / top))

    parts = [f'<line class="axis" x1="{_LEFT}" y1="{_n(y(Decimal(0)))}" x2="{_W - _RIGHT}" y2="{_n(y(Decimal(0)))}"/>']
    width = pw * (3600 * s.bucket_hours) / span
    gap = min(1.0, width * 0.15)
    cum_billed = cum_est = Decimal(0)
    for b in buckets:
        cum_billed += b.spend_billed
        cum_est += b.spend_estimated
        bx0 = x(b.start.timestamp())
        bx1 = min(x(b.start.timestamp() + 3600 * s.bucket_hours), x(at) if b is buckets[-1] else _W)
        w = max(bx1 - bx0 - gap, 0.6)
        when_text = _tick_label(b.start, s.bucket_hours < 24)
        day_bits = [f"estimated {usd(b.estimated)}"] + ([f"billed {usd(b.billed)}"] if b.billed is not None else [])
        tip = (f"{when_text}: {usd(cum_billed + cum_est)} so far this period "
               f"(billed {usd(cum_billed)} + estimate {usd(cum_est)}); that {'hour' if s.bucket_hours < 24 else 'day'}: "
               + ", ".join(day_bits))
        parts.append(f'<g class="bucket"><title>{_e(tip)}</title>')
        if cum_billed > 0:
            parts.append(f'<rect class="billed" x="{_n(bx0)}" y="{_n(y(cum_billed))}" width="{_n(w)}" '
                         f'height="{_n(y(Decimal(0)) - y(cum_billed))}"/>')
        if cum_est > 0:
            parts.append(f'<rect class="est" x="{_n(bx0)}" y="{_n(y(cum_billed + cum_est))}" width="{_n(w)}" '
                         f'height="{_n(y(cum_billed) - y(cum_billed + cum_est))}"/>')
        parts.append("</g>")
    # the breaker opens when what is left falls under open_below of the credit
    if credit > 0:
        trip = credit * (1 - Decimal(s.open_below))
        parts.append(f'<line class="trip" x1="{_LEFT}" y1="{_n(y(trip))}" x2="{_W - _RIGHT}" y2="{_n(y(trip))}">'
                     f"<title>the breaker opens past {_e(usd(trip))} spent</title></line>")
        parts.append(f'<line class="credit" x1="{_LEFT}" y1="{_n(y(credit))}" x2="{_W - _RIGHT}" y2="{_n(y(credit))}">'
                     f"<title>credit {_e(usd(credit))}</title></line>")
        parts.append(f'<text class="lbl" x="{_LEFT + 2}" y="{_n(y(credit) - 3)}">credit {_e(_short_usd(credit))}</text>')
    spend = Decimal(s.spend)
    projected = Decimal(s.projected_spend)
    if s.rolling:  # the window at this rate holds burn x its hours, whenever
        parts.append(f'<line class="proj" x1="{_LEFT}" y1="{_n(y(projected))}" x2="{_W - _RIGHT}" y2="{_n(y(projected))}">'
                     f"<title>at this rate the window holds {_e(usd(projected))}</title></line>")
    elif t1 > at:
        t_end, v_end = t1, projected
        if projected > top and projected > spend:  # cut where it leaves the chart
            t_end = at + (t1 - at) * float((top - spend) / (projected - spend))
            v_end = top
        parts.append(f'<line class="proj" x1="{_n(x(at))}" y1="{_n(y(spend))}" x2="{_n(x(t_end))}" y2="{_n(y(v_end))}">'
                     f"<title>projected {_e(usd(projected))} by the reset at the current burn</title></line>")
    anchor_y = max(y(projected) - 3, _TOP - 3)
    parts.append(f'<text class="lbl" x="{_W - _RIGHT}" y="{_n(anchor_y)}" text-anchor="end">'
                 f"{_e(_short_usd(projected))} {'at this rate' if s.rolling else 'projected'}"
                 f"{' ↑' if projected > top else ''}</text>")
    if not s.rolling and s.exhaustion is not None and s.exhaustion.timestamp() < t1 and credit > 0:
        ex = x(s.exhaustion.timestamp())
        parts.append(f'<circle class="dry" cx="{_n(ex)}" cy="{_n(y(credit))}" r="3">'
                     f"<title>runs dry {_e(when(s.exhaustion))} at this rate</title></circle>")
    parts.append(f'<line class="now" x1="{_n(x(at))}" y1="{_TOP}" x2="{_n(x(at))}" y2="{_n(y(Decimal(0)))}"/>')
    parts.append(f'<circle class="spent" cx="{_n(x(at))}" cy="{_n(y(spend))}" r="2.5">'
                 f"<title>{_e(usd(spend))} spent so far</title></circle>")
    hourly = s.rolling or s.bucket_hours < 24
    baseline = _H - 5
    left_label = f"{int(span // 3600)} h ago" if s.rolling else _tick_label(s.period_start, hourly)
    right_label = "now" if s.rolling else _tick_label(s.period_end, hourly)
    parts.append(f'<text class="tick" x="{_LEFT}" y="{baseline}">{_e(left_label)}</text>')
    parts.append(f'<text class="tick" x="{_W - _RIGHT}" y="{baseline}" text-anchor="end">{_e(right_label)}</text>')
    if not s.rolling and _LEFT + 55 < x(at) < _W - _RIGHT - 55:
        parts.append(f'<text class="tick" x="{_n(x(at))}" y="{baseline}" text-anchor="middle">now</text>')
    summary = (f"Spend of {s.pool} this period: {usd(spend)} of {usd(credit)}"
               f"{'' if s.rolling else ', projected ' + usd(projected) + ' by the reset'}")
    keys = [("billed", "billed")] if s.billed_basis not in ("none", "spend_limit") and not s.rolling else []
    keys += [("est", "estimate")] if s.billed_basis != "spend_limit" else []  # a limit's spend is one figure
    keys += [("proj", "at this rate" if s.rolling else "projection"), ("credit", "credit")]
    legend = " ".join(f'<span class="key {cls}"></span>{label}' for cls, label in keys)
    return (f'<figure class="chart"><svg viewBox="0 0 {_W} {_H}" role="img" aria-label="{_e(summary)}">'
            f'<title>{_e(summary)}</title>{"".join(parts)}</svg><figcaption>{legend}</figcaption></figure>')


def _window_bars(used: Decimal | None, start: datetime | None, end: datetime | None, reset: bool, now: float,
                 open_below: Decimal | None = None, label: str = "") -> str:
    """A subscription window as two bars: how much of it is used, and how much of its time has passed
    until it resets (used ahead of time means it runs out before the reset)."""
    track = _W - 2 * _LEFT - 40
    x0 = _LEFT + 40
    frac_used = float(min(max(used or Decimal(0), Decimal(0)), Decimal(1)))
    if start is not None and end is not None and not reset:
        frac_time = min(max((now - start.timestamp()) / max(end.timestamp() - start.timestamp(), 1.0), 0.0), 1.0)
        time_text = f"resets {until(end.timestamp() - now)}"
    else:
        frac_time = 0.0
        time_text = "reset; no report since" if reset else "no report yet"
    used_text = "–" if used is None else pct(Decimal(used), 0)
    parts = [
        f'<text class="tick" x="{_LEFT}" y="15">used</text>',
        f'<rect class="track" x="{x0}" y="6" width="{track}" height="12" rx="3"/>',
        f'<rect class="used" x="{x0}" y="6" width="{_n(track * frac_used)}" height="12" rx="3">'
        f"<title>{_e(used_text)} of the window used</title></rect>",
        f'<text class="lbl" x="{x0 + 4}" y="15.5">{_e(used_text)}</text>',
        f'<text class="tick" x="{_LEFT}" y="37">time</text>',
        f'<rect class="track" x="{x0}" y="28" width="{track}" height="12" rx="3"/>',
        f'<rect class="elapsed" x="{x0}" y="28" width="{_n(track * frac_time)}" height="12" rx="3">'
        f"<title>{_e(time_text)}</title></rect>",
        f'<text class="lbl" x="{x0 + 4}" y="37.5">{_e(time_text)}</text>',
    ]
    if open_below is not None:
        mark = x0 + track * float(1 - Decimal(open_below))
        parts.append(f'<line class="credit" x1="{_n(mark)}" y1="3" x2="{_n(mark)}" y2="21">'
                     f"<title>the breaker opens past {_e(pct(1 - Decimal(open_below), 0))} used</title></line>")
    summary = f"{label}{used_text} used, {time_text}"
    return (f'<figure class="chart window"><svg viewBox="0 0 {_W} 46" role="img" aria-label="{_e(summary)}">'
            f'<title>{_e(summary)}</title>{"".join(parts)}</svg></figure>')


def _windows_section(snap: Any, now: float) -> str:
    """Every subscription window the rate_limits sources reported that no window pool shows."""
    from exporter.core.windows import WINDOW_SECONDS, judge

    shown = {(w.source, w.window) for w in getattr(snap, "window_pools", ())}
    rows = []
    for r in sorted(getattr(snap, "rate_limits", ()), key=lambda r: (r.source, r.window)):
        if (r.source, r.window) in shown:
            continue
        view = judge(r, now)
        end = datetime.fromtimestamp(r.resets_at, UTC) if r.resets_at is not None else None
        start = end - timedelta(seconds=WINDOW_SECONDS.get(r.window, 7 * 86400)) if end is not None else None
        rows.append(f'<div class="window" data-window="{_e(r.source)}/{_e(r.window)}"><h4>{_e(r.source)} · '
                    f'{_e(r.window.replace("_", " "))}{" (stale)" if view.stale else ""}</h4>'
                    f"{_window_bars(view.used, start, end, view.reset, now, label=f'{r.window}: ')}</div>")
    if not rows:
        return ""
    return f'<h3>Subscription windows</h3><div class="windows-list">{"".join(rows)}</div>'
