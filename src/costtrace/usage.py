"""Token usage: one value type, and the normalisation of each provider's usage shape into it.

costtrace follows the OpenTelemetry GenAI conventions for what each number means:

- ``input_tokens`` counts ALL input tokens, cache reads and cache writes included;
- ``cache_read_input_tokens`` and ``cache_write_input_tokens`` are subsets of it;
- ``output_tokens`` counts all output tokens, reasoning included;
- ``reasoning_output_tokens`` is a subset of it.

Providers disagree (Anthropic's ``input_tokens`` excludes cached tokens; OpenAI's includes them), so
every provider shape is normalised here and nowhere else.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

UsageSource = Literal["provider", "estimated", "heuristic", "unknown"]
"""Where token counts came from.

- ``provider``: reported by the provider's API;
- ``estimated``: counted locally with tiktoken (exact for OpenAI encodings, approximate for others);
- ``heuristic``: no encoding could be loaded, counted from characters (see ``costtrace.price.tokens``);
- ``unknown``: no usage at all; the call's tokens and cost are unknown, never assumed zero.
"""


REPORTED_CACHE_READ = 1
"""Bit of :attr:`Usage.reported`: the provider reported cache reads (possibly 0)."""
REPORTED_CACHE_WRITE = 2
"""Bit of :attr:`Usage.reported`: cache writes were reported (possibly 0)."""
REPORTED_CACHE_WRITE_1H = 4
"""Bit of :attr:`Usage.reported`: one-hour cache writes were reported (possibly 0)."""
REPORTED_REASONING = 8
"""Bit of :attr:`Usage.reported`: reasoning tokens were reported (possibly 0)."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one LLM call, normalised to the GenAI semantic conventions.

    Example:
        >>> u = Usage(input_tokens=1200, output_tokens=300, cache_read_input_tokens=1000)
        >>> u.uncached_input_tokens
        200
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    cache_write_1h_input_tokens: int = 0
    """Subset of ``cache_write_input_tokens`` written with a one-hour TTL (Anthropic); the rest are 5-minute writes."""
    reasoning_output_tokens: int = 0
    source: UsageSource = "provider"
    reported: int = field(default=0, compare=False)
    """Which subsets were reported, even as 0 (``REPORTED_*`` bits): a reported 0 is exported as 0,
    a subset the provider left out is not exported at all. A non-zero subset counts as reported.
    Not part of equality: two usages with the same counts are equal."""

    def has_cache_read(self) -> bool:
        """Whether cache reads were reported (0 included), i.e. ``gen_ai.usage.cache_read.input_tokens`` is exported."""
        return bool(self.cache_read_input_tokens or self.reported & REPORTED_CACHE_READ)

    def with_source(self, source: UsageSource) -> Usage:
        """The same counts (and reported subsets) from another source, e.g. provider numbers made ``estimated``."""
        return replace(self, source=source)

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens that were neither read from nor written to a cache."""
        return max(0, self.input_tokens - self.cache_read_input_tokens - self.cache_write_input_tokens)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class ResponseInfo:
    """What costtrace reads from a provider response: usage plus a few identifying fields."""

    usage: Usage | None
    """None when the response carried no usage at all (then tokens are unknown, never zero)."""
    response_model: str | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()


_CHAT_NAMES = frozenset(
    (
        *("usage_metadata", "usageMetadata", "usage", "model", "id", "choices"),
        *("prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details"),
        *("cache_read_input_tokens", "cache_creation_input_tokens", "cached_tokens", "cache_creation_token_details"),
        *("ephemeral_1h_input_tokens", "reasoning_tokens"),
    )
)
"""Every name the OpenAI chat shape is read by (:func:`_reader`)."""


@functools.lru_cache(maxsize=1024)
def _pydantic_class(cls: type) -> tuple[frozenset[str], bool] | None:
    """(class attribute names, plain) of a pydantic v2 model class, None for any other class. Plain: no
    name of :data:`_CHAT_NAMES` is a class attribute (a property...), so its ``__dict__`` answers them."""
    if not isinstance(getattr(cls, "__pydantic_fields__", None), dict) or not hasattr(cls, "__pydantic_extra__"):
        return None
    class_attrs = frozenset(dir(cls))
    return class_attrs, not (class_attrs & _CHAT_NAMES)


def first_field(obj: Any, *names: str) -> Any:
    """The first present, non-None attribute or mapping key of ``obj`` among ``names`` (None if none is).

    For every reader of SDK responses (usage here, the instrumentations' stream accumulators).

    SDK responses are pydantic models, read without pydantic's slow miss (an ``AttributeError``
    raised and caught in ``__getattr__``): a field is in the instance ``__dict__``, an unknown key the
    server sent in ``__pydantic_extra__``; a class attribute (a property, a method) is read the usual
    way; any other name is absent.
    """
    if obj is None:
        return None
    cls: type = type(obj)
    if cls is dict:
        for name in names:
            value = obj.get(name)
            if value is not None:
                return value
        return None
    model = _pydantic_class(cls)
    if model is not None:
        state = obj.__dict__
        extra = None
        for name in names:
            if name in model[0]:
                value = getattr(obj, name, None)
            elif name in state:
                value = state[name]
            else:
                if extra is None:
                    extra = getattr(obj, "__pydantic_extra__", None) or {}
                value = extra.get(name)
            if value is not None:
                return value
        return None
    if isinstance(obj, Mapping):
        for name in names:
            value = obj.get(name)
            if value is not None:
                return value
        return None
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _absent(name: str) -> Any:
    return None


def _reader(obj: Any) -> Callable[[str], Any]:
    """``name -> first_field(obj, name)`` for names of :data:`_CHAT_NAMES`, its way chosen once per object: a
    dict's ``get``, a plain pydantic model's ``__dict__.get`` (no extra keys), else :func:`_get`."""
    if obj is None:
        return _absent
    cls: type = type(obj)
    if cls is dict:
        return obj.get  # type: ignore[no-any-return]
    model = _pydantic_class(cls)
    if model is not None and model[1] and not getattr(obj, "__pydantic_extra__", None):
        return obj.__dict__.get  # type: ignore[no-any-return]
    return functools.partial(first_field, obj)


def _first(read: Callable[[str], Any], a: str, b: str) -> Any:
    value = read(a)
    return value if value is not None else read(b)


MAX_COUNT = 2**63 - 1
"""Larger counts are not counts (and OTLP cannot encode them): read as absent."""


def _count(value: Any) -> int | None:
    """A token count as a non-negative int, or None when the value is missing or not a count."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_COUNT else None
    if isinstance(value, float) and math.isfinite(value) and 0 <= value <= MAX_COUNT:
        return int(value)
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, enum.Enum):  # before str: Gemini's FinishReason is a str enum
        return str(value.value)
    if isinstance(value, str):
        return value
    name = getattr(value, "value", None) or getattr(value, "name", None)  # enums (Gemini finish reasons)
    return str(name) if name is not None else str(value)


