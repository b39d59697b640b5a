"""costtrace's own errors: logged, counted, flagged, never raised into the host app.

Every run-time path of costtrace (recording a call, ending a task, pricing, counting tokens) goes
through :func:`guarded` or :func:`report_internal_error`. The user's own code is never run inside a
guarded block, so its return values and exceptions pass through untouched.

Under the test suite (``COSTTRACE_RAISE_INTERNAL_ERRORS=1``, set by ``tests/conftest.py``) internal
errors are re-raised so bugs surface instead of hiding in a log.

A bad value the *app* passes at run time (``record_outcome(task_id, "done")``, a NaN rework cost) is
not our bug but the app's, and still must not break it: :func:`report_misuse` logs it (at most once per
interval and site), counts it under ``misuse.<site>`` in :func:`internal_error_counts`, and the call is
ignored. Under pytest (``PYTEST_CURRENT_TEST`` is set while a test runs) it raises the
:class:`~costtrace.ConfigError` instead, so the app's own tests catch the mistake. Configuration calls
(``configure_ledger``, ``Budget(...)``) raise ``ConfigError`` directly: they run at start-up.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar, cast

from costtrace.errors import BudgetExceeded, ConfigError

logger = logging.getLogger("costtrace")

_F = TypeVar("_F", bound=Callable[..., Any])

_LOG_INTERVAL_S = 60.0
"""At most one log line per error site and interval, so a hot loop cannot flood the app's logs."""

_lock = threading.Lock()
_counts: dict[str, int] = {}
_last_logged: dict[str, float] = {}


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a fork while another thread held it must not deadlock the child


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _raise_enabled() -> bool:
    return os.environ.get("COSTTRACE_RAISE_INTERNAL_ERRORS", "") not in ("", "0", "false", "False")


def _count(where: str) -> bool:
    """Count one event at ``where``; True when it should be logged (the first in its interval)."""
    with _lock:
        _counts[where] = _counts.get(where, 0) + 1
        now = time.monotonic()
        last = _last_logged.get(where)
        should_log = last is None or now - last >= _LOG_INTERVAL_S
        if should_log:
            _last_logged[where] = now
    return should_log


def _shorten(text: str, limit: int = 500) -> str:
    """A message cut to ``limit`` characters: a bad value may be a 10 MB string."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def report_misuse(where: str, error: ConfigError) -> None:
    """A bad value given to costtrace at run time by the app: log (rate-limited), count, ignore.

    Raises ``error`` under pytest (``PYTEST_CURRENT_TEST`` set) or the costtrace test suite, so a test
    exercising the mistake fails; in production the call it came from is ignored and the app runs on.

    Example:
        >>> def record(outcome: str) -> None:
        ...     if outcome not in ("success", "failure"):
        ...         report_misuse("record", ConfigError(f"outcome={outcome!r} is not success or failure"))
        ...         return
    """
    site = f"misuse.{where}"
    if _count(site):
        logger.warning(
            "costtrace: ignored a call to %s with a bad argument (your code is still running fine): %s",
            where,
            _shorten(str(error)),
        )
    if _raise_enabled() or os.environ.get("PYTEST_CURRENT_TEST"):
        raise error


def report_internal_error(where: str, exc: BaseException) -> None:
    """Log and count an internal error at ``where``; re-raise it only under the test suite."""
    if _count(where):
        # The traceback goes in as text, not exc_info: a log handler that keeps records (caplog, memory
        # handlers) would otherwise keep the frames alive, and with them the app's objects.
        logger.error(
            "costtrace internal error in %s (your code is still running fine; this data point may be incomplete)\n%s",
            where,
            "".join(traceback.format_exception(exc)).rstrip(),
        )
    if _raise_enabled():
        raise exc


def report_background_error(where: str, exc: BaseException) -> None:
    """:func:`report_internal_error` for a background thread (the ledger writer's): under the test suite
    it re-raises, which must not kill the thread (tests read :func:`internal_error_counts` instead)."""
    try:
        report_internal_error(where, exc)
    except BaseException:
        pass


def guarded(where: str, default: Any = None) -> Callable[[_F], _F]:
    """Decorate an internal function so that its exceptions are reported, not raised.

    :class:`costtrace.BudgetExceeded` is the one exception let through: a hard cap the user set is
    blocking the call on purpose.

    Example:
        >>> @guarded("example.parse")
        ... def parse(x):
        ...     return int(x)
    """

    def decorate(fn: _F) -> _F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except BudgetExceeded:
                raise
            except Exception as exc:
                report_internal_error(where, exc)
                return default

        return cast(_F, wrapper)

    return decorate


def internal_error_counts() -> dict[str, int]:
    """A copy of the internal error counters, by site (``misuse.<site>`` for bad values the app passed)."""
    with _lock:
        return dict(_counts)


def _reset_for_tests() -> None:
    with _lock:
        _counts.clear()
        _last_logged.clear()
