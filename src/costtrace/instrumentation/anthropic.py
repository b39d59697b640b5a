"""Anthropic SDK instrumentation: every Messages API call becomes a priced call span in the current task.

    costtrace.instrument("anthropic")

What is patched (sync and async clients alike; whatever the installed SDK has, see
docs/instrumentation-anthropic.md):

- ``messages.create`` (``stream=False`` and ``stream=True``), also through ``with_raw_response`` and
  ``with_streaming_response``;
- ``messages.stream(...)``: the call starts when its manager is entered (that is when the request is
  sent) and ends when the stream ends, is closed, is left, or is garbage-collected;
- ``messages.parse`` (structured outputs, newer SDKs);
- ``beta.messages.create`` / ``stream`` / ``parse``, which share the shapes above;
- the SDK's retry sleep, so that each re-send made by the SDK's own ``max_retries`` is counted on the
  call (``http.request.resend_count``) and reported to the task (``costtrace.sdk_retry``).

Usage rules. Anthropic's ``input_tokens`` excludes cache reads and writes; costtrace's input includes
them (``costtrace.usage`` normalises). In a stream, ``message_start`` carries the input usage and each
``message_delta`` the CUMULATIVE usage so far (output, and in newer API versions input and cache fields
too): the last value of each field wins; nothing is ever added across events. A stream that ends before
its ``message_delta`` gets its output tokens estimated from the streamed text, and the whole usage is
then flagged ``estimated``.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from costtrace import semconv as sc
from costtrace._internal import report_internal_error
from costtrace.calls import LLMCall, activate, current_call, deactivate
from costtrace.instrumentation._base import (
    AsyncStreamProxy,
    CosttraceInstrumentor,
    SyncStreamProxy,
    _ObjectProxy,
    end_failed,
    passes_through,
    resend_reason,
    safely,
)
from costtrace.usage import UsageSource, first_field

__all__ = ["AnthropicInstrumentor"]

_MESSAGES = "anthropic.resources.messages"
_BETA_MESSAGES = "anthropic.resources.beta.messages"
_BASE_CLIENT = "anthropic._base_client"
_RAW_RESPONSE_HEADER = "x-stainless-raw-response"
_OPERATION = "chat"


class _State:
    """Module state, set by the instrumentor. Patched functions pass straight through while inactive
    (an SDK object created while instrumented may still hold a patched bound method after uninstrument)."""

    active = False
    sync_streams: tuple[type, ...] = ()
    async_streams: tuple[type, ...] = ()
    api_errors: tuple[type[BaseException], ...] = ()


# --- one call in flight: what the retry hook needs to find ----------------------------------------


class _Scope:
    """The call whose request the SDK is sending now, in this context (thread or asyncio task)."""

    __slots__ = ("call", "last_status")

    def __init__(self, call: LLMCall) -> None:
        self.call = call
        self.last_status: int | None = None


_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("costtrace_anthropic_call", default=None)


@dataclass(frozen=True, slots=True)
class _Request:
    """What costtrace reads from the user's request: span attributes, plus the prompt for estimates."""

    provider: str
    model: str
    server_address: str | None
    server_port: int | None
    max_tokens: int | None
    stream: bool
    raw_mode: str | None
    messages: Any
    system: Any


_PROVIDERS_BY_CLIENT_CLASS = {
    "BaseBedrockClient": "aws.bedrock",
    "AnthropicBedrock": "aws.bedrock",
    "AsyncAnthropicBedrock": "aws.bedrock",
    "BaseVertexClient": "gcp.vertex_ai",
    "AnthropicVertex": "gcp.vertex_ai",
    "AsyncAnthropicVertex": "gcp.vertex_ai",
}
_provider_cache: dict[type, str] = {}


def _provider(client: object) -> str:
    """``gen_ai.provider.name`` of a client: Claude on Bedrock and Vertex AI share the patched resources."""
    cls = type(client)
    found = _provider_cache.get(cls)
    if found is None:
        found = "anthropic"
        for klass in cls.__mro__:
            if klass.__name__ in _PROVIDERS_BY_CLIENT_CLASS:
                found = _PROVIDERS_BY_CLIENT_CLASS[klass.__name__]
                break
        if len(_provider_cache) < 256:
            _provider_cache[cls] = found
    return found


