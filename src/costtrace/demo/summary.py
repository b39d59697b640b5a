"""The figures printed at the end of ``costtrace demo``, read back from the ledger through :mod:`costtrace.analysis`.

:func:`ledger_reports` reads the run's rows (per route, per model, routing advice); :class:`DemoResult`
holds them with the run's tickets and records; :func:`render` prints the tables, then :func:`findings`,
plain sentences computed from the numbers, and the CLI commands that report on the same ledger.

Example:
    >>> from costtrace import demo
    >>> print(render(demo.run(tickets=20, seed=1)))    # doctest: +SKIP
"""

from __future__ import annotations

import shlex
import textwrap
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from costtrace.analysis.report import TaskStats
from costtrace.demo.support_bot import (
    CHEAP_MODEL,
    FEATURE,
    FRONTIER_MODEL,
    MAX_ATTEMPTS,
    PROVIDER,
    TASK_NAME,
    Strategy,
)
from costtrace.demo.tickets import TIER_NAMES, Ticket
from costtrace.records import CallRecord, TaskSummary

if TYPE_CHECKING:
    from costtrace.analysis.routing import Advice
    from costtrace.analysis.stats import ModelCost, ScopeStats

__all__ = ["DemoResult", "best_strategy", "findings", "ledger_reports", "render", "report_commands"]


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What one demo run produced. The tables' figures are read back from the ledger after the run."""

    tickets: tuple[Ticket, ...]
    seed: int
    rework_cost_usd: Decimal
    strategies: tuple[Strategy, ...]
    tasks: tuple[TaskSummary, ...]
    """This run's task summaries as costtrace emitted them (the ledger holds the same)."""
    calls: tuple[CallRecord, ...]
    per_route: dict[str, ScopeStats]
    """By :attr:`Strategy.key`: ``analytics.scope_stats(by=("task",))`` over this run's ledger rows."""
    per_model: dict[str, ModelCost]
    """By requested model: ``analytics.model_costs`` over this run's ledger rows."""
    advice: Advice | None
    """``routing.advise`` over this run's ledger rows (feature ``support``), by recorded route."""
    per_tier: dict[tuple[str, int], TaskStats]
    """By (:attr:`Strategy.key`, ticket tier), from the task summaries: the ledger's reports do not
    filter on custom dimensions such as ``tier``."""
    ledger_url: str
    """Where the run was recorded, password hidden."""
    run_id: str
    """The ``demo_run`` dimension of this run's tasks and calls in the ledger."""
    sdk_version: str
    own_ledger: bool = False
    """The run went to the demo's own ledger (:func:`costtrace.demo.default_ledger_path`), emptied first: it
    holds this run only."""

    def tco_per_success_usd(self, key: str) -> Decimal | None:
        """(all spend + unresolved tickets x rework cost) / successful tickets, for route ``key``."""
        s = self.per_route.get(key)
        if s is None or not s.successes:
            return None
        return (s.total_cost_usd + (s.tasks - s.successes) * self.rework_cost_usd) / s.successes


def ledger_reports(
    url: str, since: datetime, strategies: tuple[Strategy, ...], rework_cost_usd: Decimal
) -> tuple[dict[str, ScopeStats], dict[str, ModelCost], Advice | None]:
    """The run's figures, read from the ledger: everything that ended since the run started, feature ``support``."""
    from costtrace.analysis.routing import advise
    from costtrace.analysis.stats import Filters, model_costs, scope_stats
    from costtrace.spend.engine import make_engine

    engine = make_engine(url)
    try:
        filters = Filters(feature=FEATURE, since=since)
        by_task = {s.key["task"]: s for s in scope_stats(engine, by=("task",), filters=filters)}
        per_route = {st.key: by_task[st.task_name] for st in strategies if st.task_name in by_task}
        models = {m.model: m for m in model_costs(engine, filters=filters)}
        order = dict.fromkeys(m for st in strategies for m in st.models)
        per_model = {m: models[m] for m in [*order, *sorted(models)] if m in models}
        advice = advise(engine, filters=filters, rework_cost_usd=rework_cost_usd if rework_cost_usd > 0 else None)
    finally:
        engine.dispose()
    return per_route, per_model, next((a for a in advice if a.feature == FEATURE), None)


