"""``costtrace report``: cost per successful task and the other task figures per group, and ``--html``.

Reads the ledger read-only, groups its tasks ``--by`` feature (or task, route, team, customer, hour,
day, week, month), and prints a table, JSON or CSV; ``--html FILE`` also writes a self-contained page
with charts (:mod:`costtrace.cli.html_report`): the output on stdout stays the same, and one line on
stderr says where the page was written.

Example::

    costtrace report --by feature,route --since 7d
    costtrace report --html report.html
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costtrace.cli import output as out
from costtrace.cli.exit_codes import EXIT_OK
from costtrace.cli.ledger import ledger_url, no_tasks_error, open_ledger, reading, shown_url
from costtrace.cli.options import (
    FILTER_FLAGS,
    analytics_module,
    build_filters,
    filter_parent,
    format_parent,
    ledger_parent,
    parse_by,
    window_text,
)
from costtrace.cli.output import Column
from costtrace.cli.stats_rows import (
    CONTEXT_TITLE,
    EXACT_HELP,
    context_columns,
    latency_columns,
    scope_stats,
    stats_columns,
    stats_notes,
    stats_row,
)
from costtrace.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from costtrace.analysis.stats import Filters, ScopeStats


def add_command(commands: Any) -> None:
    """Register ``costtrace report`` on the ``costtrace`` subparsers."""
    p = commands.add_parser(
        "report",
        parents=[ledger_parent(), filter_parent(), format_parent()],
        help="cost per successful task, success rate, retry tax... per feature (or any grouping)",
        description=(
            "Read the ledger and print, per group: tasks, success and first-pass rates, attempts, cost per "
            "task (mean, p95), cost per successful task (all spend, failures included, / successes), total "
            "cost, retry tax, escalations and the latency to success; then a second table, the context tax: "
            "the shares of spend on input, cache reads, cache writes and output, input tokens per task "
            "(p50/p95), the cache-read share of input tokens, and an upper bound of what caching the uncached "
            "input would save at the provider's cache price. JSON and CSV hold both in one row per group. "
            "--html FILE also writes a self-contained page with charts to "
            "FILE; the table (or --format json|csv) is printed as without it, and one line on stderr says where "
            "the page went."
        ),
    )
    p.add_argument(
        "--by",
        default="feature",
        metavar="KEYS",
        help="comma-separated grouping: feature, task, route (the models a task called, in order), final_model "
        "(the model of its last call), team, customer, hour, day, week, month "
        "(default: %(default)s)",
    )
    p.add_argument("--exact", action="store_true", help=EXACT_HELP)
    p.add_argument(
        "--html",
        metavar="FILE",
        help="also write a self-contained HTML report with charts to FILE (the table or --format output is "
        "still printed; stderr says where the page went)",
    )
    p.set_defaults(handler=report_command)


def report_command(args: argparse.Namespace) -> int:
    by = parse_by(args.by)
    filters = build_filters(args)
    url = ledger_url(args)
    shown = shown_url(url)
    engine = open_ledger(url)
    try:
        stats = scope_stats(engine, shown, by=by, filters=filters, exact=args.exact)
        if not stats:
            raise no_tasks_error(engine, shown, filters)
        columns = stats_columns(by)
        rows = [stats_row(s) for s in stats]
        notes = stats_notes(stats)
        # The page first: a FILE that cannot be written is an error before anything is printed.
        wrote = (
            _write_html(args.html, engine, shown, filters, by, stats, columns, rows, notes, exact=args.exact)
            if args.html
            else None
        )
        title = f"Cost per successful task by {', '.join(by)} ({window_text(filters)}, ledger {shown})"
        if args.format == "table":  # a second table under the first: the context tax of the same groups
            out.emit("table", columns, rows, title=title)
            print()
            print(CONTEXT_TITLE.format(by=", ".join(by)))
            print(out.table(context_columns(by), rows))
            for note in notes:
                print(f"note: {note}")
        else:
            out.emit(args.format, columns, rows, title=title, notes=notes)
        if wrote:
            print(wrote, file=sys.stderr)
    finally:
        engine.dispose()
    return EXIT_OK


def _total(stats: Sequence[ScopeStats]) -> dict[str, Any]:
    tasks = sum(s.tasks for s in stats)
    successes = sum(s.successes for s in stats)
    total = sum((s.total_cost_usd for s in stats), Decimal(0))
    wasted = sum((s.wasted_cost_usd for s in stats), Decimal(0))
    unpriced = sum(s.unpriced_calls for s in stats)
    complete = unpriced == 0
    return {
        "tasks": tasks,
        "successes": successes,
        "total_cost_usd": out.at_least(total, complete),
        "wasted_cost_usd": out.at_least(wasted, complete),
        "success_rate": Decimal(successes) / tasks if tasks else None,
        "cost_per_successful_task_usd": out.at_least(total / successes, complete) if successes else None,
        "retry_tax": wasted / total if total else None,
        "unpriced_calls": unpriced,
    }


def _write_html(
    path_text: str,
    engine: Engine,
    shown: str,
    filters: Filters,
    by: Sequence[str],
    stats: Sequence[ScopeStats],
    columns: Sequence[Column],
    rows: Sequence[dict[str, Any]],
    notes: Sequence[str],
    *,
    exact: bool = False,
) -> str:
    """Write the HTML page to ``path_text``; return the line that says so."""
    from costtrace._version import __version__
    from costtrace.cli import html_report as h

    analytics = analytics_module()
    # The charts show sums and rates only: no percentile to read (several times faster on the rollups).
    by_day = scope_stats(engine, shown, by=("day",), filters=filters, exact=exact, percentiles=False)
    by_feature = scope_stats(engine, shown, by=("feature",), filters=filters, exact=exact, percentiles=False)
    # Routes are compared within a feature (a route's cost per success over several features mixes their
    # difficulty): the chart needs (feature, route) groups, read again unless the table already has them.
    by_route = (
        stats
        if tuple(by) == ROUTE_CHART_BY
        else scope_stats(engine, shown, by=ROUTE_CHART_BY, filters=filters, exact=exact, percentiles=False)
    )
    with reading(shown):
        models = analytics.model_costs(engine, filters=filters)
    total = _total(by_feature)
    days = sorted(by_day, key=lambda s: str(s.key.get("day")))
    features = sorted(by_feature, key=lambda s: s.total_cost_usd, reverse=True)
    page = h.render(
        title="costtrace report",
        meta=[
            ("Ledger", shown),
            ("Window", window_text(filters)),
            *((f"Filter {k}", str(getattr(filters, k))) for k in FILTER_FLAGS if getattr(filters, k) is not None),
            *((f"Filter {k}", v) for k, v in filters.dimensions),
        ],
        kpis=[
            h.Kpi(
                "Cost per successful task",
                out.display(total["cost_per_successful_task_usd"], "usd"),
                "all spend / successes" + (", a lower bound (unpriced calls)" if total["unpriced_calls"] else ""),
            ),
            h.Kpi(
                "Success rate", out.pct(total["success_rate"]), f"{total['successes']:,} of {total['tasks']:,} tasks"
            ),
            h.Kpi("Tasks", f"{total['tasks']:,}", f"{len(by_feature)} feature(s)"),
            h.Kpi(
                "Total spend",
                out.display(total["total_cost_usd"], "usd"),
                "priced calls"
                if not total["unpriced_calls"]
                else f"{total['unpriced_calls']:,} unpriced call(s) left out",
            ),
            h.Kpi("Retry tax", out.pct(total["retry_tax"]), "spend on failed attempts"),
            h.Kpi("Wasted", out.display(total["wasted_cost_usd"], "usd"), "failed attempts' cost"),
        ],
        over_time=_day_points(days),
        cost_by_feature=[
            h.Bar(
                str(s.key.get("feature") or "(none)"),
                (out.at_least(s.total_cost_usd, s.cost_complete),),
                "" if s.cost_complete else f"a lower bound: {s.unpriced_calls:,} unpriced call(s)",
            )
            for s in features
        ],
        retry_tax_by_feature=[h.Bar(str(s.key.get("feature") or "(none)"), (s.retry_tax,)) for s in features],
        models=[h.Bar(m.model, (m.blended_list_per_mtok, m.effective_per_mtok_useful)) for m in models],
        table=(columns, rows),
        table_title=f"By {', '.join(by)}",
        latency=(latency_columns(by), rows),
        context=(context_columns(by), rows),
        routes=[_route_figures(s) for s in by_route],
        routes_note=f"Over the report's window and filters ({window_text(filters)}), whatever --by says.",
        latency_bars=[_latency_bar(s) for s in stats[:LATENCY_CHART_GROUPS]],
        latency_note=(
            f"The chart shows the first {LATENCY_CHART_GROUPS} of {len(stats):,} groups; the table below has all."
            if len(stats) > LATENCY_CHART_GROUPS
            else ""
        ),
        notes=notes,
        version=__version__,
    )
    path = Path(path_text).expanduser()
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--html {path_text!r}: cannot write the report: {exc.strerror or exc}") from exc
    return f"costtrace report: wrote {path} ({total['tasks']:,} tasks, {len(days)} day(s))"


ROUTE_CHART_BY = ("feature", "route")
"""The groups of the page's route comparison chart."""
LATENCY_CHART_GROUPS = 40
"""At most this many groups (the table's first) in the latency chart; the latency table has them all."""


