"""The context tax of a scope: where its spend went (input, cache reads, cache writes, output), and what
caching the input could have saved at most.

Built from the integer sums of :data:`costtrace.price.caching.CONTEXT_SUM_KEYS` over the scope's calls
(:func:`costtrace.analysis.stats.scope_stats` computes them with SQL; a rollup may too), by
:meth:`ContextTax.from_sums`. Definitions:

- Money is exact ``Decimal`` USD from integer nano-USD (:func:`costtrace._money.from_nano`).
- ``priced_cost_usd`` is the sum of the six cost components of the priced calls: uncached input,
  cache reads, cache writes, output, reasoning (only for models with a separate reasoning rate) and
  other charges (per-request fees). Unpriced calls have no components: their tokens count, their
  cost is unknown (the scope's ``cost_complete`` says so).
- The cost shares divide a component by ``priced_cost_usd``: ``input_cost_share`` (uncached input;
  a model without a cache price charges its cache tokens here, at the input rate),
  ``cache_read_cost_share``, ``cache_write_cost_share``, ``output_cost_share`` (output *and*
  reasoning) and ``other_cost_share``. They add up to 1. ``None`` when nothing was spent.
- Token counts follow :mod:`costtrace.usage`: ``input_tokens`` counts all input, cache reads and
  writes included; ``uncached_input_tokens = input - cache reads - cache writes``.
  ``cache_read_token_share = cache_read_tokens / input_tokens`` (the share of input served from a
  cache) and ``cache_write_token_share = cache_write_tokens / input_tokens``; ``None`` without input.
- ``caching_savings_upper_bound_usd``: the sum over the scope's (provider, model) groups of
  :func:`costtrace.price.caching.caching_bound_nano`: uncached input tokens x (input price - cache-read
  price), as if every uncached token had been a cache read. An **upper bound**: real caches hold only
  a repeated prefix, need a minimum length, expire, and may charge a write first.
  ``caching_unknown_calls`` counts the calls with uncached input whose model has no price or no
  cache-read price: they are not in the bound. The bound is ``None`` (unknown, not 0) when such calls
  exist and no known group adds anything; with both, it covers the known calls only and
  ``caching_savings_complete`` is False. It is 0 only when nothing is known to be saveable and
  nothing is unknown (no uncached input, or caching would not be cheaper).
- ``caching_savings_upper_bound_share = bound / priced_cost_usd``.

Example:
    >>> sums = dict.fromkeys(CONTEXT_SUM_KEYS, 0)
    >>> sums.update(input_nano=600, cache_read_nano=100, output_nano=300, input_tokens=4000,
    ...             cache_read_tokens=1000, output_tokens=100, caching_bound_nano=225)
    >>> ct = ContextTax.from_sums(sums)
    >>> ct.input_cost_share, ct.cache_read_token_share, ct.caching_savings_upper_bound_usd
    (Decimal('0.6'), Decimal('0.25'), Decimal('2.25E-7'))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal

from costtrace import _money
from costtrace.price.caching import CONTEXT_SUM_KEYS

__all__ = ["CONTEXT_SUM_KEYS", "ContextTax", "empty_sums"]

_CTX = Context(prec=28, rounding=ROUND_HALF_EVEN)
_ZERO = Decimal(0)


def _div(numerator: int, denominator: int) -> Decimal | None:
    if not denominator:
        return None
    return _CTX.divide(Decimal(numerator), Decimal(denominator))


def _usd(nanos: int) -> Decimal:
    return _money.from_nano(nanos) or _ZERO


def empty_sums() -> dict[str, int]:
    """A sums dict with every key of :data:`CONTEXT_SUM_KEYS` at 0 (a scope without calls)."""
    return dict.fromkeys(CONTEXT_SUM_KEYS, 0)


@dataclass(frozen=True)
class ContextTax:
    """Where a scope's spend went by kind of token, and the most caching could have saved (see the module)."""

    input_usd: Decimal
    """Uncached input (and cache tokens of models without a cache price, charged at the input rate)."""
    cache_read_usd: Decimal
    cache_write_usd: Decimal
    output_usd: Decimal
    """Output, reasoning included unless the model has a separate reasoning rate."""
    reasoning_usd: Decimal
    other_usd: Decimal
    priced_cost_usd: Decimal
    """The sum of the six components above: the priced calls' spend."""
    input_cost_share: Decimal | None
    cache_read_cost_share: Decimal | None
    cache_write_cost_share: Decimal | None
    output_cost_share: Decimal | None
    """(output + reasoning) / priced cost."""
    other_cost_share: Decimal | None
    input_tokens: int
    """All input tokens, cache reads and writes included."""
    cache_read_tokens: int
    cache_write_tokens: int
    uncached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cache_read_token_share: Decimal | None
    """cache_read_tokens / input_tokens: the share of input served from a cache."""
    cache_write_token_share: Decimal | None
    caching_savings_upper_bound_usd: Decimal | None
    """AT MOST this much less had every uncached input token been a cache read; None when unknown."""
    caching_savings_upper_bound_share: Decimal | None
    """The bound / priced cost."""
    caching_unknown_calls: int
    """Calls with uncached input whose model has no price or no cache-read price (not in the bound)."""

    @property
    def caching_savings_complete(self) -> bool:
        """Whether the bound covers every call with uncached input."""
        return self.caching_unknown_calls == 0

    @classmethod
    def from_sums(cls, sums: Mapping[str, int]) -> ContextTax:
        """The context tax from the integer sums of :data:`CONTEXT_SUM_KEYS` (missing keys count 0).

        Raises:
            ValueError: A key that is not one of :data:`CONTEXT_SUM_KEYS` (a misspelt sum would
                silently count as 0).
        """
        unknown = set(sums) - set(CONTEXT_SUM_KEYS)
        if unknown:
            raise ValueError(f"unknown context sums {sorted(unknown)}; the keys are {', '.join(CONTEXT_SUM_KEYS)}")
        n = {key: int(sums.get(key) or 0) for key in CONTEXT_SUM_KEYS}
        parts = ("input_nano", "cache_read_nano", "cache_write_nano", "output_nano", "reasoning_nano", "other_nano")
        total = sum(n[p] for p in parts)
        inp, cr, cw = n["input_tokens"], n["cache_read_tokens"], n["cache_write_tokens"]
        bound_nano, unknown_calls = n["caching_bound_nano"], n["caching_unknown_calls"]
        bound = None if (unknown_calls and not bound_nano) else _usd(bound_nano)
        return cls(
            input_usd=_usd(n["input_nano"]),
            cache_read_usd=_usd(n["cache_read_nano"]),
            cache_write_usd=_usd(n["cache_write_nano"]),
            output_usd=_usd(n["output_nano"]),
            reasoning_usd=_usd(n["reasoning_nano"]),
            other_usd=_usd(n["other_nano"]),
            priced_cost_usd=_usd(total),
            input_cost_share=_div(n["input_nano"], total),
            cache_read_cost_share=_div(n["cache_read_nano"], total),
            cache_write_cost_share=_div(n["cache_write_nano"], total),
            output_cost_share=_div(n["output_nano"] + n["reasoning_nano"], total),
            other_cost_share=_div(n["other_nano"], total),
            input_tokens=inp,
            cache_read_tokens=cr,
            cache_write_tokens=cw,
            uncached_input_tokens=max(0, inp - cr - cw),
            output_tokens=n["output_tokens"],
            reasoning_tokens=n["reasoning_tokens"],
            cache_read_token_share=_div(cr, inp),
            cache_write_token_share=_div(cw, inp),
            caching_savings_upper_bound_usd=bound,
            caching_savings_upper_bound_share=None if bound is None else _div(bound_nano, total),
            caching_unknown_calls=unknown_calls,
        )

    @classmethod
    def empty(cls) -> ContextTax:
        """The context tax of a scope without calls: zero money and tokens, every share ``None``."""
        return cls.from_sums(empty_sums())
