"""An Admin API (or something posing as one) that answers to hurt: absurd amounts, dates past the
calendar, pages without end, bodies without end or trickled a byte at a time, the key echoed
back. Each answer is refused like a malformed one: the poll fails cleanly, the source is marked
down, nothing partial is stored, the refusal is counted by reason, and the next poll tries again.

Everything runs in-process (httpx's MockTransport) or on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import structlog
from prometheus_client import CollectorRegistry, generate_latest

from exporter import logsetup
from exporter.billing.client import (
    MAX_AMOUNT_CENTS,
    MAX_PAGES_PER_QUERY,
    MAX_RESPONSE_BYTES,
    MAX_ROWS_PER_RESPONSE,
    AdminApiBadResponse,
    AdminApiClient,
    AdminApiDeadlineExceeded,
    AdminApiHTTPError,
    AdminApiRateLimited,
    AdminApiRefused,
)
from exporter.billing.poller import BillingPoller, BillingSnapshot
from exporter.billing.store import ensure_schema, stored_billed_by_day
from exporter.expose.metrics import billed_families as billed_metric_families
from exporter.core.breaker import BreakerDecision
from tests.admin_fixtures import KEY, NOW, VirtualTime
from tests.conftest import clean_env, parse_metrics, run_cli, sample
from tests.fake_admin_api import FakeAdminApi

TODAY = NOW.date()
YESTERDAY = TODAY - timedelta(days=1)
START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 3, 11, tzinfo=UTC)


@pytest.fixture
def fake() -> Iterator[FakeAdminApi]:
    with FakeAdminApi(key=KEY, now=NOW) as f:
        yield f


def fake_client(fake: FakeAdminApi, **kw) -> AdminApiClient:
    vt = VirtualTime()
    kw = {"sleep": vt.sleep, "clock": vt.clock, "timeout": 5.0, "max_retries": 1, **kw}
    return AdminApiClient(fake.url, KEY, **kw)


def fake_poller(fake: FakeAdminApi, db: sqlite3.Connection, **kw) -> BillingPoller:
    return BillingPoller(fake_client(fake, **kw), db, clock=lambda: fake.now, wall=lambda: fake.now.timestamp())


def mock_client(handler: Callable[[httpx.Request], httpx.Response], **kw) -> AdminApiClient:
    vt = VirtualTime()
    kw = {"sleep": vt.sleep, "clock": vt.clock, "max_retries": 1, **kw}
    return AdminApiClient("http://127.0.0.1:9", KEY, transport=httpx.MockTransport(handler), **kw)


def mock_poller(handler: Callable[[httpx.Request], httpx.Response], db: sqlite3.Connection | None = None,
                **kw) -> BillingPoller:
    return BillingPoller(mock_client(handler, **kw), db or sqlite3.connect(":memory:"), clock=lambda: NOW,
                         wall=lambda: NOW.timestamp())


def page(data: list, *, has_more: bool = False, next_page: str | None = None) -> dict:
    return {"data": data, "has_more": has_more, "next_page": next_page}


def bucket(day: date, results: list[dict], width: timedelta = timedelta(days=1)) -> dict:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return {"starting_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ending_at": (start + width).strftime("%Y-%m-%dT%H:%M:%SZ"), "results": results}


def empty_usage(request: httpx.Request) -> httpx.Response | None:
    """The usage report answers with nothing: the cost report is what a test is about."""
    if request.url.path.endswith("/usage_report/messages"):
        return httpx.Response(200, json=page([]))
    return None


def scrape(snap: BillingSnapshot) -> dict:
    reg = CollectorRegistry()
    reg.register(type("C", (), {"collect": lambda self: billed_metric_families(snap, TODAY)})())
    return parse_metrics(generate_latest(reg).decode())


def stored_days(db: sqlite3.Connection) -> int:
    return db.execute("SELECT COUNT(*) FROM billed_days").fetchone()[0]


@pytest.fixture
def captured_log() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logsetup.configure(level="info", fmt="json", stream=out)
    try:
        yield out
    finally:
        structlog.reset_defaults()


# ----------------------------------------------------------------------------- amounts out of bounds


@pytest.mark.parametrize("amount", ["1e400", "-1e400", str(MAX_AMOUNT_CENTS + 1)])
def test_an_amount_past_the_bound_is_refused_like_a_malformed_one(fake, amount):
    fake.add_spend(datetime(2026, 3, 9, 8, tzinfo=UTC), amount)
    with fake_client(fake) as c, pytest.raises(AdminApiBadResponse) as exc:
        c.cost_report(START, END)
    assert exc.value.reason == "out_of_bounds"
    assert c.refusal_counts() == {("cost_report", "out_of_bounds"): 2}  # refused, retried, refused
    assert len(str(exc.value)) < 400  # a 401-digit amount is not copied into the error whole


def test_an_amount_at_the_bound_is_accepted_exactly(fake):
    fake.add_spend(datetime(2026, 3, 9, 8, tzinfo=UTC), MAX_AMOUNT_CENTS)
    with fake_client(fake) as c:
        rows = c.cost_report(START, END)
    assert [r.amount_usd for r in rows] == [Decimal(10) ** 10]


def test_a_huge_amount_keeps_the_days_last_good_figure_and_marks_the_source_down(fake, captured_log):
    fake.add_spend(datetime(2026, 3, 9, 8, tzinfo=UTC), "1234.5")
    fake.add_spend(datetime(2026, 3, 10, 8, tzinfo=UTC), "100")
    db = sqlite3.connect(":memory:")
    poller = fake_poller(fake, db)
    good = poller.poll()
    assert good.up and good.billed_usd(TODAY) == Decimal(1)

    fake.add_spend(datetime(2026, 3, 10, 9, tzinfo=UTC), "1e400")
    fake.advance(timedelta(minutes=5))
    snap = poller.poll()

    assert not snap.up and "out of bounds" in (snap.error or "")
    assert snap.billed_usd(TODAY) == Decimal(1) and snap.billed_usd(YESTERDAY) == Decimal("12.345")
    assert stored_billed_by_day(db)[TODAY] == Decimal(1)  # the store kept the last good day too
    m = scrape(snap)  # renders: nothing absurd reached the snapshot
    assert sample(m, "claude_admin_api_refused_total", endpoint="cost_report", reason="out_of_bounds") == 2.0
    BreakerDecision(pool="p", open=False, reason="", source="threshold", remaining=Decimal(200) - sum(
        (amount for amount, _list in snap.daily_cost().values()), Decimal(0)), credit=Decimal(200)).to_json()
    failed = [json.loads(line) for line in captured_log.getvalue().splitlines()
              if '"billing.poll_failed"' in line]
    assert len(failed) == 1 and failed[0]["reason"] == "out_of_bounds"


# ----------------------------------------------------------------------------- nothing escapes poll()


def _overflowing_amount(request: httpx.Request) -> httpx.Response:
    return empty_usage(request) or httpx.Response(200, json=page([bucket(TODAY, [{"amount": "1e999999999"}])]))


def _date_before_the_calendar(request: httpx.Request) -> httpx.Response:
    b = {"starting_at": "0001-01-01T00:00:00+05:00", "ending_at": "0001-01-02T00:00:00+05:00",
         "results": [{"amount": "1"}]}
    return empty_usage(request) or httpx.Response(200, json=page([b]))


def _date_after_the_calendar(request: httpx.Request) -> httpx.Response:
    b = {"starting_at": "9999-12-31T23:00:00-05:00", "ending_at": "9999-12-31T23:30:00-05:00",
         "results": [{"amount": "1"}]}
    return empty_usage(request) or httpx.Response(200, json=page([b]))


def _nested_too_deep(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b'{"data": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")


def _token_count_past_sqlite(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/cost_report"):
        return httpx.Response(200, json=page([]))
    return httpx.Response(200, content=json.dumps(page([bucket(TODAY, [{"output_tokens": 10**30}],
                                                              timedelta(hours=1))])).encode())


@pytest.mark.parametrize(("handler", "reason"), [
    (_overflowing_amount, "out_of_bounds"),
    (_date_before_the_calendar, "malformed"),
    (_date_after_the_calendar, "malformed"),
    (_nested_too_deep, "malformed"),
    (_token_count_past_sqlite, "out_of_bounds"),
])
def test_poll_refuses_what_would_raise_and_keeps_polling(handler, reason):
    calls = []

    def counting(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return handler(request)

    db = sqlite3.connect(":memory:")
    poller = mock_poller(counting, db)
    first = poller.poll()  # returns: nothing escapes
    assert not first.up and first.error
    n = len(calls)
    second = poller.poll()  # and the next poll asks again
    assert not second.up and len(calls) == 2 * n
    assert stored_days(db) == 0
    endpoint = "usage_report" if handler is _token_count_past_sqlite else "cost_report"
    assert second.refusals[(endpoint, reason)] == 4  # 2 polls x (1 try + 1 retry)
    scrape(second)


def test_a_bug_in_a_poll_marks_the_source_down_before_it_propagates(tmp_path):
    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug, not a bad answer")

    poller = mock_poller(broken)
    with pytest.raises(RuntimeError):
        poller.poll()
    assert not poller.snapshot.up and "RuntimeError" in (poller.snapshot.error or "")
    # the refresher's poll cycle outlives the failure: the source is down, the next cycle comes
    from exporter.config import parse_config
    from exporter.refresh import Refresher

    refresher = Refresher(parse_config({"state_dir": str(tmp_path / "refresher-state")}), clock=lambda: NOW.timestamp())
    try:
        refresher.attach_billing(poller)
        refresher.poll_billing()  # raises inside: caught, logged, the snapshot marked down
        admin = next(s for s in refresher.snapshot().sources if s.name == "admin_api")
        assert not admin.up
        refresher.poll_billing()  # and the next cycle runs
    finally:
        refresher.stop()


# ----------------------------------------------------------------------------- pages, rows, bytes


def test_pages_without_end_stop_at_the_cap_and_store_nothing():
    served = []

    def endless(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/usage_report/messages"):
            return httpx.Response(200, json=page([]))
        served.append(1)
        return httpx.Response(200, json=page([bucket(TODAY, [{"amount": "1"}])], has_more=True,
                                             next_page=f"p{len(served)}"))

    db = sqlite3.connect(":memory:")
    poller = mock_poller(endless, db)
    snap = poller.poll()

    assert len(served) == MAX_PAGES_PER_QUERY == 1000
    assert not snap.up and "pages" in (snap.error or "")
    assert snap.refusals == {("cost_report", "too_many_pages"): 1}
    assert stored_days(db) == 0 and snap.cost_rows == {}


def test_rows_over_all_pages_stop_at_the_query_cap():
    n = [0]

    def wide(request: httpx.Request) -> httpx.Response:
        n[0] += 1
        return httpx.Response(200, json=page([bucket(TODAY, [{"amount": "1"}] * 4)], has_more=True,
                                             next_page=f"p{n[0]}"))

    with mock_client(wide, max_rows_per_query=10) as c, pytest.raises(AdminApiRefused) as exc:
        c.cost_report(START, END)
    assert exc.value.reason == "too_many_rows" and n[0] == 3  # 12 rows > 10 after the third page


def test_a_page_with_more_rows_than_the_cap_is_refused_and_not_retried():
    body = json.dumps(page([bucket(TODAY, [{"amount": "1"}] * (MAX_ROWS_PER_RESPONSE + 1))])).encode()
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, content=body)

    with mock_client(handler) as c, pytest.raises(AdminApiRefused) as exc:
        c.cost_report(START, END)
    assert exc.value.reason == "too_many_rows" and len(calls) == 1


@pytest.mark.parametrize("body", [
    # more buckets than the limit the query asked for (31)
    json.dumps(page([bucket(TODAY - timedelta(days=i), []) for i in range(32)])).encode(),
    # a small body of empty objects, and one of floats, would parse into far more memory than it takes
    b'{"data": [' + b",".join([b"{}"] * 500_000) + b'], "has_more": false}',
    b'{"data": [' + b",".join([b"1.5"] * (MAX_ROWS_PER_RESPONSE + 1)) + b'], "has_more": false}',
])
def test_pages_past_the_api_limits_are_refused_before_they_grow(body):
    with mock_client(lambda r: httpx.Response(200, content=body)) as c, pytest.raises(AdminApiRefused) as exc:
        c.cost_report(START, END)
    assert exc.value.reason == "too_many_rows"


class _CountingStream(httpx.SyncByteStream):
    """A body without Content-Length, of ``total`` bytes, that counts what was read of it."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.sent = total, chunk, 0

    def __iter__(self) -> Iterator[bytes]:
        while self.sent < self.total:
            n = min(self.chunk, self.total - self.sent)
            self.sent += n
            yield b" " * n


