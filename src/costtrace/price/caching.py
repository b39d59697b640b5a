"""What caching the input would save: an upper bound per call group, at the provider's cache-read price.

The "context tax" of a report (:class:`costtrace.analysis.context.ContextTax`) says how a scope's spend
splits into input, cache reads, cache writes and output, and how much of it caching could have saved.
This module holds the price side of the saving, and the names of the integer sums a report is built
from (:data:`CONTEXT_SUM_KEYS`), so that the SQL scan and any rollup build the same figures.

Definitions:

- Token counts follow :mod:`costtrace.usage` (and the ledger's ``costtrace_calls`` rows, which store
  the normalised :class:`~costtrace.usage.Usage`): ``input_tokens`` counts ALL input tokens, cache
  reads and cache writes included. **Uncached input** is ``input - cache reads - cache writes``
  (:attr:`Usage.uncached_input_tokens`): tokens neither read from nor written to a cache. Tokens
  written to a cache are already cached (and pay the write price); they are not counted again.
- The **saving per token** is the model's input price minus its cache-read price in the
  :func:`~costtrace.price.catalog.default_catalog` (your overrides, price files and negotiated
  discounts included: the price you pay), read for a call made *now*, at the standard service tier,
  not batched, and at the **base tier** of a tiered model (a 1,000-token prompt; tiers start at
  128k tokens or more). Dated prices therefore count at today's price: the bound says what caching
  would save from now on. A cache-read price above the input price saves nothing (0, never negative).
- :func:`caching_bound_nano` = uncached input tokens x saving per token, in integer nano-USD
  (rounded half-even once per call group). It is an **upper bound**: it assumes every uncached input
  token could have been a cache read. A real cache only holds a repeated prefix (the system prompt,
  tools, earlier turns), needs a minimum prompt length (1,024 tokens at OpenAI and Anthropic),
  expires (minutes), and at some providers costs a write first (Anthropic: 1.25x the input price),
  none of which the bound subtracts.
- **Unknown, never 0**: the bound is ``None`` when the model has no price or the catalog has no
  cache-read price for it (its cache tokens would pay the input price, so caching is not priced).
  A model whose input is free has a bound of 0.

How a report applies it: the calls of a scope are grouped by ``(provider, request_model)``, their
token columns summed, and :func:`caching_bound_nano` applied once per group to the sums. The group's
bound goes into ``caching_bound_nano`` when known; when it is ``None``, the group's calls that had
uncached input are counted in ``caching_unknown_calls``. A rollup must group the same way (per scope,
provider and model, summing tokens over its periods before applying the function) to get the same
rounding.

Example:
    >>> caching_bound_nano("openai", "gpt-4o-mini", input_tokens=3000, cache_read_tokens=1000,
    ...                    cache_write_tokens=0)   # 2,000 uncached x ($0.15 - $0.075) / 1M
    150000
    >>> caching_bound_nano("openai", "gpt-4", input_tokens=3000, cache_read_tokens=0,
    ...                    cache_write_tokens=0) is None   # no cache-read price: unknown
    True
"""

from __future__ import annotations

import threading
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import TYPE_CHECKING

from costtrace._money import to_nano
from costtrace.usage import Usage

if TYPE_CHECKING:  # the catalog loads genai-prices' data: imported on first use, not with the sum keys
    from costtrace.price.catalog import PriceCatalog

__all__ = ["CONTEXT_SUM_KEYS", "caching_bound_nano", "saving_per_token_usd"]

CONTEXT_SUM_KEYS: tuple[str, ...] = (
    "input_nano",
    "cache_read_nano",
    "cache_write_nano",
    "output_nano",
    "reasoning_nano",
    "other_nano",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "caching_bound_nano",
    "caching_unknown_calls",
)
"""The integer sums a scope's context tax is built from, each over the scope's calls (calls belong to a
scope through their task):

- ``input_nano`` ... ``other_nano``: the sums of the ``costtrace_calls`` columns ``input_nano_usd``,
  ``cache_read_nano_usd``, ``cache_write_nano_usd``, ``output_nano_usd``, ``reasoning_nano_usd``,
  ``other_nano_usd`` (0 for unpriced calls);
- ``input_tokens`` ... ``reasoning_tokens``: the sums of ``input_tokens``, ``cache_read_input_tokens``,
  ``cache_write_input_tokens``, ``output_tokens``, ``reasoning_output_tokens``;
- ``caching_bound_nano``: the sum of :func:`caching_bound_nano` over the scope's (provider, model)
  groups where it is known; ``caching_unknown_calls``: the calls with uncached input in the groups
  where it is ``None``.
"""

