"""The breaker: threshold decisions and Alertmanager's webhook, as a pipeline would see them."""

from __future__ import annotations

import copy
import json
import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from exporter.core.breaker import BreakerBoard
from exporter.core.budget import PoolInputs, compute_pool
from exporter.config import PeriodConfig, PoolConfig, PoolMatch

D = Decimal
NOW = datetime(2026, 6, 10, 12, tzinfo=UTC)
ZERO_TIME = "0001-01-01T00:00:00Z"  # what Alertmanager puts in endsAt of firing alerts


def alert(pool: str | None, status: str = "firing", *, fingerprint: str = "f1", breaker: str | None = "open",
          ends_at: str = ZERO_TIME, alertname: str = "ClaudePoolNearlyExhausted") -> dict:
    labels = {"alertname": alertname, "severity": "page"}
    if pool is not None:
        labels["pool"] = pool
    if breaker is not None:
        labels["breaker"] = breaker
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"pool {pool} has under 5% of its credit left"},
        "startsAt": "2026-06-10T11:50:00.123456789Z",
        "endsAt": ends_at,
        "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
        "fingerprint": fingerprint,
    }


def webhook(*alerts: dict, status: str | None = None) -> dict:
    if status is None:
        status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "version": "4",
        "groupKey": "{}:{alertname=\"ClaudePoolNearlyExhausted\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "breaker",
        "groupLabels": {"alertname": "ClaudePoolNearlyExhausted"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def state(spent: str, credit: str = "100", open_below: str = "0.05"):
    pool = PoolConfig(name="agent-sdk", credit_usd=D(credit), period=PeriodConfig(),
                      match=PoolMatch(sources=("s",)), open_below=D(open_below))
    hour = datetime(2026, 6, 2, 3, tzinfo=UTC)
    return compute_pool(pool, PoolInputs(estimated_by_hour={hour: D(spent)}), NOW)


def test_firing_alert_opens_only_its_own_pool_and_resolved_closes_it():
    board = BreakerBoard()
    assert board.apply_webhook(webhook(alert("agent-sdk")), NOW) == 1
    opened = board.decide("agent-sdk", state("10"), NOW)
    assert opened.open and opened.source == "alertmanager"
    assert "ClaudePoolNearlyExhausted" in opened.reason and "under 5%" in opened.reason
    other = board.decide("interactive", state("10"), NOW)
    assert not other.open and other.source == "none"

    assert board.apply_webhook(webhook(alert("agent-sdk", "resolved", ends_at="2026-06-10T12:00:00Z")), NOW) == 1
    closed = board.decide("agent-sdk", state("10"), NOW)
    assert not closed.open and closed.source == "none" and closed.alerts == ()


def test_resolving_one_pool_leaves_another_open():
    board = BreakerBoard()
    board.apply_webhook(webhook(alert("a", fingerprint="fa"), alert("b", fingerprint="fb")), NOW)
    assert board.open_pools(NOW) == {"a", "b"}
    board.apply_webhook(webhook(alert("a", "resolved", fingerprint="fa")), NOW)
    assert board.open_pools(NOW) == {"b"}
    assert board.decide("b", None, NOW).open


def test_alerts_without_the_breaker_label_or_pool_do_not_open_anything():
    board = BreakerBoard()
    payload = webhook(alert("a", breaker=None, fingerprint="x1"), alert("a", breaker="closed", fingerprint="x2"),
                      alert(None, fingerprint="x3"))
    assert board.apply_webhook(payload, NOW) == 0
    assert board.open_pools(NOW) == frozenset()


def test_unknown_pools_are_ignored_when_the_board_knows_its_pools():
    board = BreakerBoard(pools=["agent-sdk"])
    assert board.apply_webhook(webhook(alert("nope")), NOW) == 0
    assert board.open_pools(NOW) == frozenset()


def test_an_alert_whose_ends_at_has_passed_counts_as_resolved():
    board = BreakerBoard(stale_after=None)  # endsAt alone decides here
    board.apply_webhook(webhook(alert("a", ends_at="2026-06-10T12:30:00Z")), NOW)
    assert board.decide("a", None, NOW).open
    assert board.decide("a", None, datetime(2026, 6, 10, 12, 29, 59, tzinfo=UTC)).open
    assert not board.decide("a", None, datetime(2026, 6, 10, 12, 30, tzinfo=UTC)).open
    # already past when it arrives: never opens
    board.apply_webhook(webhook(alert("b", ends_at="2026-06-10T11:59:00Z", fingerprint="f2")), NOW)
    assert not board.decide("b", None, NOW).open


def test_zero_ends_at_means_no_end():
    board = BreakerBoard(stale_after=None)  # endsAt alone decides here
    board.apply_webhook(webhook(alert("a")), NOW)
    assert board.decide("a", None, datetime(2030, 1, 1, tzinfo=UTC)).open


def test_refiring_replaces_rather_than_duplicates():
    board = BreakerBoard()
    board.apply_webhook(webhook(alert("a")), NOW)
    board.apply_webhook(webhook(alert("a")), NOW)
    assert len(board.alerts("a", NOW)) == 1


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda p: p.update(version="3"), "version"),
    (lambda p: p.pop("version"), "version"),
    (lambda p: p.update(status="pending"), "status"),
    (lambda p: p.update(alerts={"a": 1}), "alerts: must be a list"),
    (lambda p: p["alerts"].append("x"), r"alerts\[2\]: must be an object"),
    (lambda p: p["alerts"][0].update(status="weird"), r"alerts\[0\].status"),
    (lambda p: p["alerts"][0].update(labels=["pool"]), r"alerts\[0\].labels"),
    (lambda p: p["alerts"][0]["labels"].update(pool=3), r"alerts\[0\].labels"),
    (lambda p: p["alerts"][0].update(startsAt="yesterday"), r"alerts\[0\].startsAt"),
    (lambda p: p["alerts"][0].update(endsAt="2026-06-10T12:00:00"), r"alerts\[0\].endsAt: timestamp has no time zone"),
    (lambda p: p["alerts"][0].update(fingerprint=7), r"alerts\[0\].fingerprint"),
])
def test_bad_payloads_are_refused_and_change_nothing(mutate, message):
    board = BreakerBoard()
    payload = webhook(alert("a", "firing"), alert("b", fingerprint="fb"))
    payload = copy.deepcopy(payload)
    mutate(payload)
    with pytest.raises(ValueError, match=message):
        board.apply_webhook(payload, NOW)
    assert board.open_pools(NOW) == frozenset()