def _make_usage(
    input_tokens: int | None,
    output_tokens: int | None,
    cache_read: int | None = None,
    cache_write: int | None = None,
    cache_write_1h: int | None = None,
    reasoning: int | None = None,
) -> Usage | None:
    """A provider's usage; a subset given as None was not reported (absent), one given as 0 was."""
    if input_tokens is None and output_tokens is None:
        return None
    reported = (
        (REPORTED_CACHE_READ if cache_read is not None else 0)
        | (REPORTED_CACHE_WRITE if cache_write is not None else 0)
        | (REPORTED_CACHE_WRITE_1H if cache_write_1h is not None else 0)
        | (REPORTED_REASONING if reasoning is not None else 0)
    )
    return clamped_usage(
        input_tokens or 0,
        output_tokens or 0,
        cache_read or 0,
        cache_write or 0,
        cache_write_1h or 0,
        reasoning or 0,
        reported=reported,
    )


def clamped_usage(
    input_tokens: int,
    output_tokens: int,
    cache_read_input_tokens: int = 0,
    cache_write_input_tokens: int = 0,
    cache_write_1h_input_tokens: int = 0,
    reasoning_output_tokens: int = 0,
    source: UsageSource = "provider",
    *,
    reported: int = 0,
) -> Usage:
    """A :class:`Usage` whose subsets never exceed their totals (non-negative counts in).

    A provider glitch (cached tokens above prompt tokens) must not turn into negative uncached tokens.
    ``reported``: the ``REPORTED_*`` bits of the subsets that were reported, even as 0.
    """
    cr = min(cache_read_input_tokens, input_tokens)
    cw = min(cache_write_input_tokens, input_tokens - cr)
    cw1h = min(cache_write_1h_input_tokens, cw)
    rs = min(reasoning_output_tokens, output_tokens)
    return Usage(input_tokens, output_tokens, cr, cw, cw1h, rs, source, reported)


def _anthropic_usage(u: Any) -> Usage | None:
    base = _count(first_field(u, "input_tokens"))
    cache_read = _count(first_field(u, "cache_read_input_tokens"))  # None: not reported (kept absent)
    cache_write = _count(first_field(u, "cache_creation_input_tokens"))
    cache_write_1h = _count(first_field(first_field(u, "cache_creation"), "ephemeral_1h_input_tokens"))
    thinking = _count(first_field(first_field(u, "output_tokens_details"), "thinking_tokens"))
    # its input_tokens excludes cache reads and writes
    total_input = None if base is None else base + (cache_read or 0) + (cache_write or 0)
    return _make_usage(
        total_input, _count(first_field(u, "output_tokens")), cache_read, cache_write, cache_write_1h, thinking
    )


