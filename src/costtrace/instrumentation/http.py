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
import logging
from collections.abc import Callable
from typing import Any

from costtrace.calls import current_call
from costtrace.instrumentation._base import CosttraceInstrumentor, safely

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
        >>> llm_api_kind("/v1/files") is None
        True
    """
    if not path.endswith(_PATH_ENDS):
        return None
    if path.endswith(("Content",)):
        return "gemini"
    for suffix, kind in _OPENAI_SUFFIXES:
        if path.endswith(suffix):
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


def _send(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    request = _request_of(args, kwargs)
    if not safely("instrumentation.http.check", _llm_request, request, default=False):
        return wrapped(*args, **kwargs)
    safely("instrumentation.http.count", _count_request, request)
    return wrapped(*args, **kwargs)


async def _async_send(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    request = _request_of(args, kwargs)
    if not safely("instrumentation.http.check", _llm_request, request, default=False):
        return await wrapped(*args, **kwargs)
    safely("instrumentation.http.count", _count_request, request)
    return await wrapped(*args, **kwargs)


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
