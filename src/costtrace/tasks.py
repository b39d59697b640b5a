"""The business task: a unit of work with an outcome, grouping the LLM calls made for it.

A task is an OpenTelemetry span (``invoke_workflow {name}``) plus running totals. LLM calls made
while it is current attach to it; its attempts, retries and escalations become span events; when it
ends it carries its outcome and rollups (see ``costtrace.semconv``).

Two ways in::

    @costtrace.track_task("resolve_ticket", feature="support")
    def resolve(ticket): ...

    with costtrace.task("extract_refund", feature="billing", customer="acme") as t:
        ...
        t.retry(reason="validation_failed")

The current task lives in a ContextVar, so it follows ``await``, ``asyncio.gather`` and
``TaskGroup``; use :func:`costtrace.carry_context` to take it into a thread pool. ``@track_task`` is in
:mod:`costtrace.task_decorator`, the summaries of finished tasks in :mod:`costtrace.task_context`, what
a finished task writes on its span in :mod:`costtrace.task_attributes`.
"""

from __future__ import annotations

import contextvars
import enum
import random
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from costtrace import _otel, metrics, records, span_options
from costtrace import semconv as sc
from costtrace._internal import guarded, report_internal_error
from costtrace.errors import TaskBudgetExceeded
from costtrace.records import ZERO_USD, TaskSummary
from costtrace.task_attributes import openinference_attributes, summary_attributes
from costtrace.task_context import record_finished

if TYPE_CHECKING:
    from costtrace.records import CallRecord

_MAX_DETAILS_CHARS = 1024
_MAX_REFUSED_MESSAGE_CHARS = 256
"""The SDK's message for a refused request is cut to this: it names the problem in its first words."""