_PROBE = 1000
"""Tokens of the prompt the saving per token is read from: the base tier of any tiered model."""
_CTX = Context(prec=28, rounding=ROUND_HALF_EVEN)
_MAX_MEMO = 4096

_memo_lock = threading.Lock()
_memo: dict[tuple[str | None, str], tuple[PriceCatalog, object, Decimal | None]] = {}
"""(provider, model) -> (the catalog, its resolved entry, saving per token): valid while the catalog
still holds that entry (any price change clears a catalog's resolved entries)."""


def _entry(catalog: PriceCatalog, provider: str | None, model: str) -> object:
    """The catalog's resolved standard-tier entry of the model (``None`` when not resolved yet).

    Its identity changes whenever a price, discount or alias changes, which invalidates the memo.
    """
    return catalog._entries.get((provider, model, None, False, ()))


def _read_saving(catalog: PriceCatalog, provider: str | None, model: str) -> Decimal | None:
    if not catalog.is_priced(provider, model):
        return None
    probe = catalog.cost(Usage(input_tokens=_PROBE, cache_read_input_tokens=_PROBE), provider=provider, model=model)
    if not probe.priced or probe.input_usd != 0:
        # Without a cache-read rate, cache reads are charged (as input) at the input rate: no cache price.
        return None
    # With one, probe.cache_savings_usd = (input rate - cache-read rate) x tokens, discount applied.
    return max(_CTX.divide(probe.cache_savings_usd, _PROBE), Decimal(0))


def saving_per_token_usd(provider: str | None, model: str) -> Decimal | None:
    """USD one uncached input token of ``model`` would cost less as a cache read; ``None`` when unknown.

    Read from the default catalog (see the module docstring for tiers, dates and discounts) and
    memoised per (provider, model) until the catalog's prices change. An empty provider is ``None``
    (the ledger stores a missing provider as ``""``).

    Example:
        >>> saving_per_token_usd("openai", "gpt-4o-mini")
        Decimal('7.5E-8')
    """
    from costtrace.price.catalog import default_catalog

    provider = provider or None
    catalog = default_catalog()
    key = (provider, model)
    hit = _memo.get(key)
    if hit is not None and hit[0] is catalog and hit[1] is not None and _entry(catalog, provider, model) is hit[1]:
        return hit[2]
    saving = _read_saving(catalog, provider, model)
    with _memo_lock:
        if len(_memo) >= _MAX_MEMO:
            _memo.clear()
        _memo[key] = (catalog, _entry(catalog, provider, model), saving)
    return saving


def caching_bound_nano(
    provider: str | None,
    model: str,
    *,
    input_tokens: int,
    cache_read_tokens: int,
    cache_write_tokens: int,
) -> int | None:
    """Upper bound, in integer nano-USD, of what the uncached input would have cost less as cache reads.

    ``uncached = max(0, input_tokens - cache_read_tokens - cache_write_tokens)`` (``input_tokens``
    includes both); the bound is ``uncached x`` :func:`saving_per_token_usd`, rounded half-even to
    nano-USD. Give one call's counts, or the sums over a group of calls of one (provider, model).

    Returns:
        The bound; 0 when there is no uncached input (or caching would not make it cheaper); ``None``
        when the model is unpriced or has no cache-read price, so the saving is unknown, never 0.

    Example:
        >>> caching_bound_nano("openai", "gpt-4o", input_tokens=1000, cache_read_tokens=0,
        ...                    cache_write_tokens=0)   # 1,000 x ($2.50 - $1.25) / 1M
        1250000
    """
    uncached = max(0, int(input_tokens) - int(cache_read_tokens) - int(cache_write_tokens))
    saving = saving_per_token_usd(provider, model)
    if saving is None:
        return None
    if not uncached or not saving:
        return 0
    return to_nano(_CTX.multiply(saving, uncached)) or 0
