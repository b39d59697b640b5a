"""``costtrace compare``: one feature's routes side by side, and which route to use.

The routes' figures as in ``costtrace report --by route``, one column per route, then the routing advice
of :func:`costtrace.analysis.routing.advise` (lowest cost per successful task, or TCO per task with
``--rework-cost``). Without ``--rework-cost`` it says so, and gives for each other route the rework cost
``L*`` at which its TCO per task equals the best route's, with both failure rates' 95% intervals.

Example::

    costtrace compare --feature support --rework-cost 2.50
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from costtrace._money import usd
from costtrace.cli import output as out
from costtrace.cli.exit_codes import EXIT_OK
from costtrace.cli.ledger import ledger_url, no_tasks_error, open_ledger, reading, shown_url
from costtrace.cli.options import (
    build_filters,
    filter_parent,
    format_parent,
    ledger_parent,
    task_count,
    usd_amount,
    window_text,
)
from costtrace.cli.output import Column
from costtrace.cli.stats_rows import EXACT_HELP, scope_stats, stats_columns, stats_notes, stats_row

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from costtrace.analysis.stats import Filters


def add_command(commands: Any) -> None:
    """Register ``costtrace compare`` on the ``costtrace`` subparsers."""
    p = commands.add_parser(
        "compare",
        parents=[ledger_parent(), filter_parent(feature_required=True), format_parent()],
        help="one feature's routes side by side, and which route to use",
        description="Per-route figures of one feature side by side, with the routing advice when there is one.",
    )
    p.add_argument("--rework-cost", type=usd_amount, metavar="USD", help="cost of one failed task outside the model")
    p.add_argument(
        "--min-tasks",
        type=task_count,
        default=30,
        metavar="N",
        help="tasks a route needs for advice (default: %(default)s)",
    )
    p.add_argument("--exact", action="store_true", help=EXACT_HELP)
    p.set_defaults(handler=compare_command)


COMPARE_METRICS: tuple[tuple[str, str, out.Kind], ...] = (
    ("tasks", "tasks", "int"),
    ("success_rate", "success rate", "pct"),
    ("first_pass_rate", "first-pass rate", "pct"),
    ("mean_attempts", "attempts per task", "num"),
    ("cost_per_task_mean_usd", "cost per task (mean)", "usd"),
    ("cost_per_task_p95_usd", "cost per task (p95)", "usd"),
    ("cost_per_successful_task_usd", "cost per successful task", "usd"),
    ("total_cost_usd", "total cost", "usd"),
    ("retry_tax", "retry tax", "pct"),
    ("escalation_rate", "escalation rate", "pct"),
    ("escalation_premium_usd", "escalation premium", "usd"),
    ("latency_success_p50_s", "time to success (p50)", "seconds"),
    ("latency_success_p95_s", "time to success (p95)", "seconds"),
    ("latency_failed_p95_s", "time to failure (p95)", "seconds"),
    ("input_cost_share", "input share of spend", "pct"),
    ("cache_read_cost_share", "cache-read share of spend", "pct"),
    ("cache_write_cost_share", "cache-write share of spend", "pct"),
    ("output_cost_share", "output share of spend", "pct"),
    ("input_tokens_per_task_p50", "input tokens per task (p50)", "int"),
    ("input_tokens_per_task_p95", "input tokens per task (p95)", "int"),
    ("cache_read_token_share", "cached share of input tokens", "pct"),
    ("caching_savings_upper_bound_usd", "caching saves (upper bound)", "usd"),
    ("caching_unknown_calls", "calls without a cache price", "int"),
    ("rework_cost_usd", "recorded rework", "usd"),
    ("unpriced_calls", "unpriced calls", "int"),
)


BREAK_EVEN_COLUMNS = (
    Column("break_even_versus", "break-even versus", "text"),
    Column("break_even_rework_usd", "break-even rework cost", "usd"),
    Column("break_even_wins", "wins", "text"),
    Column("break_even_bound", "bound", "text"),
)
"""CSV only: each route against the advice's best route (:class:`costtrace.analysis.routing.ReworkBreakEven`)."""


