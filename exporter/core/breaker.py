"""The circuit breaker: a pool's threshold plus what Alertmanager tells the webhook.

No I/O and no clock: the HTTP layer hands payloads and ``now`` in, and serialises
``BreakerDecision.to_json()``.

An alert counts for the breaker only when it carries the labels ``breaker="open"`` and
``pool``; it holds that pool's breaker open while it is firing and its ``endsAt`` (if set) is
still ahead. Alertmanager sends firing alerts to webhooks with a zero ``endsAt``
(``0001-01-01T00:00:00Z``), which means "no end known"; a resolved notification, or an
``endsAt`` that has passed, closes it. An alert Alertmanager stops repeating (a silence
stops notifications, so no "resolved" ever comes) expires ``stale_after`` after its last
notification: set that above the route's ``repeat_interval``. The board lives in memory:
after a restart it fills again on Alertmanager's next notification.

The board is bounded, whoever posts to it: at most ``max_per_pool`` alerts per pool and
``max_total`` in all (the least recently notified dropped first), none for a pool the
board does not know, and each kept field cut to a few hundred characters. What it drops is
counted in ``dropped``. One firing alert holds a pool open as well as a hundred, so the
breaker's answer lists only the first ``MAX_LISTED_ALERTS`` and counts the rest.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from exporter.core.budget import PoolState
from exporter.core.windows import WindowPoolState

BreakerSource = Literal["threshold", "alertmanager", "none"]

_CENT = Decimal("0.01")
_RATIO = Decimal("0.0001")
MAX_PER_POOL = 100
MAX_TOTAL = 10_000
MAX_LISTED_ALERTS = 10  # in the JSON of /breaker/<pool>
MAX_REASON_ALERTS = 3  # named in a decision's reason
MAX_FINGERPRINT = 128  # longer ones are kept as a hash of themselves: still the same key when resolved
MAX_ALERTNAME = 200
MAX_SUMMARY = 300
DROP_REASONS = ("unknown_pool", "pool_cap", "total_cap")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _show(value: Any) -> str:
    """A value from a payload for an error message: short, and never a nested structure rendered."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return _cut(repr(value), 80)
    return f"a JSON {'object' if isinstance(value, dict) else 'array' if isinstance(value, list) else 'value'}"


