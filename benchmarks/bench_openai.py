"""Overhead of costtrace's OpenAI instrumentation on the real SDK: one table, measured in one run.

Run: python benchmarks/bench_openai.py [--calls 3000] [--rounds 5] [--batch 100] [--chunks 10 200]
     python benchmarks/bench_openai.py --profile "costtrace task + call"   # cProfile, top 40 by tottime

Each configuration runs in a process of its own (this script started again with ``--worker NAME``):
instrumentations patch the SDK globally and would interfere. Every worker sets up the same things: the
real ``openai`` client on an in-process mock transport (``httpx.MockTransport``, or ``httpx2`` for
openai 3.x) returning canned bytes, so no network time is measured; a TracerProvider with a
BatchSpanProcessor feeding an exporter that drops spans; a MeterProvider with an InMemoryMetricReader.
The workers start and warm up together, then measure one at a time: round r runs the configurations in
an order rotated by r, which cancels the drift of a shared machine.

Clock and statistic: CPU time of the worker process (``time.process_time``: the span processor's
thread is counted, time spent descheduled by other users of the machine is not). In each round a
worker runs ``--calls`` calls in batches of ``--batch``; its figure is the 10th percentile of the
per-batch µs per call ("fast mode": the batches least disturbed), the median printed next to it.
Each call configuration's worker also times the bare SDK call, its batches alternating with the
configuration's (an instrumentation is uninstrumented for those batches, off the clock): overhead =
configuration - bare within one process, so differences between processes do not enter it. Rounds
are combined by their median.

Configurations (as printed):

- ``bare``: the SDK call alone; ``floor``: the call inside one bare ``tracer.start_span`` / ``end``
  (the "x floor" column); ``floor, current span``: the same span made current
  (``start_as_current_span``), as instrumentations do;
- ``openai-v2``: the official opentelemetry-instrumentation-openai-v2 (skipped, with the import error
  printed, if it does not import);
- ``costtrace call``: ``OpenAIInstrumentor().instrument()``, the call outside any task;
  ``costtrace call in task``: each call inside one running task (one task around each batch);
  ``costtrace task + call``: a new ``costtrace.task`` around each single call;
  ``costtrace manual llm_call``: the bare call in ``costtrace.llm_call`` + ``record_response``, in a task;
  ``costtrace task, around the SDK call``: a task around the uninstrumented call (a task that records
  no call), to set against ``floor``;
- ``costtrace task, no call``: ``with costtrace.task("bench"): pass`` against ``span alone``
  (``tracer.start_span("bench").end()``), printed in µs and x that span.

costtrace's queued metrics are recorded inside the measurement: ``costtrace.metrics.drain()`` ends
each batch. Streams (bare, costtrace in a task, openai-v2; a process each): ``--calls / 10`` chat
completion streams of A and of B content chunks (+ role, finish and usage chunks) read to the end, in
alternating batches of ``--batch / 10``; the overhead's slope between A and B is the per-chunk part, its
intercept the per-call part. Another worker times costtrace's stream proxy + accumulator alone on parsed
chunks (the SDK's parsing, ~70 µs a chunk, would blur a 1 µs effect).

Printed: the table (markdown), the stream lines, the versions, spans dropped by the BatchSpanProcessor,
and which of issue 15's targets are met. A benchmark, not a test: it exits 0 whatever the figures.

Example (the CI smoke run, ~20 s)::

    $ python benchmarks/bench_openai.py --calls 200 --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import IO, Any

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
EXTRA_CHUNKS = 3  # role, finish and usage chunks around the content chunks of a stream

CALLS = (
    "bare",
    "floor",
    "floor, current span",
    "openai-v2",
    "costtrace call",
    "costtrace call in task",
    "costtrace task + call",
    "costtrace manual llm_call",
    "costtrace task, around the SDK call",
)
NO_CALL = ("span alone", "costtrace task, no call")
STREAMS = ("stream bare", "stream costtrace", "stream openai-v2", "stream isolated")
CONFIGS = CALLS + NO_CALL + STREAMS
PROTOCOL = "@bench-worker "  # prefix of the worker's lines to the parent on stdout; others are ignored

Samples = dict[str, list[float]]  # series -> µs per item, one value per batch
Measure = Callable[[int], Samples]  # items per series -> samples


# -- the worker: one configuration in this process ---------------------------------------------------


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


class DroppedSpans(logging.Handler):
    """Counts the BatchSpanProcessor's "Queue full, dropping Span" warnings."""

    count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "dropping" in record.getMessage():
            self.count += 1