def report_commands(result: DemoResult) -> list[str]:
    """The CLI commands that report on the run's ledger: the per-route table (``report --by task``), and
    the routes as the tasks took them, with routing advice (``compare``).

    Example:
        >>> report_commands(result)[0]                      # doctest: +SKIP
        'costtrace report --ledger sqlite:////home/me/.local/share/costtrace/demo.db --by task'
    """
    ledger = shlex.quote(result.ledger_url)
    return [f"costtrace report --ledger {ledger} --by task", f"costtrace compare --ledger {ledger} --feature {FEATURE}"]


# --- display -----------------------------------------------------------------------------------


def _usd(value: Decimal | None, places: int) -> str:
    """Money for display, rounded here and only here; ``n/a`` for an undefined figure."""
    return "n/a" if value is None else f"${value:,.{places}f}"


def _pct(rate: Decimal | float | None) -> str:
    return "n/a" if rate is None else f"{float(rate):.1%}"


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Plain-text columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join((first, *rest)).rstrip()

    return [line(headers), line(tuple("-" * w for w in widths)), *(line(row) for row in rows)]


_PER_TASK_PLACES = 5
_PER_MTOK_PLACES = 3
_WRAP = 100
_MILLION = Decimal(1_000_000)


def _route_per_mtok(s: ScopeStats) -> Decimal | None:
    """Spend per million tokens of a route: mean cost per task / mean tokens per task."""
    cost, inp, out = s.cost_per_task_usd.mean, s.input_tokens_per_task.mean, s.output_tokens_per_task.mean
    if cost is None or inp is None or out is None or not inp + out:
        return None
    return cost * _MILLION / (inp + out)


def _model_rows(result: DemoResult) -> list[tuple[str, ...]]:
    return [
        (
            model + ("" if m.cost_complete else " *"),
            f"{m.calls:,}",
            f"{m.input_tokens:,}",
            f"{m.output_tokens:,}",
            _usd(m.cost_usd, 4),
            _usd(m.blended_list_per_mtok, _PER_MTOK_PLACES),
            _usd(m.effective_per_mtok_useful, _PER_MTOK_PLACES),
        )
        for model, m in result.per_model.items()
    ]


def _route_rows(result: DemoResult) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for strategy in result.strategies:
        s = result.per_route.get(strategy.key)
        if s is None:
            continue
        rows.append(
            (
                strategy.label + ("" if s.cost_complete else " *"),
                f"{s.tasks:,}",
                _pct(s.success_rate),
                _pct(s.first_pass_rate),
                "n/a" if s.mean_attempts is None else f"{s.mean_attempts:.2f}",
                f"{s.escalated_tasks:,}",
                _usd(s.total_cost_usd, 4),
                _usd(_route_per_mtok(s), _PER_MTOK_PLACES),
                _usd(s.cost_per_successful_task_usd, _PER_TASK_PLACES),
                _pct(s.retry_tax),
                _usd(result.tco_per_success_usd(strategy.key), _PER_TASK_PLACES),
            )
        )
    return rows


def _tier_rows(result: DemoResult) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for tier, name in TIER_NAMES.items():
        count = sum(t.tier == tier for t in result.tickets)
        cells = [
            _pct(s.first_pass_rate) if (s := result.per_tier.get((st.key, tier))) else "n/a" for st in result.strategies
        ]
        rows.append((f"{name} ({tier})", f"{count:,}", *cells))
    return rows


def _quoted(strategy: Strategy) -> str:
    return f"'{strategy.label}'"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _times(ratio: Decimal) -> str:
    return f"{ratio:.1f}x less" if ratio >= 1 else f"{1 / ratio:.1f}x more"


def best_strategy(result: DemoResult) -> Strategy | None:
    """The route to advise: the lowest TCO per successful ticket (the token cost alone when rework is 0)."""
    ranked = [s for s in result.strategies if result.tco_per_success_usd(s.key) is not None]
    return min(ranked, key=lambda s: result.tco_per_success_usd(s.key) or Decimal(0)) if ranked else None


def _break_even_rework(cheap: ScopeStats, other: ScopeStats) -> Decimal | None:
    """The rework cost L above which ``other`` beats ``cheap`` per successful task (None if it never does).

    TCO per success = (C + U x L) / S for each; equal at L = (C_o/S_o - C_c/S_c) / (U_c/S_c - U_o/S_o).
    """
    if not cheap.successes or not other.successes:
        return None
    slope = Decimal(cheap.tasks - cheap.successes) / cheap.successes - Decimal(other.tasks - other.successes) / (
        other.successes
    )
    if slope <= 0:
        return None
    gap = other.total_cost_usd / other.successes - cheap.total_cost_usd / cheap.successes
    return max(gap / slope, Decimal(0))


