"""Google GenAI SDK (``google-genai``, ``from google import genai``) instrumentation.

Every request the SDK sends for ``client.models.generate_content`` / ``generate_content_stream`` and
their ``client.aio`` twins becomes one priced call span (``generate_content {model}``) in the current
task. See docs/instrumentation-google-genai.md.

Where it hooks. The public methods may send several billed requests for one user call: automatic
function calling (AFC) re-sends the conversation after running the user's functions, and SDK 3.x
follows ``continuation_token`` hops. The response the user gets carries the usage of the last AFC
request only, and a stream's cumulative ``usage_metadata`` restarts with each AFC request. So costtrace
wraps the per-request methods every public method goes through, ``Models._generate_content`` and
``Models._generate_content_stream`` (and the ``AsyncModels`` twins; same names and keyword-only
signature from 1.0 to 3.x): one span per billed request, each priced on its own (tiered prices such as
Gemini 2.5 Pro's depend on one request's prompt size, so usages must not be summed before pricing).
The object the user gets back is then the SDK's own, untouched. Should a future SDK drop those
methods, the public ones are wrapped instead (one span per user call) and a test at each supported
version says which level is in use.

SDK retries. From the versions with ``HttpRetryOptions`` on (2.x), each HTTP attempt goes through
``BaseApiClient._request_once`` / ``_async_request_once``; costtrace counts the attempts of the
call in flight and reports each re-send with :meth:`LLMCall.record_resend`.

Only this module imports ``google.genai``, and only when :meth:`GoogleGenAIInstrumentor.instrument`
runs.
"""

from __future__ import annotations

import contextvars
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace

from costtrace import semconv as sc
from costtrace.calls import LLMCall, activate, current_call, deactivate
from costtrace.instrumentation._base import (
    AsyncStreamProxy,
    CosttraceInstrumentor,
    SyncStreamProxy,
    end_failed,
    passes_through,
    resend_reason,
    safely,
)

__all__ = ["GoogleGenAIInstrumentor"]

PROVIDER_GEMINI = "gcp.gemini"
"""``gen_ai.provider.name`` of the Gemini Developer API (generativelanguage.googleapis.com)."""
PROVIDER_VERTEX = "gcp.vertex_ai"
"""``gen_ai.provider.name`` of Vertex AI (``genai.Client(vertexai=True, ...)``)."""
OPERATION = "generate_content"

_MODELS_MODULE = "google.genai.models"
_API_CLIENT_MODULE = "google.genai._api_client"
_PER_REQUEST_METHODS = ("_generate_content", "_generate_content_stream")
_PUBLIC_METHODS = ("generate_content", "generate_content_stream")
_MAX_CONTENT_DEPTH = 8
_API_ERRORS: tuple[type[BaseException], ...] = ()
"""``google.genai.errors.APIError``, set when instrumenting: a reply, never a request refused before sending."""


# --- request details ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _model_name(model: str) -> str:
    """The model id genai-prices knows, from any form the SDK accepts.

    ``models/gemini-2.5-flash`` (Developer API), ``publishers/google/models/gemini-2.5-flash`` or
    ``projects/p/locations/l/publishers/google/models/gemini-2.5-flash`` (Vertex) and
    ``google/gemini-2.5-flash`` all become ``gemini-2.5-flash``. Tuned models
    (``tunedModels/123``) are kept as they are: their price is yours to set.
    """
    cut = model.rfind("/models/")
    if cut >= 0:
        return model[cut + len("/models/") :]
    for prefix in ("models/", "google/"):
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


def _model_arg(model: object) -> str:
    if isinstance(model, str):
        return _model_name(model)
    if model is None:
        return ""
    # Vertex accepts a few model objects; the request path is built from their name.
    name = getattr(model, "name", None)
    return _model_name(name) if isinstance(name, str) else type(model).__name__


@functools.lru_cache(maxsize=64)
def _server(base_url: str) -> tuple[str | None, int | None]:
    """``server.address`` and ``server.port`` of a base URL; nothing else of it is ever recorded."""
    parts = urlsplit(base_url)
    host = parts.hostname
    if host is None:
        return None, None
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if parts.scheme == "https" else 80 if parts.scheme == "http" else None
    return host, port