def _parse_time(value: Any, path: str) -> datetime | None:
    """RFC 3339 from Alertmanager; the zero time (year 1) means "not set"."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{path}: must be an RFC 3339 timestamp string, not {_show(value)}")
    shown = _show(value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{path}: not an RFC 3339 timestamp: {shown}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{path}: timestamp has no time zone: {shown}")
    if parsed.year <= 1:
        return None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00:00-05:00 is past the last moment a datetime holds
        raise ValueError(f"{path}: timestamp out of range: {shown}") from None


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(UTC)


@dataclass(frozen=True)
class BreakerAlert:
    """A firing breaker alert for one pool, as last reported."""

    fingerprint: str
    pool: str
    alertname: str
    starts_at: datetime | None
    ends_at: datetime | None
    summary: str
    expires_at: datetime | None = None  # last notification + the board's stale_after

    def active(self, now: datetime) -> bool:
        if self.expires_at is not None and now >= self.expires_at:
            return False
        return self.ends_at is None or now < self.ends_at

    def to_json(self) -> dict[str, Any]:
        return {
            "alertname": self.alertname,
            "fingerprint": self.fingerprint,
            "starts_at": _iso(self.starts_at),
            "ends_at": _iso(self.ends_at),
            "summary": self.summary,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


@dataclass(frozen=True)
class _Parsed:
    status: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime | None
    ends_at: datetime | None
    fingerprint: str


def _validate(payload: Any) -> list[_Parsed]:
    """Check the whole payload before anything is applied, so a bad one changes nothing."""
    if not isinstance(payload, dict):
        raise ValueError(f"webhook payload must be a JSON object, not {type(payload).__name__}")
    version = payload.get("version")
    if version != "4":
        raise ValueError(f"version: expected Alertmanager webhook version \"4\", got {_show(version)}")
    if payload.get("status") not in ("firing", "resolved"):
        raise ValueError(f"status: must be \"firing\" or \"resolved\", not {_show(payload.get('status'))}")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise ValueError(f"alerts: must be a list, not {type(alerts).__name__}")
    out: list[_Parsed] = []
    for i, alert in enumerate(alerts):
        path = f"alerts[{i}]"
        if not isinstance(alert, dict):
            raise ValueError(f"{path}: must be an object, not {type(alert).__name__}")
        status = alert.get("status")
        if status not in ("firing", "resolved"):
            raise ValueError(f"{path}.status: must be \"firing\" or \"resolved\", not {_show(status)}")
        labels = alert.get("labels")
        if not isinstance(labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise ValueError(f"{path}.labels: must be an object of string labels")
        annotations = alert.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise ValueError(f"{path}.annotations: must be an object")
        starts = _parse_time(alert["startsAt"], f"{path}.startsAt") if "startsAt" in alert else None
        ends = _parse_time(alert["endsAt"], f"{path}.endsAt") if alert.get("endsAt") else None
        fingerprint = alert.get("fingerprint")
        if fingerprint is None:
            # identical labels are the same alert in Alertmanager, so they make a stable key
            fingerprint = "labels:" + ",".join(f"{k}={labels[k]}" for k in sorted(labels))
        elif not isinstance(fingerprint, str) or not fingerprint:
            raise ValueError(f"{path}.fingerprint: must be a non-empty string")
        # Alertmanager's annotations are strings; anything else is left out, never turned into text
        # (a deeply nested value would be expensive to render, and useless to read)
        texts = {k: v for k, v in annotations.items() if isinstance(v, str)}
        if len(fingerprint) > MAX_FINGERPRINT:
            fingerprint = "sha256:" + hashlib.sha256(fingerprint.encode("utf-8", "surrogatepass")).hexdigest()
        out.append(_Parsed(status, labels, texts, starts, ends, fingerprint))
    return out


@dataclass(frozen=True)
class BreakerDecision:
    """Whether a pool's breaker is open, why, and the figures behind it."""

    pool: str
    open: bool
    reason: str
    source: BreakerSource
    remaining: Decimal | None = None
    credit: Decimal | None = None
    remaining_ratio: Decimal | None = None
    open_below: Decimal | None = None
    alerts: tuple[BreakerAlert, ...] = field(default_factory=tuple)
    #: a pool on a subscription window: its source, window, used fraction, reset and report times
    window: Mapping[str, Any] | None = None

    @property
    def state(self) -> Literal["open", "closed"]:
        return "open" if self.open else "closed"

    def to_json(self) -> dict[str, Any]:
        """The body of ``GET /breaker/<pool>``.

        Money and ratios are JSON numbers rounded for people (USD to the cent, the ratio to
        4 places, half up), so ``jq '.remaining_usd < 10'`` compares numerically; null when
        not yet known. The exact figures are in the metrics.
        """
        return {
            "pool": self.pool,
            "state": self.state,
            "reason": self.reason,
            "source": self.source,
            "remaining_usd": _round(self.remaining, _CENT),
            "credit_usd": _round(self.credit, _CENT),
            "remaining_ratio": _round(self.remaining_ratio, _RATIO),
            "open_below": _round(self.open_below, _RATIO),
            "alerts": [a.to_json() for a in self.alerts[:MAX_LISTED_ALERTS]],
            "alert_count": len(self.alerts),
            "alerts_not_listed": max(0, len(self.alerts) - MAX_LISTED_ALERTS),
        } | ({"window": dict(self.window)} if self.window is not None else {})


def _round(value: Decimal | None, step: Decimal) -> float | int | None:
    if value is None:
        return None
    rounded = value.quantize(step, rounding=ROUND_HALF_UP)
    # float only here, at exposition, of a value already rounded to a few decimal places
    return int(rounded) if rounded == rounded.to_integral_value() else float(rounded)


def _usd(value: Decimal) -> str:
    rounded = value.quantize(_CENT, rounding=ROUND_HALF_UP)
    return f"-${-rounded}" if rounded < 0 else f"${rounded}"


def _pct(value: Decimal) -> str:
    return f"{(value * 100).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP).normalize():f}%"