def test_a_body_past_the_byte_cap_is_refused_while_streaming():
    streams: list[_CountingStream] = []

    def handler(request: httpx.Request) -> httpx.Response:
        s = _CountingStream(200 * 1024 * 1024)
        streams.append(s)
        return httpx.Response(200, stream=s)

    with mock_client(handler) as c, pytest.raises(AdminApiRefused) as exc:
        c.cost_report(START, END)
    assert exc.value.reason == "body_too_large"
    assert len(streams) == 1  # not retried
    assert MAX_RESPONSE_BYTES < streams[0].sent <= MAX_RESPONSE_BYTES + 64 * 1024  # stopped right past the cap


def test_a_declared_length_past_the_cap_is_refused_unread():
    streams: list[_CountingStream] = []

    def handler(request: httpx.Request) -> httpx.Response:
        s = _CountingStream(1024)
        streams.append(s)
        return httpx.Response(200, stream=s, headers={"content-length": str(MAX_RESPONSE_BYTES + 1)})

    with mock_client(handler) as c, pytest.raises(AdminApiRefused) as exc:
        c.cost_report(START, END)
    assert exc.value.reason == "body_too_large" and streams[0].sent == 0
    assert c.request_counts() == {("cost_report", "200"): 1}


def test_a_body_past_the_cap_fails_the_poll_cleanly_and_keeps_the_stored_days(tmp_path):
    db = sqlite3.connect(tmp_path / "state.db")
    good = {"on": True}

    def handler(request: httpx.Request) -> httpx.Response:
        if good["on"]:
            return empty_usage(request) or httpx.Response(200, json=page([bucket(TODAY, [{"amount": "250"}])]))
        return httpx.Response(200, stream=_CountingStream(MAX_RESPONSE_BYTES + 1))

    poller = mock_poller(handler, db)
    assert poller.poll().up
    before = db.execute("SELECT * FROM billed_cost").fetchall()
    good["on"] = False
    snap = poller.poll()
    assert not snap.up and snap.billed_usd(TODAY) == Decimal("2.5")
    assert db.execute("SELECT * FROM billed_cost").fetchall() == before
    assert sample(scrape(snap), "claude_admin_api_refused_total", endpoint="cost_report",
                  reason="body_too_large") == 1.0