_MISSING = object()


def _field(obj: Any, snake: str, camel: str | None = None) -> Any:
    """A field of an SDK object or of the equivalent dict (snake_case or camelCase keys)."""
    if obj is None:
        return None
    if type(obj) is not dict:
        value = getattr(obj, snake, _MISSING)  # SDK (pydantic) objects: every field is an attribute
        if value is not _MISSING:
            return value
        if not isinstance(obj, Mapping):
            return None
    value = obj.get(snake)
    if value is None and camel is not None:
        value = obj.get(camel)
    return value


def _base_url(api_client: Any, config: Any) -> str | None:
    per_request = _field(_field(config, "http_options", "httpOptions"), "base_url", "baseUrl")
    if isinstance(per_request, str):
        return per_request
    url = _field(getattr(api_client, "_http_options", None), "base_url", "baseUrl")
    return url if isinstance(url, str) else None


def _max_tokens(config: Any) -> int | None:
    value = _field(config, "max_output_tokens", "maxOutputTokens")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _start_call(instance: Any, kwargs: Mapping[str, Any], stream: bool, outer: LLMCall | None) -> LLMCall:
    """The call for one request, started. ``outer``: the manual ``llm_call`` block the request runs in,
    if any; the request then fills that call instead of recording one of its own."""
    api_client = getattr(instance, "_api_client", None)
    config = kwargs.get("config")
    provider = PROVIDER_VERTEX if getattr(api_client, "vertexai", False) else PROVIDER_GEMINI
    base_url = _base_url(api_client, config)
    address, port = _server(base_url) if base_url else (None, None)
    call = LLMCall(
        provider,
        _model_arg(kwargs.get("model")),
        OPERATION,
        server_address=address,
        server_port=port,
        max_tokens=_max_tokens(config),
        stream=stream,
        input=(_field(config, "system_instruction", "systemInstruction"), kwargs.get("contents")),
    )
    call.start(fill=outer)  # may raise BudgetExceeded: nothing has been sent
    return call


