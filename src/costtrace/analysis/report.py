"""Figures over finished tasks and calls: cost per successful task, retry tax, total cost of ownership.

Pure functions over :class:`~costtrace.records.TaskSummary` and :class:`~costtrace.records.CallRecord`
iterables: no I/O, no OpenTelemetry, no global state. Feed them whatever produced the records (a
listener, ``costtrace.testing.capture()``, later the ledger) and format the result yourself.

Two rules hold everywhere:

- Money is ``Decimal`` USD, never rounded here (round when you display it).
- Nothing is invented. A ratio with nothing to divide by (no tasks, no successes, no tokens) is
  ``None``, never 0 or infinity; a group with unpriced calls has ``cost_complete == False`` and its
  costs are lower bounds.

The unit that matters is the *successful* task::

    cost per successful task = all the group's spend / tasks that succeeded

so the spend on retries, escalations and tasks that failed anyway is charged to the tasks that
delivered. With a rework cost ``L`` (what an unsuccessful task costs you outside the model: a human
redoing it, a refund), the total cost of ownership is::

    TCO per task            = cost per task + P(fail) x L          (P(fail) = 1 - success rate)
    TCO per successful task = (all spend + unsuccessful tasks x L) / successes

Latency is each task's wall time, ``duration_s`` (its start to its end, retries and escalations
inside it included), the same definition as :mod:`costtrace.analysis.stats`: ``latency_success_s``
over the tasks whose outcome is ``success`` (the latency to a correct answer), ``latency_failed_s``
over ``failure`` and ``escalated_to_human``; nearest-rank p50 / p95 (the value ranked
``ceil(p x n)`` of the ``n`` sorted durations), in seconds as ``Decimal``; tasks whose duration is
``None`` are left out and counted in ``no_duration``, never taken as 0.

Example:
    >>> from costtrace.analysis.report import summarize, group_by
    >>> stats = summarize(captured.tasks, rework_cost_usd=Decimal("2.50"))   # doctest: +SKIP
    >>> stats.cost_per_successful_task_usd                                      # doctest: +SKIP
    Decimal('0.0041')
    >>> by_feature = group_by(captured.tasks, "feature")                       # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from costtrace import semconv as sc
from costtrace.records import CallRecord, TaskSummary

__all__ = [
    "UNSET",
    "CallStats",
    "Latency",
    "TaskStats",
    "by_model",
    "dimension_value",
    "group_by",
    "group_calls_by",
    "summarize",
    "summarize_calls",
]

_ZERO = Decimal(0)
_MILLION = Decimal(1_000_000)

UNSET = "(unset)"
"""The group of records that have no value for the grouping key (they are kept, never dropped)."""

_STANDARD_DIMENSIONS = {"feature": sc.FEATURE, "team": sc.TEAM, "customer": sc.CUSTOMER, "user": sc.USER}

_R = TypeVar("_R", TaskSummary, CallRecord)


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _per(amount: Decimal, count: int) -> Decimal | None:
    return amount / count if count else None


def _money(value: Decimal | int, name: str) -> Decimal:
    """A caller-supplied amount as a finite, non-negative Decimal (floats are refused: they are inexact)."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise TypeError(f"{name} must be a Decimal or an int, not {type(value).__name__}; use Decimal('2.50')")
    amount = Decimal(value)
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{name}={value!r} must be a finite amount >= 0")
    return amount


# --------------------------------------------------------------------------------------------------
# Latency


@dataclass(frozen=True)
class Latency:
    """Nearest-rank p50 / p95 wall time, in seconds, of one class of tasks (see the module docstring).

    ``tasks`` counts the tasks of the class that have a duration (the percentiles are over them);
    ``no_duration`` the tasks of the class left out because their duration is unknown. Both
    percentiles are ``None`` when ``tasks`` is 0. :mod:`costtrace.analysis.stats` returns the same type.

    Example:
        >>> Latency.of([2.0, 0.5, 8.0, 1.25, 3.5], no_duration=1)
        Latency(tasks=5, p50=Decimal('2.0'), p95=Decimal('8.0'), no_duration=1)
    """

    tasks: int = 0
    p50: Decimal | None = None
    p95: Decimal | None = None
    no_duration: int = 0

    @classmethod
    def of(cls, durations_s: Sequence[float], *, no_duration: int = 0) -> Latency:
        """The latency of these durations (seconds, in any order)."""
        ranked = sorted(durations_s)
        n = len(ranked)
        if not n:
            return cls(0, None, None, no_duration)
        return cls(n, seconds(ranked[math.ceil(n * 50 / 100) - 1]), seconds(ranked[math.ceil(n * 95 / 100) - 1]),
                   no_duration)  # fmt: skip