def test_non_object_payload_is_refused():
    with pytest.raises(ValueError, match="JSON object"):
        BreakerBoard().apply_webhook([1, 2], NOW)


@pytest.mark.parametrize(("spent", "is_open"), [("95.00", False), ("95.01", True)])
def test_threshold_edge_decides(spent, is_open):
    d = BreakerBoard().decide("agent-sdk", state(spent), NOW)
    assert d.open is is_open
    assert d.source == ("threshold" if is_open else "none")


def test_threshold_reason_and_json_for_a_pipeline():
    d = BreakerBoard().decide("agent-sdk", state("96.555"), NOW)
    assert d.open and d.source == "threshold"
    assert d.reason == ("remaining $3.45 of $100.00 credit is 3.45%, below the open_below "
                        "threshold of 5%")
    body = d.to_json()
    assert body == {
        "pool": "agent-sdk", "state": "open", "reason": d.reason, "source": "threshold",
        "remaining_usd": 3.45, "credit_usd": 100, "remaining_ratio": 0.0345, "open_below": 0.05,
        "alerts": [], "alert_count": 0, "alerts_not_listed": 0,
    }
    assert json.loads(json.dumps(body)) == body


def test_threshold_and_alert_together_name_both():
    board = BreakerBoard()
    board.apply_webhook(webhook(alert("agent-sdk")), NOW)
    d = board.decide("agent-sdk", state("99"), NOW)
    assert d.source == "threshold" and "also Alertmanager alert ClaudePoolNearlyExhausted" in d.reason
    [a] = d.to_json()["alerts"]
    assert a == {"alertname": "ClaudePoolNearlyExhausted", "fingerprint": "f1",
                 "starts_at": "2026-06-10T11:50:00.123456Z", "ends_at": None,
                 "summary": "pool agent-sdk has under 5% of its credit left"}