def _with_break_evens(rows: list[dict[str, Any]], advice: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The route rows with their break-even rework cost against the best route (None for the best itself)."""
    evens = {b["route"]: b for a in advice or [] for b in a.get("break_evens") or []}
    none = {"versus": None, "break_even_rework_usd": None, "wins": None, "bound": None}
    return [
        {
            **r,
            "break_even_versus": b["versus"],
            "break_even_rework_usd": b["break_even_rework_usd"],
            "break_even_wins": b["wins"],
            "break_even_bound": b["bound"],
        }
        for r in rows
        for b in [evens.get(r.get("route"), none)]
    ]


def compare_command(args: argparse.Namespace) -> int:
    filters = build_filters(args)
    url = ledger_url(args)
    shown = shown_url(url)
    engine = open_ledger(url)
    try:
        stats = scope_stats(engine, shown, by=("route",), filters=filters, exact=args.exact)
        if not stats:
            raise no_tasks_error(engine, shown, filters)
        stats = sorted(stats, key=lambda s: (s.cost_per_successful_task_usd is None, s.cost_per_successful_task_usd))
        advice = _advice(engine, shown, filters, args)
    finally:
        engine.dispose()
    columns = stats_columns(("route",))
    shown_only = {c.key for c in columns if not c.data}  # the table's reading aids: not data
    rows = [{k: v for k, v in stats_row(s).items() if k not in shown_only} for s in stats]
    if args.format in ("json", "csv"):  # each route's row says its break-even against the best, in both
        rows = _with_break_evens(rows, advice)
    if args.format == "json":
        print(
            out.json_text({"feature": args.feature, "window": window_text(filters), "routes": rows, "advice": advice})
        )
        return EXIT_OK
    if args.format == "csv":
        print(out.csv_text([*columns, *BREAK_EVEN_COLUMNS], rows))
        return EXIT_OK
    routes = [str(r.get("route") or "(none)") for r in rows]
    side_cols = [Column("metric", "", "text")] + [Column(f"r{i}", r, "text") for i, r in enumerate(routes)]
    side_rows = [
        {"metric": label, **{f"r{i}": out.display(r.get(key), kind) for i, r in enumerate(rows)}}
        for key, label, kind in COMPARE_METRICS
    ]
    side_cols = [side_cols[0]] + [Column(c.key, c.header, "rtext") for c in side_cols[1:]]
    print(f"Feature {args.feature!r}: routes side by side ({window_text(filters)}, ledger {shown})")
    print(out.table(side_cols, side_rows))
    for n in stats_notes(stats):
        print(f"note: {n}")
    if advice is None:
        return EXIT_OK
    for a in advice:
        print()
        metric = "TCO per task" if a.get("metric") == "tco" else "cost per successful task"
        best = a.get("best_route")
        print(f"advice: use {best} (lowest {metric})" if best else f"advice: none (no route has a {metric})")
        for c in a.get("candidates") or []:
            lo, hi = c.get("metric_low_usd"), c.get("metric_high_usd")
            span = f" ({usd(lo)} to {'unbounded' if hi is None else usd(hi)})" if lo is not None else ""
            print(
                f"  {c.get('route')}: {metric} {usd(c.get('metric_usd'))}{span}; success "
                f"{out.pct(c.get('success_rate'))} (95% CI {out.pct(c.get('success_rate_low'))}-"
                f"{out.pct(c.get('success_rate_high'))}) over {c.get('tasks')} tasks"
            )
        for i, n in enumerate(a.get("notes") or []):
            print(n if i == 0 else f"  {n}")
        for w in a.get("warnings") or []:
            print(f"warning: {w}")
    return EXIT_OK


def _advice(engine: Engine, shown: str, filters: Filters, args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """routing.advise as plain dicts, or None when this install has no routing module."""
    try:
        from costtrace.analysis import routing
    except ImportError:
        return None
    import dataclasses

    with reading(shown):
        advice = routing.advise(engine, filters=filters, rework_cost_usd=args.rework_cost, min_tasks=args.min_tasks)
    return [dataclasses.asdict(a) for a in advice]
