"""Where the time of an instrumented call and of a task goes: the call path alone, with parts left out.

Run: python benchmarks/profile_call_path.py [--loops call,task] [--without metrics,usage,...] [--calls N]
     python benchmarks/profile_call_path.py --instructions        # exact counts, under valgrind

costtrace's OpenAI wrapper runs around a canned ``ChatCompletion`` (no SDK call, no HTTP), with the
same OTel SDK as ``bench_openai.py`` (a BatchSpanProcessor feeding an exporter that drops spans, an
in-memory metric reader; queued metrics are recorded inside the measurement). Next to it: one bare
span, and the official openai-v2 instrumentation's wrapper around the same canned response.

``--without PART`` replaces one part with a no-op (or a value computed once), so the difference to the
full loop is what that part costs: ``metrics`` (a call's queued metrics), ``task-metrics``,
``usage`` (reading the response's usage), ``pricing``, ``end-attributes`` (a call span's attributes
at its end: usage, response, cost, price source), ``openinference`` (``llm.cost.*``, ``input.value``
...), ``task-attributes`` (a task span's ``costtrace.task.*`` rollups). Parts left out change what
is exported: this is a profile, not a configuration.

``--instructions`` counts the CPU instructions of each loop with valgrind (``apt-get install
valgrind``): the count of a run of N iterations minus that of a run of none, divided by N. Unlike
time, it does not depend on what else the machine runs; it is ~50x slower.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench_openai import COMPLETION, MESSAGES, MODEL  # the same response and request (run from benchmarks/)

LOOPS = ("span", "openai-v2", "call", "call in task", "task + call", "task")
PARTS = ("metrics", "task-metrics", "usage", "pricing", "end-attributes", "openinference", "task-attributes")


def set_up(without: Sequence[str]) -> dict[str, Callable[[int], None]]:
    """The OTel SDK, the wrappers, the parts left out; returns the loops (iterations -> None)."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class DropExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=1 << 16))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    tracer = trace.get_tracer("bench")

    import httpx
    from openai.types.chat import ChatCompletion

    import costtrace
    from costtrace import calls, tasks
    from costtrace import metrics as ct_metrics
    from costtrace.instrumentation import openai as ct_openai

    ct_metrics.DRAIN_AT = ct_metrics.MAX_PENDING = 1 << 30  # drained at the end of each loop, counted
    ct_openai._SDK.load()
    ct_openai._settings.active = True
    response = ChatCompletion.model_validate(COMPLETION)

    class Client:
        base_url = httpx.URL("https://api.openai.com/v1/")

    class Resource:
        _client = Client()

    resource = Resource()
    ours = ct_openai._call_wrapper("chat")

    def canned(**kwargs: Any) -> Any:
        return response

    if "metrics" in without:
        ct_metrics.record_call = lambda *a, **k: None
    if "task-metrics" in without:
        ct_metrics.record_task = lambda *a, **k: None
    if "usage" in without:
        info = calls.usage_from_response(response, "openai")  # type: ignore[attr-defined]
        calls.usage_from_response = lambda *a, **k: info  # type: ignore[attr-defined]
    if "pricing" in without:
        from costtrace.price import catalog

        real = catalog.default_catalog().cost
        priced: list[Any] = []

        def once(*a: Any, **k: Any) -> Any:
            if not priced:
                priced.append(real(*a, **k))
            return priced[0]

        catalog.default_catalog().cost = once  # type: ignore[method-assign]
    if "end-attributes" in without:
        calls.end_attributes = lambda *a, **k: {}  # type: ignore[attr-defined]
    if "openinference" in without:
        costtrace.configure_spans(openinference=False)
    if "task-attributes" in without:
        tasks.summary_attributes = lambda *a, **k: {}  # type: ignore[attr-defined]

    def span(n: int) -> None:
        for _ in range(n):
            tracer.start_span("chat gpt-4o-mini").end()

    def call(n: int) -> None:
        for _ in range(n):
            ours(canned, resource, (), {"model": MODEL, "messages": MESSAGES})
        ct_metrics.drain()

    def call_in_task(n: int) -> None:
        with costtrace.task("bench"):
            call(n)

    def task_each(n: int) -> None:
        for _ in range(n):
            with costtrace.task("bench"):
                ours(canned, resource, (), {"model": MODEL, "messages": MESSAGES})
        ct_metrics.drain()

    def task(n: int) -> None:
        for _ in range(n):
            with costtrace.task("bench"):
                pass
        ct_metrics.drain()

    loops: dict[str, Callable[[int], None]] = {
        "span": span,
        "call": call,
        "call in task": call_in_task,
        "task + call": task_each,
        "task": task,
    }
    try:
        from opentelemetry._logs import get_logger
        from opentelemetry.instrumentation.openai_v2.instruments import Instruments
        from opentelemetry.instrumentation.openai_v2.patch import chat_completions_create_v_old

        v2 = chat_completions_create_v_old(tracer, get_logger("v2"), Instruments(metrics.get_meter("v2")), False)

        def official(n: int) -> None:
            for _ in range(n):
                v2(canned, resource, (), {"model": MODEL, "messages": MESSAGES})

        loops["openai-v2"] = official
    except Exception as exc:  # the official instrumentation is not installed, or changed its internals
        print(f"openai-v2 not measured: {type(exc).__name__}: {exc}", file=sys.stderr)
    return loops


