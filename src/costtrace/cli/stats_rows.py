"""The per-group figures ``report`` and ``compare`` print: one row per group of tasks, and its columns.

:func:`scope_stats` reads :func:`costtrace.analysis.stats.scope_stats` (with a progress bar on a
terminal); :func:`stats_columns` and :func:`stats_row` turn it into :mod:`costtrace.cli.output` rows,
each cost shown ``>=`` when the group has unpriced calls; :func:`stats_notes` are the notes below.

Example:
    >>> stats = scope_stats(engine, shown, by=("feature",), filters=filters)  # doctest: +SKIP
    >>> out.emit("table", stats_columns(("feature",)), [stats_row(s) for s in stats])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from costtrace.cli import output as out
from costtrace.cli.ledger import reading
from costtrace.cli.options import analytics_module
from costtrace.cli.output import Column

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from costtrace.analysis.stats import Filters, ScopeStats


def stats_columns(by: Sequence[str]) -> list[Column]:
    keys = [Column(k, k, "text") for k in by]
    return [
        *keys,
        Column("tasks", "tasks", "int"),
        Column("successes", "successes", "int", table=False),
        Column("success_rate", "success", "pct"),
        Column("first_pass_rate", "1st pass", "pct"),
        Column("mean_attempts", "attempts", "num"),
        Column("cost_per_task_mean_usd", "cost/task", "usd"),
        Column("cost_per_task_p50_usd", "p50 cost/task", "usd", table=False),
        Column("cost_per_task_p95_usd", "p95", "usd"),
        Column("cost_per_successful_task_usd", "cost/success", "usd"),
        Column("total_cost_usd", "total", "usd"),
        Column("wasted_cost_usd", "wasted_cost_usd", "usd", table=False),
        Column("retry_tax", "retry tax", "pct"),
        Column("escalation_rate", "escalated", "pct"),
        Column("latency_to_success", "p50/p95 to success", "rtext", data=False),
        Column("escalation_premium_usd", "escalation_premium_usd", "usd", table=False),
        Column("cache_savings_usd", "cache_savings_usd", "usd", table=False),
        Column("rework_cost_usd", "rework_cost_usd", "usd", table=False),
        Column("input_tokens_per_task_mean", "input_tokens_per_task_mean", "num", table=False),
        Column("input_tokens_per_task_p50", "input_tokens_per_task_p50", "num", table=False),
        Column("input_tokens_per_task_p95", "input_tokens_per_task_p95", "num", table=False),
        Column("output_tokens_per_task_mean", "output_tokens_per_task_mean", "num", table=False),
        Column("output_tokens_per_task_p50", "output_tokens_per_task_p50", "num", table=False),
        Column("output_tokens_per_task_p95", "output_tokens_per_task_p95", "num", table=False),
        Column("llm_calls", "llm_calls", "int", table=False),
        Column("estimated_calls", "estimated_calls", "int", table=False),
        Column("estimated_call_share", "estimated_call_share", "pct", table=False),
        Column("unpriced_calls", "unpriced", "int"),
        Column("cost_complete", "cost_complete", "text", table=False),
        *LATENCY_COLUMNS,
        *CONTEXT_COLUMNS,
    ]


LATENCY_COLUMNS = [
    Column("latency_success_p50_s", "success p50", "seconds", table=False),
    Column("latency_success_p95_s", "success p95", "seconds", table=False),
    Column("latency_success_tasks", "successes timed", "int", table=False),
    Column("latency_success_no_duration", "successes without duration", "int", table=False),
    Column("latency_failed_p50_s", "failed p50", "seconds", table=False),
    Column("latency_failed_p95_s", "failed p95", "seconds", table=False),
    Column("latency_failed_tasks", "failed timed", "int", table=False),
    Column("latency_failed_no_duration", "failed without duration", "int", table=False),
]
"""Wall time from task start to end, seconds, per outcome class (see :class:`costtrace.analysis.stats.Latency`):
in JSON and CSV, after the older columns; the HTML page shows them as a table of their own."""


CONTEXT_COLUMNS = [
    Column("input_cost_usd", "input_cost_usd", "usd", table=False),
    Column("cache_read_cost_usd", "cache_read_cost_usd", "usd", table=False),
    Column("cache_write_cost_usd", "cache_write_cost_usd", "usd", table=False),
    Column("output_cost_usd", "output_cost_usd", "usd", table=False),
    Column("reasoning_cost_usd", "reasoning_cost_usd", "usd", table=False),
    Column("other_cost_usd", "other_cost_usd", "usd", table=False),
    Column("input_cost_share", "input", "pct", table=False),
    Column("cache_read_cost_share", "cache read", "pct", table=False),
    Column("cache_write_cost_share", "cache write", "pct", table=False),
    Column("output_cost_share", "output", "pct", table=False),
    Column("other_cost_share", "other_cost_share", "pct", table=False),
    Column("input_tokens", "input_tokens", "int", table=False),
    Column("cache_read_tokens", "cache_read_tokens", "int", table=False),
    Column("cache_write_tokens", "cache_write_tokens", "int", table=False),
    Column("uncached_input_tokens", "uncached_input_tokens", "int", table=False),
    Column("output_tokens", "output_tokens", "int", table=False),
    Column("reasoning_tokens", "reasoning_tokens", "int", table=False),
    Column("cache_read_token_share", "cached input", "pct", table=False),
    Column("cache_write_token_share", "cache_write_token_share", "pct", table=False),
    Column("caching_savings_upper_bound_usd", "caching saves (upper bound)", "usd", table=False),
    Column("caching_savings_upper_bound_share", "of spend", "pct", table=False),
    Column("caching_unknown_calls", "no cache price", "int", table=False),
    Column("caching_savings_complete", "caching_savings_complete", "text", table=False),
    Column("input_tokens_per_task", "input tok/task p50/p95", "rtext", table=False, data=False),
]
"""The context tax (:class:`costtrace.analysis.context.ContextTax`): spend and tokens by kind, the cost
shares (of the priced spend) and the cache-read share of input tokens, and the upper bound of what
caching the uncached input would save. In JSON and CSV after the latency columns; the table and the
HTML page show a compact selection as a table of their own (:func:`context_columns`)."""

_CONTEXT_TABLE = (
    "input_cost_share",
    "cache_read_cost_share",
    "cache_write_cost_share",
    "output_cost_share",
    "input_tokens_per_task",
    "cache_read_token_share",
    "caching_savings_upper_bound_usd",
    "caching_savings_upper_bound_share",
    "caching_unknown_calls",
)


def context_columns(by: Sequence[str]) -> list[Column]:
    """The context-tax table (terminal and HTML): the group keys, then the compact selection."""
    chosen = {c.key: c for c in CONTEXT_COLUMNS}
    return [*(Column(k, k, "text") for k in by), *(Column(k, chosen[k].header, chosen[k].kind) for k in _CONTEXT_TABLE)]


CONTEXT_TITLE = (
    "Context tax by {by}: shares of priced spend, cached input = cache reads / input tokens; "
    "'caching saves' is an UPPER BOUND (all uncached input at the cache-read price)"
)


def latency_columns(by: Sequence[str]) -> list[Column]:
    """The HTML page's latency table: the group keys, then every latency column."""
    return [*(Column(k, k, "text") for k in by), *(Column(c.key, c.header, c.kind) for c in LATENCY_COLUMNS)]


