"""pydantic-ai instrumentation: each re-ask after a validation failure or ``ModelRetry`` is a task retry.

    costtrace.instrument()                  # or costtrace.instrument("pydantic_ai")

pydantic-ai's model requests go through the provider SDKs (``openai``, ``anthropic``, ``google-genai``)
and are recorded by their instrumentations; this module adds what the SDKs cannot see: that a response
was rejected and the agent asked the model again. Each such re-ask closes the failed attempt with
``Task.retry("validation_failed", details)``: ``retries`` counts it, ``first_pass`` is False, the
rejected response's cost is wasted, and the details are the feedback pydantic-ai sent back (the
``ModelRetry`` message, or the validation errors as ``field: message``), bounded. See
docs/instrumentation-pydantic-ai.md.

What counts. A request pydantic-ai sends carrying retry feedback, which is every re-ask:

- ``RetryFeedbackPart`` (``retry-feedback``): the output failed validation against ``output_type``, an
  output validator or output function raised ``ModelRetry``, or the response had no usable output;
- a tool return with ``outcome='retried'``: a tool (the output tool too) raised ``ModelRetry``, its
  arguments failed validation, or the model called an unknown tool. These count too: the response that
  made the call is rejected and the model has to answer again. If that response also made other tool
  calls that succeeded, its cost is still counted wasted (an over-estimate: documented);
- the deprecated ``RetryPromptPart`` (``retry-prompt``), which older releases and old message
  histories use for both.

One request is one retry, however many retry parts it carries. A failure after which pydantic-ai gives
up (``UnexpectedModelBehavior``: output or tool retries exhausted) sends no request, so no retry is
recorded: the exception ends the task failed.

How. The agent graph sends each model request from a ``ModelRequestNode`` (``run`` or ``stream``);
costtrace wraps both, and before the request goes out looks at the parts it carries. The attempt of the
run's previous request is kept per run: the retry is recorded only if the task is still in that attempt,
so a retry the user recorded by hand (``current_task().retry(...)`` in an output validator before
raising ``ModelRetry``) is counted once.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from costtrace.instrumentation._base import CosttraceInstrumentor, safely
from costtrace.instrumentation._retries import FailedAttempt, describe_error_details, record_retry, snapshot

__all__ = ["PydanticAIInstrumentor"]

_GRAPH = "pydantic_ai._agent_graph"


class _WeakIdMap:
    """Values keyed by objects that cannot be hashed (pydantic-ai's nodes and run state are dataclasses),
    by identity, forgotten when the object is collected."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[weakref.ref[Any], Any]] = {}
        self._lock = threading.Lock()

    def get(self, obj: Any) -> Any:
        with self._lock:
            item = self._items.get(id(obj))
        if item is None or item[0]() is not obj:
            return None
        return item[1]

    def set(self, obj: Any, value: Any) -> None:
        key = id(obj)

        def forget(_: object, key: int = key) -> None:
            with self._lock:
                self._items.pop(key, None)

        ref = weakref.ref(obj, forget)
        with self._lock:
            self._items[key] = (ref, value)


_last_request = _WeakIdMap()
"""Per run (its graph state): the task attempt the run's last model request was sent in."""
_seen_nodes = _WeakIdMap()
"""Request nodes already looked at (``run()`` after ``stream()`` returns the streamed result)."""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return describe_error_details(content)
    return str(content)


def _retry_details(part: Any) -> str | None:
    """What a request part says about a retry, or None when it is no retry feedback."""
    kind = getattr(part, "part_kind", None)
    if kind == "tool-return":
        if getattr(part, "outcome", None) != "retried":
            return None
    elif kind != "retry-feedback" and kind != "retry-prompt":
        return None
    text = _content_text(getattr(part, "content", ""))
    tool = getattr(part, "tool_name", None)
    return f"tool {tool!r}: {text}" if tool else text


def _before_request(node: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if _seen_nodes.get(node) is not None:
        return
    _seen_nodes.set(node, True)
    ctx = args[0] if args else kwargs.get("ctx")
    state = getattr(ctx, "state", None)
    now = snapshot()
    if state is None or now is None:
        return
    previous: FailedAttempt | None = _last_request.get(state)
    request = getattr(node, "request", None)
    details = [d for d in map(_retry_details, getattr(request, "parts", ()) or ()) if d is not None]
    if details and previous is not None:
        record_retry(previous, "; ".join(details))
    _last_request.set(state, snapshot())


def _on_request_node(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    safely("pydantic_ai.request", _before_request, instance, args, kwargs)
    return wrapped(*args, **kwargs)


class PydanticAIInstrumentor(CosttraceInstrumentor):
    """Turns pydantic-ai's re-asks (validation failures, ``ModelRetry``) into retries of the current task.

    Example:
        >>> from costtrace.instrumentation.pydantic_ai import PydanticAIInstrumentor   # doctest: +SKIP
        >>> PydanticAIInstrumentor().instrument()                                    # doctest: +SKIP
    """

    _instruments = ("pydantic-ai-slim >= 2.66, < 3",)

    def targets(self) -> list[tuple[str, str, Callable[..., Any]]]:
        return [
            (_GRAPH, "ModelRequestNode.run", _on_request_node),
            (_GRAPH, "ModelRequestNode.stream", _on_request_node),
        ]
