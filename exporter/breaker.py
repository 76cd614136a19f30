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
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from exporter.budget import PoolState

BreakerSource = Literal["threshold", "alertmanager", "none"]

_CENT = Decimal("0.01")
_RATIO = Decimal("0.0001")


def _parse_time(value: Any, path: str) -> datetime | None:
    """RFC 3339 from Alertmanager; the zero time (year 1) means "not set"."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{path}: must be an RFC 3339 timestamp string, not {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{path}: not an RFC 3339 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{path}: timestamp has no time zone: {value!r}")
    if parsed.year <= 1:
        return None
    return parsed.astimezone(UTC)


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
        raise ValueError(f"version: expected Alertmanager webhook version \"4\", got {version!r}")
    if payload.get("status") not in ("firing", "resolved"):
        raise ValueError(f"status: must be \"firing\" or \"resolved\", not {payload.get('status')!r}")
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
            raise ValueError(f"{path}.status: must be \"firing\" or \"resolved\", not {status!r}")
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
        out.append(_Parsed(status, labels, {k: str(v) for k, v in annotations.items()}, starts, ends,
                           fingerprint))
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
            "alerts": [a.to_json() for a in self.alerts],
        }


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
    """Breaker alerts received from Alertmanager, by fingerprint. Safe across threads."""

    def __init__(self, pools: Iterable[str] | None = None, *, stale_after: timedelta | None = timedelta(minutes=15),
                 ) -> None:
        self._pools = frozenset(pools) if pools is not None else None
        self.stale_after = stale_after
        self._alerts: dict[str, BreakerAlert] = {}
        self._lock = threading.Lock()
        self.version = 0  # bumped by every webhook applied: what a cached /metrics keys on

    def apply_webhook(self, payload: Any, now: datetime) -> int:
        """Apply one Alertmanager webhook body; returns how many breaker alerts it carried.

        Raises ValueError (naming the offending field) on a payload of the wrong shape, in which
        case nothing is applied. Alerts without ``breaker="open"`` and a ``pool`` label, or for a
        pool this board does not know, are ignored.
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
                    continue
                applied += 1
                if alert.status == "resolved" or (alert.ends_at is not None and alert.ends_at <= now):
                    self._alerts.pop(alert.fingerprint, None)
                    continue
                self._alerts[alert.fingerprint] = BreakerAlert(
                    fingerprint=alert.fingerprint, pool=pool,
                    alertname=alert.labels.get("alertname", ""),
                    starts_at=alert.starts_at, ends_at=alert.ends_at,
                    summary=alert.annotations.get("summary") or alert.annotations.get("description", ""),
                    expires_at=now + self.stale_after if self.stale_after is not None else None,
                )
            self._prune(now)
        return applied

    def _prune(self, now: datetime) -> None:
        for key in [k for k, a in self._alerts.items() if not a.active(now)]:
            del self._alerts[key]

    def alerts(self, pool: str, now: datetime) -> tuple[BreakerAlert, ...]:
        """The pool's breaker alerts still firing at ``now``, oldest first."""
        now = _aware(now)
        with self._lock:
            self._prune(now)
            found = [a for a in self._alerts.values() if a.pool == pool]
        epoch = datetime.min.replace(tzinfo=UTC)
        return tuple(sorted(found, key=lambda a: (a.starts_at or epoch, a.fingerprint)))

    def open_pools(self, now: datetime) -> frozenset[str]:
        """Pools Alertmanager holds open at ``now``."""
        now = _aware(now)
        with self._lock:
            self._prune(now)
            return frozenset(a.pool for a in self._alerts.values())

    def decide(self, pool: str, state: PoolState | None, now: datetime) -> BreakerDecision:
        """Open if the pool is under its threshold or Alertmanager holds it open.

        The threshold wins the ``source`` when both hold (it is the exporter's own figure);
        the reason then mentions the alerts too. ``state`` None means no spend has been
        computed yet: only Alertmanager can open the breaker then.
        """
        alerts = self.alerts(pool, now)
        alert_text = "; ".join(
            f"Alertmanager alert {a.alertname or a.fingerprint} firing" + (f": {a.summary}" if a.summary else "")
            for a in alerts)
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