def stats_row(s: ScopeStats) -> dict[str, Any]:
    row: dict[str, Any] = dict(s.key)
    complete = s.cost_complete  # else every cost of the row is a lower bound, shown ">=$x" on the row

    def cost(value: Decimal | None) -> Decimal | None:
        return out.at_least(value, complete)

    row.update(
        tasks=s.tasks,
        successes=s.successes,
        success_rate=s.success_rate,
        first_pass_rate=s.first_pass_rate,
        mean_attempts=s.mean_attempts,
        cost_per_task_mean_usd=cost(s.cost_per_task_usd.mean),
        cost_per_task_p50_usd=cost(s.cost_per_task_usd.p50),
        cost_per_task_p95_usd=cost(s.cost_per_task_usd.p95),
        cost_per_successful_task_usd=cost(s.cost_per_successful_task_usd),
        total_cost_usd=cost(s.total_cost_usd),
        wasted_cost_usd=cost(s.wasted_cost_usd),
        retry_tax=s.retry_tax,
        escalation_rate=s.escalation_rate,
        escalation_premium_usd=s.escalation_premium_usd,
        cache_savings_usd=s.cache_savings_usd,
        rework_cost_usd=s.rework_cost_usd,
        llm_calls=s.llm_calls,
        estimated_calls=s.estimated_calls,
        estimated_call_share=s.estimated_call_share,
        unpriced_calls=s.unpriced_calls,
        cost_complete=s.cost_complete,
    )
    for name, lat in (("success", s.latency_success_s), ("failed", s.latency_failed_s)):
        row[f"latency_{name}_p50_s"] = lat.p50
        row[f"latency_{name}_p95_s"] = lat.p95
        row[f"latency_{name}_tasks"] = lat.tasks
        row[f"latency_{name}_no_duration"] = lat.no_duration
    ok = s.latency_success_s
    row["latency_to_success"] = "-" if ok.p50 is None else f"{out.seconds(ok.p50)}/{out.seconds(ok.p95)}"
    for name, dist in (("input", s.input_tokens_per_task), ("output", s.output_tokens_per_task)):
        row[f"{name}_tokens_per_task_mean"] = dist.mean
        row[f"{name}_tokens_per_task_p50"] = dist.p50
        row[f"{name}_tokens_per_task_p95"] = dist.p95
    row.update(context_row(s))
    return row