def seconds(value: float) -> Decimal:
    """A duration as the Decimal of its shortest repr: 1.5 -> Decimal('1.5'), not 1.5000000000000000001."""
    return Decimal(repr(float(value)))


FAILED_OUTCOMES = ("failure", "escalated_to_human")
"""The outcomes counted in ``latency_failed_s``."""


# --------------------------------------------------------------------------------------------------
# Tasks


@dataclass(frozen=True, slots=True)
class TaskStats:
    """Figures over a group of finished tasks. Build it with :func:`summarize` or :func:`group_by`.

    Counts and sums are fields; rates, per-task costs and TCO are properties computed from them, and
    are ``None`` when their denominator is 0. Costs add up the tasks' own ``cost_usd`` only (a
    parent's ``subtasks_cost_usd`` is ignored), so a group holding a task and its subtasks counts
    every call once.

    Example:
        >>> from decimal import Decimal
        >>> s = TaskStats(tasks=4, successes=2, cost_usd=Decimal("0.08"), rework_cost_usd=Decimal(1))
        >>> s.cost_per_task_usd, s.cost_per_successful_task_usd
        (Decimal('0.02'), Decimal('0.04'))
        >>> s.tco_per_task_usd, s.tco_per_successful_task_usd     # 0.02 + 50% x 1; (0.08 + 2 x 1) / 2
        (Decimal('0.52'), Decimal('1.04'))
        >>> TaskStats().success_rate is None
        True
    """

    tasks: int = 0
    successes: int = 0
    failures: int = 0
    partials: int = 0
    escalated_to_human: int = 0
    unfinished: int = 0
    """Summaries taken while the task still ran (no outcome): counted as not successful."""
    first_pass: int = 0
    """Tasks that succeeded on their first attempt, with no retry, escalation or failed call."""
    tasks_escalated: int = 0
    """Tasks with at least one model escalation (``Task.escalate``)."""
    llm_calls: int = 0
    failed_calls: int = 0
    attempts: int = 0
    retries: int = 0
    escalations: int = 0
    input_tokens: int = 0
    """All input tokens, cache reads and writes included (GenAI conventions)."""
    output_tokens: int = 0
    """All output tokens, reasoning included."""
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    reasoning_output_tokens: int = 0
    cost_usd: Decimal = _ZERO
    """Total spend on the tasks' calls. A lower bound when ``cost_complete`` is False."""
    wasted_cost_usd: Decimal = _ZERO
    """Spend on failed attempts (retried, escalated, last of a failed task); part of ``cost_usd``."""
    cache_savings_usd: Decimal = _ZERO
    unpriced_calls: int = 0
    """Calls with no price or unknown usage: their cost is missing from ``cost_usd``, not zero."""
    estimated_calls: int = 0
    """Calls whose tokens were counted locally rather than reported by the provider."""
    rework_cost_usd: Decimal = _ZERO
    """``L``: what one unsuccessful task costs outside the model (e.g. a human redoing it), for TCO."""
    success_durations_s: tuple[float, ...] = ()
    """The durations of the successful tasks that have one (what ``latency_success_s`` ranks)."""
    failed_durations_s: tuple[float, ...] = ()
    """The durations of the failed tasks (failure, escalated to a human) that have one."""
    success_no_duration: int = 0
    failed_no_duration: int = 0

    # --- latency ----------------------------------------------------------------------------------

    @property
    def latency_success_s(self) -> Latency:
        """Wall time of the successful tasks: the latency to a correct answer, retries and escalations included."""
        return Latency.of(self.success_durations_s, no_duration=self.success_no_duration)

    @property
    def latency_failed_s(self) -> Latency:
        """Wall time of the tasks that failed or were escalated to a human."""
        return Latency.of(self.failed_durations_s, no_duration=self.failed_no_duration)

    # --- outcome rates ----------------------------------------------------------------------------

    @property
    def unsuccessful(self) -> int:
        """Tasks that did not succeed: failures, partials, escalations to a human and unfinished tasks."""
        return self.tasks - self.successes

    @property
    def success_rate(self) -> float | None:
        """Successes / tasks."""
        return _ratio(self.successes, self.tasks)

    @property
    def unsuccessful_rate(self) -> float | None:
        """P(fail) = 1 - success rate: the share of tasks that did not succeed."""
        return _ratio(self.unsuccessful, self.tasks)

    @property
    def first_pass_rate(self) -> float | None:
        """Share of tasks that succeeded on the first attempt with no retry or escalation."""
        return _ratio(self.first_pass, self.tasks)

    @property
    def escalation_rate(self) -> float | None:
        """Share of tasks with at least one model escalation."""
        return _ratio(self.tasks_escalated, self.tasks)

    @property
    def retries_per_task(self) -> float | None:
        return _ratio(self.retries, self.tasks)

    @property
    def attempts_per_task(self) -> float | None:
        return _ratio(self.attempts, self.tasks)

    # --- money ------------------------------------------------------------------------------------

    @property
    def cost_complete(self) -> bool:
        """True when every call was priced; otherwise every cost figure is a lower bound."""
        return self.unpriced_calls == 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def retry_tax(self) -> float | None:
        """Wasted cost / total cost: the share of spend that bought failed attempts."""
        return float(self.wasted_cost_usd / self.cost_usd) if self.cost_usd else None

    @property
    def cost_per_task_usd(self) -> Decimal | None:
        return _per(self.cost_usd, self.tasks)

    @property
    def cost_per_successful_task_usd(self) -> Decimal | None:
        """ALL the group's spend (failed tasks and retries included) / successes; None with no success."""
        return _per(self.cost_usd, self.successes)

    @property
    def cost_per_mtok_usd(self) -> Decimal | None:
        """Blended price paid per million tokens (input and output, cache discounts included)."""
        return self.cost_usd * _MILLION / self.total_tokens if self.total_tokens else None

    @property
    def rework_total_usd(self) -> Decimal:
        """Unsuccessful tasks x L."""
        return self.unsuccessful * self.rework_cost_usd

    @property
    def tco_usd(self) -> Decimal:
        """Total cost of ownership: token spend + unsuccessful tasks x L."""
        return self.cost_usd + self.rework_total_usd

    @property
    def tco_per_task_usd(self) -> Decimal | None:
        """Cost per task + P(fail) x L."""
        return _per(self.tco_usd, self.tasks)

    @property
    def tco_per_successful_task_usd(self) -> Decimal | None:
        """TCO / successes: what one delivered task really costs, rework included."""
        return _per(self.tco_usd, self.successes)