def _openai_chat_usage(u: Callable[[str], Any]) -> Usage | None:
    """OpenAI's chat usage (read by ``u``, its :func:`_reader`), and the same shape as LiteLLM (SDK and
    proxy) gives it for every provider.

    LiteLLM adds Anthropic's cache fields: ``cache_creation_input_tokens`` (writes, already included in
    ``prompt_tokens``), ``cache_read_input_tokens`` (= ``prompt_tokens_details.cached_tokens``) and the
    one-hour share of the writes in ``prompt_tokens_details.cache_creation_token_details``.
    """
    details = _reader(u("prompt_tokens_details"))
    cache_read = _count(details("cached_tokens"))
    if cache_read is None:
        cache_read = _count(u("cache_read_input_tokens"))
    return _make_usage(
        _count(u("prompt_tokens")),
        _count(u("completion_tokens")),
        cache_read=cache_read,
        cache_write=_count(u("cache_creation_input_tokens")),
        cache_write_1h=_count(_reader(details("cache_creation_token_details"))("ephemeral_1h_input_tokens")),
        reasoning=_count(_reader(u("completion_tokens_details"))("reasoning_tokens")),
    )


def _openai_responses_usage(u: Any) -> Usage | None:
    details = first_field(u, "input_tokens_details")
    return _make_usage(
        _count(first_field(u, "input_tokens")),
        _count(first_field(u, "output_tokens")),
        cache_read=_count(first_field(details, "cached_tokens")),
        cache_write=_count(first_field(details, "cache_write_tokens")),  # LiteLLM's Responses bridge (Anthropic)
        reasoning=_count(first_field(first_field(u, "output_tokens_details"), "reasoning_tokens")),
    )


def _gemini_usage(u: Any) -> Usage | None:
    prompt = _count(first_field(u, "prompt_token_count", "promptTokenCount"))
    tool_prompt = _count(first_field(u, "tool_use_prompt_token_count", "toolUsePromptTokenCount")) or 0
    candidates = _count(first_field(u, "candidates_token_count", "candidatesTokenCount"))
    thoughts = _count(first_field(u, "thoughts_token_count", "thoughtsTokenCount"))  # None: not reported
    if prompt is None and candidates is None and not thoughts:
        return None
    return _make_usage(
        (prompt or 0) + tool_prompt,
        (candidates or 0) + (thoughts or 0),
        cache_read=_count(first_field(u, "cached_content_token_count", "cachedContentTokenCount")),
        reasoning=thoughts,
    )


def usage_from_response(response: Any, provider: str | None = None) -> ResponseInfo:
    """Normalise a provider response (SDK object or plain dict) into a :class:`ResponseInfo`.

    Recognises OpenAI chat completions, OpenAI Responses, Anthropic messages and Google Gemini
    ``generate_content`` responses. Missing, None, negative or non-numeric fields are read as absent;
    a response with no usage yields ``usage=None`` (unknown), never zero tokens.

    Example:
        >>> info = usage_from_response({"model": "gpt-4o-mini", "usage": {
        ...     "prompt_tokens": 120, "completion_tokens": 30,
        ...     "prompt_tokens_details": {"cached_tokens": 100}}})
        >>> info.usage.input_tokens, info.usage.cache_read_input_tokens
        (120, 100)
    """
    if isinstance(response, Usage):
        return ResponseInfo(usage=response)
    read = _reader(response)
    gemini_meta = _first(read, "usage_metadata", "usageMetadata")
    if gemini_meta is not None:
        candidates = first_field(response, "candidates") or ()
        reasons = tuple(
            r for c in _iter(candidates) if (r := _text(first_field(c, "finish_reason", "finishReason"))) is not None
        )
        return ResponseInfo(
            usage=_gemini_usage(gemini_meta),
            response_model=_text(first_field(response, "model_version", "modelVersion")),
            response_id=_text(first_field(response, "response_id", "responseId")),
            finish_reasons=reasons,
        )
    u = read("usage")
    model = _text(read("model"))
    response_id = _text(read("id"))
    read_usage = _reader(u)
    if _first(read_usage, "prompt_tokens", "completion_tokens") is not None:
        reasons = tuple(r for c in _iter(read("choices") or ()) if (r := _text(first_field(c, "finish_reason"))))
        return ResponseInfo(_openai_chat_usage(read_usage), model, response_id, reasons)
    is_anthropic = provider == "anthropic" or (
        u is not None
        and (
            first_field(u, "cache_read_input_tokens", "cache_creation_input_tokens") is not None
            or first_field(response, "stop_reason") is not None
            or _text(first_field(response, "type")) == "message"
        )
    )
    if is_anthropic:
        stop = _text(first_field(response, "stop_reason"))
        return ResponseInfo(_anthropic_usage(u) if u is not None else None, model, response_id, (stop,) if stop else ())
    if u is not None:
        status = _text(first_field(response, "status"))
        return ResponseInfo(_openai_responses_usage(u), model, response_id, (status,) if status else ())
    return ResponseInfo(usage=None, response_model=model, response_id=response_id)


def _iter(value: Any) -> tuple[Any, ...]:
    try:
        return tuple(value)
    except TypeError:
        return ()
