"""Cost of pricing one request: the hot path of every log line.

Prints microseconds per ``Pricer.cost_pico`` call over 100k requests spread over ~10
models, a few days and the batch / US-only variants, beside genai-prices' own
``calc_price`` on a sample, for scale.

    python bench/bench_pricing.py
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

from genai_prices import Usage, calc_price

from exporter.prices import load_pricer
from exporter.core.records import Tokens

MODELS = [
    "claude-sonnet-4-5-20250929", "claude-opus-4-6", "claude-sonnet-4-6", "claude-haiku-4-5-20251001",
    "claude-opus-4-1-20250805", "claude-sonnet-4-20250514", "claude-haiku-5-5", "claude-opus-4-8",
    "claude-opus-4-5-20251101", "<synthetic>",
]
N = 100_000


def main() -> None:
    rng = random.Random(7)
    start = datetime(2026, 9, 1, tzinfo=UTC).timestamp()
    requests = []
    for _ in range(N):
        tokens = Tokens(input=rng.randint(0, 5_000), output=rng.randint(0, 8_000),
                        cache_read=rng.randint(0, 250_000), cache_write_5m=rng.randint(0, 20_000),
                        cache_write_1h=rng.choice((0, 0, rng.randint(0, 20_000))),
                        web_search_requests=rng.choice((0, 0, 0, 1)))
        requests.append((rng.choice(MODELS), tokens, start + rng.uniform(0, 14 * 86_400),
                         rng.choice(("standard",) * 9 + ("batch",)), rng.choice(("", "", "us"))))

    pricer = load_pricer()
    t0 = time.perf_counter()
    cold = [pricer.cost_pico(m, t, when=w, service_tier=s, inference_geo=g) for m, t, w, s, g in requests]
    cold_s = time.perf_counter() - t0
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for m, t, w, s, g in requests:
            pricer.cost_pico(m, t, when=w, service_tier=s, inference_geo=g)
        best = min(best, time.perf_counter() - t0)
    total_pico = sum(c for c in cold if c is not None)

    sample = requests[:2_000]
    t0 = time.perf_counter()
    for m, t, w, s, _g in sample:
        if m == "<synthetic>":
            continue
        calc_price(Usage(input_tokens=t.total_input, output_tokens=t.output, cache_read_tokens=t.cache_read,
                         cache_write_tokens=t.cache_write_5m + t.cache_write_1h,
                         cache_write_5m_tokens=t.cache_write_5m, cache_write_1h_tokens=t.cache_write_1h),
                   m, provider_id="anthropic", genai_request_timestamp=datetime.fromtimestamp(w, UTC),
                   price_context={"processing": "batch"} if s == "batch" else None)
    genai_us = (time.perf_counter() - t0) / len(sample) * 1e6

    print(f"requests: {N:,} over {len(MODELS)} models, 14 UTC days, batch/us variants")
    print(f"cost_pico, first pass (resolves each model/day/variant once): {cold_s / N * 1e6:.2f} us/call")
    print(f"cost_pico, warm (best of 5): {best / N * 1e6:.2f} us/call")
    print(f"genai_prices.calc_price, for scale: {genai_us:.1f} us/call")
    print(f"total priced: ${total_pico / 10**12:,.6f} (unpriced: {sum(c is None for c in cold):,} requests)")


if __name__ == "__main__":
    main()
