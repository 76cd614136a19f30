"""``claude-budget-exporter statusline`` fed what Claude Code feeds it, and worse: the record it
appends, the line it prints, and exit 0 every time."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from exporter import statusline
from exporter.config.model import DEFAULT_STATE_DIR
from exporter.logs.ratelimits import parse_line
from tests.conftest import ROOT, clean_env

NOW = 1_795_168_800.0  # 2026-11-20 10:00:00 UTC
# Claude Code's statusline JSON as its documentation shows it, with the rate_limits of a Max plan
DOC_SAMPLE = {
    "hook_event_name": "Status",
    "session_id": "abc123",
    "transcript_path": "/home/user/.claude/projects/p/abc123.jsonl",
    "cwd": "/home/user/project",
    "model": {"id": "claude-opus-4-1", "display_name": "Opus"},
    "workspace": {"current_dir": "/home/user/project", "project_dir": "/home/user/project"},
    "version": "1.0.80",
    "output_style": {"name": "default"},
    "cost": {"total_cost_usd": 0.01234, "total_duration_ms": 45000, "total_api_duration_ms": 2300,
             "total_lines_added": 156, "total_lines_removed": 23},
    "context_window": {"total_input_tokens": 15234, "total_output_tokens": 4521, "context_window_size": 200000,
                       "used_percentage": 42.5, "remaining_percentage": 57.5,
                       "current_usage": {"input_tokens": 8500, "output_tokens": 1200,
                                         "cache_creation_input_tokens": 5000, "cache_read_input_tokens": 2000}},
    "exceeds_200k_tokens": False,
    "rate_limits": {"five_hour": {"used_percentage": 23.5, "resets_at": NOW + 2 * 3600 + 13 * 60},
                    "seven_day": {"used_percentage": 41.2, "resets_at": NOW + 3 * 86400 + 4 * 3600}},
}
STAMP = "2026-11-20T10:00:00.000Z"


def without(*windows: str) -> dict:
    sample = copy.deepcopy(DOC_SAMPLE)
    for w in windows:
        del sample["rate_limits"][w]
    return sample


def call(payload: bytes | str, tmp: Path, *args: str, now: float = NOW) -> tuple[str, list[dict]]:
    out = tmp / "statusline.jsonl"
    ns = statusline.argparse.Namespace(out=str(out), state_dir=None, url=None, pool=None, timeout=0.3,
                                       no_record=False)
    for a in args:
        key, _, value = a.partition("=")
        setattr(ns, key, value)
    buf = io.StringIO()
    real = sys.stdout
    sys.stdout = buf
    try:
        assert statusline.run(ns, stdin=io.BytesIO(payload.encode() if isinstance(payload, str) else payload),
                              now=now) == 0
    finally:
        sys.stdout = real
    records = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    return buf.getvalue(), records


# --------------------------------------------------------------------------- the documented samples


def test_the_documented_sample_is_recorded_and_shown(tmp_path: Path):
    printed, records = call(json.dumps(DOC_SAMPLE), tmp_path)
    assert printed == "Opus | 5h 24% resets 2h13m | 7d 41% resets 3d4h | session $0.01\n"
    assert records == [{
        "type": "statusline", "timestamp": STAMP, "session_id": "abc123", "model": "claude-opus-4-1",
        "model_name": "Opus", "cost_usd": 0.01234,
        "rate_limits": {"five_hour": {"used_percentage": 23.5, "resets_at": NOW + 7980},
                        "seven_day": {"used_percentage": 41.2, "resets_at": NOW + 273600}}}]
    # what a rate_limits source reads from it
    got = parse_line("max", (tmp_path / "statusline.jsonl").read_bytes().strip(), when=0, now=NOW)
    assert [(r.window, str(r.used), r.resets_at, r.reported_at) for r in got] == [
        ("five_hour", "0.235", NOW + 7980, NOW), ("seven_day", "0.412", NOW + 273600, NOW)]


@pytest.mark.parametrize(("missing", "shown"), [
    (("five_hour",), "Opus | 7d 41% resets 3d4h | session $0.01"),
    (("seven_day",), "Opus | 5h 24% resets 2h13m | session $0.01"),
    (("five_hour", "seven_day"), "Opus | session $0.01"),
])
def test_each_window_absent_in_turn(tmp_path: Path, missing, shown):
    printed, (record,) = call(json.dumps(without(*missing)), tmp_path)
    assert printed == shown + "\n"
    assert sorted(record.get("rate_limits", {})) == sorted({"five_hour", "seven_day"} - set(missing))


def test_without_rate_limits_before_the_first_response(tmp_path: Path):
    sample = copy.deepcopy(DOC_SAMPLE)
    del sample["rate_limits"]
    printed, (record,) = call(json.dumps(sample), tmp_path)
    assert printed == "Opus | session $0.01\n"
    assert "rate_limits" not in record and record["session_id"] == "abc123"
    assert parse_line("max", json.dumps(record).encode(), when=0, now=NOW) == "ignored"


def test_a_window_past_its_reset_and_a_full_one(tmp_path: Path):
    sample = copy.deepcopy(DOC_SAMPLE)
    sample["rate_limits"]["five_hour"] = {"used_percentage": 100, "resets_at": NOW - 5}
    sample["rate_limits"]["seven_day_opus"] = {"used_percentage": 80.4, "resets_at": NOW + 40 * 60}
    printed, _ = call(json.dumps(sample), tmp_path)
    assert printed == "Opus | 5h 100% reset | 7d 41% resets 3d4h | 7d opus 80% resets 40m | session $0.01\n"


# --------------------------------------------------------------------------- garbage


GARBAGE = [
    b"", b"   ", b"not json", b"[1, 2, 3]", b'"a string"', b"null", b"42", b"\xff\xfe\x00garbage",
    b'{"unterminated": ', b"[" * 100_000 + b"]" * 100_000, b'{"a": "' + b"x" * (2 << 20) + b'"}',
]


@pytest.mark.parametrize("payload", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_on_stdin_prints_the_plain_line_and_records_nothing(tmp_path: Path, payload):
    printed, records = call(payload, tmp_path)
    assert printed == statusline.FALLBACK + "\n"
    assert records == []


@pytest.mark.parametrize("sample", [
    {"model": "Opus", "cost": 3, "rate_limits": []},
    {"model": {"id": 5}, "cost": {"total_cost_usd": "a lot"}, "rate_limits": {"five_hour": "97%"}},
    {"rate_limits": {"five_hour": {"used_percentage": "97", "resets_at": "soon"},
                     "seven_day": {"used_percentage": float("nan")}}},
    {"session_id": "s" * 5000, "rate_limits": {"five_hour": {"used_percentage": -1, "resets_at": 12}}},
], ids=range(4))
def test_fields_of_the_wrong_shape_are_left_out(tmp_path: Path, sample):
    printed, (record,) = call(json.dumps(sample, allow_nan=True), tmp_path)
    assert printed == statusline.FALLBACK + "\n"
    assert set(record) == {"type", "timestamp"}


def test_an_unwritable_record_file_still_prints_the_line(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    printed, _ = call(json.dumps(DOC_SAMPLE), tmp_path, f"out={blocker}/statusline.jsonl")
    assert printed == statusline.FALLBACK + "\n"


def test_the_default_file_is_under_the_state_directory(tmp_path: Path):
    assert statusline.DEFAULT_STATE_DIR == DEFAULT_STATE_DIR
    ns = statusline.argparse.Namespace(out=None, state_dir=str(tmp_path / "st"))
    assert statusline._out_path(ns) == str(tmp_path / "st" / "statusline.jsonl")


# --------------------------------------------------------------------------- a pool from the exporter


class _Breaker(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, dict]] = {}

    def do_GET(self) -> None:  # noqa: N802
        code, body = self.answers.get(self.path, (404, {"error": "no such pool"}))
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def breaker_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Breaker)
    _Breaker.answers = {
        "/breaker/agent-sdk": (200, {"pool": "agent-sdk", "state": "closed", "remaining_usd": 123.4,
                                     "remaining_ratio": 0.617}),
        "/breaker/five": (503, {"pool": "five", "state": "open", "remaining_usd": None, "remaining_ratio": 0.03,
                                "window": {"source": "max", "name": "five_hour"}}),
    }
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_pools_remaining_credit_from_the_exporter(tmp_path: Path, breaker_server: str):
    printed, _ = call(json.dumps(without("seven_day")), tmp_path, f"url={breaker_server}", "pool=agent-sdk")
    assert printed == "Opus | 5h 24% resets 2h13m | session $0.01 | agent-sdk $123.40 left\n"
    printed, _ = call(json.dumps(without("seven_day")), tmp_path, f"url={breaker_server}", "pool=five")
    assert printed == "Opus | 5h 24% resets 2h13m | session $0.01 | five 3% left (breaker open)\n"
    printed, _ = call(json.dumps(without("seven_day")), tmp_path, f"url={breaker_server}", "pool=nope")
    assert printed == "Opus | 5h 24% resets 2h13m | session $0.01\n"


def test_an_exporter_that_does_not_answer_costs_at_most_the_timeout(tmp_path: Path):
    import socket

    with socket.socket() as s:  # listening, never accepting: a connection that hangs
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        started = time.monotonic()
        printed, _ = call(json.dumps(without("seven_day")), tmp_path, f"url={url}", "pool=agent-sdk")
    assert printed == "Opus | 5h 24% resets 2h13m | session $0.01\n"
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------- as Claude Code runs it


def _run(args: list[str], payload: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], input=payload, capture_output=True,
                          timeout=60, check=False, cwd=ROOT, env=clean_env())


@pytest.mark.parametrize("payload", [json.dumps(DOC_SAMPLE).encode(), json.dumps(without("five_hour")).encode(),
                                     b"garbage", b""], ids=["sample", "no-5h", "garbage", "empty"])
def test_the_command_exits_0_with_one_line(tmp_path: Path, payload: bytes):
    out = tmp_path / "s.jsonl"
    done = _run(["statusline", "--out", str(out)], payload)
    assert done.returncode == 0 and done.stderr == b""
    assert done.stdout.count(b"\n") == 1 and done.stdout.strip()
    assert out.exists() == payload.startswith(b"{")


def test_bad_arguments_still_print_a_line_and_exit_0(tmp_path: Path):
    done = _run(["statusline", "--timeout", "soon", "--out", str(tmp_path / "s.jsonl")], b"{}")
    assert done.returncode == 0 and done.stdout == (statusline.FALLBACK + "\n").encode()


def test_through_the_full_command_line_too(tmp_path: Path):
    done = _run(["--log-level", "error", "statusline", "--out", str(tmp_path / "s.jsonl")],
                json.dumps(DOC_SAMPLE).encode())
    assert done.returncode == 0 and done.stdout.startswith(b"Opus | 5h "), done


def test_the_statusline_imports_no_more_than_it_needs(tmp_path: Path):
    """Quick by construction (its start-up is measured in the benchmark, not here): the entry point
    answers it without importing the command's modules, the config or any third-party package."""
    code = ("import io, sys; sys.stdin = io.TextIOWrapper(io.BytesIO(b'{}')); from exporter.entry import main; "
            f"main(['statusline', '--out', {str(tmp_path / 's.jsonl')!r}]); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('yaml', 'structlog', 'httpx', 'orjson', "
            "'msgspec', 'prometheus_client', 'urllib3') or m in ('exporter.cli', 'exporter.config', 'urllib.request'));"
            "print(heavy, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=False, cwd=ROOT,
                          env=clean_env())
    assert done.returncode == 0 and done.stderr.strip() == b"[]", done