def test_closed_json_and_overage_reason():
    closed = BreakerBoard().decide("agent-sdk", state("40"), NOW).to_json()
    assert closed["state"] == "closed" and closed["remaining_usd"] == 60 and closed["remaining_ratio"] == 0.6
    over = BreakerBoard().decide("agent-sdk", state("112.5"), NOW)
    assert over.open and over.reason.startswith("remaining -$12.50 of $100.00 credit is -12.5%")


def test_no_state_yet_is_closed_and_says_so():
    d = BreakerBoard().decide("agent-sdk", None, NOW)
    assert not d.open and "no spend computed yet" in d.reason
    assert d.to_json()["remaining_usd"] is None


def test_concurrent_webhooks_and_decisions():
    board = BreakerBoard()
    errors: list[BaseException] = []

    def hammer(i: int) -> None:
        try:
            for _ in range(200):
                board.apply_webhook(webhook(alert(f"p{i}", fingerprint=f"f{i}")), NOW)
                board.decide(f"p{i}", None, NOW)
                board.apply_webhook(webhook(alert(f"p{i}", "resolved", fingerprint=f"f{i}")), NOW)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and board.open_pools(NOW) == frozenset()


def test_an_alert_alertmanager_stops_repeating_expires() -> None:
    """A silence stops notifications, so no "resolved" arrives: the breaker must not stay open forever."""
    from datetime import UTC, datetime, timedelta

    from exporter.core.breaker import BreakerBoard

    t0 = datetime(2026, 11, 1, 12, tzinfo=UTC)
    board = BreakerBoard(["agent-sdk"], stale_after=timedelta(minutes=15))
    payload = {"version": "4", "status": "firing", "alerts": [{
        "status": "firing", "labels": {"alertname": "ClaudePoolCreditCritical", "pool": "agent-sdk", "breaker": "open"},
        "annotations": {}, "startsAt": "2026-11-01T11:59:00Z", "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": "abc"}]}
    board.apply_webhook(payload, t0)
    assert board.open_pools(t0 + timedelta(minutes=14)) == {"agent-sdk"}
    board.apply_webhook(payload, t0 + timedelta(minutes=10))  # a repeat notification renews it
    assert board.open_pools(t0 + timedelta(minutes=24)) == {"agent-sdk"}
    assert board.open_pools(t0 + timedelta(minutes=25)) == frozenset()


# --------------------------------------------------------------------------- bounds on what the board keeps


def _flood(pool: str, n: int, prefix: str) -> dict:
    return webhook(*(alert(pool, fingerprint=f"{prefix}{i}") for i in range(n)))


def test_the_board_keeps_at_most_max_per_pool_alerts_dropping_the_oldest_and_counting_them():
    board = BreakerBoard(["a", "b"], max_per_pool=5, max_total=100)
    board.apply_webhook(_flood("a", 3, "old"), NOW)
    board.apply_webhook(_flood("a", 4, "new"), NOW)
    kept = {x.fingerprint for x in board.alerts("a", NOW)}
    # the two least recently notified go first
    assert kept == {"old2", "new0", "new1", "new2", "new3"}
    assert board.dropped == {"pool_cap": 2}
    # a repeat notification renews an alert: it is no longer the oldest
    board.apply_webhook(webhook(alert("a", fingerprint="old2")), NOW)
    board.apply_webhook(webhook(alert("a", fingerprint="newest")), NOW)
    assert {x.fingerprint for x in board.alerts("a", NOW)} == {"old2", "new1", "new2", "new3", "newest"}
    assert board.dropped == {"pool_cap": 3}
    assert board.held(NOW) == {"a": 5}


