"""Synthetic Claude Code transcripts, with the truth an exact reader must report.

The generator writes what Claude Code writes (``<root>/projects/<slug>/<session>.jsonl`` and
``<root>/projects/<slug>/<session>/subagents/agent-<id>.jsonl``), including the awkward parts:
one line per content block with a streamed placeholder first, resumed sessions that copy
earlier lines verbatim, sidechains and subagents, 1-hour cache writes, long-context
requests, API error and ``<synthetic>`` lines, malformed lines, invalid UTF-8 and a
half-written last line.

While writing it sums the tokens of every unique request and prices them with its *own*
small price table, so the figures in :class:`Expected` are independent of the exporter's
pricing and parsing code. Lines are built with f-strings and written in large binary
chunks: a 500 MB corpus takes well under a minute.

Run ``python -m tests.corpus --help`` for the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------- prices

#: USD per million tokens: input, output, cache_read, cache_write_5m, cache_write_1h.
PRICES: dict[str, tuple[Decimal, ...]] = {
    "claude-sonnet-4-5": tuple(Decimal(x) for x in ("3", "15", "0.30", "3.75", "6")),
    "claude-opus-4-5": tuple(Decimal(x) for x in ("5", "25", "0.50", "6.25", "10")),
    "claude-haiku-4-5": tuple(Decimal(x) for x in ("1", "5", "0.10", "1.25", "2")),
}
#: Past LONG_CONTEXT_THRESHOLD total input tokens, *every* token of the request costs this.
LONG_CONTEXT_PRICES: dict[str, tuple[Decimal, ...]] = {
    "claude-sonnet-4-5": tuple(Decimal(x) for x in ("6", "22.5", "0.60", "7.50", "12")),
}
LONG_CONTEXT_THRESHOLD = 200_000
_MTOK = Decimal(1_000_000)

#: Model ids as they appear in transcripts, and the price family each belongs to.
MODELS: dict[str, str] = {
    "claude-sonnet-4-5-20250929": "claude-sonnet-4-5",
    "claude-opus-4-5-20251101": "claude-opus-4-5",
    "claude-haiku-4-5-20251001": "claude-haiku-4-5",
}
SONNET, OPUS, HAIKU = MODELS

ENTRYPOINTS = ("cli", "sdk-cli", "claude-vscode", "sdk-py")
_ENTRYPOINT_WEIGHTS = (55, 20, 15, 10)

#: Reasons a line is not counted, as keys of ``Expected.skipped``.
SKIP_REASONS = ("malformed_json", "invalid_utf8", "api_error", "synthetic", "partial_pending")

# Token columns of an aggregate row (after the request count).
TOKEN_FIELDS = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")


# ----------------------------------------------------------------------------- truth


@dataclass
class Agg:
    """Request count, token sums and USD cost of a set of unique requests."""

    requests: int = 0
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cost_usd: Decimal = Decimal(0)

    def add(self, other: Agg) -> None:
        self.requests += other.requests
        self.input += other.input
        self.output += other.output
        self.cache_read += other.cache_read
        self.cache_write_5m += other.cache_write_5m
        self.cache_write_1h += other.cache_write_1h
        self.cost_usd += other.cost_usd

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cost_usd"] = str(self.cost_usd)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Agg:
        return cls(**{**d, "cost_usd": Decimal(d["cost_usd"])})


def price_request(model: str, inp: int, out: int, cr: int, cw5: int, cw1h: int) -> Decimal:
    """USD of one request by the generator's own table (the long-context rule included)."""
    family = MODELS[model]
    table = PRICES[family]
    if family in LONG_CONTEXT_PRICES and inp + cr + cw5 + cw1h > LONG_CONTEXT_THRESHOLD:
        table = LONG_CONTEXT_PRICES[family]
    return (inp * table[0] + out * table[1] + cr * table[2] + cw5 * table[3] + cw1h * table[4]) / _MTOK


@dataclass(frozen=True)
class PendingLine:
    """A half-written last line: writing ``rest`` (newline included) completes it.

    ``counted`` is the usage a reader may already count from the request's earlier,
    complete copies (None when the pending line is its only copy); ``usage`` is the
    final usage once the line is complete.
    """

    path: str  # relative to the corpus root
    rest: str
    date: str
    model: str
    entrypoint: str
    usage: tuple[int, int, int, int, int]
    counted: tuple[int, int, int, int, int] | None


