"""What follows the calling context besides the current task: the summaries of the tasks finished in
it, and :func:`carry_context` to take the context into a thread.

"Context" is the one ``contextvars`` gives (the current thread, or the current asyncio task), so
concurrent requests never see each other's tasks::

    with costtrace.collect_tasks() as finished:
        await asyncio.gather(resolve("T-1"), resolve("T-2"))
    costtrace.last_finished_task()      # the outermost task finished last here
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from costtrace.records import TaskSummary

P = ParamSpec("P")
R = TypeVar("R")

_last_finished: contextvars.ContextVar[TaskSummary | None] = contextvars.ContextVar(
    "costtrace_last_finished_task", default=None
)
_collectors: contextvars.ContextVar[tuple[list[TaskSummary], ...]] = contextvars.ContextVar(
    "costtrace_task_collectors", default=()
)


def last_finished_task() -> TaskSummary | None:
    """The summary of the task that finished last in the calling context, or None.

    "Context" is the one ``contextvars`` gives: the current thread, or the current asyncio task. So the
    caller of a ``@track_task`` function gets that call's summary right after it returns (or raises),
    and a task finished concurrently in another thread or asyncio task never shows here. A subtask
    finishes before its parent, so after a call of a decorated function this is the outermost task.
    Work started with ``asyncio.create_task`` or in a thread pool runs in a copy of the context: there,
    use :func:`collect_tasks` around the work, or ``await`` the coroutine itself.

    Example:
        >>> @costtrace.track_task("resolve_ticket")                 # doctest: +SKIP
        ... def resolve(ticket): ...
        >>> resolve("T-1")                                          # doctest: +SKIP
        >>> s = costtrace.last_finished_task()                      # doctest: +SKIP
        >>> s.name, s.outcome, s.cost_usd                           # doctest: +SKIP
        ('resolve_ticket', 'success', Decimal('0.00027'))
    """
    return _last_finished.get()


@contextlib.contextmanager
def collect_tasks() -> Iterator[list[TaskSummary]]:
    """Collect the summaries of the tasks that finish inside the ``with`` block, in finishing order
    (subtasks before their parent).

    Only tasks finished in this context and in the contexts it hands on (``await``, ``gather``,
    ``TaskGroup`` and ``asyncio.create_task`` started inside the block, :func:`carry_context` into
    threads) are collected: concurrent requests of other threads or asyncio tasks never mix in.

    Example:
        >>> with costtrace.collect_tasks() as finished:             # doctest: +SKIP
        ...     await asyncio.gather(resolve("T-1"), resolve("T-2"))
        >>> [s.cost_usd for s in finished]                          # doctest: +SKIP
        [Decimal('0.00027'), Decimal('0.00031')]
    """
    finished: list[TaskSummary] = []  # list.append is atomic: threads may finish tasks into it
    token = _collectors.set((*_collectors.get(), finished))
    try:
        yield finished
    finally:
        _collectors.reset(token)


def record_finished(summary: TaskSummary) -> None:
    """A task has finished in this context: it becomes the last finished one and joins every open collection."""
    _last_finished.set(summary)
    for finished in _collectors.get():
        finished.append(summary)


def carry_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Bind ``fn`` to a copy of the current context, so the current task follows it into another thread.

    Example:
        >>> with costtrace.task("batch") as t:              # doctest: +SKIP
        ...     with ThreadPoolExecutor() as pool:
        ...         pool.submit(costtrace.carry_context(classify), doc)
    """
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run_in_context(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(fn, *args, **kwargs)

    return run_in_context
