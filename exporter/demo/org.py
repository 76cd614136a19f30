"""``serve --demo``: the whole product working against a simulated organisation.

Nothing real is read or contacted. The demo starts, in the exporter's own process:

* the **simulated Admin API** (:mod:`exporter.demo.admin_api`, the one the tests use too)
  on 127.0.0.1 (a free port), speaking the real wire format, billed by the workload below;
* a **Claude Code log folder** in a temporary directory, written in the real transcript
  shape (a user line, then one assistant line per content block with the streamed
  placeholder first, subagent files, the odd API error line);
* a **workload** that keeps spending: an agent pipeline (``sdk-cli``), people using
  Claude Code interactively (``cli``, ``claude-vscode``) and a research team calling the
  API directly. Each request is written to the logs *and* billed by the simulated API
  at list price times a small per-pool factor, so the exporter sees a realistic drift.

How time works: the demo backfills about three weeks of history at start (so billed and
drift have complete UTC days), then keeps writing requests stamped with the *real* time,
at an accelerated spend rate: each real second carries ``SPEED`` simulated seconds of
work (``CLAUDE_BUDGET_EXPORTER_DEMO_SPEED``, default 60). No clock is faked, so the
exporter's clock, the API's buckets and the log timestamps always agree. The agent
pool starts near its breaker threshold and crosses it within a couple of minutes; the
simulated pipeline checks ``GET /breaker/agent-sdk`` before each batch, as a real one
would, and pauses once it is open.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import random
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from exporter.logsetup import get_logger

from exporter.config.model import (
    DEFAULT_KEY_ENV,
    DEFAULT_STATE_DIR,
    AdminApiConfig,
    Config,
    PeriodConfig,
    PoolConfig,
    PoolMatch,
    SourceConfig,
)
from exporter.config import default_config, parse_listen
from exporter.expose.statuspage import DEMO_ORIGIN
from exporter.core.records import Tokens
from exporter.demo.admin_api import SimulatedAdminApi, SpendEntry

__all__ = [
    "DEFAULT_SPEED", "DEMO_KEY", "SPEED_ENV", "WORKLOADS", "Demo", "DemoError", "DemoOrg", "Workload", "demo_speed",
    "log_if_nothing_to_read", "nothing_to_read", "start_demo",
]

log = get_logger()

SPEED_ENV = "CLAUDE_BUDGET_EXPORTER_DEMO_SPEED"
DEFAULT_SPEED = 60.0
#: The simulated API's key: written to a file in the demo's temporary folder, never a real key.
DEMO_KEY = "sk-ant-admin01-demo-simulated-organisation-not-a-real-key"
#: the simulated API's request log: enough to look at, bounded for a demo left running
KEEP_REQUESTS = 1000
TICK_SECONDS = 1.0
HISTORY_DAYS = 22

#: cost-report token_type of each Tokens field, in Tokens order
COST_TOKEN_TYPES = ("uncached_input_tokens", "output_tokens", "cache_read_input_tokens",
                    "cache_creation.ephemeral_5m_input_tokens", "cache_creation.ephemeral_1h_input_tokens")
_CENTS_STEP = Decimal("0.0000001")

OPUS, SONNET, HAIKU = "claude-opus-4-5-20251101", "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"
#: a model the price table does not know: its tokens show in claude_unpriced_tokens_total
PREVIEW = "claude-demo-preview"


class DemoError(Exception):
    """The demo cannot start as asked (e.g. combined with --config)."""


# --------------------------------------------------------------------------- the organisation


@dataclass(frozen=True)
class Workload:
    """Who spends, how much per simulated hour, and how the bill differs from list price."""

    pool: str
    workspace_id: str
    api_key_id: str
    usd_per_hour: float  # live rate, per simulated hour, at list price
    bill_factor: Decimal  # bill / list price: the drift the exporter should find is about 1 / this
    models: tuple[tuple[str, float], ...]
    entrypoints: tuple[str, ...] = ()  # () = calls the API directly: no Claude Code logs
    actors: tuple[str, ...] = ()
    project: str = ""
    hour_weights: tuple[float, ...] = (1.0,) * 24  # by UTC hour, for the backfilled history
    start_used: float = 0.5  # fraction of the credit spent at the demo's start
    breaker_aware: bool = False  # checks GET /breaker/<pool> before each batch


WORKDAY = tuple(0.15 if h < 7 or h > 19 else (1.0 if 9 <= h <= 17 else 0.6) for h in range(24))
NIGHTLY = tuple(1.0 if h < 6 else 0.35 for h in range(24))
STEADY = tuple(0.7 + 0.3 * (8 <= h <= 20) for h in range(24))

WORKLOADS = (
    Workload("agent-sdk", "wrkspc_demo_agents", "apikey_demo_agents", usd_per_hour=9.0,
             bill_factor=Decimal("1.04"), models=((OPUS, 0.7), (SONNET, 0.25), (HAIKU, 0.05)),
             entrypoints=("sdk-cli", "sdk-py"), actors=("agents@demo.example",), project="/srv/agents/triage-bot",
             hour_weights=NIGHTLY, start_used=0.885, breaker_aware=True),
    Workload("interactive", "wrkspc_demo_interactive", "apikey_demo_interactive", usd_per_hour=0.4,
             bill_factor=Decimal("0.985"), models=((SONNET, 0.74), (OPUS, 0.15), (HAIKU, 0.10), (PREVIEW, 0.01)),
             entrypoints=("cli", "cli", "claude-vscode"),
             actors=("ada@demo.example", "grace@demo.example", "linus@demo.example"),
             project="/home/ada/src/webshop", hour_weights=WORKDAY, start_used=0.41),
    Workload("team-api", "wrkspc_demo_research", "apikey_demo_research", usd_per_hour=1.2,
             bill_factor=Decimal("1.01"), models=((SONNET, 0.6), (HAIKU, 0.4)), hour_weights=STEADY,
             start_used=0.52),
)
POOL_CREDIT = {"agent-sdk": Decimal(200), "interactive": Decimal(100), "team-api": Decimal(600)}
PERIOD_AGO_DAYS = {"agent-sdk": 14, "interactive": 9, "team-api": 19}


def _pools(now: datetime) -> tuple[PoolConfig, ...]:
    def period(pool: str) -> PeriodConfig:
        # a reset day some days back, so every pool has complete billed days in its period
        return PeriodConfig(reset_day=(now - timedelta(days=PERIOD_AGO_DAYS[pool])).day)

    return (
        PoolConfig(name="agent-sdk", credit_usd=POOL_CREDIT["agent-sdk"], plan="max20x", team="platform",
                   period=period("agent-sdk"),
                   match=PoolMatch(workspaces=("wrkspc_demo_agents",), sources=("claude-code",),
                                   entrypoints=("sdk-cli", "sdk-py", "sdk-ts")),
                   open_below=Decimal("0.05")),
        PoolConfig(name="interactive", credit_usd=POOL_CREDIT["interactive"], plan="max5x", team="platform",
                   period=period("interactive"),
                   match=PoolMatch(workspaces=("wrkspc_demo_interactive",), sources=("claude-code",),
                                   entrypoints=("cli", "claude-vscode")),
                   open_below=Decimal("0.10")),
        PoolConfig(name="team-api", credit_usd=POOL_CREDIT["team-api"], team="research",
                   period=period("team-api"), match=PoolMatch(workspaces=("wrkspc_demo_research",)),
                   open_below=Decimal("0.05")),
    )


def _day_jitter(workload: Workload, day: date) -> Decimal:
    """A per-day wobble of the bill factor (±1.5%), the same on every run."""
    h = int(hashlib.sha256(f"{workload.pool}{day}".encode()).hexdigest()[:6], 16)
    return Decimal(1) + (Decimal(h % 3001) - 1500) / Decimal(100_000)


@dataclass
class _Session:
    path: Path
    session_id: str
    actor: str
    entrypoint: str
    requests: int = 0
    parent: str | None = None
    last_at: float = 0.0


@dataclass
class _Batch:
    """What one step of the workload produced: log text per file, the bill, Claude Code rows."""

    lines: dict[Path, list[str]] = field(default_factory=lambda: defaultdict(list))
    bill: list[SpendEntry] = field(default_factory=list)
    claude_code: list[tuple[date, str, str, Tokens, Decimal]] = field(default_factory=list)


class DemoOrg:
    """Generates the organisation's requests: transcript lines and the matching bill."""

    def __init__(self, root: Path, api: SimulatedAdminApi, *, speed: float, seed: int = 7,
                 workloads: tuple[Workload, ...] = WORKLOADS) -> None:
        from exporter.prices import load_pricer

        self.root = root
        self.projects = root / "projects"
        self.api = api
        self.speed = speed
        self.rng = random.Random(seed)
        self.pricer = load_pricer()
        self.workloads = workloads
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._carry: dict[str, float] = defaultdict(float)
        self.paused: set[str] = set()
        self.requests = 0

    # ------------------------------------------------------------------ requests

    def _ids(self, prefix: str, n: int) -> str:
        alphabet = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
        return prefix + "".join(self.rng.choice(alphabet) for _ in range(n))

    def _uuid(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def _tokens(self, model: str, heavy: bool) -> Tokens:
        r = self.rng.random
        cache_read = 0 if r() < 0.1 else int(8_000 + r() * (150_000 if heavy else 90_000))
        write = 0 if r() < 0.25 else int(200 + r() * (20_000 if heavy else 8_000))
        write_1h = write if r() < 0.2 else 0
        out = int(40 + r() ** 2 * (6_000 if heavy else 2_500))
        if model == HAIKU:
            out //= 3
        return Tokens(input=int(1 + r() * (1_500 if r() < 0.9 else 20_000)), output=out, cache_read=cache_read,
                      cache_write_5m=write - write_1h, cache_write_1h=write_1h)

    def _model(self, w: Workload) -> str:
        x = self.rng.random() * sum(p for _, p in w.models)
        for model, p in w.models:
            x -= p
            if x <= 0:
                return model
        return w.models[-1][0]

    def _bill(self, w: Workload, model: str, tokens: Tokens, at: float, batch: _Batch,
              actor: str | None = None) -> tuple[Decimal, Decimal]:
        """Bill one request: a line per token type at list price times the workload's factor,
        attributed as the analytics API does (a user, or the agents' service account; Claude Code
        or the Messages API).

        Returns (list USD, list cents); the unpriced preview is billed as Sonnet.
        """
        if actor is None:
            actor_id = None
        elif w.breaker_aware:
            actor_id = "svac_demo_agents"
        else:
            actor_id = "user_demo_" + actor.split("@")[0]
        product = "claude_code" if w.entrypoints else "messages_api"
        first = True
        prices = self.pricer.prices(model, when=at) or self.pricer.prices(SONNET, when=at)
        assert prices is not None, "the price table lost Claude Sonnet 4.5"
        moment = datetime.fromtimestamp(at, UTC)
        factor = w.bill_factor * _day_jitter(w, moment.date())
        counts = (tokens.input, tokens.output, tokens.cache_read, tokens.cache_write_5m, tokens.cache_write_1h)
        total_list = Decimal(0)
        for token_type, n, pico in zip(COST_TOKEN_TYPES, counts, prices.base_pico, strict=True):
            list_cents = Decimal(n * pico).scaleb(-10)  # picodollars per token -> cents: x / 10**10
            total_list += list_cents
            if n:
                batch.bill.append(SpendEntry(
                    at=moment, amount_cents=(list_cents * factor).quantize(_CENTS_STEP),
                    workspace_id=w.workspace_id, api_key_id=w.api_key_id, model=model, cost_type="tokens",
                    token_type=token_type, tokens=n, service_tier="standard", context_window="0-200k",
                    inference_geo="global", actor=actor_id,
                    actor_email=actor if actor_id and actor_id.startswith("user_") else None, product=product,
                    list_cents=list_cents, requests=int(first)))
                first = False
        return total_list / 100, total_list

    def _request(self, w: Workload, at: float, batch: _Batch) -> Decimal:
        """One request at ``at``: its log lines (if the workload uses Claude Code) and its bill."""
        model = self._model(w)
        tokens = self._tokens(model, heavy=w.pool == "agent-sdk")
        s = self._session(w, at) if w.entrypoints else None
        usd, list_cents = self._bill(w, model, tokens, at, batch, s.actor if s is not None else None)
        if s is not None:
            self._write_request(s, w, model, tokens, at, batch)
            batch.claude_code.append((datetime.fromtimestamp(at, UTC).date(), s.actor, model, tokens, list_cents))
        self.requests += 1
        return usd

    def _session(self, w: Workload, at: float) -> _Session:
        actor = self.rng.choice(w.actors)
        key = (w.pool, actor)
        s = self._sessions.get(key)
        if s is None or s.requests >= self.rng.randint(25, 60) or at - s.last_at > 2 * 3600:
            project = w.project if w.pool == "agent-sdk" else f"/home/{actor.split('@')[0]}/src/webshop"
            slug = project.replace("/", "-").replace(".", "-").replace("_", "-")
            sid = self._uuid()
            sid = f"{sid[:8]}-{sid[8:12]}-{sid[12:16]}-{sid[16:20]}-{sid[20:]}"
            s = _Session(self.projects / slug / f"{sid}.jsonl", sid, actor, self.rng.choice(w.entrypoints))
            self._sessions[key] = s
        s.requests += 1
        s.last_at = at
        return s

    def _write_request(self, s: _Session, w: Workload, model: str, t: Tokens, at: float, batch: _Batch) -> None:
        cwd = w.project if w.pool == "agent-sdk" else f"/home/{s.actor.split('@')[0]}/src/webshop"
        sidechain = w.pool == "agent-sdk" and self.rng.random() < 0.3
        path = s.path
        if sidechain:  # a subagent's own file beside its session
            path = s.path.with_suffix("") / "subagents" / f"agent-{s.session_id[:8]}.jsonl"
        head = {"isSidechain": sidechain, "userType": "external", "cwd": cwd, "sessionId": s.session_id,
                "version": "2.0.31", "gitBranch": "main", "entrypoint": s.entrypoint}
        stamp = datetime.fromtimestamp(at - 1.5, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        user_uuid = self._uuid()
        lines = batch.lines[path]
        lines.append(json.dumps({"parentUuid": s.parent, **head, "type": "user",
                                 "message": {"role": "user", "content": "Run the next step of the plan."},
                                 "uuid": user_uuid, "timestamp": stamp}))
        msg_id, req_id = self._ids("msg_01", 22), self._ids("req_011C", 20)
        ts = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if self.rng.random() < 0.004:  # Claude Code records a failed call as a synthetic error message
            lines.append(json.dumps({
                "parentUuid": user_uuid, **head, "type": "assistant", "uuid": self._uuid(), "timestamp": ts,
                "isApiErrorMessage": True, "requestId": req_id,
                "message": {"model": model, "id": msg_id, "type": "message", "role": "assistant",
                            "content": [{"type": "text", "text": "API Error: 529 Overloaded"}],
                            "usage": _usage(Tokens(input=t.input))}}))
        parent = user_uuid
        # one line per content block; the first streamed copy carries a placeholder usage
        for i, (block, usage) in enumerate((
                ({"type": "thinking", "thinking": "Checking the failing test first.", "signature": "sig"},
                 Tokens(input=t.input, output=min(t.output, 12), cache_read=t.cache_read,
                        cache_write_5m=t.cache_write_5m, cache_write_1h=t.cache_write_1h)),
                ({"type": "text", "text": "Done: the step passed."}, t))):
            uuid = self._uuid()
            lines.append(json.dumps({
                "parentUuid": parent, **head,
                "message": {"model": model, "id": msg_id, "type": "message", "role": "assistant",
                            "content": [block], "stop_reason": None if i == 0 else "end_turn",
                            "stop_sequence": None, "usage": _usage(usage)},
                "requestId": req_id, "type": "assistant", "uuid": uuid, "timestamp": ts}))
            parent = uuid
        if not sidechain:
            s.parent = parent

    # ------------------------------------------------------------------ history and live spend

    def backfill(self, now: float, pools: tuple[PoolConfig, ...]) -> None:
        """Write about three weeks of history, sized so each pool starts at its ``start_used``."""
        from exporter.core.budget import hour_in_period, period_bounds

        now_dt = datetime.fromtimestamp(now, UTC)
        first_hour = (now_dt - timedelta(days=HISTORY_DAYS)).replace(minute=0, second=0, microsecond=0)
        batch = _Batch()
        for w in self.workloads:
            pool = next(p for p in pools if p.name == w.pool)
            start, end = period_bounds(pool.period, now_dt)
            hours: list[tuple[datetime, float]] = []
            h = first_hour
            while h < now_dt:
                span = min(1.0, (now - h.timestamp()) / 3600)
                hours.append((h, w.hour_weights[h.hour] * span * (0.6 + 0.8 * self.rng.random())))
                h += timedelta(hours=1)
            in_period = sum(wt for h, wt in hours if hour_in_period(h, start, end))
            # billed is list price x factor: aim the bill at start_used of the credit
            target = float(POOL_CREDIT[w.pool]) * w.start_used / float(w.bill_factor)
            scale = target / in_period if in_period else 0.0
            for h, wt in hours:
                self._spend(w, h.timestamp(), min(now, h.timestamp() + 3600), wt * scale, batch)
        self._flush(batch)

    def _spend(self, w: Workload, t0: float, t1: float, usd: float, batch: _Batch) -> None:
        """Requests worth about ``usd`` at list price, spread over ``[t0, t1)``."""
        usd += self._carry[w.pool]
        while usd > 0:
            at = t0 + self.rng.random() * max(0.001, t1 - t0)
            usd -= float(self._request(w, at, batch))
        self._carry[w.pool] = usd  # overshoot: taken off the next step

    def _flush(self, batch: _Batch) -> None:
        for path, lines in batch.lines.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")
        self.api.add_entries(batch.bill)
        for day, actor, model, t, cents in batch.claude_code:
            self.api.add_claude_code(day, actor, model, cents, input_tokens=t.input, output_tokens=t.output,
                                     cache_read_tokens=t.cache_read,
                                     cache_creation_tokens=t.cache_write_5m + t.cache_write_1h)

    def step(self, t0: float, t1: float) -> None:
        """The spend of real seconds ``[t0, t1)``: ``speed`` times as much simulated work."""
        batch = _Batch()
        for w in self.workloads:
            if w.pool in self.paused:
                continue
            self._spend(w, t0, t1, w.usd_per_hour * self.speed * (t1 - t0) / 3600, batch)
        self._flush(batch)


def _usage(t: Tokens) -> dict[str, Any]:
    return {"input_tokens": t.input, "cache_creation_input_tokens": t.cache_write_5m + t.cache_write_1h,
            "cache_read_input_tokens": t.cache_read, "output_tokens": t.output,
            "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0}, "service_tier": "standard",
            "cache_creation": {"ephemeral_1h_input_tokens": t.cache_write_1h,
                               "ephemeral_5m_input_tokens": t.cache_write_5m},
            "inference_geo": "", "speed": "standard"}


# --------------------------------------------------------------------------- running it


@dataclass
class Demo:
    """A running demo: its config for the exporter, the simulated API, and the workload thread."""

    config: Config
    api: SimulatedAdminApi
    org: DemoOrg
    workdir: Path
    breaker_url: str | None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _seen: dict[str, str] = field(default_factory=dict)  # pool -> the breaker's last answer

    def start(self) -> Demo:
        self._thread = threading.Thread(target=self._run, name="demo-organisation", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        last = time.time()
        while not self._stop.wait(TICK_SECONDS):
            now = time.time()
            self._check_breakers()
            try:
                self.org.step(last, now)
            except OSError as exc:  # the temporary folder went away: nothing more to simulate
                log.error("demo_stopped", error=str(exc))
                return
            last = now

    def _check_breakers(self) -> None:
        """The pipeline asks the exporter before each batch, as ``check --pool`` would: open pauses its
        work, closed resumes it, and an unknown answer (the exporter still starting) means ask again."""
        if self.breaker_url is None:
            return
        for w in self.org.workloads:
            if not w.breaker_aware:
                continue
            state = _breaker_state(f"{self.breaker_url}/breaker/{w.pool}")
            seen = self._seen.get(w.pool)
            self._seen[w.pool] = state
            paused = w.pool in self.org.paused
            if state == "open" and not paused:
                self.org.paused.add(w.pool)
                log.info(f"demo: the simulated {w.pool} pipeline found its breaker open and paused its work",
                         pool=w.pool, breaker=state)
            elif state == "closed" and paused:
                self.org.paused.discard(w.pool)
                log.info(f"demo: the {w.pool} pipeline found its breaker closed again and resumed", pool=w.pool,
                         breaker=state)
            elif state != seen and state not in ("open", "closed"):
                log.info(f"demo: the {w.pool} pipeline got no verdict from the breaker ({state}); it asks again "
                         "before its next batch", pool=w.pool, breaker=state)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.api.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _breaker_state(url: str) -> str:
    """"open", "closed", "unknown" (the exporter has no verdict yet) or "unreachable"."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            body = r.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except OSError:
        return "unreachable"  # not listening yet: carry on, as `check` exit 2 leaves it to the caller
    try:
        state = json.loads(body).get("state")
    except (ValueError, AttributeError):
        return "unknown"
    return state if state in ("open", "closed") else "unknown"


def demo_speed(env: dict[str, str] | None = None) -> float:
    env = dict(os.environ) if env is None else env
    text = env.get(SPEED_ENV, "").strip()
    if not text:
        return DEFAULT_SPEED
    try:
        speed = float(text)
    except ValueError:
        raise DemoError(f"{SPEED_ENV} must be a number, not {text!r}") from None
    if not 0 < speed <= 100_000:
        raise DemoError(f"{SPEED_ENV} must be between 0 and 100000")
    return speed


def start_demo(base: Config, *, clock: Callable[[], float] = time.time) -> Demo:
    """Start the simulated organisation and return the Config that points the exporter at it.

    ``base`` is the command-line config: only ``listen`` is taken from it; ``--config`` and
    ``--state-dir`` are refused, since the demo's state must start empty with its logs.
    """
    if base.origin != "built-in default":
        raise DemoError(f"the demo builds its own config; drop --config {base.origin}")
    if base.state_dir != Path(DEFAULT_STATE_DIR).expanduser():
        raise DemoError("the demo keeps its state in a temporary folder of its own; drop --state-dir")
    speed = demo_speed()
    api = SimulatedAdminApi(key=DEMO_KEY, clock=clock, organization_id="org_demo",
                            keep_requests=KEEP_REQUESTS).start()
    api.analytics_lag = timedelta(seconds=300 / speed)  # five simulated minutes
    log.info(f"demo mode: a simulated organisation served by {api.url}; the real Admin API is never contacted "
             "and no real logs are read", admin_api=api.url, speed=speed)
    workdir = Path(tempfile.mkdtemp(prefix="claude-budget-demo-"))
    key_file = workdir / "admin_key"
    key_file.write_text(DEMO_KEY + "\n", encoding="utf-8")
    key_file.chmod(0o600)
    now = clock()
    pools = _pools(datetime.fromtimestamp(now, UTC))
    org = DemoOrg(workdir / "claude", api, speed=speed)
    org.backfill(now, pools)
    config = replace(
        base,
        state_dir=workdir / "state",
        # the simulated bill of a day is final once the day is over: no settling hours, so the
        # demo shows yesterday's drift at any time of day
        admin_api=AdminApiConfig(key_file=key_file, base_url=api.url, poll_interval=max(2.0, 300.0 / speed),
                                 claude_code_report=True, settle_after=0.0),
        sources=(SourceConfig(name="claude-code", kind="claude_code", paths=(str(org.projects),)),),
        pools=pools,
        refresh_interval=2.0,
        origin=DEMO_ORIGIN,
    )
    host, port = parse_listen(config.listen)
    breaker_url = None
    if port:
        host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        breaker_url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    demo = Demo(config=config, api=api, org=org, workdir=workdir, breaker_url=breaker_url)
    log.info("demo: organisation ready", logs=str(org.projects), requests=org.requests,
             pools=[p.name for p in pools], near_exhaustion="agent-sdk")
    atexit.register(demo.stop)
    return demo.start()


# --------------------------------------------------------------------------- the hint on an empty machine


def _has_jsonl(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    for _dirpath, _dirs, files in os.walk(folder):
        if any(f.endswith(".jsonl") for f in files):
            return True
    return False


def nothing_to_read(config: Config) -> str | None:
    """The one plain line to log when the built-in default's sources (no config, or a config that
    names no sources, an empty file say) find no logs and no admin key can be read."""
    if config.origin != "built-in default" and config.sources != default_config().sources:
        return None  # sources named in a config: each path that does not exist is said on its own
    if any(org.read_key() for org in config.orgs):
        return None
    folders = [p for s in config.sources if s.kind == "claude_code" for p in s.paths]
    if any(_has_jsonl(Path(f).expanduser()) for f in folders):
        return None
    keys = "; ".join(p for org in config.orgs if (p := org.key_problem())) or f"no admin key in ${DEFAULT_KEY_ENV}"
    return (f"No Claude Code logs in {' or '.join(folders)} and {keys}, so there is "
            "nothing to show yet; run `claude-budget-exporter serve --demo` to see it work on a simulated "
            "organisation.")


def log_if_nothing_to_read(config: Config) -> None:
    line = nothing_to_read(config)
    if line is not None:
        log.warning(line, looked_in=[p for s in config.sources if s.kind == "claude_code" for p in s.paths])
