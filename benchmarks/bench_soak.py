"""Memory soak: RSS over a long run at a sustained call rate from several threads, ledger on and off.

Run: python benchmarks/bench_soak.py [--calls 1000000] [--rate 2000] [--threads 8] [--ledger on|off|both]
                                     [--warmup-fraction 0.1] [--sample-every 10000] [--tracemalloc]

Smoke: ``python benchmarks/bench_soak.py --calls 20000``. A full run (1M calls per ledger setting at
2,000 calls/s) takes ~17 minutes. With ``--ledger both`` each setting runs in its own process (so one
does not inherit the other's heap), one after the other, and a table of both is printed at the end.

The target (issue 15): RSS flat after warm-up (max RSS after warm-up minus RSS at the end of warm-up
within 2 MB) over 1M calls at a sustained 2,000 calls/s from 8 threads, ledger on and off, with the
BatchSpanProcessor's dropped-span count next to the figures.

Why costtrace's manual API and not the real OpenAI SDK: the SDK itself costs ~550 µs of CPU per call
on this 2-core machine (request building, httpx, pydantic parsing) and the GIL holds one process to
about one core, so 2,000 SDK calls/s cannot be sustained whatever costtrace does. The calls here take
the path costtrace shares with its SDK wrappers: ``costtrace.llm_call`` (span, attempt, dimensions)
plus ``call.record_response`` of a canned OpenAI chat completion dict (usage with cached and
reasoning tokens: normalisation, pricing, task rollup, queued metrics, ledger record), inside
``costtrace.task`` blocks of 1-3 calls. Each call is paced like a network wait: every thread sleeps
until its next slot, so the process is mostly idle, as an LLM app is.

What each thread does, task after task (dimensions from a small fixed set, so metric series stay few):

- 1, 2 or 3 calls to gpt-4o-mini;
- every 50th task: a call, ``retry("validation_failed")``, a second call, ``escalate("gpt-4o")``, a
  call to gpt-4o;
- every 37th task: a call that raises ``TimeoutError`` inside ``llm_call`` (recorded as a failed
  attempt), ``retry("timeout")``, a second call;
- outcomes: every 23rd task fails, every 41st is partial, the others succeed.

OpenTelemetry, as an app runs it: a TracerProvider with a ``BatchSpanProcessor`` at the SDK's
defaults (queue 2048, batch 512, 5 s delay) feeding an exporter that counts spans and drops them, and
a MeterProvider with a ``PeriodicExportingMetricReader`` (every 5 s) to an exporter that keeps only
two numbers. Dropped spans = spans ended (counted by a second span processor) - spans the exporter
received after ``shutdown()``; the SDK's own count (``otel.sdk.processor.span.processed`` with
``error.type=queue_full``, enabled here with ``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``) is
printed next to it.

RSS (VmRSS of /proc/self/status) is sampled every ``--sample-every`` calls; warm-up is the first
``--warmup-fraction`` of the calls (price resolution, caches, the SDK's queues and the allocator's
arenas filling). ``--tracemalloc`` (slow: use it on a short run) prints the top 10 allocation sites
that grew between the end of warm-up and the end of the run.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Read by the BatchSpanProcessor's constructor: it then counts what it drops in a metric.
os.environ.setdefault("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

FEATURES = ("support", "billing", "search", "onboarding")
CUSTOMERS = ("acme", "globex", "initech", "umbrella", "hooli", "stark")
TASK_NAMES = ("resolve_ticket", "extract_refund", "answer_question")


def completion(model: str, prompt_tokens: int, completion_tokens: int, cached: int, reasoning: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-soak",
        "object": "chat.completion",
        "created": 1741569952,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Done."}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
    }


MINI = [
    completion("gpt-4o-mini-2024-07-18", 1200, 150, 1024, 0),
    completion("gpt-4o-mini-2024-07-18", 850, 90, 0, 0),
    completion("gpt-4o-mini-2024-07-18", 3400, 410, 2048, 0),
    completion("gpt-4o-mini-2024-07-18", 620, 35, 0, 0),
]
FULL = [
    completion("gpt-4o-2024-08-06", 1500, 220, 1280, 0),
    completion("gpt-4o-2024-08-06", 900, 120, 0, 0),
]


class CountingExporter(SpanExporter):
    """Receives the BatchSpanProcessor's batches, counts the spans, keeps nothing."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