class BreakerBoard:
    """Breaker alerts received from Alertmanager, per pool by fingerprint. Safe across threads."""

    def __init__(self, pools: Iterable[str] | None = None, *, stale_after: timedelta | None = timedelta(minutes=15),
                 max_per_pool: int = MAX_PER_POOL, max_total: int = MAX_TOTAL) -> None:
        self._pools = frozenset(pools) if pools is not None else None
        self.stale_after = stale_after
        self.max_per_pool = max_per_pool
        self.max_total = max_total
        # pool -> fingerprint -> alert, and (pool, fingerprint) in all: least recently notified first
        self._by_pool: dict[str, OrderedDict[str, BreakerAlert]] = {}
        self._order: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.dropped: dict[str, int] = {}  # reason (DROP_REASONS) -> alerts not kept, since the start
        self._lock = threading.Lock()
        self.version = 0  # bumped by every webhook applied: what a cached /metrics keys on

    @property
    def pools(self) -> frozenset[str] | None:
        """The pools this board keeps alerts for; None: any."""
        return self._pools

    def add_pools(self, names: Iterable[str]) -> None:
        """Pools that appeared while serving (made from the organisation's spend limits)."""
        with self._lock:
            if self._pools is not None:
                self._pools = self._pools | frozenset(names)

    def apply_webhook(self, payload: Any, now: datetime) -> int:
        """Apply one Alertmanager webhook body; returns how many breaker alerts it carried.

        Raises ValueError (naming the offending field) on a payload of the wrong shape, in which
        case nothing is applied. Alerts without ``breaker="open"`` and a ``pool`` label are
        ignored; those for a pool this board does not know are not kept, and counted.
        """
        now = _aware(now)
        parsed = _validate(payload)
        applied = 0
        with self._lock:
            self.version += 1
            for alert in parsed:
                pool = alert.labels.get("pool")
                if alert.labels.get("breaker") != "open" or not pool:
                    continue
                if self._pools is not None and pool not in self._pools:
                    self._count("unknown_pool")
                    continue
                applied += 1
                self._remove(pool, alert.fingerprint)
                if alert.status == "resolved" or (alert.ends_at is not None and alert.ends_at <= now):
                    continue
                self._add(BreakerAlert(
                    fingerprint=alert.fingerprint, pool=pool,
                    alertname=_cut(alert.labels.get("alertname", ""), MAX_ALERTNAME),
                    starts_at=alert.starts_at, ends_at=alert.ends_at,
                    summary=_cut(alert.annotations.get("summary") or alert.annotations.get("description", ""),
                                 MAX_SUMMARY),
                    expires_at=now + self.stale_after if self.stale_after is not None else None,
                ))
            self._prune(now)
        return applied

    def _count(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def _remove(self, pool: str, fingerprint: str) -> None:
        alerts = self._by_pool.get(pool)
        if alerts is not None and alerts.pop(fingerprint, None) is not None:
            del self._order[(pool, fingerprint)]
            if not alerts:
                del self._by_pool[pool]

    def _add(self, alert: BreakerAlert) -> None:
        """Keep ``alert`` as the newest, then drop the oldest past the caps."""
        alerts = self._by_pool.setdefault(alert.pool, OrderedDict())
        alerts[alert.fingerprint] = alert
        self._order[(alert.pool, alert.fingerprint)] = None
        while len(alerts) > self.max_per_pool:
            oldest = next(iter(alerts))
            self._remove(alert.pool, oldest)
            self._count("pool_cap")
        while len(self._order) > self.max_total:
            pool, oldest = next(iter(self._order))
            self._remove(pool, oldest)
            self._count("total_cap")

    def _prune(self, now: datetime, pools: Iterable[str] | None = None) -> None:
        for pool in list(self._by_pool if pools is None else pools):
            for key in [k for k, a in self._by_pool.get(pool, {}).items() if not a.active(now)]:
                self._remove(pool, key)

    def alerts(self, pool: str, now: datetime) -> tuple[BreakerAlert, ...]:
        """The pool's breaker alerts still firing at ``now``, oldest first."""
        now = _aware(now)
        with self._lock:
            self._prune(now, (pool,))
            found = list(self._by_pool.get(pool, {}).values())
        epoch = datetime.min.replace(tzinfo=UTC)
        return tuple(sorted(found, key=lambda a: (a.starts_at or epoch, a.fingerprint)))

    def open_pools(self, now: datetime) -> frozenset[str]:
        """Pools Alertmanager holds open at ``now``."""
        now = _aware(now)
        with self._lock:
            self._prune(now)
            return frozenset(self._by_pool)

    def held(self, now: datetime) -> dict[str, int]:
        """How many breaker alerts each pool holds firing at ``now`` (pools with none left out)."""
        now = _aware(now)
        with self._lock:
            self._prune(now)
            return {pool: len(alerts) for pool, alerts in self._by_pool.items()}

    def decide(self, pool: str, state: PoolState | WindowPoolState | None, now: datetime) -> BreakerDecision:
        """Open if the pool is under its threshold or Alertmanager holds it open.

        The threshold wins the ``source`` when both hold (it is the exporter's own figure);
        the reason then mentions the alerts too. ``state`` None means no spend has been
        computed yet: only Alertmanager can open the breaker then.
        """
        alerts = self.alerts(pool, now)
        alert_text = "; ".join(
            f"Alertmanager alert {a.alertname or a.fingerprint} firing" + (f": {a.summary}" if a.summary else "")
            for a in alerts[:MAX_REASON_ALERTS])
        if len(alerts) > MAX_REASON_ALERTS:
            alert_text += f"; and {len(alerts) - MAX_REASON_ALERTS} more breaker alerts"
        if isinstance(state, WindowPoolState):
            return _decide_window(pool, state, alerts, alert_text)
        figures: dict[str, Any] = {}
        if state is not None:
            figures = dict(remaining=state.remaining, credit=state.credit,
                           remaining_ratio=state.remaining_ratio, open_below=state.open_below)
        if state is not None and state.breaker_open_by_threshold:
            if state.remaining_ratio is None:
                reason = f"remaining credit {_usd(state.remaining)} with no credit configured"
            else:
                reason = (f"remaining {_usd(state.remaining)} of {_usd(state.credit)} credit is "
                          f"{_pct(state.remaining_ratio)}, below the open_below threshold of "
                          f"{_pct(state.open_below)}")
            if alert_text:
                reason += f"; also {alert_text}"
            return BreakerDecision(pool=pool, open=True, reason=reason, source="threshold", alerts=alerts,
                                   **figures)
        if alerts:
            return BreakerDecision(pool=pool, open=True, reason=alert_text, source="alertmanager",
                                   alerts=alerts, **figures)
        if state is None:
            reason = "no spend computed yet for this pool; no breaker alert firing"
        elif state.remaining_ratio is None:
            reason = f"remaining credit {_usd(state.remaining)}"
        else:
            reason = (f"remaining {_usd(state.remaining)} of {_usd(state.credit)} credit "
                      f"({_pct(state.remaining_ratio)}), threshold {_pct(state.open_below)}")
        return BreakerDecision(pool=pool, open=False, reason=reason, source="none", **figures)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment is not None else "an unknown time"


def _decide_window(pool: str, state: WindowPoolState, alerts: tuple[BreakerAlert, ...],
                   alert_text: str) -> BreakerDecision:
    """A window pool: open under its threshold, while the Agent SDK says rejected, or while Alertmanager holds it."""
    what = f"the {state.window} window of {state.source}"
    window = {
        "source": state.source, "name": state.window,
        "used_ratio": _round(state.used, _RATIO),
        "resets_at": _iso(state.resets_at), "reported_at": _iso(state.reported_at),
        "reset": state.reset, "stale": state.stale, "status": state.status,
    }
    figures: dict[str, Any] = dict(remaining_ratio=state.headroom, open_below=state.open_below, window=window)
    if state.reported_at is None:
        reason = f"no report of {what} yet"
    elif state.reset:
        reason = (f"{what} reset at {_when(state.resets_at)}; taken as unused until a new report"
                  + (" (stale: no report for longer than the window)" if state.stale else ""))
    elif state.status == "rejected":
        reason = f"the Agent SDK reports {what} rejected; it resets at {_when(state.resets_at)}"
    elif state.used is None or state.headroom is None:
        reason = f"{what} is {state.status or 'reported'} (no used share given); it resets at {_when(state.resets_at)}"
    else:
        reason = (f"{what} is {_pct(state.used)} used, {_pct(state.headroom)} left"
                  + (f", below the open_below threshold of {_pct(state.open_below)}"
                     if state.breaker_open_by_threshold else f", threshold {_pct(state.open_below)}")
                  + f"; it resets at {_when(state.resets_at)}")
    if state.breaker_open_by_threshold:
        if alert_text:
            reason += f"; also {alert_text}"
        return BreakerDecision(pool=pool, open=True, reason=reason, source="threshold", alerts=alerts, **figures)
    if alerts:
        return BreakerDecision(pool=pool, open=True, reason=alert_text, source="alertmanager", alerts=alerts,
                               **figures)
    return BreakerDecision(pool=pool, open=False, reason=reason, source="none", **figures)
