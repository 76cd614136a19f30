"""The simulated Admin API: the one stand-in for Anthropic's usage and cost reports, over real HTTP.

``serve --demo`` bills its simulated organisation through it, and the tests feed it fixture
rows and faults. One implementation means the demo and the tests can not drift apart, and
the exporter's client meets, in both, what the real endpoints do where it depends on them:

* ``x-api-key`` and ``anthropic-version`` checks, and the real error body
  ``{"type":"error","error":{type, message},"request_id":...}``;
* the request rules of :mod:`exporter.billing.wire`: RFC 3339 bounds that snap to the
  bucket start (``ending_at`` exclusive), per-width ``limit`` caps, ``group_by[]`` with
  brackets, opaque ``next_page`` tokens bound to their query;
* cost amounts in cents as decimal strings with fractional cents, ``workspace_id: null``
  for the default workspace, the Claude Code report's ``estimated_cost.amount`` as a JSON
  number in cents;
* a clock: the real time (the demo) or a fixed, movable one (the tests); only spend before
  ``now`` shows, so today's bucket is partial and grows, and entries can be revised;
* a request log and a queue of injectable faults (429 with ``retry-after``, 500, 529,
  slow answers, cut or malformed bodies, resets, an echoed key).

It listens on 127.0.0.1 only. ``control=True`` adds key-less ``/_fake/...`` endpoints that
steer it from another process (see :class:`SimulatedAdminApi`).
"""

from __future__ import annotations

import bisect
import json
import secrets
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from operator import attrgetter
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from exporter.billing.wire import (
    ANALYTICS_BETA,
    ANALYTICS_COST_GROUPS,
    ANALYTICS_USAGE_GROUPS,
    API_VERSION,
    COST_GROUPS,
    USAGE_GROUPS,
    WIDTHS,
    PageTokens,
    WireError,
    SPEND_LIMIT_PERIODS,
    SPEND_LIMIT_SCOPE_IDS,
    SPEND_LIMIT_SCOPES,
    SPEND_LIMITS_BETA,
    SPEND_LIMITS_DEFAULT_LIMIT,
    check_analytics_query,
    check_claude_code_query,
    spend_limit_period_start,
    check_report_query,
    error_body,
    iso,
    parse_rfc3339,
)

__all__ = [
    "CONTROL_PREFIX", "FAULT_KINDS", "PATHS", "Fault", "RequestRecord", "SimulatedAdminApi", "SpendEntry", "SpendLimit",
]

HOST = "127.0.0.1"
#: path -> endpoint name (the name the client counts requests by)
PATHS = {
    "/v1/organizations/spend_limits": "spend_limits",
    "/v1/organizations/spend_limits/effective": "spend_limits_effective",
    "/v1/organizations/analytics/cost": "analytics_cost",
    "/v1/organizations/analytics/usage": "analytics_usage",
    "/v1/organizations/cost_report": "cost_report",
    "/v1/organizations/usage_report/messages": "usage_report",
    "/v1/organizations/usage_report/claude_code": "claude_code_report",
}
#: key-less endpoints that steer a server started with ``control=True``
CONTROL_PREFIX = "/_fake/"
FAULT_KINDS = ("429", "500", "529", "slow", "truncated", "short_body", "reset", "not_report", "echo_key")
# cost-report token_type -> the usage report's field for the count
_USAGE_FIELD = {
    "uncached_input_tokens": "uncached_input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_input_tokens": "cache_read_input_tokens",
    "cache_creation.ephemeral_5m_input_tokens": "ephemeral_5m_input_tokens",
    "cache_creation.ephemeral_1h_input_tokens": "ephemeral_1h_input_tokens",
}

Json = dict[str, object]


@dataclass(frozen=True, slots=True)
class SpendEntry:
    """Spend accrued at one moment: it shows in the reports once ``now`` has passed ``at``.

    ``cost_type="tokens"`` entries carry ``tokens`` of ``token_type`` (cost-report naming)
    and feed the usage report too; ``cost_type="web_search"`` entries carry the number of
    searches in ``tokens``.
    """

    at: datetime
    amount_cents: Decimal
    workspace_id: str | None
    api_key_id: str | None
    model: str
    cost_type: str
    token_type: str | None
    tokens: int
    service_tier: str
    context_window: str
    inference_geo: str
    description: str | None = None
    #: the analytics API's attribution: a tagged ``user_...`` or ``svac_...`` id (None: the API key,
    #: or nobody without one), the user's email, the product surface, the list price before
    #: discounts (None: the amount) and the API requests this entry stands for
    actor: str | None = None
    actor_email: str | None = None
    product: str | None = "messages_api"
    list_cents: Decimal | None = None
    requests: int = 0

    @property
    def list_amount(self) -> Decimal:
        return self.amount_cents if self.list_cents is None else self.list_cents

    def actor_object(self) -> Json | None:
        """The analytics ``actor`` this entry is attributed to: user, else service account, else key."""
        if self.actor is not None and self.actor.startswith("user_"):
            return {"type": "user_actor", "user_id": self.actor, "email_address": self.actor_email,
                    "name": None, "deleted": False}
        if self.actor is not None:
            return {"type": "service_account_actor", "service_account_id": self.actor}
        if self.api_key_id is not None:
            return {"type": "api_actor", "api_key_id": self.api_key_id}
        return None

    def describe(self) -> str:
        """The cost report's ``description`` of this line."""
        if self.description:
            return self.description
        if self.cost_type == "web_search":
            return "Web Search"
        return f"{self.model} Usage - {self.token_type}"


