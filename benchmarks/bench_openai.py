"""Overhead of costtrace's OpenAI instrumentation on the real SDK, per call and per stream chunk.

Run: python benchmarks/bench_openai.py [--calls N] [--repeats R] [--chunks A B]

The real ``openai`` client is used with an in-process mock transport (``httpx.MockTransport``, or
``httpx2.MockTransport`` for openai 3.x, which uses httpx2) returning canned bytes, so no network
time is measured: only the SDK's own work and what each instrumentation adds to it. All loops run in
one process with one OpenTelemetry SDK (a BatchSpanProcessor feeding an exporter that drops spans):

- bare client:          the SDK call alone;
- bare OTel span:       the SDK call inside one ``tracer.start_span`` / ``span.end``;
- costtrace:            the SDK call instrumented by costtrace, in a task (span, usage, pricing,
                        task rollup, queued metrics recorded at the end of each loop);
- manual llm_call:      the bare SDK call inside ``costtrace.llm_call`` + ``record_response``: the
                        shared call path alone, so the difference to the line above is what the
                        OpenAI wrapper itself adds;
- openai-v2:            the official ``opentelemetry-instrumentation-openai-v2`` alone, if it imports.

Streams: a chat completion stream of A and of B content chunks (plus the usage chunk) is read to
the end. The per-chunk overhead is the slope between the two; the per-call part is the intercept.
Overhead = loop time - bare client time. The aim: costtrace below 2x a bare span's overhead per call.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello."}]
COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "logprobs": None, "finish_reason": "stop"}
    ],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 150,
        "total_tokens": 1350,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}


def sse_body(n_chunks: int) -> bytes:
    def chunk(choices: list[Any], usage: Any = None) -> bytes:
        body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": COMPLETION["model"]}
        body["choices"] = choices
        body["usage"] = usage
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    parts = [chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    parts += [chunk([{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]) for _ in range(n_chunks)]
    parts.append(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    parts.append(chunk([], COMPLETION["usage"]))
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


class DropExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def httpx_module() -> Any:
    """The httpx the installed openai uses: httpx2 for openai 3.x, httpx before."""
    try:
        importlib.import_module("openai._httpx2")
        return importlib.import_module("httpx2")
    except ImportError:
        return importlib.import_module("httpx")


def make_client(sse_chunks: int | None = None) -> Any:
    import openai

    httpx = httpx_module()
    json_body = json.dumps(COMPLETION).encode()
    stream_body = sse_body(sse_chunks or 0)

    def handler(request: Any) -> Any:
        if sse_chunks is not None:
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream_body)
        return httpx.Response(200, headers={"content-type": "application/json"}, content=json_body)

    http_client = httpx.Client(transport=httpx.MockTransport(handler))
    return openai.OpenAI(api_key="bench", base_url="http://bench.invalid/v1", http_client=http_client, max_retries=0)


def interleaved(
    variants: dict[str, tuple[Callable[[int], None], int, Callable[[], None], Callable[[], None]]], repeats: int
) -> dict[str, float]:
    """µs per call of each variant: median over ``repeats`` rounds, each round running every variant once.

    Interleaving cancels the drift of a shared machine (other processes, CPU frequency); CPU time of
    the process (``time.process_time``, the span exporter thread included) ignores time spent
    descheduled. Each variant is ``(loop, calls, set_up, tear_down)``.
    """
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (loop, calls, set_up, tear_down) in variants.items():
            set_up()
            try:
                gc.collect()
                start = time.process_time()
                loop(calls)
                samples[name].append((time.process_time() - start) / calls * 1e6)
            finally:
                tear_down()
    return {name: statistics.median(v) for name, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--chunks", type=int, nargs=2, default=(10, 200), metavar=("A", "B"))
    args = parser.parse_args()

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=1 << 16))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    tracer = trace.get_tracer("bench")

    import openai

    import costtrace
    from costtrace import metrics as ct_metrics
    from costtrace.instrumentation.openai import OpenAIInstrumentor

    ct_metrics.DRAIN_AT = ct_metrics.MAX_PENDING = 1 << 30  # drained explicitly at the end of each loop

    client = make_client()
    streams = {n: make_client(sse_chunks=n) for n in args.chunks}

    def call(n: int) -> None:
        create = client.chat.completions.create
        for _ in range(n):
            create(model=MODEL, messages=MESSAGES)

    def call_in_span(n: int) -> None:
        create = client.chat.completions.create
        for _ in range(n):
            span = tracer.start_span("chat gpt-4o-mini", kind=trace.SpanKind.CLIENT)
            create(model=MODEL, messages=MESSAGES)
            span.end()

    def manual_call_in_task(n: int) -> None:
        create = client.chat.completions.create
        with costtrace.task("bench"):
            for _ in range(n):
                with costtrace.llm_call("openai", MODEL) as llm:
                    llm.record_response(create(model=MODEL, messages=MESSAGES))
        ct_metrics.drain()

    def call_in_task(n: int) -> None:
        with costtrace.task("bench"):
            call(n)
        ct_metrics.drain()

    def streamer(chunks: int, in_task: bool) -> Callable[[int], None]:
        def loop(n: int) -> None:
            create = streams[chunks].chat.completions.create  # looked up now: patched or not
            for _ in range(n):
                for _chunk in create(
                    model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
                ):
                    pass

        def loop_in_task(n: int) -> None:
            with costtrace.task("bench"):
                loop(n)
            ct_metrics.drain()

        return loop_in_task if in_task else loop

    stream_calls = max(1, args.calls // 10)
    ours = OpenAIInstrumentor()
    nothing: Callable[[], None] = lambda: None  # noqa: E731
    variants: dict[str, tuple[Callable[[int], None], int, Callable[[], None], Callable[[], None]]] = {
        "bare": (call, args.calls, nothing, nothing),
        "span": (call_in_span, args.calls, nothing, nothing),
        "costtrace": (call_in_task, args.calls, ours.instrument, ours.uninstrument),
        "manual": (manual_call_in_task, args.calls, nothing, nothing),
    }
    for n in args.chunks:
        variants[f"stream{n}.bare"] = (streamer(n, False), stream_calls, nothing, nothing)
        variants[f"stream{n}.costtrace"] = (streamer(n, True), stream_calls, ours.instrument, ours.uninstrument)
    v2_error = None
    try:  # the official instrumentation, alone, when it imports here
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as V2

        v2 = V2()
        variants["v2"] = (call, args.calls, v2.instrument, v2.uninstrument)
        for n in args.chunks:
            variants[f"stream{n}.v2"] = (streamer(n, False), stream_calls, v2.instrument, v2.uninstrument)
    except Exception as exc:
        v2_error = f"{type(exc).__name__}: {exc}"

    interleaved({name: (loop, 50, up, down) for name, (loop, _, up, down) in variants.items()}, 2)  # warm-up
    results = interleaved(variants, args.repeats)

    bare = results["bare"]
    span_ov = results["span"] - bare

    def line(label: str, t: float, base: float) -> str:
        return f"{label:40s}: {t:9.2f} µs  (overhead {t - base:7.2f} µs)"

    print(
        f"openai {openai.__version__}; calls per loop: {args.calls} (streams {stream_calls}), "
        f"interleaved rounds: {args.repeats}; CPU µs per call, median"
    )
    print("-- non-streaming chat completion, per call")
    print(line("bare client", bare, bare))
    print(line("bare client in one bare OTel span", results["span"], bare))
    print(line("costtrace instrumented, in a task", results["costtrace"], bare))
    print(line("  same call in a manual costtrace.llm_call", results["manual"], bare))
    if "v2" in results:
        print(line("official openai-v2 instrumented", results["v2"], bare))
    ct_ov = results["costtrace"] - bare
    print(f"costtrace overhead / bare span overhead: {ct_ov / span_ov:.2f}x (aim < 2x)")
    if "v2" in results:
        print(f"costtrace overhead / openai-v2 overhead: {ct_ov / (results['v2'] - bare):.2f}x")
    else:
        print(f"official openai-v2 not measured: {v2_error}")

    a, b = args.chunks
    print(f"-- streaming chat completion read to the end ({a} and {b} content chunks + usage chunk)")
    for who in ("costtrace", "v2"):
        if f"stream{a}.{who}" not in results:
            continue
        ov_a = results[f"stream{a}.{who}"] - results[f"stream{a}.bare"]
        ov_b = results[f"stream{b}.{who}"] - results[f"stream{b}.bare"]
        per_chunk = (ov_b - ov_a) / (b - a)
        per_call = ov_a - per_chunk * (a + 3)
        for n, ov in ((a, ov_a), (b, ov_b)):
            base = results[f"stream{n}.bare"]
            print(line(f"{who}: stream of {n}", base + ov, base))
        sdk_per_chunk = (results[f"stream{b}.bare"] - results[f"stream{a}.bare"]) / (b - a)
        print(
            f"{who}: per chunk {per_chunk:.2f} µs (the bare SDK's own: {sdk_per_chunk:.2f} µs), "
            f"per stream call {per_call:.2f} µs"
        )
    # The per-chunk work alone, without the SDK's parsing (~60 µs a chunk) blurring it: the same
    # parsed chunks iterated bare, and through costtrace's stream proxy and chat accumulator.
    from openai.types.chat import ChatCompletionChunk

    from costtrace.calls import LLMCall
    from costtrace.instrumentation._base import SyncStreamProxy
    from costtrace.instrumentation.openai import _ChatStream, _Request

    raw = [line[6:] for line in sse_body(b).split(b"\n\n") if line.startswith(b"data: {")]
    parsed = [ChatCompletionChunk.construct(**json.loads(x)) for x in raw]

    class Parsed:
        def __iter__(self) -> Any:
            return iter(parsed)

    def iterate_bare(n: int) -> None:
        for _ in range(n):
            for _chunk in Parsed():
                pass

    def iterate_proxied(n: int) -> None:
        for _ in range(n):
            call = LLMCall("openai", MODEL)
            for _chunk in SyncStreamProxy(
                Parsed(), call, _ChatStream(_Request(call, "chat", MODEL, MESSAGES, True), hide_usage_chunk=False)
            ):
                pass

    reps = max(1, args.calls // 20)
    iters = interleaved(
        {"bare": (iterate_bare, reps, nothing, nothing), "proxied": (iterate_proxied, reps, nothing, nothing)},
        args.repeats,
    )
    t_iter_bare, t_iter_proxy = iters["bare"], iters["proxied"]
    print(
        f"isolated, {len(parsed)} parsed chunks: bare iteration {t_iter_bare / len(parsed):.3f} µs/chunk, "
        f"through costtrace's proxy + accumulator {t_iter_proxy / len(parsed):.3f} µs/chunk "
        f"(+{(t_iter_proxy - t_iter_bare) / len(parsed):.2f} µs/chunk, the call's start/end not included)"
    )
    provider.shutdown()


if __name__ == "__main__":
    main()