def findings(result: DemoResult) -> list[str]:
    """Plain sentences computed from the result's numbers (never written in advance)."""
    out: list[str] = []
    routes = result.per_route
    ran = [s for s in result.strategies if s.key in routes]

    cheap_m, frontier_m = result.per_model.get(CHEAP_MODEL), result.per_model.get(FRONTIER_MODEL)
    token_ratio: Decimal | None = None
    if cheap_m and frontier_m and cheap_m.blended_list_per_mtok and frontier_m.blended_list_per_mtok:
        token_ratio = frontier_m.blended_list_per_mtok / cheap_m.blended_list_per_mtok
        out.append(
            f"Cheap per token: {CHEAP_MODEL} costs {_times(token_ratio)} than {FRONTIER_MODEL} "
            f"({_usd(cheap_m.blended_list_per_mtok, _PER_MTOK_PLACES)} vs "
            f"{_usd(frontier_m.blended_list_per_mtok, _PER_MTOK_PLACES)} per million tokens, cache discounts included)."
        )

    def per_success(s: Strategy) -> Decimal | None:
        return routes[s.key].cost_per_successful_task_usd

    priced = [s for s in ran if per_success(s) is not None]
    cheap = next((s for s in priced if set(s.models) == {CHEAP_MODEL}), None)
    frontier = next((s for s in priced if set(s.models) == {FRONTIER_MODEL}), None)
    hard_c = result.per_tier.get((cheap.key, 3)) if cheap else None
    hard_f = result.per_tier.get((frontier.key, 3)) if frontier else None
    if hard_c is not None and hard_f is not None:
        out.append(
            f"On the {_count(hard_c.tasks, 'hard ticket')}, {CHEAP_MODEL}'s first answer passed validation "
            f"{_pct(hard_c.first_pass_rate)} of the time, {FRONTIER_MODEL}'s {_pct(hard_f.first_pass_rate)}."
        )
    if priced:
        figures = [f"{_usd(per_success(s), _PER_TASK_PLACES)} with {_quoted(s)}" for s in priced]
        out.append(
            "In token spend, counting every retry, escalation and failed ticket, a successful ticket costs "
            f"{_join(figures)}."
        )
    out.extend(
        f"{_quoted(s)} resolved no ticket, so its cost per successful ticket is undefined."
        for s in ran
        if per_success(s) is None
    )
    if cheap and frontier and token_ratio:
        c, f = routes[cheap.key], routes[frontier.key]
        c_ps, f_ps = per_success(cheap), per_success(frontier)
        assert c_ps is not None and f_ps is not None
        out.append(
            f"So {_quoted(cheap)} is {_times(f_ps / c_ps)} than {_quoted(frontier)} per successful ticket, "
            f"against {_times(token_ratio)} per token: {_pct(c.retry_tax)} of its spend is retry tax (answers "
            f"that failed validation), its first-pass rate is {_pct(c.first_pass_rate)} against "
            f"{_pct(f.first_pass_rate)}, and it leaves {c.tasks - c.successes:,} of {c.tasks:,} tickets unresolved."
        )

    best = best_strategy(result)
    if best is not None and result.rework_cost_usd > 0:
        rework = _usd(result.rework_cost_usd, 2)

        def tco(s: Strategy) -> str:
            return _usd(result.tco_per_success_usd(s.key), _PER_TASK_PLACES)

        others = [f"{tco(s)} for {_quoted(s)}" for s in priced if s != best]
        out.append(
            f"Counting {rework} of human rework per unresolved ticket (TCO), {_quoted(best)} is the cheapest: "
            f"{tco(best)} per successful ticket" + (f", against {_join(others)}." if others else ".")
        )
    elif best is not None:
        out.append("With no rework cost (--rework-cost 0), total cost of ownership is the token spend alone.")

    if best is not None:
        metric = "TCO" if result.rework_cost_usd > 0 else "cost"
        advice = (
            f"Routing advice for '{FEATURE}': use {_quoted(best)} ({best.describe()}), the lowest {metric} per "
            "successful ticket."
        )
        if cheap is not None and best != cheap:
            even = _break_even_rework(routes[cheap.key], routes[best.key])
            if even is not None:
                advice += (
                    f" {_quoted(cheap)} would only win if an unresolved ticket cost less than {_usd(even, 4)} "
                    "to fix by hand."
                )
        elif cheap is not None:
            rivals = [(s, _break_even_rework(routes[cheap.key], routes[s.key])) for s in priced if s != best]
            known = [(s, e) for s, e in rivals if e is not None]
            if known:
                s, e = min(known, key=lambda pair: pair[1])
                advice += f" Above {_usd(e, 4)} of rework per unresolved ticket, {_quoted(s)} would win."
        out.append(advice)

    a = result.advice
    if a is not None and a.best_route is not None:
        ranked = [c for c in a.candidates if c.metric_usd is not None]
        what = "TCO per task" if a.metric == "tco" else "cost per successful task"
        out.append(
            f"costtrace.analysis.routing.advise, over the routes the tasks actually took (models in order of use: a "
            f"cascade ticket that {CHEAP_MODEL} solved counts as {CHEAP_MODEL}), ranks by {what}: "
            + _join([f"{c.route} {_usd(c.metric_usd, _PER_TASK_PLACES)} ({c.tasks:,} tasks)" for c in ranked])
            + f"; best: {a.best_route}."
        )
        out.extend(f"advise warns: {w}." for w in a.warnings)

    if not all(s.cost_complete for s in routes.values()):
        out.append("Some calls had no price (marked *): their costs are missing, so the figures are lower bounds.")
    return out


