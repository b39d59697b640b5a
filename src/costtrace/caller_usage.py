"""Token counts a caller passes (``set_usage``, ``record_llm_call``, :func:`make_usage`), checked and
clamped into a :class:`Usage` the GenAI conventions' way.

A count that is not a count never becomes a made-up cost: it gives the unknown usage and the reason::

    make_usage(input_tokens=100, output_tokens=10, cache_read_input_tokens=500)  # cache reads: 100
    checked_usage({"input_tokens": -1, "output_tokens": 10}, "provider")  # (UNKNOWN_USAGE, "invalid usage: ...")
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import cast

from costtrace._internal import logger
from costtrace.usage import (
    MAX_COUNT,
    REPORTED_CACHE_READ,
    REPORTED_CACHE_WRITE,
    REPORTED_CACHE_WRITE_1H,
    REPORTED_REASONING,
    Usage,
    UsageSource,
    clamped_usage,
)

UNKNOWN_USAGE = Usage(source="unknown")
"""The usage of a call whose token counts are unknown: recorded unpriced, never at $0."""

_USAGE_SOURCES = ("provider", "estimated", "heuristic", "unknown")


def _count_arg(name: str, value: object) -> tuple[int, str | None]:
    """A caller-supplied token count, or the reason it is not one.

    An ``int`` (or an integral, finite float, as JSON gives) in ``0 .. MAX_COUNT`` is a count. ``None``
    is a count only for the subsets (not reported: none). Anything else (negative, NaN, infinite,
    huge, a bool, text such as ``"100"``) makes the call's usage unknown: guessing a number would
    turn a bad input into a made-up cost.
    """
    if isinstance(value, bool):  # an int subclass, but never a count
        return 0, f"{name}={value!r} is not a token count (expected an int >= 0)"
    if isinstance(value, numbers.Integral):  # int, numpy integers
        count = int(value)
        if 0 <= count <= MAX_COUNT:
            return count, None
        return 0, f"{name}={value!r} is {'negative' if count < 0 else 'too large to be a token count'}"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return _count_arg(name, int(value))
    if value is None and name not in _TOTALS:
        return 0, None
    return 0, f"{name}={value!r} is not a token count (expected an int >= 0)"


_TOTALS = ("input_tokens", "output_tokens")


def checked_usage(counts: Mapping[str, object], source: object) -> tuple[Usage, str | None]:
    """``counts`` (keyword -> value, in :class:`Usage` field order) as a :class:`Usage`, or the unknown
    usage and the reason when a count is invalid."""
    if source not in _USAGE_SOURCES:
        logger.warning("costtrace: unknown usage source %r, recording it as 'provider'", source)
        source = "provider"
    values: list[int] = []
    problems: list[str] = []
    reported = 0
    for name, value in counts.items():
        count, problem = _count_arg(name, value)
        values.append(count)
        if problem is not None:
            problems.append(problem)
        elif value is not None:
            reported |= _REPORTED_BITS.get(name, 0)
    if problems:
        reason = "invalid usage: " + "; ".join(problems)
        logger.warning("costtrace: %s; the call's usage and cost are recorded as unknown", reason)
        return UNKNOWN_USAGE, reason
    inp, out, cache_read, cache_write, cache_write_1h, reasoning = values
    usage = clamped_usage(
        inp, out, cache_read, cache_write, cache_write_1h, reasoning, cast(UsageSource, source), reported=reported
    )
    return usage, None


_REPORTED_BITS = {
    "cache_read_input_tokens": REPORTED_CACHE_READ,
    "cache_write_input_tokens": REPORTED_CACHE_WRITE,
    "cache_write_1h_input_tokens": REPORTED_CACHE_WRITE_1H,
    "reasoning_output_tokens": REPORTED_REASONING,
}


def make_usage(
    *,
    input_tokens: object = 0,
    output_tokens: object = 0,
    cache_read_input_tokens: object = None,
    cache_write_input_tokens: object = None,
    cache_write_1h_input_tokens: object = None,
    reasoning_output_tokens: object = None,
    source: UsageSource = "provider",
) -> Usage:
    """Build a :class:`Usage` from caller-supplied counts, clamping subsets to their totals.

    A subset left out (None) was not reported: its span attribute is absent. One given, 0 included, is
    exported as given (a provider that says "0 cached tokens" is not one that says nothing).

    A subset larger than its total (cache reads above the input tokens) is clamped to it, as the
    GenAI conventions' totals include their subsets. A count that is not a count (negative, NaN,
    infinite, above ``MAX_COUNT``, a bool, text, ``None`` for a total) is logged and gives the unknown
    usage (``source="unknown"``): the call is then recorded unpriced with the reason, never at $0.

    Example:
        >>> make_usage(input_tokens=100, output_tokens=10, cache_read_input_tokens=500).cache_read_input_tokens
        100
        >>> make_usage(input_tokens=-1, output_tokens=10).source
        'unknown'
    """
    usage, _ = checked_usage(
        {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": cache_read_input_tokens,
            "cache_write_input_tokens": cache_write_input_tokens,
            "cache_write_1h_input_tokens": cache_write_1h_input_tokens,
            "reasoning_output_tokens": reasoning_output_tokens,
        },
        source,
    )
    return usage