def context_row(s: ScopeStats) -> dict[str, Any]:
    """The context-tax keys of a group's row (:data:`CONTEXT_COLUMNS`)."""
    ct = s.context
    complete = s.cost_complete

    def cost(value: Decimal) -> Decimal | None:
        return out.at_least(value, complete)

    dist = s.input_tokens_per_task
    return {
        "input_cost_usd": cost(ct.input_usd),
        "cache_read_cost_usd": cost(ct.cache_read_usd),
        "cache_write_cost_usd": cost(ct.cache_write_usd),
        "output_cost_usd": cost(ct.output_usd),
        "reasoning_cost_usd": cost(ct.reasoning_usd),
        "other_cost_usd": cost(ct.other_usd),
        "input_cost_share": ct.input_cost_share,
        "cache_read_cost_share": ct.cache_read_cost_share,
        "cache_write_cost_share": ct.cache_write_cost_share,
        "output_cost_share": ct.output_cost_share,
        "other_cost_share": ct.other_cost_share,
        "input_tokens": ct.input_tokens,
        "cache_read_tokens": ct.cache_read_tokens,
        "cache_write_tokens": ct.cache_write_tokens,
        "uncached_input_tokens": ct.uncached_input_tokens,
        "output_tokens": ct.output_tokens,
        "reasoning_tokens": ct.reasoning_tokens,
        "cache_read_token_share": ct.cache_read_token_share,
        "cache_write_token_share": ct.cache_write_token_share,
        "caching_savings_upper_bound_usd": out.at_most(ct.caching_savings_upper_bound_usd),
        "caching_savings_upper_bound_share": out.at_most(ct.caching_savings_upper_bound_share),
        "caching_unknown_calls": ct.caching_unknown_calls,
        "caching_savings_complete": ct.caching_savings_complete,
        "input_tokens_per_task": "-" if dist.p50 is None else f"{out.num(int(dist.p50))}/{out.num(int(dist.p95 or 0))}",
    }


def stats_notes(stats: Sequence[ScopeStats]) -> list[str]:
    notes = []
    unpriced = sum(s.unpriced_calls for s in stats)
    if unpriced:
        notes.append(
            f"{unpriced:,} call(s) had no price or unknown usage: the costs of their groups are lower bounds, "
            "shown >= (add the models to the price list; see docs/pricing.md)"
        )
    estimated = sum(s.estimated_calls for s in stats)
    calls = sum(s.llm_calls for s in stats)
    if estimated and calls:
        notes.append(f"{estimated:,} of {calls:,} calls have estimated token counts (no usage from the provider)")
    unknown = sum(s.context.caching_unknown_calls for s in stats)
    if unknown:
        notes.append(
            f"{unknown:,} call(s) with uncached input have no price or no cache-read price: what caching would "
            "save on them is unknown and not in 'caching saves' (see no cache price; '-' when nothing else is known)"
        )
    untimed = sum(s.latency_success_s.no_duration + s.latency_failed_s.no_duration for s in stats)
    if untimed:
        notes.append(
            f"{untimed:,} successful or failed task(s) have no recorded duration: they are left out of the "
            "latency percentiles (counted in latency_*_no_duration)"
        )
    return notes


def _progress(label: str) -> out.Progress:
    return out.Progress(label)


EXACT_HELP = (
    "read every task for exact nearest-rank percentiles (default: the ledger's rollups, percentiles within 1%%; "
    "sums, counts and rates are exact either way)"
)


def scope_stats(
    engine: Engine,
    shown: str,
    *,
    by: Sequence[str],
    filters: Filters,
    exact: bool = False,
    percentiles: bool = True,
) -> list[ScopeStats]:
    analytics = analytics_module()
    bar = _progress("reading the ledger")
    try:
        with reading(shown):
            stats: list[ScopeStats] = analytics.scope_stats(
                engine, by=tuple(by), filters=filters, progress=bar, exact=exact, percentiles=percentiles
            )
    finally:
        bar.close()
    return stats