def timed(loops: dict[str, Callable[[int], None]], names: Sequence[str], calls: int, rounds: int) -> None:
    """CPU µs per iteration, batches of 200 alternating between the loops; p10 and median."""
    samples: dict[str, list[float]] = {name: [] for name in names if name in loops}
    for name in samples:
        loops[name](200)  # warm-up: first price lookup, caches
    for _ in range(rounds):
        for name in samples:
            gc.collect()
            start = time.process_time()
            loops[name](calls)
            samples[name].append((time.process_time() - start) / calls * 1e6)
    for name, values in samples.items():
        ordered = sorted(values)
        print(f"{name:14s} {ordered[len(ordered) // 10]:8.1f} µs (p10)  {statistics.median(values):8.1f} µs (median)")


def instructions(names: Sequence[str], without: Sequence[str], calls: int) -> None:
    """Instructions per iteration of each loop, from valgrind's counts of N and of 0 iterations."""
    if shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (apt-get install valgrind)")

    def count(name: str, n: int) -> int:
        command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__]
        command += ["--worker", json.dumps([name, n, list(without)])]
        out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        found = re.search(r"Collected : (\d+)", out.stderr)
        if found is None:
            sys.exit(f"valgrind gave no count for {name}: {out.stderr[-500:]}")
        return int(found.group(1))

    for name in names:
        per = (count(name, calls) - count(name, 0)) / calls
        print(f"{name:14s} {per / 1000:8.1f} k instructions per iteration", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--loops", default=",".join(LOOPS), help=f"comma-separated, of: {', '.join(LOOPS)}")
    parser.add_argument("--without", default="", help=f"comma-separated parts left out, of: {', '.join(PARTS)}")
    parser.add_argument("--calls", type=int, default=1000, help="iterations per timed batch (or counted run)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--instructions", action="store_true", help="count instructions under valgrind")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # under valgrind: set up, warm up, run one loop n times
        name, n, without = json.loads(args.worker)
        loop = set_up(without)[name]
        loop(200)
        if n:
            loop(n)
        return
    names = [n for n in args.loops.split(",") if n]
    without = [p for p in args.without.split(",") if p]
    for item in (*names, *without):
        if item not in LOOPS and item not in PARTS:
            parser.error(f"unknown loop or part {item!r}")
    print(f"without: {', '.join(without) or 'nothing'}")
    if args.instructions:
        instructions(names, without, args.calls)
    else:
        timed(set_up(without), names, args.calls, args.rounds)


if __name__ == "__main__":
    main()
