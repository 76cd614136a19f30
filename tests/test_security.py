"""Who gets in, and what a hostile or broken client can do: basic auth (bcrypt), TLS and client
certificates from the web config, the breaker webhook's bearer token, slow clients, oversized
bodies, and the admin key kept out of every log line, page, metric and state file.

Most tests run the exporter as a real process; the ones that need a knob the command line
does not offer (a 1 s request deadline, routes that record what they were given) run the
same server class in process on 127.0.0.1.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import io
import json
import resource
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bcrypt
import pytest
import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from exporter import logsetup
from exporter.config.model import FAST_POLL_ENV, ConfigError
from exporter.expose.http import MAX_BODY_BYTES, ExporterServer, MetricsCache
from exporter.config.web import BasicAuth, WebConfig, load_web_config, parse_web_config
from tests.conftest import clean_env, http_get, run_cli, sample
from tests.fake_admin_api import FakeAdminApi

PASSWORD = "correct horse battery staple"
# cost 4: the lowest bcrypt allows, so the suite does not spend seconds hashing
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
TOKEN = "webhook-token-0123456789"
KEY = "sk-ant-admin01-security-test-key-0f1e2d3c4b5a69788796a5b4"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _request(url: str, *, headers: dict[str, str] | None = None, data: bytes | None = None,
             context: ssl.SSLContext | None = None, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _webhook_payload(pool: str = "agent-sdk", status: str = "firing") -> bytes:
    return json.dumps({"version": "4", "status": status, "receiver": "breaker", "alerts": [
        {"status": status, "labels": {"alertname": "PoolNearlyExhausted", "pool": pool, "breaker": "open"},
         "annotations": {"summary": "test"}, "startsAt": "2026-01-01T00:00:00Z", "fingerprint": "f1"}]}).encode()


def _write_config(tmp: Path, extra: str = "") -> Path:
    logs = tmp / "logs"
    logs.mkdir(exist_ok=True)
    cfg = tmp / "config.yaml"
    cfg.write_text(f"""
refresh_interval: 200ms
sources:
  - name: claude-code
    kind: claude_code
    paths: [{logs}]
pools:
  - name: agent-sdk
    credit_usd: 200
    match: {{sources: [claude-code]}}
{extra}""")
    return cfg


# --------------------------------------------------------------------------- in-process server


class _Const:
    def collect(self):
        g = GaugeMetricFamily("claude_test_value", "a constant for the tests")
        g.add_metric([], 1)
        yield g


@dataclass
class StubRoutes:
    """What the server answers from, as plain callables (the app's Service in tests of the server alone)."""

    registry: CollectorRegistry
    healthy: Callable[[], tuple[bool, str]]
    status_page: Callable[[], str]
    breaker: Callable[[str], tuple[int, dict]] = lambda pool: (404, {})
    webhook: Callable[[dict], tuple[int, dict]] = lambda payload: (200, {})
    webhook_token: Callable[[], str | None] = lambda: None
    webhook_answered: Callable[[int], None] = lambda code: None
    metrics_version: Callable[[], tuple] = lambda: (object(),)


def _routes(webhook_token: str | None = None, seen: list | None = None) -> StubRoutes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Const())

    def webhook(payload):
        if seen is not None:
            seen.append(payload)
        return 200, {"accepted": len(payload.get("alerts", []))}

    return StubRoutes(registry=registry, healthy=lambda: (True, "ok"), status_page=lambda: "<p>status</p>",
                  breaker=lambda pool: (200, {"pool": pool, "state": "closed"}), webhook=webhook,
                  webhook_token=lambda: webhook_token)


@pytest.fixture
def server_factory():
    started: list[ExporterServer] = []

    def make(web: WebConfig | None = None, **kw) -> ExporterServer:
        routes = kw.pop("routes", None) or _routes()
        s = ExporterServer("127.0.0.1", 0, routes, web, **kw)
        s.start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.shutdown()


# --------------------------------------------------------------------------- web config checking