def render(result: DemoResult) -> str:
    """The demo's report: header, per-model, per-route and per-tier tables, then the findings and advice."""
    sources = sorted({src for c in result.calls if (src := c.cost.price_source) and src != "none"})
    n = len(result.tickets)
    mix = ", ".join(f"{sum(t.tier == tier for t in result.tickets):,} {name}" for tier, name in TIER_NAMES.items())
    labels = tuple(s.label for s in result.strategies)
    ledger_tasks = sum(s.tasks for s in result.per_route.values())
    ledger_calls = sum(m.calls for m in result.per_model.values())
    lines = [
        f"costtrace demo: {_count(n, 'support ticket')} (seed {result.seed}; {mix}), "
        f"each resolved under {len(result.strategies)} routes.",
        f"Calls go through the OpenAI SDK {result.sdk_version} to a local simulated server on 127.0.0.1; "
        f"tokens come from its usage, prices are real ({PROVIDER} list prices from "
        f"{', '.join(sources) or 'no price source'}).",
        "Every answer is validated (one JSON object, required fields, category, refund policy); at most "
        f"{MAX_ATTEMPTS} answers per ticket.",
        f"Recorded in the ledger {result.ledger_url}: {_count(ledger_tasks, 'task')} and "
        f"{_count(ledger_calls, 'call')} of this run (feature '{FEATURE}', tasks {TASK_NAME}.<route>); "
        "the tables below are read back from it.",
        "",
        "Per model",
        *_table(
            ("model", "calls", "input tok", "output tok", "cost", "$/1M tok", "$/1M useful tok"),
            _model_rows(result),
        ),
        "",
        f"Per route (rework cost per unresolved ticket: {_usd(result.rework_cost_usd, 2)})",
        *_table(
            (
                "route",
                "tasks",
                "success",
                "1st pass",
                "att/task",
                "escal.",
                "cost",
                "$/1M tok",
                "cost/success",
                "retry tax",
                "TCO/success",
            ),
            _route_rows(result),
        ),
        *(f"  {s.label}: {s.describe()}" for s in result.strategies),
        "",
        "First-pass rate by ticket tier",
        *_table(("tier", "tickets", *labels), _tier_rows(result)),
        "",
        "$/1M useful tok = all spend on the model / tokens of the answers that were delivered;",
        "cost/success = all spend / successful tickets; retry tax = spend on failed attempts / all spend;",
        "TCO/success = (all spend + unresolved tickets x rework cost) / successful tickets.",
        "",
        *(line for sentence in findings(result) for line in textwrap.wrap(sentence, width=_WRAP)),
        "",
        (
            "Report on this run's ledger (it holds this run only; the next `costtrace demo` replaces it):"
            if result.own_ledger
            else "Report on the ledger (this run and whatever else it holds):"
        ),
        *(f"  {command}" for command in report_commands(result)),
    ]
    return "\n".join(lines)