class Outcome(enum.StrEnum):
    """How a task ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    PARTIAL = "partial"
    ESCALATED_TO_HUMAN = "escalated_to_human"


class RetryReason(enum.StrEnum):
    """Common reasons for a retry; any string of your own is accepted too."""

    VALIDATION_FAILED = "validation_failed"
    SCHEMA_ERROR = "schema_error"
    REFUSAL = "refusal"
    TIMEOUT = "timeout"
    RATE_LIMIT = "rate_limit"
    EXCEPTION = "exception"


_FAILED_OUTCOMES = (Outcome.FAILURE, Outcome.ESCALATED_TO_HUMAN)

_current_task: contextvars.ContextVar[Task | None] = contextvars.ContextVar("costtrace_task", default=None)


def current_task() -> Task | None:
    """The task the calling code runs in, or None.

    Example:
        >>> with costtrace.task("triage") as t:          # doctest: +SKIP
        ...     assert costtrace.current_task() is t
    """
    return _current_task.get()


def check_task_caps(task: Task | None) -> None:
    """Raise :class:`TaskBudgetExceeded` if ``task``, or a task it runs in, has reached a cap.

    Called by every call before it is sent (``Task(max_cost_usd=...)``, ``max_calls``, ``max_attempts``).
    """
    t = task
    while t is not None:
        if t._caps is not None:
            t._check_caps()
        t = t.parent


def _str_attr(value: object) -> str:
    return value.value if isinstance(value, enum.Enum) else str(value)


def _build_dimensions(
    parent: Task | None,
    feature: str | None,
    team: str | None,
    customer: str | None,
    user: str | None,
    extra: Mapping[str, object] | None,
) -> dict[str, str]:
    dims: dict[str, str] = dict(parent._dimensions) if parent is not None else {}
    for key, value in ((sc.FEATURE, feature), (sc.TEAM, team), (sc.CUSTOMER, customer), (sc.USER, user)):
        if value is not None:
            dims[key] = _str_attr(value)
    for extra_key, extra_value in (extra or {}).items():
        if extra_value is not None:
            dims[sc.DIMENSION_PREFIX + str(extra_key)] = _str_attr(extra_value)
    return dims


class Task:
    """A business task in progress. Create one with :func:`task` or :func:`costtrace.track_task`.

    Methods that record (``retry``, ``escalate``, ``succeed`` ...) never raise.
    """

    def __init__(
        self,
        name: str,
        *,
        feature: str | None = None,
        team: str | None = None,
        customer: str | None = None,
        user: str | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
        dimensions: Mapping[str, object] | None = None,
        max_cost_usd: Decimal | float | str | None = None,
        max_llm_calls: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.name = str(name)
        self.id = f"{random.getrandbits(128):032x}"  # as call ids: uuid4 reads os.urandom, a syscall
        self._caps = parse_caps(max_cost_usd, max_llm_calls, max_tokens)
        self._calls_started = 0
        self._init_args = (feature, team, customer, user, dict(dimensions or {}))
        self._attributes = dict(attributes or {})
        self._parent: Task | None = None
        self._dimensions: dict[str, str] = {}
        self._span: trace.Span = trace.INVALID_SPAN
        self._started = False
        self._finished = False
        self._context_tokens: tuple[object, object] | None = None
        self._start_ns = 0
        self._duration_s: float | None = None
        self._lock = threading.Lock()
        # Attempt lineage.
        self._attempt = 1
        self._attempt_calls = 0
        self._attempt_cost = ZERO_USD
        self._pending_failure: tuple[int, str] | None = None
        """(attempt, reason) of an attempt closed by a raising call, awaiting its retry or escalation."""
        self._failed_attempts = 0
        self._last_model: str | None = None
        """The model the last call requested: events name models as requested (``gpt-4o``), on both sides."""
        self._last_response_model: str | None = None
        """The model that served the last call, as the provider named it (``gpt-4o-mini-2024-07-18``)."""
        self._models: list[str] = []
        # Rollups.
        self._cost = ZERO_USD
        self._wasted = ZERO_USD
        self._savings = ZERO_USD
        self._subtasks_cost = ZERO_USD
        self._subtasks_unpriced = 0
        self._subtasks_calls = 0
        """LLM calls of finished subtasks (at every depth): only for the ``output.value`` summary."""
        self._openinference = False
        """OpenInference attributes on this task's span (the setting when the task started)."""
        self._task_status = True
        """The outcome sets the span status (the setting when the task started)."""
        self._tokens = [0, 0, 0, 0, 0]  # input, output, cache read, cache write, reasoning
        self._llm_calls = 0
        self._failed_calls = 0
        self._retries = 0
        self._escalations = 0
        self._unpriced = 0
        self._estimated = 0
        self._outcome: Outcome | None = None
        self._outcome_reason: str | None = None

    # --- public API ---------------------------------------------------------------------------

    @property
    def parent(self) -> Task | None:
        return self._parent

    @property
    def attempt(self) -> int:
        """The attempt the next LLM call belongs to (1 for the first)."""
        return self._attempt

    @property
    def dimensions(self) -> Mapping[str, str]:
        """The task's dimensions as span attribute keys (``costtrace.feature``, ``costtrace.dimension.x`` ...)."""
        return self._dimensions

    @property
    def summary(self) -> TaskSummary:
        """The task's numbers so far (final once the task has ended)."""
        with self._lock:
            return self._summary_locked()

    def retry(self, reason: str = RetryReason.EXCEPTION, details: object = None) -> None:
        """Mark the current attempt failed; the next LLM call starts attempt n+1.

        Example:
            >>> with costtrace.task("extract") as t:       # doctest: +SKIP
            ...     out = call_model()
            ...     if not valid(out):
            ...         t.retry(reason="validation_failed", details="missing field 'amount'")
        """
        self._safe_lineage(sc.EVENT_RETRY, _str_attr(reason), details, None)

    def escalate(self, to_model: str, reason: str = "escalation", details: object = None) -> None:
        """Record an escalation from the last model used to ``to_model``; the next call starts a new attempt."""
        self._safe_lineage(sc.EVENT_ESCALATION, _str_attr(reason), details, str(to_model))

    def succeed(self) -> None:
        """Set the outcome to success (the default when the body returns)."""
        self._set_outcome(Outcome.SUCCESS, None)

    def fail(self, reason: str | None = None) -> None:
        """Set the outcome to failure, even though the body returns normally."""
        self._set_outcome(Outcome.FAILURE, reason)

    def partial(self, reason: str | None = None) -> None:
        """Set the outcome to partial success."""
        self._set_outcome(Outcome.PARTIAL, reason)

    def escalate_to_human(self, reason: str | None = None) -> None:
        """Set the outcome to escalated to a human (the model's output needed human work)."""
        self._set_outcome(Outcome.ESCALATED_TO_HUMAN, reason)

    def set_dimensions(
        self,
        *,
        feature: str | None = None,
        team: str | None = None,
        customer: str | None = None,
        user: str | None = None,
        **extra: object,
    ) -> None:
        """Add or change dimensions; calls made from now on carry them, and so does the task span."""
        dims = dict(self._dimensions)
        dims.update(_build_dimensions(None, feature, team, customer, user, extra))
        self._dimensions = dims  # copy-on-write: calls in flight keep a consistent snapshot
        if self._started:
            self._span.set_attributes(dims)

    # --- context managers -----------------------------------------------------------------------

    def __enter__(self) -> Task:
        self._start()
        self._context_tokens = self._activate()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._deactivate(self._context_tokens)
        self._end(exc=exc)

    async def __aenter__(self) -> Task:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        return f"<Task {self.name!r} id={self.id} attempt={self._attempt}>"

    # --- lifecycle (internal) -------------------------------------------------------------------

    @guarded("tasks.start")
    def _start(self) -> None:
        if self._started:
            report_internal_error("tasks.start", RuntimeError(f"task {self.name!r} was started twice"))
            return
        self._started = True
        parent = _current_task.get()
        self._parent = parent
        feature, team, customer, user, extra = self._init_args
        self._dimensions = _build_dimensions(parent, feature, team, customer, user, extra)
        attrs: dict[str, AttributeValue] = dict(self._attributes)
        attrs.update(self._dimensions)
        attrs[sc.GEN_AI_OPERATION_NAME] = sc.OPERATION_INVOKE_WORKFLOW
        attrs[sc.GEN_AI_WORKFLOW_NAME] = self.name
        attrs[sc.TASK_NAME] = self.name
        attrs[sc.TASK_ID] = self.id
        if parent is not None:
            attrs[sc.TASK_PARENT_ID] = parent.id
        opts = span_options.options()
        self._openinference, self._task_status = opts.openinference, opts.task_status
        if self._openinference:
            attrs.setdefault(sc.OPENINFERENCE_SPAN_KIND, sc.OPENINFERENCE_KIND_CHAIN)  # the app's own kind wins
        self._start_ns = time.time_ns()
        self._span = _otel.tracer().start_span(
            f"{sc.OPERATION_INVOKE_WORKFLOW} {self.name}",
            kind=SpanKind.INTERNAL,
            attributes=attrs,
            start_time=self._start_ns,
        )

    def _activate(self) -> tuple[object, object] | None:
        """Make this task (and its span) current; returns tokens for :meth:`_deactivate`."""
        try:
            task_token = _current_task.set(self)
            otel_token = otel_context.attach(trace.set_span_in_context(self._span))
            return task_token, otel_token
        except Exception as exc:
            report_internal_error("tasks.activate", exc)
            return None

    def _deactivate(self, tokens: tuple[object, object] | None) -> None:
        if tokens is None:
            return
        task_token, otel_token = tokens
        try:
            otel_context.detach(otel_token)  # type: ignore[arg-type]
            _current_task.reset(task_token)  # type: ignore[arg-type]
        except Exception as exc:
            report_internal_error("tasks.deactivate", exc)

    def _set_outcome(self, outcome: Outcome, reason: str | None) -> None:
        with self._lock:
            if self._finished:
                return
            self._outcome = outcome
            self._outcome_reason = None if reason is None else str(reason)

    @guarded("tasks.end")
    def _end(self, *, exc: BaseException | None = None, result: object = None, closed_early: bool = False) -> None:
        with self._lock:
            if self._finished or not self._started:
                return
            self._finished = True
            end_ns = time.time_ns()
            self._duration_s = (end_ns - self._start_ns) / 1e9
            if self._outcome is None:
                if exc is not None:
                    self._outcome, self._outcome_reason = Outcome.FAILURE, type(exc).__qualname__
                elif closed_early:
                    self._outcome, self._outcome_reason = (
                        Outcome.PARTIAL,
                        "generator closed before exhaustion",
                    )
                else:
                    self._outcome = Outcome.SUCCESS
            if self._outcome in _FAILED_OUTCOMES and self._attempt_calls > 0:
                # The last attempt did not produce a usable result: a failure, or work a human had to redo.
                self._fail_current_attempt_locked()
            summary = self._summary_locked()
            subtasks_calls = self._subtasks_calls
        span = self._span
        if span.is_recording():  # no SDK, or not sampled: skip building attributes nobody reads
            attrs = summary_attributes(summary)
            if exc is not None:
                attrs[sc.ERROR_TYPE] = type(exc).__qualname__
            if self._openinference:
                try:
                    attrs.update(openinference_attributes(summary, subtasks_calls))
                except Exception as err:
                    report_internal_error("tasks.openinference", err)
            span.set_attributes(attrs)  # one call: the SDK takes its lock and checks the values once
        _set_task_status(span, summary, exc, self._task_status)
        span.end(end_time=end_ns)
        if self._parent is not None:
            self._parent._add_subtask(
                summary.known_cost_usd, summary.all_unpriced_calls, summary.llm_calls + subtasks_calls
            )
        record_finished(summary)
        metrics.record_task(summary)
        records.emit_task(summary)

    def _summary_locked(self) -> TaskSummary:
        attempts = self._attempt if self._attempt_calls > 0 else self._attempt - 1
        done = self._finished
        first_pass = None
        if done:
            first_pass = (
                self._outcome is Outcome.SUCCESS
                and self._failed_attempts == 0
                and self._retries == 0
                and self._escalations == 0
            )
        t = self._tokens
        return TaskSummary(
            task_id=self.id,
            name=self.name,
            parent_id=self._parent.id if self._parent is not None else None,
            outcome=self._outcome.value if (done and self._outcome is not None) else None,
            outcome_reason=self._outcome_reason if done else None,
            first_pass=first_pass,
            own_known_cost_usd=self._cost,
            wasted_cost_usd=self._wasted,
            cache_savings_usd=self._savings,
            subtasks_cost_usd=self._subtasks_cost,
            input_tokens=t[0],
            output_tokens=t[1],
            cache_read_input_tokens=t[2],
            cache_write_input_tokens=t[3],
            reasoning_output_tokens=t[4],
            llm_calls=self._llm_calls,
            failed_calls=self._failed_calls,
            attempts=max(attempts, 0),
            retries=self._retries,
            escalations=self._escalations,
            unpriced_calls=self._unpriced,
            estimated_calls=self._estimated,
            duration_s=self._duration_s,
            dimensions=self._dimensions,
            models=tuple(self._models),
            subtasks_unpriced_calls=self._subtasks_unpriced,
            final_model=self._last_model,
        )

    # --- called by costtrace.calls --------------------------------------------------------------

    def _begin_call(self) -> int:
        """The attempt number for a call that starts now; emits the implicit retry after a raising call."""
        with self._lock:
            pending = self._pending_failure
            if pending is not None:
                self._pending_failure = None
                self._retries += 1
                event = self._lineage_event_attrs(pending[0], RetryReason.EXCEPTION.value, None)
            else:
                event = None
            attempt = self._attempt
            self._calls_started += 1
        if event is not None:
            self._span.add_event(sc.EVENT_RETRY, event)
            self._emit_event("retry", event)
        return attempt

    def _check_caps(self) -> None:
        """Raise :class:`TaskBudgetExceeded` when a cap is reached: before the call that would pass it."""
        caps = self._caps
        if caps is None:
            return
        max_cost, max_calls, max_tokens = caps
        with self._lock:
            cost = self._cost + self._subtasks_cost
            calls = self._calls_started
            tokens = self._tokens[0] + self._tokens[1]
        hit: tuple[str, str] | None = None
        if max_calls is not None and calls >= max_calls:
            hit = ("max_llm_calls", f"{calls} LLM calls made, cap {max_calls}")
        elif max_cost is not None and cost >= max_cost:
            hit = ("max_cost_usd", f"${cost:.6f} spent, cap ${max_cost}")
        elif max_tokens is not None and tokens >= max_tokens:
            hit = ("max_tokens", f"{tokens} tokens used, cap {max_tokens}")
        if hit is None:
            return
        cap, detail = hit
        exc = TaskBudgetExceeded(
            f"task {self.name!r} ({self.id}) reached {cap}: {detail}; the next LLM call was not sent",
            task_name=self.name,
            task_id=self.id,
            cap=cap,
            spent_usd=cost,
            limit_usd=max_cost,
        )
        try:
            self._span.add_event(
                sc.EVENT_BUDGET_BLOCKED,
                {sc.BUDGET_NAME: exc.budget, sc.EVENT_ATTR_REASON: cap, sc.EVENT_ATTR_DETAILS: detail},
            )
            records.emit_event(
                records.TaskEvent(
                    event_id=records.new_event_id(),
                    kind="budget_blocked",
                    at=datetime.now(UTC),
                    task_id=self.id,
                    attempt=self._attempt,
                    reason=str(exc),
                    data={"budget": exc.budget, "cap": cap},
                )
            )
        except Exception as err:
            report_internal_error("tasks.caps", err)
        raise exc

    def _add_call(self, record: CallRecord) -> None:
        """Fold a finished call into the task's totals."""
        u = record.usage
        cost = record.cost
        with self._lock:
            self._llm_calls += 1
            t = self._tokens
            t[0] += u.input_tokens
            t[1] += u.output_tokens
            t[2] += u.cache_read_input_tokens
            t[3] += u.cache_write_input_tokens
            t[4] += u.reasoning_output_tokens
            if u.source in ("estimated", "heuristic"):
                self._estimated += 1
            if cost.total_usd is None:
                self._unpriced += 1
                call_cost = ZERO_USD
            else:
                call_cost = cost.total_usd
                self._cost += call_cost
                self._savings += cost.cache_savings_usd
            self._last_model = record.request_model
            self._last_response_model = record.response_model
            if record.request_model not in self._models:
                self._models.append(record.request_model)
            attempt = record.attempt if record.attempt is not None else self._attempt
            if attempt == self._attempt:
                self._attempt_calls += 1
                self._attempt_cost += call_cost
            else:
                # The call started in an attempt that has since been closed (e.g. a retry was marked
                # while it was in flight): its cost belongs to that failed attempt.
                self._wasted += call_cost
            if record.error_type is not None:
                self._failed_calls += 1
                if attempt == self._attempt:
                    failed = self._attempt
                    self._fail_current_attempt_locked()
                    self._pending_failure = (failed, record.error_type)
                    event = self._lineage_event_attrs(failed, RetryReason.EXCEPTION.value, record.error_type)
                    event[sc.ERROR_TYPE] = record.error_type
                else:
                    event = None
            else:
                event = None
        if event is not None:
            self._span.add_event(sc.EVENT_ATTEMPT_FAILED, event)
            self._emit_event("attempt_failed", event)

    def _refused_request(self, attempt: int | None, error_type: str, message: str, model: str, started: bool) -> None:
        """The SDK refused a request before sending it: not a call. ``started``: the call had counted
        itself in :meth:`_begin_call` (a task cap's ``max_llm_calls``), which is undone here."""
        with self._lock:
            if started and self._calls_started > 0:
                self._calls_started -= 1
        attrs: dict[str, AttributeValue] = {
            sc.EVENT_ATTR_ATTEMPT: attempt if attempt is not None else self._attempt,
            sc.ERROR_TYPE: error_type,
            sc.EVENT_ATTR_MODEL: model,
        }
        if message:
            attrs[sc.EVENT_ATTR_DETAILS] = message[:_MAX_REFUSED_MESSAGE_CHARS]
        self._span.add_event(sc.EVENT_REQUEST_REFUSED, attrs)

    def _record_sdk_retry(self, attempt: int | None, reason: str, model: str) -> None:
        attrs: dict[str, AttributeValue] = {
            sc.EVENT_ATTR_ATTEMPT: attempt if attempt is not None else self._attempt,
            sc.EVENT_ATTR_REASON: reason,
            sc.EVENT_ATTR_MODEL: model,
        }
        self._span.add_event(sc.EVENT_SDK_RETRY, attrs)
        self._emit_event("sdk_retry", attrs)

    def _emit_event(self, kind: str, attrs: Mapping[str, AttributeValue]) -> None:
        """Pass a lineage event (the span event's attributes) to the ledger, if one listens."""
        if not records.has_event_listeners():
            return
        cost = attrs.get(sc.EVENT_ATTR_ATTEMPT_COST_USD)
        attempt = attrs.get(sc.EVENT_ATTR_ATTEMPT)
        records.emit_event(
            records.TaskEvent(
                event_id=records.new_event_id(),
                kind=kind,
                at=datetime.now(UTC),
                task_id=self.id,
                attempt=attempt if isinstance(attempt, int) else None,
                reason=_opt_str(attrs.get(sc.EVENT_ATTR_REASON)),
                details=_opt_str(attrs.get(sc.EVENT_ATTR_DETAILS) or attrs.get(sc.ERROR_TYPE)),
                from_model=_opt_str(attrs.get(sc.EVENT_ATTR_FROM_MODEL) or attrs.get(sc.EVENT_ATTR_MODEL)),
                to_model=_opt_str(attrs.get(sc.EVENT_ATTR_TO_MODEL)),
                amount_usd=Decimal(str(cost)) if isinstance(cost, (int, float)) else None,
            )
        )

    def _add_subtask(self, known_cost: Decimal, unpriced_calls: int, llm_calls: int) -> None:
        """Fold a finished subtask (its own calls and its subtasks') into this task's subtask totals."""
        with self._lock:
            self._subtasks_cost += known_cost
            self._subtasks_unpriced += unpriced_calls
            self._subtasks_calls += llm_calls

    def _fail_current_attempt_locked(self) -> None:
        self._wasted += self._attempt_cost
        self._failed_attempts += 1
        self._attempt += 1
        self._attempt_calls = 0
        self._attempt_cost = ZERO_USD

    def _lineage_event_attrs(self, attempt: int, reason: str, details: object) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {
            sc.EVENT_ATTR_ATTEMPT: attempt,
            sc.EVENT_ATTR_NEXT_ATTEMPT: self._attempt,
            sc.EVENT_ATTR_REASON: reason,
            sc.EVENT_ATTR_TASK_COST_USD: float(self._cost),
        }
        if self._last_model is not None:
            attrs[sc.EVENT_ATTR_MODEL] = self._last_model
        if details is not None:
            attrs[sc.EVENT_ATTR_DETAILS] = str(details)[:_MAX_DETAILS_CHARS]
        return attrs

    def _safe_lineage(self, event_name: str, reason: str, details: object, to_model: str | None) -> None:
        try:
            with self._lock:
                if self._finished:
                    return
                if self._pending_failure is not None and self._attempt_calls == 0:
                    # The attempt was already closed by a raising call: this retry/escalation explains it.
                    failed_attempt, attempt_cost = self._pending_failure[0], None
                    self._pending_failure = None
                else:
                    failed_attempt, attempt_cost = self._attempt, self._attempt_cost
                    self._fail_current_attempt_locked()
                if event_name == sc.EVENT_RETRY:
                    self._retries += 1
                else:
                    self._escalations += 1
                attrs = self._lineage_event_attrs(failed_attempt, reason, details)
                if attempt_cost is not None:
                    attrs[sc.EVENT_ATTR_ATTEMPT_COST_USD] = float(attempt_cost)
                if to_model is not None:
                    if self._last_model is not None:
                        attrs[sc.EVENT_ATTR_FROM_MODEL] = self._last_model
                    if self._last_response_model is not None and self._last_response_model != self._last_model:
                        attrs[sc.EVENT_ATTR_FROM_RESPONSE_MODEL] = self._last_response_model
                    attrs[sc.EVENT_ATTR_TO_MODEL] = to_model
            self._span.add_event(event_name, attrs)
            self._emit_event("retry" if event_name == sc.EVENT_RETRY else "escalation", attrs)
        except Exception as exc:
            report_internal_error("tasks.lineage", exc)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def parse_caps(
    max_cost_usd: object, max_llm_calls: object, max_tokens: object
) -> tuple[Decimal | None, int | None, int | None] | None:
    """Validate a task's caps (ConfigError on a bad value: a programming error, raised when the task is made)."""
    if max_cost_usd is None and max_llm_calls is None and max_tokens is None:
        return None
    from costtrace import _validate

    cost = None if max_cost_usd is None else _validate.usd(max_cost_usd, "max_cost_usd")
    calls = None if max_llm_calls is None else _validate.count(max_llm_calls, "max_llm_calls")
    tokens = None if max_tokens is None else _validate.count(max_tokens, "max_tokens")
    return cost, calls, tokens


