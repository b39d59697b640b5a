"""Helpers for tests: collect the call records and task summaries costtrace produces, and assert a
task's cost, attempts, tokens and calls stay within limits (usable with or without pytest; the pytest
plugin, ``costtrace.pytest_plugin``, builds its fixture and marker on these).

Example:
    >>> from costtrace.testing import assert_attempts, assert_task_cost, capture
    >>> with capture() as got:                                   # doctest: +SKIP
    ...     resolve_ticket("T-1")
    >>> assert got.tasks[0].outcome == "success"                 # doctest: +SKIP
    >>> assert_task_cost(got.task("resolve_ticket"), "0.01")     # doctest: +SKIP
    >>> assert_attempts(got.task("resolve_ticket"), 2)           # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

from costtrace.records import CallRecord, TaskSummary, add_listener, remove_listener
from costtrace.tasks import Task

__all__ = [
    "Captured",
    "assert_attempts",
    "assert_llm_calls",
    "assert_task_cost",
    "assert_tokens_per_task",
    "capture",
]


@dataclass
class Captured:
    """What :func:`capture` collected, in finishing order."""

    calls: list[CallRecord] = field(default_factory=list)
    tasks: list[TaskSummary] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_call(self, record: CallRecord) -> None:
        with self._lock:
            self.calls.append(record)

    def on_task(self, summary: TaskSummary) -> None:
        with self._lock:
            self.tasks.append(summary)

    def task(self, name: str) -> TaskSummary:
        """The one finished task called ``name`` (raises if there is none or several)."""
        found = [t for t in self.tasks if t.name == name]
        if len(found) != 1:
            raise AssertionError(f"expected one finished task named {name!r}, found {len(found)}")
        return found[0]


@contextmanager
def capture() -> Iterator[Captured]:
    """Collect every call record and task summary finished inside the ``with`` block."""
    got = Captured()
    add_listener(got)
    try:
        yield got
    finally:
        remove_listener(got)


# --- Cost assertions --------------------------------------------------------------------------------
# One message format, shared by these helpers and the ``@pytest.mark.costtrace`` marker of
# ``costtrace.pytest_plugin``: the task's name and id, the figure, the limit, and the context a
# reader needs to see why (calls, attempts, tokens, what is unpriced).


def assert_task_cost(
    task: TaskSummary | Task,
    max_cost_usd: Decimal | float | str,
    *,
    require_priced: bool = True,
    subtasks: Iterable[TaskSummary] = (),
) -> None:
    """Fail when a task cost more than ``max_cost_usd`` (its own calls plus its subtasks', as the task's
    own ``max_cost_usd`` cap counts them).

    With ``require_priced`` (the default) a task whose cost is incomplete fails too, with a message
    saying so: an unpriced call (unknown model, unknown usage) in the task or in a subtask makes
    ``cost_usd`` None and ``known_cost_usd`` only a lower bound, so the task may well be over budget.
    With ``require_priced=False`` the lower bound is checked (it still fails when over the limit).
    ``subtasks`` (e.g. ``captured.tasks``) adds subtasks that finished after the task itself.

    Example:
        >>> with costtrace.task("resolve_ticket") as t:                               # doctest: +SKIP
        ...     costtrace.record_llm_call("openai", "gpt-4o-mini", 1000, 100)
        >>> assert_task_cost(t, "0.0001")                                             # doctest: +SKIP
        AssertionError: task 'resolve_ticket' (id 5f0c...) cost $0.00021 > max_cost_usd $0.0001 (1 call, 1 attempt)

    Raises:
        AssertionError: the task is over budget, or its cost is incomplete and ``require_priced``.
        costtrace.ConfigError: ``max_cost_usd`` is not a number >= 0.
    """
    problems = _cost_problems(_summary(task), _usd_limit(max_cost_usd), require_priced, subtasks)
    if problems:
        raise AssertionError("; ".join(problems))


def assert_attempts(task: TaskSummary | Task, max_attempts: int) -> None:
    """Fail when a task took more than ``max_attempts`` attempts (retries and escalations each open one).

    Example:
        >>> assert_attempts(got.task("resolve_ticket"), 2)                            # doctest: +SKIP
        AssertionError: task 'resolve_ticket' (id 5f0c...) took 3 attempts > max_attempts 2 (2 retries, 0 escalations)
    """
    problem = _attempts_problem(_summary(task), _int_limit(max_attempts, "max_attempts"))
    if problem:
        raise AssertionError(problem)


def assert_tokens_per_task(task: TaskSummary | Task, max_tokens: int) -> None:
    """Fail when a task's own calls used more than ``max_tokens`` tokens (input + output, as the task's
    ``max_tokens`` cap counts them). Subtasks are tasks of their own: check them separately.

    Example:
        >>> assert_tokens_per_task(got.task("resolve_ticket"), 1000)          # doctest: +SKIP
        AssertionError: task 'resolve_ticket' (id 5f0c...) used 1100 tokens > max_tokens_per_task 1000
        (1000 input + 100 output, 1 call)
    """
    problem = _tokens_problem(_summary(task), _int_limit(max_tokens, "max_tokens_per_task"))
    if problem:
        raise AssertionError(problem)


def assert_llm_calls(task: TaskSummary | Task, max_llm_calls: int) -> None:
    """Fail when a task made more than ``max_llm_calls`` LLM calls of its own (failed calls included).

    Example:
        >>> assert_llm_calls(got.task("resolve_ticket"), 2)                           # doctest: +SKIP
        AssertionError: task 'resolve_ticket' (id 5f0c...) made 3 LLM calls > max_llm_calls 2 (1 failed, 2 attempts)
    """
    problem = _calls_problem(_summary(task), _int_limit(max_llm_calls, "max_llm_calls"))
    if problem:
        raise AssertionError(problem)


def _summary(task: TaskSummary | Task) -> TaskSummary:
    return task if isinstance(task, TaskSummary) else task.summary


def _usd_limit(value: object) -> Decimal:
    from costtrace import _validate

    return _validate.usd(value, "max_cost_usd")


def _int_limit(value: object, what: str) -> int:
    from costtrace import _validate

    return _validate.count(value, what)


def _usd(amount: Decimal) -> str:
    """``$0.00021``: exact, without trailing zeros or an exponent."""
    text = format(amount.normalize(), "f")
    return f"${text}"


def _n(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else (plural or word + 's')}"


def _who(s: TaskSummary) -> str:
    return f"task {s.name!r} (id {s.task_id})"


def _descendants(s: TaskSummary, among: Iterable[TaskSummary]) -> list[TaskSummary]:
    children: dict[str, list[TaskSummary]] = {}
    for t in among:
        if t.parent_id is not None:
            children.setdefault(t.parent_id, []).append(t)
    found: list[TaskSummary] = []
    todo = [s.task_id]
    seen = {s.task_id}
    while todo:
        for child in children.get(todo.pop(), ()):
            if child.task_id not in seen:
                seen.add(child.task_id)
                found.append(child)
                todo.append(child.task_id)
    return found


def _cost_problems(s: TaskSummary, limit: Decimal, require_priced: bool, subtasks: Iterable[TaskSummary]) -> list[str]:
    cost = s.known_cost_usd  # exact when complete; else a lower bound, said so below
    # The summary counts the subtasks that finished inside the task; captured summaries may add ones
    # that finished after it.
    sub_unpriced = max(s.subtasks_unpriced_calls, sum(t.unpriced_calls for t in _descendants(s, subtasks)))
    unpriced = []
    if s.unpriced_calls:
        unpriced.append(f"{s.unpriced_calls} of its {_n(s.llm_calls, 'call')} unpriced")
    if sub_unpriced:
        unpriced.append(f"{_n(sub_unpriced, 'call')} in its subtasks unpriced")
    context = f"{_n(s.llm_calls, 'call')}, {_n(s.attempts, 'attempt')}"
    if s.subtasks_cost_usd:
        context += f"; {_usd(s.subtasks_cost_usd)} of it in subtasks"
    if cost > limit:
        msg = f"{_who(s)} cost {_usd(cost)} > max_cost_usd {_usd(limit)} ({context})"
        if unpriced:
            msg += f", and that is a lower bound: {' and '.join(unpriced)}"
        return [msg]
    if unpriced and require_priced:
        return [
            f"{_who(s)} cost is incomplete: {' and '.join(unpriced)} (no price or unknown usage), so "
            f"{_usd(cost)} is only a lower bound and may be over max_cost_usd {_usd(limit)} ({context}); "
            "price the model (costtrace.set_price) or pass require_priced=False"
        ]
    return []


def _attempts_problem(s: TaskSummary, limit: int) -> str | None:
    if s.attempts <= limit:
        return None
    return (
        f"{_who(s)} took {s.attempts} attempts > max_attempts {limit} "
        f"({_n(s.retries, 'retry', 'retries')}, {_n(s.escalations, 'escalation')})"
    )


def _tokens_problem(s: TaskSummary, limit: int) -> str | None:
    tokens = s.input_tokens + s.output_tokens
    if tokens <= limit:
        return None
    context = f"{s.input_tokens} input + {s.output_tokens} output, {_n(s.llm_calls, 'call')}"
    if s.estimated_calls:
        context += f", {s.estimated_calls} counted locally"
    return f"{_who(s)} used {tokens} tokens > max_tokens_per_task {limit} ({context})"


def _calls_problem(s: TaskSummary, limit: int) -> str | None:
    if s.llm_calls <= limit:
        return None
    return (
        f"{_who(s)} made {_n(s.llm_calls, 'LLM call')} > max_llm_calls {limit} "
        f"({s.failed_calls} failed, {_n(s.attempts, 'attempt')})"
    )
