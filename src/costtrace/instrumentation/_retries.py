"""Framework validation retries as task retries: what the instructor and pydantic-ai modules share.

A framework that re-asks the model after its output failed validation (instructor's ``max_retries``,
pydantic-ai's output validators and ``ModelRetry``) makes a new attempt of the task. Both modules do
the same three things:

1. when the output fails, note the task and the attempt the failed call belongs to
   (:func:`snapshot`);
2. when the framework actually sends the re-ask, close that attempt with
   ``Task.retry("validation_failed", details)`` (:func:`record_retry`), so that ``retries`` counts it,
   ``first_pass`` is False and the failed attempt's cost is wasted;
3. skip it when the attempt was already closed in between: the user marked that retry by hand (in an
   instructor ``parse:error`` hook, in a pydantic-ai output validator before raising ``ModelRetry``),
   so it is counted once.

A failure after which the framework gives up (retries exhausted) sends no re-ask, so it is no retry:
the framework raises, and the task ends failed with that exception, as any raising task does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from costtrace.tasks import RetryReason, Task, current_task

_MAX_ERRORS = 10
"""Validation errors listed in a retry's details; more are counted (the details are bounded anyway)."""


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """The task whose output failed validation, and the attempt the failed call belongs to."""

    task: Task
    attempt: int


def snapshot() -> FailedAttempt | None:
    """The current task and its attempt now (None outside a task)."""
    task = current_task()
    if task is None:
        return None
    return FailedAttempt(task, task.attempt)


def record_retry(failed: FailedAttempt, details: str) -> bool:
    """Close the failed attempt as a ``validation_failed`` retry, unless it was closed already.

    Returns True when the retry was recorded here. It is not when the task's attempt moved on since
    ``failed`` was taken (someone, usually the user's own hook, recorded that retry), or when the code
    now runs in another task.
    """
    task = failed.task
    if current_task() is not task or task.attempt != failed.attempt:
        return False
    task.retry(RetryReason.VALIDATION_FAILED, details)
    return True


def describe_error(exc: BaseException) -> str:
    """A validation error in one line: ``field: message`` for each pydantic error, else ``str(exc)``.

    Example:
        >>> describe_error(ValueError("amount must be positive"))
        'amount must be positive'
    """
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            listed = errors(include_url=False)
        except TypeError:
            listed = errors()
        except Exception:  # an exception type of its own with an errors() we do not know
            listed = None
        if isinstance(listed, list) and listed:
            return describe_error_details(listed)
    return str(exc)


def describe_error_details(errors: list[Any]) -> str:
    """pydantic error details (dicts with ``loc`` and ``msg``) in one line, the first few of them."""
    shown = []
    for error in errors[:_MAX_ERRORS]:
        if isinstance(error, dict):
            loc = ".".join(str(p) for p in error.get("loc", ()))
            msg = str(error.get("msg", error))
            shown.append(f"{loc}: {msg}" if loc else msg)
        else:
            shown.append(str(error))
    if len(errors) > _MAX_ERRORS:
        shown.append(f"... {len(errors) - _MAX_ERRORS} more")
    return "; ".join(shown)