def test_the_board_keeps_at_most_max_total_alerts_across_pools():
    board = BreakerBoard(max_per_pool=100, max_total=6)
    board.apply_webhook(_flood("a", 4, "a"), NOW)
    board.apply_webhook(_flood("b", 4, "b"), NOW)
    assert board.held(NOW) == {"a": 2, "b": 4}
    assert board.dropped == {"total_cap": 2}
    assert [x.fingerprint for x in board.alerts("a", NOW)] == ["a2", "a3"]


def test_alerts_for_pools_not_configured_are_not_kept_but_counted():
    board = BreakerBoard(["agent-sdk"])
    assert board.apply_webhook(_flood("nope", 50, "n"), NOW) == 0
    assert board.held(NOW) == {} and board.dropped == {"unknown_pool": 50}


def test_a_flood_of_unique_alerts_stays_bounded_and_the_breaker_answer_small():
    board = BreakerBoard(["agent-sdk"])
    for round_ in range(10):
        payload = webhook(*(alert("agent-sdk" if i % 2 else "other", fingerprint=f"r{round_}-{i}")
                            for i in range(6000)))
        board.apply_webhook(payload, NOW)
    assert board.held(NOW) == {"agent-sdk": 100}
    assert board.dropped["unknown_pool"] == 30000 and board.dropped["pool_cap"] == 30000 - 100
    d = board.decide("agent-sdk", None, NOW)
    body = d.to_json()
    assert d.open and len(body["alerts"]) == 10
    assert body["alert_count"] == 100 and body["alerts_not_listed"] == 90
    assert len(json.dumps(body)) < 10_000 and len(d.reason) < 1_000
    assert "and 97 more" in d.reason


def test_long_alert_fields_are_cut_and_a_long_fingerprint_still_resolves():
    board = BreakerBoard(["a"])
    firing = alert("a", fingerprint="f" * 100_000)
    firing["annotations"]["summary"] = "s" * 100_000
    firing["labels"]["alertname"] = "n" * 100_000
    board.apply_webhook(webhook(firing), NOW)
    [kept] = board.alerts("a", NOW)
    assert len(kept.fingerprint) <= 128 and len(kept.summary) <= 300 and len(kept.alertname) <= 200
    board.apply_webhook(webhook(alert("a", "resolved", fingerprint="f" * 100_000)), NOW)
    assert board.alerts("a", NOW) == ()


# --------------------------------------------------------------------------- hostile payloads


@pytest.mark.parametrize("starts_at", [
    "0000-01-01T00:00:00Z", "99999-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+99:00",
])
def test_out_of_range_timestamps_are_refused_with_the_field(starts_at):
    board = BreakerBoard()
    bad = alert("a")
    bad["startsAt"] = starts_at
    with pytest.raises(ValueError, match=r"alerts\[0\]\.startsAt"):
        board.apply_webhook(webhook(bad), NOW)
    bad = alert("a")
    bad["endsAt"] = starts_at
    with pytest.raises(ValueError, match=r"alerts\[0\]\.endsAt"):
        board.apply_webhook(webhook(bad), NOW)
    assert board.open_pools(NOW) == frozenset()


def test_nested_annotation_values_are_not_turned_into_text():
    nested: object = "x"
    for _ in range(900):
        nested = [nested]
    firing = alert("a")
    firing["annotations"] = {"summary": nested, "description": "plain"}
    board = BreakerBoard()
    board.apply_webhook(webhook(firing), NOW)
    [kept] = board.alerts("a", NOW)
    assert kept.summary == "plain"
    # nor in an error message
    for field in ("startsAt", "endsAt", "status"):
        bad = alert("b", fingerprint="fb")
        bad[field] = nested
        with pytest.raises(ValueError, match=rf"alerts\[0\]\.{field}: .*a JSON array"):
            board.apply_webhook(webhook(bad, status="firing"), NOW)
