"""What the span options cost: OpenInference attributes and task span status, on against off.

Run: python benchmarks/bench_span_options.py [--rounds R]

Same set-up as bench_overhead.py (an SDK TracerProvider with a BatchSpanProcessor feeding an exporter
that drops spans). Two loops, each timed with both options on and with both off, interleaved round by
round so a busy machine slows both sides alike; medians over the rounds:

- call path: ``costtrace.llm_call`` + ``record_response`` inside one long task (``openinference.span.kind``
  at start, ``llm.cost.*`` at the end);
- task path: a task with one call that ends ``failure`` (the call's attributes, plus the task's
  ``input.value`` JSON, its ``output.value`` summary and the ERROR status).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from bench_overhead import DropExporter, fake_client_call


def timed(fn: Callable[[int], None], n: int) -> float:
    gc.collect()
    start = time.perf_counter()
    fn(n)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=1 << 16))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))

    import costtrace
    from costtrace import metrics as ct_metrics

    ct_metrics.DRAIN_AT = ct_metrics.MAX_PENDING = 1 << 30  # the call path alone; drained after each loop

    def calls(n: int) -> None:
        with costtrace.task("bench", feature="bench"):
            for _ in range(n):
                with costtrace.llm_call(provider="openai", model="gpt-4o-mini") as call:
                    call.record_response(fake_client_call())
        ct_metrics.drain()

    def tasks(n: int) -> None:
        for _ in range(n):
            with costtrace.task("bench", feature="bench", customer="acme") as t:
                with costtrace.llm_call(provider="openai", model="gpt-4o-mini") as call:
                    call.record_response(fake_client_call())
                t.fail("validation_failed")
        ct_metrics.drain()

    loops = (("call path", calls, 10_000), ("task with one call", tasks, 5_000))
    results: dict[tuple[str, bool], list[float]] = {(name, on): [] for name, _, _ in loops for on in (True, False)}
    for _, fn, _ in loops:  # warm-up: price resolution, caches
        for on in (True, False):
            costtrace.configure_spans(openinference=on, task_status=on)
            fn(2_000)
    for r in range(args.rounds):
        for name, fn, n in loops:
            for on in (True, False) if r % 2 else (False, True):
                costtrace.configure_spans(openinference=on, task_status=on)
                results[(name, on)].append(timed(fn, n))
    print(f"rounds: {args.rounds} (median µs)")
    for name, _, _ in loops:
        on, off = statistics.median(results[(name, True)]), statistics.median(results[(name, False)])
        print(f"{name:20s}: options on {on:7.1f} µs, off {off:7.1f} µs, added {on - off:5.1f} µs")
    provider.shutdown()


if __name__ == "__main__":
    main()
