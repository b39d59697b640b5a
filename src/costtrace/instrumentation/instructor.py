"""instructor instrumentation: each re-ask after a validation error is a retry of the current task.

    costtrace.instrument()                  # or costtrace.instrument("instructor")

instructor's calls themselves go through the provider SDK (``openai``, ``anthropic`` ...) and are
recorded by that SDK's instrumentation; this module adds what the SDK cannot see: that a call's output
failed ``response_model`` validation and instructor asked again (``max_retries``). Each re-ask closes
the failed attempt with ``Task.retry("validation_failed", details)``: ``retries`` counts it,
``first_pass`` is False, the failed call's cost is wasted, and the details are the validation errors
(``field: message``, bounded). See docs/instrumentation-instructor.md.

How. instructor's retry loop reports through its ``Hooks`` object (every client has one, also when
the user registered nothing): ``parse:error`` when the output fails, ``completion:kwargs`` before each
request, ``completion:last_attempt`` when it gives up. costtrace wraps those three emitters on the
``Hooks`` class, around the user's own handlers, which run unchanged and first:

- ``parse:error``: note the task and the attempt the failed call belongs to (before the user's
  handlers run);
- ``completion:kwargs``: if a failure is noted, this request is the re-ask: record the retry (after the
  user's handlers ran), unless the attempt was closed since (the user recorded the retry by hand, in a
  ``parse:error`` handler or elsewhere): then it is counted once;
- ``completion:last_attempt``: instructor gives up: forget the note. The last failure is no retry; the
  call raises ``InstructorRetryException`` and a task it escapes ends failed.

The note lives in a ContextVar: concurrent instructor calls (threads, asyncio tasks) do not see each
other's.

Streams (``create_partial``, ``stream=True``). instructor validates a streamed answer when its JSON is
complete and, if it fails, re-asks without reading the rest of the stream: the usage chunk that follows
is never read, and the stream is only dropped. costtrace ends that call at the ``parse:error`` (so it
lands in the failed attempt, before the retry), with the usage read so far plus an estimate of the
rest, flagged ``estimated`` and incomplete; the app's stream object is left as it is.
"""

from __future__ import annotations

import contextvars
import weakref
from collections.abc import Callable
from typing import Any

from costtrace.instrumentation._base import AsyncStreamProxy, CosttraceInstrumentor, SyncStreamProxy, safely
from costtrace.instrumentation._retries import FailedAttempt, describe_error, record_retry, snapshot

__all__ = ["InstructorInstrumentor"]

# Where instructor defines its Hooks class: the v2 core since 1.12-ish, re-exported by instructor.hooks.
_HOOKS_MODULES = ("instructor.v2.core.hooks", "instructor.core.hooks", "instructor.hooks")


class _Noted:
    __slots__ = ("details", "failed")

    def __init__(self, failed: FailedAttempt, details: str) -> None:
        self.failed = failed
        self.details = details


_NOTED: contextvars.ContextVar[_Noted | None] = contextvars.ContextVar("costtrace_instructor_failure", default=None)


def _note_failure(failed: FailedAttempt | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if failed is None:
        return
    error = args[0] if args else kwargs.get("error")
    details = describe_error(error) if isinstance(error, BaseException) else str(error)
    _NOTED.set(_Noted(failed, details))


_RESPONSE: contextvars.ContextVar[weakref.ref[Any] | None] = contextvars.ContextVar(
    "costtrace_instructor_response", default=None
)
"""The response of the last request instructor made in this context (weakly: never kept alive)."""


def _remember_response(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    response = args[0] if args else kwargs.get("response")
    _RESPONSE.set(weakref.ref(response) if isinstance(response, (SyncStreamProxy, AsyncStreamProxy)) else None)


def _on_completion_response(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    safely("instructor.completion_response", _remember_response, args, kwargs)
    return wrapped(*args, **kwargs)


def _end_dropped_stream() -> None:
    """The failed answer was a stream instructor stops reading: end its call now, in the failed attempt."""
    ref = _RESPONSE.get()
    _RESPONSE.set(None)
    stream = ref() if ref is not None else None
    if stream is not None:
        stream._self_end(None, False)


def _on_parse_error(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    safely("instructor.parse_error", _end_dropped_stream)
    failed = safely("instructor.parse_error", snapshot)
    result = wrapped(*args, **kwargs)
    safely("instructor.parse_error", _note_failure, failed, args, kwargs)
    return result


def _record_reask() -> None:
    noted = _NOTED.get()
    if noted is None:
        return
    _NOTED.set(None)
    record_retry(noted.failed, noted.details)


def _on_completion_kwargs(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    safely("instructor.completion_kwargs", _record_reask)
    return result


def _forget() -> None:
    _NOTED.set(None)


def _on_last_attempt(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    safely("instructor.last_attempt", _forget)
    return wrapped(*args, **kwargs)


class InstructorInstrumentor(CosttraceInstrumentor):
    """Turns instructor's validation re-asks into retries of the current costtrace task.

    Example:
        >>> from costtrace.instrumentation.instructor import InstructorInstrumentor   # doctest: +SKIP
        >>> InstructorInstrumentor().instrument()                                    # doctest: +SKIP
    """

    _instruments = ("instructor >= 1.17, < 2",)

    def targets(self) -> list[tuple[str, str, Callable[..., Any]]]:
        import importlib

        for module in _HOOKS_MODULES:
            try:
                hooks_module = importlib.import_module(module)
            except ImportError:
                continue
            if getattr(hooks_module, "Hooks", None) is not None and module == hooks_module.Hooks.__module__:
                return [
                    (module, "Hooks.emit_parse_error", _on_parse_error),
                    (module, "Hooks.emit_completion_arguments", _on_completion_kwargs),
                    (module, "Hooks.emit_completion_last_attempt", _on_last_attempt),
                    (module, "Hooks.emit_completion_response", _on_completion_response),
                ]
        return []
