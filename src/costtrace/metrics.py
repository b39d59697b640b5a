"""OpenTelemetry metric instruments: the GenAI conventions' call metrics and costtrace's task metrics.

Attribute sets are bounded on purpose: operation, provider, model, feature, task name, outcome and
first-pass. Customer and user ids never become metric attributes (they would explode the number of
series); they live on spans and in the ledger.

Instruments are created from the global MeterProvider's meter on first use; with no SDK configured
they are the API's no-ops.

Recording is taken off the call path: a finished call or task appends one tuple to a queue, and
the queue is drained into the instruments when the SDK collects (from an observable instrument's
callback, which the SDK runs before it reads the synchronous instruments), when :func:`drain` is
called (``costtrace.flush`` does), and by a background thread woken every ``DRAIN_AT`` entries, so
an LLM app's calls pay for it while they wait on the network, not on their own path. Past
``MAX_PENDING`` entries the recording thread drains the queue itself: memory stays bounded and no
measurement is dropped. The values are the same; only the moment of recording moves, so a
measurement carries no trace exemplar.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation
from opentelemetry.util.types import AttributeValue

from costtrace import _otel
from costtrace import semconv as sc
from costtrace._internal import guarded, internal_error_counts, report_internal_error

if TYPE_CHECKING:
    from costtrace.records import CallRecord, TaskSummary


class _Instruments:
    def __init__(self) -> None:
        m = _otel.meter()
        # Registered first: its callback drains the queue before the SDK reads the other instruments.
        m.create_observable_counter(
            sc.METRIC_INTERNAL_ERRORS,
            callbacks=[_observe_internal_errors],
            unit="{error}",
            description="costtrace's own errors, by site (the app was not affected).",
        )
        self.token_usage: Histogram = m.create_histogram(
            sc.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used per LLM call.",
            explicit_bucket_boundaries_advisory=list(sc.TOKEN_USAGE_BUCKETS),
        )
        self.duration: Histogram = m.create_histogram(
            sc.METRIC_OPERATION_DURATION,
            unit="s",
            description="Duration of LLM calls.",
            explicit_bucket_boundaries_advisory=list(sc.DURATION_BUCKETS),
        )
        # Per-call counters are summed here and observed at collection: a dict update per call
        # instead of an SDK measurement (attribute hashing, exemplars) per call.
        m.create_observable_counter(
            sc.METRIC_CALL_COST,
            callbacks=[_observe_call_cost],
            unit="USD",
            description="Cost of priced LLM calls, by feature and model.",
        )
        m.create_observable_counter(
            sc.METRIC_UNPRICED_CALLS,
            callbacks=[_observe_unpriced_calls],
            unit="{call}",
            description="LLM calls whose cost is unknown (no price for the model, or no usage).",
        )
        self.tasks: Counter = m.create_counter(
            sc.METRIC_TASKS, unit="{task}", description="Finished tasks, by outcome and first-pass."
        )
        self.task_cost: Histogram = m.create_histogram(
            sc.METRIC_TASK_COST,
            unit="USD",
            description="Cost of a task's own priced LLM calls (costtrace.task.cost_complete=false: a lower bound).",
            explicit_bucket_boundaries_advisory=list(sc.COST_BUCKETS_USD),
        )
        self.task_wasted_cost: Counter = m.create_counter(
            sc.METRIC_TASK_WASTED_COST, unit="USD", description="Cost of failed attempts (retry tax)."
        )
        self.task_tokens: Histogram = m.create_histogram(
            sc.METRIC_TASK_TOKENS,
            unit="{token}",
            description="Tokens used by a task's own LLM calls.",
            explicit_bucket_boundaries_advisory=list(sc.TOKEN_USAGE_BUCKETS),
        )
        self.task_attempts: Histogram = m.create_histogram(
            sc.METRIC_TASK_ATTEMPTS,
            unit="{attempt}",
            description="Attempts a task needed.",
            explicit_bucket_boundaries_advisory=list(sc.ATTEMPT_BUCKETS),
        )


_instruments: _Instruments | None = None


def _get() -> _Instruments:
    global _instruments
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


def _reset_for_tests() -> None:
    global _instruments
    drain()
    _instruments = None


DRAIN_AT = 1024
"""Queue length at which the background drainer thread is woken."""
MAX_PENDING = 65536
"""Hard bound: past it, the recording thread drains the queue itself, so memory stays bounded."""

_pending: deque[tuple[bool, object, object]] = deque()
_drain_lock = threading.Lock()
_wake = threading.Event()
_drainer: threading.Thread | None = None
_drainer_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # The parent records what it queued; the child must not record it again, nor inherit a held lock
    # or a drainer thread that does not exist in the child.
    global _drain_lock, _drainer, _drainer_lock, _wake, _sums_lock
    _sums_lock = threading.Lock()
    _cost_usd.clear()  # the parent reports its own sums; the child starts from zero
    _unpriced_calls.clear()
    _drain_lock = threading.Lock()
    _drainer_lock = threading.Lock()
    _wake = threading.Event()
    _drainer = None
    _pending.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _drain_forever() -> None:
    while True:
        _wake.wait(timeout=1.0)
        _wake.clear()
        try:
            drain()
        except Exception as exc:
            report_internal_error("metrics.drainer", exc)


def _wake_drainer() -> None:
    global _drainer
    if _drainer is None:
        with _drainer_lock:
            if _drainer is None:
                _drainer = threading.Thread(target=_drain_forever, name="costtrace-metrics", daemon=True)
                _drainer.start()
    _wake.set()


def _enqueue(entry: tuple[bool, object, object]) -> None:
    _get()
    _pending.append(entry)
    n = len(_pending)
    if n >= DRAIN_AT:
        if n >= MAX_PENDING:
            drain()
        elif n == DRAIN_AT or n % DRAIN_AT == 0:
            _wake_drainer()


def record_call(record: CallRecord, *, conventions: bool = True) -> None:
    """Queue one finished call for the metrics (see the module docstring).

    ``conventions=False``: another instrumentation owns the call's span and records the GenAI
    convention's metrics; only costtrace's own cost counters are recorded.
    """
    _enqueue((True, record, conventions))


def record_task(summary: TaskSummary) -> None:
    """Queue one finished task for the metrics."""
    _enqueue((False, summary, None))


def drain() -> None:
    """Record every queued call and task into the instruments now.

    The finished-tasks counter is added to once per attribute set and drain, with the number of tasks:
    the same sum as one add per task, for one SDK measurement instead of many.
    """
    with _drain_lock:
        finished: dict[_TaskKey, int] = {}
        # No span is current while recording: a drain on an app thread (a full queue, flush()) must not
        # hand the SDK the span of whatever runs there as an exemplar, nor pay for sampling one.
        no_span = otel_context.attach(otel_context.Context())
        try:
            while True:
                try:
                    is_call, item, attrs = _pending.popleft()
                except IndexError:
                    return
                if is_call:
                    _record_call_now(item, bool(attrs))  # type: ignore[arg-type]
                else:
                    _record_task_now(item, finished)  # type: ignore[arg-type]
        finally:
            if finished:
                _count_tasks(finished)
            otel_context.detach(no_span)


def _observe_internal_errors(options: CallbackOptions) -> Iterable[Observation]:
    try:
        drain()
    except Exception as exc:
        report_internal_error("metrics.drain", exc)
    return [Observation(n, {"costtrace.site": site}) for site, n in internal_error_counts().items()]


@functools.lru_cache(maxsize=4096)  # bounded: models and error types come from outside
def _conventions(
    operation: str, provider: str, model: str, response_model: str | None, error_type: str | None
) -> tuple[dict[str, AttributeValue], ...]:
    """The attributes of a call's duration, input-token and output-token measurements, built once per
    key instead of three dicts per call (the SDK copies what it keeps)."""
    attrs: dict[str, AttributeValue] = {
        sc.GEN_AI_OPERATION_NAME: operation,
        sc.GEN_AI_PROVIDER_NAME: provider,
        sc.GEN_AI_REQUEST_MODEL: model,
    }
    if response_model is not None:
        attrs[sc.GEN_AI_RESPONSE_MODEL] = response_model
    if error_type is not None:
        attrs[sc.ERROR_TYPE] = error_type
    return attrs, {**attrs, sc.GEN_AI_TOKEN_TYPE: "input"}, {**attrs, sc.GEN_AI_TOKEN_TYPE: "output"}


@guarded("metrics.record_call")
def _record_call_now(record: CallRecord, conventions: bool) -> None:
    """Record one call on the convention's histograms and costtrace's cost counters.

    ``conventions``: record the GenAI convention's duration and token usage (attributes: operation,
    provider, models, error.type); False when another instrumentation owns the call's span.
    """
    ins = _get()
    if conventions:
        duration_attrs, input_attrs, output_attrs = _conventions(
            record.operation, record.provider, record.request_model, record.response_model, record.error_type
        )
        ins.duration.record(record.duration_s, duration_attrs)
        if record.usage.source != "unknown":
            ins.token_usage.record(record.usage.input_tokens, input_attrs)
            ins.token_usage.record(record.usage.output_tokens, output_attrs)
    key = (record.provider, record.request_model, record.dimensions.get(sc.FEATURE), record.task_name)
    with _sums_lock:
        if record.cost.total_usd is None:
            _unpriced_calls[key] = _unpriced_calls.get(key, 0) + 1
        else:
            _cost_usd[key] = _cost_usd.get(key, 0.0) + float(record.cost.total_usd)


_CostKey = tuple[str, str, "str | None", "str | None"]
_sums_lock = threading.Lock()
_cost_usd: dict[_CostKey, float] = {}
_unpriced_calls: dict[_CostKey, int] = {}


def _cost_key_attrs(key: _CostKey) -> dict[str, AttributeValue]:
    provider, model, feature, task_name = key
    attrs: dict[str, AttributeValue] = {sc.GEN_AI_PROVIDER_NAME: provider, sc.GEN_AI_REQUEST_MODEL: model}
    if feature is not None:
        attrs[sc.FEATURE] = feature
    if task_name is not None:
        attrs[sc.TASK_NAME] = task_name
    return attrs


def _observe_call_cost(options: CallbackOptions) -> Iterable[Observation]:
    drain()
    with _sums_lock:
        items = list(_cost_usd.items())
    return [Observation(v, _cost_key_attrs(k)) for k, v in items]


def _observe_unpriced_calls(options: CallbackOptions) -> Iterable[Observation]:
    drain()
    with _sums_lock:
        items = list(_unpriced_calls.items())
    return [Observation(v, _cost_key_attrs(k)) for k, v in items]


_TaskKey = tuple[str, str, "str | None", bool, bool]
"""(task name, outcome, feature, first pass, own cost complete)."""


@functools.lru_cache(maxsize=4096)  # bounded: task names and features come from the app
def _task_attributes(key: _TaskKey) -> tuple[dict[str, AttributeValue], ...]:
    """Attributes of (attempts and wasted cost, the count, the cost, input tokens, output tokens), built
    once per key."""
    name, outcome, feature, first_pass, cost_complete = key
    attrs: dict[str, AttributeValue] = {sc.TASK_NAME: name, sc.TASK_OUTCOME: outcome}
    if feature is not None:
        attrs[sc.FEATURE] = feature
    return (
        attrs,
        {**attrs, sc.TASK_FIRST_PASS: first_pass},
        {**attrs, sc.TASK_COST_COMPLETE: cost_complete},
        {**attrs, sc.GEN_AI_TOKEN_TYPE: "input"},
        {**attrs, sc.GEN_AI_TOKEN_TYPE: "output"},
    )


@guarded("metrics.record_task")
def _record_task_now(summary: TaskSummary, finished: dict[_TaskKey, int]) -> None:
    """Record one finished task: cost, tokens, attempts and wasted cost; count it in ``finished``."""
    ins = _get()
    key = (
        summary.name,
        summary.outcome or "",
        summary.dimensions.get(sc.FEATURE),
        bool(summary.first_pass),
        summary.own_cost_complete,
    )
    attrs, _counted, cost_attrs, input_attrs, output_attrs = _task_attributes(key)
    finished[key] = finished.get(key, 0) + 1
    # The task's OWN priced calls (subtasks report theirs): summed over tasks, each call counts once.
    # Flagged with cost_complete, so a dashboard can tell a lower bound from a known cost.
    ins.task_cost.record(float(summary.own_known_cost_usd), cost_attrs)
    if summary.wasted_cost_usd:
        ins.task_wasted_cost.add(float(summary.wasted_cost_usd), attrs)
    ins.task_tokens.record(summary.input_tokens, input_attrs)
    ins.task_tokens.record(summary.output_tokens, output_attrs)
    ins.task_attempts.record(summary.attempts, attrs)


@guarded("metrics.record_task")
def _count_tasks(finished: dict[_TaskKey, int]) -> None:
    """Add the finished tasks of one drain to the counter, per attribute set."""
    ins = _get()
    for key, n in finished.items():
        ins.tasks.add(n, _task_attributes(key)[1])