_OUTCOME_COUNTS = {
    "success": "successes",
    "failure": "failures",
    "partial": "partials",
    "escalated_to_human": "escalated_to_human",
}
_TASK_SUMS = (
    "llm_calls", "failed_calls", "attempts", "retries", "escalations", "input_tokens", "output_tokens",
    "cache_read_input_tokens", "cache_write_input_tokens", "reasoning_output_tokens",
    # Own calls only: adding subtasks_cost_usd as well would count subtasks twice.
    "wasted_cost_usd", "cache_savings_usd", "unpriced_calls", "estimated_calls",
)  # fmt: skip


def _task_counts(t: TaskSummary) -> dict[str, Any]:
    """What one task adds to each :class:`TaskStats` field."""
    counts: dict[str, Any] = {name: getattr(t, name) for name in _TASK_SUMS}
    counts["cost_usd"] = t.own_known_cost_usd
    counts["tasks"] = 1
    counts[_OUTCOME_COUNTS.get(t.outcome or "", "unfinished")] = 1
    counts["first_pass"] = int(t.first_pass is True)
    counts["tasks_escalated"] = int(t.escalations > 0)
    klass = "success" if t.outcome == "success" else "failed" if t.outcome in FAILED_OUTCOMES else None
    if klass is not None:
        if t.duration_s is None:
            counts[f"{klass}_no_duration"] = 1
        else:
            counts[f"{klass}_durations_s"] = (t.duration_s,)
    return counts