@guarded("tasks.status")
def _set_task_status(span: trace.Span, summary: TaskSummary, exc: BaseException | None, on: bool) -> None:
    """ERROR for a task whose body raised, or that ended ``failure`` / ``escalated_to_human``; else Unset.

    OpenTelemetry asks instrumentation to leave the status Unset unless there is an error, and keeps
    OK for the application to set (OK is final and tells backends to suppress errors): so a ``success``
    or ``partial`` task stays Unset, and ``costtrace.task.outcome`` tells them apart.
    """
    if exc is not None:
        exc_type = type(exc).__qualname__
        span.set_status(Status(StatusCode.ERROR, f"{summary.outcome}: {exc_type}" if on else exc_type))
    elif on and summary.outcome in _FAILED_OUTCOMES:
        reason = summary.outcome_reason
        description = summary.outcome if reason is None else f"{summary.outcome}: {reason}"
        span.set_status(Status(StatusCode.ERROR, str(description)[:_MAX_DETAILS_CHARS]))


def task(
    name: str,
    *,
    feature: str | None = None,
    team: str | None = None,
    customer: str | None = None,
    user: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    max_cost_usd: Decimal | float | str | None = None,
    max_llm_calls: int | None = None,
    max_tokens: int | None = None,
    **dimensions: object,
) -> Task:
    """Open a business task, as ``with`` or ``async with``.

    Args:
        name: Low-cardinality task name ("resolve_ticket"), the unit cost per task is reported by.
        feature, team, customer, user: Dimensions put on the task span and on every call span in it.
            Nested tasks inherit their parent's dimensions unless they set their own.
        attributes: Extra span attributes for the task span only.
        max_cost_usd, max_llm_calls, max_tokens: Caps against runaway loops: once the task's spend
            (its calls and finished subtasks), its number of LLM calls, or its tokens (input + output)
            reach a cap, the next LLM call in it raises :class:`costtrace.TaskBudgetExceeded` before it
            is sent. A cap can be passed by at most the one call that crosses it.
        **dimensions: Extra low-cardinality dimensions (``costtrace.dimension.<key>``), propagated like ``feature``.

    Example:
        >>> with costtrace.task("extract_refund", feature="billing", customer="acme") as t:   # doctest: +SKIP
        ...     reply = client.chat.completions.create(...)
        ...     if not valid(reply):
        ...         t.retry(reason="validation_failed")
    """
    return Task(
        name,
        feature=feature,
        team=team,
        customer=customer,
        user=user,
        attributes=attributes,
        dimensions=dimensions,
        max_cost_usd=max_cost_usd,
        max_llm_calls=max_llm_calls,
        max_tokens=max_tokens,
    )
