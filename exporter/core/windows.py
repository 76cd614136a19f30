"""Subscription windows: the 5-hour and weekly limits Claude Code and the Agent SDK report, and
pools whose headroom is what is left of one.

Pure: no I/O, no clock (``now`` is passed in).

A report says, for one window of one account (a source), how much of it is used (0..1), when
it resets and, from the Agent SDK, its status. The latest report of each window stands until a
later one comes, with two judgements made at ``now``:

* **reset**: ``resets_at`` has passed since the report. The window has started again, so its
  used fraction is taken as 0 until a new report says more. (Waiting for a new report instead
  would hold a pipeline that pauses on the breaker forever: it makes no request, so nothing
  reports.)
* **stale**: nobody has reported on the window for longer than its length. A stale window has
  always reset too; it says so, so that a quiet statusline is not mistaken for an idle account.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from exporter.config import PoolConfig

#: the windows a report may name, with their length in seconds (``overage``, the extra usage past
#: the plan, is monthly)
WINDOW_SECONDS = {
    "five_hour": 5 * 3600,
    "seven_day": 7 * 86400,
    "seven_day_opus": 7 * 86400,
    "seven_day_sonnet": 7 * 86400,
    "overage": 30 * 86400,
}
WINDOWS = tuple(WINDOW_SECONDS)
#: the windows a pool may be: each a share of a subscription's use
POOL_WINDOWS = ("five_hour", "seven_day", "seven_day_opus", "seven_day_sonnet")
STATUSES = ("allowed", "allowed_warning", "rejected")
ONE = Decimal(1)
ZERO = Decimal(0)


@dataclass(frozen=True, order=True)
class WindowReport:
    """The latest report on one window of one source."""

    source: str
    window: str
    reported_at: float  # epoch seconds: the record's own time, else when it was read
    used: Decimal | None = None  # 0..1; None when the report gave only a status
    resets_at: float | None = None  # epoch seconds
    status: str | None = None  # allowed, allowed_warning, rejected (the Agent SDK's)


def newer(candidate: WindowReport, current: WindowReport | None) -> bool:
    """Whether ``candidate`` replaces ``current``: a report at least as recent (a later line of the
    same second is the newer one)."""
    return current is None or candidate.reported_at >= current.reported_at


@dataclass(frozen=True)
class WindowView:
    """A report judged at a moment."""

    report: WindowReport
    reset: bool  # resets_at has passed: the window began again since the report
    stale: bool  # no report for longer than the window's length
    used: Decimal | None  # as of now: the reported fraction, 0 once reset, None if never reported

    @property
    def headroom(self) -> Decimal | None:
        return None if self.used is None else max(ZERO, ONE - self.used)


def judge(report: WindowReport, now: float) -> WindowView:
    length = WINDOW_SECONDS.get(report.window, 7 * 86400)
    stale = now - report.reported_at > length
    reset = (report.resets_at is not None and now >= report.resets_at) or stale
    used = ZERO if reset else report.used
    return WindowView(report=report, reset=reset, stale=stale, used=used)


# --------------------------------------------------------------------------- window pools


@dataclass(frozen=True)
class WindowPoolState:
    """A pool on a subscription window at one moment: its headroom is 1 - used."""

    pool: str
    team: str
    source: str
    window: str
    now: datetime
    open_below: Decimal
    used: Decimal | None  # None: no report yet
    headroom: Decimal | None
    reported_at: datetime | None
    resets_at: datetime | None  # as last reported (in the past once the window reset)
    reset: bool
    stale: bool
    status: str | None
    period_start: datetime | None  # resets_at - the window's length
    period_end: datetime | None  # resets_at
    breaker_open_by_threshold: bool


def _at(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def window_pool_state(pool: PoolConfig, report: WindowReport | None, now: datetime) -> WindowPoolState:
    """The pool's window as the latest report says, judged at ``now``.

    The breaker opens when the headroom falls under ``open_below``, or while the Agent SDK says the
    window is ``rejected`` and it has not reset. With no report yet it stays closed: the first
    request is what makes Claude Code or the SDK report at all.
    """
    ref = pool.window
    if ref is None:
        raise ValueError(f"pool {pool.name!r} is not on a window")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    if report is None:
        return WindowPoolState(pool=pool.name, team=pool.team, source=ref.source, window=ref.name, now=now,
                               open_below=pool.open_below, used=None, headroom=None, reported_at=None,
                               resets_at=None, reset=False, stale=False, status=None, period_start=None,
                               period_end=None, breaker_open_by_threshold=False)
    view = judge(report, now.timestamp())
    headroom = view.headroom
    rejected = report.status == "rejected" and not view.reset
    resets = _at(report.resets_at)
    length = timedelta(seconds=WINDOW_SECONDS[ref.name])
    return WindowPoolState(
        pool=pool.name, team=pool.team, source=ref.source, window=ref.name, now=now, open_below=pool.open_below,
        used=view.used, headroom=headroom, reported_at=_at(report.reported_at), resets_at=resets, reset=view.reset,
        stale=view.stale, status=report.status if not view.reset else None,
        period_start=resets - length if resets is not None else None, period_end=resets,
        breaker_open_by_threshold=rejected or (headroom is not None and headroom < pool.open_below),
    )


def window_pool_states(pools: Iterable[PoolConfig], reports: Iterable[WindowReport],
                       now: datetime) -> tuple[WindowPoolState, ...]:
    """Every window pool's state from the latest reports."""
    latest = {(r.source, r.window): r for r in reports}
    return tuple(window_pool_state(p, latest.get((p.window.source, p.window.name)), now)
                 for p in pools if p.window is not None)
