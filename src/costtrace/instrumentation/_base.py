"""What every SDK instrumentation shares: the instrumentor base, guarded call start/end, stream proxies.

Rules each instrumentation follows (see docs/instrumentation.md):

- the user's call runs outside any guarded block: its return value and exceptions pass through
  untouched; everything costtrace does around it goes through :func:`safely` and never raises;
- one code path for spans, usage and cost: every call is a :class:`costtrace.calls.LLMCall`;
- streams are returned wrapped in :class:`SyncStreamProxy` / :class:`AsyncStreamProxy`, which keep
  every attribute and method of the SDK's stream (``close``, ``response``, context manager use ...)
  and end the call exactly once: at the stream's end, on an error, on ``close()``, on leaving a
  ``with`` block, or when an abandoned stream is garbage-collected.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from typing import Any, Protocol, TypeVar

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap

from costtrace import semconv as sc
from costtrace._internal import report_internal_error
from costtrace.calls import LLMCall
from costtrace.errors import BudgetExceeded

logger = logging.getLogger("costtrace")

_T = TypeVar("_T")
_ObjectProxy: Any = wrapt.ObjectProxy  # not subscripted: wrapt 1.x proxies are not generic at run time


def safely(where: str, fn: Callable[..., _T], *args: Any, default: Any = None, **kwargs: Any) -> Any:
    """Run costtrace's own ``fn``; an exception is reported as an internal error and ``default`` returned.

    :class:`costtrace.BudgetExceeded` passes through: a hard cap is blocking the call before it is sent.
    """
    try:
        return fn(*args, **kwargs)
    except BudgetExceeded:
        raise
    except Exception as exc:
        report_internal_error(where, exc)
        return default


def passes_through(outer: LLMCall | None) -> bool:
    """Whether an SDK wrapper must leave this request alone: another instrumentation's call is current
    (LiteLLM over the OpenAI SDK, a patched ``parse`` calling the patched ``create``), which records it.

    A manual ``with llm_call(...)`` block is not passed through: the request fills that call
    (``LLMCall.start(fill=outer)``), so the call is counted once.
    """
    return outer is not None and not outer.manual


def sends_counted() -> bool:
    """Whether the HTTP layer counts the LLM requests sent (``LLMCall.requests_sent``): it is on."""
    http = sys.modules.get("costtrace.instrumentation.http")
    if http is None:
        return False
    return bool(http.HTTPInstrumentor().is_instrumented_by_opentelemetry)


def end_failed(call: LLMCall, exc: BaseException, api_errors: tuple[type[BaseException], ...]) -> None:
    """The SDK method raised ``exc``: end ``call`` as a failed call, unless the SDK refused the request
    before sending anything, which is not a call at all (:meth:`LLMCall.end_unsent`).

    "Refused" needs all of: a ``ValueError`` or ``TypeError`` (the SDKs' client-side checks, e.g.
    Anthropic's "Streaming is required" for a large ``max_tokens``); not one of the SDK's API errors
    (``api_errors``: a reply or a connection failure); and no LLM request counted by the HTTP layer
    while the call was current, that layer being on. A pydantic ``ValidationError`` raised by
    ``parse`` after a reply arrived had its request counted: it stays a (billed) failed call. Without
    the HTTP layer nothing is known to be unsent, so every error is a failed call, as before.
    """
    if (
        call.requests_sent == 0
        and isinstance(exc, (ValueError, TypeError))
        and not isinstance(exc, api_errors)
        and sends_counted()
    ):
        call.end_unsent(exc)
    else:
        call.end(exc)


def resend_reason(status: int | None, exc: BaseException | None = None) -> str:
    """The reason recorded for an SDK re-send, the same words for every SDK (see docs/telemetry.md).

    ``rate_limit`` (429), ``overloaded`` (529), ``timeout`` (408, 504 or a timeout error),
    ``server_error`` (other 5xx), ``http_<status>`` (anything else), ``connection_error`` (no response).

    Example:
        >>> resend_reason(429), resend_reason(503), resend_reason(None, TimeoutError())
        ('rate_limit', 'server_error', 'timeout')
    """
    if isinstance(status, int) and not isinstance(status, bool):
        if status == 429:
            return "rate_limit"
        if status == 529:
            return "overloaded"
        if status in (408, 504):
            return "timeout"
        if status >= 500:
            return "server_error"
        return f"http_{status}"
    if exc is not None and "timeout" in type(exc).__name__.lower():
        return "timeout"
    return "connection_error"


class WrapTarget(Protocol):
    module: str
    name: str


class CosttraceInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Base of costtrace's SDK instrumentors.

    Subclasses set ``_instruments`` (the supported SDK versions, e.g. ``("openai >= 1.40, < 4",)``) and
    ``targets()``: ``(module, "Class.method", wrapper)`` triples. A target the installed SDK does not
    have (an older version) is skipped with a debug log; a version outside ``_instruments`` is not
    patched at all (one log line from OpenTelemetry's dependency check).
    """

    _instruments: tuple[str, ...] = ()

    def instrumentation_dependencies(self) -> Collection[str]:
        return self._instruments

    def targets(self) -> list[tuple[str, str, Callable[..., Any]]]:
        raise NotImplementedError

    def _instrument(self, **kwargs: Any) -> None:
        self._wrapped: list[tuple[str, str]] = []
        for module, name, wrapper in self.targets():
            try:
                wrapt.wrap_function_wrapper(module, name, wrapper)
            except (ImportError, AttributeError) as exc:
                logger.debug("costtrace: %s.%s not found, not instrumented (%s)", module, name, exc)
                continue
            self._wrapped.append((module, name))

    def _uninstrument(self, **kwargs: Any) -> None:
        import importlib

        for module, name in getattr(self, "_wrapped", []):
            owner_path, _, method = name.rpartition(".")
            obj: Any = importlib.import_module(module)
            for part in owner_path.split(".") if owner_path else ():
                obj = getattr(obj, part)
            unwrap(obj, method)
        self._wrapped = []


class StreamAccumulator(Protocol):
    """Provider-specific reading of a stream's items."""

    def on_item(self, item: Any) -> bool:
        """Read one item; return True to hide it from the user (an injected usage-only chunk)."""
        ...

    def finish(self, call: LLMCall, complete: bool) -> None:
        """Set the call's usage and response fields; ``complete`` is False for an early exit."""
        ...


def _finish_stream(call: LLMCall, acc: StreamAccumulator, exc: BaseException | None, complete: bool) -> None:
    safely("instrumentation.stream.finish", acc.finish, call, complete)
    if not complete:
        safely("instrumentation.stream.flag", call.set_attribute, sc.CALL_INCOMPLETE, True)
    call.end(exc)


def _item_failed(exc: Exception) -> bool:
    """An accumulator's ``on_item`` raised: reported as an internal error, the item is shown (as :func:`safely`)."""
    if isinstance(exc, BudgetExceeded):
        raise exc
    report_internal_error("instrumentation.stream.item", exc)
    return False


# The per-item path below is the hot one (every chunk of every stream), written to cost little:
#
# - a ``for`` loop over a proxied stream whose ``iter()`` gives a new iterator (OpenAI's and
#   Anthropic's ``Stream``) runs one generator, ``_self_items``: no method call per item;
# - a stream that is its own iterator (a generator, LiteLLM's wrapper) keeps ``iter(proxy) is proxy``
#   and runs ``__next__``, which reads one attribute of the proxy (``_self_reader``: the wrapped
#   iterator and the accumulator's ``on_item``), each costing ~80 ns through wrapt;
# - ``on_item`` is called in a try block (free when nothing raises), not through :func:`safely`.
#
# Both read the same wrapped iterator, so ``next()`` calls and ``for`` loops can be mixed as on the
# bare stream. The call ends exactly once (``_self_end``): at the end, on an error from the stream,
# on close / leaving ``with`` / garbage collection; never merely because a loop was left (``break``).


class SyncStreamProxy(_ObjectProxy):  # type: ignore[misc]
    """The SDK's stream, unchanged for the user, reporting its usage to ``call`` exactly once."""

    def __init__(self, wrapped: Any, call: LLMCall, accumulator: StreamAccumulator) -> None:
        super().__init__(wrapped)
        self._self_call = call
        self._self_acc = accumulator
        self._self_reader: tuple[Iterator[Any], Callable[[Any], bool]] | None = None
        self._self_done = False

    def _self_end(self, exc: BaseException | None, complete: bool) -> None:
        if self._self_done:
            return
        self._self_done = True
        _finish_stream(self._self_call, self._self_acc, exc, complete)

    def __iter__(self) -> Iterator[Any]:
        reader = self._self_reader
        wrapped = self.__wrapped__
        if reader is None:
            it = iter(wrapped)
            if it is wrapped:
                return self  # opened by the first __next__ (see _self_first)
            reader = self._self_reader = (it, self._self_acc.on_item)
        elif reader[0] is wrapped:
            return self
        return self._self_items(*reader)

    def _self_items(self, it: Iterator[Any], on_item: Callable[[Any], bool]) -> Iterator[Any]:
        """``__next__``'s loop as a generator: a ``for`` loop then takes one generator step per item
        instead of a call through the proxy. Kept alike with ``__next__`` (and the async twins)."""
        while True:
            try:
                item = next(it)
            except StopIteration:
                self._self_end(None, complete=True)
                return
            except BaseException as exc:
                self._self_end(exc, complete=False)
                raise
            try:
                hidden = on_item(item)
            except Exception as exc:
                hidden = _item_failed(exc)
            if not hidden:
                yield item

    def _self_first(self) -> Any:
        """The first ``next()`` of a stream not iterated yet: opens the wrapped iterator. A subclass may
        extend it, e.g. to make its call current while a generator sends its request."""
        self._self_reader = (iter(self.__wrapped__), self._self_acc.on_item)
        return self.__next__()

    def __next__(self) -> Any:
        reader = self._self_reader
        if reader is None:
            return self._self_first()
        it, on_item = reader
        while True:
            try:
                item = next(it)
            except StopIteration:
                self._self_end(None, complete=True)
                raise
            except BaseException as exc:
                self._self_end(exc, complete=False)
                raise
            try:
                hidden = on_item(item)
            except Exception as exc:
                hidden = _item_failed(exc)
            if not hidden:
                return item

    def close(self) -> Any:
        try:
            return self.__wrapped__.close()
        finally:
            self._self_end(None, complete=False)

    def __enter__(self) -> SyncStreamProxy:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        # An exception from the stream itself already ended the call in __next__; one raised by the
        # user's own code in the block is not the LLM call's failure: the call just ended early.
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            self._self_end(None, complete=False)

    def __del__(self) -> None:
        # An abandoned stream: end its call so no span leaks (usage so far, flagged incomplete).
        if not getattr(self, "_self_done", True):
            safely("instrumentation.stream.gc", self._self_end, None, False)


class AsyncStreamProxy(_ObjectProxy):  # type: ignore[misc]
    """The async twin of :class:`SyncStreamProxy`."""

    def __init__(self, wrapped: Any, call: LLMCall, accumulator: StreamAccumulator) -> None:
        super().__init__(wrapped)
        self._self_call = call
        self._self_acc = accumulator
        self._self_reader: tuple[AsyncIterator[Any], Callable[[Any], bool]] | None = None
        self._self_done = False

    def _self_end(self, exc: BaseException | None, complete: bool) -> None:
        if self._self_done:
            return
        self._self_done = True
        _finish_stream(self._self_call, self._self_acc, exc, complete)

    def __aiter__(self) -> AsyncIterator[Any]:
        reader = self._self_reader
        wrapped = self.__wrapped__
        if reader is None:
            it = wrapped.__aiter__()
            if it is wrapped:
                return self  # opened by the first __anext__ (see _self_first)
            reader = self._self_reader = (it, self._self_acc.on_item)
        elif reader[0] is wrapped:
            return self
        return self._self_items(*reader)

    async def _self_items(self, it: AsyncIterator[Any], on_item: Callable[[Any], bool]) -> AsyncIterator[Any]:
        while True:
            try:
                item = await it.__anext__()
            except StopAsyncIteration:
                self._self_end(None, complete=True)
                return
            except BaseException as exc:
                self._self_end(exc, complete=False)
                raise
            try:
                hidden = on_item(item)
            except Exception as exc:
                hidden = _item_failed(exc)
            if not hidden:
                yield item

    async def _self_first(self) -> Any:
        """The first ``__anext__`` of a stream not iterated yet (see :meth:`SyncStreamProxy._self_first`)."""
        self._self_reader = (self.__wrapped__.__aiter__(), self._self_acc.on_item)
        return await self.__anext__()

    async def __anext__(self) -> Any:
        reader = self._self_reader
        if reader is None:
            return await self._self_first()
        it, on_item = reader
        while True:
            try:
                item = await it.__anext__()
            except StopAsyncIteration:
                self._self_end(None, complete=True)
                raise
            except BaseException as exc:
                self._self_end(exc, complete=False)
                raise
            try:
                hidden = on_item(item)
            except Exception as exc:
                hidden = _item_failed(exc)
            if not hidden:
                return item

    async def close(self) -> Any:
        try:
            return await self.__wrapped__.close()
        finally:
            self._self_end(None, complete=False)

    async def aclose(self) -> Any:
        try:
            return await self.__wrapped__.aclose()
        finally:
            self._self_end(None, complete=False)

    async def __aenter__(self) -> AsyncStreamProxy:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            self._self_end(None, complete=False)  # see SyncStreamProxy.__exit__

    def __del__(self) -> None:
        if not getattr(self, "_self_done", True):
            safely("instrumentation.stream.gc", self._self_end, None, False)
