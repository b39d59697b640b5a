"""What a finished task writes on its span: its rollups, and for OpenInference its input and output.

``summary_attributes`` gives the ``costtrace.task.*`` attributes of a :class:`TaskSummary`;
``openinference_attributes`` gives ``input.value`` (the task and its dimensions as JSON) and ``output.value``
(:func:`output_summary`, e.g. ``failure (timeout) · $0.0123 · 3 LLM calls · 2 attempts · 1 retry``).
"""

from __future__ import annotations

import json

from opentelemetry.util.types import AttributeValue

from costtrace import semconv as sc
from costtrace._money import usd
from costtrace.records import TaskSummary

_MAX_SUMMARY_REASON_CHARS = 120
"""An outcome reason is cut to this in the one-line ``output.value`` (the full one is ``outcome_reason``)."""


def summary_attributes(s: TaskSummary) -> dict[str, AttributeValue]:
    """The rollup attributes a finished task writes on its span (``costtrace.task.*``)."""
    attrs: dict[str, AttributeValue] = {
        sc.TASK_OUTCOME: s.outcome or "",
        sc.TASK_FIRST_PASS: bool(s.first_pass),
        sc.TASK_COST_USD: float(s.own_known_cost_usd),  # own calls only: sums across task spans count once
        sc.TASK_WASTED_COST_USD: float(s.wasted_cost_usd),
        sc.TASK_CACHE_SAVINGS_USD: float(s.cache_savings_usd),
        sc.TASK_SUBTASKS_COST_USD: float(s.subtasks_cost_usd),
        sc.TASK_INPUT_TOKENS: s.input_tokens,
        sc.TASK_OUTPUT_TOKENS: s.output_tokens,
        sc.TASK_CACHE_READ_INPUT_TOKENS: s.cache_read_input_tokens,
        sc.TASK_CACHE_WRITE_INPUT_TOKENS: s.cache_write_input_tokens,
        sc.TASK_REASONING_OUTPUT_TOKENS: s.reasoning_output_tokens,
        sc.TASK_LLM_CALLS: s.llm_calls,
        sc.TASK_FAILED_CALLS: s.failed_calls,
        sc.TASK_ATTEMPTS: s.attempts,
        sc.TASK_RETRIES: s.retries,
        sc.TASK_ESCALATIONS: s.escalations,
        sc.TASK_UNPRICED_CALLS: s.unpriced_calls,
        sc.TASK_ESTIMATED_CALLS: s.estimated_calls,
        sc.TASK_COST_COMPLETE: s.own_cost_complete,
    }
    if s.subtasks_unpriced_calls:
        attrs[sc.TASK_SUBTASKS_UNPRICED_CALLS] = s.subtasks_unpriced_calls
    if s.outcome_reason is not None:
        attrs[sc.TASK_OUTCOME_REASON] = s.outcome_reason
    return attrs


def openinference_attributes(summary: TaskSummary, subtasks_calls: int) -> dict[str, AttributeValue]:
    """``input.value`` / ``output.value`` of a task span: what Phoenix shows as the task's input and output.

    Never a ``llm.cost.*`` or ``llm.token_count.*`` attribute: a backend summing those over a trace
    would count the task's calls twice.
    """
    return {
        sc.INPUT_VALUE: _input_value(summary),
        sc.INPUT_MIME_TYPE: sc.MIME_TYPE_JSON,
        sc.OUTPUT_VALUE: output_summary(summary, summary.llm_calls + subtasks_calls),
        sc.OUTPUT_MIME_TYPE: sc.MIME_TYPE_TEXT,
    }


def _input_value(summary: TaskSummary) -> str:
    """The task name and its dimensions as JSON, keys without ``costtrace.``: ``{"task": ..., "feature": ...}``."""
    value: dict[str, str] = {"task": summary.name}
    for key, dim in summary.dimensions.items():
        short = key.removeprefix(sc.DIMENSION_PREFIX) if key.startswith(sc.DIMENSION_PREFIX) else key
        short = short.removeprefix("costtrace.")
        if short in value:  # a dimension named like a built-in one ("task", "feature"): keep it apart
            short = key.removeprefix("costtrace.")
        value[short] = dim
    return json.dumps(value, ensure_ascii=False)


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def output_summary(summary: TaskSummary, llm_calls: int | None = None) -> str:
    """A finished task in one line: outcome (reason), cost, calls, attempts, retries, escalations.

    The cost is the task's whole cost (its subtasks' included), ``>=`` with the number of unpriced
    calls when some are unpriced; ``llm_calls`` is the number of calls that cost covers (default:
    the task's own).

    Example:
        >>> s = TaskSummary(task_id="t1", name="triage", parent_id=None, outcome="success",
        ...     outcome_reason=None, first_pass=True, own_known_cost_usd=Decimal("0.000391"),
        ...     wasted_cost_usd=ZERO_USD, cache_savings_usd=ZERO_USD, subtasks_cost_usd=ZERO_USD,
        ...     input_tokens=900, output_tokens=120, cache_read_input_tokens=0, cache_write_input_tokens=0,
        ...     reasoning_output_tokens=0, llm_calls=2, failed_calls=0, attempts=1, retries=0,
        ...     escalations=0, unpriced_calls=0, estimated_calls=0, duration_s=1.5)
        >>> output_summary(s)
        'success · $0.000391 · 2 LLM calls · first pass'
    """
    outcome = summary.outcome or "unfinished"
    if summary.outcome_reason:
        reason = " ".join(summary.outcome_reason.split())
        if len(reason) > _MAX_SUMMARY_REASON_CHARS:
            reason = reason[: _MAX_SUMMARY_REASON_CHARS - 1] + "…"
        outcome = f"{outcome} ({reason})"
    cost = usd(summary.known_cost_usd)
    unpriced = summary.all_unpriced_calls
    if unpriced:
        cost = f">={cost} ({_plural(unpriced, 'unpriced call')})"
    parts = [outcome, cost, _plural(summary.llm_calls if llm_calls is None else llm_calls, "LLM call")]
    if summary.attempts > 1:
        parts.append(_plural(summary.attempts, "attempt"))
    if summary.retries:
        parts.append(_plural(summary.retries, "retry", "retries"))
    if summary.escalations:
        parts.append(_plural(summary.escalations, "escalation"))
    if summary.first_pass:
        parts.append("first pass")
    return " · ".join(parts)
