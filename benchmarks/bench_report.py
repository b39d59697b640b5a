"""Report time on a generated ledger of many tasks: the rollups next to the full scan, on SQLite and PostgreSQL.

Run: python benchmarks/bench_report.py [--tasks N] [--repeats R] [--backends sqlite,postgresql]
                                        [--postgres-url URL] [--full-scan all|first|none]

The ledger is generated inside the database (``INSERT ... SELECT`` from a recursive CTE on SQLite,
``generate_series`` on PostgreSQL), so 1M tasks take seconds rather than minutes: ``--tasks`` tasks
(default 1,000,000) spread over ~80 days (one every 7 s), 4 features x 3 routes (one of them an
escalation ``gpt-4o-mini->gpt-4o``; ``final_model`` is the route's last model), ~85% successes, then
one call per task copied from its task. SQLite is a file in a temporary folder; PostgreSQL
(``--postgres-url`` or ``COSTTRACE_TEST_POSTGRES_URL``, skipped with a note without either) a schema of
its own, dropped afterwards. Both are ANALYZEd after the load. Rows inserted in SQL make no dirty marks,
so the rollups are then built by the product's bulk path, ``costtrace.spend.rollups.rebuild`` (what
``costtrace ledger rebuild`` runs): timed and printed, with the cells per level and their size.

Then, timed (best of ``--repeats``), each on the rollups (the default) and on the full scan
(``exact=True``, exact nearest-rank percentiles), side by side:

- ``scope_stats`` by ``feature, route``; by ``day``; by ``final_model``; by nothing for feature
  ``support`` since a mid-day, mid-hour time 30 days before the last task (the window's first hour and
  day are partial: raw rows at the edges);
- the CLI in-process (``costtrace.cli.app.main``, stdout captured), with and without ``--exact``:
  ``report --by feature,route --format json``, the same with ``--html FILE``, and
  ``compare --feature support``;
- ``scope_stats`` by ``feature, route`` again after 300 new tasks written through the ledger's write
  path (``store.write_batch`` of ``rows.task_row`` rows) over the last 6 hours of the ledger, so those
  hours, their days and month are dirty and read from raw rows;
- ``model_costs()`` (calls joined to tasks; no rollup path), for reference.

``--full-scan first`` times the full scan of the first report only (at 10M tasks each full scan takes
minutes), ``none`` of none. Figures only, no asserts. ``--tasks 20000`` runs in well under a minute (CI smoke).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from _postgres import PG_ENV, postgres_unavailable, postgres_url
from costtrace import semconv as sc
from costtrace.analysis.stats import Filters, model_costs, scope_stats
from costtrace.cli.app import main as cli_main
from costtrace.records import TaskSummary
from costtrace.spend import rollups, schema
from costtrace.spend.engine import make_engine
from costtrace.spend.rows import task_row
from costtrace.spend.store import Batch, write_batch

# The task columns as expressions of the row number i (0-based); the same SQL on both databases.
_TASK_COLUMNS = {
    "task_id": "'t' || i",
    "name": "CASE i % 3 WHEN 0 THEN 'resolve_ticket' WHEN 1 THEN 'extract_refund' ELSE 'summarize' END",
    "feature": "CASE i % 4 WHEN 0 THEN 'support' WHEN 1 THEN 'billing' WHEN 2 THEN 'search' ELSE 'onboarding' END",
    "team": "CASE i % 2 WHEN 0 THEN 'core' ELSE 'growth' END",
    "customer": "'c' || (i % 1000)",
    "route": "CASE WHEN i % 10 = 0 THEN 'gpt-4o-mini->gpt-4o' WHEN i % 10 < 3 THEN 'gpt-4o' ELSE 'gpt-4o-mini' END",
    "final_model": "CASE WHEN i % 10 < 3 THEN 'gpt-4o' ELSE 'gpt-4o-mini' END",  # the route's last model
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


# --- rollups -------------------------------------------------------------------------------------------


def rebuild(engine: sa.Engine) -> tuple[float, rollups.Refreshed]:
    """``rollups.rebuild`` with a progress line on stderr; returns (seconds, what it did)."""
    shown = [-1]

    def progress(done: int, total: int) -> None:
        if not sys.stderr.isatty():
            return
        pct = 100 * done // total if total else 100
        if pct // 10 != shown[0]:
            shown[0] = pct // 10
            print(f"\r  rebuilding rollups: {pct:3d}% of {total:,} hours", end="", file=sys.stderr, flush=True)

    start = time.perf_counter()
    done = rollups.rebuild(engine, progress=progress)
    seconds = time.perf_counter() - start
    if shown[0] >= 0:
        print(file=sys.stderr)
    return seconds, done


def rollup_sizes(engine: sa.Engine) -> str:
    """Cells per level and the rollup tables' size on disk (or their sketches' bytes where that is unknown)."""
    r = schema.rollup_cells
    names = [schema.rollup_cells.name, schema.rollup_periods.name, schema.rollup_marks.name]
    with engine.connect() as conn:
        counts = dict(conn.execute(sa.select(r.c.level, sa.func.count()).group_by(r.c.level)).all())
        cells = ", ".join(f"{counts.get(level, 0):,} {level}" for level in rollups.LEVELS)
        size = ""
        if engine.dialect.name == "postgresql":
            total = sum(
                int(conn.execute(sa.text("SELECT pg_total_relation_size(:t)"), {"t": name}).scalar_one())
                for name in names
            )
            tasks = int(
                conn.execute(sa.text("SELECT pg_total_relation_size(:t)"), {"t": schema.tasks.name}).scalar_one()
            )
            size = f"; {total / 1e6:,.1f} MB with indexes (tasks table: {tasks / 1e6:,.1f} MB)"
        else:
            sketch_bytes = sum(sa.func.coalesce(sa.func.length(r.c[f"sketch_{k}"]), 0) for k in rollups.SKETCHES)
            sketches = int(conn.execute(sa.select(sa.func.sum(sketch_bytes))).scalar_one() or 0)
            database = engine.url.database or ""
            whole = Path(database).stat().st_size if database and Path(database).is_file() else 0
            size = f"; their sketches {sketches / 1e6:,.1f} MB (the whole SQLite file: {whole / 1e6:,.1f} MB)"
    return f"{cells} cells{size}"


# --- the write path ------------------------------------------------------------------------------------


def write_new_tasks(engine: sa.Engine, last: datetime, n: int = 300, hours: int = 6) -> int:
    """``n`` tasks written through the ledger's write path, spread over the ``hours`` before ``last``."""
    step = timedelta(hours=hours) / n
    rows = []
    for i in range(n):
        escalated = i % 10 == 0
        models = ("gpt-4o-mini", "gpt-4o") if escalated else ("gpt-4o",) if i % 10 < 3 else ("gpt-4o-mini",)
        outcome = "failure" if i % 10 == 9 else "success"
        summary = TaskSummary(
            task_id=f"new{i}",
            name="resolve_ticket",
            parent_id=None,
            outcome=outcome,
            outcome_reason=None,
            first_pass=not escalated and outcome == "success",
            own_known_cost_usd=Decimal("0.0004") + Decimal(i) / 10**7,
            wasted_cost_usd=Decimal("0.0001") if escalated or outcome == "failure" else Decimal(0),
            cache_savings_usd=Decimal(0),
            subtasks_cost_usd=Decimal(0),
            input_tokens=800 + i,
            output_tokens=120 + i % 50,
            cache_read_input_tokens=0,
            cache_write_input_tokens=0,
            reasoning_output_tokens=0,
            llm_calls=2 if escalated else 1,
            failed_calls=1 if outcome == "failure" else 0,
            attempts=2 if escalated else 1,
            retries=0,
            escalations=1 if escalated else 0,
            unpriced_calls=0,
            estimated_calls=0,
            duration_s=1.0 + i % 40,
            dimensions={sc.FEATURE: ("support", "billing")[i % 2], sc.TEAM: "core", sc.CUSTOMER: f"c{i % 50}"},
            models=models,
            final_model=models[-1],
        )
        rows.append(task_row(summary, last - step * i))
    for i in range(0, n, 100):  # the writer's batches
        write_batch(engine, Batch(calls=[], tasks=rows[i : i + 100], events=[], outcome_updates=[]), [])
    return n


