"""The records costtrace produces: one per LLM call, one summary per finished task.

Spans and metrics are built from these; so are the ledger and reports. Listeners registered with
:func:`add_listener` receive every record as it is finished, and, if they have ``on_event``, every
:class:`TaskEvent` (the ledger and ``costtrace.testing`` use this). A listener that raises is
reported as an internal error and never reaches the app.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from costtrace._internal import report_internal_error
from costtrace.usage import Usage

if TYPE_CHECKING:
    from costtrace.price.arithmetic import Cost

ZERO_USD = Decimal(0)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One finished LLM call: who asked, what it used, what it cost, and where each number came from."""

    call_id: str
    provider: str
    operation: str
    request_model: str
    response_model: str | None
    usage: Usage
    cost: Cost
    start_time: datetime
    duration_s: float
    task_id: str | None = None
    task_name: str | None = None
    attempt: int | None = None
    error_type: str | None = None
    dimensions: Mapping[str, str] = field(default_factory=dict)
    """The task's dimensions at the time of the call, as span attribute keys (``costtrace.feature`` ...)."""

    @property
    def cost_usd(self) -> Decimal | None:
        """Total cost, or None when the call is unpriced or its usage unknown (never a made-up zero)."""
        return self.cost.total_usd


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """A task's numbers.

    Cost, three ways, so that an unknown cost never reads as a number:

    - ``cost_usd``: the task's whole cost, its own calls plus its finished subtasks', or ``None`` when
      any of those calls is unpriced (no price, unknown usage): then the cost is not known;
    - ``known_cost_usd``: the same sum over the priced calls only, always a ``Decimal``: the exact cost
      when ``cost_complete``, else a lower bound (the name says so);
    - ``own_cost_usd`` / ``own_known_cost_usd``: the task's own calls only, without its subtasks
      (what spans, metrics and the ledger carry per task, so sums across tasks count each call once).

    Example:
        >>> with costtrace.task("triage") as t:          # doctest: +SKIP
        ...     costtrace.record_llm_call(provider="openai", model="gpt-4o-mini",
        ...                               input_tokens=1000, output_tokens=200)
        >>> t.summary.cost_usd                            # doctest: +SKIP
        Decimal('0.00027')
        >>> t.summary.cost_usd is None or t.summary.cost_usd <= Decimal("0.01")   # doctest: +SKIP
        True
    """

    task_id: str
    name: str
    parent_id: str | None
    outcome: str | None
    """``success`` | ``failure`` | ``partial`` | ``escalated_to_human``; None while the task runs."""
    outcome_reason: str | None
    first_pass: bool | None
    """Succeeded on its first attempt with no retry, escalation or failed call; None while running."""
    own_known_cost_usd: Decimal
    """Sum of the task's own priced calls (subtasks excluded); a lower bound when ``unpriced_calls > 0``."""
    wasted_cost_usd: Decimal
    """Cost of the calls in failed attempts: retried, escalated or raised, and the last attempt of a task
    that ended ``failure`` or ``escalated_to_human`` (its output was not usable as it stood)."""
    cache_savings_usd: Decimal
    subtasks_cost_usd: Decimal
    """Sum of the priced calls of the subtasks that finished inside this task (at every depth); a lower
    bound when ``subtasks_unpriced_calls > 0``."""
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_write_input_tokens: int
    reasoning_output_tokens: int
    llm_calls: int
    failed_calls: int
    attempts: int
    retries: int
    escalations: int
    unpriced_calls: int
    """The task's own calls with no price or with unknown usage: their cost is missing, not zero."""
    estimated_calls: int
    """Calls whose tokens were counted locally (tiktoken or heuristic), not reported by the provider."""
    duration_s: float | None
    dimensions: Mapping[str, str] = field(default_factory=dict)
    models: tuple[str, ...] = ()
    """The models the task's own calls requested, in order of first use: its route (``gpt-4o-mini``, then
    ``gpt-4o`` after an escalation)."""
    subtasks_unpriced_calls: int = 0
    """Unpriced calls in the finished subtasks (at every depth)."""
    final_model: str | None = None
    """The model the task's last call requested: the one that produced its final answer (``gpt-4o-mini``
    for a cascade ticket the cheap model solved, ``gpt-4o`` for one it escalated)."""

    @property
    def cost_complete(self) -> bool:
        """True when every call of the task and of its finished subtasks was priced from known usage."""
        return self.unpriced_calls == 0 and self.subtasks_unpriced_calls == 0

    @property
    def own_cost_complete(self) -> bool:
        """True when every one of the task's own calls was priced (subtasks not considered)."""
        return self.unpriced_calls == 0

    @property
    def known_cost_usd(self) -> Decimal:
        """Own and subtasks' priced calls: the cost when ``cost_complete``, else a lower bound."""
        return self.own_known_cost_usd + self.subtasks_cost_usd

    @property
    def cost_usd(self) -> Decimal | None:
        """The task's cost, its subtasks' included; ``None`` when a call's cost is unknown (see
        ``known_cost_usd`` for the lower bound and ``unpriced_calls`` for why)."""
        return self.known_cost_usd if self.cost_complete else None

    @property
    def own_cost_usd(self) -> Decimal | None:
        """The cost of the task's own calls (subtasks excluded); ``None`` when one of them is unpriced."""
        return self.own_known_cost_usd if self.unpriced_calls == 0 else None

    @property
    def all_unpriced_calls(self) -> int:
        """Unpriced calls of the task and of its finished subtasks."""
        return self.unpriced_calls + self.subtasks_unpriced_calls


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """Something that happened to a task: a retry, an escalation, a failed attempt, an SDK re-send, a
    late outcome, a budget alert or block. ``event_id`` is unique (the ledger's idempotency key).

    ``kind``: ``retry`` | ``escalation`` | ``attempt_failed`` | ``sdk_retry`` | ``outcome_updated`` |
    ``budget_alert`` | ``budget_blocked``.
    """

    event_id: str
    kind: str
    at: datetime
    task_id: str | None = None
    attempt: int | None = None
    reason: str | None = None
    details: str | None = None
    from_model: str | None = None
    to_model: str | None = None
    outcome: str | None = None
    amount_usd: Decimal | None = None
    """Money the event carries: the failed attempt's cost, a late outcome's rework cost, a budget's spend."""
    data: Mapping[str, object] = field(default_factory=dict)


