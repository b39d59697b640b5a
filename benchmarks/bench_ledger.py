"""Ledger throughput and hard-cap reservation latency, on SQLite and PostgreSQL.

Run: python benchmarks/bench_ledger.py [--calls N] [--repeats R] [--backends sqlite,postgresql]
                                        [--postgres-url URL] [--cap-calls M]

No OpenTelemetry SDK is installed (the API's no-op spans), so the figures isolate what the ledger and
the budgets add. Each backend gets a fresh database: a SQLite file in a temporary folder, and a
PostgreSQL schema of its own (``?options=-csearch_path=<name>``), created and dropped here. PostgreSQL
comes from ``--postgres-url`` or ``COSTTRACE_TEST_POSTGRES_URL``; without either, or when it cannot be
reached, it is skipped with a note. Every figure is the best of ``--repeats`` runs, and each ratio
compares loops measured in the same run. The ledger is closed (``costtrace.close_ledger()``) after
every run.

1. Ledger throughput: ``--calls`` calls recorded with ``costtrace.record_llm_call`` inside one task,
   with ``costtrace.configure_ledger(url)`` active. Rows/s = calls / (time from the first record until
   ``costtrace.flush_ledger()`` returns True); the rows in ``costtrace_calls`` are counted to check that
   all arrived. The app thread's µs per call is compared with the same loop without a ledger.
2. Hard-cap reservation latency: ``--cap-calls`` calls (default: calls / 50) made with
   ``costtrace.llm_call(..., max_tokens=200, input=PROMPT)`` + ``call.set_usage`` in a task with
   feature "support", under a ``block`` budget on that feature (each call reserves its worst case in
   the database before it is sent) against the same budget with ``action="alert"`` (no reservation).
   The difference is the reservation cost (input token count, worst-case price, one transaction).
   Then 4 threads make the same capped calls at once: aggregate calls/s.
3. Write-through (what worker processes do, docs/ledger.md): the same ``--calls`` records with
   ``configure_ledger(write_through=True)`` (each record turned into its row and written to the spool
   file on the app's thread, no fsync) against the default queue: µs per record on the app thread, and
   the rows that reached the database after ``flush_ledger()``.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

import costtrace
from _postgres import PG_ENV, postgres_unavailable, postgres_url
from costtrace.spend import schema

MODEL = "gpt-4o-mini"
PROMPT = (
    "Customer reports that invoices exported on the 3rd were missing VAT lines; they re-ran the export "
    "twice, opened ticket T-4821 and attached the CSV. Summarise the ticket and suggest a reply."
)
THREADS = 4


# --- databases ---------------------------------------------------------------------------------------


@contextmanager
def sqlite_url(tmp: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp / 'ledger.db'}"


def count_calls(url: str) -> int:
    from costtrace.spend.engine import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(schema.calls)).scalar() or 0)
    finally:
        engine.dispose()


# --- loops ---------------------------------------------------------------------------------------------


def record_loop(n: int) -> None:
    with costtrace.task("bench", feature="bench"):
        for i in range(n):
            costtrace.record_llm_call(provider="openai", model=MODEL, input_tokens=800 + (i & 63), output_tokens=96)


def capped_loop(n: int, samples: list[float] | None = None) -> None:
    """``n`` calls in a "support" task; appends each call's µs to ``samples`` when given."""
    clock = time.perf_counter_ns
    with costtrace.task("bench", feature="support"):
        for _ in range(n):
            t0 = clock()
            with costtrace.llm_call(provider="openai", model=MODEL, max_tokens=200, input=PROMPT) as call:
                call.set_usage(input_tokens=40, output_tokens=120)
            if samples is not None:
                samples.append((clock() - t0) / 1e3)


def timed_us(fn: Callable[[int], None], n: int) -> float:
    """µs per call of one run of ``fn(n)``."""
    gc.collect()
    start = time.perf_counter()
    fn(n)
    return (time.perf_counter() - start) / n * 1e6


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- 1. ledger throughput ---------------------------------------------------------------------------


def bench_throughput(url: str, spool: Path, calls: int, repeats: int) -> None:
    best_rate = 0.0
    best_app = best_bare = float("inf")
    drain_s = 0.0
    written = calls
    for _ in range(repeats):
        best_bare = min(best_bare, timed_us(record_loop, calls))  # no ledger: the same loop, same run
        costtrace.configure_ledger(url, spool_path=spool, max_queue=max(100_000, 2 * calls))
        try:
            record_loop(200)  # warm-up: the writer thread and its connection
            costtrace.flush_ledger(30.0)
            before = count_calls(url)
            gc.collect()
            start = time.perf_counter()
            record_loop(calls)
            app_done = time.perf_counter()
            flushed = costtrace.flush_ledger(max(60.0, calls / 500))
            end = time.perf_counter()
            rows = count_calls(url) - before
        finally:
            costtrace.close_ledger()
        if not flushed:
            print(f"  warning: flush_ledger timed out; {rows} of {calls} rows written")
        app_us = (app_done - start) / calls * 1e6
        rate = calls / (end - start)
        if rate > best_rate:
            best_rate, drain_s = rate, end - app_done
        written = min(written, rows)
        best_app = min(best_app, app_us)
    print(f"-- ledger throughput: {calls} record_llm_call in one task, best of {repeats}")
    print(f"rows written: {written} of {calls}" + (" (fewest of the runs)" if repeats > 1 else ""))
    print(
        f"{'committed rows/s':38s}: {best_rate:10,.0f}  (first record until flush_ledger() is True; "
        f"it waited {drain_s * 1e3:.0f} ms after the last record)"
    )
    print(f"{'app thread, no ledger':38s}: {best_bare:8.2f} µs/call")
    print(f"{'app thread, ledger configured':38s}: {best_app:8.2f} µs/call")
    added = best_app - best_bare
    print(f"{'added per call on the app thread':38s}: {added:8.2f} µs/call  (ratio {best_app / best_bare:.2f}x)")


