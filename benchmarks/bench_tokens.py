"""Microseconds per ``count_tokens`` call once the encoding is loaded.

Run: ``python benchmarks/bench_tokens.py``. Prints one line per case; no assertions. The first call
(loading the encoding) is timed separately and excluded from the per-call figures.
"""

from __future__ import annotations

import time
import timeit

from costtrace.price import tokens
from costtrace.price.tokens import count_tokens

SHORT = "Summarise the ticket in one sentence."
PARAGRAPH = (
    "Customer reports that invoices exported on the 3rd were missing VAT lines; they re-ran the export "
    "twice, opened ticket T-4821 and attached the CSV. Support confirmed the bug in the exporter. "
)
PROMPT_1K = (PARAGRAPH * 6)[:1024]
TEXT_4K = (PARAGRAPH * 24)[:4096]
CHAT = [
    {"role": "system", "content": "You are a support assistant. Answer briefly."},
    *[{"role": "user" if i % 2 == 0 else "assistant", "content": PARAGRAPH} for i in range(9)],
]


def per_call_us(fn: object, number: int) -> float:
    timer = timeit.Timer(fn)  # type: ignore[arg-type]
    best = min(timer.repeat(repeat=5, number=number))
    return best / number * 1e6


def main() -> None:
    for model in (None, "gpt-4o"):
        started = time.perf_counter()
        first = count_tokens("warm up", model=model)
        load_ms = (time.perf_counter() - started) * 1e3
        print(f"model={model!r}: first call (loads the encoding) {load_ms:.1f} ms -> {first!r}")
        cases = [
            ("short text", SHORT, 20_000),
            ("~1 KB prompt", PROMPT_1K, 2_000),
            ("~4 KB text", TEXT_4K, 1_000),
            ("10-message chat", CHAT, 1_000),
        ]
        for label, value, number in cases:
            us = per_call_us(lambda value=value: count_tokens(value, model=model), number)
            n = count_tokens(value, model=model)
            print(f"  {label:16} {us:8.1f} us/call  ({int(n)} tokens, {n.source}, {n.encoding})")
    encoding = tokens._ready.get("cl100k_base")
    if encoding is not None:
        us = per_call_us(lambda: encoding.encode_ordinary(PROMPT_1K), 2_000)
        print(f"baseline: tiktoken encode_ordinary on the ~1 KB prompt {us:.1f} us/call")


if __name__ == "__main__":
    main()