def test_bad_web_config_exits_2_listing_every_problem_with_its_path(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("""
tls_server_config:
  cert_file: missing.crt
  min_version: TLS99
  client_auth_type: RequireAnyClientCert
basic_auth_users:
  alice: hunter2-plain-password
  "bob:x": $2b$04$abcdefghijklmnopqrstuu1234567890123456789012345678901
http_server_config:
  headers: {X-Frame-Options: allowall, Set-Cookie: a=b}
listen_address: ":9100"
""")
    cfg = _write_config(tmp_path, f"web_config_file: {web}\n")
    r = run_cli("serve", "--config", str(cfg), "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 2, r.stderr
    for path in ("tls_server_config.cert_file: cannot read", "tls_server_config.key_file: is required",
                 "tls_server_config.min_version: must be one of", "tls_server_config.client_auth_type:",
                 "basic_auth_users.alice: must be a bcrypt hash", "basic_auth_users.bob:x: user name",
                 "http_server_config.headers.X-Frame-Options: must be one of",
                 "http_server_config.headers.Set-Cookie: not a header", "listen_address: unknown key"):
        assert path in r.stderr, f"{path!r} missing from:\n{r.stderr}"
    assert "hunter2" not in r.stderr  # a password pasted where a hash belongs is never echoed


def _has_web_config_flag() -> bool:
    from exporter.cli import build_parser

    return "--web-config-file" in build_parser().format_help() or any(
        "--web-config-file" in a.format_help() for a in build_parser()._subparsers._group_actions[0].choices.values())


@pytest.mark.skipif(not _has_web_config_flag(), reason="serve --web-config-file is not wired into the CLI yet")
def test_web_config_file_flag(tmp_path: Path, exporter_factory) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users: {{prometheus: '{HASH}'}}\n")
    cfg = _write_config(tmp_path)
    e = exporter_factory(["--config", str(cfg), "--state-dir", str(tmp_path / "state"),
                          "--web-config-file", str(web)]).start()
    assert _request(e.url + "/metrics")[0] == 401
    assert _request(e.url + "/metrics", headers=_basic("prometheus", PASSWORD))[0] == 200
    web.write_text("basic_auth_users: {prometheus: plain}\n")
    r = run_cli("validate-config", str(cfg), "--web-config-file", str(web))
    assert r.returncode == 2 and "basic_auth_users.prometheus: must be a bcrypt hash" in r.stderr


def test_web_config_problems_name_their_paths_and_a_good_file_loads(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        parse_web_config({"tls_server_config": {"cert_file": 5, "key_file": "k"}, "basic_auth_users": ["x"]},
                         base_dir=tmp_path)
    assert all(": " in p for p in e.value.problems)
    assert any(p.startswith("basic_auth_users: must be a mapping") for p in e.value.problems)
    with pytest.raises(ConfigError) as e:
        load_web_config(tmp_path / "nope.yml")
    assert e.value.problems == ["(file): cannot read: No such file or directory"]
    good = tmp_path / "web.yml"
    good.write_text(f"basic_auth_users: {{prometheus: '{HASH}'}}\n"
                    "http_server_config: {headers: {X-Content-Type-Options: nosniff}}\n")
    wc = load_web_config(good)
    assert wc.auth_required and wc.tls is None and wc.headers == {"X-Content-Type-Options": "nosniff"}
    assert HASH not in repr(wc)
    assert load_web_config(None) == WebConfig()


# --------------------------------------------------------------------------- basic auth


def test_basic_auth_guards_every_endpoint_but_healthz(tmp_path: Path, exporter_factory) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users: {{prometheus: '{HASH}'}}\n"
                   "http_server_config: {headers: {X-Frame-Options: deny}}\n")
    cfg = _write_config(tmp_path, f"web_config_file: {web}\n")
    e = exporter_factory(["--config", str(cfg), "--state-dir", str(tmp_path / "state")]).start()
    good, bad = _basic("prometheus", PASSWORD), _basic("prometheus", PASSWORD + "x")

    for path in ("/metrics", "/", "/breaker/agent-sdk", "/no-such-page"):
        for headers in ({}, bad, _basic("nobody", PASSWORD), {"Authorization": "Bearer " + PASSWORD},
                        {"Authorization": "Basic !!!not-base64"}):
            code, hdrs, body = _request(e.url + path, headers=headers)
            assert code == 401, (path, headers, code)
            assert hdrs["WWW-Authenticate"].startswith("Basic ")
            assert b"claude_" not in body and b"agent-sdk" not in body
    code, _, body = _request(e.url + "/metrics", headers=good)
    assert code == 200 and b"claude_pool_credit_usd" in body
    code, hdrs, _ = _request(e.url + "/breaker/agent-sdk", headers=good)
    assert code == 200 and hdrs["X-Frame-Options"] == "deny"
    assert _request(e.url + "/", headers=good)[0] == 200
    # liveness probes and container health checks carry no credentials
    code, hdrs, body = _request(e.url + "/healthz")
    assert code == 200 and body == b"ok\n" and hdrs["X-Frame-Options"] == "deny"
    # with no bearer token configured, the webhook is behind basic auth like the rest
    assert _request(e.url + "/alertmanager/webhook", data=_webhook_payload())[0] == 401
    code, _, body = _request(e.url + "/alertmanager/webhook", data=_webhook_payload(), headers=good)
    assert code == 200, body
    code, _, body = _request(e.url + "/breaker/agent-sdk", headers=good)
    assert code == 503 and json.loads(body)["state"] == "open"


def test_a_successful_bcrypt_check_is_cached_and_failures_always_pay() -> None:
    auth = BasicAuth({"prometheus": HASH.encode()})
    good = _basic("prometheus", PASSWORD)["Authorization"]
    assert auth.check(good)
    assert auth.bcrypt_checks == 1
    t = time.perf_counter()
    for _ in range(1000):
        assert auth.check(good)
    assert auth.bcrypt_checks == 1  # a scrape every 15 s pays bcrypt once
    assert (time.perf_counter() - t) / 1000 < 0.001
    for header in (_basic("prometheus", "wrong")["Authorization"], _basic("prometheus", "wrong")["Authorization"],
                   _basic("mallory", PASSWORD)["Authorization"]):
        assert not auth.check(header)
    assert auth.bcrypt_checks == 4  # wrong passwords are not cached; unknown users pay bcrypt too
    # a changed hash (a new web config) does not inherit the old cache
    other = BasicAuth({"prometheus": bcrypt.hashpw(b"new", bcrypt.gensalt(4))})
    assert not other.check(good)
    # malformed headers and over-long passwords are refusals, not exceptions
    for header in (None, "", "Basic", "Basic =", "Digest x", "Basic " + base64.b64encode(b"nocolon").decode(),
                   "Basic " + base64.b64encode(b"prometheus:" + b"x" * 100).decode(),
                   "Basic " + base64.b64encode(b"\xff\xfe:pw").decode()):
        assert not auth.check(header)


def test_an_unknown_user_costs_a_real_bcrypt_check_so_timing_does_not_tell_names() -> None:
    """Before: the dummy hash had an invalid salt, so an unknown user was refused in microseconds
    and a known one in a full bcrypt round."""
    auth = BasicAuth({"prometheus": bcrypt.hashpw(b"pw", bcrypt.gensalt(8))})
    assert not auth.check(_basic("mallory", "pw")["Authorization"])
    dummy = auth._dummy_hash()
    assert dummy.startswith(b"$2b$08$")  # the users' own cost
    assert bcrypt.checkpw(b"anything", dummy) is False  # a hash bcrypt really checks, not one it refuses
    assert auth.bcrypt_checks == 1


def test_a_client_flooding_wrong_passwords_is_refused_without_bcrypt_and_others_are_not() -> None:
    now = [0.0]
    auth = BasicAuth({"prometheus": bcrypt.hashpw(b"pw", bcrypt.gensalt(4))}, max_failures=3, clock=lambda: now[0])
    wrong = _basic("prometheus", "guess")["Authorization"]
    for _ in range(50):
        assert not auth.check(wrong, "203.0.113.9")
    assert auth.bcrypt_checks == 3  # the flood costs three rounds a minute, not fifty
    assert auth.refused == 47
    # the scraper elsewhere is checked as usual, and then answered from the cache
    good = _basic("prometheus", "pw")["Authorization"]
    assert auth.check(good, "192.0.2.1")
    assert auth.bcrypt_checks == 4
    # after the window the flooding address is checked again (and counted again)
    now[0] += 61
    assert not auth.check(wrong, "203.0.113.9")
    assert auth.bcrypt_checks == 5


def test_requests_waiting_for_bcrypt_are_bounded() -> None:
    auth = BasicAuth({"prometheus": bcrypt.hashpw(b"pw", bcrypt.gensalt(4))}, max_waiting=0)
    assert not auth.check(_basic("prometheus", "pw")["Authorization"], "192.0.2.1")
    assert auth.bcrypt_checks == 0 and auth.refused == 1


# --------------------------------------------------------------------------- TLS


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=test-ca", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d


def _client_ctx(pki: Path, cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert:
        ctx.load_cert_chain(pki / "client.crt", pki / "client.key")
    return ctx


def test_tls_and_basic_auth_end_to_end(tmp_path: Path, pki: Path, exporter_factory) -> None:
    web = tmp_path / "web.yml"
    # relative paths are relative to the web config file, as in exporter-toolkit
    for f in ("server.crt", "server.key"):
        shutil.copy(pki / f, tmp_path / f)
    web.write_text(f"tls_server_config: {{cert_file: server.crt, key_file: server.key, min_version: TLS13}}\n"
                   f"basic_auth_users: {{prometheus: '{HASH}'}}\n")
    cfg = _write_config(tmp_path, f"web_config_file: {web}\n")
    e = exporter_factory(["--config", str(cfg), "--state-dir", str(tmp_path / "state")])
    e.start(wait=0)
    url = f"https://127.0.0.1:{e.port}"
    ctx = _client_ctx(pki)
    deadline = time.monotonic() + 30
    while True:
        try:
            if _request(url + "/healthz", context=ctx, timeout=1)[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline and e.proc.poll() is None, e.log_path.read_text()
        time.sleep(0.1)
    assert _request(url + "/metrics", context=ctx)[0] == 401
    code, _, body = _request(url + "/metrics", context=ctx, headers=_basic("prometheus", PASSWORD))
    assert code == 200 and b"claude_exporter_build_info" in body
    # plain HTTP on the TLS port gets nothing: the handshake fails and the connection closes
    with pytest.raises((OSError, http.client.HTTPException)):
        _request(f"http://127.0.0.1:{e.port}/metrics", timeout=3)
    # a client below min_version is refused
    old = _client_ctx(pki)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, urllib.error.URLError, OSError)):
        _request(url + "/healthz", context=old, timeout=3)
    # a pipeline's check goes through the same door: credentials and the private CA
    args = ["check", "--pool", "agent-sdk", "--url", url, "--ca-file", str(pki / "ca.crt")]
    r = run_cli(*args)
    assert r.returncode == 2 and "wants credentials" in r.stderr, r.stdout + r.stderr
    r = run_cli(*args, "--user", "prometheus", env=clean_env(CLAUDE_BUDGET_EXPORTER_PASSWORD=PASSWORD))
    assert r.returncode == 0 and r.stdout.startswith("closed"), r.stdout + r.stderr
    r = run_cli(*args, "--user", "prometheus", env=clean_env(CLAUDE_BUDGET_EXPORTER_PASSWORD="wrong"))
    assert r.returncode == 2


def test_client_certificates_are_required_and_verified(pki: Path, server_factory) -> None:
    web = parse_web_config({"tls_server_config": {
        "cert_file": str(pki / "server.crt"), "key_file": str(pki / "server.key"),
        "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": str(pki / "ca.crt")}})
    s = server_factory(web)
    url = f"https://127.0.0.1:{s.port}/metrics"
    code, _, body = _request(url, context=_client_ctx(pki, cert=True))
    assert code == 200 and b"claude_test_value 1.0" in body
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        _request(url, context=_client_ctx(pki, cert=False), timeout=3)


def test_a_stalled_tls_handshake_does_not_block_other_clients(pki: Path, server_factory) -> None:
    web = parse_web_config({"tls_server_config": {"cert_file": str(pki / "server.crt"),
                                                  "key_file": str(pki / "server.key")}})
    s = server_factory(web)
    stalled = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(30)]  # connect, never say hello
    try:
        time.sleep(0.2)
        t = time.perf_counter()
        code, _, _ = _request(f"https://127.0.0.1:{s.port}/metrics", context=_client_ctx(pki))
        assert code == 200 and time.perf_counter() - t < 1.0
    finally:
        for c in stalled:
            c.close()


# --------------------------------------------------------------------------- the breaker webhook's token


def test_webhook_bearer_token(tmp_path: Path, exporter_factory) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users: {{prometheus: '{HASH}'}}\n")
    cfg = _write_config(tmp_path, f"web_config_file: {web}\nbreaker_webhook: {{token_env: HOOK_TOKEN}}\n")
    env = clean_env(HOOK_TOKEN=TOKEN)
    e = exporter_factory(["--config", str(cfg), "--state-dir", str(tmp_path / "state")], env).start()
    hook = e.url + "/alertmanager/webhook"
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Bearer {TOKEN[:-1]}"},
                    {"Authorization": TOKEN}, {"Authorization": f"bearer  {TOKEN}"},
                    _basic("prometheus", PASSWORD)):  # basic auth is not the webhook's credential
        code, hdrs, body = _request(hook, data=_webhook_payload(), headers=headers)
        assert code == 401, (headers, code, body)
        assert hdrs["WWW-Authenticate"] == "Bearer"
    good = _basic("prometheus", PASSWORD)
    assert json.loads(_request(e.url + "/breaker/agent-sdk", headers=good)[2])["state"] == "closed"
    assert 'claude_breaker_open{pool="agent-sdk"} 0.0' in _request(e.url + "/metrics", headers=good)[2].decode()
    code, _, body = _request(hook, data=_webhook_payload(), headers={"Authorization": f"Bearer {TOKEN}"})
    assert code == 200 and json.loads(body)["open_pools"] == ["agent-sdk"]
    # the very next scrape shows it: the cached exposition is keyed on the webhooks applied
    code, _, body = _request(e.url + "/metrics", headers=good)
    assert 'claude_breaker_open{pool="agent-sdk"} 1.0' in body.decode()
    code, _, body = _request(e.url + "/breaker/agent-sdk", headers=good)
    assert code == 503 and json.loads(body)["state"] == "open"
    # a resolved notification closes it again
    code, _, _ = _request(hook, data=_webhook_payload(status="resolved"), headers={"Authorization": f"Bearer {TOKEN}"})
    assert code == 200
    assert _request(e.url + "/breaker/agent-sdk", headers=good)[0] == 200