@dataclass(frozen=True, slots=True)
class SpendLimit:
    """One spend limit: a cap in minor units of ``currency`` on a scope's spend per period."""

    id: str
    scope_type: str
    scope_id: str | None
    period: str
    amount: int | None  # minor units; None: no numeric cap at this scope
    currency: str = "USD"
    enabled: bool = True
    created_at: datetime = datetime(2026, 10, 1, tzinfo=UTC)

    def scope(self) -> Json:
        scope: Json = {"type": self.scope_type}
        if self.scope_type in SPEND_LIMIT_SCOPE_IDS:
            scope[SPEND_LIMIT_SCOPE_IDS[self.scope_type]] = self.scope_id
        return scope

    def to_json(self) -> Json:
        return {"type": "spend_limit", "id": self.id, "amount": None if self.amount is None else str(self.amount),
                "currency": self.currency, "is_enabled": self.enabled, "period": self.period,
                "scope": self.scope(), "created_at": iso(self.created_at), "updated_at": iso(self.created_at)}


@dataclass(slots=True)
class _CodeUsage:
    """One (day, actor, model) of the Claude Code report, summed."""

    cost_cents: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour; ``endpoint`` None matches any report endpoint."""

    kind: str
    retry_after: str = "1"
    seconds: float = 1.0
    endpoint: str | None = None


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it (the key left out)."""

    endpoint: str
    path: str
    query: tuple[tuple[str, str], ...]
    status: int | None  # None: the connection was reset or cut
    fault: str | None
    api_now: datetime
    wall: float  # time.monotonic() on arrival
    headers: tuple[tuple[str, str], ...] = ()  # every header except x-api-key

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.query if k == name), None)

    def params(self, name: str) -> list[str]:
        return [v for k, v in self.query if k == name]


def _number(cents: Decimal) -> int | float:
    """A JSON number: the Claude Code report writes its estimate as one, not as a string."""
    return int(cents) if cents == cents.to_integral_value() else float(cents)


def _buckets(q_start: datetime, q_end: datetime, width: str, now: datetime) -> list[tuple[datetime, datetime]]:
    """The query's buckets that have begun by ``now``."""
    out = []
    step = WIDTHS[width]
    b = q_start
    while b < q_end and b < now:
        out.append((b, b + step))
        b += step
    return out