# ----------------------------------------------------------------------------- the request deadline


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_deadline_bounds_a_whole_request_not_each_read():
    """Each chunk comes at once by the read timeout's measure, but the request as a whole is late."""
    clock = _Clock()

    class Slow(httpx.SyncByteStream):
        sent = 0

        def __iter__(self) -> Iterator[bytes]:
            while self.sent < 1000:
                self.sent += 1
                clock.t += 5.0  # a byte every 5 s
                yield b" "

    streams: list[Slow] = []

    def handler(request: httpx.Request) -> httpx.Response:
        streams.append(Slow())
        return httpx.Response(200, stream=streams[-1])

    with mock_client(handler, clock=clock, request_deadline=60.0) as c, \
            pytest.raises(AdminApiDeadlineExceeded):
        c.cost_report(START, END)
    assert len(streams) == 1 and streams[0].sent == 13  # 65 s > 60 s: cut there, not retried
    assert c.request_counts() == {("cost_report", "error"): 1}
    assert c.refusal_counts() == {("cost_report", "deadline"): 1}


class _Trickler:
    """A server on 127.0.0.1 that answers one request: ``at_once``, then ``trickle`` a byte every
    ``gap`` seconds. It stops by itself: at the end of ``trickle``, or once the client has gone."""

    def __init__(self, at_once: bytes, trickle: bytes, gap: float) -> None:
        self.at_once, self.trickle = at_once, trickle
        self.gap = gap
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(10)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(1)
            try:
                conn.recv(65536)
                conn.sendall(self.at_once)
                for i in range(len(self.trickle)):
                    conn.sendall(self.trickle[i:i + 1])
                    time.sleep(self.gap)
            except OSError:
                return  # the client has gone

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=15)


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_trickled_answer_is_cut_at_the_deadline(where):
    body = json.dumps(page([])).encode() + b" " * 2000
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
    # at most 200 bytes a 50 ms: the server gives up after 10 s even if nothing cut it
    server = _Trickler(head, body[:200], 0.05) if where == "body" else _Trickler(b"", head, 0.05)
    try:
        with AdminApiClient(server.url, KEY, timeout=5.0, request_deadline=0.5, max_retries=0,
                            sleep=lambda s: None) as c:
            started = time.monotonic()
            with pytest.raises(AdminApiDeadlineExceeded):
                c.cost_report(START, END)
            took = time.monotonic() - started
        # a read timeout of 5 s never fires on a byte every 50 ms: the deadline is what ended it
        assert 0.4 < took < 3.0
        assert c.refusal_counts() == {("cost_report", "deadline"): 1}
    finally:
        server.close()