def _send_kwargs(call: LLMCall, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The kwargs to send: the model replaced if a downgrade budget picked a cheaper one."""
    if call._downgraded_from is not None:
        return {**kwargs, "model": call.model}
    return kwargs


# --- text, for estimates and opt-in content capture -------------------------------------------------


_ABSENT: dict[tuple[type, str], bool] = {}


def _absent(obj: Any, name: str) -> bool:
    """Whether ``obj`` has no attribute ``name`` at all, known from its class: a pydantic model (the SDK's
    types) that forbids extra fields and has no such field, property or private attribute.

    Asking ``getattr`` costs ~2 µs there (pydantic's ``__getattr__`` raises), on every streamed chunk
    when reading text (a ``Content`` has no ``text``, a ``Part`` no ``parts``). Cached per class.
    """
    cls = type(obj)
    absent = _ABSENT.get((cls, name))
    if absent is None:
        fields = getattr(cls, "__pydantic_fields__", None)
        config = getattr(cls, "model_config", None)
        absent = (
            isinstance(fields, dict)
            and isinstance(config, dict)
            and config.get("extra") == "forbid"
            and name not in fields
            and name not in (getattr(cls, "__private_attributes__", None) or {})
            and not hasattr(cls, name)
            and not isinstance(obj, Mapping)
        )
        _ABSENT[(cls, name)] = absent
    return absent


def _collect_text(obj: Any, out: list[str], depth: int = 0) -> None:
    """Append the text of ``contents`` (strings, Content/Part objects or dicts, lists of them) to ``out``.

    Images, audio, files and function calls/results carry no text here: a count made from this is a
    lower bound, which is why it is only ever used flagged ``estimated``.
    """
    if obj is None or depth > _MAX_CONTENT_DEPTH:
        return
    if isinstance(obj, str):
        out.append(obj)
        return
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return
    if isinstance(obj, (list, tuple)):
        for item in obj:
            _collect_text(item, out, depth + 1)
        return
    text = None if _absent(obj, "text") else _field(obj, "text")
    if isinstance(text, str):
        out.append(text)
    parts = None if _absent(obj, "parts") else _field(obj, "parts")
    if isinstance(parts, (list, tuple)) and depth + 1 <= _MAX_CONTENT_DEPTH:
        for item in parts:  # _collect_text(parts, out, depth + 1), one call less per level
            _collect_text(item, out, depth + 2)


def _request_text(kwargs: Mapping[str, Any]) -> str:
    out: list[str] = []
    _collect_text(_field(kwargs.get("config"), "system_instruction", "systemInstruction"), out)
    _collect_text(kwargs.get("contents"), out)
    return "\n".join(out)


def _candidates_text(response: Any, out: list[str]) -> None:
    candidates = _field(response, "candidates")
    if isinstance(candidates, (list, tuple)):
        for candidate in candidates:
            _collect_text(_field(candidate, "content"), out)


def _capture_enabled() -> bool:
    from costtrace import content

    return content.settings().enabled


# --- responses ------------------------------------------------------------------------------------------


def _has_counts(usage_meta: Any) -> bool:
    """Whether a ``usage_metadata`` carries a usable count (the rule ``costtrace.usage`` applies)."""
    for name, least in (("prompt_token_count", 0), ("candidates_token_count", 0), ("thoughts_token_count", 1)):
        value = _field(usage_meta, name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= least:
            return True
    return False


def _finish_reasons(response: Any) -> list[str]:
    """The finish reasons of a response or chunk, one per candidate, as plain strings."""
    reasons: list[str] = []
    candidates = _field(response, "candidates")
    if isinstance(candidates, (list, tuple)):
        for candidate in candidates:
            reason = _field(candidate, "finish_reason", "finishReason")
            if reason is not None:
                reasons.append(str(getattr(reason, "value", None) or reason))
    return reasons


_USAGE_FIELDS = (
    "prompt_token_count",
    "candidates_token_count",
    "thoughts_token_count",
    "cached_content_token_count",
    "tool_use_prompt_token_count",
)


def _usage_dict(usage_meta: Any) -> Mapping[str, Any]:
    """``usage_metadata`` as a dict (``{}`` when absent): ``usage_from_response`` reads dicts fastest."""
    if usage_meta is None:
        return {}  # not None: keeps the response id and finish reasons, usage stays unknown
    if isinstance(usage_meta, Mapping):
        return usage_meta
    return {name: getattr(usage_meta, name, None) for name in _USAGE_FIELDS}


def _record(call: LLMCall, usage_meta: Any, response_id: Any, reasons: list[str], model_version: Any) -> None:
    """Hand one request's usage and response fields to the call (through ``usage_from_response``)."""
    call.record_response(
        {
            "usage_metadata": _usage_dict(usage_meta),
            "response_id": response_id if isinstance(response_id, str) else None,
            "candidates": [{"finish_reason": r} for r in reasons],
        }
    )
    if isinstance(model_version, str) and model_version:
        call.set_response_model(_model_name(model_version))


def _record_response(call: LLMCall, response: Any, kwargs: Mapping[str, Any]) -> None:
    """Usage, response model, id and finish reasons of a ``generate_content`` response."""
    usage_meta = _field(response, "usage_metadata")
    if usage_meta is None:
        # config.should_return_http_response (3.x): the SDK hands back the raw body, unparsed.
        body = _field(_field(response, "sdk_http_response"), "body")
        if isinstance(body, str) and body:
            parsed = json.loads(body)
            if isinstance(parsed, Mapping):
                response = parsed
                usage_meta = parsed.get("usageMetadata")
    _record(
        call,
        usage_meta,
        _field(response, "response_id", "responseId"),
        _finish_reasons(response),
        _field(response, "model_version", "modelVersion"),
    )
    if call.usage is None:
        # A 200 without usage: the prompt was processed and billed. Estimate, flagged (never $0).
        out: list[str] = []
        _candidates_text(response, out)
        call.estimate_usage(input=_request_text(kwargs), output="".join(out))
    if _capture_enabled():
        out = []
        _candidates_text(response, out)
        call.capture_content(input=_request_text(kwargs), output="".join(out))


class _StreamAccumulator:
    """Reads one streamed request's chunks: the LAST cumulative ``usage_metadata`` counts, never a sum."""

    __slots__ = (
        "_block",
        "_capture",
        "_finish_reasons",
        "_items",
        "_kwargs",
        "_model_version",
        "_response_id",
        "_text",
        "_usage_meta",
    )

    def __init__(self, kwargs: Mapping[str, Any]) -> None:
        self._kwargs = kwargs
        self._items = 0
        self._usage_meta: Any = None
        self._model_version: str | None = None
        self._response_id: str | None = None
        self._finish_reasons: list[str] = []
        self._block = False
        self._text: list[str] | None = []  # kept only while no usage was seen, or when capturing content
        self._capture = _capture_enabled()

    def on_item(self, chunk: Any) -> bool:
        # The hot path, for the SDK's chunk objects: each field read once, no helper calls for what is
        # absent. Anything else (a dict chunk, a field missing) is read by the general path below.
        try:
            usage_meta = chunk.usage_metadata
            model_version = chunk.model_version
            response_id = chunk.response_id
            candidates = chunk.candidates
            feedback = chunk.prompt_feedback
        except AttributeError:
            return self._on_any_item(chunk)
        self._items += 1
        if usage_meta is not None:
            prompt = getattr(usage_meta, "prompt_token_count", None)
            if (prompt.__class__ is int and prompt >= 0) or _has_counts(usage_meta):
                self._usage_meta = usage_meta  # cumulative: the latest replaces the previous, never summed
                if not self._capture:
                    self._text = None
        if self._text is not None:
            _candidates_text(chunk, self._text)
        if isinstance(model_version, str) and model_version:
            self._model_version = model_version
        if isinstance(response_id, str) and response_id:
            self._response_id = response_id
        if isinstance(candidates, (list, tuple)):
            reasons: list[str] | None = None
            for candidate in candidates:
                reason = getattr(candidate, "finish_reason", _MISSING)
                if reason is _MISSING:
                    reason = _field(candidate, "finish_reason", "finishReason")  # a dict candidate
                if reason is not None:
                    if reasons is None:
                        reasons = []
                    reasons.append(str(getattr(reason, "value", None) or reason))
            if reasons:
                self._finish_reasons = reasons  # the terminal chunk's, one per candidate
        if feedback is not None and _field(feedback, "block_reason") is not None:
            self._block = True
        return False

    def _on_any_item(self, chunk: Any) -> bool:
        self._items += 1
        usage_meta = _field(chunk, "usage_metadata")
        if usage_meta is not None and _has_counts(usage_meta):
            self._usage_meta = usage_meta  # cumulative: the latest replaces the previous, never summed
            if not self._capture:
                self._text = None
        if self._text is not None:
            _candidates_text(chunk, self._text)
        model_version = _field(chunk, "model_version")
        if isinstance(model_version, str) and model_version:
            self._model_version = model_version
        response_id = _field(chunk, "response_id")
        if isinstance(response_id, str) and response_id:
            self._response_id = response_id
        reasons = _finish_reasons(chunk)
        if reasons:
            self._finish_reasons = reasons  # the terminal chunk's, one per candidate
        if _field(_field(chunk, "prompt_feedback"), "block_reason") is not None:
            self._block = True
        return False

    def finish(self, call: LLMCall, complete: bool) -> None:
        # The stream's last chunk carries a finish reason (or a prompt block): only then is the last
        # usage_metadata the request's final usage. A stream the server cut short ends like a complete
        # one for the SDK, so it is flagged incomplete here.
        final = bool(self._finish_reasons) or self._block
        if complete and not final:
            call.set_attribute(sc.CALL_INCOMPLETE, True)
        _record(call, self._usage_meta, self._response_id, self._finish_reasons, self._model_version)
        if self._usage_meta is not None:
            usage = call.usage
            if usage is not None and not final:
                # Provider numbers, but not the request's final ones: the server may have generated
                # (and billed) more than arrived. A lower bound, flagged estimated, never passed off
                # as exact.
                call.set_usage_source("estimated")
        if call.usage is None and self._items:
            # Chunks arrived but none carried usage: count the prompt and the streamed text locally.
            call.estimate_usage(input=_request_text(self._kwargs), output="".join(self._text or ()))
        if self._capture:
            call.capture_content(input=_request_text(self._kwargs), output="".join(self._text or ()))


# --- SDK retries ----------------------------------------------------------------------------------------


class _Attempts:
    """HTTP attempts of the call in flight; every attempt after the first is a re-send by the SDK."""

    __slots__ = ("call", "count", "reason")

    def __init__(self, call: LLMCall) -> None:
        self.call = call
        self.count = 0
        self.reason = "exception"

    def begin(self) -> None:
        if self.count:
            self.call.record_resend(self.reason)
        self.count += 1

    def failed(self, exc: BaseException) -> None:
        self.reason = _retry_reason(exc)


_attempts: contextvars.ContextVar[_Attempts | None] = contextvars.ContextVar("costtrace_genai_attempts", default=None)


def _retry_reason(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return resend_reason(code if isinstance(code, int) else None, exc)


def _request_once(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    attempts = _attempts.get()
    if attempts is None:
        return wrapped(*args, **kwargs)
    safely("google_genai.attempt", attempts.begin)
    try:
        return wrapped(*args, **kwargs)
    except BaseException as exc:
        safely("google_genai.attempt_failed", attempts.failed, exc)
        raise


async def _async_request_once(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    attempts = _attempts.get()
    if attempts is None:
        return await wrapped(*args, **kwargs)
    safely("google_genai.attempt", attempts.begin)
    try:
        return await wrapped(*args, **kwargs)
    except BaseException as exc:
        safely("google_genai.attempt_failed", attempts.failed, exc)
        raise


# --- streams --------------------------------------------------------------------------------------------


class _SyncStream(SyncStreamProxy):
    """The SDK's chunk generator; its HTTP request (and any SDK retry) happens in the first ``next()``."""

    def __iter__(self) -> _SyncStream:
        return self  # a generator is its own iterator: every item goes through __next__ (and _self_first)

    def _self_first(self) -> Any:
        token = _attempts.set(_Attempts(self._self_call))
        current = activate(self._self_call)  # the request is sent in this first next()
        try:
            return super()._self_first()
        finally:
            deactivate(current)
            _attempts.reset(token)


class _AsyncStream(AsyncStreamProxy):
    """The async twin of :class:`_SyncStream`."""

    async def _self_first(self) -> Any:
        token = _attempts.set(_Attempts(self._self_call))
        current = activate(self._self_call)
        try:
            return await super()._self_first()
        finally:
            deactivate(current)
            _attempts.reset(token)


# --- wrappers -------------------------------------------------------------------------------------------


def _generate(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    outer = current_call()
    if passes_through(outer):  # another instrumentation's call records this request
        return wrapped(*args, **kwargs)
    call: LLMCall | None = safely("google_genai.start", _start_call, instance, kwargs, False, outer)
    if call is None:
        return wrapped(*args, **kwargs)
    kwargs = _send_kwargs(call, kwargs)
    scope = _enter(call)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as exc:
        _leave(scope)
        end_failed(call, exc, _API_ERRORS)
        raise
    _leave(scope)
    safely("google_genai.response", _record_response, call, response, kwargs)
    call.end()
    return response


async def _agenerate(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    outer = current_call()
    if passes_through(outer):
        return await wrapped(*args, **kwargs)
    call: LLMCall | None = safely("google_genai.start", _start_call, instance, kwargs, False, outer)
    if call is None:
        return await wrapped(*args, **kwargs)
    kwargs = _send_kwargs(call, kwargs)
    scope = _enter(call)
    try:
        response = await wrapped(*args, **kwargs)
    except BaseException as exc:
        _leave(scope)
        end_failed(call, exc, _API_ERRORS)
        raise
    _leave(scope)
    safely("google_genai.response", _record_response, call, response, kwargs)
    call.end()
    return response


_Scope = tuple[contextvars.Token[_Attempts | None], contextvars.Token[LLMCall | None], object]


def _enter(call: LLMCall) -> _Scope:
    """While the request is sent: its attempts counted (SDK retries), the call current (the HTTP layer
    counts its request; nested layers pass through), and its span the parent of HTTP client spans."""
    attempts = _attempts.set(_Attempts(call))
    current = activate(call)
    ctx = safely("google_genai.attach", otel_context.attach, trace.set_span_in_context(call.span))
    return attempts, current, ctx


def _leave(scope: _Scope) -> None:
    attempts, current, ctx = scope
    if ctx is not None:
        safely("google_genai.detach", otel_context.detach, ctx)
    deactivate(current)
    _attempts.reset(attempts)


def _stream(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    outer = current_call()
    if passes_through(outer):
        return wrapped(*args, **kwargs)
    call: LLMCall | None = safely("google_genai.start", _start_call, instance, kwargs, True, outer)
    if call is None:
        return wrapped(*args, **kwargs)
    kwargs = _send_kwargs(call, kwargs)
    current = activate(call)
    try:
        stream = wrapped(*args, **kwargs)
    except BaseException as exc:
        end_failed(call, exc, _API_ERRORS)
        raise
    finally:
        deactivate(current)
    return _proxy(_SyncStream, stream, call, kwargs)


async def _astream(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    outer = current_call()
    if passes_through(outer):
        return await wrapped(*args, **kwargs)
    call: LLMCall | None = safely("google_genai.start", _start_call, instance, kwargs, True, outer)
    if call is None:
        return await wrapped(*args, **kwargs)
    kwargs = _send_kwargs(call, kwargs)
    token = _attempts.set(_Attempts(call))
    current = activate(call)
    try:
        stream = await wrapped(*args, **kwargs)  # the request is sent here; chunks come later
    except BaseException as exc:
        end_failed(call, exc, _API_ERRORS)
        raise
    finally:
        deactivate(current)
        _attempts.reset(token)
    return _proxy(_AsyncStream, stream, call, kwargs)


def _proxy(cls: type[SyncStreamProxy | AsyncStreamProxy], stream: Any, call: LLMCall, kwargs: Mapping[str, Any]) -> Any:
    proxy = safely("google_genai.stream", lambda: cls(stream, call, _StreamAccumulator(kwargs)))
    if proxy is None:  # costtrace failed to wrap: the user gets the bare stream, the call ends unknown
        safely("google_genai.stream.flag", call.set_attribute, sc.CALL_INCOMPLETE, True)
        call.end()
        return stream
    return proxy


class GoogleGenAIInstrumentor(CosttraceInstrumentor):
    """Instruments ``google-genai``: every ``generate_content`` request is a priced call span.

    Example:
        >>> from costtrace.instrumentation.google_genai import GoogleGenAIInstrumentor  # doctest: +SKIP
        >>> GoogleGenAIInstrumentor().instrument()                                    # doctest: +SKIP
    """

    # 1.8 is the first SDK whose response model keeps ``thoughts_token_count`` and
    # ``tool_use_prompt_token_count``: older ones drop those billed tokens while parsing.
    _instruments = ("google-genai >= 1.8, < 4",)

    @staticmethod
    def per_request_level() -> bool:
        """True when the SDK has the per-request methods costtrace prefers to wrap (1.0 to 3.x do)."""
        import importlib

        models = importlib.import_module(_MODELS_MODULE)
        return all(
            callable(getattr(getattr(models, cls, None), name, None))
            for cls in ("Models", "AsyncModels")
            for name in _PER_REQUEST_METHODS
        )

    def _instrument(self, **kwargs: Any) -> None:
        global _API_ERRORS
        import importlib

        _API_ERRORS = (importlib.import_module("google.genai.errors").APIError,)
        super()._instrument(**kwargs)

    def targets(self) -> list[tuple[str, str, Callable[..., Any]]]:
        generate, stream = _PER_REQUEST_METHODS if self.per_request_level() else _PUBLIC_METHODS
        return [
            (_MODELS_MODULE, f"Models.{generate}", _generate),
            (_MODELS_MODULE, f"Models.{stream}", _stream),
            (_MODELS_MODULE, f"AsyncModels.{generate}", _agenerate),
            (_MODELS_MODULE, f"AsyncModels.{stream}", _astream),
            # HTTP attempts (SDK retries with HttpRetryOptions); absent before 2.x, then skipped.
            (_API_CLIENT_MODULE, "BaseApiClient._request_once", _request_once),
            (_API_CLIENT_MODULE, "BaseApiClient._async_request_once", _async_request_once),
        ]