class EndCounter(SpanProcessor):
    """Counts every span ended (all of them reach the BatchSpanProcessor's ``on_end`` too)."""

    def __init__(self) -> None:
        self._count = itertools.count()
        self.ended = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        next(self._count)  # atomic under the GIL, unlike ``+=``

    def total(self) -> int:
        return next(self._count)  # after N spans, next() returns N (call once, at the end)


class MetricsSink(MetricExporter):
    """Keeps the number of exports and the SDK's count of spans dropped by its BatchSpanProcessor."""

    def __init__(self) -> None:
        super().__init__(preferred_temporality={}, preferred_aggregation={})
        self.exports = 0
        self.series = 0
        self.bsp_dropped: int | None = None

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.exports += 1
        series = 0
        for rm in metrics_data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    points = list(metric.data.data_points)
                    series += len(points)
                    if metric.name == "otel.sdk.processor.span.processed":
                        dropped = 0
                        for p in points:
                            if (getattr(p, "attributes", None) or {}).get("error.type") == "queue_full":
                                dropped += int(getattr(p, "value", 0))
                        temporality = getattr(metric.data, "aggregation_temporality", None)
                        if temporality == AggregationTemporality.DELTA:
                            self.bsp_dropped = (self.bsp_dropped or 0) + dropped
                        else:
                            self.bsp_dropped = dropped
        self.series = series
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def native_mb() -> tuple[float, float, float]:
    """(SQLite's heap, malloc's bytes in use, malloc's arenas + mmapped blocks) in MB; NaN if unavailable.

    tracemalloc sees only Python's allocations: these tell whether RSS growth is SQLite's (page cache,
    statements) or the C allocator holding freed memory (fragmentation across threads' arenas)."""
    nan = float("nan")
    sqlite_mb = malloc_used = malloc_held = nan
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")
        lib.sqlite3_memory_used.restype = ctypes.c_int64
        sqlite_mb = lib.sqlite3_memory_used() / 2**20
    except (OSError, AttributeError):
        pass
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        malloc_used = (info.uordblks + info.hblkhd) / 2**20
        malloc_held = (info.arena + info.hblkhd) / 2**20
    except (OSError, AttributeError):
        pass
    return sqlite_mb, malloc_used, malloc_held


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Soak:
    """The paced workload: ``threads`` threads sharing ``calls`` calls at ``rate`` calls/s overall."""

    def __init__(self, calls: int, rate: float, threads: int, sample_every: int, warmup_calls: int) -> None:
        self.calls = calls
        self.rate = rate
        self.threads = threads
        self.sample_every = sample_every
        self.warmup_calls = warmup_calls
        self._done = itertools.count(1)
        self.samples: list[tuple[int, float, float, tuple[float, float, float, int]]] = []  # calls, s, RSS MB, native
        self.warmup_rss: float | None = None
        self.tasks = 0
        self.failed_calls = 0
        self.max_lag_s = 0.0
        self.on_warmup_end: Any = None
        self.backlog: Any = lambda: 0  # records waiting for the ledger writer
        self._lock = threading.Lock()
        self.t0 = 0.0

    def _call_done(self) -> None:
        n = next(self._done)
        if n == self.warmup_calls or n % self.sample_every == 0:
            rss = rss_mb()
            with self._lock:
                self.samples.append((n, time.perf_counter() - self.t0, rss, (*native_mb(), self.backlog())))
                if n == self.warmup_calls:
                    self.warmup_rss = rss
                    if self.on_warmup_end is not None:
                        self.on_warmup_end()

    def run(self) -> float:
        per_thread = [
            self.calls // self.threads + (1 if i < self.calls % self.threads else 0) for i in range(self.threads)
        ]
        workers = [
            threading.Thread(target=self._worker, args=(i, per_thread[i]), name=f"soak-{i}")
            for i in range(self.threads)
        ]
        self.t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return time.perf_counter() - self.t0

    def _worker(self, index: int, quota: int) -> None:
        import costtrace

        interval = self.threads / self.rate  # seconds between two calls of this thread
        offset = index / self.rate  # the threads' slots interleave
        done = 0
        tasks = 0
        failed = 0
        max_lag = 0.0
        t0 = self.t0

        def pace() -> None:
            nonlocal max_lag
            slot = t0 + offset + done * interval
            wait = slot - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            elif -wait > max_lag:
                max_lag = -wait

        def call(model: str, response: dict[str, Any]) -> None:
            nonlocal done
            pace()
            with costtrace.llm_call("openai", model) as llm:
                llm.record_response(response)
            done += 1
            self._call_done()

        def failing_call(model: str) -> None:
            nonlocal done, failed
            pace()
            try:
                with costtrace.llm_call("openai", model):
                    raise TimeoutError("Request timed out.")
            except TimeoutError:
                failed += 1
            done += 1
            self._call_done()

        j = index  # task number, spread across threads so they do not all escalate at once
        while done < quota:
            left = quota - done
            name = TASK_NAMES[j % len(TASK_NAMES)]
            with costtrace.task(name, feature=FEATURES[j % len(FEATURES)], customer=CUSTOMERS[j % len(CUSTOMERS)]) as t:
                if j % 50 == 0 and left >= 3:
                    call("gpt-4o-mini", MINI[j % len(MINI)])
                    t.retry("validation_failed", details="missing field 'amount'")
                    call("gpt-4o-mini", MINI[(j + 1) % len(MINI)])
                    t.escalate("gpt-4o", reason="validation_failed")
                    call("gpt-4o", FULL[j % len(FULL)])
                elif j % 37 == 0 and left >= 2:
                    failing_call("gpt-4o-mini")
                    t.retry("timeout")
                    call("gpt-4o-mini", MINI[j % len(MINI)])
                else:
                    for k in range(min(1 + j % 3, left)):
                        call("gpt-4o-mini", MINI[(j + k) % len(MINI)])
                if j % 23 == 0:
                    t.fail("validation_failed")
                elif j % 41 == 0:
                    t.partial("2 of 3 fields")
                else:
                    t.succeed()
            tasks += 1
            j += self.threads
        with self._lock:
            self.tasks += tasks
            self.failed_calls += failed
            self.max_lag_s = max(self.max_lag_s, max_lag)