@dataclass
class Expected:
    """What an exact reader of the corpus must find.

    ``days[date][model]`` holds the unique requests of that UTC day and model, deduplicated
    on (message.id, requestId) keeping the largest token total. ``skipped`` counts the
    lines a reader must skip, by reason (``partial_pending`` is a last line without its
    newline: not counted until it is completed). ``long_context_requests`` counts requests
    past 200k total input tokens.
    """

    days: dict[str, dict[str, Agg]] = field(default_factory=dict)
    entrypoints: dict[str, Agg] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    files: int = 0
    bytes: int = 0
    lines: int = 0
    assistant_lines: int = 0
    duplicate_lines: int = 0
    long_context_requests: int = 0
    max_total_input: int = 0
    pending: list[PendingLine] = field(default_factory=list)

    # -- views
    def totals(self) -> Agg:
        out = Agg()
        for models in self.days.values():
            for agg in models.values():
                out.add(agg)
        return out

    def by_model(self) -> dict[str, Agg]:
        out: dict[str, Agg] = {}
        for models in self.days.values():
            for model, agg in models.items():
                out.setdefault(model, Agg()).add(agg)
        return out

    def day_costs(self) -> dict[str, Decimal]:
        return {day: sum((a.cost_usd for a in models.values()), Decimal(0))
                for day, models in sorted(self.days.items())}

    # -- combination
    def merge(self, other: Expected) -> None:
        """Add another run's truth (an append, a completed line) to this one."""
        for day, models in other.days.items():
            mine = self.days.setdefault(day, {})
            for model, agg in models.items():
                mine.setdefault(model, Agg()).add(agg)
        for ep, agg in other.entrypoints.items():
            self.entrypoints.setdefault(ep, Agg()).add(agg)
        for reason, n in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + n
        self.files += other.files
        self.bytes += other.bytes
        self.lines += other.lines
        self.assistant_lines += other.assistant_lines
        self.duplicate_lines += other.duplicate_lines
        self.long_context_requests += other.long_context_requests
        self.max_total_input = max(self.max_total_input, other.max_total_input)

    # -- serialisation
    def to_json(self) -> dict[str, Any]:
        total = self.totals()
        return {
            "days": {day: {m: a.to_json() for m, a in sorted(models.items())}
                     for day, models in sorted(self.days.items())},
            "by_model": {m: a.to_json() for m, a in sorted(self.by_model().items())},
            "entrypoints": {e: a.to_json() for e, a in sorted(self.entrypoints.items())},
            "totals": total.to_json(),
            "skipped": dict(self.skipped),
            "files": self.files,
            "bytes": self.bytes,
            "lines": self.lines,
            "assistant_lines": self.assistant_lines,
            "duplicate_lines": self.duplicate_lines,
            "long_context_requests": self.long_context_requests,
            "max_total_input": self.max_total_input,
            "pending": [dataclasses.asdict(p) for p in self.pending],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Expected:
        return cls(
            days={day: {m: Agg.from_json(a) for m, a in models.items()} for day, models in d["days"].items()},
            entrypoints={e: Agg.from_json(a) for e, a in d["entrypoints"].items()},
            skipped=dict(d["skipped"]),
            files=d["files"], bytes=d["bytes"], lines=d["lines"],
            assistant_lines=d["assistant_lines"], duplicate_lines=d["duplicate_lines"],
            long_context_requests=d["long_context_requests"], max_total_input=d["max_total_input"],
            pending=[PendingLine(**{**p, "usage": tuple(p["usage"]),
                                    "counted": None if p["counted"] is None else tuple(p["counted"])})
                     for p in d["pending"]],
        )


class _Truth:
    """Fast accumulator: plain int lists per (day, model), priced once at the end."""

    def __init__(self) -> None:
        # (day, model, long_context) -> [requests, input, output, cache_read, cw5m, cw1h]
        self.rows: dict[tuple[str, str, bool], list[int]] = defaultdict(lambda: [0] * 6)
        self.ep_rows: dict[tuple[str, str, bool], list[int]] = defaultdict(lambda: [0] * 6)
        self.exp = Expected()

    def request(self, day: str, model: str, ep: str, u: tuple[int, int, int, int, int], n: int = 1) -> None:
        """Count one unique request (``n=-1`` takes one back, e.g. a superseded placeholder)."""
        total_input = u[0] + u[2] + u[3] + u[4]
        lc = MODELS[model] in LONG_CONTEXT_PRICES and total_input > LONG_CONTEXT_THRESHOLD
        if lc:
            self.exp.long_context_requests += n
        if total_input > self.exp.max_total_input:
            self.exp.max_total_input = total_input
        for rows, key in ((self.rows, (day, model, lc)), (self.ep_rows, (ep, model, lc))):
            r = rows[key]
            r[0] += n
            r[1] += n * u[0]
            r[2] += n * u[1]
            r[3] += n * u[2]
            r[4] += n * u[3]
            r[5] += n * u[4]

    def finish(self) -> Expected:
        exp = self.exp
        for rows, target in ((self.rows, "days"), (self.ep_rows, "entrypoints")):
            for (key, model, lc), r in rows.items():
                family = MODELS[model]
                table = LONG_CONTEXT_PRICES[family] if lc else PRICES[family]
                cost = sum((n * p for n, p in zip(r[1:], table, strict=True)), Decimal(0)) / _MTOK
                agg = Agg(r[0], r[1], r[2], r[3], r[4], r[5], cost)
                if target == "days":
                    exp.days.setdefault(key, {}).setdefault(model, Agg()).add(agg)
                else:
                    exp.entrypoints.setdefault(key, Agg()).add(agg)
        self.rows.clear()
        self.ep_rows.clear()
        return exp


# ----------------------------------------------------------------------------- features


@dataclass(frozen=True)
class Features:
    """Which awkward parts of real transcripts the corpus contains (all on by default)."""

    content_blocks: bool = True      # one line per content block, same message.id + requestId
    placeholders: bool = True        # ...whose first copy is a streamed placeholder (fewer output tokens)
    resumed_sessions: bool = True    # new session files that copy earlier lines verbatim
    subagents: bool = True           # <session>/subagents/agent-<id>.jsonl files (isSidechain)
    sidechains: bool = True          # isSidechain lines inside main session files
    cache_1h: bool = True            # ephemeral_1h_input_tokens writes
    long_context: bool = True        # sonnet-4-5 requests past 200k total input tokens
    api_errors: bool = True          # isApiErrorMessage: true lines (carry tokens; must be skipped)
    synthetic: bool = True           # model "<synthetic>" lines (carry tokens; must be skipped)
    malformed: bool = True           # lines that are not JSON
    invalid_utf8: bool = True        # assistant lines with bytes that are not UTF-8
    partial_last_line: bool = True   # a few files end in half a line, no newline

    @classmethod
    def none(cls) -> Features:
        return cls(**{f.name: False for f in dataclasses.fields(cls)})


# ----------------------------------------------------------------------------- text & ids

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_WORDS = (
    "the of and to in is for that with on as this be are by it from at or an function return "
    "value file test error config import class def self async await const let var if else "
    "while try except raise pass None True False string number object array index length "
    "request response token cache model usage cost budget pool credit exporter metric label "
    "path line offset state session project branch commit diff patch build run check tail "
    "parse decimal timestamp window period reset breaker alert refresh ingest daily report "
    "café naïve résumé über Straße 東京 データ ✓ → — …"
).split()
_PUNCT = (". ", ", ", "; ", ": ", " (", ") ", " = ", " -> ", "\\n", "\\n\\n", " /", "_", " + ", " `", "` ")


def _text_pool(rng: random.Random, size: int) -> str:
    """A JSON-safe body of text (no quotes, escapes only as whole ``\\n``) to slice from."""
    parts: list[str] = []
    n = 0
    words, punct = _WORDS, _PUNCT
    while n < size:
        w = rng.choice(words)
        p = rng.choice(punct) if rng.random() < 0.18 else " "
        parts.append(w)
        parts.append(p)
        n += len(w) + len(p)
    return "".join(parts)


class _Gen:
    """Shared random helpers; every value comes from one seeded ``random.Random``."""

    def __init__(self, seed: int, text_size: int = 1 << 20) -> None:
        self.rng = random.Random(seed)
        self.pool = _text_pool(self.rng, text_size)
        self.pool_len = len(self.pool) - 1

    def text(self, n: int) -> str:
        if n <= 0:
            return ""
        n = min(n, self.pool_len // 2)
        o = int(self.rng.random() * (self.pool_len - n))
        s = self.pool[o:o + n]
        if s.endswith("\\"):
            s = s[:-1]
        return s

    def uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def b62(self, k: int) -> str:
        return "".join(self.rng.choices(_ALNUM, k=k))

    def msg_id(self) -> str:
        return "msg_01" + self.b62(22)

    def req_id(self) -> str:
        return "req_011C" + self.b62(20)

    def tool_id(self) -> str:
        return "toolu_01" + self.b62(22)


_DAY_MS = 86_400_000
_day_cache: dict[int, str] = {}


def _day(ms: int) -> str:
    d = ms // _DAY_MS
    s = _day_cache.get(d)
    if s is None:
        s = _day_cache[d] = time.strftime("%Y-%m-%d", time.gmtime(d * 86400))
    return s


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


# ----------------------------------------------------------------------------- line builders


def _usage_final(u: tuple[int, int, int, int, int]) -> str:
    inp, out, cr, cw5, cw1h = u
    return (f'{{"input_tokens":{inp},"cache_creation_input_tokens":{cw5 + cw1h},"cache_read_input_tokens":{cr},'
            f'"output_tokens":{out},"server_tool_use":{{"web_search_requests":0,"web_fetch_requests":0}},'
            f'"service_tier":"standard","cache_creation":{{"ephemeral_1h_input_tokens":{cw1h},'
            f'"ephemeral_5m_input_tokens":{cw5}}},"inference_geo":"","iterations":[],"speed":"standard"}}')


def _usage_stream(u: tuple[int, int, int, int, int]) -> str:
    """The shape of a streamed copy (older field order, no server_tool_use)."""
    inp, out, cr, cw5, cw1h = u
    return (f'{{"input_tokens":{inp},"cache_creation_input_tokens":{cw5 + cw1h},"cache_read_input_tokens":{cr},'
            f'"cache_creation":{{"ephemeral_5m_input_tokens":{cw5},"ephemeral_1h_input_tokens":{cw1h}}},'
            f'"output_tokens":{out},"service_tier":"standard","inference_geo":"not_available"}}')


@dataclass
class _Session:
    """What every line of one file shares."""

    session_id: str
    slug: str
    cwd: str
    version: str
    branch: str
    entrypoint: str
    model: str
    sidechain: bool = False
    agent_id: str = ""

    def head(self, sidechain: bool) -> str:
        agent = f'"agentId":"{self.agent_id}",' if self.agent_id else ""
        return (f'"isSidechain":{"true" if sidechain else "false"},"userType":"external","cwd":"{self.cwd}",'
                f'"sessionId":"{self.session_id}","version":"{self.version}","gitBranch":"{self.branch}",'
                f'{agent}"entrypoint":"{self.entrypoint}"')


class _Writer:
    """Draws token counts and builds the text of lines."""

    def __init__(self, g: _Gen, feat: Features, sizes: tuple[int, int]) -> None:
        self.g = g
        self.f = feat
        self.text_mean, self.tool_mean = sizes

    # -- token draws
    def draw_usage(self, model: str, allow_long: bool) -> tuple[int, int, int, int, int]:
        r = self.g.rng.random
        x = r()
        inp = int(1 + r() * 9) if x < 0.7 else int(10 + r() * 3000) if x < 0.95 else int(3000 + r() * 27000)
        cr = 0 if r() < 0.12 else int(5000 + r() * 140000)
        x = r()
        cw = 0 if x < 0.2 else int(100 + r() * 4900) if x < 0.8 else int(5000 + r() * 35000)
        cw1h = 0
        if self.f.cache_1h and cw:
            x = r()
            if x < 0.25:
                cw1h = cw
            elif x < 0.3:
                cw1h = int(cw * r())
        cw5 = cw - cw1h
        x = r()
        out = int(2 + r() * 198) if x < 0.3 else int(200 + r() * 1800) if x < 0.9 else int(2000 + r() * 14000)
        if model == HAIKU:
            out = max(2, out // 4)
        total_in = inp + cr + cw5 + cw1h
        if allow_long and model == SONNET and self.f.long_context and r() < 0.04:
            # a long conversation on the 1M window: past the cliff by a little or a lot
            cr = int(LONG_CONTEXT_THRESHOLD + 1 - inp - cw5 - cw1h + r() * 400_000)
            if r() < 0.1:
                cr = LONG_CONTEXT_THRESHOLD + 1 - inp - cw5 - cw1h  # exactly one past the cliff
        elif total_in > 190_000:
            cr = max(0, 190_000 - inp - cw5 - cw1h)
        return (inp, out, cr, cw5, cw1h)

    # -- lines
    def user_line(self, s: _Session, head: str, uuid: str, parent: str, ts: str, tool_id: str | None) -> str:
        g = self.g
        if tool_id is None:
            body = g.text(int(self.tool_mean * (0.05 + g.rng.random() * 0.3)))
            return (f'{{"parentUuid":{parent},{head},"type":"user","message":{{"role":"user","content":"{body}"}},'
                    f'"uuid":"{uuid}","timestamp":"{ts}"}}\n')
        n = int(self.tool_mean * (0.3 + g.rng.random() * 1.4)) // 2
        body = g.text(n)
        return (f'{{"parentUuid":{parent},{head},"type":"user","message":{{"role":"user","content":[{{'
                f'"tool_use_id":"{tool_id}","type":"tool_result","content":"{body}","is_error":false}}]}},'
                f'"uuid":"{uuid}","timestamp":"{ts}","toolUseResult":{{"stdout":"{g.text(n)}","stderr":"",'
                f'"interrupted":false,"isImage":false}}}}\n')

    def block(self, kind: int, tool_id: str) -> str:
        g = self.g
        n = int(self.text_mean * (0.3 + g.rng.random() * 1.4))
        if kind == 0:
            return f'{{"type":"thinking","thinking":"{g.text(n)}","signature":"{g.b62(120)}"}}'
        if kind == 1:
            return f'{{"type":"text","text":"{g.text(n)}"}}'
        return (f'{{"type":"tool_use","id":"{tool_id}","name":"Bash","input":{{"command":"{g.text(min(n, 200))}",'
                f'"description":"{g.text(40)}"}}}}')

    def assistant_line(self, head: str, uuid: str, parent: str, ts: str, msg_id: str, req_id: str, model: str,
                       content: str, usage: str, extra: str = "") -> str:
        return (f'{{"parentUuid":{parent},{head},"message":{{"model":"{model}","id":"{msg_id}","type":"message",'
                f'"role":"assistant","content":[{content}],"stop_reason":null,"stop_sequence":null,"usage":{usage}}},'
                f'"requestId":"{req_id}","type":"assistant","uuid":"{uuid}","timestamp":"{ts}"{extra}}}\n')


def _slug_of(cwd: str) -> str:
    return cwd.replace("/", "-").replace(".", "-").replace("_", "-")


# ----------------------------------------------------------------------------- the generator


@dataclass
class _FileOut:
    """One file being written: str parts, with raw byte chunks where a line is not UTF-8."""

    chunks: list[bytes] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    clean: list[str] | None = None  # lines a resumed session may copy (main sessions only)

    def flush_parts(self) -> None:
        if self.parts:
            self.chunks.append("".join(self.parts).encode("utf-8"))
            self.parts.clear()

    def data(self) -> bytes:
        self.flush_parts()
        return b"".join(self.chunks)


_ODD_REASON = {"malformed": "malformed_json", "invalid_utf8": "invalid_utf8",
               "api_error": "api_error", "synthetic": "synthetic"}


class _Builder:
    """Emits requests into a file, keeping the truth in step with every line written."""

    def __init__(self, g: _Gen, feat: Features, sizes: tuple[int, int], end_ms: int) -> None:
        self.g = g
        self.rng = g.rng
        self.feat = feat
        self.truth = _Truth()
        self.exp = self.truth.exp
        self.w = _Writer(g, feat, sizes)
        self.end_ms = end_ms
        self.copies_weights = (45, 30, 18, 7) if feat.content_blocks else (1, 0, 0, 0)

    def emit(self, out: _FileOut, line: str, clean: bool = True) -> None:
        out.parts.append(line)
        self.exp.lines += 1
        if out.clean is not None and clean and len(out.clean) < 60:
            out.clean.append(line)

    def oddity(self, out: _FileOut, odd: str, head: str, parent: str, t: int, model: str) -> None:
        """A line a reader must skip; it carries real-looking tokens so counting it shows."""
        g, w, exp = self.g, self.w, self.exp
        u = w.draw_usage(model, allow_long=False)
        ts = _iso(t)
        if odd == "malformed":
            full = w.assistant_line(head, g.uuid(), parent, ts, g.msg_id(), g.req_id(), model,
                                    w.block(1, ""), _usage_final(u))
            cut = full[: int(len(full) * (0.2 + self.rng.random() * 0.6))].rstrip("\\")
            self.emit(out, cut + "\n", clean=False)
        elif odd == "invalid_utf8":
            line = w.assistant_line(head, g.uuid(), parent, ts, g.msg_id(), g.req_id(), model,
                                    '{"type":"text","text":"@@BAD@@"}', _usage_final(u))
            a, b = line.split("@@BAD@@")
            out.flush_parts()
            bad = self.rng.choice((b"\xff\xfe", b"\xc3(", b"\xe2\x82", b"\xed\xa0\x80", b"\x80abc"))
            out.chunks.append(a.encode() + b"caf" + bad + b" output" + b.encode())
            exp.lines += 1
            exp.assistant_lines += 1
        elif odd == "api_error":
            self.emit(out, w.assistant_line(
                head, g.uuid(), parent, ts, g.msg_id(), g.req_id(), model,
                '{"type":"text","text":"API Error: 529 {\\"type\\":\\"error\\",\\"error\\":'
                '{\\"type\\":\\"overloaded_error\\",\\"message\\":\\"Overloaded\\"}}"}',
                _usage_final(u), ',"isApiErrorMessage":true'), clean=False)
            exp.assistant_lines += 1
        else:
            self.emit(out, w.assistant_line(head, g.uuid(), parent, ts, g.uuid(), g.req_id(), "<synthetic>",
                                            '{"type":"text","text":"No response requested."}',
                                            _usage_final(u)), clean=False)
            exp.assistant_lines += 1
        exp.skipped[_ODD_REASON[odd]] += 1

    def request(self, out: _FileOut, s: _Session, head: str, parent: str, t: int, model: str,
                first: bool, rel_path: str | None, allow_long: bool = True) -> tuple[str, int]:
        """A user turn and the assistant turn that answers it; returns (last uuid, end time).

        With ``rel_path`` set, the last line is left half-written (no newline).
        """
        g, w, rng, exp = self.g, self.w, self.rng, self.exp
        uid = g.uuid()
        tool_id = g.tool_id()
        self.emit(out, w.user_line(s, head, uid, parent, _iso(t), None if first else tool_id))
        parent = f'"{uid}"'

        u = w.draw_usage(model, allow_long=allow_long)
        msg_id, req_id = g.msg_id(), g.req_id()
        k = rng.choices((1, 2, 3, 4), self.copies_weights)[0]
        ms, step = t + 900, 300
        if ms // _DAY_MS != (ms + 4 * step) // _DAY_MS or ms // _DAY_MS != t // _DAY_MS:
            ms, step = t, 0  # keep every copy of a request on the same UTC day
        day = _day(ms)
        final_u = _usage_final(u)
        best: tuple[int, int, int, int, int] | None = None
        for j in range(k):
            if j == 0 and k > 1 and self.feat.placeholders:
                cu = (u[0], max(1, min(u[1] - 1, int(1 + rng.random() * 12))), u[2], u[3], u[4])
                usage = _usage_stream(cu)
            else:
                cu, usage = u, final_u
            bkind = 2 if j == k - 1 and k > 1 else rng.randrange(2)
            auid = g.uuid()
            line = w.assistant_line(head, auid, parent, _iso(ms + j * step), msg_id, req_id, model,
                                    w.block(bkind, tool_id), usage)
            parent = f'"{auid}"'
            exp.assistant_lines += 1
            if j:
                exp.duplicate_lines += 1
            if rel_path is not None and j == k - 1:
                cut = int(len(line) * (0.3 + rng.random() * 0.5))
                out.parts.append(line[:cut])
                exp.lines += 1
                exp.skipped["partial_pending"] += 1
                exp.pending.append(PendingLine(rel_path, line[cut:], day, model, s.entrypoint, u, best))
                if best is not None:
                    self.truth.request(day, model, s.entrypoint, best)
                break
            self.emit(out, line)
            if best is None or sum(cu) > sum(best):
                best = cu
        else:
            self.truth.request(day, model, s.entrypoint, u)
        return parent, ms + k * step

    def session_body(self, out: _FileOut, s: _Session, n_req: int, t: int, step_ms: int,
                     odd_first: list[str], rel_partial: str | None, allow_long: bool = True,
                     first_is_prompt: bool = True, parent: str = "null") -> str:
        rng, feat = self.rng, self.feat
        head_main = s.head(s.sidechain)
        head_side = s.head(True)
        limit = self.end_ms - 5000
        for ri in range(n_req):
            t += int(step_ms * (0.2 + rng.random() * 1.6))
            if t >= limit:
                t = limit - int(rng.random() * 1000)
            model = s.model if rng.random() < 0.85 else HAIKU
            side = s.sidechain or (feat.sidechains and rng.random() < 0.05)
            head = head_side if side else head_main
            if ri == 0 and odd_first:
                odd = odd_first
            else:
                odd = []
                x = rng.random()
                if x < 0.0008:
                    odd = ["malformed"] if feat.malformed else []
                elif x < 0.0013:
                    odd = ["invalid_utf8"] if feat.invalid_utf8 else []
                elif x < 0.0033:
                    odd = ["api_error"] if feat.api_errors else []
                elif x < 0.0043:
                    odd = ["synthetic"] if feat.synthetic else []
            for o in odd:
                self.oddity(out, o, head, parent, t, model)
            partial = rel_partial if ri == n_req - 1 else None
            parent, t = self.request(out, s, head, parent, t, model, first_is_prompt and ri == 0,
                                     partial, allow_long)
        return parent


def _text_sizes(size_mb: float | None, requests: int) -> tuple[int, int]:
    """Mean text lengths of an assistant block and of a tool result, for a target size."""
    text_mean, tool_mean = 500, 1800  # about 5.2 KB per request
    if size_mb and requests:
        per_request = size_mb * 1_048_576 / requests
        overhead = 2480  # envelope bytes per request at zero text (ids, usage, duplicates)
        scale = max(0.01, (per_request - overhead) / (5180 - overhead))
        text_mean, tool_mean = max(1, int(text_mean * scale)), max(1, int(tool_mean * scale))
    return text_mean, tool_mean


def _to_utc_ms(end: datetime | None) -> int:
    end = end or datetime.now(UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return int(end.timestamp() * 1000)


def generate(root: Path, *, files: int, requests: int, seed: int, days: int = 30,
             end: datetime | None = None, size_mb: float | None = None,
             features: Features | None = None, **overrides: bool) -> Expected:
    """Write a corpus under ``root/projects`` and return its truth.

    ``files`` files (main sessions, resumed sessions and subagent files) hold ``requests``
    unique requests with timestamps in the ``days`` days before ``end`` (default: now).
    ``size_mb`` scales the text in the lines to land near that total size. Features are
    switched with ``features=Features(...)`` or keyword overrides (``long_context=False``).
    """
    feat = dataclasses.replace(features or Features(), **overrides)
    if files < 1 or requests < 0 or days < 1:
        raise ValueError("files >= 1, requests >= 0 and days >= 1 are required")
    end_ms = _to_utc_ms(end)
    start_ms = end_ms - days * _DAY_MS
    root = Path(root)
    projects = root / "projects"

    g = _Gen(seed)
    rng = g.rng
    b = _Builder(g, feat, _text_sizes(size_mb, requests), end_ms)
    exp = b.exp

    # ---- plan: which file is what, and how many requests each holds
    n_sub = int(files * 0.25) if feat.subagents and files >= 4 else 0
    n_main = files - n_sub
    n_resumed = int(n_main * 0.12) if feat.resumed_sessions and n_main >= 3 else 0
    n_projects = max(1, files // 25)
    project_cwds = [f"/home/dev{i % 7}/src/{rng.choice(_WORDS[20:60])}-{i}" for i in range(n_projects)]
    weights = [min(rng.paretovariate(1.3), 60.0) for _ in range(files)]
    wsum = sum(weights)
    counts = [int(requests * x / wsum) for x in weights]
    for i in range(requests - sum(counts)):
        counts[i % files] += 1
    if requests >= files:  # every file gets at least one request when there are enough
        for i in range(files):
            if counts[i] == 0:
                j = max(range(files), key=counts.__getitem__)
                counts[j] -= 1
                counts[i] = 1

    kinds = ["main"] * (n_main - n_resumed) + ["resumed"] * n_resumed
    rng.shuffle(kinds)
    if kinds and kinds[0] == "resumed":  # the first file has nothing to resume from
        k = kinds.index("main")
        kinds[0], kinds[k] = kinds[k], kinds[0]
    kinds += ["sub"] * n_sub

    # so that even a small corpus has one of each oddity switched on, the first file gets one
    forced = [o for o, on in (("malformed", feat.malformed), ("invalid_utf8", feat.invalid_utf8),
                              ("api_error", feat.api_errors), ("synthetic", feat.synthetic)) if on]
    n_partial = min(max(1, files // 500), 8) if feat.partial_last_line else 0
    with_requests = [i for i in range(n_main) if counts[i] > 0]
    partial_files = set(rng.sample(with_requests, min(n_partial, len(with_requests))))

    sessions: list[_Session] = []
    recent: list[list[str]] = []  # clean lines of recent main sessions, for resumes

    for fi, kind in enumerate(kinds):
        n_req = counts[fi]
        if kind == "sub":
            parent = sessions[rng.randrange(len(sessions))]
            s = _Session(parent.session_id, parent.slug, parent.cwd, parent.version, parent.branch,
                         parent.entrypoint, HAIKU if rng.random() < 0.4 else SONNET, sidechain=True,
                         agent_id=f"a{rng.getrandbits(28):07x}")
            path = projects / s.slug / s.session_id / "subagents" / f"agent-{s.agent_id}.jsonl"
        else:
            cwd = rng.choice(project_cwds)
            x = rng.random()
            model = SONNET if x < 0.55 else OPUS if x < 0.9 else HAIKU
            s = _Session(g.uuid(), _slug_of(cwd), cwd, f"2.0.{rng.randint(10, 60)}",
                         rng.choice(("main", "main", "dev", "feature/budget", "fix/tail")),
                         rng.choices(ENTRYPOINTS, _ENTRYPOINT_WEIGHTS)[0], model)
            sessions.append(s)
            path = projects / s.slug / f"{s.session_id}.jsonl"
        rel = path.relative_to(root).as_posix()

        out = _FileOut(clean=[] if kind != "sub" else None)
        # session time line: starts anywhere in the window, a request every few seconds to minutes
        step_ms = int(2_000 + rng.random() * 60_000)
        window = end_ms - start_ms - 10_000
        span = max(1, n_req) * step_ms * 2
        if span > window:
            step_ms = max(1, window // (2 * max(1, n_req)))
            span = max(1, n_req) * step_ms * 2
        t = start_ms + int(rng.random() * max(1, window - span))

        if kind == "resumed" and recent:
            src = rng.choice(recent)
            out.parts.append(f'{{"type":"summary","summary":"{g.text(40)}","leafUuid":"{g.uuid()}"}}\n')
            exp.lines += 1
            for line in src[: rng.randint(1, len(src))]:  # copied verbatim, never counted twice
                out.parts.append(line)
                exp.lines += 1
                if '"type":"assistant"' in line:
                    exp.assistant_lines += 1
                    exp.duplicate_lines += 1
        if kind != "sub" and rng.random() < 0.3:
            out.parts.append(f'{{"type":"file-history-snapshot","messageId":"{g.uuid()}","snapshot":{{'
                             f'"messageId":"{g.uuid()}","trackedFileBackups":{{}},"timestamp":"{_iso(t)}"}},'
                             f'"isSnapshotUpdate":false}}\n')
            exp.lines += 1

        last = b.session_body(out, s, n_req, t, step_ms, forced if fi == 0 else [],
                              rel if fi in partial_files else None)
        if kind != "sub" and fi not in partial_files and rng.random() < 0.15:
            b.emit(out, f'{{"type":"summary","summary":"{g.text(50)}","leafUuid":{last}}}\n', clean=False)

        data = out.data()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        exp.files += 1
        exp.bytes += len(data)
        if out.clean:
            recent.append(out.clean)
            if len(recent) > 24:
                recent.pop(0)
    return b.truth.finish()


def session_files(root: Path) -> list[Path]:
    """Every transcript under ``root/projects``, in a stable order."""
    return sorted(Path(root, "projects").rglob("*.jsonl"))


def append(root: Path, *, size_mb: float, seed: int, at: datetime | None = None, files: int = 20,
           features: Features | None = None, **overrides: bool) -> Expected:
    """Append about ``size_mb`` of new turns to existing main session files, as live sessions do.

    Files that end in a half-written line are left alone (complete them with
    :func:`complete_pending`). New requests carry timestamps in the minute before ``at``
    (default: now). Returns the truth of what was added; merge it into the corpus's own.
    By default no long-context requests and no oddities are added.
    """
    feat = dataclasses.replace(
        features or Features(long_context=False, malformed=False, invalid_utf8=False, api_errors=False,
                             synthetic=False, partial_last_line=False, resumed_sessions=False,
                             subagents=False),
        **overrides)
    root = Path(root)
    at_ms = _to_utc_ms(at)
    g = _Gen(seed ^ 0x5EED, text_size=1 << 18)
    rng = g.rng
    sizes = _text_sizes(None, 0)
    per_request = 5180
    n_req = max(1, int(size_mb * 1_048_576 / per_request))
    b = _Builder(g, feat, sizes, at_ms + 10_000)
    candidates = []
    for p in session_files(root):
        if p.parent.name == "subagents":
            continue
        with open(p, "rb") as f:
            f.seek(0, 2)
            if f.tell() == 0:
                continue
            f.seek(-1, 2)
            if f.read(1) == b"\n":
                candidates.append(p)
    if not candidates:
        raise ValueError(f"no complete session file under {root}/projects to append to")
    chosen = rng.sample(candidates, min(files, len(candidates)))
    share = [n_req // len(chosen) + (1 if i < n_req % len(chosen) else 0) for i in range(len(chosen))]
    for p, n in zip(chosen, share, strict=True):
        if n == 0:
            continue
        x = rng.random()
        model = SONNET if x < 0.55 else OPUS if x < 0.9 else HAIKU
        cwd = "/" + p.parent.name.lstrip("-").replace("-", "/")
        s = _Session(p.stem, p.parent.name, cwd, "2.0.61", "main",
                     rng.choices(ENTRYPOINTS, _ENTRYPOINT_WEIGHTS)[0], model)
        out = _FileOut()
        t = at_ms - 60_000 - int(rng.random() * 5_000)
        b.session_body(out, s, n, t, max(1, 50_000 // n), [], None, first_is_prompt=False)
        data = out.data()
        with open(p, "ab") as f:
            f.write(data)
        b.exp.bytes += len(data)
    return b.truth.finish()


def complete_pending(root: Path, expected: Expected) -> Expected:
    """Finish the half-written last lines: the truth of what that adds (merge it yourself).

    ``expected.pending`` is emptied: the lines are no longer pending.
    """
    truth = _Truth()
    for p in expected.pending:
        with open(Path(root, p.path), "ab") as f:
            f.write(p.rest.encode("utf-8"))
        if p.counted is not None:
            truth.request(p.date, p.model, p.entrypoint, p.counted, n=-1)
        truth.request(p.date, p.model, p.entrypoint, p.usage)
        truth.exp.skipped["partial_pending"] -= 1
    expected.pending = []
    return truth.finish()


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.corpus",
        description="Write a synthetic Claude Code transcript corpus and print its expected totals as JSON.")
    ap.add_argument("--out", type=Path, required=True, help="corpus root (transcripts go under OUT/projects)")
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--requests", type=int, default=12_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--end", help="ISO-8601 end of the time window (default: now)")
    ap.add_argument("--size-mb", type=float, help="scale line sizes to reach about this many MB")
    ap.add_argument("--expected", type=Path, help="write the expected totals here instead of stdout")
    for f in dataclasses.fields(Features):
        ap.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_false",
                        help=f"leave out: {f.name.replace('_', ' ')}")
    args = ap.parse_args(argv)
    end = datetime.fromisoformat(args.end.replace("Z", "+00:00")) if args.end else None
    feat = Features(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Features)})
    t0 = time.perf_counter()
    exp = generate(args.out, files=args.files, requests=args.requests, seed=args.seed, days=args.days,
                   end=end, size_mb=args.size_mb, features=feat)
    took = time.perf_counter() - t0
    text = json.dumps(exp.to_json(), indent=1)
    if args.expected:
        args.expected.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    print(f"wrote {exp.files} files, {exp.bytes / 1_048_576:.1f} MB, {exp.lines} lines in {took:.1f}s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
