"""LiteLLM instrumentation: every request LiteLLM makes to a provider is one priced call span, once.

    costtrace.instrument("litellm")         # or LiteLLMInstrumentor().instrument()

LiteLLM does not go through the provider SDKs' public methods (its OpenAI route posts with
``client.post(...)``, its Anthropic route uses its own httpx client), so the SDK instrumentations do
not see its calls. This module wraps LiteLLM's own functions instead (see
docs/instrumentation-litellm.md for why this and not LiteLLM's callbacks):

- ``litellm.completion`` / ``embedding`` / ``responses`` as the app calls them (``litellm.<name>``;
  LiteLLM's Router looks them up there too), and the copies LiteLLM calls internally:
  ``litellm.main.completion`` / ``embedding`` and ``litellm.responses.main.responses`` (the sync half
  of every ``acompletion`` / ``aembedding`` / ``aresponses``, and LiteLLM's own retries), and the
  references its public dispatchers captured at import (``_PYTHON_COMPLETION`` ...), so
  ``from litellm import completion`` done before ``instrument()`` is seen as well.

One invocation of those functions that sends a request is one call ("attempt"). While it runs, the
call is current (:func:`costtrace.calls.activate`): the OpenAI / Anthropic SDK instrumentations and
costtrace's HTTP layer below see it and do not record the request again; a nested LiteLLM function
(``responses`` bridged to ``completion``, the dispatcher and its Python fallback) passes straight
through. An async call (``acompletion``) runs its request in a coroutine that LiteLLM's sync half
returns: the call starts when that coroutine starts and ends when it returns.

LiteLLM's own retries (``num_retries``) and fallbacks (``fallbacks=[...]``, the Router's retries and
fallbacks between deployments) call these functions again: each is a new attempt of the task. The
failed call closes its attempt; the next one is reported as a ``retry`` (same model, reason from the
error: ``server_error``, ``rate_limit`` ...) or an ``escalation`` (another model, reason
``fallback``). Re-sends made by the OpenAI SDK inside one LiteLLM call (LiteLLM hands ``num_retries``
to the SDK's ``max_retries``) are counted on that call, as for a direct SDK call.

costtrace never imports LiteLLM (importing it takes seconds and, unless
``LITELLM_LOCAL_MODEL_COST_MAP=True``, fetches its price map from the network): the patch is applied
when the app imports ``litellm``, or at once if it already has.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import unwrap

from costtrace import calls
from costtrace import semconv as sc
from costtrace.calls import LLMCall
from costtrace.instrumentation._base import (
    AsyncStreamProxy,
    CosttraceInstrumentor,
    SyncStreamProxy,
    resend_reason,
    safely,
    sends_counted,
)
from costtrace.tasks import Task, current_task
from costtrace.usage import usage_from_response

logger = logging.getLogger("costtrace")

__all__ = ["PROVIDERS", "LiteLLMInstrumentor"]

PROVIDERS: Mapping[str, str] = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "anthropic": "anthropic",
    "anthropic_text": "anthropic",
    "azure": "azure.ai.openai",
    "azure_text": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "vertex_ai_beta": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
    "mistral": "mistral_ai",
    "codestral": "mistral_ai",
    "text-completion-codestral": "mistral_ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "xai": "x_ai",
    "cohere": "cohere",
    "cohere_chat": "cohere",
    "perplexity": "perplexity",
    "watsonx": "ibm.watsonx.ai",
    "watsonx_text": "ibm.watsonx.ai",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "openrouter": "openrouter",
    "moonshot": "moonshotai",
    "cerebras": "cerebras",
}
"""LiteLLM's ``custom_llm_provider`` -> ``gen_ai.provider.name`` (or the genai-prices id where the
conventions have no name). Any other LiteLLM provider name is used as it is: the price catalog then
tries it as a genai-prices id, then finds the provider from the model name (docs/pricing.md)."""

_MOCK_KWARGS = ("mock_response", "mock_tool_calls", "mock_timeout")
_ASYNC_FLAGS = {"chat": "acompletion", "embeddings": "aembedding", "responses": "aresponses"}

# (module, attribute, kind): every name LiteLLM's calls go through; the ones this version lacks are skipped.
_TARGETS: tuple[tuple[str, str, str], ...] = (
    ("litellm", "completion", "chat"),
    ("litellm", "embedding", "embeddings"),
    ("litellm", "responses", "responses"),
    ("litellm.main", "completion", "chat"),
    ("litellm.main", "embedding", "embeddings"),
    ("litellm.responses.main", "responses", "responses"),
    ("litellm.chat_completions.dispatch", "_PYTHON_COMPLETION", "chat"),
    ("litellm.embeddings.dispatch", "_PYTHON_EMBEDDING", "embeddings"),
    ("litellm.responses.dispatch", "_PYTHON_RESPONSES", "responses"),
)


# Where an async chat call enters LiteLLM (the app, the Router, the dispatcher's captured reference).
_ASYNC_ENTRIES: tuple[tuple[str, str], ...] = (
    ("litellm", "acompletion"),
    ("litellm.chat_completions.dispatch", "_PYTHON_ACOMPLETION"),
)


class _Settings:
    active = False
    """False once uninstrumented: a wrapper still referenced somewhere passes straight through."""


_settings = _Settings()


# --- one attempt ----------------------------------------------------------------------------------


class _Attempt:
    """One LiteLLM call that sends a request: its :class:`LLMCall` and what its end needs."""

    __slots__ = ("call", "ended", "outer_exc", "req")

    def __init__(self, call: LLMCall, req: _Request, outer_exc: BaseException | None) -> None:
        self.call = call
        self.req = req
        self.outer_exc = outer_exc
        """The exception being handled when the attempt started (the app's own ``except`` block), if any."""
        self.ended = False

    def end(self, exc: BaseException | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        if exc is not None and self.call.requests_sent == 0 and sends_counted():
            # LiteLLM raised before sending anything (a missing key, a parameter it refuses): not a call.
            # LiteLLM maps every error to its own types, so the HTTP layer's count alone decides.
            self.call.end_unsent(exc)
            return
        self.call.end(exc)
        if exc is not None:
            safely("instrumentation.litellm.failure", _note_failure, self.call, exc)


_CURRENT: ContextVar[_Attempt | None] = ContextVar("costtrace_litellm_attempt", default=None)
"""The attempt whose call is current in this context (set together with ``calls.activate``)."""


class _Active:
    """Makes an attempt's call current (costtrace's and OpenTelemetry's context) until ``close()``."""

    __slots__ = ("_call_token", "_otel_token", "_own_token")

    def __init__(self, attempt: _Attempt) -> None:
        self._call_token = calls.activate(attempt.call)
        self._own_token = _CURRENT.set(attempt)
        self._otel_token: object = None
        try:
            self._otel_token = otel_context.attach(trace.set_span_in_context(attempt.call.span))
        except Exception as exc:  # pragma: no cover - OpenTelemetry's attach does not raise
            logger.debug("costtrace: could not attach the LiteLLM call's span (%s)", exc)

    def close(self) -> None:
        if self._otel_token is not None:
            safely("instrumentation.litellm.detach", otel_context.detach, self._otel_token)
        calls.deactivate(self._call_token)
        try:
            _CURRENT.reset(self._own_token)
        except ValueError:  # reset from another context
            _CURRENT.set(None)


def _activate(attempt: _Attempt) -> _Active | None:
    result: _Active | None = safely("instrumentation.litellm.activate", _Active, attempt)
    return result


def _deactivate(active: _Active | None) -> None:
    if active is not None:
        safely("instrumentation.litellm.deactivate", active.close)


# --- lineage: LiteLLM's retries and fallbacks -----------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    provider: str
    model: str
    reason: str
    error_type: str
    counts: tuple[int, int, int]
    """(llm_calls, retries, escalations) of the task right after the failed call: the next call explains
    the failure only if nothing else happened in the task in between."""


_failures: weakref.WeakKeyDictionary[Task, _Failure] = weakref.WeakKeyDictionary()
_failures_lock = threading.Lock()


def _counts(task: Task) -> tuple[int, int, int]:
    s = task.summary
    return s.llm_calls, s.retries, s.escalations


def _note_failure(call: LLMCall, exc: BaseException) -> None:
    task = current_task()
    if task is None or call.record is None or call.record.task_id != task.id:
        return
    failure = _Failure(
        call.provider,
        call.model,
        resend_reason(_status_code(exc), exc),
        type(exc).__name__,
        _counts(task),
    )
    with _failures_lock:
        _failures[task] = failure


def _status_code(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return status
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def _explain_previous_failure(provider: str, model: str) -> None:
    """The call about to start follows a failed LiteLLM call in this task: say why (retry or fallback)."""
    task = current_task()
    if task is None:
        return
    with _failures_lock:
        failure = _failures.pop(task, None)
    if failure is None or _counts(task) != failure.counts:
        return
    if (failure.provider, failure.model) == (provider, model):
        task.retry(reason=failure.reason, details=f"LiteLLM retried after {failure.error_type}")
    else:
        task.escalate(
            model,
            reason="fallback",
            details=f"LiteLLM fell back after {failure.error_type} ({failure.reason}) on {failure.model}",
        )


# --- request details ------------------------------------------------------------------------------


def _litellm() -> Any:
    return sys.modules.get("litellm")


def _bound(args: tuple[Any, ...], kwargs: Mapping[str, Any], name: str, position: int) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else None


def _int_arg(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _resolve(model: str, kwargs: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """(model as sent, LiteLLM provider, api_base) as LiteLLM itself resolves them."""
    litellm = _litellm()
    alias_map = getattr(litellm, "model_alias_map", None)
    if isinstance(alias_map, Mapping) and isinstance(alias_map.get(model), str):
        model = alias_map[model]
    api_base = kwargs.get("api_base") or kwargs.get("base_url")
    try:
        sent, provider, _, base = litellm.get_llm_provider(
            model=model, custom_llm_provider=kwargs.get("custom_llm_provider"), api_base=api_base
        )
    except Exception:  # LiteLLM cannot route it: its own call will raise the same error
        prefix, _, rest = model.partition("/")
        sent, provider, base = (rest, prefix, api_base) if rest else (model, "", api_base)
    return str(sent), str(provider or ""), base if isinstance(base, str) and base else api_base


def _endpoint(api_base: object) -> tuple[str | None, int | None]:
    if not isinstance(api_base, str) or not api_base:
        return None, None
    try:
        parts = urlsplit(api_base)
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    except ValueError:
        return None, None
    return parts.hostname or None, port


class _AskedUsage(dict[str, bool]):
    """``stream_options={"include_usage": True}`` added by costtrace, not by the app."""


def _ask_stream_usage(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Exact usage for a stream: LiteLLM then ends it with a usage-only chunk, hidden from the app.

    LiteLLM accepts ``stream_options`` for every provider (it never checks it against their parameter
    lists) and serves ``include_usage`` itself where the provider has no such option (Anthropic).
    """
    send = dict(kwargs)
    send["stream_options"] = _AskedUsage(include_usage=True)
    return send


@dataclass
class _Request:
    """One attempt's request, read before it is sent."""

    kind: str
    provider: str
    model: str
    operation: str
    host: str | None
    port: int | None
    max_tokens: int | None
    stream: bool
    attributes: dict[str, Any]
    input: Any
    hide_usage_chunk: bool
    fill: LLMCall | None = None
    """The app's ``with llm_call(...)`` block this request runs in: it fills that call (no call of its own)."""


def _prepare(kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[_Request, dict[str, Any]]:
    """Read the request; returns it and the kwargs to send (stream usage asked for, see below)."""
    requested = _bound(args, kwargs, "model", 0)
    model, litellm_provider, api_base = _resolve(str(requested or ""), kwargs)
    provider = PROVIDERS.get(litellm_provider, litellm_provider or "litellm")
    host, port = _endpoint(api_base)
    stream = kwargs.get("stream") is True
    attributes: dict[str, Any] = {sc.LITELLM_PROVIDER: litellm_provider} if litellm_provider else {}
    send = kwargs
    hide = False
    if kind == "embeddings":
        operation, max_tokens, request_input = "embeddings", None, _bound(args, kwargs, "input", 1)
    elif kind == "responses":
        operation = "chat"
        max_tokens = _int_arg(kwargs.get("max_output_tokens"))
        request_input = (kwargs.get("instructions"), _bound(args, kwargs, "input", 0 if "model" in kwargs else 1))
        attributes[sc.OPENAI_API_TYPE] = "responses"
    else:
        operation = "chat"
        max_tokens = _int_arg(kwargs.get("max_completion_tokens"))
        if max_tokens is None:
            max_tokens = _int_arg(kwargs.get("max_tokens"))
        request_input = _bound(args, kwargs, "messages", 1)
        options = kwargs.get("stream_options")
        if isinstance(options, _AskedUsage):  # asked for by costtrace around acompletion (below)
            hide = True
        elif stream and options is None:
            send = _ask_stream_usage(kwargs)
            hide = True
    for key, attr in (("temperature", sc.GEN_AI_REQUEST_TEMPERATURE), ("top_p", sc.GEN_AI_REQUEST_TOP_P)):
        value = kwargs.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[attr] = float(value)
    req = _Request(kind, provider, model, operation, host, port, max_tokens, stream, attributes, request_input, hide)
    return req, send


def _start(req: _Request) -> _Attempt:
    """Start the attempt's call (after saying why, when it follows a failed LiteLLM call)."""
    safely("instrumentation.litellm.lineage", _explain_previous_failure, req.provider, req.model)
    budget_input = req.input[1] if isinstance(req.input, tuple) else req.input
    call = LLMCall(
        req.provider,
        req.model,
        req.operation,
        server_address=req.host,
        server_port=req.port,
        max_tokens=req.max_tokens,
        stream=req.stream,
        attributes=req.attributes,
        input=budget_input,
    )
    call.downgradable = False  # LiteLLM routes by the model name: a downgrade budget blocks instead
    call.start(fill=req.fill)  # may raise BudgetExceeded: nothing has been sent
    return _Attempt(call, req, sys.exc_info()[1])


# --- results --------------------------------------------------------------------------------------


class _SDK:
    """LiteLLM's stream classes, looked up when it is patched."""

    chat_stream: tuple[type, ...] = ()
    responses_stream: tuple[type, ...] = ()

    @classmethod
    def load(cls) -> None:
        litellm = _litellm()
        found = getattr(litellm, "CustomStreamWrapper", None)
        cls.chat_stream = (found,) if isinstance(found, type) else ()
        try:
            module = importlib.import_module("litellm.responses.streaming_iterator")
        except ImportError:
            cls.responses_stream = ()
            return
        found = getattr(module, "BaseResponsesAPIStreamingIterator", None)
        cls.responses_stream = (found,) if isinstance(found, type) else ()


def _is_stream(result: Any) -> bool:
    return isinstance(result, _SDK.chat_stream + _SDK.responses_stream)


def _is_cache_hit(result: Any) -> bool:
    hidden = getattr(result, "_hidden_params", None)
    return isinstance(hidden, Mapping) and bool(hidden.get("cache_hit"))


def _record(attempt: _Attempt, body: Any, streamed_text: str | None = None) -> None:
    call = attempt.call
    if _is_cache_hit(body):
        call.set_attribute(sc.LITELLM_CACHE_HIT, True)
        call.set_usage(0, 0)  # answered from LiteLLM's cache: nothing was sent, nothing billed
        return
    # LiteLLM gives every provider's usage OpenAI's shapes (chat: prompt_tokens including cache reads
    # and writes; Responses: input_tokens likewise), whatever the provider: read it as such.
    info = usage_from_response(body, None)
    if info.usage is not None:
        call.record_response(info.usage)
    if info.response_model:
        call.set_response_model(info.response_model)
    if info.response_id:
        call.set_attribute(sc.GEN_AI_RESPONSE_ID, info.response_id)
    if info.finish_reasons:
        call.set_attribute(sc.GEN_AI_RESPONSE_FINISH_REASONS, list(info.finish_reasons))
    if call.usage is None:
        _estimate(attempt, streamed_text)


def _estimate(attempt: _Attempt, output: str | None) -> None:
    """No usage reported: count request and output locally, flagged ``estimated``."""
    req = attempt.req
    if req.kind == "responses":
        instructions, items = req.input if isinstance(req.input, tuple) else (None, req.input)
        parts = [p for p in (instructions, items) if isinstance(p, str)]
        attempt.call.estimate_usage(input="\n".join(parts) if parts else None, output=output)
    elif req.kind == "embeddings":
        value = req.input
        if isinstance(value, list):
            value = "\n".join(v for v in value if isinstance(v, str))
        attempt.call.estimate_usage(input=value if isinstance(value, str) else None)
    else:
        messages = req.input if isinstance(req.input, list) else None
        attempt.call.estimate_usage(input=messages, output=output or "")


def _finish(attempt: _Attempt, result: Any, is_async: bool) -> Any:
    """What the app gets for ``result``: the same object, or for a stream the same stream behind a proxy."""
    if _is_stream(result):
        acc: _ChatStream | _ResponsesStream = (
            _ResponsesStream(attempt) if attempt.req.kind == "responses" else _ChatStream(attempt)
        )
        if is_async:
            return AsyncStreamProxy(result, attempt.call, acc)
        return SyncStreamProxy(result, attempt.call, acc)
    safely("instrumentation.litellm.record", _record, attempt, result)
    attempt.end()
    return result


def _finish_safely(attempt: _Attempt, result: Any, is_async: bool) -> Any:
    wrapped = safely("instrumentation.litellm.result", _finish, attempt, result, is_async)
    if wrapped is None:  # costtrace failed: the app gets LiteLLM's own object
        attempt.end()
        return result
    return wrapped


class _ChatStream:
    """Reads LiteLLM's chat stream chunks (``ModelResponseStream``): usage on the final chunk."""

    __slots__ = ("_attempt", "_id", "_model", "_parts", "_reasons", "_usage")

    def __init__(self, attempt: _Attempt) -> None:
        self._attempt = attempt
        self._usage: Any = None
        self._model: str | None = None
        self._id: str | None = None
        self._parts: list[str] = []
        self._reasons: dict[int, str] = {}

    def on_item(self, chunk: Any) -> bool:
        if self._model is None:
            model = getattr(chunk, "model", None)
            self._model = model if isinstance(model, str) else None
            chunk_id = getattr(chunk, "id", None)
            self._id = chunk_id if isinstance(chunk_id, str) else None
        choices = getattr(chunk, "choices", None) or ()
        for choice in choices:
            delta = getattr(choice, "delta", None)
            content = getattr(delta, "content", None)
            if isinstance(content, str) and content:
                self._parts.append(content)
            for tool in getattr(delta, "tool_calls", None) or ():
                arguments = getattr(getattr(tool, "function", None), "arguments", None)
                if isinstance(arguments, str) and arguments:
                    self._parts.append(arguments)
            reason = getattr(choice, "finish_reason", None)
            if isinstance(reason, str):
                index = getattr(choice, "index", 0)
                self._reasons[index if isinstance(index, int) else 0] = reason
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self._usage = usage
            return self._attempt.req.hide_usage_chunk and not any(map(_carries_output, choices))
        return False

    def finish(self, call: LLMCall, complete: bool) -> None:
        self._attempt.ended = True
        reasons = [self._reasons[k] for k in sorted(self._reasons)]
        summary: dict[str, Any] = {
            "model": self._model,
            "id": self._id,
            "choices": [{"finish_reason": r} for r in reasons],
        }
        if self._usage is not None:
            summary["usage"] = self._usage
        _record(self._attempt, summary, "".join(self._parts))
        if complete and not reasons:
            call.set_attribute(sc.CALL_INCOMPLETE, True)  # no finish reason: the stream was cut


_DELTA_FIELDS = ("content", "role", "tool_calls", "function_call", "audio", "reasoning_content", "refusal")


def _carries_output(choice: Any) -> bool:
    """Whether a stream choice says anything (LiteLLM's async usage chunk has one empty choice)."""
    if getattr(choice, "finish_reason", None) is not None:
        return True
    delta = getattr(choice, "delta", None)
    return any(getattr(delta, name, None) for name in _DELTA_FIELDS)


_RESPONSES_FINAL = frozenset(("response.completed", "response.incomplete", "response.failed"))


class _ResponsesStream:
    """Reads LiteLLM's Responses API events: usage is in the final ``response.completed`` event."""

    __slots__ = ("_attempt", "_final", "_parts")

    def __init__(self, attempt: _Attempt) -> None:
        self._attempt = attempt
        self._final: Any = None
        self._parts: list[str] = []

    def on_item(self, event: Any) -> bool:
        kind = getattr(event, "type", None)
        kind = getattr(kind, "value", kind)  # LiteLLM's event types are str enums
        if kind == "response.output_text.delta":
            delta = getattr(event, "delta", None)
            if isinstance(delta, str):
                self._parts.append(delta)
        elif kind in _RESPONSES_FINAL:
            self._final = getattr(event, "response", None)
        return False

    def finish(self, call: LLMCall, complete: bool) -> None:
        self._attempt.ended = True
        text = "".join(self._parts)
        if self._final is not None:
            _record(self._attempt, self._final, text)
            return
        if complete:
            call.set_attribute(sc.CALL_INCOMPLETE, True)  # no final event: the stream was cut
        _estimate(self._attempt, text)


# --- wrappers -------------------------------------------------------------------------------------


def _passes_through(kind: str, kwargs: Mapping[str, Any]) -> bool:
    """Calls that send no request of their own: mocks, and calls LiteLLM spreads over other calls."""
    if any(kwargs.get(k) is not None for k in _MOCK_KWARGS):
        return True
    if kind != "chat":
        return False
    if kwargs.get("fallbacks") or getattr(_litellm(), "model_fallbacks", None):
        return True  # each model is tried through litellm.acompletion: one attempt each
    return kwargs.get("model_list") is not None  # a batch over several deployments


@dataclass(frozen=True)
class _Outer:
    """What is current around a LiteLLM function about to run."""

    through: bool = False
    """Another call records this request: pass straight through."""
    failed: _Attempt | None = None
    """The open attempt of an enclosing LiteLLM call that just failed: end it first."""
    fill: LLMCall | None = None
    """The app's manual ``llm_call`` block: this request fills it."""


_THROUGH = _Outer(through=True)
_OWN = _Outer()


def _outer_state() -> _Outer:
    current = calls.current_call()
    if current is None:
        return _OWN
    if current.manual:
        return _Outer(fill=current)  # counted once: the request fills the app's llm_call block
    own = _CURRENT.get()
    if own is None or own.call is not current:
        return _THROUGH  # another instrumentation's call records the request
    if own.ended:
        return _OWN
    exc = sys.exc_info()[1]
    if exc is not None and exc is not own.outer_exc:
        # LiteLLM is handling the enclosing call's error by calling again (its num_retries): that call
        # failed; this one is the next attempt.
        return _Outer(failed=own)
    return _THROUGH  # nested inside an open call (the responses -> completion bridge, a dispatcher)


def _wrapper(kind: str) -> Callable[..., Any]:
    flag = _ASYNC_FLAGS[kind]

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not _settings.active or _passes_through(kind, kwargs):
            return wrapped(*args, **kwargs)
        outer: _Outer = safely("instrumentation.litellm.state", _outer_state, default=_THROUGH)
        if outer.through:
            return wrapped(*args, **kwargs)
        if outer.failed is not None:
            safely("instrumentation.litellm.retry", outer.failed.end, sys.exc_info()[1])
        prepared = safely("instrumentation.litellm.prepare", _prepare, kind, args, kwargs)
        if prepared is None:
            return wrapped(*args, **kwargs)
        req, send = prepared
        req.fill = outer.fill
        if kwargs.get(flag) is True:
            # The sync half of an async call: it returns the coroutine that sends the request.
            result = wrapped(*args, **send)
            if asyncio.iscoroutine(result):
                return _run_async(req, result)
            return result
        attempt = safely("instrumentation.litellm.start", _start, req)
        if attempt is None:
            return wrapped(*args, **send)
        active = _activate(attempt)
        try:
            result = wrapped(*args, **send)
        except BaseException as exc:
            safely("instrumentation.litellm.error", attempt.end, exc)
            raise
        finally:
            _deactivate(active)
        if attempt.ended:  # a nested retry ended this attempt and recorded its own
            return result
        return _finish_safely(attempt, result, False)

    return wrapper


def _async_entry_wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``acompletion``: ask a stream for its usage here, where LiteLLM reads ``stream_options`` for the
    whole async call (its Anthropic route decides at this level whether to add the usage chunk). The
    call itself is recorded by the sync half below it, one per attempt."""
    if (
        _settings.active
        and kwargs.get("stream") is True
        and kwargs.get("stream_options") is None
        and calls.current_call() is None
        and not _passes_through("chat", kwargs)
    ):
        kwargs = _ask_stream_usage(kwargs)
    return wrapped(*args, **kwargs)


async def _run_async(req: _Request, coro: Any) -> Any:
    """Run the coroutine LiteLLM's sync half returned: that is where the request is sent."""
    attempt = safely("instrumentation.litellm.start", _start, req)
    if attempt is None:
        return await coro
    active = _activate(attempt)
    try:
        result = await coro
    except BaseException as exc:
        safely("instrumentation.litellm.error", attempt.end, exc)
        raise
    finally:
        _deactivate(active)
    if attempt.ended:
        return result
    return _finish_safely(attempt, result, True)


# --- the instrumentor -----------------------------------------------------------------------------


class LiteLLMInstrumentor(CosttraceInstrumentor):
    """Instruments LiteLLM (``litellm`` 1.110 and later 1.x): completion, embedding and responses calls,
    sync, async and streamed, through any provider LiteLLM routes to, its Router included.

    Example:
        >>> from costtrace.instrumentation.litellm import LiteLLMInstrumentor   # doctest: +SKIP
        >>> LiteLLMInstrumentor().instrument()                                    # doctest: +SKIP
    """

    _instruments = ("litellm >= 1.110, < 2",)

    def targets(self) -> list[tuple[str, str, Callable[..., Any]]]:
        found = [(module, name, _wrapper(kind)) for module, name, kind in _TARGETS]
        found += [(module, name, _async_entry_wrapper) for module, name in _ASYNC_ENTRIES]
        return found

    def _instrument(self, **kwargs: Any) -> None:
        _settings.active = True
        self._ct_wrapped: list[tuple[Any, str]] = []
        self._ct_lock = threading.Lock()
        if "litellm" in sys.modules:
            self._patch(sys.modules["litellm"])
        else:
            # Patched when the app imports litellm: costtrace never imports it itself.
            wrapt.register_post_import_hook(self._patch, "litellm")

    def _patch(self, _module: Any = None) -> None:
        if not _settings.active:
            return
        with self._ct_lock:
            if self._ct_wrapped:
                return
            _SDK.load()
            seen: set[tuple[int, str]] = set()
            for module_name, name, wrapper in self.targets():
                try:
                    owner = importlib.import_module(module_name)
                    target = getattr(owner, name)
                except (ImportError, AttributeError) as exc:
                    logger.debug("costtrace: %s.%s not found, not instrumented (%s)", module_name, name, exc)
                    continue
                if not callable(target):
                    continue
                key = id(owner), name
                if key in seen:
                    continue
                seen.add(key)
                wrapt.wrap_function_wrapper(owner, name, wrapper)
                self._ct_wrapped.append((owner, name))

    def _uninstrument(self, **kwargs: Any) -> None:
        _settings.active = False
        lock = getattr(self, "_ct_lock", None) or threading.Lock()
        with lock:
            for owner, name in getattr(self, "_ct_wrapped", []):
                unwrap(owner, name)
            self._ct_wrapped = []
