"""The tests' Admin API: the simulated one the demo runs, with a fixed clock and a test key.

One simulated Admin API serves both the demo and the tests (``exporter.demo.admin_api``), so
a fixture here exercises the very server ``serve --demo`` shows. This layer only picks the
tests' defaults: a fixed, movable clock (the real time at start unless ``now`` is given) and a
key that is plainly a test's.

In-process use::

    with FakeAdminApi(key="sk-ant-admin01-test", now=datetime(2026, 3, 10, 12, tzinfo=UTC)) as fake:
        fake.add_spend(datetime(2026, 3, 9, 8, tzinfo=UTC), "123.45", workspace_id=None,
                       model="claude-sonnet-4-5-20250929", token_type="output_tokens", tokens=1000)
        fake.inject("429", retry_after=2)      # the next request gets a 429
        fake.set_now(datetime(2026, 3, 10, 13, tzinfo=UTC))
        ... point a client at fake.url ...
        fake.count("cost_report")              # requests seen per endpoint

As a process (for end-to-end tests)::

    python -m tests.fake_admin_api --port 0 --key sk-ant-admin01-test --dataset data.json

prints ``FAKE_ADMIN_API_URL=http://127.0.0.1:PORT`` once listening, and takes the key-less
``/_fake/...`` control requests (see ``SimulatedAdminApi``). The dataset file is JSON:
``{"now": "2026-03-10T12:00:00Z", "spend": [{"at": ..., "amount_cents": "1.5", ...add_spend
keywords...}], "claude_code": [{"day": "2026-03-09", ...add_claude_code keywords...}]}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

from exporter.billing.wire import parse_rfc3339
from exporter.demo.admin_api import FAULT_KINDS, PATHS, Fault, RequestRecord, SimulatedAdminApi, SpendEntry

__all__ = ["DEFAULT_KEY", "FAULT_KINDS", "PATHS", "FakeAdminApi", "Fault", "RequestRecord", "SpendEntry", "main"]

DEFAULT_KEY = "sk-ant-admin01-fake-key-for-tests-only"


class FakeAdminApi(SimulatedAdminApi):
    """The simulated Admin API on a fixed clock: ``now``, else the real time when it is made."""

    def __init__(self, *, key: str = DEFAULT_KEY, now: datetime | None = None, port: int = 0,
                 control: bool = False) -> None:
        super().__init__(key=key, now=now or datetime.now(UTC), port=port, organization_id="org_fake",
                         control=control)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_admin_api", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", default=DEFAULT_KEY)
    parser.add_argument("--now", help="RFC 3339; default: the dataset's, else the real time")
    parser.add_argument("--dataset", help="JSON file with now/spend/claude_code")
    args = parser.parse_args(list(argv) if argv is not None else None)
    fake = FakeAdminApi(key=args.key, port=args.port, control=True)
    if args.dataset:
        with open(args.dataset, encoding="utf-8") as fh:
            fake.load_dataset(json.load(fh))
    if args.now:
        fake.set_now(parse_rfc3339(args.now, "--now"))
    fake.start()
    print(f"FAKE_ADMIN_API_URL={fake.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