# ----------------------------------------------------------------------------- 429s and echoed keys


def test_an_absurd_retry_after_does_not_block_the_client_for_good(fake):
    vt = VirtualTime()
    c = AdminApiClient(fake.url, KEY, sleep=vt.sleep, clock=vt.clock, max_retry_after=300)
    fake.inject("429", retry_after="1e400")
    with pytest.raises(AdminApiRateLimited) as exc:
        c.cost_report(START, END)
    assert exc.value.retry_after == 86_400
    vt.t += 86_400
    c.cost_report(START, END)  # sends again once a day has passed
    assert fake.count() == 2


def test_an_echoed_key_and_control_characters_never_leave_the_client(fake):
    fake.inject("echo_key")
    with fake_client(fake) as c, pytest.raises(AdminApiHTTPError) as exc:
        c.cost_report(START, END)
    for text in (str(exc.value), exc.value.request_id or "", exc.value.api_message):
        assert KEY not in text and "\x1b" not in text
    assert exc.value.request_id and exc.value.request_id.startswith("req_")


def test_report_scrubs_what_it_prints_to_stderr(fake, tmp_path: Path):
    fake.inject("echo_key", count=None)
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
admin_api:
  key_env: TEST_ADMIN_KEY
  base_url: {fake.url}
sources:
  - {{name: claude-code, kind: claude_code, paths: [{logs}]}}
