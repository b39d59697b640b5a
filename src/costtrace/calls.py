"""One LLM call: a CLIENT span per the GenAI conventions, usage -> cost, attribution to the current task.

This is the one code path every call goes through: the manual API below and the SDK
instrumentations alike. Use it for any client::

    with costtrace.llm_call(provider="openai", model="gpt-4o-mini") as call:
        resp = client.chat.completions.create(model="gpt-4o-mini", messages=msgs)
        call.record_response(resp)

or, for a call that already happened::

    costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=812, output_tokens=96)

A call outside any task is still recorded and priced. A call whose usage is unknown, or whose model
has no price, is flagged unpriced: its cost is missing, never zero.

Token counts a caller passes are checked in :mod:`costtrace.caller_usage`; what a finished call writes
on its span is built in :mod:`costtrace.call_attributes`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from costtrace import _otel, metrics, records, span_options
from costtrace import semconv as sc
from costtrace._internal import guarded, logger, report_internal_error
from costtrace.call_attributes import end_attributes
from costtrace.caller_usage import UNKNOWN_USAGE, checked_usage
from costtrace.price.arithmetic import Cost
from costtrace.records import CallRecord
from costtrace.tasks import Task, check_task_caps, current_task
from costtrace.usage import Usage, UsageSource, usage_from_response

if TYPE_CHECKING:
    from costtrace.price.catalog import PriceCatalog


def default_catalog() -> PriceCatalog:
    """The process-wide price catalog; its module and data are imported on the first priced call.

    The first call rebinds this name to :func:`costtrace.price.catalog.default_catalog` itself, so the
    calls after it pay nothing for the deferral.
    """
    from costtrace.price.catalog import default_catalog as catalog_getter

    globals()["default_catalog"] = catalog_getter  # idempotent: threads racing here store the same function
    return catalog_getter()


_CURRENT_CALL: ContextVar[LLMCall | None] = ContextVar("costtrace_current_call", default=None)
"""The LLM call open in this context: a manual ``with llm_call(...)`` block, or an instrumented
SDK / gateway call while its request is being made. Instrumentations below it (an SDK under
LiteLLM, the HTTP layer under an SDK) see it and do not record the same request a second time."""


class AdmissionHook(Protocol):
    """What the spend layer plugs into the call path to enforce hard caps (:mod:`costtrace.spend.admission`).

    The record layer never imports the spend layer: ``configure_ledger`` installs a hook with
    :func:`set_admission_hook` when a budget blocks or downgrades, and removes it when none does, the way
    OpenTelemetry's SDK plugs span processors into its tracer. With no hook a call pays one global read.
    """

    def admit(self, call: LLMCall, task: Task | None, request_input: object, at: datetime) -> None:
        """Reserve the call's worst-case cost before it is sent; raise :class:`BudgetExceeded` to block it.

        May change ``call.model`` (a downgrade) and set ``call._reserved``.
        """

    def release(self, call: LLMCall) -> None:
        """Give back a reservation of a call that was never sent. Never raises."""


_admission: AdmissionHook | None = None


def set_admission_hook(hook: AdmissionHook | None) -> None:
    """Install (or, with None, remove) the hook every call passes before it is sent."""
    global _admission
    _admission = hook


def current_call() -> LLMCall | None:
    """The LLM call open in this context (see ``_CURRENT_CALL``), or None.

    Example:
        >>> with costtrace.llm_call(provider="openai", model="gpt-4o-mini") as call:   # doctest: +SKIP
        ...     assert costtrace.calls.current_call() is call
    """
    return _CURRENT_CALL.get()


def activate(call: LLMCall) -> Token[LLMCall | None]:
    """Make ``call`` the current call while its request is made; undo with :func:`deactivate`.

    For instrumentations: a manual ``llm_call`` activates itself in ``__enter__``.
    """
    return _CURRENT_CALL.set(call)


def deactivate(token: Token[LLMCall | None]) -> None:
    try:
        _CURRENT_CALL.reset(token)
    except ValueError:  # reset from another context (an async generator finalised elsewhere)
        _CURRENT_CALL.set(None)


class LLMCall:
    """One LLM call made with any client, as ``with`` or ``async with`` (created as ``costtrace.llm_call``).

    The body's exception passes through unchanged; the call is then recorded as failed (a failed
    attempt of its task), with whatever usage was recorded before the error.

    Args:
        provider: ``gen_ai.provider.name`` value: ``openai``, ``anthropic``, ``gcp.gemini``, ``azure.ai.openai``...
        model: The model requested.
        operation: ``chat``, ``generate_content``, ``text_completion``, ``embeddings``...
        server_address, server_port, max_tokens, stream: Request details for the span, when known.
        service_tier: Provider service tier used (``flex``, ``priority``...), priced accordingly.
        batch: True for a batch-API call, priced at the provider's batch rates.
        attributes: Extra attributes for the call span.
        input: The request's prompt (a string or chat messages). Only read when a hard-capped budget
            covers the call, to count its input tokens for the worst-case reservation; never stored.

    Raises:
        BudgetExceeded: On entering, when a hard-capped budget (or a cap of the task) would be exceeded:
            nothing is sent and nothing recorded as a call. ``model`` may be replaced first by a
            ``downgrade`` budget: send the request with ``call.model``.

    Example:
        >>> with costtrace.llm_call(provider="openai", model="gpt-4o-mini") as call:   # doctest: +SKIP
        ...     resp = client.chat.completions.create(model="gpt-4o-mini", messages=msgs)
        ...     call.record_response(resp)
    """

    def __init__(
        self,
        provider: str,
        model: str,
        operation: str = "chat",
        *,
        server_address: str | None = None,
        server_port: int | None = None,
        max_tokens: int | None = None,
        stream: bool = False,
        service_tier: str | None = None,
        batch: bool = False,
        attributes: Mapping[str, AttributeValue] | None = None,
        input: Any = None,
    ) -> None:
        self.provider = str(provider)
        self.model = str(model)
        self.operation = str(operation)
        self.id = f"{random.getrandbits(128):032x}"  # 4x cheaper than uuid4; reseeded after fork
        self._server_address = server_address
        self._server_port = server_port
        self._max_tokens = max_tokens
        self._stream = stream
        self._service_tier = service_tier
        self._batch = batch
        self._attributes = attributes
        self._usage: Usage | None = None
        self._usage_problem: str | None = None
        """Why the caller's usage was unusable (``set_usage`` with invalid counts): the unpriced reason."""
        self._response_model: str | None = None
        self._response_id: str | None = None
        self._finish_reasons: tuple[str, ...] = ()
        self._error_type: str | None = None
        self._task: Task | None = None
        self._attempt: int | None = None
        self._span: trace.Span = trace.INVALID_SPAN
        self._owns_span = True
        self._start_ns = 0
        self._context_token: object | None = None
        self._ended = False
        self._resends = 0
        self._input = input
        self._reserved = False
        self._downgraded_from: str | None = None
        self._budget_unchecked = False
        self._openinference = False
        """OpenInference attributes on this call's span (the setting when the call started)."""
        self.downgradable = True
        """False when the request's model can no longer change: a ``downgrade`` budget then blocks instead."""
        self.record: CallRecord | None = None
        """The finished call's record, once the call has ended."""
        self.manual = False
        """True for a ``with llm_call(...)`` block: an instrumented SDK call made inside it fills this
        call (usage, response model) instead of recording a second one."""
        self.requests_sent = 0
        """HTTP requests to an LLM API seen going out while this call was current (the HTTP layer
        counts them): 0 when the SDK refused the request before sending anything."""
        self._current_token: Token[LLMCall | None] | None = None
        self._fills: LLMCall | None = None
        """The manual call this instrumented request fills (``start(fill=...)``): it records nothing itself."""
        self._filled = False
        """Manual calls: an instrumented request's response was recorded into this call."""

    # --- recording what happened ------------------------------------------------------------------

    def record_response(self, response: Any) -> None:
        """Read usage, response model, id and finish reasons from a provider response (object or dict).

        Understands OpenAI chat completions and Responses, Anthropic messages and Gemini responses.
        """
        try:
            info = usage_from_response(response, self.provider)
            if info.usage is not None:
                self._usage = info.usage
                self._usage_problem = None
            if info.response_model:
                self._response_model = info.response_model
            if info.response_id:
                self._response_id = info.response_id
            if info.finish_reasons:
                self._finish_reasons = info.finish_reasons
        except Exception as exc:
            report_internal_error("calls.record_response", exc)

    def set_usage(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        *,
        cache_read_input_tokens: int | None = None,
        cache_write_input_tokens: int | None = None,
        cache_write_1h_input_tokens: int | None = None,
        reasoning_output_tokens: int | None = None,
        source: UsageSource = "provider",
    ) -> None:
        """Set token counts directly, normalised the GenAI conventions' way (see ``costtrace.usage``).

        A subset left out (None) is not reported: its span attribute is absent; one given, 0 included,
        is exported as given.

        Subsets larger than their totals are clamped to them. An invalid count (negative, NaN,
        infinite, huge, a bool, text, ``None`` for a total) is logged and makes the call's usage
        unknown: it is recorded unpriced with the reason (``costtrace.call.unpriced_reason``), never $0.
        """
        try:
            self._usage, self._usage_problem = checked_usage(
                {
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "cache_read_input_tokens": cache_read_input_tokens,
                    "cache_write_input_tokens": cache_write_input_tokens,
                    "cache_write_1h_input_tokens": cache_write_1h_input_tokens,
                    "reasoning_output_tokens": reasoning_output_tokens,
                },
                source,
            )
        except Exception as exc:
            report_internal_error("calls.set_usage", exc)

    def set_usage_source(self, source: UsageSource) -> None:
        """Keep the recorded counts, from another source: e.g. a stream's provider figures that are only a
        lower bound (the stream was cut) become ``estimated``. No-op while no usage is recorded."""
        if self._usage is not None:
            self._usage = self._usage.with_source(source)

    def set_usage_unknown(self, reason: str) -> None:
        """The call's usage cannot be known: it is recorded unpriced with ``reason``
        (``costtrace.call.unpriced_reason``) and its task says ``cost_complete=False``, never $0."""
        self._usage = None
        self._usage_problem = str(reason)

    def estimate_usage(
        self, *, input: str | Sequence[Mapping[str, Any]] | None = None, output: str | None = None
    ) -> None:
        """Count tokens locally (tiktoken) when the provider reported none; flagged ``estimated``
        (or ``heuristic`` when no tokenizer could be loaded)."""
        try:
            from costtrace.price.tokens import count_tokens

            model = self._response_model or self.model
            n_in = count_tokens(input, model) if input is not None else None
            n_out = count_tokens(output, model) if output is not None else None
            sources = {c.source for c in (n_in, n_out) if c is not None}
            source: UsageSource = "heuristic" if "heuristic" in sources else "estimated"
            self._usage = Usage(input_tokens=int(n_in or 0), output_tokens=int(n_out or 0), source=source)
            self._usage_problem = None
        except Exception as exc:
            report_internal_error("calls.estimate_usage", exc)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set an extra attribute on the call span (e.g. a provider-specific request detail)."""
        try:
            self._span.set_attribute(key, value)
        except Exception as exc:
            report_internal_error("calls.set_attribute", exc)

    def record_resend(self, reason: str) -> None:
        """The SDK re-sent this call's request by itself (429, 5xx, timeout): counted on the call span as
        ``http.request.resend_count`` and reported on the task as a ``costtrace.sdk_retry`` event."""
        if self._fills is not None:
            self._fills.record_resend(reason)
            return
        try:
            self._resends += 1
            self._span.set_attribute(sc.HTTP_REQUEST_RESEND_COUNT, self._resends)
            if self._task is not None:
                self._task._record_sdk_retry(self._attempt, str(reason), self.model)
        except Exception as exc:
            report_internal_error("calls.record_resend", exc)

    def capture_content(self, *, input: Any = None, output: Any = None) -> None:
        """Put prompt and completion on the span as ``gen_ai.input.messages`` / ``gen_ai.output.messages``,
        only if content capture is on (``costtrace.capture_content``), size-limited and redacted."""
        try:
            from costtrace import content

            if not content.settings().enabled:
                return
            for key, value in ((sc.GEN_AI_INPUT_MESSAGES, input), (sc.GEN_AI_OUTPUT_MESSAGES, output)):
                text = content.prepare(value)
                if text is not None:
                    self._span.set_attribute(key, text)
        except Exception as exc:
            report_internal_error("calls.capture_content", exc)

    def set_service_tier(self, tier: str) -> None:
        """The service tier that served the call (``default``, ``flex``, ``priority``...), priced accordingly."""
        self._service_tier = str(tier)

    def set_response_model(self, model: str) -> None:
        self._response_model = str(model)

    def set_error(self, error: BaseException | str) -> None:
        """Mark the call failed without raising through the ``with`` block (e.g. an error you handled)."""
        self._error_type = error if isinstance(error, str) else type(error).__qualname__

    @property
    def usage(self) -> Usage | None:
        return self._usage

    @property
    def span(self) -> trace.Span:
        """The call's span (a no-op span before ``start()`` or without an SDK), e.g. to make it current."""
        return self._span

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> LLMCall:
        self.start()
        self.manual = True
        self._current_token = activate(self)
        try:
            self._context_token = otel_context.attach(trace.set_span_in_context(self._span))
        except Exception as exc:
            report_internal_error("calls.attach", exc)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._context_token is not None:
            try:
                otel_context.detach(self._context_token)  # type: ignore[arg-type]
            except Exception as err:
                report_internal_error("calls.detach", err)
            self._context_token = None
        if self._current_token is not None:
            deactivate(self._current_token)
            self._current_token = None
        self.end(exc)

    async def __aenter__(self) -> LLMCall:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    @guarded("calls.start")
    def start(
        self,
        start_time_ns: int | None = None,
        *,
        host_span: trace.Span | None = None,
        admit: bool = True,
        fill: LLMCall | None = None,
    ) -> None:
        """Open the call span (``with`` does this). For instrumentations whose call ends later.

        ``host_span``: another instrumentation's span for this very call (e.g. the official
        openai-v2's CLIENT span). costtrace then writes its attributes on that span instead of
        starting a second one, and leaves ending it to its owner.

        ``admit=False``: the call already happened (``record_llm_call``); budgets count it, never block it.

        ``fill``: the call current when an instrumented SDK request starts (:func:`current_call`). When
        it is a manual ``with llm_call(...)`` block not yet filled, this request is that call: no span,
        no admission, nothing recorded; what it reads (usage, response model, id, finish reasons,
        service tier, re-sends) goes into the manual call when this one ends. The manual call stays the
        user's: only its ``with`` block ends it.

        Raises:
            BudgetExceeded: A hard cap blocks the call (see the class docstring); no span is started.
        """
        if fill is not None and fill.manual and not fill._ended and not fill._filled:
            self._start_filling(fill)
            return
        task = current_task()
        self._task = task
        self._start_ns = start_time_ns if start_time_ns is not None else time.time_ns()
        if admit and task is not None and (task._caps is not None or task._parent is not None):
            check_task_caps(task)
        hook = _admission
        if admit and hook is not None:
            hook.admit(self, task, self._input, datetime.fromtimestamp(self._start_ns / 1e9, tz=UTC))
        self._input = None  # never kept past admission
        attrs: dict[str, AttributeValue] = {
            sc.GEN_AI_OPERATION_NAME: self.operation,
            sc.GEN_AI_PROVIDER_NAME: self.provider,
            sc.GEN_AI_REQUEST_MODEL: self.model,
            sc.CALL_ID: self.id,
        }
        if self._server_address is not None:
            attrs[sc.SERVER_ADDRESS] = self._server_address
        if self._server_port is not None:
            attrs[sc.SERVER_PORT] = self._server_port
        if self._max_tokens is not None:
            attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] = self._max_tokens
        if self._stream:
            attrs[sc.GEN_AI_REQUEST_STREAM] = True
        if self._attributes:
            attrs.update(self._attributes)
        if self._downgraded_from is not None:
            attrs[sc.BUDGET_DOWNGRADED_FROM] = self._downgraded_from
        if self._budget_unchecked:
            attrs[sc.BUDGET_UNCHECKED] = True
        if span_options.options().openinference:
            self._openinference = True
            attrs[sc.OPENINFERENCE_SPAN_KIND] = (
                sc.OPENINFERENCE_KIND_EMBEDDING if self.operation == "embeddings" else sc.OPENINFERENCE_KIND_LLM
            )
        if task is not None:
            self._attempt = task._begin_call()
            attrs.update(task._dimensions)
            attrs[sc.TASK_ID] = task.id
            attrs[sc.TASK_NAME] = task.name
            attrs[sc.CALL_ATTEMPT] = self._attempt
        if host_span is not None:
            self._owns_span = False
            self._span = host_span
            host_span.set_attributes(attrs)
            return
        self._span = _otel.tracer().start_span(
            f"{self.operation} {self.model}" if self.model else self.operation,
            kind=SpanKind.CLIENT,
            attributes=attrs,
            start_time=self._start_ns,
        )

    def _start_filling(self, outer: LLMCall) -> None:
        self._fills = outer
        self._task = outer._task
        self._attempt = outer._attempt
        self._span = outer._span
        self._owns_span = False
        self._start_ns = time.time_ns()
        self._input = None
        if not outer._span.is_recording():
            return
        # Request details the user's block did not give (server, max tokens, stream, API type...).
        attrs: dict[str, AttributeValue] = {}
        if outer._server_address is None and self._server_address is not None:
            attrs[sc.SERVER_ADDRESS] = self._server_address
            if self._server_port is not None:
                attrs[sc.SERVER_PORT] = self._server_port
        if outer._max_tokens is None and self._max_tokens is not None:
            attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] = self._max_tokens
        if self._stream and not outer._stream:
            attrs[sc.GEN_AI_REQUEST_STREAM] = True
        given = outer._attributes or {}
        attrs.update({k: v for k, v in (self._attributes or {}).items() if k not in given})
        if attrs:
            outer._span.set_attributes(attrs)

    def _end_filling(self, exc: BaseException | None) -> None:
        """Hand what this request read to the manual call it fills (which the user's block will end)."""
        outer = self._fills
        if outer is None:
            return
        outer.requests_sent += self.requests_sent
        if outer._ended:  # a stream consumed after the user's block ended: the manual call is recorded
            logger.debug("costtrace: a request ended after its llm_call block; its usage is not in that call")
            return
        if self._usage is not None:
            outer._usage = self._usage
            outer._usage_problem = self._usage_problem
        elif self._usage_problem is not None and outer._usage is None:
            outer._usage_problem = self._usage_problem  # why the usage is unknown (set_usage_unknown)
        if self._response_model:
            outer._response_model = self._response_model
        if self._response_id:
            outer._response_id = self._response_id
        if self._finish_reasons:
            outer._finish_reasons = self._finish_reasons
        if self._service_tier is not None:
            outer._service_tier = self._service_tier
        if exc is None:
            outer._filled = True  # a further request in the same block is a call of its own

    def end(self, exc: BaseException | None = None, *, end_time_ns: int | None = None) -> CallRecord | None:
        """Finish the call: price it, end its span, attribute it to its task. Idempotent; never raises.

        A request filling a manual call (``start(fill=...)``) hands its data to that call instead and
        returns None: the manual call is recorded when the user's ``with`` block ends.
        """
        if self._ended:
            return self.record
        self._ended = True
        if self._fills is not None:
            try:
                self._end_filling(exc)
            except Exception as err:
                report_internal_error("calls.fill", err)
            return None
        try:
            self.record = self._finish(exc, end_time_ns)
        except Exception as err:
            report_internal_error("calls.end", err)
            try:
                self._span.set_attribute(sc.INTERNAL_ERROR, "calls.end")
                if self._owns_span:
                    self._span.end()
            except Exception as err2:
                report_internal_error("calls.end.span", err2)
        return self.record

    def end_unsent(self, exc: BaseException) -> None:
        """The SDK refused this request before sending anything (a client-side ``ValueError`` or
        ``TypeError``, e.g. Anthropic's "Streaming is required" for a large ``max_tokens``): it is not an
        LLM call. Nothing is recorded (no call record, metric, ledger row, failed attempt or unpriced
        flag); a hard-cap reservation is released; the task gets a ``costtrace.request_refused`` event.

        The span, already started, is ended at once with ``costtrace.call.sent=false``, the exception's
        ``error.type`` and status ERROR (the SDK method did raise), and no usage or cost attributes.
        Idempotent with :meth:`end`; never raises.
        """
        if self._ended:
            return
        self._ended = True
        try:
            self._unsent(exc)
        except Exception as err:
            report_internal_error("calls.end_unsent", err)

    def _unsent(self, exc: BaseException) -> None:
        error_type = type(exc).__qualname__
        filling = self._fills is not None
        if filling:
            if self._fills is not None:
                self._fills.requests_sent += self.requests_sent
        else:
            span = self._span
            if span.is_recording():
                span.set_attributes({sc.CALL_SENT: False, sc.ERROR_TYPE: error_type})
                span.set_status(Status(StatusCode.ERROR, error_type))
            if self._owns_span:
                span.end()
            hook = _admission
            if self._reserved and hook is not None:
                hook.release(self)
        task = self._task
        if task is not None:
            try:
                message = str(exc)
            except Exception:  # an exception whose __str__ fails: its type says enough
                message = ""
            task._refused_request(self._attempt, error_type, message, self.model, started=not filling)

    def _finish(self, exc: BaseException | None, end_time_ns: int | None) -> CallRecord:
        end_ns = end_time_ns if end_time_ns is not None else time.time_ns()
        if exc is not None and self._error_type is None:
            self._error_type = type(exc).__qualname__
        usage = self._usage if self._usage is not None else UNKNOWN_USAGE
        start = datetime.fromtimestamp(self._start_ns / 1e9, tz=UTC)
        internal_error = None
        try:
            cost = self._price(usage, start)
        except Exception as err:
            # The call still counts in its task, flagged unpriced: cost is never dropped silently.
            report_internal_error("calls.price", err)
            cost = Cost.unpriced("costtrace internal error while pricing (see the costtrace log)")
            internal_error = "calls.price"
        task = self._task
        dims: Mapping[str, str] = task._dimensions if task is not None else {}
        record = CallRecord(
            call_id=self.id,
            provider=self.provider,
            operation=self.operation,
            request_model=self.model,
            response_model=self._response_model,
            usage=usage,
            cost=cost,
            start_time=start,
            duration_s=max(0.0, (end_ns - self._start_ns) / 1e9),
            task_id=task.id if task is not None else None,
            task_name=task.name if task is not None else None,
            attempt=self._attempt,
            error_type=self._error_type,
            dimensions=dims,
        )
        span = self._span
        if span.is_recording():  # no SDK, or not sampled: skip building attributes nobody reads
            span.set_attributes(end_attributes(record, self._response_id, self._finish_reasons, self._openinference))
            if internal_error is not None:
                span.set_attribute(sc.INTERNAL_ERROR, internal_error)
            if self._error_type is not None:
                span.set_status(Status(StatusCode.ERROR, self._error_type))
        if self._owns_span:
            span.end(end_time=end_ns)
        if task is not None:
            task._add_call(record)
        metrics.record_call(record, conventions=self._owns_span)  # a host span's owner records its own
        records.emit_call(record)
        return record

    def _price(self, usage: Usage, at: datetime) -> Cost:
        if usage.source == "unknown":
            return Cost.unpriced(self._usage_problem or "usage unknown: the response carried no token usage")
        catalog = default_catalog()
        model = self._response_model or self.model
        cost = catalog.cost(
            usage,
            provider=self.provider,
            model=model,
            at=at,
            service_tier=self._service_tier,
            batch=self._batch,
        )
        if not cost.priced and self._response_model and self._response_model != self.model:
            fallback = catalog.cost(
                usage,
                provider=self.provider,
                model=self.model,
                at=at,
                service_tier=self._service_tier,
                batch=self._batch,
            )
            if fallback.priced:
                return fallback
        return cost