# --- 2. hard-cap reservation latency ---------------------------------------------------------------


def budget(action: str) -> costtrace.Budget:
    return costtrace.Budget("cap", limit_usd=1e9, scope={"feature": "support"}, action=action)  # type: ignore[arg-type]


def bench_caps(url: str, spool: Path, calls: int, repeats: int) -> None:
    best = {"alert": float("inf"), "block": float("inf")}
    samples: list[float] = []  # every capped call of every run, for p50/p99
    best_threads = 0.0
    per_thread = max(1, calls // THREADS)
    for _ in range(repeats):
        for action in ("alert", "block"):
            costtrace.configure_ledger(url, budgets=[budget(action)], spool_path=spool)
            try:
                capped_loop(min(50, calls))  # warm-up: connections, price plan, token counter
                costtrace.flush_ledger(30.0)
                kept = samples if action == "block" else None
                us = timed_us(lambda n: capped_loop(n, kept), calls)
                best[action] = min(best[action], us)
                costtrace.flush_ledger(60.0)
                if action == "block":
                    barrier = threading.Barrier(THREADS + 1)

                    def worker() -> None:
                        barrier.wait()
                        capped_loop(per_thread)

                    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
                    for t in threads:
                        t.start()
                    gc.collect()
                    barrier.wait()
                    start = time.perf_counter()
                    for t in threads:
                        t.join()
                    best_threads = max(best_threads, THREADS * per_thread / (time.perf_counter() - start))
            finally:
                costtrace.close_ledger()
    alert, block = best["alert"], best["block"]
    print(f"-- hard-cap reservation: {calls} llm_call(max_tokens=200, input={len(PROMPT)} chars), best of {repeats}")
    print(f"{'alert-only budget (no reservation)':38s}: {alert:8.2f} µs/call")
    print(
        f"{'block budget (reserves worst case)':38s}: {block:8.2f} µs/call  "
        f"(p50 {percentile(samples, 0.50):.0f} µs, p99 {percentile(samples, 0.99):.0f} µs over {len(samples)} calls)"
    )
    print(f"{'reservation cost':38s}: {block - alert:8.2f} µs/call  (ratio {block / alert:.2f}x)")
    print(
        f"{f'{THREADS} threads reserving at once':38s}: {best_threads:10,.0f} calls/s aggregate  "
        f"(1 thread: {1e6 / block:,.0f} calls/s)"
    )


# --- 3. write-through ---------------------------------------------------------------------------------


def bench_write_through(url: str, spool: Path, calls: int, repeats: int) -> None:
    best = {False: float("inf"), True: float("inf")}
    written = {False: calls, True: calls}
    for _ in range(repeats):
        for through in (False, True):
            costtrace.configure_ledger(url, spool_path=spool, max_queue=max(100_000, 2 * calls), write_through=through)
            try:
                record_loop(200)  # warm-up: the writer thread, its connection, the spool file
                costtrace.flush_ledger(30.0)
                before = count_calls(url)
                best[through] = min(best[through], timed_us(record_loop, calls))
                costtrace.flush_ledger(max(60.0, calls / 500))
                written[through] = min(written[through], count_calls(url) - before)
            finally:
                costtrace.close_ledger()
    queued, through = best[False], best[True]
    print(f"-- write-through: {calls} record_llm_call in one task, best of {repeats}")
    print(f"{'app thread, queued (main program)':38s}: {queued:8.2f} µs/record  ({written[False]} of {calls} rows)")
    print(f"{'app thread, written through (workers)':38s}: {through:8.2f} µs/record  ({written[True]} of {calls} rows)")
    print(f"{'write-through cost':38s}: {through - queued:8.2f} µs/record  (ratio {through / queued:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="records per throughput run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per figure (best of)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    parser.add_argument("--postgres-url", default=os.environ.get(PG_ENV, "").strip(), help=f"default: ${PG_ENV}")
    parser.add_argument("--cap-calls", type=int, default=None, help="calls per hard-cap run (default: calls / 50)")
    args = parser.parse_args()
    cap_calls = args.cap_calls or max(50, args.calls // 50)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown:
        parser.error(f"unknown backends: {sorted(unknown)}")

    costtrace.count_tokens("x", MODEL)  # the first tokenizer load (~1-3 s) stays out of every timing
    record_loop(2000)  # warm-up: price resolution, caches (no ledger)
    print(f"calls per throughput run: {args.calls}, per hard-cap run: {cap_calls}, repeats: {args.repeats} (best)")
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="costtrace-bench-") as tmp:
            if backend == "sqlite":
                db = sqlite_url(Path(tmp))
            else:
                why = postgres_unavailable(args.postgres_url)
                if why is not None:
                    print(f"== postgresql: skipped ({why})")
                    continue
                db = postgres_url(args.postgres_url)
            with db as url:
                print(f"== {backend}")
                spool = Path(tmp) / "spool"
                bench_throughput(url, spool, args.calls, args.repeats)
                bench_caps(url, spool, cap_calls, args.repeats)
                bench_write_through(url, spool, args.calls, args.repeats)


if __name__ == "__main__":
    main()