""")
    # at debug level: every event the command can say is searched for the key
    r = run_cli("--log-level", "debug", "report", "--json", "--config", str(cfg), "--state-dir", str(tmp_path / "state"),
                env=clean_env(TEST_ADMIN_KEY=KEY))
    assert r.returncode == 3, r.stderr  # printed, without fresh billed figures
    assert fake.count() >= 1 and "Admin API" in r.stderr and "400" in r.stderr
    assert "400" in json.loads(r.stdout)["billed_error"]
    assert KEY not in r.stderr + r.stdout
    assert KEY[-12:] not in r.stderr  # not even a tail of it
    assert "\x1b" not in r.stderr


# ----------------------------------------------------------------------------- values stored before the bounds


def _store_days(db: sqlite3.Connection, amounts: dict[date, str]) -> None:
    ensure_schema(db)
    for d, amount in amounts.items():
        db.execute("INSERT INTO billed_days VALUES ('cost', ?, '2026-03-10T00:00:00+00:00', 1)", (d.isoformat(),))
        db.execute("INSERT INTO billed_cost (day, workspace_id, amount_usd) VALUES (?, NULL, ?)",
                   (d.isoformat(), amount))
    db.commit()


def test_absurd_stored_days_are_left_out_logged_and_read_again(fake, tmp_path, captured_log):
    db = sqlite3.connect(tmp_path / "state.db", isolation_level=None, check_same_thread=False)
    _store_days(db, {date(2026, 3, 1): "0", date(2026, 3, 2): "5.5", date(2026, 3, 3): "1E+398", date(2026, 3, 4): "NaN",
                     date(2026, 3, 5): "not a number", date(2026, 3, 6): "-1e999999999"})

    restored = BillingPoller(None, db, clock=lambda: NOW).snapshot  # what `check` reads from disk
    assert set(restored.cost_rows) == {date(2026, 3, 1), date(2026, 3, 2)}
    assert stored_billed_by_day(db) == {date(2026, 3, 1): 0, date(2026, 3, 2): Decimal("5.5")}  # what report reads
    scrape(restored)
    assert '"billing.stored_value_refused"' in captured_log.getvalue()
    assert restored.refusals == {("cost_report", "stored_out_of_bounds"): 4}

    fake.add_spend(datetime(2026, 3, 3, 8, tzinfo=UTC), "700")
    poller = fake_poller(fake, db)
    snap = poller.poll()
    assert snap.up
    starts = [r.param("starting_at") for r in fake.requests if r.endpoint == "cost_report"]
    assert starts == ["2026-03-03T00:00:00Z"]  # the first refused day on: settled or not, read again
    assert snap.billed_usd(date(2026, 3, 3)) == Decimal(7) and snap.billed_usd(date(2026, 3, 4)) == 0
    assert snap.billed_usd(date(2026, 3, 2)) == Decimal("5.5")  # a good settled day before them stays
    assert stored_billed_by_day(db)[date(2026, 3, 3)] == Decimal(7)
    fake.clear_log()
    fake.advance(timedelta(minutes=5))
    poller.poll()
    assert [r.param("starting_at") for r in fake.requests if r.endpoint == "cost_report"] == [
        "2026-03-09T00:00:00Z"]  # once read again and settled, they are not read a third time


def test_the_largest_allowed_figures_render_everywhere():
    """The bounds are tight enough: the most a snapshot can hold, against the least credit there
    can be, still rounds to the cent and to a ratio without raising."""
    from exporter.billing.client import MAX_AMOUNT_USD, MAX_ROWS_PER_QUERY
    from exporter.config.model import MAX_CREDIT_USD, MIN_CREDIT_USD

    spend = MAX_AMOUNT_USD * MAX_ROWS_PER_QUERY * 365  # a year of days, each with the most rows of a query
    for credit in (MIN_CREDIT_USD, MAX_CREDIT_USD):
        remaining = credit - spend
        BreakerDecision(pool="p", open=True, reason="", source="threshold", remaining=remaining, credit=credit,
                        remaining_ratio=remaining / credit, open_below=Decimal("0.05")).to_json()