llm_call = LLMCall
"""``costtrace.llm_call(provider, model, ...)``: the usual way to create an :class:`LLMCall`."""


def record_llm_call(
    provider: str,
    model: str,
    input_tokens: int = 0,
    output_tokens: int = 0,
    *,
    cache_read_input_tokens: int | None = None,
    cache_write_input_tokens: int | None = None,
    cache_write_1h_input_tokens: int | None = None,
    reasoning_output_tokens: int | None = None,
    usage_source: UsageSource = "provider",
    operation: str = "chat",
    response_model: str | None = None,
    duration_s: float = 0.0,
    error_type: str | None = None,
    service_tier: str | None = None,
    batch: bool = False,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> CallRecord | None:
    """Record a call that already happened (e.g. read from a log or a gateway), in the current task.

    Returns the call's record (None only if costtrace itself failed, which it logs). Token counts are
    checked as in :meth:`LLMCall.set_usage`: an invalid one records the call unpriced, with the reason.

    Example:
        >>> rec = costtrace.record_llm_call(provider="anthropic", model="claude-sonnet-4-5",  # doctest: +SKIP
        ...                                 input_tokens=5000, output_tokens=400,
        ...                                 cache_read_input_tokens=4000)
        >>> rec.cost_usd                                                                     # doctest: +SKIP
    """
    try:
        call = LLMCall(
            provider,
            model,
            operation,
            service_tier=service_tier,
            batch=batch,
            attributes=attributes,
        )
        end_ns = time.time_ns()
        seconds = float(duration_s) if isinstance(duration_s, (int, float)) else 0.0
        if not 0.0 <= seconds < 1e7:  # negative, NaN, infinite or absurd: keep the call, drop the duration
            logger.warning("costtrace: ignoring invalid duration_s=%r", duration_s)
            seconds = 0.0
        call.start(start_time_ns=end_ns - int(seconds * 1e9), admit=False)
        call.set_usage(
            input_tokens,
            output_tokens,
            cache_read_input_tokens=cache_read_input_tokens,
            cache_write_input_tokens=cache_write_input_tokens,
            cache_write_1h_input_tokens=cache_write_1h_input_tokens,
            reasoning_output_tokens=reasoning_output_tokens,
            source=usage_source,
        )
        if response_model is not None:
            call._response_model = str(response_model)
        if error_type is not None:
            call._error_type = str(error_type)
        return call.end(end_time_ns=end_ns)
    except Exception as exc:
        report_internal_error("calls.record_llm_call", exc)
        return None