DROPPED = DroppedSpans()


def install_otel() -> Any:
    """The same OTel SDK in every worker: batch span processor + dropping exporter, in-memory metrics."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class DropExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    logging.getLogger("opentelemetry").addHandler(DROPPED)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    return trace.get_tracer("bench")


def timed(
    series: Mapping[str, Callable[[int], None]],
    batches: int,
    size: int,
    per: float = 1.0,
    before: Mapping[str, Callable[[], None]] | None = None,
) -> Samples:
    """µs per item of each series, one sample per batch of ``size``; the series alternate batch by batch.

    ``before[name]`` runs before each batch of that series, off the clock (e.g. instrument / uninstrument).
    """
    samples: Samples = {name: [] for name in series}
    clock = time.process_time
    gc.collect()
    for _ in range(batches):
        for name, run in series.items():
            if before and name in before:
                before[name]()
            start = clock()
            run(size)
            samples[name].append((clock() - start) * 1e6 / (size * per))
    return samples


def toggles(instrumentor: Any) -> dict[str, Callable[[], None]]:
    """Hooks for :func:`timed`: the bare series runs uninstrumented, the configuration's series instrumented."""

    def on() -> None:
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()

    def off() -> None:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()

    return {"bare": off, "": on}


def build(name: str, args: argparse.Namespace) -> Measure:
    """Set this process up for configuration ``name``; returns its measurement (calls -> samples).

    A call configuration's samples have two series, alternating batch by batch in this process: ``""``
    (the configuration) and ``"bare"`` (the same SDK call alone, uninstrumented for that batch). Its
    overhead is the difference within the process, so differences between processes (memory layout,
    a core's load) do not enter it.
    """
    tracer = install_otel()
    size = args.batch
    if name.startswith("stream"):
        return build_stream(name, args)

    def single(run: Callable[[int], None]) -> Measure:
        return lambda calls: timed({"": run}, max(1, calls // size), size)

    if name == "span alone":

        def span_alone(n: int) -> None:
            start_span = tracer.start_span
            for _ in range(n):
                start_span("bench").end()

        return single(span_alone)
    if name == "costtrace task, no call":
        import costtrace
        from costtrace.metrics import drain

        def task_alone(n: int) -> None:
            task = costtrace.task
            for _ in range(n):
                with task("bench"):
                    pass
            drain()

        return single(task_alone)

    client = make_client()

    def call(n: int) -> None:
        create = client.chat.completions.create  # looked up now: patched or not
        for _ in range(n):
            create(model=MODEL, messages=MESSAGES)

    def paired(run: Callable[[int], None], before: Mapping[str, Callable[[], None]] | None = None) -> Measure:
        series = {"bare": call, "": run}
        return lambda calls: timed(series, max(1, calls // size), size, before=before)

    if name == "bare":
        return single(call)
    if name == "floor":
        from opentelemetry.trace import SpanKind

        def in_span(n: int) -> None:
            create, start_span = client.chat.completions.create, tracer.start_span
            for _ in range(n):
                span = start_span("chat gpt-4o-mini", kind=SpanKind.CLIENT)
                create(model=MODEL, messages=MESSAGES)
                span.end()

        return paired(in_span)
    if name == "floor, current span":
        from opentelemetry.trace import SpanKind

        def in_current_span(n: int) -> None:
            create, start_as_current_span = client.chat.completions.create, tracer.start_as_current_span
            for _ in range(n):
                with start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT):
                    create(model=MODEL, messages=MESSAGES)

        return paired(in_current_span)
    if name == "openai-v2":
        v2 = importlib.import_module("opentelemetry.instrumentation.openai_v2").OpenAIInstrumentor()
        return paired(call, toggles(v2))

    import costtrace
    from costtrace.instrumentation.openai import OpenAIInstrumentor
    from costtrace.metrics import drain

    task = costtrace.task
    if name == "costtrace manual llm_call":

        def manual(n: int) -> None:
            create, llm_call = client.chat.completions.create, costtrace.llm_call
            with task("bench"):
                for _ in range(n):
                    with llm_call("openai", MODEL) as llm:
                        llm.record_response(create(model=MODEL, messages=MESSAGES))
            drain()

        return paired(manual)
    if name == "costtrace task, around the SDK call":

        def task_around_call(n: int) -> None:  # the SDK not instrumented: a task that records no call
            create = client.chat.completions.create
            for _ in range(n):
                with task("bench"):
                    create(model=MODEL, messages=MESSAGES)
            drain()

        return paired(task_around_call)

    def outside_task(n: int) -> None:
        call(n)
        drain()

    def in_one_task(n: int) -> None:
        with task("bench"):
            call(n)
        drain()

    def task_each(n: int) -> None:
        create = client.chat.completions.create
        for _ in range(n):
            with task("bench"):
                create(model=MODEL, messages=MESSAGES)
        drain()

    loops = {"costtrace call": outside_task, "costtrace call in task": in_one_task, "costtrace task + call": task_each}
    return paired(loops[name], toggles(OpenAIInstrumentor()))


def build_stream(name: str, args: argparse.Namespace) -> Measure:
    """Streams of A and B content chunks read to the end (µs per stream), or the isolated proxy (µs per chunk)."""
    size = max(1, args.batch // 10)
    if name == "stream isolated":
        return build_isolated(size, max(args.chunks))
    clients = {str(n): make_client(sse_chunks=n) for n in args.chunks}
    in_task = name == "stream costtrace"
    if in_task:
        import costtrace
        from costtrace.instrumentation.openai import OpenAIInstrumentor
        from costtrace.metrics import drain

        OpenAIInstrumentor().instrument()
    elif name == "stream openai-v2":
        importlib.import_module("opentelemetry.instrumentation.openai_v2").OpenAIInstrumentor().instrument()

    def reader(client: Any) -> Callable[[int], None]:
        def read(n: int) -> None:
            create = client.chat.completions.create
            for _ in range(n):
                for _chunk in create(
                    model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
                ):
                    pass

        def read_in_task(n: int) -> None:
            with costtrace.task("bench"):
                read(n)
            drain()

        return read_in_task if in_task else read

    series = {n: reader(client) for n, client in clients.items()}  # "10" and "200": alternating batches
    return lambda calls: timed(series, max(1, calls // 10 // size), size)


def build_isolated(size: int, chunks: int) -> Measure:
    """Parsed chunks iterated bare, and through costtrace's stream proxy and chat accumulator."""
    from openai.types.chat import ChatCompletionChunk

    from costtrace.calls import LLMCall
    from costtrace.instrumentation._base import SyncStreamProxy
    from costtrace.instrumentation.openai import _ChatStream, _Request

    raw = [line[6:] for line in sse_body(chunks).split(b"\n\n") if line.startswith(b"data: {")]
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
            accumulator = _ChatStream(_Request(call, "chat", MODEL, MESSAGES, True), hide_usage_chunk=False)
            for _chunk in SyncStreamProxy(Parsed(), call, accumulator):
                pass

    series = {"bare": iterate_bare, "proxied": iterate_proxied}
    return lambda calls: timed(series, max(1, calls // 10 // size), size, per=len(parsed))  # as many as streams


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(PROTOCOL + json.dumps(message) + "\n")
    sys.stdout.flush()


def worker(name: str, args: argparse.Namespace) -> None:
    """Set up, warm up, say ready; then measure one round per ``run`` line read on stdin."""
    try:
        measure = build(name, args)
        measure(max(args.batch, args.calls // 10))  # warm-up: imports, caches, price lookups
    except Exception as exc:
        emit({"error": f"{type(exc).__name__}: {exc}"})
        return
    emit({"ready": True, "http": httpx_module().__name__ if "openai" in sys.modules else None})
    for line in sys.stdin:
        if line.strip() != "run":
            break
        try:
            emit({"samples": measure(args.calls), "dropped": DROPPED.count})
        except Exception as exc:
            emit({"error": f"{type(exc).__name__}: {exc}"})
            return


def profile(name: str, args: argparse.Namespace) -> None:
    """cProfile one round of configuration ``name`` in this process; the top 40 functions by tottime."""
    import cProfile
    import pstats

    measure = build(name, args)
    measure(max(args.batch, args.calls // 10))
    profiler = cProfile.Profile()
    profiler.enable()
    measure(args.calls)
    profiler.disable()
    print(f"{name}: one round (--calls {args.calls}) under cProfile, whose own overhead inflates every figure")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(40)


# -- the parent: start the workers, rotate the rounds, print the table -------------------------------


class Worker:
    """One configuration's process, driven line by line."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.error: str | None = None
        self.dropped = 0
        self.http: str | None = None  # the httpx module the SDK uses, as the worker found it
        self.stderr: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by close())
        command = [sys.executable, __file__, "--worker", name, "--calls", str(args.calls), "--batch", str(args.batch)]
        command += ["--chunks", *map(str, args.chunks)]
        env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict and set layouts in every worker
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1, env=env
        )

    def read(self) -> dict[str, Any] | None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(PROTOCOL):
                message: dict[str, Any] = json.loads(line[len(PROTOCOL) :])
                if "error" in message:
                    self.error = message["error"]
                    return None
                return message
        self.process.wait()
        self.stderr.seek(0)
        tail = self.stderr.read().strip().splitlines()[-1:]
        self.error = f"worker exited with {self.process.returncode}: {' '.join(tail)}"
        return None

    def run(self) -> Samples | None:
        assert self.process.stdin is not None
        if self.error is not None:
            return None
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        message = self.read()
        if message is None:
            return None
        self.dropped = message["dropped"]
        samples: Samples = message["samples"]
        return samples

    def stop(self) -> None:
        """Ask the worker to exit (end of its stdin); ``close`` waits for it."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.stop()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        self.stderr.close()


def p10(values: Sequence[float]) -> float:
    """10th percentile, linear between the closest ranks."""
    ordered = sorted(values)
    position = 0.1 * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def versions(http: str) -> str:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (
        f"python {platform.python_version()}, openai {version('openai')} ({http} {version(http)}), "
        f"opentelemetry-sdk {version('opentelemetry-sdk')}, "
        f"opentelemetry-instrumentation-openai-v2 {version('opentelemetry-instrumentation-openai-v2')}, "
        f"costtrace {version('costtrace')}"
    )


def rounds(args: argparse.Namespace) -> tuple[dict[str, list[Samples]], dict[str, Worker]]:
    """Start every worker, then run the rounds: each group of configurations rotated by the round's number."""
    workers = {name: Worker(name, args) for name in CONFIGS}
    try:
        started = time.perf_counter()
        for w in workers.values():  # all started at once; measuring begins when every one is warm
            ready = w.read()
            w.http = ready["http"] if ready else None
        print(f"{len(workers)} workers ready in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        results: dict[str, list[Samples]] = {name: [] for name in CONFIGS}
        for r in range(args.rounds):
            for group in (CALLS + NO_CALL, STREAMS):
                shift = r % len(group)
                for name in group[shift:] + group[:shift]:
                    samples = workers[name].run()
                    if samples is not None:
                        results[name].append(samples)
            elapsed = time.perf_counter() - started
            print(f"round {r + 1}/{args.rounds} done at {elapsed:.1f} s", file=sys.stderr, flush=True)
    finally:
        for w in workers.values():
            w.stop()
        for w in workers.values():
            w.close()
    return results, workers


def report(args: argparse.Namespace, results: dict[str, list[Samples]], workers: dict[str, Worker]) -> None:
    def per_round(name: str, stat: Callable[[Sequence[float]], float], series: str = "") -> list[float]:
        return [stat(samples[series]) for samples in results[name]]

    def overheads(
        name: str, stat: Callable[[Sequence[float]], float], base: str = "bare", series: str = ""
    ) -> list[float]:
        """Per round: the configuration's statistic minus the base's (rounds where both ran)."""
        if len(results[name]) != len(results[base]):
            return []
        return [c - b for c, b in zip(per_round(name, stat, series), per_round(base, stat, series), strict=True)]

    def own_overheads(name: str, stat: Callable[[Sequence[float]], float]) -> list[float]:
        """Per round: the configuration's statistic minus its own process's bare call's."""
        return [stat(samples[""]) - stat(samples["bare"]) for samples in results[name] if "bare" in samples]

    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}" if a is not None and b else "n/a"

    def figure(value: float | None, unit: str = "", digits: int = 1) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}{unit}"

    http = next((w.http for w in workers.values() if w.http), "httpx")
    print(f"bench_openai: {versions(http)}")
    print(
        f"{len(results['bare'])} rounds x {args.calls} calls in batches of {args.batch}, one process per "
        "configuration, rounds rotated; CPU time (time.process_time); p10 of the per-batch µs per call; "
        "overhead over the bare call timed in the same process, batch by batch; median over rounds"
    )
    for name in CONFIGS:
        if workers[name].error:
            print(f"  {name}: not measured ({workers[name].error})")
    bare_p10, bare_median = median(per_round("bare", p10)), median(per_round("bare", statistics.median))
    print(f"bare SDK call: {figure(bare_p10)} µs per call (p10; median {figure(bare_median)})")
    print()
    print("| configuration | µs per call overhead | x floor | x openai-v2 | median-batch overhead | rounds min-max |")
    print("|---|---|---|---|---|---|")
    floor = median(own_overheads("floor", p10))
    v2 = median(own_overheads("openai-v2", p10))
    combined: dict[str, float | None] = {}
    for name in CALLS[1:]:
        per = own_overheads(name, p10)
        combined[name] = ov = median(per)
        spread = f"{min(per):.1f} - {max(per):.1f}" if per else "n/a"
        median_ov = median(own_overheads(name, statistics.median))
        print(f"| {name} | {figure(ov)} | {ratio(ov, floor)} | {ratio(ov, v2)} | {figure(median_ov)} | {spread} |")
    span = median(per_round("span alone", p10))
    task_alone = median(per_round("costtrace task, no call", p10))
    combined["costtrace task, no call"] = task_alone
    task_median = median(per_round("costtrace task, no call", statistics.median))
    print(
        f"| costtrace task, no call: its µs, x a bare span alone ({figure(span)} µs) | {figure(task_alone)} | "
        f"{ratio(task_alone, span)} | n/a | {figure(task_median)} (span alone: "
        f"{figure(median(per_round('span alone', statistics.median)))}) | |"
    )
    print()

    a, b = args.chunks
    print(f"streams of {a} and {b} content chunks (+{EXTRA_CHUNKS}) read to the end, overhead over the bare stream:")
    bare_a, bare_b = per_round("stream bare", p10, str(a)), per_round("stream bare", p10, str(b))
    sdk_chunk = median([(y - x) / (b - a) for x, y in zip(bare_a, bare_b, strict=True)])
    print(f"  the bare SDK: {figure(sdk_chunk, digits=2)} µs per chunk")
    stream_chunk: float | None = None
    for who, label in (("stream costtrace", "costtrace, call in task"), ("stream openai-v2", "openai-v2")):
        ov_a = overheads(who, p10, "stream bare", str(a))
        ov_b = overheads(who, p10, "stream bare", str(b))
        slopes = [(y - x) / (b - a) for x, y in zip(ov_a, ov_b, strict=True)]
        intercepts = [x - s * (a + EXTRA_CHUNKS) for x, s in zip(ov_a, slopes, strict=True)]
        chunk = median(slopes)
        if who == "stream costtrace":
            stream_chunk = chunk
        print(
            f"  {label}: {figure(chunk, ' µs', 2)} per chunk, {figure(median(intercepts), ' µs')} per stream call "
            f"(stream of {a}: +{figure(median(ov_a))} µs, of {b}: +{figure(median(ov_b))} µs)"
        )
    isolated: float | None = None
    if results["stream isolated"]:
        proxied, bare = per_round("stream isolated", p10, "proxied"), per_round("stream isolated", p10, "bare")
        isolated = median([x - y for x, y in zip(proxied, bare, strict=True)])
        print(
            f"  isolated, parsed chunks: bare iteration {figure(median(bare), digits=3)} µs/chunk, through "
            f"costtrace's proxy + accumulator {figure(median(proxied), digits=3)} µs/chunk "
            f"(+{figure(isolated, digits=2)} µs/chunk; the call's start/end not included)"
        )
    else:
        print(f"  isolated, parsed chunks: not measured ({workers['stream isolated'].error})")
    dropped = {w.name: w.dropped for w in workers.values() if w.dropped}
    print(f"spans dropped by the BatchSpanProcessor: {sum(dropped.values())} {dropped or ''}".rstrip())
    print()

    def target(label: str, value: float | None, limit: float | None, shown: str) -> None:
        verdict = "n/a" if value is None or limit is None else "met" if value <= limit else "NOT met"
        print(f"  [{verdict:7s}] {label}: {shown}")

    print("targets (issue 15):")
    for name in ("costtrace call", "costtrace call in task"):
        ov = combined[name]
        target(f"{name} <= openai-v2", ov, v2, f"{figure(ov)} vs {figure(v2)} µs")
        target(f"{name} <= 1.5x floor", ov, None if floor is None else 1.5 * floor, f"{ratio(ov, floor)}x")
    ov = combined["costtrace task + call"]
    target("costtrace task + call <= 2.5x floor", ov, None if floor is None else 2.5 * floor, f"{ratio(ov, floor)}x")
    target(
        "costtrace task, no call <= 1.2x a bare span",
        task_alone,
        None if span is None else 1.2 * span,
        f"{ratio(task_alone, span)}x",
    )
    target("stream <= 1 µs per chunk, end to end", stream_chunk, 1.0, figure(stream_chunk, " µs", 2))
    target("stream <= 1 µs per chunk, isolated proxy + accumulator", isolated, 1.0, figure(isolated, " µs", 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per configuration and round")
    parser.add_argument("--rounds", "--repeats", type=int, default=5, dest="rounds", help="rotated rounds")
    parser.add_argument("--batch", type=int, default=100, help="calls per timed batch")
    parser.add_argument("--chunks", type=int, nargs=2, default=(10, 200), metavar=("A", "B"))
    parser.add_argument("--profile", choices=CONFIGS, metavar="CONFIG", help=f"cProfile one of: {', '.join(CONFIGS)}")
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args)
    elif args.profile:
        profile(args.profile, args)
    else:
        report(args, *rounds(args))


if __name__ == "__main__":
    main()
