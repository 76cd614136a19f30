"""Claude Code's telemetry end to end: the real OpenTelemetry SDK and its OTLP/HTTP exporters send
Claude Code's metric and event names and attributes to a real ``serve``; the totals equal an
independent computation (tests/corpus.py's own price table) to the cent, per team pools equal
their share, and a kill -9 while clients keep sending loses and doubles nothing."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from tests.conftest import Samples, clean_env, free_port, sample
from tests.corpus import MODELS
from tests.otlp_fleet import HAIKU, OPUS, SONNET, ClaudeCodeProcess, Truth
from tests.otlp_requests import api_request, logs_request

CENT_EXACT = 1e-9  # exposition is a float of an exact decimal: the same to far below a cent


def _config(tmp_path: Path, port: int, **source: Any) -> Path:
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "refresh_interval": "500ms",
        "sources": [{"name": "fleet", "kind": "otlp", "listen": f"127.0.0.1:{port}",
                     "attributes": ["team", "user.email"], "attribute_labels": "top", **source}],
        "pools": [
            {"name": "platform", "credit_usd": 1000, "team": "platform",
             "match": {"sources": ["fleet"], "telemetry": {"team": ["platform"]}}},
            {"name": "data", "credit_usd": 1000, "team": "data",
             "match": {"sources": ["fleet"], "telemetry": {"team": ["data"]}}},
            {"name": "fleet", "credit_usd": 5000, "match": {"sources": ["fleet"]}},
        ],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _fleet_usd(m: Samples) -> float:
    return sum(v for (name, labels), v in m.items()
               if name == "claude_estimated_cost_usd_total" and dict(labels).get("source") == "fleet")


def _tokens(m: Samples, family: str, token_type: str) -> float:
    return sample(m, "claude_estimated_tokens_total", source="fleet", model=family, token_type=token_type) or 0.0


def _check_totals(m: Samples, truth: Truth) -> None:
    assert abs(_fleet_usd(m) - float(truth.all.usd)) < CENT_EXACT, (_fleet_usd(m), truth.all.usd)
    for family, t in truth.by_model.items():
        for token_type, n in t.tokens.items():
            assert _tokens(m, family, token_type) == n, (family, token_type)
    for team, t in truth.by_team.items():
        spend = sample(m, "claude_estimated_spend_usd", pool=team, window="period")
        assert spend is not None and abs(spend - float(t.usd)) < CENT_EXACT, (team, spend, t.usd)
        share = sample(m, "claude_telemetry_spend_usd", source="fleet", window="today", attribute="team", value=team)
        assert share is not None and abs(share - float(t.usd)) < CENT_EXACT
    fleet = sample(m, "claude_estimated_spend_usd", pool="fleet", window="period")
    assert fleet is not None and abs(fleet - float(truth.all.usd)) < CENT_EXACT


def _wait_totals(exp: Any, truth: Truth, timeout: float = 20.0) -> Samples:
    def settled(m: Samples) -> bool:
        return abs(_fleet_usd(m) - float(truth.all.usd)) < CENT_EXACT and all(
            sample(m, "claude_estimated_spend_usd", pool=team, window="period") is not None
            and abs(sample(m, "claude_estimated_spend_usd", pool=team, window="period") - float(t.usd)) < CENT_EXACT
            for team, t in truth.by_team.items())

    try:
        return exp.wait_for(settled, timeout=timeout, what="the fleet's totals")
    except AssertionError:
        _check_totals(exp.metrics(), truth)  # says which figure is off
        raise


def test_a_fleet_over_the_real_sdk_is_counted_exactly(exporter_factory: Callable[..., Any], tmp_path: Path) -> None:
    port = free_port()
    exp = exporter_factory(["--config", str(_config(tmp_path, port))]).start()
    endpoint = f"http://127.0.0.1:{port}"
    truth = Truth()
    # alice: events and metrics (delta, Claude Code's default), restarts mid-session (a resumed session)
    alice = ClaudeCodeProcess(endpoint, truth, user="alice@example.com", team="platform")
    # bob: events and cumulative metrics, the same session in two processes at once
    bob1 = ClaudeCodeProcess(endpoint, truth, user="bob@example.com", team="platform", temporality="cumulative")
    bob2 = ClaudeCodeProcess(endpoint, truth, user="bob@example.com", team="platform", temporality="cumulative",
                             session_id=bob1.session_id)
    # carol: metrics only (no OTEL_LOGS_EXPORTER), delta, every batch sent twice, restarts mid-session
    carol = ClaudeCodeProcess(endpoint, truth, user="carol@example.com", team="data", events=False, duplicate=True)
    # dave: metrics only, cumulative, restarts mid-session (his counters start again from 0)
    dave = ClaudeCodeProcess(endpoint, truth, user="dave@example.com", team="data", events=False,
                             temporality="cumulative", entrypoint="sdk-cli")
    # erin: events only, numbers as strings, every batch twice, uncompressed
    erin = ClaudeCodeProcess(endpoint, truth, user="erin@example.com", team="data", metrics=False, duplicate=True,
                             compression=False)
    procs = [alice, bob1, bob2, carol, dave, erin]
    models = [SONNET, OPUS, HAIKU]
    for i in range(12):
        for j, p in enumerate(procs):
            model = models[(i + j) % 3]
            p.request(model, 1000 + 37 * i + j, 200 + 11 * i, 5000 * (i % 3), 300 * (j % 2),
                      query_source="main" if i % 4 else "subagent", numbers_as_strings=p is erin)
        if i % 3 == 2:
            for p in procs:
                assert p.flush()
        if i == 5:  # alice, carol and dave restart: same sessions, new processes
            for old in (alice, carol, dave):
                old.shutdown()
            alice = ClaudeCodeProcess(endpoint, truth, user="alice@example.com", team="platform",
                                      session_id=alice.session_id)
            carol = ClaudeCodeProcess(endpoint, truth, user="carol@example.com", team="data", events=False,
                                      duplicate=True, session_id=carol.session_id)
            dave = ClaudeCodeProcess(endpoint, truth, user="dave@example.com", team="data", events=False,
                                     temporality="cumulative", entrypoint="sdk-cli", session_id=dave.session_id)
            procs = [alice, bob1, bob2, carol, dave, erin]
    for p in procs:
        assert p.flush()
    m = _wait_totals(exp, truth)
    _check_totals(m, truth)
    dup_logs = sample(m, "claude_otlp_items_total", source="fleet", signal="logs", result="duplicate")
    dup_points = sample(m, "claude_otlp_items_total", source="fleet", signal="metrics", result="duplicate")
    assert dup_logs and dup_points  # erin's and carol's doubled batches were seen, and not counted
    for email, t in truth.by_user.items():
        got = sample(m, "claude_telemetry_spend_usd", source="fleet", window="today", attribute="user.email",
                     value=email)
        assert got is not None and abs(got - float(t.usd)) < CENT_EXACT, email
    # what Claude Code said the requests cost is kept beside the estimate, never in it
    assert sum(v for (n, _), v in m.items() if n == "claude_estimated_reported_cost_usd_total") > 0
    assert (sample(m, "claude_source_up", source="fleet") or 0) == 1
    for p in procs:
        p.shutdown()
    # the totals outlive the exporter: a restart serves them from the state
    exp.stop()
    exp.start()
    _check_totals(_wait_totals(exp, truth), truth)


def test_kill_9_while_clients_keep_sending_loses_and_doubles_nothing(exporter_factory: Callable[..., Any],
                                                                     tmp_path: Path) -> None:
    port = free_port()
    exp = exporter_factory(["--config", str(_config(tmp_path, port))]).start()
    endpoint = f"http://127.0.0.1:{port}"
    truth = Truth()
    stop = threading.Event()
    failures: list[str] = []

    def client(k: int) -> None:
        p = ClaudeCodeProcess(endpoint, truth, user=f"dev{k}@example.com", team=("platform", "data")[k % 2],
                              temporality=("delta", "cumulative")[k % 2 if k < 4 else 0],
                              events=k != 3, metrics=k != 5, timeout=40.0)
        i = 0
        while not stop.is_set():
            p.request(list(MODELS)[i % 3], 1000 + i, 100 + k, 2000 * (i % 2), 50 * (k % 3))
            if not p.flush():  # the SDK retried for as long as its timeout lets it, and gave up
                failures.append(f"client {k}: an export failed after its retries")
            i += 1
            time.sleep(0.02)
        if not p.flush():
            failures.append(f"client {k}: the last export failed")
        p.shutdown()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(6)]
    for t in threads:
        t.start()
    kills = 0
    for _ in range(3):
        time.sleep(1.5)
        exp.kill9()
        kills += 1
        time.sleep(0.3)
        exp.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(120)
    assert not failures, failures
    assert truth.all.requests > 50 and kills == 3
    m = _wait_totals(exp, truth)
    _check_totals(m, truth)


def _post(url: str, body: bytes, ctype: str = "application/x-protobuf", headers: dict[str, str] | None = None
          ) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def test_auth_bad_payloads_and_partial_success(exporter_factory: Callable[..., Any], tmp_path: Path) -> None:
    port = free_port()
    token = tmp_path / "otlp_token"
    token.write_text("s3cret-token\n")
    exp = exporter_factory(["--config", str(_config(tmp_path, port, token_file=str(token),
                                                    max_body_bytes=64 * 1024))]).start()
    url = f"http://127.0.0.1:{port}/v1/logs"
    now = time.time()
    good = logs_request([api_request(now - 5, request_id="ok-1"), api_request(now - 5, inp=-1, request_id="bad-1")])
    auth = {"Authorization": "Bearer s3cret-token"}

    code, body, headers = _post(url, good.SerializeToString())
    assert code == 401 and headers.get("WWW-Authenticate") == "Bearer"
    assert status_pb2.Status.FromString(body).message  # an OTLP answer: a Status in the request's encoding
    code, body, _ = _post(url, good.SerializeToString(), headers={"Authorization": "Bearer wrong"})
    assert code == 401

    code, body, _ = _post(url, gzip.compress(good.SerializeToString()), headers={**auth, "Content-Encoding": "gzip"})
    assert code == 200
    answer = ExportLogsServiceResponse.FromString(body)
    assert answer.partial_success.rejected_log_records == 1 and answer.partial_success.error_message
    code, body, _ = _post(url, json_format.MessageToJson(good).encode(), "application/json", auth)
    assert code == 200 and json.loads(body)["partialSuccess"]["rejectedLogRecords"] == "1"  # ok-1 again: a duplicate

    code, body, _ = _post(url, b"\xff\xfe garbage", headers=auth)
    assert code == 400 and "not an OTLP" in status_pb2.Status.FromString(body).message
    code, body, _ = _post(url, b"{}", "text/plain", auth)
    assert code == 415
    code, body, _ = _post(url, b"\0" * (65 * 1024), headers=auth)
    assert code == 413
    code, body, _ = _post(url, gzip.compress(b"\0" * (1 << 20)), headers={**auth, "Content-Encoding": "gzip"})
    assert code == 413
    code, _, _ = _post(f"http://127.0.0.1:{port}/v1/traces", b"", headers=auth)
    assert code == 404

    # the real SDK with the header Claude Code's OTEL_EXPORTER_OTLP_HEADERS gives
    truth = Truth()
    p = ClaudeCodeProcess(f"http://127.0.0.1:{port}", truth, headers=auth, team="platform")
    p.request(SONNET, 4000, 400, 100, 10)
    assert p.flush()
    p.shutdown()
    ok_1 = Decimal("0.003") + Decimal("0.0015")  # ok-1: 1,000 input and 100 output tokens of Sonnet 4.5
    m = exp.wait_for(lambda m: abs(_fleet_usd(m) - float(truth.all.usd + ok_1)) < CENT_EXACT, what="counted")
    assert sample(m, "claude_otlp_items_total", source="fleet", signal="logs", result="bad_usage") == 2
    assert sample(m, "claude_otlp_items_total", source="fleet", signal="logs", result="duplicate") == 1
    for reason, n in (("malformed", 1), ("media_type", 1), ("too_large", 2)):
        assert sample(m, "claude_otlp_refused_total", source="fleet", signal="logs", reason=reason) == n, reason
    assert sample(m, "claude_otlp_requests_total", source="fleet", signal="logs", code="401") == 2


def test_basic_auth_of_the_web_config_guards_the_receiver(exporter_factory: Callable[..., Any],
                                                          tmp_path: Path) -> None:
    port = free_port()
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({"basic_auth_users": {
        "fleet": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()}}))
    exp = exporter_factory(["--config", str(_config(tmp_path, port)), "--web-config-file", str(web)],
                           clean_env()).start()
    truth = Truth()
    basic = "Basic " + base64.b64encode(b"fleet:pw").decode()
    deadline = time.monotonic() + 30
    while True:  # /healthz answers first; the receiver listens once the first refresh is done
        try:
            code, _, _ = _post(f"http://127.0.0.1:{port}/v1/logs", b"", headers={"Authorization": basic})
            break
        except urllib.error.URLError:
            assert time.monotonic() < deadline, "the receiver never listened"
            time.sleep(0.1)
    assert code == 200  # an empty request is a valid one
    code, _, headers = _post(f"http://127.0.0.1:{port}/v1/logs", b"")
    assert code == 401 and headers.get("WWW-Authenticate", "").startswith("Basic")
    p = ClaudeCodeProcess(f"http://127.0.0.1:{port}", truth, headers={"Authorization": basic}, team="data")
    p.request(OPUS, 1000, 100)
    assert p.flush()
    p.shutdown()
    assert exp.proc is not None and exp.proc.poll() is None