def _server(client: object) -> tuple[str | None, int | None]:
    url = getattr(client, "base_url", None)
    host = getattr(url, "host", None)
    if not isinstance(host, str) or not host:
        return None, None
    port = getattr(url, "port", None)
    if not isinstance(port, int):
        port = {"https": 443, "http": 80}.get(str(getattr(url, "scheme", "")))
    return host, port


def _raw_mode(kwargs: Mapping[str, Any]) -> str | None:
    """``raw`` for ``with_raw_response``, ``stream`` for ``with_streaming_response``, else None."""
    headers = kwargs.get("extra_headers")
    if not isinstance(headers, Mapping):
        return None
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == _RAW_RESPONSE_HEADER:
            return str(value)
    return None


def _request(instance: Any, kwargs: Mapping[str, Any], *, stream: bool) -> _Request | None:
    model = kwargs.get("model")
    if model is None:
        return None  # the SDK rejects the call before sending anything: there is no LLM call to record
    client = getattr(instance, "_client", None)
    address, port = _server(client)
    max_tokens = kwargs.get("max_tokens")
    return _Request(
        provider=_provider(client),
        model=str(model),
        server_address=address,
        server_port=port,
        max_tokens=max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else None,
        stream=stream,
        raw_mode=_raw_mode(kwargs),
        messages=kwargs.get("messages"),
        system=kwargs.get("system"),
    )


def _start(req: _Request, *, downgradable: bool = True, outer: LLMCall | None = None) -> LLMCall:
    """Start the call (``downgradable=False``: the request is already built, its model can't change).

    ``outer``: the manual ``llm_call`` block the request runs in, if any: the request then fills it."""
    call = LLMCall(
        req.provider,
        req.model,
        _OPERATION,
        server_address=req.server_address,
        server_port=req.server_port,
        max_tokens=req.max_tokens,
        stream=req.stream,
        input=(req.system, req.messages),
    )
    call.downgradable = downgradable
    call.start(fill=outer)  # may raise BudgetExceeded: nothing has been sent
    return call


