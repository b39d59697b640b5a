"""Per-call overhead of costtrace's manual call API, against the bare call and a bare OTel span.

Run: python benchmarks/bench_overhead.py [--calls N] [--repeats R]

Every loop runs in one process. The first one runs before any OpenTelemetry SDK is installed (the
API's no-op spans: what costtrace costs an app that exports nothing). Then an SDK TracerProvider (a
BatchSpanProcessor feeding an exporter that drops spans) and MeterProvider are installed and shared
by all the other loops, so they compare like with like:

- bare call:          the fake client call alone (what the app does without costtrace);
- bare OTel span:     the fake call inside one ``tracer.start_span(...)`` / ``span.end()``;
- GenAI span+metrics: what a typical GenAI instrumentation does per call: a span with the same
                      number of attributes as costtrace's call span, plus the conventions' three
                      histogram records (input tokens, output tokens, duration);
- costtrace:          the fake call inside ``costtrace.llm_call`` + ``call.record_response`` in a task
                      (span, usage normalisation, pricing, task rollup; metrics queued);
- costtrace + drain:  the same, plus recording the queued metrics (normally done at collection time,
                      off the call path): the full CPU cost per call.

Overhead = loop time - bare call time, per call. The aim: costtrace's overhead within 2x of a bare span's.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable, Sequence

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

RESPONSE = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}


class DropExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def fake_client_call() -> dict[str, object]:
    return RESPONSE


def timed(fn: Callable[[int], None], calls: int, repeats: int) -> float:
    """Median over repeats of µs per call."""
    results = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn(calls)
        results.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    import costtrace
    from costtrace import metrics as ct_metrics

    def bare(n: int) -> None:
        for _ in range(n):
            fake_client_call()

    def with_costtrace(n: int) -> None:
        with costtrace.task("bench", feature="bench"):
            for _ in range(n):
                with costtrace.llm_call(provider="openai", model="gpt-4o-mini") as call:
                    call.record_response(fake_client_call())

    # Measure the call path alone: the queued metrics are recorded by the explicit drain below,
    # not by the background drainer competing for the GIL inside the timed loop.
    ct_metrics.DRAIN_AT = ct_metrics.MAX_PENDING = 1 << 30

    def with_costtrace_and_drain(n: int) -> None:
        with_costtrace(n)
        ct_metrics.drain()

    with_costtrace_and_drain(2000)  # warm-up: price resolution, caches
    t_bare_nosdk = timed(bare, args.calls, args.repeats)
    t_ct_nosdk = timed(with_costtrace_and_drain, args.calls, args.repeats)

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=1 << 16))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    tracer = trace.get_tracer("bench")
    meter = metrics.get_meter("bench")
    token_hist = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    duration_hist = meter.create_histogram("gen_ai.client.operation.duration", unit="s")

    # The attributes costtrace's call span carries for this call, measured from a real one.
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    probe = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(probe))
    with_costtrace(1)
    call_span = next(s for s in probe.get_finished_spans() if s.kind == trace.SpanKind.CLIENT)
    n_attrs = len(call_span.attributes or {})
    probe.shutdown()  # the probe drops everything after this
    start_attrs = {f"gen_ai.attr.{i}": "value" for i in range(n_attrs // 2)}
    end_attrs = {f"gen_ai.usage.{i}": i for i in range(n_attrs - n_attrs // 2)}
    metric_attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    }

    def bare_span(n: int) -> None:
        for _ in range(n):
            span = tracer.start_span("chat gpt-4o-mini", kind=trace.SpanKind.CLIENT)
            fake_client_call()
            span.end()

    def genai_instrumentation(n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            span = tracer.start_span("chat gpt-4o-mini", kind=trace.SpanKind.CLIENT, attributes=start_attrs)
            resp = fake_client_call()
            usage = resp["usage"]
            span.set_attributes(end_attrs)
            span.end()
            token_hist.record(usage["prompt_tokens"], {**metric_attrs, "gen_ai.token.type": "input"})  # type: ignore[index]
            token_hist.record(usage["completion_tokens"], {**metric_attrs, "gen_ai.token.type": "output"})  # type: ignore[index]
            duration_hist.record(time.perf_counter() - t0, metric_attrs)

    with_costtrace_and_drain(2000)
    bare_span(2000)
    genai_instrumentation(2000)

    t_bare = timed(bare, args.calls, args.repeats)
    t_span = timed(bare_span, args.calls, args.repeats)
    t_genai = timed(genai_instrumentation, args.calls, args.repeats)
    t_ct = timed(with_costtrace, args.calls, args.repeats)
    ct_metrics.drain()
    t_ct_full = timed(with_costtrace_and_drain, args.calls, args.repeats)

    def line(label: str, t: float, base: float) -> str:
        return f"{label:34s}: {t:8.2f} µs/call  (overhead {t - base:6.2f} µs)"

    span_overhead = t_span - t_bare
    print(f"calls per loop: {args.calls}, repeats: {args.repeats} (median)")
    print("-- no OpenTelemetry SDK installed (API no-op spans)")
    print(line("bare call", t_bare_nosdk, t_bare_nosdk))
    print(line("costtrace (incl. metrics)", t_ct_nosdk, t_bare_nosdk))
    print(f"-- OpenTelemetry SDK installed; costtrace call span has {n_attrs} attributes")
    print(line("bare call", t_bare, t_bare))
    print(line("bare OTel span", t_span, t_bare))
    print(line(f"GenAI span ({n_attrs} attrs) + 3 histograms", t_genai, t_bare))
    print(line("costtrace, call path", t_ct, t_bare))
    print(line("costtrace, call path + metric drain", t_ct_full, t_bare))
    print(
        f"ratio to bare span overhead: costtrace call path {(t_ct - t_bare) / span_overhead:.2f}x, "
        f"with metric drain {(t_ct_full - t_bare) / span_overhead:.2f}x (aim <= 2x); "
        f"typical GenAI instrumentation {(t_genai - t_bare) / span_overhead:.2f}x"
    )
    print(
        f"ratio to typical GenAI instrumentation: call path {(t_ct - t_bare) / (t_genai - t_bare):.2f}x, "
        f"with metric drain {(t_ct_full - t_bare) / (t_genai - t_bare):.2f}x"
    )
    provider.shutdown()


if __name__ == "__main__":
    main()
