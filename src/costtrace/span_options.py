"""What costtrace adds to spans beyond its own attributes: task span status, OpenInference attributes.

Both are on by default. Turn either off in code (:func:`configure_spans`, or the same arguments of
``costtrace.configure``) or with an environment variable, for apps that keep their own OpenTelemetry
set-up and never call ``configure``:

- ``COSTTRACE_TASK_STATUS``: a task ending ``failure`` or ``escalated_to_human`` sets its span status
  to ERROR (see docs/telemetry.md#task-span-status);
- ``COSTTRACE_OPENINFERENCE``: OpenInference attributes (``openinference.span.kind``, ``input.value``,
  ``output.value``, ``llm.cost.*``) for Arize Phoenix and other OpenInference readers.

Values ``1``/``true``/``yes`` and ``0``/``false``/``no`` (any case). A variable set to anything else
logs a warning and keeps the default: a typo in the environment never stops the app. A setting made
in code wins over the environment.

Example:
    >>> costtrace.configure_spans(openinference=False)      # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from costtrace._internal import logger
from costtrace.errors import ConfigError

ENV_TASK_STATUS = "COSTTRACE_TASK_STATUS"
ENV_OPENINFERENCE = "COSTTRACE_OPENINFERENCE"

_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


@dataclass(frozen=True, slots=True)
class SpanOptions:
    """The settings in effect (read once, then cached: :func:`options` is on every task's and call's path)."""

    task_status: bool = True
    """A task's outcome sets its span status (``failure`` / ``escalated_to_human`` -> ERROR)."""
    openinference: bool = True
    """OpenInference attributes on task and call spans."""


_lock = threading.Lock()
_options: SpanOptions | None = None
_in_code: dict[str, bool] = {}
"""Settings made in code (``configure_spans`` / ``configure``): they win over the environment."""


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    logger.warning(
        "costtrace: %s=%r is not one of %s; using the default (%s)",
        name,
        raw[:100],
        "/".join(_TRUE + _FALSE),
        "true" if default else "false",
    )
    return default


def _load() -> SpanOptions:
    global _options
    with _lock:
        if _options is None:
            defaults = SpanOptions()
            task_status = _in_code.get("task_status")
            if task_status is None:
                task_status = _env_flag(ENV_TASK_STATUS, defaults.task_status)
            openinference = _in_code.get("openinference")
            if openinference is None:
                openinference = _env_flag(ENV_OPENINFERENCE, defaults.openinference)
            _options = SpanOptions(task_status=task_status, openinference=openinference)
        return _options


def options() -> SpanOptions:
    """The settings in effect. Never raises (a bad environment value was logged and ignored)."""
    current = _options
    return current if current is not None else _load()


def _check(where: str, name: str, value: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ConfigError(f"{where}({name}={value!r}): use True or False (or None to keep the current setting)")


def configure_spans(*, task_status: bool | None = None, openinference: bool | None = None) -> None:
    """Turn span status from task outcomes, or OpenInference attributes, on or off (both on by default).

    For apps with their own OpenTelemetry set-up; ``costtrace.configure(task_status=..., openinference=...)``
    does the same. A setting left ``None`` keeps its current value (the environment's, or an earlier call's).

    Args:
        task_status: A task ending ``failure`` or ``escalated_to_human`` gets span status ERROR with
            ``"<outcome>: <reason>"`` as description (env ``COSTTRACE_TASK_STATUS``).
        openinference: ``openinference.span.kind``, ``input.value`` / ``output.value`` on task spans and
            ``llm.cost.*`` on call spans, read by Arize Phoenix and other OpenInference backends
            (env ``COSTTRACE_OPENINFERENCE``).

    Raises:
        ConfigError: A value is not a bool.

    Example:
        >>> costtrace.configure_spans(openinference=False)      # doctest: +SKIP
    """
    _apply("configure_spans", task_status, openinference)


def _apply(where: str, task_status: object, openinference: object) -> None:
    _store(_checked(where, task_status, openinference))


def _checked(where: str, task_status: object, openinference: object) -> dict[str, bool | None]:
    """The settings, validated (``ConfigError`` naming ``where``), for :func:`_store`."""
    return {
        "task_status": _check(where, "task_status", task_status),
        "openinference": _check(where, "openinference", openinference),
    }


def _store(checked: dict[str, bool | None]) -> None:
    global _options
    with _lock:
        _in_code.update({name: value for name, value in checked.items() if value is not None})
        _options = None  # re-read at next use


def _reset_for_tests() -> None:
    """Forget settings made in code and the cached environment (the next use reads it again)."""
    global _options
    with _lock:
        _in_code.clear()
        _options = None
