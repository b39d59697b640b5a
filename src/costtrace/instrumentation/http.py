"""HTTP-level instrumentation of ``httpx`` and ``httpx2``: no LLM request inside a task goes unseen.

    costtrace.instrument()          # on by default when httpx or httpx2 is installed
    costtrace.instrument("http")    # just this one

``Client.send`` and ``AsyncClient.send`` of both libraries are wrapped (openai 3.x and anthropic 2.x
send through ``httpx2``; LiteLLM and google-genai through ``httpx``). For each request the wrapper
first checks the method and the URL path (a POST to a known LLM API path); any other request goes
straight through, with nothing else done. For an LLM request:

- while an instrumented SDK call (or a manual ``llm_call``) is current, the request is counted on
  that call (``LLMCall.requests_sent``) and nothing else: the SDK instrumentation records it;
- inside a task with no call current, no instrumentation saw it: the request is recorded as an LLM
  call from the HTTP exchange (see docs/instrumentation-http.md);
- outside a task, nothing is done.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from costtrace import semconv as sc
from costtrace.calls import LLMCall, activate, current_call, deactivate
from costtrace.instrumentation._base import CosttraceInstrumentor, safely
from costtrace.instrumentation._bodytap import BodyReader, SSEReader, make_reader, read_whole, tap_response
from costtrace.instrumentation._providers import provider_for_host
from costtrace.tasks import current_task

logger = logging.getLogger("costtrace")

__all__ = ["HTTPInstrumentor", "llm_api_kind"]

# Path endings of the LLM APIs costtrace knows, checked on every POST: (suffix, kind).
_OPENAI_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("/chat/completions", "chat"),
    ("/responses", "responses"),
    ("/completions", "completions"),
    ("/embeddings", "embeddings"),
    ("/messages", "anthropic"),
)
_PATH_ENDS = (*(s for s, _ in _OPENAI_SUFFIXES), ":generateContent", ":streamGenerateContent")


def llm_api_kind(path: str) -> str | None:
    """The LLM API a request path calls (``chat``, ``responses``, ``completions``, ``embeddings``,
    ``anthropic``, ``gemini``), or None for any other path.

    Example:
        >>> llm_api_kind("/v1/chat/completions"), llm_api_kind("/v1beta/models/gemini-2.5-flash:generateContent")
        ('chat', 'gemini')
        >>> llm_api_kind("/v1/files") is None, llm_api_kind("/v1/threads/thread_1/messages") is None
        (True, True)
    """
    if not path.endswith(_PATH_ENDS):
        return None
    if path.endswith("Content"):
        return "gemini"
    for suffix, kind in _OPENAI_SUFFIXES:
        if path.endswith(suffix):
            if kind == "anthropic" and "/threads/" in path:
                return None  # OpenAI Assistants: adding a message to a thread is not an LLM call
            return kind
    return None  # pragma: no cover - _PATH_ENDS holds exactly these suffixes


def _llm_request(request: Any) -> bool:
    """The cheap first check, run on every request: a POST to a known LLM API path."""
    return bool(request.method == "POST" and request.url.path.endswith(_PATH_ENDS))


def _request_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs.get("request")


def _count_request(request: Any) -> bool:
    """Count an LLM request on the current call; True when one is current (it records the request)."""
    call = current_call()
    if call is None:
        return False
    call.requests_sent += 1
    return True


# --- recording a request no instrumentation saw ---------------------------------------------------------

_OPERATIONS = {
    "chat": "chat",
    "responses": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "anthropic": "chat",
    "gemini": "generate_content",
}
_DEFAULT_PROVIDERS = {"anthropic": "anthropic", "gemini": "gcp.gemini"}
_DEFAULT_PORTS = {"https": 443, "http": 80}


class _Exchange:
    """One LLM request recorded from HTTP: its call and which API it spoke."""

    __slots__ = ("api", "call", "usage_not_asked")

    def __init__(self, call: LLMCall, api: str, usage_not_asked: bool) -> None:
        self.call = call
        self.api = api
        self.usage_not_asked = usage_not_asked
        """A chat stream whose request did not ask for usage: the server sends none."""


def _request_json(request: Any) -> dict[str, Any] | None:
    try:
        content = request.content  # raises when the request body is a stream not yet read
    except Exception:
        return None
    if not content or not content.lstrip().startswith(b"{"):
        return None
    try:
        body = json.loads(content)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _gemini_model(path: str) -> str:
    """``/v1beta/models/gemini-2.5-flash:generateContent`` -> ``gemini-2.5-flash`` (Vertex paths too)."""
    _, _, tail = path.rpartition("/models/")
    return tail.partition(":")[0]


def _begin(request: Any) -> _Exchange | None:
    """Start the call for an LLM request sent inside a task while no call is current; None otherwise."""
    if current_task() is None:
        return None
    url = request.url
    path = url.path
    api = llm_api_kind(path)
    if api is None:
        return None
    body = _request_json(request) or {}
    if api != "gemini" and not isinstance(body.get("model"), str):
        # Every LLM API of these shapes names its model in a JSON body: a POST to some other service's
        # ``/messages`` or ``/completions`` path is not an LLM call, and is left alone.
        return None
    host = url.host or None
    port = url.port or _DEFAULT_PORTS.get(url.scheme)
    provider = provider_for_host(host, _DEFAULT_PROVIDERS.get(api, "openai"))
    if api == "gemini":
        model = _gemini_model(path)
        stream = path.endswith(":streamGenerateContent")
        request_input: Any = body.get("contents")
    else:
        raw_model = body.get("model")
        model = raw_model if isinstance(raw_model, str) else ""
        stream = body.get("stream") is True
        request_input = body.get("messages") if api in ("chat", "anthropic") else body.get("input")
        if api == "completions":
            request_input = body.get("prompt")
    call = LLMCall(
        provider,
        model,
        _OPERATIONS[api],
        server_address=host,
        server_port=port,
        stream=stream,
        attributes={sc.CALL_RECORDED_FROM: "http"},
        input=request_input if isinstance(request_input, (str, list)) else None,
    )
    call.downgradable = False  # the request is already built: its model cannot change
    call.start()  # may raise BudgetExceeded: nothing has been sent
    call.requests_sent = 1
    options = body.get("stream_options")
    asked = isinstance(options, dict) and bool(options.get("include_usage"))
    return _Exchange(call, api, api in ("chat", "completions") and stream and not asked)


def _enter(ex: _Exchange) -> tuple[object, object]:
    """Make the call current (so nothing below records it again) and its span the parent of httpx spans."""
    return activate(ex.call), otel_context.attach(trace.set_span_in_context(ex.call.span))


def _leave(tokens: tuple[object, object] | None) -> None:
    if tokens is None:
        return
    call_token, ctx_token = tokens
    deactivate(call_token)  # type: ignore[arg-type]
    otel_context.detach(ctx_token)  # type: ignore[arg-type]


def _unknown_reason(ex: _Exchange, reader: BodyReader, complete: bool) -> str:
    if not reader.bytes_read:
        return "usage unknown: the response body was never read"
    if reader.problem is not None:
        return reader.problem
    if isinstance(reader, SSEReader) and ex.usage_not_asked:
        return "usage unknown: the stream carried no usage (the request did not set stream_options.include_usage)"
    if not complete:
        return "usage unknown: the response body was not read to its end"
    return "usage unknown: the response carried no token usage"


def _finish(ex: _Exchange, reader: BodyReader, exc: BaseException | None, complete: bool) -> None:
    call = ex.call
    try:
        body = reader.body()
        if body is not None:
            call.record_response(body)
        if call.usage is None:
            call.set_usage_unknown(_unknown_reason(ex, reader, complete))
        if not (complete and reader.complete):
            call.set_attribute(sc.CALL_INCOMPLETE, True)
    finally:
        call.end(exc)


def _on_end(ex: _Exchange) -> Any:
    def on_end(reader: BodyReader, exc: BaseException | None, complete: bool) -> None:
        _finish(ex, reader, exc, complete)

    return on_end


def _on_response(ex: _Exchange, response: Any) -> None:
    call = ex.call
    status = response.status_code
    if status >= 400:
        # An error reply is a failed attempt: not billed, its usage unknown (like the SDK instrumentations).
        call.set_error(str(status))
        call.end()
        return
    reader = make_reader(ex.api, response)
    if hasattr(response, "_content"):  # read by send() already
        read_whole(reader, response.content)
        _finish(ex, reader, None, True)
        return
    if not tap_response(response, reader, _on_end(ex)):
        _finish(ex, reader, None, False)  # a body costtrace cannot tap: usage unknown, flagged


def _failed(ex: _Exchange, exc: BaseException) -> None:
    ex.call.end(exc)


_FAILED = object()


def _send(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    request = _request_of(args, kwargs)
    if not safely("instrumentation.http.check", _llm_request, request, default=False):
        return wrapped(*args, **kwargs)
    if safely("instrumentation.http.count", _count_request, request, default=True):
        return wrapped(*args, **kwargs)
    ex = safely("instrumentation.http.start", _begin, request)
    if ex is None:
        return wrapped(*args, **kwargs)
    tokens = safely("instrumentation.http.enter", _enter, ex)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as exc:
        safely("instrumentation.http.leave", _leave, tokens)
        safely("instrumentation.http.error", _failed, ex, exc)
        raise
    safely("instrumentation.http.leave", _leave, tokens)
    if safely("instrumentation.http.response", _on_response, ex, response, default=_FAILED) is _FAILED:
        ex.call.end()  # idempotent: the span never leaks
    return response


async def _async_send(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    request = _request_of(args, kwargs)
    if not safely("instrumentation.http.check", _llm_request, request, default=False):
        return await wrapped(*args, **kwargs)
    if safely("instrumentation.http.count", _count_request, request, default=True):
        return await wrapped(*args, **kwargs)
    ex = safely("instrumentation.http.start", _begin, request)
    if ex is None:
        return await wrapped(*args, **kwargs)
    tokens = safely("instrumentation.http.enter", _enter, ex)
    try:
        response = await wrapped(*args, **kwargs)
    except BaseException as exc:
        safely("instrumentation.http.leave", _leave, tokens)
        safely("instrumentation.http.error", _failed, ex, exc)
        raise
    safely("instrumentation.http.leave", _leave, tokens)
    if safely("instrumentation.http.response", _on_response, ex, response, default=_FAILED) is _FAILED:
        ex.call.end()
    return response


_LIBRARIES = ("httpx", "httpx2")


def installed_libraries() -> list[str]:
    """The HTTP client libraries this instrumentation patches that are importable here."""
    found = []
    for name in _LIBRARIES:
        try:
            if importlib.util.find_spec(name) is not None:
                found.append(name)
        except (ImportError, ValueError):
            continue
    return found


class HTTPInstrumentor(CosttraceInstrumentor):
    """Instruments ``httpx`` and ``httpx2`` (whichever are installed): see the module docstring.

    Example:
        >>> from costtrace.instrumentation.http import HTTPInstrumentor   # doctest: +SKIP
        >>> HTTPInstrumentor().instrument()                               # doctest: +SKIP
    """

    # No version requirement: a library that is absent is skipped in targets().
    _instruments: tuple[str, ...] = ()

    def targets(self) -> list[tuple[str, str, Callable[..., Any]]]:
        found: list[tuple[str, str, Callable[..., Any]]] = []
        for lib in installed_libraries():
            found.append((lib, "Client.send", _send))
            found.append((lib, "AsyncClient.send", _async_send))
        return found