# --- timing --------------------------------------------------------------------------------------------


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def cli(argv: list[str]) -> Callable[[], int]:
    """``costtrace <argv>`` in-process, its stdout and stderr captured; returns the output's lines."""

    def run() -> int:
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = cli_main(argv)
        if code != 0:
            raise RuntimeError(f"costtrace {' '.join(argv)} exited {code}: {stderr.getvalue().strip()}")
        return len(stdout.getvalue().splitlines())

    return run


Row = tuple[str, str, float | None, float | None]
"""(report, rows or output lines, rollups s, full scan s)."""


def compare(label: str, repeats: int, fast: Callable[[], Any], full: Callable[[], Any] | None) -> Row:
    fast_s, fast_result = best_of(repeats, fast)
    if full is None:
        return label, str(fast_result if isinstance(fast_result, int) else len(fast_result)), fast_s, None
    full_s, full_result = best_of(repeats, full)
    shown = fast_result if isinstance(fast_result, int) else len(fast_result)
    full_shown = full_result if isinstance(full_result, int) else len(full_result)
    what = f"{shown}" if shown == full_shown else f"{shown} / {full_shown}"
    return label, what, fast_s, full_s


def print_header() -> None:
    print(f"  {'report':<58} {'rows':>6} {'rollups s':>10} {'full scan s':>12} {'speed-up':>9}", flush=True)