class EventCounter:
    """A costtrace records listener: what costtrace hands the ledger (calls, tasks, events)."""

    def __init__(self) -> None:
        self._calls = itertools.count()
        self._tasks = itertools.count()
        self._events = itertools.count()

    def on_call(self, record: Any) -> None:
        next(self._calls)

    def on_task(self, summary: Any) -> None:
        next(self._tasks)

    def on_event(self, event: Any) -> None:
        next(self._events)

    def counts(self) -> tuple[int, int, int]:
        return next(self._calls), next(self._tasks), next(self._events)


def run_one(args: argparse.Namespace, ledger: bool) -> dict[str, Any]:
    """One soak in this process; returns its figures."""
    rss_start = rss_mb()
    metric_sink = MetricsSink()
    reader = PeriodicExportingMetricReader(metric_sink, export_interval_millis=args.metric_interval_ms)
    meter_provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(meter_provider)
    exporter = CountingExporter()
    end_counter = EndCounter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(end_counter)
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter, meter_provider=meter_provider))
    trace.set_tracer_provider(tracer_provider)

    import costtrace
    from costtrace import _internal, records
    from costtrace import metrics as ct_metrics

    events = EventCounter()
    records.add_listener(events)
    tmp = tempfile.TemporaryDirectory(prefix="costtrace-soak-")
    db_path = Path(tmp.name) / "ledger.db"
    refreshes: list[tuple[float, float, float, float, int]] = []  # (at s, took s, RSS before, after, hours)
    if ledger:
        from costtrace.spend import rollups

        refresh = rollups.refresh

        def timed_refresh(*a: Any, **kw: Any) -> Any:
            """The writer's periodic rollup refresh, timed, with RSS around it (it reads the dirty hours)."""
            before, t = rss_mb(), time.perf_counter()
            hours = -1
            try:
                done = refresh(*a, **kw)
                hours = done.hours
                return done
            finally:
                refreshes.append((t - t_start, time.perf_counter() - t, before, rss_mb(), hours))

        rollups.refresh = timed_refresh
        if args.settle_s is not None:  # stress: e.g. the open hour refreshed every round, off the writer thread
            rollups.SETTLE_S = args.settle_s
        costtrace.configure_ledger(f"sqlite:///{db_path}")
        if args.no_rollup_refresh:  # diagnosis: the ledger's write path alone, cells left dirty
            from costtrace.spend import runtime

            if runtime.current is not None:
                runtime.current.writer._rollup_interval_s = None
                runtime.current.writer._stop_rollups(0.0)
    t_start = time.perf_counter()
    rss_setup = rss_mb()

    warmup_calls = max(1, int(args.calls * args.warmup_fraction))
    soak = Soak(args.calls, args.rate, args.threads, args.sample_every, warmup_calls)
    if ledger:
        from costtrace.spend import runtime

        writer = runtime.current.writer if runtime.current is not None else None
        soak.backlog = lambda: writer.stats().pending if writer is not None else 0
    snapshot: list[Any] = []
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(args.tracemalloc_frames)
        soak.on_warmup_end = lambda: snapshot.append(tracemalloc.take_snapshot())
    cpu0 = time.process_time()
    elapsed = soak.run()
    cpu = time.process_time() - cpu0
    rss_before_flush = rss_mb()

    result: dict[str, Any] = {}
    if ledger:
        t = time.perf_counter()
        flushed = costtrace.flush_ledger(60)
        result["ledger_flush_s"] = time.perf_counter() - t
        from costtrace.spend import runtime

        rt = runtime.current
        assert rt is not None
        st = rt.writer.stats()
        result["ledger"] = {
            "flush_ok": bool(flushed),
            "written_calls": st.written_calls,
            "written_tasks": st.written_tasks,
            "written_events": st.written_events,
            "dropped": st.dropped,
            "pending": st.pending,
            "spooled": st.spooled,
            "db_mb": db_path.stat().st_size / 2**20,
        }
    costtrace.flush()
    queue_at_end = len(ct_metrics._pending)
    ended = end_counter.total()
    tracer_provider.shutdown()
    meter_provider.shutdown()
    rss_end = rss_mb()
    if ledger:
        costtrace.close_ledger()
    n_calls, n_tasks, n_events = events.counts()

    after = [rss for n, _, rss, _ in soak.samples if n >= warmup_calls]
    warm = soak.warmup_rss if soak.warmup_rss is not None else (after[0] if after else rss_end)
    result.update(
        ledger_on=ledger,
        calls=args.calls,
        threads=args.threads,
        target_rate=args.rate,
        elapsed_s=elapsed,
        achieved_rate=args.calls / elapsed,
        max_lag_s=soak.max_lag_s,
        cpu_s=cpu,
        cpu_us_per_call=cpu / args.calls * 1e6,
        tasks=soak.tasks,
        failed_calls=soak.failed_calls,
        recorded={"calls": n_calls, "tasks": n_tasks, "events": n_events},
        rss_start_mb=rss_start,
        rss_setup_mb=rss_setup,
        rss_warmup_mb=warm,
        rss_max_after_warmup_mb=max(after, default=warm),
        rss_before_flush_mb=rss_before_flush,
        rss_end_mb=rss_end,
        growth_mb=max(after, default=warm) - warm,
        samples=soak.samples,
        spans_ended=ended,
        spans_exported=exporter.exported,
        spans_dropped=ended - exporter.exported,
        bsp_dropped_sdk_metric=metric_sink.bsp_dropped,
        metric_exports=metric_sink.exports,
        metric_series=metric_sink.series,
        costtrace_internal_errors=_internal.internal_error_counts(),
        costtrace_metrics_queue_at_end=queue_at_end,
        rollup_refreshes=refreshes,
    )
    if snapshot:
        import tracemalloc

        end_snap = tracemalloc.take_snapshot()
        tracemalloc.stop()
        stats = end_snap.compare_to(snapshot[0], "traceback" if args.tracemalloc_frames > 1 else "lineno")
        growth = []
        for s in stats[:10]:
            growth.append(
                {"size_diff_kb": s.size_diff / 1024, "count_diff": s.count_diff, "where": s.traceback.format()}
            )
        result["tracemalloc_top10"] = growth
    tmp.cleanup()
    return result


