"""Microseconds per ``PriceCatalog.cost`` against ``genai_prices.calc_price``, in one run.

Run: ``python benchmarks/bench_pricing.py``. Prints one line per case; no assertions. The first
lookup (which imports genai-prices' data) is timed separately, once with the compiled ``.pyc`` files
(the usual case) and once in a fresh interpreter without them (the first run after installing).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime

from costtrace.price.catalog import PriceCatalog
from costtrace.usage import Usage

AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

FIRST_LOOKUP = """
import time
t = time.perf_counter()
from costtrace.price.catalog import PriceCatalog
from costtrace.usage import Usage
PriceCatalog().cost(Usage(input_tokens=1000, output_tokens=100), provider="openai", model="gpt-4o")
print(f"{(time.perf_counter() - t) * 1e3:.0f}")
"""


def per_call_us(fn: Callable[[], object], number: int) -> float:
    best = min(timeit.Timer(fn).repeat(repeat=5, number=number))
    return best / number * 1e6


def cold_first_lookup_ms() -> str:
    """First lookup in a fresh interpreter that cannot use any cached bytecode."""
    with tempfile.TemporaryDirectory() as empty:
        env = {**os.environ, "PYTHONPYCACHEPREFIX": empty, "PYTHONDONTWRITEBYTECODE": "1"}
        out = subprocess.run([sys.executable, "-c", FIRST_LOOKUP], env=env, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else f"failed: {out.stderr.strip()[-200:]}"


def main() -> None:
    catalog = PriceCatalog()
    started = time.perf_counter()
    catalog.cost(Usage(input_tokens=1000, output_tokens=100), provider="openai", model="gpt-4o", at=AT)
    warm_ms = (time.perf_counter() - started) * 1e3
    print(f"first lookup (imports genai-prices data, .pyc cached): {warm_ms:.0f} ms")
    print(f"first lookup in a fresh interpreter without .pyc files: {cold_first_lookup_ms()} ms")

    import genai_prices

    print(f"genai-prices {genai_prices.__version__}, Python {sys.version.split()[0]}")
    catalog.set_price("llama-3.1-70b-local", input_per_mtok=0, output_per_mtok=0)
    cached = Usage(
        input_tokens=250_000,
        output_tokens=2_000,
        cache_read_input_tokens=100_000,
        cache_write_input_tokens=50_000,
        cache_write_1h_input_tokens=10_000,
    )
    plain = Usage(input_tokens=1_200, output_tokens=300, cache_read_input_tokens=1_000)
    cases = [
        ("openai gpt-4o, flat rates", "openai", "openai", "gpt-4o", plain, {}),
        ("openai gpt-4o, priority tier", "openai", "openai", "gpt-4o", plain, {"service_tier": "priority"}),
        (
            "anthropic claude-sonnet-4-5, tier + cache",
            "anthropic",
            "anthropic",
            "claude-sonnet-4-5",
            cached,
            {},
        ),
        ("deepseek-chat, time-of-day prices", "deepseek", "deepseek", "deepseek-chat", plain, {}),
        ("azure.ai.openai gpt-4o (openai fallback)", "azure.ai.openai", "azure", "gpt-4o", plain, {}),
    ]
    print(f"{'case':44} {'costtrace':>10} {'calc_price':>11} {'speed-up':>9}")
    for label, provider, gp_provider, model, usage, context in cases:
        gp_usage = genai_prices.Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_input_tokens,
            cache_write_tokens=usage.cache_write_input_tokens,
        )
        batch = context.get("processing") == "batch"
        tier = context.get("service_tier")
        ours = per_call_us(
            lambda: catalog.cost(usage, provider=provider, model=model, at=AT, service_tier=tier, batch=batch),
            20_000,
        )
        theirs = per_call_us(
            lambda: genai_prices.calc_price(
                gp_usage,
                model,
                provider_id=gp_provider,
                genai_request_timestamp=AT,
                price_context=context or None,
            ),
            2_000,
        )
        print(f"{label:44} {ours:8.2f}us {theirs:9.1f}us {theirs / ours:8.0f}x")
    own = per_call_us(lambda: catalog.cost(plain, provider="vllm", model="llama-3.1-70b-local", at=AT), 20_000)
    print(f"{'your own price (set_price), at given':44} {own:8.2f}us")
    now = per_call_us(lambda: catalog.cost(plain, provider="deepseek", model="deepseek-chat"), 20_000)
    print(f"{'deepseek-chat, at=None (reads the clock)':44} {now:8.2f}us")


if __name__ == "__main__":
    main()