def print_row(row: Row) -> None:
    label, what, fast_s, full_s = row
    fast = f"{fast_s:10.3f}" if fast_s is not None else f"{'-':>10}"
    full = f"{full_s:12.3f}" if full_s is not None else f"{'-':>12}"
    ratio = f"{full_s / fast_s:8.1f}x" if fast_s and full_s else f"{'-':>9}"
    print(f"  {label:<58} {what:>6} {fast} {full} {ratio}", flush=True)


def run(backend: str, url: str, n: int, repeats: int, tmp: Path, full_scan: str) -> None:
    engine = make_engine(url)
    try:
        schema.migrate(engine)
        load_s = generate(engine, n)
        print(f"\n{backend}: generated {n:,} tasks + {n:,} calls in {load_s:.1f} s ({2 * n / load_s:,.0f} rows/s)")
        rebuild_s, done = rebuild(engine)
        print(
            f"  rollups.rebuild: {rebuild_s:.1f} s ({n / rebuild_s:,.0f} tasks/s): {done.hours:,} hours,"
            f" {done.days:,} days, {done.months:,} months, {done.cells:,} cells written, {done.still_dirty} still dirty"
        )
        with engine.connect() as conn:  # statistics for the new tables too
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
        print(f"  rollup cells: {rollup_sizes(engine)}")
        with engine.connect() as conn:
            first, last = conn.execute(
                sa.select(sa.func.min(schema.tasks.c.ended_at), sa.func.max(schema.tasks.c.ended_at))
            ).one()
        back = min(timedelta(days=30), (last - first) / 2)  # a small (CI) ledger: its middle
        since = rollups.day_of(last - back) + timedelta(hours=12, minutes=30, seconds=17)
        since = since if since > first else rollups.hour_of(last - back) + timedelta(minutes=30, seconds=17)

        scans = [full_scan != "none"]  # whether the next report gets its full scan timed too

        def both(label: str, **kw: Any) -> None:
            full = (lambda: scope_stats(engine, exact=True, **kw)) if scans[0] else None
            print_row(compare(label, repeats, lambda: scope_stats(engine, **kw), full))
            scans[0] = full_scan == "all"

        def both_cli(label: str, argv: list[str]) -> None:
            print_row(compare(label, repeats, cli(argv), cli([*argv, "--exact"]) if scans[0] else None))
            scans[0] = full_scan == "all"

        html = str(tmp / f"report-{backend}.html")
        print_header()
        both('scope_stats(by=("feature", "route"))', by=("feature", "route"))
        both('scope_stats(by=("day",))', by=("day",))
        both('scope_stats(by=("final_model",))', by=("final_model",))
        both(
            f"scope_stats(by=(), feature=support, since={since:%m-%d %H:%M:%S})",
            by=(),
            filters=Filters(feature="support", since=since),
        )
        both_cli(
            "cli: report --by feature,route --format json",
            ["report", "--ledger", url, "--by", "feature,route", "--format", "json"],
        )
        both_cli(
            "cli: report --by feature,route --format json --html FILE",
            ["report", "--ledger", url, "--by", "feature,route", "--format", "json", "--html", html],
        )
        both_cli("cli: compare --feature support", ["compare", "--ledger", url, "--feature", "support"])
        for label, argv in (
            ("cli: report --by feature,route (table)", ["report", "--ledger", url, "--by", "feature,route"]),
            ("cli: report --by feature,route --format csv", ["report", "--ledger", url, "--by", "feature,route",
                                                             "--format", "csv"]),
            ("cli: whatif --feature support --route gpt-4o-mini->gpt-4o",
             ["whatif", "--ledger", url, "--feature", "support", "--route", "gpt-4o-mini->gpt-4o"]),
            ("cli: tco --feature support", ["tco", "--ledger", url, "--feature", "support"]),
        ):  # fmt: skip
            print_row(compare(label, repeats, cli(argv), None))  # whatif and tco have no --exact
        models_full = (lambda: model_costs(engine, filters=Filters(since=datetime(1970, 1, 1)))) if scans[0] else None
        print_row(compare("model_costs() (no window: model cells)", repeats, lambda: model_costs(engine), models_full))
        write_new_tasks(engine, last)
        dirty = rollups.dirty_count(engine)
        both(f'scope_stats(by=("feature", "route")), {dirty["hour"]} dirty hours', by=("feature", "route"))
        print("  (rows: groups returned, or lines printed by the CLI; a / b when the two paths differ)")
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=1_000_000, help="tasks (and calls) to generate")
    parser.add_argument("--repeats", type=int, default=1, help="time each report this many times, keep the best")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--postgres-url", default=os.environ.get(PG_ENV, ""), help=f"default: ${PG_ENV}")
    parser.add_argument(
        "--full-scan",
        choices=("all", "first", "none"),
        default="all",
        help="time the full scan (exact=True) next to every report, the first only, or none (default: all)",
    )
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.repeats < 1:
        parser.error("--tasks and --repeats must be >= 1")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for backend in backends:
        if backend not in ("sqlite", "postgresql"):
            parser.error(f"unknown backend {backend!r}; use sqlite and/or postgresql")
    python = sys.version.split()[0]
    print(f"costtrace report time, {args.tasks:,} tasks, best of {args.repeats}, python {python}")
    with tempfile.TemporaryDirectory(prefix="costtrace-bench-report-html-") as tmp:
        for backend in backends:
            if backend == "sqlite":
                with sqlite_url() as url:
                    run("sqlite", url, args.tasks, args.repeats, Path(tmp), args.full_scan)
            else:
                reason = postgres_unavailable(args.postgres_url)
                if reason:
                    print(f"\npostgresql: skipped ({reason})")
                    continue
                with postgres_url(args.postgres_url) as url:
                    run("postgresql", url, args.tasks, args.repeats, Path(tmp), args.full_scan)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
