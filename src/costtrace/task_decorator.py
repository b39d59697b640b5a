"""``@track_task``: run every call of a function as a task, for sync, async, generator and
async-generator functions alike.

The outcome follows how the call ends: success when it returns (or when ``success_when(result)`` is
true), failure when it raises, partial when a generator is closed early::

    @costtrace.track_task("resolve_ticket", feature="support", success_when=lambda r: r.resolved)
    def resolve(ticket): ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Mapping
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar, cast, overload

from opentelemetry.util.types import AttributeValue

from costtrace.tasks import Outcome, Task, parse_caps

P = ParamSpec("P")
R = TypeVar("R")


@overload
def track_task(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def track_task(
    name: str | None = None,
    /,
    *,
    feature: str | None = None,
    team: str | None = None,
    customer: str | None = None,
    user: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    success_when: Callable[[Any], bool] | None = None,
    max_cost_usd: Decimal | float | str | None = None,
    max_llm_calls: int | None = None,
    max_tokens: int | None = None,
    **dimensions: object,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def track_task(
    name_or_func: Any = None,
    /,
    *,
    feature: str | None = None,
    team: str | None = None,
    customer: str | None = None,
    user: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    success_when: Callable[[Any], bool] | None = None,
    max_cost_usd: Decimal | float | str | None = None,
    max_llm_calls: int | None = None,
    max_tokens: int | None = None,
    **dimensions: object,
) -> Any:
    """Run every call of the decorated function as a task. Works on sync, async, generator and
    async-generator functions; the signature is preserved.

    The outcome is success when the function returns (or ``success_when(result)`` is true), failure
    when it raises (the exception passes through unchanged), and partial when a generator is closed
    before it is exhausted. Inside, ``costtrace.current_task()`` returns the task.

    Example:
        >>> @costtrace.track_task("resolve_ticket", feature="support",        # doctest: +SKIP
        ...                       success_when=lambda r: r.resolved)
        ... def resolve(ticket): ...
    """
    if callable(name_or_func) and not isinstance(name_or_func, str):
        return track_task()(name_or_func)
    explicit_name: str | None = name_or_func
    parse_caps(max_cost_usd, max_llm_calls, max_tokens)  # a bad cap fails at decoration time

    def new_task(func: Callable[..., Any]) -> Task:
        return Task(
            explicit_name or func.__qualname__,
            feature=feature,
            team=team,
            customer=customer,
            user=user,
            attributes=attributes,
            dimensions=dimensions,
            max_cost_usd=max_cost_usd,
            max_llm_calls=max_llm_calls,
            max_tokens=max_tokens,
        )

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if inspect.isasyncgenfunction(func):
            return cast(Callable[P, R], _wrap_async_generator(func, new_task))
        if inspect.isgeneratorfunction(func):
            return cast(Callable[P, R], _wrap_generator(func, new_task))
        if inspect.iscoroutinefunction(func):
            return cast(Callable[P, R], _wrap_coroutine(func, new_task, success_when))
        return _wrap_function(func, new_task, success_when)

    return decorate


def _apply_success_when(t: Task, success_when: Callable[[Any], bool] | None, result: object) -> None:
    if success_when is None or t._outcome is not None:
        return
    try:
        ok = bool(success_when(result))
    except Exception as exc:
        # A user callback: its failure is theirs to see in the logs, not a crash of their function.
        from costtrace._internal import logger

        logger.warning("costtrace: success_when raised %s for task %r", type(exc).__qualname__, t.name)
        t._set_outcome(Outcome.FAILURE, f"success_when raised {type(exc).__qualname__}")
        return
    if not ok:
        t._set_outcome(Outcome.FAILURE, "success_when returned False")


def _begin(new_task: Callable[[Callable[..., Any]], Task], func: Callable[..., Any]) -> tuple[Task, Any]:
    """Start a decorated function's task and make it current; returns the task and the context tokens."""
    t = new_task(func)
    t._start()
    return t, t._activate()


def _end_raised(t: Task, tokens: Any, exc: BaseException) -> None:
    t._deactivate(tokens)
    t._end(exc=exc)


def _end_returned(t: Task, tokens: Any, success_when: Callable[[Any], bool] | None, result: object) -> None:
    t._deactivate(tokens)
    _apply_success_when(t, success_when, result)
    t._end(result=result)


def _wrap_function(
    func: Callable[P, R],
    new_task: Callable[[Callable[..., Any]], Task],
    success_when: Callable[[Any], bool] | None,
) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        t, tokens = _begin(new_task, func)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            _end_raised(t, tokens, exc)
            raise
        _end_returned(t, tokens, success_when, result)
        return result

    return wrapper


def _wrap_coroutine(
    func: Callable[P, Coroutine[Any, Any, R]],
    new_task: Callable[[Callable[..., Any]], Task],
    success_when: Callable[[Any], bool] | None,
) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        t, tokens = _begin(new_task, func)
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            _end_raised(t, tokens, exc)
            raise
        _end_returned(t, tokens, success_when, result)
        return result

    return wrapper


def _wrap_generator(
    func: Callable[P, Generator[Any, Any, Any]], new_task: Callable[[Callable[..., Any]], Task]
) -> Callable[P, Generator[Any, Any, Any]]:
    # The task is current only while the generator's own code runs, never while the consumer holds
    # it suspended: the consumer's calls between two items are not the task's.
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Generator[Any, Any, Any]:
        t, tokens = _begin(new_task, func)
        try:
            gen = func(*args, **kwargs)
        except BaseException as exc:
            _end_raised(t, tokens, exc)
            raise
        t._deactivate(tokens)
        try:
            result = yield from _step_generator(t, gen)
        except GeneratorExit:
            tokens = t._activate()
            try:
                gen.close()
            finally:
                t._deactivate(tokens)
                t._end(closed_early=True)
            raise
        except BaseException as exc:
            t._end(exc=exc)
            raise
        t._end(result=result)
        return result

    return wrapper


def _step_generator(t: Task, gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    send_value: Any = None
    thrown: BaseException | None = None
    while True:
        tokens = t._activate()
        try:
            if thrown is not None:
                to_throw, thrown = thrown, None
                item = gen.throw(to_throw)
            else:
                item = gen.send(send_value)
        except StopIteration as stop:
            return stop.value
        finally:
            t._deactivate(tokens)
        try:
            send_value = yield item
        except GeneratorExit:
            raise
        except BaseException as exc:
            thrown = exc


def _wrap_async_generator(
    func: Callable[P, AsyncGenerator[Any, Any]], new_task: Callable[[Callable[..., Any]], Task]
) -> Callable[P, AsyncGenerator[Any, Any]]:
    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[Any, Any]:
        t, tokens = _begin(new_task, func)
        try:
            agen = func(*args, **kwargs)
        except BaseException as exc:
            _end_raised(t, tokens, exc)
            raise
        t._deactivate(tokens)
        send_value: Any = None
        thrown: BaseException | None = None
        try:
            while True:
                tokens = t._activate()
                try:
                    if thrown is not None:
                        to_throw, thrown = thrown, None
                        item = await agen.athrow(to_throw)
                    else:
                        item = await agen.asend(send_value)
                except StopAsyncIteration:
                    break
                finally:
                    t._deactivate(tokens)
                try:
                    send_value = yield item
                except GeneratorExit:
                    raise
                except BaseException as exc:
                    thrown = exc
        except GeneratorExit:
            tokens = t._activate()
            try:
                await agen.aclose()
            finally:
                t._deactivate(tokens)
                t._end(closed_early=True)
            raise
        except BaseException as exc:
            t._end(exc=exc)
            raise
        t._end()

    return wrapper