def show(results: list[dict[str, Any]]) -> None:
    """Print the figures of each run as one table, then the RSS curves and the counters."""
    print()
    print(f"## Memory soak: python benchmarks/bench_soak.py --calls {results[0]['calls']}")
    print()
    cols = ["ledger " + ("on" if r["ledger_on"] else "off") for r in results]
    rows: list[tuple[str, list[str]]] = [
        ("calls / tasks", [f"{r['calls']:,} / {r['tasks']:,}" for r in results]),
        ("threads, target rate", [f"{r['threads']}, {r['target_rate']:,.0f}/s" for r in results]),
        (
            "achieved rate (max lag behind schedule)",
            [f"{r['achieved_rate']:,.0f}/s ({r['max_lag_s'] * 1000:.0f} ms)" for r in results],
        ),
        ("CPU of the process per call", [f"{r['cpu_us_per_call']:.0f} µs" for r in results]),
        ("RSS after set-up", [f"{r['rss_setup_mb']:.1f} MB" for r in results]),
        ("RSS at end of warm-up", [f"{r['rss_warmup_mb']:.1f} MB" for r in results]),
        ("RSS max after warm-up", [f"{r['rss_max_after_warmup_mb']:.1f} MB" for r in results]),
        ("RSS at end (after flush, shutdown)", [f"{r['rss_end_mb']:.1f} MB" for r in results]),
        ("**growth after warm-up** (target ≤ 2 MB)", [f"**{r['growth_mb']:+.2f} MB**" for r in results]),
        ("spans ended / exported", [f"{r['spans_ended']:,} / {r['spans_exported']:,}" for r in results]),
        (
            "**spans dropped** (BatchSpanProcessor; SDK's own count)",
            [f"**{r['spans_dropped']:,}** ({r['bsp_dropped_sdk_metric']})" for r in results],
        ),
        ("metric exports, series in the last", [f"{r['metric_exports']}, {r['metric_series']}" for r in results]),
        ("costtrace internal errors", [str(sum(r["costtrace_internal_errors"].values()) or 0) for r in results]),
        ("costtrace metrics queue at end", [str(r["costtrace_metrics_queue_at_end"]) for r in results]),
    ]
    if any(r.get("ledger") for r in results):

        def ledger_cell(r: dict[str, Any]) -> str:
            led = r.get("ledger")
            if not led:
                return "-"
            rec = r["recorded"]
            lost = sum(led["dropped"].values())
            return (
                f"calls {led['written_calls']:,}/{rec['calls']:,}, tasks {led['written_tasks']:,}/{rec['tasks']:,}, "
                f"events {led['written_events']:,}/{rec['events']:,}; lost {lost}, pending {led['pending']}"
            )

        rows.append(("ledger rows written / recorded", [ledger_cell(r) for r in results]))
        rows.append(
            (
                "ledger flush at end, file size",
                [
                    f"{r['ledger_flush_s']:.2f} s, {r['ledger']['db_mb']:.0f} MB" if r.get("ledger") else "-"
                    for r in results
                ],
            )
        )
    print("| | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, cells in rows:
        print(f"| {name} | " + " | ".join(cells) + " |")
    for r in results:
        print()
        label = "on" if r["ledger_on"] else "off"
        samples = r["samples"]
        step = max(1, len(samples) // 20)
        curve = ", ".join(f"{n // 1000}k:{rss:.1f}" for n, _, rss, _ in samples[::step])
        print(f"RSS (MB) by calls done, ledger {label}: {curve}")
        native = ", ".join(
            f"{n // 1000}k:{sq:.1f}/{used:.1f}/{held:.1f}/{q}" for n, _, _, (sq, used, held, q) in samples[::step]
        )
        print(f"SQLite heap / malloc in use / malloc held (MB) / ledger backlog (records), ledger {label}: {native}")
        if r["costtrace_internal_errors"]:
            print(f"internal errors, ledger {label}: {r['costtrace_internal_errors']}")
        if r.get("rollup_refreshes"):
            timings = ", ".join(
                f"{at:.0f}s: {took * 1000:.0f} ms, {hours} h, RSS {before:.0f}->{after:.0f}"
                for at, took, before, after, hours in r["rollup_refreshes"]
            )
            print(f"ledger rollup refreshes (rollups thread, every 30 s, settled hours only): {timings}")
        if r.get("ledger") and r["ledger"]["dropped"]:
            print(f"ledger drops: {r['ledger']['dropped']}")
        for g in r.get("tracemalloc_top10", []):
            print(
                f"  {g['size_diff_kb']:+9.1f} KiB {g['count_diff']:+8d} blocks  "
                + " <- ".join(x.strip() for x in g["where"][-2:])
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="aggregate calls per second")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--ledger", choices=("on", "off", "both"), default="both")
    parser.add_argument("--warmup-fraction", type=float, default=0.1)
    parser.add_argument("--sample-every", type=int, default=10_000, help="RSS sample every N calls")
    parser.add_argument("--metric-interval-ms", type=int, default=5000)
    parser.add_argument("--tracemalloc", action="store_true", help="slow: top 10 growth sites after warm-up")
    parser.add_argument("--tracemalloc-frames", type=int, default=1)
    parser.add_argument(
        "--no-rollup-refresh", action="store_true", help="diagnosis: the ledger writer never refreshes rollup cells"
    )
    parser.add_argument(
        "--settle-s",
        type=float,
        default=None,
        help="stress: the rollups' settle delay (default rollups.SETTLE_S); -3600 refreshes the open hour every round",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the figures as one JSON line (used by --ledger both)"
    )
    args = parser.parse_args()

    if args.ledger == "both":
        results = []
        for setting in ("off", "on"):
            argv = [
                f"--calls={args.calls}",
                f"--rate={args.rate}",
                f"--threads={args.threads}",
                f"--warmup-fraction={args.warmup_fraction}",
                f"--sample-every={args.sample_every}",
                f"--metric-interval-ms={args.metric_interval_ms}",
                f"--tracemalloc-frames={args.tracemalloc_frames}",
                *(["--tracemalloc"] if args.tracemalloc else []),
                *(["--no-rollup-refresh"] if args.no_rollup_refresh else []),
                *([f"--settle-s={args.settle_s}"] if args.settle_s is not None else []),
            ]
            cmd = [sys.executable, __file__, *argv, f"--ledger={setting}", "--json"]
            print(
                f"running: ledger {setting} ({args.calls:,} calls at {args.rate:,.0f}/s) ...",
                file=sys.stderr,
                flush=True,
            )
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
        show(results)
        return
    result = run_one(args, args.ledger == "on")
    if args.json:
        print(json.dumps(result))
    else:
        show([result])


if __name__ == "__main__":
    main()
