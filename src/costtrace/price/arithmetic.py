"""Cost arithmetic: a resolved price plan applied to one call's :class:`~costtrace.usage.Usage`.

A plan holds per-token rates by slot (input, output, cache read, cache writes, reasoning, per request),
flat or tiered. Pricing a call is a few integer subtractions and Decimal multiplications, decomposing
usage exactly like genai-prices (cache tokens without a cache rate pay the input rate, reasoning without
its own rate pays the output rate); a negotiated discount multiplies every amount.

Example:
    >>> from costtrace.usage import Usage
    >>> plan = _make_plan([Decimal(2), Decimal(8), None, None, None, None, None, None],
    ...                   price_source="override", price_date=None, model_id="m", provider_id=None,
    ...                   list_price=False)
    >>> _apply_plan(plan, Usage(input_tokens=1_000_000, output_tokens=1000), None).total_usd
    Decimal('2.008000')

Which plan prices a call is :mod:`~costtrace.price.lookup`'s job; where plans come from is
:mod:`~costtrace.price.catalog`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Any

from costtrace.usage import Usage

__all__ = ["Cost"]

_ZERO = Decimal(0)
_MTOK = Decimal(1_000_000)
_DEC_CTX = Context(prec=28, rounding=ROUND_HALF_EVEN)
"""Python's default Decimal context, pinned so that a host app's own context cannot round our money."""


# Slots of a price plan: the units costtrace's Usage can carry, as genai-prices names them.
_IN, _OUT, _CR, _CW, _CW5, _CW1, _RS, _REQ = range(8)
_SLOT_PRICE_KEYS = (
    "input_mtok",
    "output_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "cache_write_5m_mtok",
    "cache_write_1h_mtok",
    "output_reasoning_mtok",
    "requests_kcount",
)
_SLOT_BY_PRICE_KEY = {key: slot for slot, key in enumerate(_SLOT_PRICE_KEYS)}


# --------------------------------------------------------------------------------------------------
# The result


@dataclass(frozen=True, slots=True)
class Cost:
    """What one LLM call cost, split by kind of token, with where the price came from.

    Amounts are USD ``Decimal``. ``total_usd`` is ``None`` when the call could not be priced
    (``priced`` is then ``False`` and ``unpriced_reason`` says why); it is never ``Decimal(0)`` for
    an unknown model. A model you priced at 0 yourself (self-hosted) is ``priced=True`` with total 0.

    Example:
        >>> c = Cost.unpriced("unknown model 'foo' for provider 'openai'")
        >>> c.priced, c.total_usd
        (False, None)
    """

    total_usd: Decimal | None
    """Sum of the parts below; ``None`` when unpriced."""
    input_usd: Decimal
    """Input tokens that were neither cache reads nor cache writes (cache tokens of a model without a
    cache price are charged, and counted here, at the input rate)."""
    cache_read_usd: Decimal
    cache_write_usd: Decimal
    """Cache writes, 5-minute and 1-hour TTL together."""
    output_usd: Decimal
    """Output tokens, reasoning included unless the model has a separate reasoning rate."""
    reasoning_usd: Decimal
    """Reasoning tokens, only when the model has a separate reasoning rate; else 0."""
    other_usd: Decimal
    """Anything else the price list charges for, e.g. a per-request fee."""
    cache_savings_usd: Decimal
    """Cache-read tokens x (uncached input rate - cache read rate): what the cache saved; 0 if none."""
    priced: bool
    price_source: str
    """``"genai-prices <version>"``, ``"override"`` (set in code) or ``"config:<path>"``."""
    price_date: str | None
    """ISO date the applied price started, ``None`` for a price without a start date."""
    model_id: str | None
    """The price list's model id (or your override's model name); ``None`` when unpriced."""
    provider_id: str | None
    """The id of the price list the price came from (``openai`` for an Azure model priced from
    OpenAI's list); ``None`` when unpriced."""
    unpriced_reason: str | None
    discount: Decimal | None = None
    """The negotiated-discount multiplier applied to the list price (see
    :func:`~costtrace.price.catalog.set_discount`)."""

    @classmethod
    def unpriced(cls, reason: str) -> Cost:
        """A cost that is unknown, with the reason why.

        Example:
            >>> Cost.unpriced("invalid usage: output_tokens is negative").unpriced_reason
            'invalid usage: output_tokens is negative'
        """
        return cls(
            total_usd=None,
            input_usd=_ZERO,
            cache_read_usd=_ZERO,
            cache_write_usd=_ZERO,
            output_usd=_ZERO,
            reasoning_usd=_ZERO,
            other_usd=_ZERO,
            cache_savings_usd=_ZERO,
            priced=False,
            price_source="none",
            price_date=None,
            model_id=None,
            provider_id=None,
            unpriced_reason=reason,
        )


# --------------------------------------------------------------------------------------------------
# Price plans: one resolved set of rates, ready for per-call arithmetic


_TierRate = tuple[Decimal, tuple[tuple[int, Decimal], ...]]
"""A per-token base rate and its tiers as (start, per-token rate), highest start first."""


@dataclass(frozen=True, slots=True)
class _Plan:
    flat: tuple[Decimal | None, ...] | None
    """Per-unit rates by slot (``None``: the unit has no price); ``None`` for a tiered plan."""
    tiered: tuple[_TierRate | None, ...] | None
    """Tiered rates by slot, used only when ``flat`` is ``None``."""
    price_source: str
    price_date: str | None
    model_id: str | None
    provider_id: str | None
    list_price: bool
    """A genai-prices list price, to which negotiated discounts apply (your own prices are not)."""

    def rates(self, input_tokens: int) -> tuple[Decimal | None, ...]:
        if self.flat is not None:
            return self.flat
        assert self.tiered is not None
        return tuple(None if t is None else _tier_rate(t, input_tokens) for t in self.tiered)


def _tier_rate(rate: _TierRate, input_tokens: int) -> Decimal:
    # Cliff semantics, as genai-prices: past a tier's start ALL tokens pay that tier's rate.
    for start, tier_rate in rate[1]:
        if input_tokens > start:
            return tier_rate
    return rate[0]


def _apply_plan(plan: _Plan, usage: Usage, discount: Decimal | None) -> Cost:
    """Price ``usage`` with ``plan``, decomposing usage exactly like genai-prices.

    A priced unit is charged on its count minus the counts of its priced descendants: input is charged
    on input - cache reads - cache writes when those have prices, otherwise cache tokens pay the input
    rate; output on output - reasoning when reasoning has its own rate.
    """
    i = usage.input_tokens
    cr = usage.cache_read_input_tokens
    cw = usage.cache_write_input_tokens
    w1 = usage.cache_write_1h_input_tokens
    o = usage.output_tokens
    rs = usage.reasoning_output_tokens
    w5 = cw - w1 if w1 else 0  # 5-minute writes are known only when a 1-hour split is reported

    r_in, r_out, r_cr, r_cw, r_w5, r_w1, r_rs, r_req = plan.rates(i)
    leaf_w1 = w1 if r_w1 is not None else 0
    leaf_w5 = w5 if r_w5 is not None else 0
    leaf_cw = cw - leaf_w1 - leaf_w5 if r_cw is not None else 0
    leaf_cr = cr if r_cr is not None else 0
    leaf_in = i - leaf_cr - leaf_cw - leaf_w1 - leaf_w5
    leaf_rs = rs if r_rs is not None else 0
    leaf_out = o - leaf_rs

    with localcontext(_DEC_CTX):
        input_usd = r_in * leaf_in if r_in is not None else _ZERO
        output_usd = r_out * leaf_out if r_out is not None else _ZERO
        cache_read_usd = r_cr * leaf_cr if r_cr is not None else _ZERO
        cache_write_usd = r_cw * leaf_cw if r_cw is not None else _ZERO
        if r_w5 is not None:
            cache_write_usd += r_w5 * leaf_w5
        if r_w1 is not None:
            cache_write_usd += r_w1 * leaf_w1
        reasoning_usd = r_rs * leaf_rs if r_rs is not None else _ZERO
        other_usd = r_req if r_req is not None else _ZERO  # one request
        savings = (r_in - r_cr) * cr if (cr and r_in is not None and r_cr is not None) else _ZERO
        if discount is not None:
            input_usd *= discount
            output_usd *= discount
            cache_read_usd *= discount
            cache_write_usd *= discount
            reasoning_usd *= discount
            other_usd *= discount
            savings *= discount
        total = input_usd + cache_read_usd + cache_write_usd + output_usd + reasoning_usd + other_usd

    return Cost(
        total_usd=total,
        input_usd=input_usd,
        cache_read_usd=cache_read_usd,
        cache_write_usd=cache_write_usd,
        output_usd=output_usd,
        reasoning_usd=reasoning_usd,
        other_usd=other_usd,
        cache_savings_usd=savings,
        priced=True,
        price_source=plan.price_source,
        price_date=plan.price_date,
        model_id=plan.model_id,
        provider_id=plan.provider_id,
        unpriced_reason=None,
        discount=discount,
    )


def _usage_problem(usage: object) -> str | None:
    """Why ``usage`` cannot be priced, or ``None`` when it is consistent."""
    if not isinstance(usage, Usage):
        return f"invalid usage: expected costtrace.usage.Usage, got {type(usage).__name__}"
    if usage.source == "unknown":
        return "no usage reported (usage source 'unknown'): tokens and cost are unknown"
    i = usage.input_tokens
    cr = usage.cache_read_input_tokens
    cw = usage.cache_write_input_tokens
    w1 = usage.cache_write_1h_input_tokens
    o = usage.output_tokens
    rs = usage.reasoning_output_tokens
    if (  # the usual case, checked in one expression; the loop below says what is wrong otherwise
        type(i) is int
        and type(o) is int
        and type(cr) is int
        and type(cw) is int
        and type(w1) is int
        and type(rs) is int
        and cr >= 0
        and cw >= w1 >= 0
        and rs >= 0
        and cr + cw <= i
        and rs <= o
    ):
        return None
    for name, value in (
        ("input_tokens", i),
        ("output_tokens", o),
        ("cache_read_input_tokens", cr),
        ("cache_write_input_tokens", cw),
        ("cache_write_1h_input_tokens", w1),
        ("reasoning_output_tokens", rs),
    ):
        if type(value) is not int or value < 0:
            return f"invalid usage: {name}={value!r} is not a non-negative int"
    if cr + cw > i:
        return (
            f"invalid usage: cache_read_input_tokens ({cr}) + cache_write_input_tokens ({cw}) "
            f"exceed input_tokens ({i}), which must include them"
        )
    if w1 > cw:
        return f"invalid usage: cache_write_1h_input_tokens ({w1}) exceed cache_write_input_tokens ({cw})"
    if rs > o:
        return f"invalid usage: reasoning_output_tokens ({rs}) exceed output_tokens ({o}), which include them"
    return None


def _make_plan(
    rates: list[Any],
    *,
    price_source: str,
    price_date: str | None,
    model_id: str | None,
    provider_id: str | None,
    list_price: bool,
) -> _Plan:
    """Turn prices per unit (per MTok, per K requests; Decimal or TieredPrices) into a plan."""
    with localcontext(_DEC_CTX):
        per_unit: list[_TierRate | None] = []
        for slot, rate in enumerate(rates):
            per = Decimal(1000) if slot == _REQ else _MTOK
            if rate is None:
                per_unit.append(None)
            elif isinstance(rate, Decimal):
                per_unit.append((rate / per, ()))
            else:  # genai-prices TieredPrices
                tiers = sorted(((t.start, t.price / per) for t in rate.tiers), key=lambda t: t[0], reverse=True)
                per_unit.append((rate.base / per, tuple(tiers)))
    if all(t is None or not t[1] for t in per_unit):
        flat = tuple(None if t is None else t[0] for t in per_unit)
        return _Plan(flat, None, price_source, price_date, model_id, provider_id, list_price)
    return _Plan(None, tuple(per_unit), price_source, price_date, model_id, provider_id, list_price)