def _route_figures(s: ScopeStats) -> Any:
    from costtrace.cli import html_report as h

    return h.RouteFigures(
        route=str(s.key.get("route") or "(none)"),
        feature=s.key.get("feature"),
        tasks=s.tasks,
        cost_per_successful_task_usd=out.at_least(s.cost_per_successful_task_usd, s.cost_complete),
        first_pass_rate=s.first_pass_rate,
        note="" if s.cost_complete else f"a lower bound: {s.unpriced_calls:,} unpriced call(s)",
    )


def _latency_bar(s: ScopeStats) -> Any:
    from costtrace.cli import html_report as h

    ok, failed = s.latency_success_s, s.latency_failed_s
    return h.Bar(
        " \u00b7 ".join("(none)" if v is None else str(v) for v in s.key.values()),
        (ok.p50, ok.p95, failed.p50, failed.p95),
        f"{ok.tasks:,} timed success(es), {failed.tasks:,} timed failure(s)",
    )


def _day_points(days: Sequence[ScopeStats]) -> list[Any]:
    """One point per calendar day from the first to the last (a gap where a day has no task)."""
    from datetime import date

    from costtrace.cli import html_report as h

    by_day = {h.day_label(s.key.get("day")): s for s in days}
    try:
        first, last = date.fromisoformat(min(by_day)), date.fromisoformat(max(by_day))
    except ValueError:
        labels = sorted(by_day)
    else:
        span = (last - first).days
        labels = [(first + timedelta(days=i)).isoformat() for i in range(span + 1)] if span <= 400 else sorted(by_day)
    points = []
    for label in labels:
        st = by_day.get(label)
        if st is None:
            points.append(h.Point(label, None, "no tasks"))
        else:
            note = f"{st.successes}/{st.tasks} tasks succeeded"
            if not st.cost_complete:
                note += f"; a lower bound: {st.unpriced_calls:,} unpriced call(s)"
            points.append(h.Point(label, out.at_least(st.cost_per_successful_task_usd, st.cost_complete), note))
    return points