# --------------------------------------------------------------------------- slow clients


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_fifty_slowloris_connections_do_not_slow_metrics(tmp_path: Path, exporter_factory) -> None:
    cfg = _write_config(tmp_path)
    e = exporter_factory(["--config", str(cfg), "--state-dir", str(tmp_path / "state")]).start()
    stop = threading.Event()
    slow = [socket.create_connection(("127.0.0.1", e.port)) for _ in range(50)]
    for c in slow:
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")

    def dribble() -> None:
        n = 0
        while not stop.wait(0.3):
            for c in slow:
                try:
                    c.sendall(b"X-%d: y\r\n" % n)
                except OSError:
                    pass
            n += 1

    t = threading.Thread(target=dribble, daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        latencies = []
        for _ in range(30):
            started = time.perf_counter()
            code, body = http_get(e.url + "/metrics")
            latencies.append(time.perf_counter() - started)
            assert code == 200 and b"claude_exporter_build_info" in body
            time.sleep(0.05)
        latencies.sort()
        assert latencies[-1] < 0.5, f"slowest scrape {latencies[-1] * 1000:.0f} ms"
        assert latencies[len(latencies) // 2] < 0.1
    finally:
        stop.set()
        t.join()
        for c in slow:
            c.close()


def test_a_dribbling_client_is_cut_off_at_the_request_deadline(server_factory) -> None:
    s = server_factory(request_timeout=1.0)
    c = socket.create_connection(("127.0.0.1", s.port))
    c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    closed_after = None
    c.settimeout(0.1)
    try:
        while time.monotonic() - started < 5:
            try:
                c.sendall(b"X-a: b\r\n")  # one header every 0.1 s, each well within the socket timeout
                if c.recv(1024) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
    finally:
        c.close()
    assert closed_after is not None, "the server kept a dribbling client for 5 s"
    assert 0.8 < closed_after < 2.0
    assert http_get(f"http://127.0.0.1:{s.port}/metrics")[0] == 200


def test_two_thousand_idle_connections_do_not_stop_metrics_or_healthz(server_factory) -> None:
    """Before: at most 512 connections were served at once, so idle ones held open turned most
    scrapes and liveness probes away (and a failing /healthz gets the pod restarted)."""
    n = 2000
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 2 * n + 200:
        pytest.skip("the open files limit is too low for both ends of 2,000 connections in one process")
    s = server_factory(request_timeout=120.0)  # raises this process's soft limit to the hard one
    base = f"http://127.0.0.1:{s.port}"
    idle: list[socket.socket] = []
    try:
        for _ in range(n):
            idle.append(socket.create_connection(("127.0.0.1", s.port)))
        deadline = time.monotonic() + 30
        while s.connections < n:  # accepted and held by the server, not waiting in the kernel's queue
            assert time.monotonic() < deadline, f"the server holds {s.connections} of {n} connections"
            time.sleep(0.02)
        latencies = []
        for path in ("/metrics", "/healthz") * 10:
            started = time.perf_counter()
            code, body = http_get(base + path)
            latencies.append(time.perf_counter() - started)
            assert code == 200 and body, (path, code)
        assert max(latencies) < 1.0, f"slowest answer {max(latencies) * 1000:.0f} ms"
        # and the idle connections were held, not dropped: every one of them is still answered
        for c in idle:
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in idle:
            c.settimeout(10)
            assert c.recv(4096).startswith(b"HTTP/1.1 200 ")
    finally:
        for c in idle:
            c.close()


# --------------------------------------------------------------------------- request bodies


def _raw(port: int, data: bytes, *, body_sender=None, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(data)
        if body_sender is not None:
            threading.Thread(target=body_sender, args=(c,), daemon=True).start()
        out = b""
        try:
            while chunk := c.recv(65536):
                out += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return out


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def test_webhook_bodies_are_bounded(tmp_path: Path, exporter_factory) -> None:
    cfg = _write_config(tmp_path)
    e = exporter_factory(["--config", str(cfg), "--state-dir", str(tmp_path / "state")]).start()
    head = b"POST /alertmanager/webhook HTTP/1.1\r\nHost: x\r\n"
    payload = _webhook_payload(status="resolved")

    # a declared 100 MB body is refused before a byte of it is read
    r = _raw(e.port, head + b"Content-Length: 100000000\r\n\r\n")
    assert _status(r) == 413 and b"Connection: close" in r
    # no length at all, a negative one, or both framings at once
    assert _status(_raw(e.port, head + b"\r\n" + payload)) == 411
    assert _status(_raw(e.port, head + b"Content-Length: -5\r\n\r\n")) == 400
    assert _status(_raw(e.port, head + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")) == 400
    assert _status(_raw(e.port, head + b"Transfer-Encoding: gzip\r\n\r\n")) == 501
    # a body that stops short of its length: the deadline ends the wait, nothing is applied
    r = _raw(e.port, head + b"Content-Length: 5000\r\n\r\n" + payload, timeout=15)
    assert _status(r) in (0, 400)
    # chunked within the bound is fine
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (payload[:10], payload[10:])) + b"0\r\n\r\n"
    r = _raw(e.port, head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    assert _status(r) == 200, r
    assert _status(_raw(e.port, head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")) == 400

    rss_before = _rss_kib(e.proc.pid)
    # chunked past 1 MiB: 413 after at most the bound is read, then the connection is dropped
    for _ in range(10):
        def send_forever(c: socket.socket) -> None:
            block = b"x" * 65536
            try:
                for _ in range(200):  # up to 13 MB offered
                    c.sendall(b"%x\r\n%s\r\n" % (len(block), block))
            except OSError:
                pass

        r = _raw(e.port, head + b"Transfer-Encoding: chunked\r\n\r\n", body_sender=send_forever)
        assert _status(r) == 413, r[:200]
    # a 5 MB body with an honest Content-Length
    big = b"[" + b"1," * (5 << 19) + b"1]"
    assert len(big) > 5 * MAX_BODY_BYTES
    r = _raw(e.port, head + b"Content-Length: %d\r\n\r\n" % len(big),
             body_sender=lambda c: _swallow(lambda: c.sendall(big)))
    assert _status(r) == 413
    assert _rss_kib(e.proc.pid) - rss_before < 20 * 1024, "oversized bodies grew the exporter's memory"
    assert http_get(e.url + "/healthz")[0] == 200


def _swallow(fn) -> None:
    try:
        fn()
    except OSError:
        pass


def test_headers_and_keep_alive_after_rejections(server_factory) -> None:
    seen: list = []
    s = server_factory(routes=_routes(seen=seen))
    # a 404 POST with a body: the body must not be parsed as the next request on the connection
    body = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    r = _raw(s.port, b"POST /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert r.count(b"HTTP/1.1 ") == 1 and _status(r) == 404
    # two good webhook calls on one keep-alive connection both land
    p = _webhook_payload()
    one = b"POST /alertmanager/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(p), p)
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(one + one)
        got = b""
        while got.count(b"HTTP/1.1 200") < 2:
            chunk = c.recv(65536)
            assert chunk, got
            got += chunk
    assert len(seen) == 2
    # too many headers: refused, not buffered without end
    many = b"".join(b"X-%d: y\r\n" % i for i in range(200))
    assert _status(_raw(s.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")) == 431


def test_a_body_on_a_keep_alive_get_is_not_read_as_a_request(server_factory) -> None:
    """Before: a GET's Content-Length was ignored and its body parsed as the next request on the
    connection: request smuggling past a proxy that frames the GET by its Content-Length."""
    s = server_factory()
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /breaker/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    r = _raw(s.port, get + last)  # keep-alive itself works: two requests, two answers
    assert r.count(b"HTTP/1.1 200 ") == 2, r
    smuggled = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    r = _raw(s.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled)
             + smuggled + last)
    assert _status(r) == 200 and r.count(b"HTTP/1.1 ") == 1, r
    assert b"claude_test_value" not in r


@pytest.mark.parametrize("size", [b"0_2", b"0x2", b"+2"])
def test_chunk_sizes_that_are_not_plain_hex_are_refused(server_factory, size: bytes) -> None:
    """Before: a chunk size went through int(size, 16), which takes underscores, 0x and a sign."""
    seen: list = []
    s = server_factory(routes=_routes(seen=seen))
    r = _raw(s.port, b"POST /alertmanager/webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
             + size + b"\r\n{}\r\n0\r\n\r\n")
    assert _status(r) == 400, r[:300]
    assert r.count(b"HTTP/1.1 ") == 1 and b"Connection: close" in r
    assert seen == []


def test_broken_requests_are_answered_quietly(server_factory, capfd) -> None:
    """The server's own loggers print no traceback or access line, and a client's mistake is no
    warning: a bad request line, an upgrade nobody serves, a bad chunk, TLS on the plain port."""
    s = server_factory()
    with structlog.testing.capture_logs() as logs:
        for data, code in ((b"HELLO\r\n\r\n", 400),
                           (b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\n"
                            b"Upgrade: websocket\r\n\r\n", 200),
                           (b"GET /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
                           (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400)):
            assert _status(_raw(s.port, data)) == code, data
    assert [e for e in logs if e["log_level"] in ("warning", "error", "critical")] == []
    assert capfd.readouterr().err == ""


# --------------------------------------------------------------------------- the admin key


def test_admin_key_appears_in_no_output(tmp_path: Path, exporter_factory) -> None:
    """A whole run with the key set: faults, a wrong key, report, check; grep everything it wrote."""
    now = datetime.now(UTC)
    fake = FakeAdminApi(key=KEY, now=now).start()
    try:
        fake.add_spend(now - timedelta(days=1), "123.45", workspace_id="wrkspc_1",
                       model="claude-sonnet-4-5-20250929", token_type="output_tokens", tokens=1000)
        logs = tmp_path / "logs"
        logs.mkdir()
        (logs / "s.jsonl").write_text(json.dumps({
            "type": "assistant", "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "requestId": "r1",
            "message": {"id": "m1", "model": "claude-sonnet-4-5-20250929",
                        "usage": {"input_tokens": 10, "output_tokens": 5}}}) + "\n")
        cfg = tmp_path / "config.yaml"
        cfg.write_text(f"""
refresh_interval: 200ms
admin_api: {{key_env: TEST_ADMIN_KEY, base_url: "{fake.url}", poll_interval: 500ms}}
sources: [{{name: claude-code, kind: claude_code, paths: ["{logs}"]}}]
pools:
  - {{name: agent-sdk, credit_usd: 200, match: {{workspaces: [wrkspc_1], sources: [claude-code]}}}}
""")
        state = tmp_path / "state"
        env = clean_env(TEST_ADMIN_KEY=KEY, **{FAST_POLL_ENV: "1"})
        args = ["--config", str(cfg), "--state-dir", str(state)]
        e = exporter_factory(args, env).start()
        e.wait_for(lambda s: sample(s, "claude_source_up", source="admin_api") == 1, what="the first poll")
        for kind in ("500", "truncated", "reset", "429", "not_report"):
            fake.inject(kind, count=2)
        e.wait_for(lambda s: sample(s, "claude_source_up", source="admin_api") == 0, what="a failed poll")
        fake.clear_faults()
        pages = []
        for path in ("/metrics", "/", "/healthz", "/breaker/agent-sdk", "/breaker/nope", "/x"):
            pages.append(http_get(e.url + path)[1])
        e.stop()

        # a second exporter holding a wrong key: 401s from the API, logged
        wrong = KEY[:-6] + "WRONG1"
        env2 = clean_env(TEST_ADMIN_KEY=wrong, **{FAST_POLL_ENV: "1"})
        e2 = exporter_factory(["--config", str(cfg), "--state-dir", str(tmp_path / "state2")], env2).start()
        e2.wait_for(lambda s: sample(s, "claude_source_up", source="admin_api") == 0, what="401s")
        pages.append(http_get(e2.url + "/metrics")[1])
        e2.stop()
        assert fake.count(status=401) > 0

        outputs = [run_cli(*cmd, env=env) for cmd in (
            ("report", *args), ("report", "--json", *args), ("check", "--pool", "agent-sdk", *args),
            ("validate-config", str(cfg)), ("--log-level", "debug", "report", *args))]
        assert all(r.returncode in (0, 1) for r in outputs), [r.stderr for r in outputs]
    finally:
        fake.stop()

    texts = [p for p in pages] + [(r.stdout + r.stderr).encode() for r in outputs]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".log") for p in files) and any(p.parent.name == "state" for p in files)
    log_text = b"".join(p.read_bytes() for p in files if p.name.endswith(".log"))
    assert b"admin_api" in log_text or b"billing" in log_text  # the logs did talk about the API
    for secret in (KEY, wrong):
        for s in (secret, secret[len("sk-ant-admin01-"):]):
            needle = s.encode()
            for i, t in enumerate(texts):
                assert needle not in t, f"admin key in output #{i}"
            for p in files:
                assert needle not in p.read_bytes(), f"admin key in {p}"


def test_the_key_is_redacted_from_exceptions_in_log_lines() -> None:
    saved = structlog.get_config()
    stream = io.StringIO()
    try:
        logsetup.configure("debug", "json", stream=stream)
        logsetup.register_secret(KEY)
        log = structlog.get_logger()
        try:
            raise RuntimeError(f"request failed with headers {{'x-api-key': '{KEY}'}}")
        except RuntimeError:
            log.exception("admin_api_failed", url=f"https://x/?k={KEY}", detail={"key": KEY})
        log.error("plain", error=RuntimeError(KEY))
    finally:
        structlog.configure(**saved)
    out = stream.getvalue()
    assert "admin_api_failed" in out and "RuntimeError" in out and "[REDACTED]" in out
    assert KEY not in out


# --------------------------------------------------------------------------- the /metrics cache


class _Counting:
    def __init__(self) -> None:
        self.collects = 0
        self.value = 1

    def collect(self):
        self.collects += 1
        time.sleep(0.05)  # a render that takes a while, so concurrent scrapes overlap it
        g = GaugeMetricFamily("claude_test_value", "a value the test moves", labels=["n"])
        for n in range(200):
            g.add_metric([str(n)], self.value)
        yield g


def test_metrics_are_rendered_once_per_version_and_shared(server_factory) -> None:
    coll = _Counting()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(coll)
    version: list = [object(), 0]
    routes = StubRoutes(registry=registry, healthy=lambda: (True, "ok"), status_page=lambda: "",
                    metrics_version=lambda: (version[0], version[1]))
    s = server_factory(routes=routes)
    url = f"http://127.0.0.1:{s.port}/metrics"
    first = http_get(url)[1]
    for _ in range(30):
        assert http_get(url)[1] == first
    assert coll.collects == 1
    # a new snapshot (compared by identity, so an equal-looking one still counts): scrapes in the
    # next moment may get the previous bytes, never wait for the render, and it happens once
    coll.value = 2
    version[0] = object()
    results: list[tuple[float, bytes]] = []

    def scrape() -> None:
        t = time.perf_counter()
        body = http_get(url)[1]
        results.append((time.perf_counter() - t, body))

    threads = [threading.Thread(target=scrape) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20 and all(b"claude_test_value" in b for _, b in results)
    deadline = time.monotonic() + 2
    while b'claude_test_value{n="7"} 2.0' not in http_get(url)[1]:
        assert time.monotonic() < deadline, "the new snapshot was never rendered"
        time.sleep(0.02)
    assert coll.collects == 2  # twenty scrapes at once, one render
    version[1] += 1  # a webhook
    assert b"2.0" in http_get(url)[1] and coll.collects == 3
    # gzip for scrapers that take it (Prometheus does), the same bytes inside
    code, hdrs, body = _request(url, headers={"Accept-Encoding": "gzip"})
    assert code == 200 and hdrs["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == http_get(url)[1]
    assert coll.collects == 3


def test_the_cache_prerenders_and_lags_a_new_snapshot_at_most_max_lag() -> None:
    from prometheus_client.exposition import choose_encoder

    coll = _Counting()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(coll)
    version = [object(), 0]
    cache = MetricsCache(registry, lambda: (version[0], version[1]), max_lag=0.3)
    encoder, ctype = choose_encoder("")
    cache.get(encoder, ctype, False)
    cache.prerender()
    assert coll.collects == 1  # nothing moved: nothing rendered
    version[0] = object()
    cache.prerender()
    assert coll.collects == 2
    cache.get(encoder, ctype, False)
    assert coll.collects == 2  # the scrape found it ready

    coll.value = 3
    version[0] = object()  # nobody prerenders this time
    assert b"} 1.0" in cache.get(encoder, ctype, False)[0] and cache.wake.is_set()
    time.sleep(0.35)
    assert b"} 3.0" in cache.get(encoder, ctype, False)[0]  # past max_lag the scrape renders itself
    coll.value = 4
    version[1] += 1  # a breaker webhook: never served late
    assert b"} 4.0" in cache.get(encoder, ctype, False)[0]


# --------------------------------------------------------------------------- a webhook token that cannot be read


def _events(e, name: str) -> list[dict]:
    out = []
    for line in e.log_path.read_text().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and ev.get("event") == name:
            out.append(ev)
    return out


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_env_that_is_not_set_refuses_every_webhook_call(tmp_path: Path, exporter_factory) -> None:
    cfg = _write_config(tmp_path, "breaker_webhook: {token_env: HOOK_TOKEN}\n")
    e = exporter_factory(["--config", str(cfg), "--state-dir", str(tmp_path / "state")]).start()
    hook = e.url + "/alertmanager/webhook"
    for headers in ({}, _bearer(""), _bearer(TOKEN)):
        code, _, body = _request(hook, data=_webhook_payload(), headers=headers)
        assert code == 503, (headers, code, body)
        answer = json.loads(body)
        assert "breaker_webhook.token_env" in answer["error"] and "not set" in answer["error"]
    assert json.loads(http_get(e.url + "/breaker/agent-sdk")[1])["state"] == "closed"
    # /metrics may answer from bytes up to a second old for anything but an applied webhook
    m = e.wait_for(lambda m: sample(m, "claude_breaker_webhook_requests_total", code="503") == 3,
                   what="three 503s counted")
    assert sample(m, "claude_breaker_webhook_auth_ready") == 0
    assert sample(m, "claude_breaker_open", pool="agent-sdk") == 0
    assert "breaker webhook refuses every call" in http_get(e.url + "/")[1].decode()
    [ev] = _events(e, "breaker_webhook_token_unreadable")  # once, not once per call
    assert ev["path"] == "breaker_webhook.token_env" and "HOOK_TOKEN" in ev["reason"]
    assert ev["level"] == "warning"

    r = run_cli("validate-config", str(cfg))
    assert r.returncode == 2 and "breaker_webhook.token_env: environment variable HOOK_TOKEN is not set" in r.stderr
    r = run_cli("validate-config", str(cfg), env=clean_env(HOOK_TOKEN="   "))
    assert r.returncode == 2 and "breaker_webhook.token_env: environment variable HOOK_TOKEN is empty" in r.stderr
    r = run_cli("validate-config", str(cfg), env=clean_env(HOOK_TOKEN=TOKEN))
    assert r.returncode == 0, r.stderr
    assert TOKEN not in r.stdout + r.stderr


def test_a_token_file_is_reread_when_it_changes_and_fails_closed_when_gone(tmp_path: Path, exporter_factory) -> None:
    token_file = tmp_path / "hook-token"
    token_file.write_text(TOKEN + "\n")
    cfg = _write_config(tmp_path, f"breaker_webhook: {{token_file: {token_file}}}\n")
    e = exporter_factory(["--config", str(cfg), "--state-dir", str(tmp_path / "state")]).start()
    hook = e.url + "/alertmanager/webhook"
    resolved = _webhook_payload(status="resolved")
    assert _request(hook, data=resolved, headers=_bearer(TOKEN))[0] == 200
    e.wait_for(lambda m: sample(m, "claude_breaker_webhook_auth_ready") == 1, what="auth ready")

    # rotation: the new token works at once, the old one no longer does
    rotated = "rotated-token-9876543210"
    token_file.write_text(rotated + "\n")
    assert _request(hook, data=resolved, headers=_bearer(TOKEN))[0] == 401
    assert _request(hook, data=resolved, headers=_bearer(rotated))[0] == 200

    # deleted while serving: every call refused, the payload never applied
    token_file.unlink()
    code, _, body = _request(hook, data=_webhook_payload(), headers=_bearer(rotated))
    assert code == 503 and "breaker_webhook.token_file" in json.loads(body)["error"]
    assert str(token_file) not in body.decode()  # the file's location is for the log, not for callers
    assert _request(hook, data=_webhook_payload(), headers={})[0] == 503
    assert json.loads(http_get(e.url + "/breaker/agent-sdk")[1])["state"] == "closed"
    m = e.wait_for(lambda m: sample(m, "claude_breaker_webhook_requests_total", code="503") == 2,
                   what="two 503s counted")
    assert sample(m, "claude_breaker_webhook_auth_ready") == 0
    assert sample(m, "claude_breaker_webhook_requests_total", code="401") == 1
    assert sample(m, "claude_breaker_webhook_requests_total", code="200") == 2
    # empty is no better than missing
    token_file.write_text("\n")
    assert _request(hook, data=_webhook_payload(), headers={})[0] == 503
    assert json.loads(http_get(e.url + "/breaker/agent-sdk")[1])["state"] == "closed"

    token_file.write_text(rotated)
    assert _request(hook, data=_webhook_payload(), headers=_bearer(rotated))[0] == 200
    assert json.loads(http_get(e.url + "/breaker/agent-sdk")[1])["state"] == "open"
    e.wait_for(lambda m: sample(m, "claude_breaker_webhook_auth_ready") == 1, what="auth ready again")
    assert "breaker webhook refuses every call" not in http_get(e.url + "/")[1].decode()
    bad = _events(e, "breaker_webhook_token_unreadable")
    good = _events(e, "breaker_webhook_token_readable")
    # one event when it became unusable (deleted; still unusable when it came back empty), one when usable again
    assert [ev["path"] for ev in bad] == ["breaker_webhook.token_file"]
    assert "No such file" in bad[0]["reason"] and str(token_file) in bad[0]["reason"]
    assert len(good) == 1
    log_text = e.log_path.read_text()
    assert TOKEN not in log_text and rotated not in log_text


@pytest.mark.parametrize(("content", "reason"), [
    (None, "cannot read"), ("", "is empty"), ("two\nlines", "one line"),
])
def test_validate_config_reports_an_unusable_token_file(tmp_path: Path, content, reason) -> None:
    token_file = tmp_path / "hook-token"
    if content is not None:
        token_file.write_text(content)
    cfg = _write_config(tmp_path, f"breaker_webhook: {{token_file: {token_file}}}\n")
    r = run_cli("validate-config", str(cfg))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "breaker_webhook.token_file:" in r.stderr and reason in r.stderr, r.stderr
    assert "two" not in r.stderr and "lines" not in r.stderr  # no part of a token is echoed


def test_webhook_token_state_changes_are_logged_once_each(tmp_path: Path) -> None:
    from exporter.config import BreakerWebhookConfig
    from exporter.config.web import TokenUnavailable, WebhookToken

    token_file = tmp_path / "t"
    auth = WebhookToken(BreakerWebhookConfig(token_file=token_file))
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(TokenUnavailable) as exc:
                auth.current()
        assert exc.value.path == "breaker_webhook.token_file" and not auth.ready()
        token_file.write_text("s3cret-token-value")
        assert auth.current() == "s3cret-token-value" and auth.ready()
        assert auth.current() == "s3cret-token-value"
        token_file.write_text("other-token-value")
        assert auth.current() == "other-token-value"
    assert [(ev["event"], ev["log_level"]) for ev in logs] == [
        ("breaker_webhook_token_unreadable", "warning"), ("breaker_webhook_token_readable", "info")]
    assert "s3cret" not in repr(logs)
    assert WebhookToken(BreakerWebhookConfig()).current() is None  # none configured: none required


# --------------------------------------------------------------------------- hostile webhook bodies


def test_hostile_webhook_bodies_get_a_400_with_a_reason(tmp_path: Path, exporter_factory) -> None:
    cfg = _write_config(tmp_path)
    e = exporter_factory(["--config", str(cfg), "--state-dir", str(tmp_path / "state")]).start()
    head = b"POST /alertmanager/webhook HTTP/1.1\r\nHost: x\r\n"
    nested = b'{"version": "4", "status": "firing", "alerts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    bodies = [nested]
    for starts in ("0000-01-01T00:00:00Z", "99999-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59"):
        p = json.loads(_webhook_payload())
        p["alerts"][0]["startsAt"] = starts
        bodies.append(json.dumps(p).encode())
    for body in bodies:
        r = _raw(e.port, head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert _status(r) == 400, r[:300]
        assert json.loads(r.split(b"\r\n\r\n", 1)[1])["error"]
    assert json.loads(http_get(e.url + "/breaker/agent-sdk")[1])["state"] == "closed"
    e.wait_for(lambda m: sample(m, "claude_breaker_webhook_requests_total", code="400") == len(bodies),
               what="the 400s counted")


def test_a_flood_of_breaker_alerts_is_capped_and_counted(tmp_path: Path, exporter_factory) -> None:
    cfg = _write_config(tmp_path)
    e = exporter_factory(["--config", str(cfg), "--state-dir", str(tmp_path / "state")]).start()
    hook = e.url + "/alertmanager/webhook"
    for round_ in range(5):
        alerts = [{"status": "firing", "labels": {"breaker": "open", "pool": "agent-sdk" if i % 2 else "ghost",
                                                  "n": str(i)},
                   "fingerprint": f"{round_}-{i}"} for i in range(6000)]
        body = json.dumps({"version": "4", "status": "firing", "alerts": alerts}).encode()
        assert _request(hook, data=body)[0] == 200
    code, body = http_get(e.url + "/breaker/agent-sdk")
    answer = json.loads(body)
    assert code == 503 and answer["state"] == "open"
    assert len(answer["alerts"]) == 10 and answer["alert_count"] == 100 and answer["alerts_not_listed"] == 90
    assert len(body) < 20_000
    m = e.wait_for(lambda m: sample(m, "claude_breaker_alerts", pool="agent-sdk") == 100, what="100 alerts held")
    assert sample(m, "claude_breaker_alerts_dropped_total", reason="unknown_pool") == 15000
    assert sample(m, "claude_breaker_alerts_dropped_total", reason="pool_cap") == 15000 - 100


# --------------------------------------------------------------------------- web config values that cannot work


def test_header_values_and_bcrypt_hashes_that_cannot_work_are_config_errors(tmp_path: Path) -> None:
    salt_bad = HASH[:28] + ("A" if HASH[28] != "A" else "B") + HASH[29:]  # last salt character must be . O e u
    web = tmp_path / "web.yml"
    web.write_text(json.dumps({
        "basic_auth_users": {"salty": salt_bad, "slow": "$2b$31$" + HASH[7:], "fast": "$2b$03$" + HASH[7:],
                             "alphabet": HASH[:10] + "!" + HASH[11:], "ok": HASH},
        "http_server_config": {"headers": {"Content-Security-Policy": "default-src 'self' \u2603",
                                           "Strict-Transport-Security": "max-age=1\x00"}},
    }))
    cfg = _write_config(tmp_path, f"web_config_file: {web}\n")
    r = run_cli("validate-config", str(cfg))
    assert r.returncode == 2, r.stdout
    for path in ("basic_auth_users.salty: ", "basic_auth_users.slow: ", "basic_auth_users.fast: ",
                 "basic_auth_users.alphabet: ", "http_server_config.headers.Content-Security-Policy: ",
                 "http_server_config.headers.Strict-Transport-Security: "):
        assert path in r.stderr, f"{path!r} missing from:\n{r.stderr}"
    assert "basic_auth_users.ok" not in r.stderr and "cost" in r.stderr
    assert HASH[7:] not in r.stderr  # hashes are not echoed
    r = run_cli("serve", "--config", str(cfg), "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 2 and "Content-Security-Policy" in r.stderr


def test_the_checker_accepts_exactly_the_bcrypt_hashes_bcrypt_can_use() -> None:
    import random

    rng = random.Random(7)
    alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    verdicts = set()
    for i in range(400):
        salt = "".join(rng.choice(alphabet) for _ in range(21)) + rng.choice(".Oeu" if i % 2 else alphabet)
        digest = "".join(rng.choice(alphabet) for _ in range(31))
        hashed = f"$2b$04${salt}{digest}"
        try:
            parse_web_config({"basic_auth_users": {"u": hashed}})
            accepted = True
        except ConfigError:
            accepted = False
        try:
            bcrypt.checkpw(b"x", hashed.encode())
            usable = True
        except ValueError:
            usable = False
        assert accepted == usable, hashed
        verdicts.add(accepted)
    assert verdicts == {True, False}


def test_validate_config_reports_an_otlp_sources_unusable_token(tmp_path: Path) -> None:
    token_file = tmp_path / "otlp-token"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
sources:
  - name: fleet
    kind: otlp
    listen: "127.0.0.1:0"
    token_file: {token_file}
""")
    r = run_cli("validate-config", str(cfg))
    assert r.returncode == 2 and "sources[fleet].token_file:" in r.stderr and "cannot read" in r.stderr, r.stderr
    token_file.write_text("s3cret-otlp-token\n")
    r = run_cli("validate-config", str(cfg))
    assert r.returncode == 0 and "s3cret" not in r.stdout + r.stderr, r.stdout + r.stderr
