"""Opt-in capture of prompt and completion content on call spans, size-limited and redacted.

Off by default: costtrace records token counts and costs, never what was said. Turn it on with
``costtrace.capture_content(True, max_chars=..., redact=...)`` or the standard environment variable
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.

The redaction hook receives the serialised text and returns what may be exported. It fails closed:
if it raises, or returns something other than a string, the content is dropped (the span says
``[content dropped: redaction failed]``) — never exported raw.

Example:
    >>> import re
    >>> costtrace.capture_content(True, max_chars=2000,                    # doctest: +SKIP
    ...                           redact=lambda s: re.sub(r"\\d{16}", "[card]", s))
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from costtrace._internal import logger
from costtrace.errors import ConfigError

ENV_VAR = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
DEFAULT_MAX_CHARS = 8192
TRUNCATION_MARK = "…[truncated]"
REDACTION_FAILED = "[content dropped: redaction failed]"

Redactor = Callable[[str], str]


@dataclass(frozen=True)
class _Settings:
    enabled: bool
    max_chars: int
    redact: Redactor | None


_settings: _Settings | None = None
_lock = threading.Lock()
_warned_redactor = False


def _from_env() -> _Settings:
    enabled = os.environ.get(ENV_VAR, "").strip().lower() in ("1", "true", "yes", "span_only", "span_and_event")
    return _Settings(enabled, DEFAULT_MAX_CHARS, None)


def settings() -> _Settings:
    global _settings
    if _settings is None:
        _settings = _from_env()
    return _settings


def capture_content(
    enabled: bool = True, *, max_chars: int = DEFAULT_MAX_CHARS, redact: Redactor | None = None
) -> None:
    """Turn content capture on or off for call spans (``gen_ai.input.messages`` / ``gen_ai.output.messages``).

    Args:
        enabled: Capture prompts and completions on call spans.
        max_chars: Longest text kept per attribute (after serialisation); the rest is cut and marked.
        redact: ``redact(text) -> text`` applied before export. If it raises, the content is dropped.

    Raises:
        ConfigError: ``max_chars`` is not a positive int, or ``redact`` is not callable.
    """
    global _settings
    if not isinstance(max_chars, int) or isinstance(max_chars, bool) or max_chars <= 0:
        raise ConfigError(f"capture_content(max_chars={max_chars!r}): use a positive int, e.g. 8192")
    if redact is not None and not callable(redact):
        raise ConfigError(f"capture_content(redact={redact!r}): use a function str -> str, or None")
    with _lock:
        _settings = _Settings(bool(enabled), max_chars, redact)


def _serialise(content: Any) -> str:
    if isinstance(content, str):
        return content
    try:
        return json.dumps(content, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(content)


def prepare(content: Any) -> str | None:
    """The text to put on a span for ``content``, or None when capture is off. Never raises."""
    s = settings()
    if not s.enabled or content is None:
        return None
    try:
        text = _serialise(content)
    except Exception:
        return None
    if s.redact is not None:
        try:
            redacted: object = s.redact(text)
        except Exception as exc:
            _warn_redactor(f"raised {type(exc).__qualname__}")
            return REDACTION_FAILED
        if not isinstance(redacted, str):
            _warn_redactor(f"returned {type(redacted).__name__}, not str")
            return REDACTION_FAILED
        text = redacted
    if len(text) > s.max_chars:
        text = text[: s.max_chars] + TRUNCATION_MARK
    return text


def _warn_redactor(what: str) -> None:
    global _warned_redactor
    if not _warned_redactor:
        _warned_redactor = True
        logger.warning("costtrace: the content redaction hook %s; content is dropped, never exported raw", what)


def _reset_for_tests() -> None:
    global _settings, _warned_redactor
    _settings = None
    _warned_redactor = False