class Listener(Protocol):
    def on_call(self, record: CallRecord) -> None: ...

    def on_task(self, summary: TaskSummary) -> None: ...


_listeners: tuple[Listener, ...] = ()
_listeners_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _listeners_lock
    _listeners_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def add_listener(listener: Listener) -> None:
    """Receive every finished call record and task summary, in the thread that finished it."""
    global _listeners
    with _listeners_lock:
        _listeners = (*_listeners, listener)


def remove_listener(listener: Listener) -> None:
    global _listeners
    with _listeners_lock:
        _listeners = tuple(x for x in _listeners if x is not listener)


def emit_call(record: CallRecord) -> None:
    for listener in _listeners:
        try:
            listener.on_call(record)
        except Exception as exc:
            report_internal_error("records.listener.on_call", exc)


def emit_task(summary: TaskSummary) -> None:
    for listener in _listeners:
        try:
            listener.on_task(summary)
        except Exception as exc:
            report_internal_error("records.listener.on_task", exc)


def has_event_listeners() -> bool:
    """Whether some listener takes events (so that building one is worth it)."""
    return any(hasattr(listener, "on_event") for listener in _listeners)


def emit_event(event: TaskEvent) -> None:
    """Pass an event to the listeners that have an ``on_event(event)`` method (the ledger does)."""
    for listener in _listeners:
        on_event = getattr(listener, "on_event", None)
        if on_event is None:
            continue
        try:
            on_event(event)
        except Exception as exc:
            report_internal_error("records.listener.on_event", exc)


def new_event_id() -> str:
    return f"{random.getrandbits(128):032x}"