class SimulatedAdminApi:
    """The simulated Admin API. Thread-safe: every public method may be called while it serves.

    ``now`` fixes the clock (move it with :meth:`set_now` and :meth:`advance`); without it the
    clock is ``clock()`` in epoch seconds, the real time by default. ``keep_requests`` bounds
    the request log (a long-running demo); None keeps every request.

    With ``control=True`` another process steers it without a key: ``POST /_fake/now
    {"now": ...}``, ``/_fake/advance {"seconds": ...}``, ``/_fake/inject {"kind": "500",
    "count": 2}``, ``/_fake/clear``, ``/_fake/refuse_analytics {"status": 400}``,
    ``/_fake/spend {...}``, ``/_fake/dataset {...}``, and ``GET /_fake/requests``.
    """

    def __init__(self, *, key: str, now: datetime | None = None, clock: Callable[[], float] = time.time,
                 port: int = 0, organization_id: str = "org_simulated", control: bool = False,
                 keep_requests: int | None = None) -> None:
        if now is not None and now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.key = key
        self.organization_id = organization_id
        self.control = control
        self._fixed_now = now.astimezone(UTC) if now is not None else None
        self._clock = clock
        self._port = port
        self._lock = threading.RLock()
        self._spend: dict[int, SpendEntry] = {}
        self._order: list[tuple[datetime, int]] = []  # (at, id), sorted: a bucket is two bisects
        self._ids = 0
        self._claude_code: dict[tuple[date, str, str], _CodeUsage] = {}
        self._faults: list[tuple[Fault, int | None]] = []  # (fault, remaining uses; None = until cleared)
        self.faults_taken: Counter[str] = Counter()  # by kind, counted as a request starts to get one
        self._log: deque[RequestRecord] = deque(maxlen=keep_requests)
        self._pages = PageTokens()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self.on_request: Callable[[RequestRecord], None] | None = None  # called as each request arrives
        #: how far the analytics data lags ``now`` (its ``data_refreshed_at``)
        self.analytics_lag = timedelta(minutes=5)
        self._analytics_refusal: tuple[int, str, str] | None = None
        #: "console" (organisation and workspace limits; no effective report) or "enterprise"
        self.org_kind = "console"
        self._limits: dict[str, SpendLimit] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SimulatedAdminApi:
        api = self

        class Handler(_Handler):
            pass

        Handler.api = api
        self._stopping.clear()
        self._server = ThreadingHTTPServer((HOST, self._port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name="simulated-admin-api", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # cuts "slow" answers short
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> SimulatedAdminApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # ------------------------------------------------------------------ clock

    @property
    def now(self) -> datetime:
        with self._lock:
            fixed = self._fixed_now
        return fixed if fixed is not None else datetime.fromtimestamp(self._clock(), UTC)

    @now.setter
    def now(self, moment: datetime) -> None:
        self.set_now(moment)

    def set_now(self, moment: datetime) -> None:
        """Fix the clock at ``moment`` (from then on it moves only when told)."""
        if moment.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        with self._lock:
            self._fixed_now = moment.astimezone(UTC)

    def advance(self, delta: timedelta) -> datetime:
        """Move the clock on by ``delta`` (fixing it, if it followed the real time)."""
        with self._lock:
            self._fixed_now = self.now + delta
            return self._fixed_now

    # ------------------------------------------------------------------ the bill

    def add_spend(self, at: datetime, amount_cents: Decimal | str | int, *, workspace_id: str | None = None,
                  api_key_id: str | None = "apikey_01Default", model: str = "claude-sonnet-4-5-20250929",
                  cost_type: str = "tokens", token_type: str | None = "uncached_input_tokens", tokens: int = 0,
                  service_tier: str = "standard", context_window: str = "0-200k", inference_geo: str = "global",
                  description: str | None = None, actor: str | None = None, actor_email: str | None = None,
                  product: str | None = "messages_api", list_cents: Decimal | str | int | None = None,
                  requests: int = 0) -> int:
        """Add spend accrued at ``at``; returns its id for :meth:`revise` and :meth:`remove_spend`."""
        entry = SpendEntry(at=at, amount_cents=Decimal(str(amount_cents)), workspace_id=workspace_id,
                           api_key_id=api_key_id, model=model, cost_type=cost_type, token_type=token_type,
                           tokens=tokens, service_tier=service_tier, context_window=context_window,
                           inference_geo=inference_geo, description=description, actor=actor,
                           actor_email=actor_email, product=product,
                           list_cents=None if list_cents is None else Decimal(str(list_cents)), requests=requests)
        return self.add_entries([entry])[0]

    def add_entries(self, entries: Iterable[SpendEntry]) -> list[int]:
        """Add many entries at once (the demo's history); returns their ids, in order."""
        added: list[tuple[datetime, int]] = []
        with self._lock:
            for e in entries:
                if e.at.tzinfo is None:
                    raise ValueError("at must be timezone-aware")
                if e.at.tzinfo is not UTC:
                    e = replace(e, at=e.at.astimezone(UTC))
                self._ids += 1
                self._spend[self._ids] = e
                added.append((e.at, self._ids))
            if len(added) == 1:
                bisect.insort(self._order, added[0])
            elif added:
                self._order.extend(sorted(added))
                self._order.sort()  # two sorted runs: merged in linear time
        return [i for _, i in added]

    def revise(self, entry_id: int, *, amount_cents: Decimal | str | int | None = None,
               tokens: int | None = None) -> None:
        """Change an entry after the fact, as the API revises recent buckets."""
        with self._lock:
            entry = self._spend[entry_id]
            if amount_cents is not None:
                entry = replace(entry, amount_cents=Decimal(str(amount_cents)))
            if tokens is not None:
                entry = replace(entry, tokens=tokens)
            self._spend[entry_id] = entry

    def remove_spend(self, entry_id: int) -> None:
        with self._lock:
            entry = self._spend.pop(entry_id)
            del self._order[bisect.bisect_left(self._order, (entry.at, entry_id))]

    def spend(self) -> list[SpendEntry]:
        """Every entry, accrued or not, in time order."""
        with self._lock:
            return [self._spend[i] for _, i in self._order]

    def add_claude_code(self, day: date, actor_email: str, model: str, cost_cents: Decimal | str | int, *,
                        input_tokens: int = 0, output_tokens: int = 0, cache_read_tokens: int = 0,
                        cache_creation_tokens: int = 0) -> None:
        """Add Claude Code usage of one UTC day; the report sums it per actor and model."""
        with self._lock:
            u = self._claude_code.setdefault((day, actor_email, model), _CodeUsage())
            u.cost_cents += Decimal(str(cost_cents))
            u.input_tokens += input_tokens
            u.output_tokens += output_tokens
            u.cache_read_tokens += cache_read_tokens
            u.cache_creation_tokens += cache_creation_tokens

    def _accrued(self, start: datetime, end: datetime, now: datetime) -> list[SpendEntry]:
        """Entries in ``[start, end)`` that happened before ``now``."""
        with self._lock:
            lo = bisect.bisect_left(self._order, (start,))
            hi = bisect.bisect_left(self._order, (min(end, now),))
            return [self._spend[i] for _, i in self._order[lo:hi]]

    def add_spend_limit(self, limit_id: str, scope_type: str, amount: int | None, *, scope_id: str | None = None,
                        period: str = "monthly", currency: str = "USD", enabled: bool = True) -> None:
        """Configure a spend limit (``amount`` in minor units of ``currency``)."""
        if scope_type not in SPEND_LIMIT_SCOPES or period not in SPEND_LIMIT_PERIODS:
            raise ValueError(f"bad scope type {scope_type!r} or period {period!r}")
        with self._lock:
            self._limits[limit_id] = SpendLimit(limit_id, scope_type, scope_id, period, amount, currency, enabled)

    def spent_cents(self, period: str, *, workspace_id: str | None = None, user_id: str | None = None,
                    everything: bool = False) -> Decimal:
        """Cents accrued so far in the current ``period`` by a workspace, a user or the organisation."""
        now = self.now
        return sum((x.amount_cents for x in self._accrued(spend_limit_period_start(period, now), now, now)
                    if everything or (user_id is not None and x.actor == user_id)
                    or (workspace_id is not None and x.workspace_id == workspace_id)), Decimal(0))

    def _limit_page(self, query: list[tuple[str, str]], items: list[Json]) -> Json:
        text = next((v for k, v in query if k == "limit"), str(SPEND_LIMITS_DEFAULT_LIMIT))
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 1000:
            raise WireError(400, "invalid_request_error", "limit: must be a positive integer")
        first, end, nxt = self._paged(query, len(items), int(text))
        return {"data": items[first:end], "next_page": nxt}

    def spend_limits(self, query: list[tuple[str, str]]) -> Json:
        """``GET /v1/organizations/spend_limits``: newest first on Console, by scope type on Enterprise."""
        if any(k == "scope_type" for k, _ in query):
            raise WireError(400, "invalid_request_error", "scope_type: send arrays as scope_type[]=...")
        types = [v for k, v in query if k == "scope_type[]"]
        with self._lock:
            limits = list(self._limits.values())
        limits = [x for x in limits if not types or x.scope_type in types]
        return self._limit_page(query, [x.to_json() for x in limits])

    def spend_limits_effective(self, query: list[tuple[str, str]]) -> Json:
        """``GET /v1/organizations/spend_limits/effective``: each member's effective limit and spend (Enterprise)."""
        if self.org_kind != "enterprise":
            raise WireError(400, "invalid_request_error", "This endpoint is supported for Claude Enterprise "
                            "organizations only", "organization_type_not_supported")
        with self._lock:
            limits = list(self._limits.values())
            members: list[tuple[str, str | None]] = sorted({
                (x.actor, x.actor_email) for x in self._spend.values() if x.actor is not None
                and x.actor.startswith("user_")})
        members += [(x.scope_id, None) for x in limits if x.scope_type == "user" and x.scope_id is not None
                    and x.scope_id not in {m[0] for m in members}]
        rows: list[Json] = []
        for user_id, email in members:
            for period in SPEND_LIMIT_PERIODS:
                own = [x for x in limits if x.period == period and x.scope_type == "user" and x.scope_id == user_id]
                org = [x for x in limits if x.period == period and x.scope_type == "organization"]
                if not (own or org):
                    continue
                source = (own or org)[0]
                spent = self.spent_cents(period, user_id=user_id)
                rows.append({"actor": {"type": "user_actor", "user_id": user_id, "email_address": email, "name": None,
                                       "deleted": False},
                             "amount": None if source.amount is None else str(source.amount),
                             "currency": source.currency, "period": period,
                             "period_to_date_spend": f"{spent.quantize(Decimal('0.001')).normalize():f}",
                             "scope": {"type": "user", "user_id": user_id}, "source": source.scope(),
                             "spend_limit_id": source.id})
        return self._limit_page(query, rows)

    def refuse_analytics(self, status: int | None = 400) -> None:
        """Answer every analytics call with the refusal an organisation without the API gets (None: stop).

        400 is a HIPAA-ready organisation's answer, 403 a key without ``read:analytics``, 404 an API
        that does not have the endpoints.
        """
        refusals = {
            400: ("invalid_request_error",
                  "The Usage and Cost Analytics API is not available to organizations with HIPAA readiness enabled"),
            403: ("permission_error", "This API key does not have the read:analytics scope"),
            404: ("not_found_error", "Not found"),
        }
        with self._lock:
            self._analytics_refusal = None if status is None else (status, *refusals[status])

    # ------------------------------------------------------------------ faults

    def inject(self, kind: str, *, count: int | None = 1, retry_after: float | str = 1, seconds: float = 1.0,
               endpoint: str | None = None) -> None:
        """Queue a fault for the next ``count`` matching requests (``count=None``: until cleared).

        Kinds: ``429`` (with ``retry-after: <retry_after>``), ``500``, ``529`` (overloaded_error),
        ``slow`` (answer normally after ``seconds``), ``truncated`` (200 whose JSON body is cut,
        with a matching Content-Length), ``short_body`` (Content-Length promises more than is
        sent, then the connection closes), ``reset`` (TCP reset, no answer), ``not_report``
        (200 with a JSON body that is not a report), ``echo_key`` (a 400 whose message and
        ``request_id`` echo the ``x-api-key`` it was sent, as a careless proxy might).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULT_KINDS)}")
        if endpoint is not None and endpoint not in PATHS.values():
            raise ValueError(f"unknown endpoint {endpoint!r}")
        with self._lock:
            self._faults.append((Fault(kind, str(retry_after), seconds, endpoint), count))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, endpoint: str) -> Fault | None:
        """The fault this request gets, if any; a subclass may override it to draw its own."""
        with self._lock:
            for i, (fault, remaining) in enumerate(self._faults):
                if fault.endpoint not in (None, endpoint):
                    continue
                if remaining is not None:
                    if remaining <= 1:
                        del self._faults[i]
                    else:
                        self._faults[i] = (fault, remaining - 1)
                self.faults_taken[fault.kind] += 1
                return fault
        return None

    # ------------------------------------------------------------------ request log

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def count(self, endpoint: str | None = None, status: int | None = None) -> int:
        """Requests received (for one endpoint, with one status), faults included."""
        return sum(1 for r in self.requests
                   if (endpoint is None or r.endpoint == endpoint) and (status is None or r.status == status))

    def counts(self) -> Counter[str]:
        return Counter(r.endpoint for r in self.requests)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)
        if self.on_request is not None:
            self.on_request(record)

    # ------------------------------------------------------------------ reports

    def report(self, endpoint: str, query: list[tuple[str, str]]) -> Json:
        """The body of a 200 answer to ``endpoint``, or the WireError the API would answer."""
        if endpoint == "cost_report":
            return self.cost_report(query)
        if endpoint == "usage_report":
            return self.usage_report(query)
        if endpoint == "claude_code_report":
            return self.claude_code_report(query)
        if endpoint in ("analytics_cost", "analytics_usage"):
            return self.analytics(endpoint, query)
        if endpoint == "spend_limits":
            return self.spend_limits(query)
        if endpoint == "spend_limits_effective":
            return self.spend_limits_effective(query)
        raise WireError(404, "not_found_error", f"no report {endpoint!r}")

    def _paged(self, query: list[tuple[str, str]], n: int, limit: int) -> tuple[int, int, str | None]:
        """(first, end, next_page) of the page the query asks for, out of ``n`` items."""
        first, end = self._pages.bounds(query, n, limit)
        return first, end, self._pages.next(query, end) if end < n else None

    def _bucketed(self, query: list[tuple[str, str]], allowed: tuple[str, ...], widths: tuple[str, ...],
                  max_groups: int, results: Callable[[list[SpendEntry], list[str]], list[Json]]) -> Json:
        """A bucketed report: the query checked, its page of buckets, each with ``results`` of its entries."""
        now = self.now
        q = check_report_query(query, allowed, widths=widths, max_groups=max_groups, now=now)
        buckets = _buckets(q.start, q.end, q.width, now)
        first, end, nxt = self._paged(query, len(buckets), q.limit)
        data = [{"starting_at": iso(s), "ending_at": iso(e), "results": results(self._accrued(s, e, now), q.groups)}
                for s, e in buckets[first:end]]
        return {"data": data, "has_more": nxt is not None, "next_page": nxt}

    def cost_report(self, query: list[tuple[str, str]]) -> Json:
        """``GET /v1/organizations/cost_report``: daily cents, by workspace and description."""
        return self._bucketed(query, COST_GROUPS, ("1d",), 2, _cost_results)

    def usage_report(self, query: list[tuple[str, str]]) -> Json:
        """``GET /v1/organizations/usage_report/messages``: tokens per bucket and group."""
        return self._bucketed(query, USAGE_GROUPS, ("1m", "1h", "1d"), 5, _usage_results)

    def claude_code_report(self, query: list[tuple[str, str]]) -> Json:
        """``GET /v1/organizations/usage_report/claude_code``: one UTC day, per actor and model."""
        day, limit = check_claude_code_query(query, now=self.now)
        with self._lock:
            rows = sorted((k, replace(u)) for k, u in self._claude_code.items() if k[0] == day)
        actors: dict[str, list[Json]] = {}
        for (_day, actor, model), u in rows:
            actors.setdefault(actor, []).append({
                "model": model,
                "tokens": {"input": u.input_tokens, "output": u.output_tokens, "cache_read": u.cache_read_tokens,
                           "cache_creation": u.cache_creation_tokens},
                "estimated_cost": {"currency": "USD", "amount": _number(u.cost_cents)},
            })
        items: list[Json] = [{
            "date": iso(datetime(day.year, day.month, day.day, tzinfo=UTC)),
            "actor": {"type": "user_actor", "email_address": actor},
            "organization_id": self.organization_id, "customer_type": "api", "terminal_type": "cli",
            "core_metrics": {"num_sessions": 1, "lines_of_code": {"added": 0, "removed": 0},
                             "commits_by_claude_code": 0, "pull_requests_by_claude_code": 0},
            "model_breakdown": models,
        } for actor, models in actors.items()]
        first, end, nxt = self._paged(query, len(items), limit)
        return {"data": items[first:end], "has_more": nxt is not None, "next_page": nxt}

    def analytics(self, endpoint: str, query: list[tuple[str, str]]) -> Json:
        """``GET /v1/organizations/analytics/{cost,usage}``: rows per bucket and group combination.

        Only buckets with spend have rows; a page holds ``limit`` combinations, and on cost each
        is fanned out by ``cost_type``/``token_type`` when asked (those rows do not count). Data
        shows up to ``data_refreshed_at`` (``now`` less :attr:`analytics_lag`).
        """
        with self._lock:
            refusal = self._analytics_refusal
        if refusal is not None:
            raise WireError(*refusal)
        now = self.now
        cost = endpoint == "analytics_cost"
        q = check_analytics_query(query, ANALYTICS_COST_GROUPS if cost else ANALYTICS_USAGE_GROUPS, now=now)
        refreshed = now - self.analytics_lag
        spans = _buckets(q.start, q.end, q.width, refreshed) if q.width else [(q.start, q.end)]
        combos: list[tuple[datetime, datetime, tuple[Any, ...], list[SpendEntry]]] = []
        for s, e in spans:
            groups: dict[tuple[Any, ...], list[SpendEntry]] = {}
            for x in self._accrued(s, e, refreshed):
                groups.setdefault(tuple(_dimension(x, g) for g in q.groups), []).append(x)
            for key, xs in groups.items():
                combos.append((s, e, key, xs))
        by_time = next((v for k, v in query if k == "order_by"), "amount" if cost else "total_tokens") == "time"
        descending = next((v for k, v in query if k == "order"), "desc") == "desc"

        def weight(c: tuple[datetime, datetime, tuple[Any, ...], list[SpendEntry]]) -> Decimal:
            return sum((x.amount_cents if cost else Decimal(x.tokens) for x in c[3]), Decimal(0))

        combos.sort(key=lambda c: (c[0].timestamp() if by_time and q.width else 0, weight(c)) if not descending
                    else (-(c[0].timestamp()) if by_time and q.width else 0, -weight(c)))
        first, end, nxt = self._paged(query, len(combos), q.limit)
        data: list[Json] = []
        for s, e, key, xs in combos[first:end]:
            group: Json = dict(zip(q.groups, (_render(g, v) for g, v in zip(q.groups, key, strict=True)), strict=True))
            if cost:
                data.extend(_analytics_cost_rows(s, e, group, xs, q.fanout))
            else:
                data.append({"starting_at": iso(s), "ending_at": iso(e), "group": group, "usage": _analytics_usage(xs)})
        return {"data": data, "has_more": nxt is not None, "next_page": nxt, "data_refreshed_at": iso(refreshed)}

    # ------------------------------------------------------------------ datasets

    def load_dataset(self, data: Mapping[str, Any]) -> None:
        """Load ``{"now": RFC 3339, "spend": [{"at", "amount_cents", ...}], "claude_code": [{"day", ...}]}``.

        ``spend`` items take :meth:`add_spend`'s keywords, ``claude_code`` items
        :meth:`add_claude_code`'s (``day`` as ``YYYY-MM-DD``).
        """
        if data.get("now"):
            self.set_now(parse_rfc3339(data["now"], "now"))
        for item in data.get("spend", []):
            item = dict(item)
            at = parse_rfc3339(item.pop("at"), "at")
            self.add_spend(at, item.pop("amount_cents"), **item)
        for item in data.get("claude_code", []):
            item = dict(item)
            self.add_claude_code(date.fromisoformat(item.pop("day")), item.pop("actor_email"), item.pop("model"),
                                 item.pop("cost_cents"), **item)


def _dimension(x: SpendEntry, group: str) -> Any:
    """An entry's value of one analytics dimension, hashable (the actor as its tagged id)."""
    if group == "actor":
        actor = x.actor_object()
        return json.dumps(actor, sort_keys=True) if actor is not None else None
    if group == "actor_type":
        actor = x.actor_object()
        return actor["type"] if actor is not None else None
    if group == "speed":
        return "standard"
    return getattr(x, group)


def _render(group: str, value: Any) -> Any:
    return json.loads(value) if group == "actor" and value is not None else value


def _analytics_cost_rows(s: datetime, e: datetime, group: Json, xs: list[SpendEntry], fanout: list[str]) -> list[Json]:
    """One combination's cost rows: one row, or one per cost component (and token type) when fanned out."""
    def row(parts: list[SpendEntry], extra: Json, requests: int | None) -> Json:
        amount = sum((x.amount_cents for x in parts), Decimal(0))
        listed = sum((x.list_amount for x in parts), Decimal(0))
        return {"starting_at": iso(s), "ending_at": iso(e), "group": {**group, **extra},
                "cost": {"amount": f"{amount:f}", "list_amount": f"{listed:f}", "currency": "USD",
                         "requests": requests}}

    if not fanout:
        return [row(xs, {}, sum(x.requests for x in xs))]
    split: dict[tuple[str | None, str | None], list[SpendEntry]] = {}
    for x in xs:
        token_type = x.token_type if "token_type" in fanout and x.cost_type == "tokens" else None
        cost_type = x.cost_type if "cost_type" in fanout or token_type is not None else None
        split.setdefault((cost_type, token_type), []).append(x)
    return [row(parts, {"cost_type": ct, "token_type": tt}, None)
            for (ct, tt), parts in sorted(split.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))]


def _analytics_usage(xs: list[SpendEntry]) -> Json:
    c: Counter[str] = Counter()
    for x in xs:
        if x.cost_type == "tokens" and x.token_type in _USAGE_FIELD:
            c[_USAGE_FIELD[x.token_type]] += x.tokens
        elif x.cost_type == "web_search":
            c["web_search_requests"] += x.tokens
    total = sum(c[k] for k in ("uncached_input_tokens", "cache_read_input_tokens", "ephemeral_5m_input_tokens",
                               "ephemeral_1h_input_tokens", "output_tokens"))
    return {"uncached_input_tokens": c["uncached_input_tokens"], "cache_read_input_tokens": c["cache_read_input_tokens"],
            "cache_creation": {"ephemeral_5m_input_tokens": c["ephemeral_5m_input_tokens"],
                               "ephemeral_1h_input_tokens": c["ephemeral_1h_input_tokens"]},
            "output_tokens": c["output_tokens"], "server_tool_use": {"web_search_requests": c["web_search_requests"]},
            "total_tokens": total, "requests": sum(x.requests for x in xs)}


def _cost_results(entries: list[SpendEntry], groups: list[str]) -> list[Json]:
    """One bucket of the cost report: cents summed per workspace and description (as grouped)."""
    by_ws, by_desc = "workspace_id" in groups, "description" in groups
    sums: dict[tuple[str | None, ...], Decimal] = {}
    for x in entries:
        tokens = by_desc and x.cost_type == "tokens"
        key = (
            x.workspace_id if by_ws else None,
            x.describe() if by_desc else None,
            x.model if tokens else None,
            x.cost_type if by_desc else None,
            x.token_type if tokens else None,
            x.service_tier if by_desc else None,
            x.context_window if by_desc else None,
        )
        sums[key] = sums.get(key, Decimal(0)) + x.amount_cents
    return [{"currency": "USD", "amount": f"{amount:f}", "workspace_id": k[0], "description": k[1], "model": k[2],
             "cost_type": k[3], "token_type": k[4], "service_tier": k[5], "context_window": k[6]}
            for k, amount in sorted(sums.items(), key=lambda kv: tuple(str(p) for p in kv[0]))]


def _usage_results(entries: list[SpendEntry], groups: list[str]) -> list[Json]:
    """One bucket of the usage report: tokens summed per group (ungrouped dimensions are null)."""
    grouped = [g for g in USAGE_GROUPS if g in groups]
    values = attrgetter(*grouped) if grouped else (lambda x: ())
    sums: dict[tuple[str | None, ...], Counter[str]] = {}
    for x in entries:
        v = values(x)
        key = v if len(grouped) > 1 else (v,) if grouped else ()
        c = sums.get(key)
        if c is None:
            c = sums[key] = Counter()
        if x.cost_type == "tokens" and x.token_type in _USAGE_FIELD:
            c[_USAGE_FIELD[x.token_type]] += x.tokens
        elif x.cost_type == "web_search":
            c["web_search_requests"] += x.tokens
    out: list[Json] = []
    for key, c in sorted(sums.items(), key=lambda kv: tuple(str(p) for p in kv[0])):
        row: Json = dict.fromkeys(USAGE_GROUPS)
        row.update(zip(grouped, key, strict=True))
        row.update({
            "uncached_input_tokens": c["uncached_input_tokens"],
            "cache_read_input_tokens": c["cache_read_input_tokens"],
            "cache_creation": {"ephemeral_5m_input_tokens": c["ephemeral_5m_input_tokens"],
                               "ephemeral_1h_input_tokens": c["ephemeral_1h_input_tokens"]},
            "output_tokens": c["output_tokens"],
            "server_tool_use": {"web_search_requests": c["web_search_requests"]},
        })
        out.append(row)
    return out


class _Handler(BaseHTTPRequestHandler):
    api: SimulatedAdminApi
    protocol_version = "HTTP/1.1"
    server_version = "simulated-admin-api"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # answer at once: without this, Nagle and delayed ACKs add ~40 ms to every answer
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -------------------------------------------------------------- control endpoints (no key)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        api = self.api
        if not (api.control and path.startswith(CONTROL_PREFIX)):
            self.close_connection = True  # its body is left unread
            return self._send(404, error_body("not_found_error", f"Not found: {path}"))
        length = int(self.headers.get("content-length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self._send(400, error_body("invalid_request_error", "body is not JSON"))
        action = path.removeprefix(CONTROL_PREFIX)
        try:
            if action == "now":
                api.set_now(parse_rfc3339(body["now"], "now"))
            elif action == "advance":
                api.advance(timedelta(seconds=float(body["seconds"])))
            elif action == "inject":
                kind = str(body.pop("kind"))
                api.inject(kind, **body)
            elif action == "clear":
                api.clear_faults()
            elif action == "spend":
                api.load_dataset({"spend": [body]})
            elif action == "dataset":
                api.load_dataset(body)
            elif action == "refuse_analytics":
                api.refuse_analytics(body.get("status"))
            elif action == "spend_limit":
                api.add_spend_limit(body.pop("id"), body.pop("scope_type"), body.pop("amount"), **body)
            elif action == "org_kind":
                api.org_kind = str(body["kind"])
            else:
                return self._send(404, error_body("not_found_error", "no such control endpoint"))
        except (KeyError, TypeError, ValueError, AttributeError, WireError) as exc:
            return self._send(400, error_body("invalid_request_error", f"bad control request: {exc!r}"))
        self._send(200, json.dumps({"ok": True, "now": iso(api.now)}).encode())

    # -------------------------------------------------------------- the API

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        api = self.api
        if api.control and parts.path == f"{CONTROL_PREFIX}requests":
            rows = [{**asdict(r), "api_now": iso(r.api_now)} for r in api.requests]
            return self._send(200, json.dumps(rows, default=str).encode())
        endpoint = PATHS.get(parts.path, "other")
        query = parse_qsl(parts.query, keep_blank_values=True)
        headers = tuple((k.lower(), v) for k, v in self.headers.items() if k.lower() != "x-api-key")
        fault = api._take_fault(endpoint) if endpoint != "other" else None

        def record(status: int | None) -> None:
            api._record(RequestRecord(endpoint, parts.path, tuple(query), status, fault.kind if fault else None,
                                      api.now, time.monotonic(), headers))

        if fault is not None:
            if fault.kind == "reset":
                record(None)
                return self._reset()
            if fault.kind == "slow":
                if api._stopping.wait(fault.seconds):
                    record(None)
                    return self._reset()
            elif fault.kind == "429":
                record(429)
                return self._send(429, error_body("rate_limit_error", "Number of requests has exceeded your rate limit"),
                                  extra={"retry-after": fault.retry_after})
            elif fault.kind in ("500", "529"):
                status = int(fault.kind)
                err = ("api_error", "Internal server error") if status == 500 else ("overloaded_error", "Overloaded")
                record(status)
                return self._send(status, error_body(*err))
            elif fault.kind == "not_report":
                record(200)
                return self._send(200, b'{"type":"message","content":[]}')
            elif fault.kind == "echo_key":
                sent = self.headers.get("x-api-key", "")
                record(400)
                return self._send(400, json.dumps({
                    "type": "error", "error": {"type": "invalid_request_error", "message": f"bad key {sent}"},
                    "request_id": f"req_{sent}\x1b[2J"}).encode())

        status, body = self._answer(endpoint, parts.path, query)
        if fault is not None and fault.kind == "truncated" and status == 200:
            body = body[: max(1, len(body) // 2)]
        if fault is not None and fault.kind == "short_body" and status == 200:
            record(None)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            return self._reset()
        record(status)
        self._send(status, body)

    def _answer(self, endpoint: str, path: str, query: list[tuple[str, str]]) -> tuple[int, bytes]:
        if endpoint == "other":
            return 404, error_body("not_found_error", f"Not found: {path}")
        given = self.headers.get("x-api-key")
        if given is None:
            return 401, error_body("authentication_error", "x-api-key header is required")
        if not secrets.compare_digest(given.encode(), self.api.key.encode()):
            return 401, error_body("authentication_error", "invalid x-api-key")
        version = self.headers.get("anthropic-version")
        if version is None:
            return 400, error_body("invalid_request_error", "anthropic-version: header is required")
        if version != API_VERSION:
            return 400, error_body("invalid_request_error", f"anthropic-version: {version!r} is not a valid version")
        beta = ANALYTICS_BETA if endpoint.startswith("analytics_") else (
            SPEND_LIMITS_BETA if endpoint == "spend_limits" else None)
        if beta is not None and beta not in [b.strip() for b in (self.headers.get("anthropic-beta") or "").split(",")]:
            return 400, error_body("invalid_request_error", f"anthropic-beta: this endpoint is in beta; send {beta}")
        try:
            report = self.api.report(endpoint, query)
        except WireError as exc:
            return exc.status, error_body(exc.error_type, exc.message, exc.error_code)
        return 200, json.dumps(report).encode()

    def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("request-id", f"req_{secrets.token_hex(8)}")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _reset(self) -> None:
        """Close with a TCP RST: the client sees a reset connection, not an answer."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