def _aggregate(
    records: Iterable[_R], counts_of: Callable[[_R], dict[str, Any]], group_of: Callable[[_R], str]
) -> dict[str, dict[str, Any]]:
    """Field sums per group, in the order groups are first seen (sets are united, tuples joined, numbers added)."""
    groups: dict[str, dict[str, Any]] = {}
    for record in records:
        acc = groups.setdefault(group_of(record), {})
        for name, value in counts_of(record).items():
            if isinstance(value, frozenset):
                acc[name] = acc.get(name, frozenset()) | value
            elif isinstance(value, tuple):
                acc.setdefault(name, []).extend(value)  # a list while adding up: joining tuples is quadratic
            else:
                acc[name] = acc.get(name, 0) + value
    for acc in groups.values():
        for name, value in acc.items():
            if isinstance(value, list):
                acc[name] = tuple(value)
    return groups


def summarize(tasks: Iterable[TaskSummary], *, rework_cost_usd: Decimal | int = 0) -> TaskStats:
    """Figures over ``tasks`` taken as one group.

    Args:
        tasks: Task summaries, e.g. ``captured.tasks``. Each is counted once; subtasks are tasks of
            their own (count them or filter them out with ``parent_id``), and costs are never double counted.
        rework_cost_usd: ``L``, the cost of one unsuccessful task outside the model, used for TCO.

    Raises:
        TypeError: ``rework_cost_usd`` is a float (use ``Decimal("2.50")``).
        ValueError: ``rework_cost_usd`` is negative or not finite.

    Example:
        >>> summarize([]).tasks, summarize([]).cost_per_successful_task_usd
        (0, None)
    """
    rework = _money(rework_cost_usd, "rework_cost_usd")
    sums = _aggregate(tasks, _task_counts, lambda t: "").get("", {})
    return TaskStats(**sums, rework_cost_usd=rework)


def dimension_value(dimensions: Mapping[str, str], name: str) -> str | None:
    """The value of dimension ``name`` in a record's dimensions, or None.

    ``name`` may be the attribute key itself (``costtrace.feature``, ``costtrace.dimension.region``),
    a standard dimension (``feature``, ``team``, ``customer``, ``user``) or a custom one (``region``,
    as passed to ``costtrace.task(..., region="eu")``).

    Example:
        >>> dims = {"costtrace.feature": "support", "costtrace.dimension.region": "eu"}
        >>> dimension_value(dims, "feature"), dimension_value(dims, "region"), dimension_value(dims, "tier")
        ('support', 'eu', None)
    """
    if name in dimensions:
        return dimensions[name]
    key = _STANDARD_DIMENSIONS.get(name, sc.DIMENSION_PREFIX + name)
    return dimensions.get(key)


def _grouper(key: str | Callable[[_R], str | None]) -> Callable[[_R], str]:
    """A function giving each record its group: a dimension's value, or ``key(record)``; UNSET for None."""
    if isinstance(key, str):
        name = key

        def by_dimension(record: _R) -> str:
            value = dimension_value(record.dimensions, name)
            return UNSET if value is None else value

        return by_dimension
    fn = key

    def by_function(record: _R) -> str:
        value = fn(record)
        return UNSET if value is None else str(value)

    return by_function


def group_by(
    tasks: Iterable[TaskSummary],
    key: str | Callable[[TaskSummary], str | None],
    *,
    rework_cost_usd: Decimal | int = 0,
) -> dict[str, TaskStats]:
    """:func:`summarize` per group, in the order groups are first seen.

    Args:
        tasks: Task summaries.
        key: A dimension name (see :func:`dimension_value`) or a function of the summary. Tasks with
            no value go to the :data:`UNSET` group.
        rework_cost_usd: ``L`` for TCO, the same for every group.

    Example:
        >>> stats = group_by(captured.tasks, "customer")                     # doctest: +SKIP
        >>> stats = group_by(captured.tasks, lambda t: t.name)               # doctest: +SKIP
        >>> {k: s.cost_per_successful_task_usd for k, s in stats.items()}    # doctest: +SKIP
        {'resolve_ticket': Decimal('0.0038'), 'extract_refund': None}
    """
    rework = _money(rework_cost_usd, "rework_cost_usd")
    groups = _aggregate(tasks, _task_counts, _grouper(key))
    return {group: TaskStats(**sums, rework_cost_usd=rework) for group, sums in groups.items()}


