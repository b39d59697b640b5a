"""Report time of costtrace.analysis.stats on a generated ledger of many tasks, on SQLite and/or PostgreSQL.

Run: python benchmarks/bench_report.py [--tasks N] [--repeats R] [--backends sqlite,postgresql]
                                        [--postgres-url URL]

The ledger is generated inside the database (``INSERT ... SELECT`` from a recursive CTE on SQLite,
``generate_series`` on PostgreSQL), so 1M tasks take seconds rather than minutes: ``--tasks`` tasks
(default 1,000,000) spread over ~80 days, 4 features x 3 routes (one of them an escalation
``gpt-4o-mini->gpt-4o``), ~85% successes, then one call per task copied from its task. SQLite is a
file in a temporary folder; PostgreSQL (``--postgres-url`` or ``COSTTRACE_TEST_POSTGRES_URL``, skipped
with a note without either) a schema of its own, dropped afterwards. Both are ANALYZEd after the load.

Then, timed (best of ``--repeats``): ``scope_stats(by=("feature", "route"))``, ``scope_stats(by=("day",))``
and ``model_costs()``; printed as seconds per report and rows scanned per second. Figures only, no
asserts. ``--tasks 20000`` runs in a few seconds (CI smoke).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from _postgres import PG_ENV, postgres_unavailable, postgres_url
from costtrace.analysis.stats import model_costs, scope_stats
from costtrace.spend import schema
from costtrace.spend.engine import make_engine

# The task columns as expressions of the row number i (0-based); the same SQL on both databases.
_TASK_COLUMNS = {
    "task_id": "'t' || i",
    "name": "CASE i % 3 WHEN 0 THEN 'resolve_ticket' WHEN 1 THEN 'extract_refund' ELSE 'summarize' END",
    "feature": "CASE i % 4 WHEN 0 THEN 'support' WHEN 1 THEN 'billing' WHEN 2 THEN 'search' ELSE 'onboarding' END",
    "team": "CASE i % 2 WHEN 0 THEN 'core' ELSE 'growth' END",
    "customer": "'c' || (i % 1000)",
    "route": "CASE WHEN i % 10 = 0 THEN 'gpt-4o-mini->gpt-4o' WHEN i % 10 < 3 THEN 'gpt-4o' ELSE 'gpt-4o-mini' END",
    "outcome": "CASE WHEN i % 10 = 9 THEN 'failure' WHEN i % 20 = 8 THEN 'partial' ELSE 'success' END",
    "first_pass": "(i % 10 BETWEEN 1 AND 7)",
    "cost_nano_usd": "100000 + (i * 7919) % 900000",
    "wasted_nano_usd": "CASE WHEN i % 10 IN (0, 9) THEN 50000 + (i * 7919) % 450000 ELSE 0 END",
    "cache_savings_nano_usd": "(i % 7) * 1000",
    "subtasks_cost_nano_usd": "0",
    "input_tokens": "500 + (i * 31) % 3000",
    "output_tokens": "50 + (i * 17) % 500",
    "cache_read_input_tokens": "0",
    "cache_write_input_tokens": "0",
    "reasoning_output_tokens": "0",
    "llm_calls": "1",
    "failed_calls": "CASE WHEN i % 10 = 9 THEN 1 ELSE 0 END",
    "attempts": "CASE WHEN i % 10 = 0 THEN 2 ELSE 1 END",
    "retries": "0",
    "escalations": "CASE WHEN i % 10 = 0 THEN 1 ELSE 0 END",
    "unpriced_calls": "CASE WHEN i % 1000 = 999 THEN 1 ELSE 0 END",
    "estimated_calls": "CASE WHEN i % 50 = 0 THEN 1 ELSE 0 END",
    "duration_s": "0.5 + (i % 997) * 0.05",  # 0.5 s .. 50.3 s: distinct values for the latency percentiles
}
# One call per task (the escalated tasks' final gpt-4o call), copied from the task rows.
_CALL_COLUMNS = {
    "call_id": "'c' || task_id",
    "task_id": "task_id",
    "task_name": "name",
    "feature": "feature",
    "team": "team",
    "customer": "customer",
    "provider": "'openai'",
    "operation": "'chat'",
    "request_model": "CASE WHEN route = 'gpt-4o-mini' THEN 'gpt-4o-mini' ELSE 'gpt-4o' END",
    "attempt": "attempts",
    "usage_source": "CASE WHEN estimated_calls > 0 THEN 'estimated' ELSE 'provider' END",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_input_tokens": "0",
    "cache_write_input_tokens": "0",
    "cache_write_1h_input_tokens": "0",
    "reasoning_output_tokens": "0",
    "priced": "(unpriced_calls = 0)",
    "cost_nano_usd": "CASE WHEN unpriced_calls = 0 THEN cost_nano_usd END",
    "input_nano_usd": "cost_nano_usd / 2",
    "cache_read_nano_usd": "0",
    "cache_write_nano_usd": "0",
    "output_nano_usd": "cost_nano_usd - cost_nano_usd / 2",
    "reasoning_nano_usd": "0",
    "other_nano_usd": "0",
    "cache_savings_nano_usd": "cache_savings_nano_usd",
    "started_at": "started_at",
    "duration_s": "duration_s",
}


def _series_and_times(dialect: str, n: int) -> tuple[str, str, str]:
    """(FROM clause giving i = 0..n-1, ended_at expression, started_at expression); ~7 s between tasks."""
    if dialect == "postgresql":
        return (
            f"generate_series(CAST(0 AS BIGINT), {n - 1}) AS g(i)",
            "TIMESTAMP '2024-03-01' + i * INTERVAL '7 seconds'",
            "TIMESTAMP '2024-03-01' + i * INTERVAL '7 seconds' - INTERVAL '1.5 seconds'",
        )
    # SQLAlchemy stores SQLite DATETIME as 'YYYY-MM-DD HH:MM:SS.ffffff': generate the same text.
    return (
        f"(WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < {n - 1}) SELECT i FROM g)",
        "datetime('2024-03-01', '+' || (i * 7) || ' seconds') || '.000000'",
        "datetime('2024-02-29 23:59:58', '+' || (i * 7) || ' seconds') || '.500000'",
    )


def generate(engine: sa.Engine, n: int) -> float:
    """Fill the migrated ledger with ``n`` tasks and ``n`` calls; returns the seconds it took."""
    start = time.perf_counter()
    source, ended, started = _series_and_times(engine.dialect.name, n)
    tasks = {**_TASK_COLUMNS, "ended_at": ended, "started_at": started}
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")  # the ledger's 10 s guard is for writers
        # sa.text, not exec_driver_sql: it escapes the modulo signs for psycopg's placeholders.
        conn.execute(
            sa.text(
                f"INSERT INTO {schema.tasks.name} ({', '.join(tasks)}) SELECT {', '.join(tasks.values())} FROM {source}"
            )
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {schema.calls.name} ({', '.join(_CALL_COLUMNS)}) "
                f"SELECT {', '.join(_CALL_COLUMNS.values())} FROM {schema.tasks.name}"
            )
        )
    with engine.connect() as conn:  # planner statistics, as autovacuum / a maintained SQLite would have
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    return time.perf_counter() - start


# --- databases ---------------------------------------------------------------------------------------


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="costtrace-bench-report-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'ledger.db'}"


# --- timing --------------------------------------------------------------------------------------------


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def run(backend: str, url: str, n: int, repeats: int) -> None:
    engine = make_engine(url)
    try:
        schema.migrate(engine)
        load_s = generate(engine, n)
        print(f"\n{backend}: generated {n:,} tasks + {n:,} calls in {load_s:.1f} s ({2 * n / load_s:,.0f} rows/s)")
        reports: list[tuple[str, Callable[[], list[Any]]]] = [
            ('scope_stats(by=("feature", "route"))', lambda: scope_stats(engine, by=("feature", "route"))),
            ('scope_stats(by=("day",))', lambda: scope_stats(engine, by=("day",))),
            ("model_costs()", lambda: model_costs(engine)),
        ]
        for label, report in reports:
            seconds, rows = best_of(repeats, report)
            print(f"  {label:<38} {seconds:7.2f} s  {n / seconds:>12,.0f} rows/s  ({len(rows)} groups)")
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=1_000_000, help="tasks (and calls) to generate")
    parser.add_argument("--repeats", type=int, default=1, help="time each report this many times, keep the best")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--postgres-url", default=os.environ.get(PG_ENV, ""), help=f"default: ${PG_ENV}")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.repeats < 1:
        parser.error("--tasks and --repeats must be >= 1")
    python = sys.version.split()[0]
    print(f"costtrace.analysis.stats report time, {args.tasks:,} tasks, best of {args.repeats}, python {python}")
    for backend in (b.strip() for b in args.backends.split(",") if b.strip()):
        if backend == "sqlite":
            with sqlite_url() as url:
                run("sqlite", url, args.tasks, args.repeats)
        elif backend == "postgresql":
            reason = postgres_unavailable(args.postgres_url)
            if reason:
                print(f"\npostgresql: skipped ({reason})")
                continue
            with postgres_url(args.postgres_url) as url:
                run("postgresql", url, args.tasks, args.repeats)
        else:
            parser.error(f"unknown backend {backend!r}; use sqlite and/or postgresql")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