def _send_kwargs(call: LLMCall, req: _Request, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The kwargs to send: the model replaced if a downgrade budget picked a cheaper one."""
    if call.model != req.model:
        return {**kwargs, "model": call.model}
    return kwargs


_ScopeTokens = tuple[contextvars.Token[_Scope | None], object, contextvars.Token[LLMCall | None]]


def _enter_scope(call: LLMCall) -> _ScopeTokens:
    """Make ``call`` the one the retry hook reports to, the current call (the HTTP layer then counts its
    request instead of recording it again), and its span the parent of the SDK's own spans."""
    token = _SCOPE.set(_Scope(call))
    call_token = activate(call)
    ctx_token = otel_context.attach(trace.set_span_in_context(call.span))
    return token, ctx_token, call_token


def _leave_scope(tokens: _ScopeTokens | None) -> None:
    if tokens is None:
        return
    token, ctx_token, call_token = tokens
    deactivate(call_token)
    try:
        _SCOPE.reset(token)
    except Exception as exc:  # a token from another context: report, never raise into the app
        report_internal_error("instrumentation.anthropic.scope", exc)
    if ctx_token is not None:
        try:
            otel_context.detach(ctx_token)  # type: ignore[arg-type]
        except Exception as exc:
            report_internal_error("instrumentation.anthropic.detach", exc)


# --- reading usage -----------------------------------------------------------------------------------


def _tokens(value: Any) -> int | None:
    """A token count as a non-negative int, or None when missing or not a count (None, negative, str...)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value >= 0 and value != float("inf"):
        return int(value)
    return None


_USAGE_FIELDS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens")


def _usage_fields(usage: Any) -> dict[str, int]:
    """The valid counts of one Anthropic usage object (a ``message_start`` or ``message_delta`` one)."""
    out: dict[str, int] = {}
    if usage is None:
        return out
    for name in _USAGE_FIELDS:
        n = _tokens(first_field(usage, name))
        if n is not None:
            out[name] = n
    creation = first_field(usage, "cache_creation")
    for name in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"):
        n = _tokens(first_field(creation, name))
        if n is not None:
            out[name] = n
    thinking = _tokens(first_field(first_field(usage, "output_tokens_details"), "thinking_tokens"))
    if thinking is not None:
        out["thinking_tokens"] = thinking
    return out


def _content_enabled() -> bool:
    from costtrace import content

    return content.settings().enabled


def _prompt(req: _Request) -> Any:
    """The request's prompt for content capture and input estimates; a one-shot iterable is not read."""
    parts: list[Any] = []
    if req.system:
        parts.append({"role": "system", "content": req.system})
    if isinstance(req.messages, (list, tuple)):
        parts.extend(req.messages)
    return parts


def _dump(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return value


def _record_message(call: LLMCall, req: _Request, message: Any) -> None:
    call.record_response(message)
    if _content_enabled():
        content = first_field(message, "content")
        output = [_dump(block) for block in content] if isinstance(content, (list, tuple)) else content
        call.capture_content(input=_prompt(req), output=output)


def _record_raw_body(call: LLMCall, req: _Request, raw: Any) -> None:
    """A ``with_raw_response`` non-stream reply: its body is already read; read usage from its JSON."""
    try:
        body = raw.http_response.json()
    except ValueError:
        body = None  # not JSON: no usage (unknown), and not costtrace's error
    if isinstance(body, Mapping):
        _record_message(call, req, body)


# --- streams -------------------------------------------------------------------------------------------


_DELTA_TEXT_FIELD: dict[Any, str | None] = {
    "text_delta": "text",
    "thinking_delta": "thinking",
    "input_json_delta": "partial_json",
    "signature_delta": None,
    "citations_delta": None,
}
"""The text field of each ``content_block_delta`` type (None: it carries none); others are searched."""


class _StreamUsage:
    """Reads a Messages stream's events (the raw ``RawMessageStreamEvent`` objects) for usage.

    ``message_start`` gives the input usage; each ``message_delta`` gives cumulative counts, so each
    field's last valid value wins and nothing is summed. Text deltas are kept only to estimate output
    tokens when the stream ends before any ``message_delta`` (or for opt-in content capture).
    """

    __slots__ = (
        "cumulative",
        "delta_output",
        "events",
        "id",
        "model",
        "req",
        "start",
        "stop_reason",
        "stopped",
        "text",
    )

    def __init__(self, req: _Request) -> None:
        self.req = req
        self.events = 0
        self.stopped = False
        self.start: dict[str, int] = {}
        self.cumulative: dict[str, int] = {}
        self.delta_output: int | None = None
        self.model: Any = None
        self.id: Any = None
        self.stop_reason: Any = None
        self.text: list[str] = []

    def on_item(self, item: Any) -> bool:
        self.events += 1
        # SDK event objects first (the hot path: one attribute read each); a dict event reads as before.
        kind = getattr(item, "type", None)
        if kind is None:
            kind = first_field(item, "type")
        if kind == "content_block_delta":
            delta = getattr(item, "delta", None)
            if delta is None:
                delta = first_field(item, "delta")
            # The field the delta's type names is read alone: a missing attribute costs a pydantic
            # model several µs (its __getattr__ raises), so no field is tried that the type has not.
            delta_type = getattr(delta, "type", None)
            field = _DELTA_TEXT_FIELD.get(delta_type, "") if isinstance(delta_type, str) else ""
            if field is None:
                return False  # a signature or citations delta: no text
            if field:
                piece = getattr(delta, field, None)
                if isinstance(piece, str):
                    self.text.append(piece)
                    return False
            for name in ("text", "thinking", "partial_json"):
                piece = first_field(delta, name)
                if isinstance(piece, str):
                    self.text.append(piece)
                    break
        elif kind == "message_start":
            message = first_field(item, "message")
            self.model = first_field(message, "model") or self.model
            self.id = first_field(message, "id") or self.id
            self.start = _usage_fields(first_field(message, "usage"))
        elif kind == "message_delta":
            fields = _usage_fields(first_field(item, "usage"))
            self.cumulative.update(fields)
            if "output_tokens" in fields:
                self.delta_output = fields["output_tokens"]
            stop = first_field(first_field(item, "delta"), "stop_reason")
            if stop is not None:
                self.stop_reason = stop
        elif kind == "message_stop":
            self.stopped = True
        return False

    def finish(self, call: LLMCall, complete: bool) -> None:
        req = self.req
        if self.events == 0:
            return  # nothing arrived: tokens unknown (flagged), never a made-up zero
        fields = {**self.start, **self.cumulative}
        estimated: set[str] = set()
        model = self.model if isinstance(self.model, str) and self.model else req.model
        base_input: int | None = fields.get("input_tokens")
        if base_input is None:
            from costtrace.price.tokens import count_tokens

            counted = count_tokens(_prompt(req), model)
            base_input = int(counted)
            estimated.add(counted.source)
        output = self.delta_output
        if output is None:
            from costtrace.price.tokens import count_tokens

            counted = count_tokens("".join(self.text), model)
            # message_start's own output count is the provider's running figure: a floor for the estimate
            output = max(int(counted), self.start.get("output_tokens", 0))
            estimated.add(counted.source)
        usage: dict[str, Any] = {"input_tokens": base_input, "output_tokens": output}
        for name in ("cache_read_input_tokens", "cache_creation_input_tokens"):
            if name in fields:
                usage[name] = fields[name]
        creation = {k: fields[k] for k in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens") if k in fields}
        if creation:
            usage["cache_creation"] = creation
        if "thinking_tokens" in fields:
            usage["output_tokens_details"] = {"thinking_tokens": fields["thinking_tokens"]}
        message: dict[str, Any] = {"type": "message", "model": model, "usage": usage}
        if isinstance(self.id, str):
            message["id"] = self.id
        if isinstance(self.stop_reason, str):
            message["stop_reason"] = self.stop_reason
        call.record_response(message)  # one normalisation path: costtrace.usage
        if estimated:
            u = call.usage
            if u is not None:
                source: UsageSource = "heuristic" if "heuristic" in estimated else "estimated"
                call.set_usage_source(source)
        if _content_enabled():
            call.capture_content(input=_prompt(req), output="".join(self.text))


class _SyncStream(SyncStreamProxy):
    """The SDK's ``Stream``, unchanged for the user. The call is complete only if ``message_stop`` came:
    a stream the server cut short ends like a normal one, but is flagged incomplete."""

    def _self_end(self, exc: BaseException | None, complete: bool) -> None:
        stopped = bool(getattr(self._self_acc, "stopped", False))
        # Once message_stop arrived the LLM call succeeded, whatever the app's code raised afterwards.
        super()._self_end(None if stopped else exc, stopped)


class _AsyncStream(AsyncStreamProxy):
    """The async twin of :class:`_SyncStream`."""

    def _self_end(self, exc: BaseException | None, complete: bool) -> None:
        stopped = bool(getattr(self._self_acc, "stopped", False))
        super()._self_end(None if stopped else exc, stopped)


def _wrap_stream(stream: Any, call: LLMCall, req: _Request) -> Any:
    """The proxy for an SDK stream, or None when ``stream`` is not one (or is already ours)."""
    if isinstance(stream, (_SyncStream, _AsyncStream)):
        return None
    if isinstance(stream, _State.sync_streams):
        return _SyncStream(stream, call, _StreamUsage(req))
    if isinstance(stream, _State.async_streams):
        return _AsyncStream(stream, call, _StreamUsage(req))
    return None


def _instancecheck(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``isinstance(x, anthropic.Stream)`` in anthropic < 1.0, whose stream metaclass answers False for
    anything but its own exact type: a costtrace stream proxy answers like the stream it wraps."""
    obj = args[0] if args else None
    if isinstance(obj, (_SyncStream, _AsyncStream)):
        return isinstance(obj.__wrapped__, instance)
    return wrapped(*args, **kwargs)


def _end_stream(proxy: Any, exc: BaseException | None) -> None:
    proxy._self_end(exc, False)


# --- raw responses ---------------------------------------------------------------------------------------


class _RawResponseBase(_ObjectProxy):  # type: ignore[misc]
    """A raw response whose body is a stream (or not yet read): the call ends when ``.parse()`` gives the
    stream (then the stream proxy owns the call) or the message, on ``close()``, or at garbage collection."""

    def __init__(self, wrapped: Any, call: LLMCall, req: _Request) -> None:
        super().__init__(wrapped)
        self._self_call = call
        self._self_req = req
        self._self_stream: Any = None
        self._self_done = False

    def _self_observe(self, parsed: Any) -> Any:
        if self._self_stream is not None and self._self_stream.__wrapped__ is parsed:
            return self._self_stream  # the SDK caches what parse() returns; so do we
        if self._self_done:
            return parsed
        proxy = safely("instrumentation.anthropic.raw.stream", _wrap_stream, parsed, self._self_call, self._self_req)
        self._self_done = True
        if proxy is not None:
            self._self_stream = proxy
            return proxy
        safely("instrumentation.anthropic.raw.parse", _record_message, self._self_call, self._self_req, parsed)
        self._self_call.end()
        return parsed

    def _self_end(self) -> None:
        if self._self_stream is not None:
            safely("instrumentation.anthropic.raw.close", _end_stream, self._self_stream, None)
        if not self._self_done:
            self._self_done = True
            safely("instrumentation.anthropic.raw.incomplete", _flag_incomplete, self._self_call)
            self._self_call.end()

    def __del__(self) -> None:
        if not getattr(self, "_self_done", True):
            safely("instrumentation.anthropic.raw.gc", self._self_end)


def _flag_incomplete(call: LLMCall) -> None:
    call.set_attribute(sc.CALL_INCOMPLETE, True)


class _SyncRawResponse(_RawResponseBase):
    def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_observe(self.__wrapped__.parse(*args, **kwargs))

    def close(self) -> Any:
        try:
            return self.__wrapped__.close()
        finally:
            self._self_end()


class _AsyncRawResponse(_RawResponseBase):
    async def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_observe(await self.__wrapped__.parse(*args, **kwargs))

    async def close(self) -> Any:
        try:
            return await self.__wrapped__.close()
        finally:
            self._self_end()


def _is_raw_response(result: Any) -> bool:
    return hasattr(result, "http_response") and callable(getattr(result, "parse", None))


# --- what a call returned ----------------------------------------------------------------------------------


def _observe(call: LLMCall, req: _Request, result: Any) -> Any:
    """What to hand back to the user for ``result``; ends the call unless a proxy now owns it."""
    proxy = _wrap_stream(result, call, req)
    if proxy is not None:
        return proxy
    if _is_raw_response(result):
        if req.stream or req.raw_mode == "stream":
            cls = _AsyncRawResponse if inspect.iscoroutinefunction(result.parse) else _SyncRawResponse
            return cls(result, call, req)
        _record_raw_body(call, req, result)
    else:
        _record_message(call, req, result)
    call.end()
    return result


_FAILED = object()


def _returned(call: LLMCall, req: _Request, result: Any) -> Any:
    out = safely("instrumentation.anthropic.result", _observe, call, req, result, default=_FAILED)
    if out is _FAILED:
        call.end()  # idempotent: whatever was recorded, the span never leaks
        return result
    return out


def _create(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Messages.create`` / ``Messages.parse`` (sync)."""
    outer = current_call()
    if not _State.active or passes_through(outer):
        return wrapped(*args, **kwargs)
    req = safely("instrumentation.anthropic.request", _request, instance, kwargs, stream=kwargs.get("stream") is True)
    call = safely("instrumentation.anthropic.start", _start, req, outer=outer) if req is not None else None
    if call is None:
        return wrapped(*args, **kwargs)
    kwargs = _send_kwargs(call, req, kwargs)
    scope = safely("instrumentation.anthropic.scope", _enter_scope, call)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        _leave_scope(scope)
        end_failed(call, exc, _State.api_errors)  # e.g. "Streaming is required": refused, not a call
        raise
    _leave_scope(scope)
    return _returned(call, req, result)


def _acreate(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``AsyncMessages.create`` / ``AsyncMessages.parse``: returns the coroutine the SDK's would."""
    if not _State.active:
        return wrapped(*args, **kwargs)
    return _acreate_call(wrapped, instance, args, kwargs)


async def _acreate_call(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    outer = current_call()
    if passes_through(outer):
        return await wrapped(*args, **kwargs)
    req = safely("instrumentation.anthropic.request", _request, instance, kwargs, stream=kwargs.get("stream") is True)
    call = safely("instrumentation.anthropic.start", _start, req, outer=outer) if req is not None else None
    if call is None:
        return await wrapped(*args, **kwargs)
    kwargs = _send_kwargs(call, req, kwargs)
    scope = safely("instrumentation.anthropic.scope", _enter_scope, call)
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        _leave_scope(scope)
        end_failed(call, exc, _State.api_errors)
        raise
    _leave_scope(scope)
    return _returned(call, req, result)


# --- messages.stream(...) ------------------------------------------------------------------------------------


def _observe_message_stream(stream: Any, call: LLMCall, req: _Request) -> Any:
    """Read the events under a ``MessageStream``: every way of consuming it (iteration, ``text_stream``,
    ``get_final_message()``, ``until_done()``) pulls them from its ``_raw_stream``, which is swapped for a
    proxy before the user gets the stream (its iterator has not started yet). Returns the proxy, or None
    when this SDK's ``MessageStream`` has no such attribute."""
    raw = getattr(stream, "_raw_stream", None)
    proxy = _wrap_stream(raw, call, req)
    if proxy is not None:
        stream._raw_stream = proxy
    return proxy


def _finish_from_snapshot(stream: Any, call: LLMCall, req: _Request, exc: BaseException | None) -> None:
    """Fallback for a ``MessageStream`` costtrace cannot observe: the SDK's own snapshot at exit."""
    try:
        snapshot = stream.current_message_snapshot
    except Exception:
        snapshot = None  # nothing streamed yet: usage unknown
    done = snapshot is not None and first_field(snapshot, "stop_reason") is not None
    if snapshot is not None:
        _record_message(call, req, snapshot)
    if not done:
        _flag_incomplete(call)
    call.end(None if done else exc)


class _ManagerBase(_ObjectProxy):  # type: ignore[misc]
    def __init__(self, wrapped: Any, req: _Request) -> None:
        super().__init__(wrapped)
        self._self_req = req
        self._self_call: LLMCall | None = None
        self._self_proxy: Any = None
        self._self_stream: Any = None

    def _self_entered(self, call: LLMCall, stream: Any) -> None:
        self._self_stream = stream
        self._self_proxy = _observe_message_stream(stream, call, self._self_req)

    def _self_exit(self, exc: BaseException | None) -> None:
        call = self._self_call
        if call is None:
            return
        self._self_call = None
        if self._self_proxy is not None:
            _end_stream(self._self_proxy, exc)
        else:
            _finish_from_snapshot(self._self_stream, call, self._self_req, exc)


class _SyncManager(_ManagerBase):
    """``MessageStreamManager``, unchanged for the user; ``__enter__`` sends the request, so the call starts there."""

    def __enter__(self) -> Any:
        outer = current_call()
        if not _State.active or passes_through(outer):
            return self.__wrapped__.__enter__()
        call = safely("instrumentation.anthropic.start", _start, self._self_req, downgradable=False, outer=outer)
        if call is None:
            return self.__wrapped__.__enter__()
        scope = safely("instrumentation.anthropic.scope", _enter_scope, call)
        try:
            stream = self.__wrapped__.__enter__()
        except BaseException as exc:
            _leave_scope(scope)
            end_failed(call, exc, _State.api_errors)
            raise
        _leave_scope(scope)
        self._self_call = call
        safely("instrumentation.anthropic.stream", self._self_entered, call, stream)
        return stream

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        if exc is not None:  # before the SDK closes the stream, which would end the call as a plain close
            safely("instrumentation.anthropic.stream.exit", self._self_exit, exc)
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            safely("instrumentation.anthropic.stream.exit", self._self_exit, None)


class _AsyncManager(_ManagerBase):
    """``AsyncMessageStreamManager``, unchanged for the user; the request is awaited in ``__aenter__``."""

    async def __aenter__(self) -> Any:
        outer = current_call()
        if not _State.active or passes_through(outer):
            return await self.__wrapped__.__aenter__()
        call = safely("instrumentation.anthropic.start", _start, self._self_req, downgradable=False, outer=outer)
        if call is None:
            return await self.__wrapped__.__aenter__()
        scope = safely("instrumentation.anthropic.scope", _enter_scope, call)
        try:
            stream = await self.__wrapped__.__aenter__()
        except BaseException as exc:
            _leave_scope(scope)
            end_failed(call, exc, _State.api_errors)
            raise
        _leave_scope(scope)
        self._self_call = call
        safely("instrumentation.anthropic.stream", self._self_entered, call, stream)
        return stream

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        if exc is not None:
            safely("instrumentation.anthropic.stream.exit", self._self_exit, exc)
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            safely("instrumentation.anthropic.stream.exit", self._self_exit, None)


def _make_stream(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Messages.stream`` / ``AsyncMessages.stream``: nothing is sent yet; the manager is wrapped."""
    manager = wrapped(*args, **kwargs)
    if not _State.active or passes_through(current_call()):
        return manager
    req = safely("instrumentation.anthropic.request", _request, instance, kwargs, stream=True)
    if req is None:
        return manager
    cls = _AsyncManager if hasattr(manager, "__aenter__") else _SyncManager
    return safely("instrumentation.anthropic.manager", cls, manager, req, default=manager)


# --- the SDK's own retries ------------------------------------------------------------------------------------


def _record_retry(call: LLMCall, status: int | None, connection_error: bool) -> None:
    # Pre-0.50 SDKs may not tell the status: an HTTP error of unknown status reads "http_error".
    reason = resend_reason(status) if status is not None or connection_error else "http_error"
    call.record_resend(reason)


def _on_sleep_for_retry(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``_sleep_for_retry(*, retries_taken, max_retries, options, response)`` (SDK >= 0.50): runs once
    before each re-send, with the failed response (None for a connection error or a timeout). The re-send
    is counted on the current call: this instrumentation's, or the manual ``llm_call`` it fills."""
    call = current_call()
    if call is not None and _State.active:
        response = kwargs.get("response")
        status = getattr(response, "status_code", None)
        safely(
            "instrumentation.anthropic.retry",
            _record_retry,
            call,
            status if isinstance(status, int) else None,
            response is None,
        )
    return wrapped(*args, **kwargs)


def _on_retry_request(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``_retry_request(options, cast_to, *, retries_taken, response_headers, ...)`` (SDK < 0.50): sleeps,
    then re-sends. It gets no status, so :func:`_on_should_retry` remembers the last one."""
    scope = _SCOPE.get()
    if scope is not None and _State.active:
        no_response = kwargs.get("response_headers") is None
        safely(
            "instrumentation.anthropic.retry",
            _record_retry,
            scope.call,
            None if no_response else scope.last_status,
            no_response,
        )
    return wrapped(*args, **kwargs)


def _on_should_retry(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = wrapped(*args, **kwargs)
    scope = _SCOPE.get()
    if scope is not None:
        response = args[0] if args else kwargs.get("response")
        status = getattr(response, "status_code", None)
        scope.last_status = status if isinstance(status, int) else None
    return result


# --- the instrumentor -----------------------------------------------------------------------------------------


class AnthropicInstrumentor(CosttraceInstrumentor):
    """Instruments the ``anthropic`` SDK (Anthropic API, and Claude on Bedrock / Vertex AI clients).

    Example:
        >>> from costtrace.instrumentation.anthropic import AnthropicInstrumentor   # doctest: +SKIP
        >>> AnthropicInstrumentor().instrument()                                  # doctest: +SKIP
    """

    _instruments = ("anthropic >= 0.40, < 3",)

    def targets(self) -> list[tuple[str, str, Callable[..., Any]]]:
        from anthropic import _base_client

        found: list[tuple[str, str, Callable[..., Any]]] = []
        for module in (_MESSAGES, _BETA_MESSAGES):
            found += [
                (module, "Messages.create", _create),
                (module, "AsyncMessages.create", _acreate),
                (module, "Messages.parse", _create),
                (module, "AsyncMessages.parse", _acreate),
                (module, "Messages.stream", _make_stream),
                (module, "AsyncMessages.stream", _make_stream),
            ]
        # anthropic < 1.0: Stream's metaclass overrides isinstance(); patched so that proxies pass it.
        found += [
            ("anthropic._streaming", "_SyncStreamMeta.__instancecheck__", _instancecheck),
            ("anthropic._streaming", "_AsyncStreamMeta.__instancecheck__", _instancecheck),
        ]
        if hasattr(_base_client.SyncAPIClient, "_sleep_for_retry"):
            found += [
                (_BASE_CLIENT, "SyncAPIClient._sleep_for_retry", _on_sleep_for_retry),
                (_BASE_CLIENT, "AsyncAPIClient._sleep_for_retry", _on_sleep_for_retry),
            ]
        else:
            found += [
                (_BASE_CLIENT, "SyncAPIClient._retry_request", _on_retry_request),
                (_BASE_CLIENT, "AsyncAPIClient._retry_request", _on_retry_request),
                (_BASE_CLIENT, "BaseClient._should_retry", _on_should_retry),
            ]
        return found

    def _instrument(self, **kwargs: Any) -> None:
        import anthropic

        _State.sync_streams = (anthropic.Stream,)
        _State.async_streams = (anthropic.AsyncStream,)
        _State.api_errors = (anthropic.APIError,)
        super()._instrument(**kwargs)
        _State.active = True

    def _uninstrument(self, **kwargs: Any) -> None:
        _State.active = False
        super()._uninstrument(**kwargs)