# --------------------------------------------------------------------------------------------------
# Calls


@dataclass(frozen=True, slots=True)
class CallStats:
    """Figures over a group of LLM calls (e.g. per model). Build it with :func:`summarize_calls`.

    Example:
        >>> s = CallStats(calls=2, input_tokens=900_000, output_tokens=100_000, cost_usd=Decimal("0.5"))
        >>> s.cost_per_call_usd, s.cost_per_mtok_usd
        (Decimal('0.25'), Decimal('0.5'))
    """

    calls: int = 0
    failed_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    reasoning_output_tokens: int = 0
    cost_usd: Decimal = _ZERO
    """Spend on the priced calls. A lower bound when ``cost_complete`` is False."""
    cache_savings_usd: Decimal = _ZERO
    unpriced_calls: int = 0
    estimated_calls: int = 0
    price_sources: tuple[str, ...] = field(default=())
    """Where the prices came from (``genai-prices 0.2.3``, ``override`` ...), sorted, without duplicates."""

    @property
    def cost_complete(self) -> bool:
        """True when every call was priced; otherwise the cost figures are lower bounds."""
        return self.unpriced_calls == 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost_per_call_usd(self) -> Decimal | None:
        return _per(self.cost_usd, self.calls)

    @property
    def cost_per_mtok_usd(self) -> Decimal | None:
        """Blended price paid per million tokens (input and output, cache discounts included)."""
        return self.cost_usd * _MILLION / self.total_tokens if self.total_tokens else None


def _call_counts(r: CallRecord) -> dict[str, Any]:
    """What one call adds to each :class:`CallStats` field."""
    u, c = r.usage, r.cost
    counts: dict[str, Any] = {
        "calls": 1,
        "failed_calls": int(r.error_type is not None),
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
        "cache_write_input_tokens": u.cache_write_input_tokens,
        "reasoning_output_tokens": u.reasoning_output_tokens,
        "estimated_calls": int(u.source in ("estimated", "heuristic")),
    }
    if c.total_usd is None:
        counts["unpriced_calls"] = 1
    else:
        counts["cost_usd"] = c.total_usd
        counts["cache_savings_usd"] = c.cache_savings_usd
        counts["price_sources"] = frozenset((c.price_source,))
    return counts


def _call_stats(sums: dict[str, Any]) -> CallStats:
    sources = sums.pop("price_sources", frozenset())
    return CallStats(**sums, price_sources=tuple(sorted(sources)))


def summarize_calls(calls: Iterable[CallRecord]) -> CallStats:
    """Figures over ``calls`` taken as one group.

    Example:
        >>> summarize_calls([]).cost_per_mtok_usd is None
        True
    """
    return _call_stats(_aggregate(calls, _call_counts, lambda r: "").get("", {}))


def by_model(record: CallRecord) -> str:
    """Grouping key: the model that answered (``response_model``), else the model requested.

    Example:
        >>> per_model = group_calls_by(captured.calls, by_model)     # doctest: +SKIP
    """
    return record.response_model or record.request_model


def group_calls_by(calls: Iterable[CallRecord], key: str | Callable[[CallRecord], str | None]) -> dict[str, CallStats]:
    """:func:`summarize_calls` per group, in the order groups are first seen.

    Args:
        calls: Call records.
        key: A dimension name (see :func:`dimension_value`) or a function of the record, such as
            :func:`by_model`. Calls with no value go to the :data:`UNSET` group.

    Example:
        >>> per_model = group_calls_by(captured.calls, by_model)                # doctest: +SKIP
        >>> {m: round(s.cost_per_mtok_usd, 2) for m, s in per_model.items()}   # doctest: +SKIP
        {'gpt-4o-mini': Decimal('0.24'), 'gpt-4o': Decimal('4.03')}
    """
    groups = _aggregate(calls, _call_counts, _grouper(key))
    return {group: _call_stats(sums) for group, sums in groups.items()}
