"""OpenAI SDK instrumentation: every chat completion, Responses and embeddings call is a priced call span.

    costtrace.instrument("openai")                              # or OpenAIInstrumentor().instrument()
    costtrace.instrument("openai", inject_stream_usage=False)   # never add stream_options to a request

What is patched (each target only where the installed SDK has it, see docs/instrumentation-openai.md):

- ``chat.completions.create`` and ``parse`` (``beta.chat.completions.parse`` in older SDKs), sync and
  async, streaming or not; ``chat.completions.stream(...)`` goes through the patched ``create``;
- ``responses.create`` and ``parse``; ``responses.stream(...)`` goes through the patched ``create``;
- ``embeddings.create``;
- the SDK's retry hook (``_sleep_for_retry``, or ``_retry_request`` in older SDKs such as 1.40), so each
  re-send the SDK makes by itself is counted on the call span and reported on the task;
- the ``close`` of the SDK's stream helpers (``ChatCompletionStream``, ``ResponseStream``), so
  leaving their ``with`` block early ends the call at once instead of when garbage-collected.

The user's SDK call always runs outside costtrace's guarded code: its return value (the same object,
or for streams the same stream behind a transparent proxy) and its exceptions reach the caller
untouched. Everything costtrace does around it goes through :func:`safely`.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from costtrace import content
from costtrace import semconv as sc
from costtrace._internal import report_internal_error
from costtrace.calls import LLMCall, activate, current_call, deactivate
from costtrace.errors import BudgetExceeded, ConfigError
from costtrace.instrumentation._base import (
    AsyncStreamProxy,
    CosttraceInstrumentor,
    SyncStreamProxy,
    end_failed,
    passes_through,
    resend_reason,
    safely,
)
from costtrace.instrumentation._bodytap import BodyReader, SSEReader, make_reader, tap_response
from costtrace.instrumentation._providers import provider_for_host
from costtrace.usage import first_field

logger = logging.getLogger("costtrace")

__all__ = ["INJECT_STREAM_USAGE_ENV_VAR", "OpenAIInstrumentor"]

INJECT_STREAM_USAGE_ENV_VAR = "COSTTRACE_OPENAI_INJECT_STREAM_USAGE"
"""Environment variable for ``inject_stream_usage`` (``0``/``false`` turns it off), for zero-code runs
that cannot pass options."""

_SCOPE = "costtrace"
_PROXY_BASE: Any = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)  # wrapt 2.x / 1.x

# The call of the SDK method running in this context is ``costtrace.calls.current_call()``, made current
# around the user's call only: the retry hook finds its call there, the HTTP layer counts the request on
# it, and a patched method called by another patched method (``parse`` -> ``create`` in older SDKs), or
# by another instrumentation (LiteLLM), passes straight through instead of recording the call twice.

_GEN_AI_MARKERS = (sc.GEN_AI_OPERATION_NAME, sc.GEN_AI_PROVIDER_NAME, sc.GEN_AI_SYSTEM)

_DEFAULT_PORTS = {"https": 443, "http": 80}


class _Settings:
    """Options given to :meth:`OpenAIInstrumentor.instrument` (one instrumentor per process)."""

    inject_stream_usage = True
    active = False
    """False once uninstrumented: an SDK object made while instrumented (a cached ``with_raw_response``,
    a stream manager's ``partial``) may still hold a patched bound method; it then passes straight through."""


_settings = _Settings()


class _SDK:
    """SDK classes looked up once at instrument time (the module never imports openai at import time)."""

    stream: tuple[type, ...] = ()
    async_stream: tuple[type, ...] = ()
    legacy_response: tuple[type, ...] = ()
    streamed_response: tuple[type, ...] = ()
    azure_client: tuple[type, ...] = ()
    status_error: tuple[type, ...] = ()
    api_error: tuple[type[BaseException], ...] = ()

    @classmethod
    def load(cls) -> None:
        openai = importlib.import_module("openai")
        cls.stream = (openai.Stream,)
        cls.async_stream = (openai.AsyncStream,)
        cls.legacy_response = (importlib.import_module("openai._legacy_response").LegacyAPIResponse,)
        resp = importlib.import_module("openai._response")
        base_response = getattr(resp, "BaseAPIResponse", None)  # with_streaming_response's reply
        cls.streamed_response = (base_response,) if isinstance(base_response, type) else ()
        azure = importlib.import_module("openai.lib.azure")
        cls.azure_client = (azure.BaseAzureClient,)
        cls.status_error = (openai.APIStatusError,)
        cls.api_error = (openai.APIError,)


# --- request details ----------------------------------------------------------------------------


def _int_arg(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_arg(value: object) -> str | None:
    return value if isinstance(value, str) else None


_endpoint_cache: dict[int, tuple[object, str, str | None, int | None]] = {}


def _endpoint(client: Any) -> tuple[str, str | None, int | None]:
    """(provider, server.address, server.port) of a client, cached per client and base URL."""
    base_url = getattr(client, "base_url", None)
    key = id(client)
    hit = _endpoint_cache.get(key)
    if hit is not None and hit[0] is base_url:
        return hit[1], hit[2], hit[3]
    host = getattr(base_url, "host", None) or None
    port = getattr(base_url, "port", None) or _DEFAULT_PORTS.get(str(getattr(base_url, "scheme", "")))
    provider = "openai"
    if _SDK.azure_client and isinstance(client, _SDK.azure_client):
        provider = "azure.ai.openai"
    else:
        runtime_name = str(getattr(getattr(client, "_provider_runtime", None), "name", "") or "").lower()
        if "bedrock" in runtime_name:
            provider = "aws.bedrock"
        elif "vertex" in runtime_name:
            provider = "gcp.vertex_ai"
        else:
            provider = provider_for_host(host, "openai")
    if len(_endpoint_cache) > 256:
        _endpoint_cache.clear()
    _endpoint_cache[key] = (base_url, provider, host, port)
    return provider, host, port


def _host_span() -> Any:
    """Another instrumentation's GenAI CLIENT span for this same call, if one is current (openai-v2...)."""
    span = trace.get_current_span()
    if not span.is_recording() or getattr(span, "kind", None) is not SpanKind.CLIENT:
        return None
    scope = getattr(span, "instrumentation_scope", None)
    if scope is not None and getattr(scope, "name", None) == _SCOPE:
        return None
    attrs = getattr(span, "attributes", None)
    if not attrs or not any(k in attrs for k in _GEN_AI_MARKERS):
        return None
    return span


class _Request:
    """What one instrumented call needs to remember between its start and its end."""

    __slots__ = ("call", "input", "kind", "model", "user_include_usage")

    def __init__(self, call: LLMCall, kind: str, model: str, input: Any, user_include_usage: bool) -> None:
        self.call = call
        self.kind = kind
        self.model = model
        self.input = input
        self.user_include_usage = user_include_usage


def _begin(kind: str, instance: Any, kwargs: dict[str, Any], outer: LLMCall | None) -> tuple[_Request, dict[str, Any]]:
    """Start the call span; returns the call and the kwargs to send (``include_usage`` added unless turned off).

    ``outer``: a manual ``llm_call`` block this request runs in; the request then fills it (no span of its own).
    """
    provider, host, port = _endpoint(getattr(instance, "_client", None))
    model = _str_arg(kwargs.get("model")) or ""
    stream = kwargs.get("stream") is True
    requested_tier = _str_arg(kwargs.get("service_tier"))
    attributes: dict[str, Any] = {}
    if kind == "embeddings":
        operation, max_tokens, request_input = "embeddings", None, kwargs.get("input")
    elif kind == "responses":
        operation = "chat"
        max_tokens = _int_arg(kwargs.get("max_output_tokens"))
        request_input = (kwargs.get("instructions"), kwargs.get("input"))
        attributes[sc.OPENAI_API_TYPE] = "responses"
    else:
        operation = "chat"
        max_tokens = _int_arg(kwargs.get("max_completion_tokens"))
        if max_tokens is None:
            max_tokens = _int_arg(kwargs.get("max_tokens"))
        request_input = kwargs.get("messages")
        attributes[sc.OPENAI_API_TYPE] = "chat_completions"
    if requested_tier is not None:
        attributes[sc.OPENAI_REQUEST_SERVICE_TIER] = requested_tier
    for key, attr in (("temperature", sc.GEN_AI_REQUEST_TEMPERATURE), ("top_p", sc.GEN_AI_REQUEST_TOP_P)):
        value = kwargs.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[attr] = float(value)

    user_include_usage = False
    send = kwargs
    if stream and kind == "chat":
        options = kwargs.get("stream_options")
        if isinstance(options, Mapping) and "include_usage" in options:
            user_include_usage = bool(options["include_usage"])
        elif (
            _settings.inject_stream_usage
            and not _streaming_response(kwargs)
            and (options is None or isinstance(options, Mapping) or _omitted(options))
        ):
            merged = dict(options) if isinstance(options, Mapping) else {}
            merged["include_usage"] = True
            send = dict(kwargs)
            send["stream_options"] = merged

    call = LLMCall(
        provider,
        model,
        operation,
        server_address=host,
        server_port=port,
        max_tokens=max_tokens,
        stream=stream,
        service_tier=requested_tier,
        attributes=attributes,
        input=request_input,
    )
    # Another instrumentation's span of this very call (e.g. openai-v2): costtrace writes its attributes
    # there instead of starting a second usage-carrying span (see docs/instrumentation-openai.md).
    # may raise BudgetExceeded: nothing has been sent
    call.start(host_span=_host_span() if outer is None else None, fill=outer)
    if call.model != model:  # a downgrade budget picked a cheaper model
        send = dict(send)
        send["model"] = call.model
    return _Request(call, kind, call.model, request_input, user_include_usage), send


def _streaming_response(kwargs: Mapping[str, Any]) -> bool:
    """A ``with_streaming_response`` call: the app reads the server's bytes itself.

    costtrace does not add ``include_usage`` there: with it, the API adds ``"usage": null`` to every
    chunk, so the bytes the app reads would differ. Usage is read if the app asked for it, else
    estimated from the streamed text (see docs/instrumentation-openai.md).
    """
    headers = kwargs.get("extra_headers")
    return isinstance(headers, Mapping) and headers.get("X-Stainless-Raw-Response") == "stream"


def _omitted(value: object) -> bool:
    """The SDK's "not given" sentinels (``NOT_GIVEN``, ``omit``), whatever the SDK version calls them."""
    return type(value).__name__ in ("NotGiven", "Omit")


# --- results --------------------------------------------------------------------------------------


def _set_response_tier(call: LLMCall, tier: object) -> None:
    """The tier that served the call prices it (a request for ``auto`` may be served by ``priority``)."""
    if isinstance(tier, str) and tier:
        call.set_attribute(sc.OPENAI_RESPONSE_SERVICE_TIER, tier)
        call.set_service_tier(tier)


def _record_body(req: _Request, body: Any, streamed_text: str | None = None) -> None:
    req.call.record_response(body)
    _set_response_tier(req.call, first_field(body, "service_tier"))
    if _content_enabled():
        _capture(req, body, streamed_text)


def _content_enabled() -> bool:
    return content.settings().enabled


def _dump(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json", exclude_none=True) if callable(dump) else value


def _capture(req: _Request, body: Any, streamed_text: str | None) -> None:
    """Opt-in content capture (``costtrace.capture_content``): size-limited and redacted by the core."""
    if req.kind == "responses":
        instructions, items = req.input if isinstance(req.input, tuple) else (None, req.input)
        prompt: Any = {"instructions": instructions, "input": _as_messages(items)}
        output: Any = streamed_text
        if output is None:
            items_out = first_field(body, "output")
            output = [_dump(i) for i in items_out] if isinstance(items_out, list) else None
    elif req.kind == "embeddings":
        prompt, output = req.input, None  # the output is vectors, not content
    else:
        prompt = _as_messages(req.input)
        output = streamed_text
        if output is None:
            choices = first_field(body, "choices")
            if isinstance(choices, list):
                output = [_dump(first_field(c, "message")) for c in choices]
    req.call.capture_content(input=prompt, output=output)


def _end_with_body(req: _Request, body: Any) -> None:
    _record_body(req, body)
    req.call.end()


def _parse_raw(raw: Any) -> Any:
    """The body of a ``with_raw_response`` reply, parsed by the SDK's own cached ``parse()``.

    ``LegacyAPIResponse.parse()`` caches its result, so the user's own ``parse()`` later returns this
    very object: the body is parsed once, and the user gets exactly what they would without us. If
    the SDK's parse fails (a post-parser rejecting the content, a body that is not JSON), the user's
    ``parse()`` will raise the same error; costtrace then reads the usage from the JSON body.
    """
    try:
        return raw.parse()
    except Exception as exc:
        logger.debug("costtrace: the SDK could not parse a raw response (%s); reading its JSON", type(exc).__name__)
    try:
        return raw.http_response.json()
    except Exception:
        return None  # not JSON either: usage unknown, flagged as such


def _on_result(req: _Request, result: Any, is_async: bool) -> Any:
    """What the user gets for ``result``: the same object, or for a stream the same stream behind a proxy."""
    call = req.call
    if isinstance(result, _SDK.legacy_response):  # with_raw_response
        if getattr(result, "_stream", False):
            return _wrap_raw_stream(req, result, is_async)
        _end_with_body(req, _parse_raw(result))
        return result
    if isinstance(result, _SDK.stream):
        return SyncStreamProxy(result, call, _accumulator(req))
    if isinstance(result, _SDK.async_stream):
        return AsyncStreamProxy(result, call, _accumulator(req))
    if _SDK.streamed_response and isinstance(result, _SDK.streamed_response):
        # with_streaming_response: the body is the user's to read (parse(), iter_lines(), iter_bytes()...).
        # A tap under the HTTP response reads its usage as the user reads it, without consuming it.
        _tap_streamed_response(req, result)
        return result
    _end_with_body(req, result)
    return result


def _wrap_raw_stream(req: _Request, raw: Any, is_async: bool) -> Any:
    """A raw streaming reply: the stream the user gets from ``.parse()`` is proxied in the SDK's parse cache."""
    cache = getattr(raw, "_parsed_by_type", None)
    cast_to = getattr(raw, "_cast_to", None)
    if not isinstance(cache, dict) or cast_to is None:
        req.call.end()  # an SDK shape we do not know: usage unknown (flagged, never $0)
        return raw
    stream = raw.parse()  # builds the SDK's stream object (no I/O) and caches it
    proxy_cls = AsyncStreamProxy if is_async else SyncStreamProxy
    cache[cast_to] = proxy_cls(stream, req.call, _accumulator(req))
    return raw


def _tap_streamed_response(req: _Request, result: Any) -> None:
    """Read a ``with_streaming_response`` body's usage through a tap on its HTTP response: the bytes the
    user reads (``parse()``, ``iter_lines()``, ``iter_bytes()``...) pass through unchanged."""
    response = getattr(result, "http_response", None)
    reader = make_reader(req.kind, response) if response is not None else None
    if reader is None or not tap_response(response, reader, lambda r, exc, done: _end_tapped(req, r, exc, done)):
        req.call.set_usage_unknown("usage unknown: costtrace could not read this streaming response")
        req.call.end()


def _end_tapped(req: _Request, reader: BodyReader, exc: BaseException | None, complete: bool) -> None:
    """The body of a ``with_streaming_response`` reply ended (read, closed, or dropped): record it."""
    call = req.call
    try:
        body = reader.body()
        text = reader.text() if isinstance(reader, SSEReader) else None
        if body is not None:
            _record_body(req, body, text)
        if not (complete and reader.complete):
            call.set_attribute(sc.CALL_INCOMPLETE, True)
        if call.usage is None:
            if not reader.bytes_read:
                call.set_usage_unknown("usage unknown: the response body was never read")
            elif isinstance(reader, SSEReader):
                _estimate(req, reader.text())  # the provider sent no usage: counted locally, flagged
            else:
                call.set_usage_unknown(reader.problem or "usage unknown: the response carried no token usage")
    finally:
        call.end(exc)


_FAILED = object()


def _result(req: _Request, result: Any, is_async: bool) -> Any:
    """``_on_result`` guarded: if costtrace fails there, the user gets ``result`` and the call still ends."""
    out = safely("instrumentation.openai.result", _on_result, req, result, is_async, default=_FAILED)
    if out is _FAILED:
        req.call.end()  # idempotent, never raises
        return result
    return out


def _end_failed(req: _Request, exc: BaseException) -> None:
    """The SDK raised: a failed attempt. A provider error reply is not billed, so usage stays unknown,
    unless the error body itself reports usage."""
    body = getattr(exc, "body", None) if _SDK.status_error and isinstance(exc, _SDK.status_error) else None
    if isinstance(body, Mapping) and isinstance(body.get("usage"), Mapping):
        req.call.record_response(body)
    end_failed(req.call, exc, _SDK.api_error)  # a request refused before sending is not a call


# --- streams --------------------------------------------------------------------------------------


def _accumulator(req: _Request) -> _ChatStream | _ResponsesStream:
    if req.kind == "responses":
        return _ResponsesStream(req)
    return _ChatStream(req, hide_usage_chunk=_settings.inject_stream_usage and not req.user_include_usage)


def _as_messages(value: Any) -> Any:
    """Request messages as plain data for the token counter (pydantic message objects are dumped)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, (list, tuple)):
        return None  # an iterator the SDK consumed: its tokens cannot be counted again
    out: list[Any] = []
    for m in value:
        dump = getattr(m, "model_dump", None)
        out.append(dump(exclude_none=True) if callable(dump) else m)
    return out


def _estimate(req: _Request, output: str) -> None:
    """No usage reported: count request and streamed text locally, flagged ``estimated``."""
    call = req.call
    if req.kind == "responses":
        instructions, items = req.input if isinstance(req.input, tuple) else (None, req.input)
        messages = _as_messages(items)
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if isinstance(instructions, str) and instructions:
            messages = [{"role": "system", "content": instructions}, *(messages or [])]
        call.estimate_usage(input=messages, output=output)
    else:
        call.estimate_usage(input=_as_messages(req.input), output=output)


class _ChatStream:
    """Reads a chat completions stream: the usage chunk if any, else the text for an estimate.

    With ``include_usage`` the usage arrives once, in a final chunk whose ``choices`` is empty: it is
    taken as is, never summed. That chunk is hidden from the user when costtrace added the option
    (``inject_stream_usage``, on by default) and the user did not ask for it.
    """

    __slots__ = ("_hide", "_id", "_model", "_parts", "_reasons", "_req", "_tier", "_usage")

    def __init__(self, req: _Request, *, hide_usage_chunk: bool) -> None:
        self._req = req
        self._hide = hide_usage_chunk
        self._model: Any = None
        self._id: Any = None
        self._tier: Any = None
        self._usage: Any = None
        self._parts: list[str] = []
        self._reasons: dict[int, Any] = {}

    def on_item(self, chunk: Any) -> bool:
        if self._model is None:
            self._model = getattr(chunk, "model", None)
            self._id = getattr(chunk, "id", None)
        choices = getattr(chunk, "choices", None)
        if choices and isinstance(choices, list):
            parts = self._parts
            for choice in choices:
                delta = getattr(choice, "delta", None)
                if delta is not None:
                    content = getattr(delta, "content", None)
                    if content and isinstance(content, str):
                        parts.append(content)
                    tool_calls = getattr(delta, "tool_calls", None)
                    if tool_calls and isinstance(tool_calls, list):
                        for tc in tool_calls:
                            fn = getattr(tc, "function", None)
                            for piece in (getattr(fn, "name", None), getattr(fn, "arguments", None)):
                                if piece and isinstance(piece, str):
                                    parts.append(piece)
                    refusal = getattr(delta, "refusal", None)
                    if refusal and isinstance(refusal, str):
                        parts.append(refusal)
                reason = getattr(choice, "finish_reason", None)
                if reason is not None:
                    index = getattr(choice, "index", 0)
                    self._reasons[index if isinstance(index, int) else 0] = reason
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self._usage = usage
            tier = getattr(chunk, "service_tier", None)
            if tier is not None:
                self._tier = tier
            return self._hide and not choices
        if self._tier is None:
            self._tier = getattr(chunk, "service_tier", None)
        return False

    def finish(self, call: LLMCall, complete: bool) -> None:
        reasons = [self._reasons[k] for k in sorted(self._reasons)]
        summary: dict[str, Any] = {
            "model": self._model,
            "id": self._id,
            "choices": [{"finish_reason": r} for r in reasons],
        }
        if self._usage is not None:
            summary["usage"] = self._usage
        call.record_response(summary)
        _set_response_tier(call, self._tier)
        if _content_enabled():
            _capture(self._req, None, "".join(self._parts))
        if complete and not reasons:
            # The stream ended without a finish reason: the connection was cut mid-way.
            call.set_attribute(sc.CALL_INCOMPLETE, True)
        if call.usage is None:
            _estimate(self._req, "".join(self._parts))


_RESPONSES_FINAL = frozenset(("response.completed", "response.incomplete", "response.failed"))
_RESPONSES_TEXT = frozenset(
    (
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_summary_text.delta",
    )
)


class _ResponsesStream:
    """Reads a Responses API event stream: usage is in the final ``response.completed`` event."""

    __slots__ = ("_final", "_first", "_parts", "_req")

    def __init__(self, req: _Request) -> None:
        self._req = req
        self._first: Any = None
        self._final: Any = None
        self._parts: list[str] = []

    def on_item(self, event: Any) -> bool:
        kind = getattr(event, "type", None)
        if not isinstance(kind, str):
            return False
        if kind in _RESPONSES_TEXT:
            delta = getattr(event, "delta", None)
            if delta and isinstance(delta, str):
                self._parts.append(delta)
        elif kind in _RESPONSES_FINAL:
            self._final = getattr(event, "response", None)
        elif self._first is None and kind == "response.created":
            self._first = getattr(event, "response", None)
        return False

    def finish(self, call: LLMCall, complete: bool) -> None:
        body = self._final if self._final is not None else self._first
        if body is not None:
            _record_body(self._req, body, "".join(self._parts))
        if complete and self._final is None:
            call.set_attribute(sc.CALL_INCOMPLETE, True)  # no final event: the stream was cut
        if call.usage is None:
            _estimate(self._req, "".join(self._parts))


# --- wrappers -------------------------------------------------------------------------------------


def _detach(token: object) -> None:
    if token is not None:
        try:
            otel_context.detach(token)  # type: ignore[arg-type]
        except Exception as exc:
            report_internal_error("instrumentation.openai.detach", exc)


def _start(
    kind: str, instance: Any, kwargs: dict[str, Any], outer: LLMCall | None
) -> tuple[_Request, dict[str, Any], object] | None:
    """Start the call and make it (and its span) current; None if costtrace failed: the user's call then runs as is.

    Inline rather than through :func:`safely`: this runs on every call. A hard cap
    (:class:`BudgetExceeded`) passes through: nothing has been sent.
    """
    try:
        req, send = _begin(kind, instance, kwargs, outer)
    except BudgetExceeded:
        raise
    except Exception as exc:
        report_internal_error("instrumentation.openai.start", exc)
        return None
    try:  # the call's span current while the SDK sends the request: HTTP client spans nest under it
        ctx: object = otel_context.attach(trace.set_span_in_context(req.call.span))
    except Exception as exc:
        report_internal_error("instrumentation.openai.attach", exc)
        ctx = None
    return req, send, ctx


def _call_wrapper(kind: str) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        outer = current_call()
        if not _settings.active or passes_through(outer):
            return wrapped(*args, **kwargs)  # uninstrumented, or another patched method's call
        started = _start(kind, instance, kwargs, outer)
        if started is None:
            return wrapped(*args, **kwargs)
        req, send, ctx = started
        current = activate(req.call)  # the HTTP layer counts the request on it instead of recording it
        try:
            result = wrapped(*args, **send)
        except BaseException as exc:
            safely("instrumentation.openai.error", _end_failed, req, exc)
            raise
        finally:
            deactivate(current)
            _detach(ctx)
        return _result(req, result, False)

    return wrapper


def _async_call_wrapper(kind: str) -> Callable[..., Any]:
    async def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        outer = current_call()
        if not _settings.active or passes_through(outer):
            return await wrapped(*args, **kwargs)  # uninstrumented, or another patched method's call
        started = _start(kind, instance, kwargs, outer)
        if started is None:
            return await wrapped(*args, **kwargs)
        req, send, ctx = started
        current = activate(req.call)  # the HTTP layer counts the request on it instead of recording it
        try:
            result = await wrapped(*args, **send)
        except BaseException as exc:
            safely("instrumentation.openai.error", _end_failed, req, exc)
            raise
        finally:
            deactivate(current)
            _detach(ctx)
        return _result(req, result, True)

    return wrapper


def _resend_reason(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    if "response" in kwargs:  # _sleep_for_retry(*, retries_taken, max_retries, options, response)
        return resend_reason(getattr(kwargs["response"], "status_code", None))
    # _retry_request(options, cast_to, remaining_retries, response_headers, ...): no status at hand
    headers = args[3] if len(args) > 3 else kwargs.get("response_headers")
    return "http_error" if headers is not None else resend_reason(None)


def _record_resend(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # The SDK call being recorded, or the call current around a raw use of the client (LiteLLM posts
    # with ``client.post`` inside its own recorded call, and hands the SDK its ``num_retries``).
    call = current_call()
    if call is not None:
        call.record_resend(_resend_reason(args, kwargs))


def _retry_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    safely("instrumentation.openai.retry", _record_resend, args, kwargs)
    return wrapped(*args, **kwargs)


async def _async_retry_wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    safely("instrumentation.openai.retry", _record_resend, args, kwargs)
    return await wrapped(*args, **kwargs)


def _end_helper_stream(helper: Any) -> None:
    """A stream helper (``ChatCompletionStream``, ``ResponseStream``) was closed: end its call now."""
    raw = getattr(helper, "_raw_stream", None)
    if isinstance(raw, (SyncStreamProxy, AsyncStreamProxy)):
        raw._self_end(None, complete=False)  # no-op if the stream already ended


def _helper_close_wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    try:
        return wrapped(*args, **kwargs)
    finally:
        safely("instrumentation.openai.helper_close", _end_helper_stream, instance)


async def _async_helper_close_wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    try:
        return await wrapped(*args, **kwargs)
    finally:
        safely("instrumentation.openai.helper_close", _end_helper_stream, instance)


# --- the instrumentor -----------------------------------------------------------------------------


def _read_inject_option(kwargs: Mapping[str, Any]) -> bool:
    if "inject_stream_usage" in kwargs:
        value = kwargs["inject_stream_usage"]
        if not isinstance(value, bool):
            raise ConfigError(f"inject_stream_usage must be True or False, got {value!r}")
        return value
    raw = os.environ.get(INJECT_STREAM_USAGE_ENV_VAR, "").strip().lower()
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("", "1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{INJECT_STREAM_USAGE_ENV_VAR}={raw!r} is not a boolean; use 1/true or 0/false")


def _owner(module: str, name: str) -> tuple[Any, str]:
    owner_path, _, attr = name.rpartition(".")
    obj: Any = importlib.import_module(module)
    for part in owner_path.split(".") if owner_path else ():
        obj = getattr(obj, part)
    return obj, attr


def _is_wrapper(obj: Any) -> bool:
    return isinstance(obj, _PROXY_BASE) and hasattr(obj, "_self_wrapper")


def _wrap_innermost(module: str, name: str, wrapper: Callable[..., Any]) -> None:
    """Wrap ``module.name``, beneath any wrapt wrapper already there (another instrumentation's).

    costtrace always sits closest to the SDK, whichever instrumentation was installed first, so the
    other instrumentation's span is current when costtrace's call starts (see ``_host_span``).
    """
    owner, attr = _owner(module, name)
    current = vars(owner).get(attr) if isinstance(owner, type) else None
    if current is None or not _is_wrapper(current):
        wrapt.wrap_function_wrapper(owner, attr, wrapper)
        return
    parent = current
    while _is_wrapper(parent.__wrapped__):
        parent = parent.__wrapped__
    parent.__wrapped__ = wrapt.FunctionWrapper(parent.__wrapped__, wrapper)


def _unwrap_ours(module: str, name: str, wrapper: Callable[..., Any]) -> None:
    """Remove costtrace's wrapper from ``module.name``, wherever it sits in a chain of wrappers."""
    owner, attr = _owner(module, name)
    current: Any = vars(owner).get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
    parent: Any = None
    while _is_wrapper(current):
        if current._self_wrapper is wrapper:
            if parent is None:
                setattr(owner, attr, current.__wrapped__)
            else:
                parent.__wrapped__ = current.__wrapped__
            return
        parent, current = current, current.__wrapped__


class OpenAIInstrumentor(CosttraceInstrumentor):
    """Instruments the ``openai`` SDK (1.55.3 to 3.x), OpenAI and Azure OpenAI clients.

    Options (``instrument(**options)`` or ``costtrace.instrument("openai", **options)``):

    - ``inject_stream_usage`` (default True; ``False`` or ``COSTTRACE_OPENAI_INJECT_STREAM_USAGE=0``
      turns it off): add ``stream_options={"include_usage": True}`` to chat completion streams that do
      not set it, so their usage is exact instead of estimated; the usage-only chunk this adds is hidden
      from what your code reads (iteration, the stream helpers, ``with_streaming_response`` bytes).
      Turn it off for an OpenAI-compatible server that rejects ``stream_options`` (some older
      self-hosted servers answer 400): streams are then estimated with tiktoken, flagged ``estimated``.

    Example:
        >>> from costtrace.instrumentation.openai import OpenAIInstrumentor   # doctest: +SKIP
        >>> OpenAIInstrumentor().instrument(inject_stream_usage=False)        # doctest: +SKIP
    """

    _instruments = ("openai >= 1.55.3, < 4",)

    def targets(self) -> list[tuple[str, str, Callable[..., Any]]]:
        chat, achat = _call_wrapper("chat"), _async_call_wrapper("chat")
        resp, aresp = _call_wrapper("responses"), _async_call_wrapper("responses")
        emb, aemb = _call_wrapper("embeddings"), _async_call_wrapper("embeddings")
        found: list[tuple[str, str, Callable[..., Any]]] = [
            ("openai.resources.chat.completions", "Completions.create", chat),
            ("openai.resources.chat.completions", "AsyncCompletions.create", achat),
            ("openai.resources.chat.completions", "Completions.parse", chat),
            ("openai.resources.chat.completions", "AsyncCompletions.parse", achat),
            ("openai.resources.beta.chat.completions", "Completions.parse", chat),
            ("openai.resources.beta.chat.completions", "AsyncCompletions.parse", achat),
            ("openai.resources.responses", "Responses.create", resp),
            ("openai.resources.responses", "AsyncResponses.create", aresp),
            ("openai.resources.responses", "Responses.parse", resp),
            ("openai.resources.responses", "AsyncResponses.parse", aresp),
            ("openai.resources.embeddings", "Embeddings.create", emb),
            ("openai.resources.embeddings", "AsyncEmbeddings.create", aemb),
            ("openai.lib.streaming.chat", "ChatCompletionStream.close", _helper_close_wrapper),
            ("openai.lib.streaming.chat", "AsyncChatCompletionStream.close", _async_helper_close_wrapper),
            ("openai.lib.streaming.responses", "ResponseStream.close", _helper_close_wrapper),
            ("openai.lib.streaming.responses", "AsyncResponseStream.close", _async_helper_close_wrapper),
        ]
        # The SDK's retry hook: one call per re-send. openai >= 1.6x sleeps in _sleep_for_retry and loops;
        # older versions recurse through _retry_request. Exactly one of the two is patched.
        base = importlib.import_module("openai._base_client")
        hook = "_sleep_for_retry" if hasattr(base.SyncAPIClient, "_sleep_for_retry") else "_retry_request"
        found.append(("openai._base_client", f"SyncAPIClient.{hook}", _retry_wrapper))
        found.append(("openai._base_client", f"AsyncAPIClient.{hook}", _async_retry_wrapper))
        return found

    def _instrument(self, **kwargs: Any) -> None:
        inject = _read_inject_option(kwargs)  # raises ConfigError before anything is patched
        _SDK.load()
        _settings.inject_stream_usage = inject
        _settings.active = True
        self._ct_wrapped: list[tuple[str, str, Callable[..., Any]]] = []
        seen: set[tuple[int, str]] = set()
        for module, name, wrapper in self.targets():
            try:
                owner, attr = _owner(module, name)
                target = getattr(owner, attr)
            except (ImportError, AttributeError) as exc:
                logger.debug("costtrace: %s.%s not found, not instrumented (%s)", module, name, exc)
                continue
            # Only methods a class defines itself (an inherited one would be patched on its base), and
            # a class re-exported under two paths (beta.chat -> chat) is patched once.
            key = (id(owner), attr)
            if not isinstance(owner, type) or attr not in vars(owner) or key in seen or not callable(target):
                continue
            seen.add(key)
            _wrap_innermost(module, name, wrapper)
            self._ct_wrapped.append((module, name, wrapper))

    def _uninstrument(self, **kwargs: Any) -> None:
        _settings.active = False
        for module, name, wrapper in getattr(self, "_ct_wrapped", []):
            try:
                _unwrap_ours(module, name, wrapper)
            except (ImportError, AttributeError) as exc:  # pragma: no cover - the SDK was unloaded
                logger.debug("costtrace: could not unwrap %s.%s (%s)", module, name, exc)
        self._ct_wrapped = []
        _endpoint_cache.clear()
