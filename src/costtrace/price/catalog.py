"""Price catalog: what one LLM call cost, from genai-prices' data plus your own overrides.

Prices come from the data shipped with `genai-prices <https://github.com/pydantic/genai-prices>`_
(providers, model-name matching, cache prices, tiered prices, dated prices, service-tier and batch
variants). costtrace reads that data but does not call ``genai_prices.calc_price`` per call: a
(provider, model, tier) is resolved to its catalog entry once, cached, and each call then costs a few
integer subtractions and Decimal multiplications. The result equals ``calc_price`` (a property test
checks it across the catalog).

On top of the catalog you can state your own prices (fine-tuned, self-hosted, negotiated) with
:func:`set_price` or a JSON/TOML file (:func:`load_prices`, or ``COSTTRACE_PRICES_FILE``), and
negotiated discounts with :func:`set_discount`. See ``docs/pricing.md``.

Two rules hold everywhere:

- :meth:`PriceCatalog.cost` never raises; a problem becomes an unpriced :class:`Cost` with a reason.
- Cost is never invented: a model without a price is ``priced=False, total_usd=None``, never ``$0``.

``genai_prices`` is imported on the first price lookup, not when ``costtrace`` is imported.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import json
import logging
import os
import threading
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from costtrace import _validate
from costtrace._internal import guarded
from costtrace.errors import ConfigError
from costtrace.usage import Usage

if TYPE_CHECKING:
    from genai_prices import types as gp_types

__all__ = [
    "OTEL_PROVIDER_IDS",
    "Cost",
    "PriceCatalog",
    "default_catalog",
    "load_prices",
    "set_discount",
    "set_model_alias",
    "set_model_aliases",
    "set_price",
    "unpriced_counts",
]

logger = logging.getLogger("costtrace")

Number = int | float | Decimal | str
"""A price as you may write it: ``2.5``, ``Decimal("2.5")`` or ``"2.5"`` (converted exactly to Decimal)."""

OTEL_PROVIDER_IDS: Mapping[str, str | None] = MappingProxyType(
    {
        "openai": "openai",
        "anthropic": "anthropic",
        "gcp.gemini": "google",
        "gcp.vertex_ai": "google",
        "gcp.gen_ai": "google",
        "azure.ai.openai": "azure",
        "azure.ai.inference": "azure",
        "aws.bedrock": "aws",
        "cohere": "cohere",
        "mistral_ai": "mistral",
        "groq": "groq",
        "deepseek": "deepseek",
        "x_ai": "x-ai",
        "perplexity": "perplexity",
        # genai-prices has no IBM price list: the model name alone decides (usually: unpriced).
        "ibm.watsonx.ai": None,
    }
)
"""OpenTelemetry ``gen_ai.provider.name`` values and the genai-prices provider id each one maps to.

``None`` means "no price list of its own: find the provider from the model name". A provider name
not in this table is looked up as a genai-prices id (``together``, ``openrouter``, ...), then by
genai-prices' own provider matching, then from the model name.
"""

_ZERO = Decimal(0)
_MTOK = Decimal(1_000_000)
_DEC_CTX = Context(prec=28, rounding=ROUND_HALF_EVEN)
"""Python's default Decimal context, pinned so that a host app's own context cannot round our money."""

_MAX_RESOLVED = 4096
"""Bound of the (provider, model, tier) resolution cache; the oldest entry is dropped beyond it."""
_MAX_TRACKED = 10_000
"""Bound of the unpriced counters and of the set of warned-about models."""

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
    """The negotiated-discount multiplier applied to the list price (see :func:`set_discount`)."""

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


_INTERNAL_ERROR_COST = Cost.unpriced("internal error in costtrace pricing (logged as 'costtrace' error)")


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


# --------------------------------------------------------------------------------------------------
# Time constraints (dated prices, time-of-day prices), compiled for cheap per-call checks


@dataclass(frozen=True, slots=True)
class _Since:
    """A price that starts on a (UTC) date: genai-prices' ``StartDateConstraint``."""

    start: date

    def active(self, at_date: date, at_time: time) -> bool:
        return at_date >= self.start


@dataclass(frozen=True, slots=True)
class _Daily:
    """A price for a daily UTC time window: genai-prices' ``TimeOfDateConstraint``."""

    start: time
    end: time

    def active(self, at_date: date, at_time: time) -> bool:
        if self.end < self.start:  # the window crosses midnight
            return at_time >= self.start or at_time < self.end
        return self.start <= at_time < self.end


_Constraint = _Since | _Daily | None


def _compile_constraint(constraint: object) -> _Constraint:
    if constraint is None:
        return None
    start_date = getattr(constraint, "start_date", None)
    if isinstance(start_date, date):
        return _Since(start_date)
    start_time = getattr(constraint, "start_time", None)
    end_time = getattr(constraint, "end_time", None)
    if isinstance(start_time, time) and isinstance(end_time, time):
        return _Daily(_naive_utc_time(start_time), _naive_utc_time(end_time))
    raise TypeError(f"unsupported genai-prices price constraint {constraint!r}")


def _naive_utc_time(value: time) -> time:
    if value.tzinfo is None:
        return value
    as_utc = datetime.combine(date(1970, 1, 1), value).astimezone(UTC)
    return as_utc.time()


def _is_active(constraint: _Constraint, at_date: date, at_time: time) -> bool:
    return constraint is None or constraint.active(at_date, at_time)


def _utc_date_time(at: datetime | None) -> tuple[date, time]:
    if at is None:
        at = datetime.now(UTC)
    elif at.tzinfo is not None:
        at = at.astimezone(UTC)
    # Naive datetimes are UTC, as in genai-prices.
    return at.date(), at.time()


# --------------------------------------------------------------------------------------------------
# genai-prices data, loaded on first use


class _CatalogData:
    """genai-prices' bundled providers, indexed; built once per process on the first lookup."""

    def __init__(self) -> None:
        from importlib.metadata import version

        # importlib keeps the 1.5 MB data module out of static analysis and out of `import costtrace`.
        data = importlib.import_module("genai_prices.data")
        data_units = importlib.import_module("genai_prices.data_units")
        units = importlib.import_module("genai_prices.units")
        validation = importlib.import_module("genai_prices.validation")
        snapshot = importlib.import_module("genai_prices.data_snapshot")

        self.providers: list[gp_types.Provider] = data.providers
        self.version = version("genai-prices")
        self.source = f"genai-prices {self.version}"
        self.registry: Any = units.UnitRegistry(data_units.unit_data)
        self.price_keys: frozenset[str] = frozenset(unit.price_key for unit in self.registry.units.values())
        self.validate_priced_units: Callable[[Any, Any], None] = validation.validate_priced_units
        self.find_provider_by_id: Callable[[list[gp_types.Provider], str], gp_types.Provider | None] = (
            snapshot.find_provider_by_id
        )
        self.owner_of_model: dict[int, str] = {
            id(model): provider.id for provider in self.providers for model in provider.models
        }


_data_lock = threading.Lock()
_data: _CatalogData | None = None


def _catalog_data() -> _CatalogData:
    global _data
    if _data is None:
        with _data_lock:
            if _data is None:
                _data = _CatalogData()
    return _data


class _CatalogModel:
    """One genai-prices model as seen from one (provider, price context): its prices by time."""

    def __init__(
        self,
        data: _CatalogData,
        model: gp_types.ModelInfo,
        provider_id: str,
        context: Mapping[str, str],
        use_variants: bool,
    ) -> None:
        from genai_prices.types import ModelPrice

        self._data = data
        self.model_id = model.id
        self.provider_id = provider_id
        if isinstance(model.prices, ModelPrice):
            self.conditions: tuple[tuple[_Constraint, Any], ...] = ((None, model.prices),)
        else:
            self.conditions = tuple((_compile_constraint(c.constraint), c.prices) for c in model.prices)
        variants: list[tuple[_Constraint, Any]] = []
        if context and use_variants:
            variants.extend(
                (_compile_constraint(variant.constraint), variant.prices)
                for variant in model.price_variants or ()
                if all(context.get(key) == value for key, value in variant.when.items())
            )
        self.variants = tuple(variants)
        self.timed = any(c is not None for c, _ in self.conditions) or any(c is not None for c, _ in variants)
        self._plans: dict[tuple[int, tuple[int, ...]], _Plan | str] = {}

    def plan_at(self, at_date: date, at_time: time) -> _Plan | str:
        """The plan in force at the given UTC date and time, or why there is none."""
        # As genai-prices: the last active conditional price wins; none active -> the first one.
        index = 0
        for n in range(len(self.conditions) - 1, -1, -1):
            if _is_active(self.conditions[n][0], at_date, at_time):
                index = n
                break
        active = tuple(n for n, (c, _) in enumerate(self.variants) if _is_active(c, at_date, at_time))
        key = (index, active)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._compile(index, active)
            self._plans[key] = plan  # benign race: both threads compile the same plan
        return plan

    def _compile(self, index: int, active: tuple[int, ...]) -> _Plan | str:
        from genai_prices.types import TieredPrices

        constraint, standard = self.conditions[index]
        prices: dict[str, Any] = {k: v for k, v in vars(standard).items() if v is not None}
        dates = [constraint.start] if isinstance(constraint, _Since) else []
        overrides: dict[str, Any] = {}
        for n in active:
            variant_constraint, variant_prices = self.variants[n]
            for key, value in vars(variant_prices).items():
                if value is not None:
                    overrides.setdefault(key, value)
            if isinstance(variant_constraint, _Since):
                dates.append(variant_constraint.start)
        prices.update(overrides)
        registry = self._data.registry
        # genai-prices ignores (with a warning) price keys it does not know; so do we.
        units = [registry.unit_for_price_key(key) for key in prices if key in self._data.price_keys]
        try:
            self._data.validate_priced_units(units, registry)
        except ValueError as exc:
            return f"genai-prices data for model {self.model_id!r} is inconsistent: {exc}"
        known = {unit.price_key for unit in units}
        carried = known & _SLOT_BY_PRICE_KEY.keys()
        if known and not carried:
            return (
                f"model {self.model_id!r} ({self.provider_id}) is priced only per "
                f"{', '.join(sorted(known))}, which costtrace does not measure"
            )
        rates: list[Decimal | TieredPrices | None] = [None] * len(_SLOT_PRICE_KEYS)
        for key in carried:
            rates[_SLOT_BY_PRICE_KEY[key]] = prices[key]
        return _make_plan(
            rates,
            price_source=self._data.source,
            price_date=max(dates).isoformat() if dates else None,
            model_id=self.model_id,
            provider_id=self.provider_id,
            list_price=True,
        )


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


# --------------------------------------------------------------------------------------------------
# Overrides and discounts


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _model_matches(pattern: str, is_glob: bool, model: str) -> bool:
    return fnmatch.fnmatchcase(model, pattern) if is_glob else model == pattern


def _model_specificity(pattern: str, is_glob: bool) -> tuple[int, int]:
    # An exact name beats any glob; a glob with more literal characters beats a shorter one.
    return (0 if is_glob else 1, len(pattern.replace("*", "").replace("?", "")))


@dataclass(frozen=True, slots=True)
class _Override:
    model: str
    pattern: str
    is_glob: bool
    provider: str | None
    service_tier: str | None
    batch: bool | None
    start_date: date | None
    plan: _Plan
    source: str
    seq: int

    def matches(self, model: str, providers: frozenset[str], service_tier: str | None, batch: bool) -> bool:
        return (
            _model_matches(self.pattern, self.is_glob, model)
            and (self.provider is None or self.provider in providers)
            and (self.service_tier is None or self.service_tier == service_tier)
            and (self.batch is None or self.batch == batch)
        )

    def priority(self) -> tuple[Any, ...]:
        return (
            _model_specificity(self.pattern, self.is_glob),
            self.provider is not None,
            self.service_tier is not None,
            self.batch is not None,
            self.start_date or date.min,
            self.seq,
        )


@dataclass(frozen=True, slots=True)
class _Discount:
    provider: str
    model: str | None
    is_glob: bool
    multiplier: Decimal
    source: str
    seq: int


_PRICE_FIELDS = (
    "input_per_mtok",
    "output_per_mtok",
    "cache_read_per_mtok",
    "cache_write_per_mtok",
    "cache_write_1h_per_mtok",
    "reasoning_per_mtok",
)
_PRICE_ENTRY_KEYS = frozenset(("model", "provider", "start_date", "service_tier", "batch", *_PRICE_FIELDS))
_DISCOUNT_ENTRY_KEYS = frozenset(("provider", "model", "multiplier"))


def _parse_amount(value: object, field: str, where: str) -> Decimal:
    return _validate.price_per_mtok(value, f"{where}: {field}", hint=f"write USD per million tokens, e.g. {field}=2.5")


def _parse_optional_str(value: object, field: str, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {field}={value!r} must be a non-empty string or omitted")
    return value.strip().lower()


def _parse_start_date(value: object, where: str) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        raise ConfigError(f"{where}: start_date={value!r} must be a date, not a datetime, e.g. 2025-06-01")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"{where}: start_date={value!r} is not an ISO date; write e.g. start_date='2025-06-01'")


def _normalise_service_tier(service_tier: str | None, batch: bool) -> tuple[str | None, bool]:
    if service_tier is None:
        return None, batch
    tier = service_tier.strip().lower()
    if tier == "batch":  # Anthropic reports batch requests as service_tier "batch"
        return None, True
    return tier or None, batch


# --------------------------------------------------------------------------------------------------
# Unpriced bookkeeping (process-wide: one warning per (provider, model) per process)


_unpriced_lock = threading.Lock()
_unpriced_counts: dict[tuple[str | None, str], int] = {}
_warned: set[tuple[str | None, str, str]] = set()
_OVERFLOW_KEY = ("<other>", "<other>")


def _note_unpriced(provider: str | None, model: str, reason: str, kind: str | None) -> None:
    key = (provider, model)
    with _unpriced_lock:
        if key not in _unpriced_counts and len(_unpriced_counts) >= _MAX_TRACKED:
            key = _OVERFLOW_KEY
        _unpriced_counts[key] = _unpriced_counts.get(key, 0) + 1
        if kind is None:
            return
        warn_key = (provider, model, kind)
        if warn_key in _warned or len(_warned) >= _MAX_TRACKED:
            return
        _warned.add(warn_key)
    hint = (
        "set a price with costtrace.price.catalog.set_price(...) or a prices file (docs/pricing.md)"
        if kind == "no price"
        else "check what the instrumentation passes to PriceCatalog.cost()"
    )
    logger.warning(
        "costtrace: cannot price model %r (provider %r): %s. Its calls are recorded as unpriced, not $0; %s.",
        model,
        provider,
        reason,
        hint,
    )


def unpriced_counts() -> dict[tuple[str | None, str], int]:
    """How many cost lookups were unpriced, by (provider, model) as passed to ``cost()``, this process.

    Past 10,000 distinct pairs, further ones are counted under ``("<other>", "<other>")``.

    Example:
        >>> from costtrace.usage import Usage
        >>> _ = PriceCatalog().cost(Usage(input_tokens=1), provider="openai", model="no-such-model-x")
        >>> unpriced_counts()[("openai", "no-such-model-x")] >= 1
        True
    """
    with _unpriced_lock:
        return dict(_unpriced_counts)


def _reset_unpriced_for_tests() -> None:
    with _unpriced_lock:
        _unpriced_counts.clear()
        _warned.clear()


# --------------------------------------------------------------------------------------------------
# The catalog


@dataclass(frozen=True, slots=True)
class _Entry:
    """Everything needed to price one (provider, model, tier) key, resolved once."""

    overrides: tuple[_Override, ...]
    """Matching overrides, highest priority first; the first one in force at the call wins."""
    catalog: _CatalogModel | None
    static_plan: _Plan | None
    """The plan when nothing depends on the call's time (the common case)."""
    unpriced_reason: str | None
    """Why the catalog has no price (when ``catalog`` is None)."""
    discount: Decimal | None


_ResolveKey = tuple[str | None, str, str | None, bool, tuple[tuple[str, str], ...]]


@dataclass(frozen=True, slots=True)
class _PricePeriods:
    """A model's standard prices over time (:meth:`PriceCatalog._price_periods`)."""

    periods: tuple[tuple[date | None, _Plan, Decimal | None], ...]
    """(start date or None, plan, discount multiplier or None), oldest first."""
    unpriced_reason: str | None
    """Why there is no price at all (``periods`` empty)."""
    time_of_day: bool
    """Some price depends on the time of day (read at 12:00 UTC here)."""


@dataclass(frozen=True)
class _Alias:
    target: str
    provider: str | None
    model: str
    source: str


_GLOB_CHARS = frozenset("*?[")


def _parse_aliases(aliases: object, *, where: str, source: str) -> dict[str, _Alias]:
    """``{alias: "provider/model"}`` checked whole, keyed by the lower-cased alias."""
    if not isinstance(aliases, Mapping):
        raise ConfigError(f"{where} must map model names to 'provider/model' strings, got {aliases!r}")
    parsed: dict[str, _Alias] = {}
    for alias, target in aliases.items():
        if not isinstance(alias, str) or not alias.strip():
            raise ConfigError(f"{where}: alias {alias!r} must be a non-empty model name")
        if _GLOB_CHARS & set(alias):
            raise ConfigError(f"{where}: alias {alias!r} must be an exact model name; for a glob use set_price")
        if not isinstance(target, str) or not target.strip():
            raise ConfigError(
                f"{where}: {alias!r} -> {target!r}: the target must be 'provider/model', e.g. 'openai/gpt-4o-mini'"
            )
        provider, slash, model = target.strip().partition("/")
        if not slash:
            provider, model = "", provider
        if slash and (not provider.strip() or not model.strip()):
            raise ConfigError(
                f"{where}: {alias!r} -> {target!r}: both parts of 'provider/model' must be non-empty, "
                "e.g. 'openai/gpt-4o-mini'"
            )
        if model.strip().lower() == alias.strip().lower():
            raise ConfigError(f"{where}: {alias!r} -> {target!r} names the alias itself; it needs no alias")
        parsed[alias.strip().lower()] = _Alias(target.strip(), provider.strip() or None, model.strip(), source)
    return parsed


class PriceCatalog:
    """Prices LLM calls from genai-prices' data plus your overrides and discounts.

    Thread-safe. Most code uses the process-wide :func:`default_catalog`; make your own for
    isolation (tests, several price books).

    Example:
        >>> from costtrace.usage import Usage
        >>> catalog = PriceCatalog()
        >>> catalog.set_price("my-llama", input_per_mtok=0, output_per_mtok=0)
        >>> c = catalog.cost(Usage(input_tokens=1000, output_tokens=10), provider=None, model="my-llama")
        >>> c.priced, c.total_usd, c.price_source
        (True, Decimal('0'), 'override')
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._overrides: dict[tuple[Any, ...], _Override] = {}
        self._discounts: dict[tuple[str, str | None], _Discount] = {}
        self._seq = 0
        self._entries: dict[_ResolveKey, _Entry] = {}
        self._aliases: dict[str, _Alias] = {}

    # -- run time ----------------------------------------------------------------------------------

    @guarded("pricing.cost", default=_INTERNAL_ERROR_COST)
    def cost(
        self,
        usage: Usage,
        *,
        provider: str | None,
        model: str,
        at: datetime | None = None,
        service_tier: str | None = None,
        batch: bool = False,
        price_context: Mapping[str, str] | None = None,
    ) -> Cost:
        """The cost of one call. Never raises: problems give an unpriced :class:`Cost` with a reason.

        Args:
            usage: The call's token counts.
            provider: OpenTelemetry ``gen_ai.provider.name`` (``openai``, ``azure.ai.openai``, ...),
                a genai-prices provider id, or ``None`` to find the provider from the model name.
            model: The model name as sent to or returned by the provider.
            at: When the call was made (default: now); selects dated and time-of-day prices.
                Naive datetimes are UTC.
            service_tier: The tier that served the call (``default``, ``flex``, ``priority``, ...);
                ``"batch"`` means ``batch=True``.
            batch: The call went through a batch API.
            price_context: Other genai-prices price-variant keys, e.g. ``{"speed": "fast"}``.

        Example:
            >>> from costtrace.usage import Usage
            >>> c = PriceCatalog().cost(Usage(input_tokens=1000, output_tokens=100),
            ...                         provider="openai", model="gpt-4o")
            >>> c.priced, c.provider_id, c.model_id
            (True, 'openai', 'gpt-4o')
        """
        if not isinstance(model, str) or not model.strip() or not isinstance(provider, (str, type(None))):
            reason = f"invalid call: model={model!r} must be a non-empty str and provider={provider!r} a str or None"
            _note_unpriced(
                provider if isinstance(provider, str) else None,
                model if isinstance(model, str) else repr(model),
                reason,
                "invalid call",
            )
            return Cost.unpriced(reason)
        problem = _usage_problem(usage)
        if problem is not None:
            kind = None if problem.startswith("no usage") else "invalid usage"
            _note_unpriced(provider, model, problem, kind)
            return Cost.unpriced(problem)
        if service_tier is not None or batch:
            service_tier, batch = _normalise_service_tier(service_tier, batch)
        ctx_key = tuple(sorted(price_context.items())) if price_context else ()
        key: _ResolveKey = (provider, model, service_tier, batch, ctx_key)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._resolve(key)
        if entry.static_plan is not None:
            return _apply_plan(entry.static_plan, usage, entry.discount)
        plan = self._plan_at(entry, at)
        if isinstance(plan, str):
            _note_unpriced(provider, model, plan, "no price")
            return Cost.unpriced(plan)
        return _apply_plan(plan, usage, entry.discount if plan.list_price else None)

    @guarded("pricing.is_priced", default=False)
    def is_priced(
        self,
        provider: str | None,
        model: str,
        *,
        at: datetime | None = None,
        service_tier: str | None = None,
        batch: bool = False,
    ) -> bool:
        """Whether calls of ``model`` (at ``at``, default now) get a price. Never raises.

        Example:
            >>> PriceCatalog().is_priced("openai", "no-such-model-x")
            False
        """
        if service_tier is not None or batch:
            service_tier, batch = _normalise_service_tier(service_tier, batch)
        key: _ResolveKey = (provider, model, service_tier, batch, ())
        entry = self._entries.get(key) or self._resolve(key)
        if entry.static_plan is not None:
            return True
        return not isinstance(self._plan_at(entry, at), str)

    def _plan_at(self, entry: _Entry, at: datetime | None) -> _Plan | str:
        at_date, at_time = _utc_date_time(at)
        for override in entry.overrides:
            if override.start_date is None or override.start_date <= at_date:
                return override.plan
        if entry.catalog is None:
            reason = entry.unpriced_reason or "no price"
            if entry.overrides:
                first = min(o.start_date for o in entry.overrides if o.start_date is not None)
                reason += f"; your override starts {first.isoformat()}, after the call ({at_date.isoformat()})"
            return reason
        return entry.catalog.plan_at(at_date, at_time)

    def _price_periods(self, provider: str | None, model: str) -> _PricePeriods:
        """The standard-tier prices of ``model`` as dated periods, for exporting them to another tool.

        Each period is (start date or ``None`` for "since always", plan, discount multiplier), in
        date order, consecutive equal prices merged; a period is left out while the model has no price.
        Time-of-day prices are read at 12:00 UTC and flagged. Raises nothing a lookup would not.
        """
        key: _ResolveKey = (provider, model, None, False, ())
        entry = self._entries.get(key) or self._resolve(key)
        if entry.static_plan is not None:
            return _PricePeriods(((None, entry.static_plan, entry.discount),), None, False)
        starts: set[date] = {o.start_date for o in entry.overrides if o.start_date is not None}
        time_of_day = False
        if entry.catalog is not None:
            for constraint, _ in (*entry.catalog.conditions, *entry.catalog.variants):
                if isinstance(constraint, _Since):
                    starts.add(constraint.start)
                elif isinstance(constraint, _Daily):
                    time_of_day = True
        periods: list[tuple[date | None, _Plan, Decimal | None]] = []
        reason: str | None = None
        for start in (None, *sorted(starts)):
            at = datetime.combine(start or date(1970, 1, 1), time(12), UTC)
            plan = self._plan_at(entry, at)
            if isinstance(plan, str):
                reason = plan
                continue
            discount = entry.discount if plan.list_price else None
            if periods and (periods[-1][1].flat, periods[-1][1].tiered, periods[-1][2]) == (
                plan.flat,
                plan.tiered,
                discount,
            ):
                continue
            periods.append((start, plan, discount))
        return _PricePeriods(tuple(periods), None if periods else reason, time_of_day)

    # -- resolution (once per key, under the lock) -------------------------------------------------

    def _resolve(self, key: _ResolveKey) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                return entry
            entry = self._build_entry(*key)
            if len(self._entries) >= _MAX_RESOLVED:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = entry
            return entry

    def _build_entry(
        self,
        provider: str | None,
        model: str,
        service_tier: str | None,
        batch: bool,
        ctx_key: tuple[tuple[str, str], ...],
        follow_alias: bool = True,
    ) -> _Entry:
        model_lower = model.strip().lower()
        provider_lower = provider.strip().lower() if provider else None
        names = _provider_names(provider_lower)
        overrides = sorted(
            (o for o in self._overrides.values() if o.matches(model_lower, names, service_tier, batch)),
            key=_Override.priority,
            reverse=True,
        )
        alias = self._aliases.get(model_lower) if follow_alias else None
        if alias is not None and not overrides:
            # A name only your gateway knows (a LiteLLM proxy's "my-gpt"): priced as the model it stands for.
            entry = self._build_entry(alias.provider, alias.model, service_tier, batch, ctx_key, follow_alias=False)
            if entry.unpriced_reason is not None:
                entry = dataclasses.replace(
                    entry, unpriced_reason=f"{entry.unpriced_reason} (model alias {model!r} -> {alias.target!r})"
                )
            return entry
        for n, override in enumerate(overrides):
            if override.start_date is None:
                overrides = overrides[: n + 1]  # nothing after an always-valid override is reachable
                break
        if overrides and overrides[0].start_date is None:
            return _Entry(tuple(overrides), None, overrides[0].plan, None, None)

        context = dict(ctx_key)
        if service_tier is not None:
            context["service_tier"] = service_tier
        if batch:
            context["processing"] = "batch"
        catalog, call_provider_id, reason = _lookup_catalog(provider_lower, model_lower, context)
        discount = self._discount_for(model_lower, names | {call_provider_id} if call_provider_id else names)
        if catalog is not None and not catalog.timed and not overrides:
            plan = catalog.plan_at(date.min, time.min)
            if isinstance(plan, _Plan):
                return _Entry((), catalog, plan, None, discount)
        return _Entry(tuple(overrides), catalog, None, reason, discount)

    def _discount_for(self, model_lower: str, providers: frozenset[str] | set[str]) -> Decimal | None:
        best: tuple[Any, ...] | None = None
        multiplier: Decimal | None = None
        for d in self._discounts.values():
            if d.provider not in providers:
                continue
            if d.model is not None and not _model_matches(d.model, d.is_glob, model_lower):
                continue
            rank = (
                d.model is not None,
                _model_specificity(d.model, d.is_glob) if d.model else (0, 0),
                d.seq,
            )
            if best is None or rank > best:
                best, multiplier = rank, d.multiplier
        return multiplier

    # -- configuration (raises ConfigError) --------------------------------------------------------

    def set_price(
        self,
        model: str,
        *,
        provider: str | None = None,
        input_per_mtok: Number,
        output_per_mtok: Number,
        cache_read_per_mtok: Number | None = None,
        cache_write_per_mtok: Number | None = None,
        cache_write_1h_per_mtok: Number | None = None,
        reasoning_per_mtok: Number | None = None,
        start_date: date | str | None = None,
        service_tier: str | None = None,
        batch: bool | None = None,
    ) -> None:
        """State the price of a model (fine-tuned, self-hosted, negotiated). Wins over genai-prices.

        Rates are USD per million tokens. A rate left out follows genai-prices' rules: cache reads or
        writes without their own rate pay the input rate, reasoning tokens pay the output rate. A
        model priced at 0 is priced (total 0), not unpriced.

        Args:
            model: The model name, case-insensitive; ``*``, ``?`` and ``[...]`` make it a glob, e.g.
                ``"ft:gpt-4o-mini:*"``. An exact name beats a glob; a longer glob beats a shorter.
            provider: Limit the price to calls whose provider is this name (the OTel name or the
                genai-prices id it maps to, e.g. ``"azure"`` matches ``"azure.ai.openai"``).
            input_per_mtok: Uncached input tokens.
            output_per_mtok: Output tokens (reasoning included unless ``reasoning_per_mtok``).
            cache_read_per_mtok: Cache-read input tokens.
            cache_write_per_mtok: Cache-write input tokens (the 5-minute TTL rate).
            cache_write_1h_per_mtok: Cache writes with a one-hour TTL; needs ``cache_write_per_mtok``.
            reasoning_per_mtok: Reasoning output tokens, if billed at their own rate.
            start_date: The price applies to calls on or after this (UTC) date; earlier calls use
                the previous price (an older override, or genai-prices).
            service_tier: Apply only to calls served by this tier (``flex``, ``priority``, ...).
            batch: ``True``: batch calls only; ``False``: non-batch only; ``None``: both.

        Raises:
            ConfigError: A value is invalid; the message names it and the fix.

        Example:
            >>> catalog = PriceCatalog()
            >>> catalog.set_price("ft:gpt-4o-mini:*", provider="openai",
            ...                   input_per_mtok="0.30", output_per_mtok="1.20", cache_read_per_mtok="0.15")
        """
        self._add_override(
            {
                "model": model,
                "provider": provider,
                "input_per_mtok": input_per_mtok,
                "output_per_mtok": output_per_mtok,
                "cache_read_per_mtok": cache_read_per_mtok,
                "cache_write_per_mtok": cache_write_per_mtok,
                "cache_write_1h_per_mtok": cache_write_1h_per_mtok,
                "reasoning_per_mtok": reasoning_per_mtok,
                "start_date": start_date,
                "service_tier": service_tier,
                "batch": batch,
            },
            where=f"set_price({model!r})",
            source="override",
        )

    def set_discount(self, provider: str, multiplier: Number, *, model: str | None = None) -> None:
        """Apply a negotiated discount to genai-prices' list prices of a provider (optionally a model).

        The multiplier is the fraction of the list price you pay: ``0.8`` is 20% off. A model's
        discount beats its provider's. Discounts do not apply to prices you set yourself
        (:meth:`set_price`, price files): those are already what you pay.

        Args:
            provider: The provider name (OTel name or genai-prices id).
            multiplier: In (0, 1].
            model: Limit to this model name or glob.

        Raises:
            ConfigError: The multiplier is not a number in (0, 1].

        Example:
            >>> PriceCatalog().set_discount("azure.ai.openai", 0.8)
        """
        self._add_discount(
            {"provider": provider, "multiplier": multiplier, "model": model},
            where=f"set_discount({provider!r})",
            source="override",
        )

    def set_model_alias(self, alias: str, target: str) -> None:
        """Price calls of the model name ``alias`` as ``target``: a name only your gateway knows.

        A LiteLLM proxy (or any gateway) maps its own model names to real models: the app asks the
        OpenAI SDK for ``my-gpt`` and the proxy sends ``gpt-4o-mini``. costtrace sees ``my-gpt``;
        this says what it costs. The alias is matched case-insensitively, as the request names the
        model or as the response does; a price you set for the alias name itself (``set_price``) wins.

        Args:
            alias: The model name as your calls carry it, exactly (no globs).
            target: ``"provider/model"`` (``"openai/gpt-4o-mini"``, ``"anthropic/claude-haiku-4-5"``;
                the provider as in ``set_price``), or a bare model name whose provider is then found
                from the name. Only the first ``/`` splits: ``"together/meta-llama/Llama-3.3-70B"``.

        Raises:
            ConfigError: An empty or glob alias, an empty target or part of it, or an alias to itself.

        Example:
            >>> catalog = PriceCatalog()
            >>> catalog.set_model_alias("my-gpt", "openai/gpt-4o-mini")
            >>> catalog.cost(Usage(input_tokens=1000, output_tokens=10), provider="openai", model="my-gpt").model_id
            'gpt-4o-mini'
        """
        self.set_model_aliases({alias: target})

    def set_model_aliases(self, aliases: Mapping[str, str]) -> None:
        """:meth:`set_model_alias` for each ``alias: target`` of ``aliases``; all are checked first."""
        parsed = _parse_aliases(aliases, where="model_aliases", source="override")
        with self._lock:
            self._aliases.update(parsed)
            self._entries.clear()

    def load_prices(self, path: str | os.PathLike[str]) -> None:
        """Load price overrides and discounts from a JSON or TOML file.

        The file holds ``prices`` (entries with :meth:`set_price`'s arguments) and ``discounts``
        (entries with ``provider``, ``multiplier`` and optional ``model``); see ``docs/pricing.md``.
        The whole file is checked before anything is applied; loading the same path again replaces
        what it loaded before.

        Raises:
            ConfigError: The file cannot be read or parsed, or an entry is invalid; the message
                names the file, the entry and the fix.

        Example:
            >>> import json, pathlib, tempfile
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     path = pathlib.Path(tmp, "prices.json")
            ...     _ = path.write_text(json.dumps(
            ...         {"prices": [{"model": "my-llm", "input_per_mtok": 0, "output_per_mtok": 0}]}))
            ...     PriceCatalog().load_prices(path)
        """
        resolved = Path(path).expanduser().resolve()
        raw = _read_price_file(resolved)
        source = f"config:{resolved}"
        where_file = str(resolved)
        unknown = set(raw) - {"prices", "discounts", "aliases"}
        if unknown:
            raise ConfigError(
                f"{where_file}: unknown top-level key(s) {sorted(unknown)}; allowed: 'prices', 'discounts', 'aliases'"
            )
        prices = raw.get("prices", [])
        discounts = raw.get("discounts", [])
        for name, value in (("prices", prices), ("discounts", discounts)):
            if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
                raise ConfigError(f"{where_file}: '{name}' must be a list of tables/objects, got {value!r}")
        parsed_prices = [
            self._parse_override(entry, where=_entry_where(where_file, "prices", n, entry), source=source)
            for n, entry in enumerate(prices)
        ]
        parsed_discounts = [
            _parse_discount(entry, where=_entry_where(where_file, "discounts", n, entry), source=source, seq=0)
            for n, entry in enumerate(discounts)
        ]
        parsed_aliases = _parse_aliases(raw.get("aliases", {}), where=f"{where_file}: aliases", source=source)
        with self._lock:
            self._overrides = {k: o for k, o in self._overrides.items() if o.source != source}
            self._discounts = {k: d for k, d in self._discounts.items() if d.source != source}
            self._aliases = {k: a for k, a in self._aliases.items() if a.source != source}
            self._aliases.update(parsed_aliases)
            for override in parsed_prices:
                self._store_override(override)
            for discount in parsed_discounts:
                self._store_discount(discount)
            self._entries.clear()

    def _add_override(self, entry: Mapping[str, object], *, where: str, source: str) -> None:
        override = self._parse_override(entry, where=where, source=source)
        with self._lock:
            self._store_override(override)
            self._entries.clear()

    def _add_discount(self, entry: Mapping[str, object], *, where: str, source: str) -> None:
        discount = _parse_discount(entry, where=where, source=source, seq=0)
        with self._lock:
            self._store_discount(discount)
            self._entries.clear()

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _store_override(self, override: _Override) -> None:
        override = _replace_seq(override, self._next_seq())
        key = (
            override.pattern,
            override.provider,
            override.service_tier,
            override.batch,
            override.start_date,
        )
        self._overrides.pop(key, None)
        self._overrides[key] = override

    def _store_discount(self, discount: _Discount) -> None:
        discount = _Discount(
            discount.provider,
            discount.model,
            discount.is_glob,
            discount.multiplier,
            discount.source,
            self._next_seq(),
        )
        self._discounts[(discount.provider, discount.model)] = discount

    def _parse_override(self, entry: Mapping[str, object], *, where: str, source: str) -> _Override:
        unknown = set(entry) - _PRICE_ENTRY_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed keys: {sorted(_PRICE_ENTRY_KEYS)}")
        model = entry.get("model")
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"{where}: model={model!r} must be a non-empty model name or glob")
        for required in ("input_per_mtok", "output_per_mtok"):
            if entry.get(required) is None:
                raise ConfigError(f"{where}: {required} is required (USD per million tokens; 0 if free)")
        amounts = {
            field: None if entry.get(field) is None else _parse_amount(entry.get(field), field, where)
            for field in _PRICE_FIELDS
        }
        if amounts["cache_write_1h_per_mtok"] is not None and amounts["cache_write_per_mtok"] is None:
            raise ConfigError(
                f"{where}: cache_write_1h_per_mtok needs cache_write_per_mtok (the 5-minute write rate) too"
            )
        batch = entry.get("batch")
        if batch is not None and not isinstance(batch, bool):
            raise ConfigError(f"{where}: batch={batch!r} must be true, false or omitted")
        provider = _parse_optional_str(entry.get("provider"), "provider", where)
        service_tier = _parse_optional_str(entry.get("service_tier"), "service_tier", where)
        start_date = _parse_start_date(entry.get("start_date"), where)
        rates: list[Decimal | None] = [None] * len(_SLOT_PRICE_KEYS)
        rates[_IN] = amounts["input_per_mtok"]
        rates[_OUT] = amounts["output_per_mtok"]
        rates[_CR] = amounts["cache_read_per_mtok"]
        rates[_CW] = amounts["cache_write_per_mtok"]
        rates[_CW1] = amounts["cache_write_1h_per_mtok"]
        rates[_RS] = amounts["reasoning_per_mtok"]
        name = model.strip()
        pattern = name.lower()
        plan = _make_plan(
            rates,
            price_source=source,
            price_date=start_date.isoformat() if start_date else None,
            model_id=name,
            provider_id=provider,
            list_price=False,
        )
        return _Override(
            model=name,
            pattern=pattern,
            is_glob=_is_glob(pattern),
            provider=provider,
            service_tier=service_tier,
            batch=batch,
            start_date=start_date,
            plan=plan,
            source=source,
            seq=0,
        )


def _replace_seq(override: _Override, seq: int) -> _Override:
    return _Override(
        override.model,
        override.pattern,
        override.is_glob,
        override.provider,
        override.service_tier,
        override.batch,
        override.start_date,
        override.plan,
        override.source,
        seq,
    )


def _parse_discount(entry: Mapping[str, object], *, where: str, source: str, seq: int) -> _Discount:
    unknown = set(entry) - _DISCOUNT_ENTRY_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed keys: {sorted(_DISCOUNT_ENTRY_KEYS)}")
    provider = _parse_optional_str(entry.get("provider"), "provider", where)
    if provider is None:
        raise ConfigError(f"{where}: provider is required, e.g. provider='azure.ai.openai'")
    model = _parse_optional_str(entry.get("model"), "model", where)
    value = entry.get("multiplier")
    if value is None:
        raise ConfigError(f"{where}: multiplier is required, e.g. multiplier=0.8 for 20% off the list price")
    multiplier = _validate.fraction(
        value,
        f"{where}: multiplier",
        zero=False,
        hint="it is the fraction of the list price you pay, in (0, 1], e.g. 0.8 for 20% off "
        "(use set_price for a price above list)",
    )
    return _Discount(provider, model, _is_glob(model) if model else False, multiplier, source, seq)


def _entry_where(file: str, section: str, index: int, entry: object) -> str:
    label = f"{file}: {section}[{index}]"
    if isinstance(entry, dict):
        name = entry.get("model") or entry.get("provider")
        if isinstance(name, str):
            label += f" ({name!r})"
    return label


def _read_price_file(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise ConfigError(f"{path}: unsupported prices file type {suffix!r}; use a .json or .toml file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read prices file ({exc.strerror}); check the path") from None
    try:
        raw = json.loads(data) if suffix == ".json" else _toml_loads(data.decode("utf-8"))
    except ValueError as exc:  # JSONDecodeError, TOMLDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected an object with 'prices' and/or 'discounts', got {type(raw).__name__}")
    return raw


def _toml_loads(text: str) -> dict[str, Any]:
    result: dict[str, Any] = tomllib.loads(text)
    return result


def _provider_names(provider_lower: str | None) -> frozenset[str]:
    """The names an override or discount may use for a call's provider."""
    if provider_lower is None:
        return frozenset()
    mapped = OTEL_PROVIDER_IDS.get(provider_lower)
    return frozenset((provider_lower, mapped) if mapped else (provider_lower,))


def _lookup_catalog(
    provider_lower: str | None, model_lower: str, context: Mapping[str, str]
) -> tuple[_CatalogModel | None, str | None, str]:
    """Find the genai-prices model; returns (model or None, the call's catalog provider id, reason)."""
    data = _catalog_data()
    gp_provider: gp_types.Provider | None = None
    model_ref = model_lower
    if provider_lower is not None:
        if provider_lower in OTEL_PROVIDER_IDS:
            mapped = OTEL_PROVIDER_IDS[provider_lower]
            gp_provider = data.find_provider_by_id(data.providers, mapped) if mapped else None
        elif provider_lower == "litellm":
            prefix, _, rest = model_lower.partition("/")
            if rest and (found := data.find_provider_by_id(data.providers, prefix)) is not None:
                gp_provider, model_ref = found, rest
        else:
            gp_provider = data.find_provider_by_id(data.providers, provider_lower)

    if gp_provider is None:
        # No provider given, or none of genai-prices' lists is the provider's: match by model name.
        for candidate in data.providers:
            if candidate.model_match is not None and candidate.model_match.is_match(model_ref):
                gp_provider = candidate
                break
        if gp_provider is None:
            where = f"provider {provider_lower!r} has no genai-prices list and " if provider_lower else ""
            return (
                None,
                None,
                f"unknown model {model_lower!r}: {where}no genai-prices provider matches the name",
            )

    gp_model = gp_provider.find_model(model_ref, all_providers=data.providers)
    if gp_model is None:
        return None, gp_provider.id, f"unknown model {model_lower!r} for provider {gp_provider.id!r}"
    owner = data.owner_of_model.get(id(gp_model), gp_provider.id)
    # As genai-prices: price variants (tier, batch) apply only to the provider's own models, not to
    # models borrowed from a fallback provider (Azure -> OpenAI).
    own_model = any(gp_model is m for m in gp_provider.models)
    return _CatalogModel(data, gp_model, owner, context, own_model), gp_provider.id, ""


# --------------------------------------------------------------------------------------------------
# The process-wide catalog


_default_lock = threading.Lock()
_default: PriceCatalog | None = None


def default_catalog() -> PriceCatalog:
    """The process-wide catalog, built on first use; loads ``COSTTRACE_PRICES_FILE`` if set.

    A bad prices file named by the environment variable does not raise here (this runs while
    recording): the error is logged on the ``costtrace`` logger and the file is skipped, so models
    only it priced are unpriced, not $0. Call :func:`load_prices` at start-up to fail fast instead.

    Example:
        >>> default_catalog() is default_catalog()
        True
    """
    global _default
    catalog = _default
    if catalog is not None:
        return catalog
    with _default_lock:
        if _default is None:
            catalog = PriceCatalog()
            path = os.environ.get("COSTTRACE_PRICES_FILE", "").strip()
            if path:
                try:
                    catalog.load_prices(path)
                except ConfigError as exc:
                    logger.error("costtrace: ignoring COSTTRACE_PRICES_FILE: %s", exc)
            _default = catalog
        return _default


def _reset_default_catalog_for_tests() -> None:
    global _default
    with _default_lock:
        _default = None


def set_price(
    model: str,
    *,
    provider: str | None = None,
    input_per_mtok: Number,
    output_per_mtok: Number,
    cache_read_per_mtok: Number | None = None,
    cache_write_per_mtok: Number | None = None,
    cache_write_1h_per_mtok: Number | None = None,
    reasoning_per_mtok: Number | None = None,
    start_date: date | str | None = None,
    service_tier: str | None = None,
    batch: bool | None = None,
) -> None:
    """:meth:`PriceCatalog.set_price` on the :func:`default_catalog`.

    Example:
        >>> set_price("my-self-hosted-llm", input_per_mtok=0, output_per_mtok=0)
    """
    default_catalog().set_price(
        model,
        provider=provider,
        input_per_mtok=input_per_mtok,
        output_per_mtok=output_per_mtok,
        cache_read_per_mtok=cache_read_per_mtok,
        cache_write_per_mtok=cache_write_per_mtok,
        cache_write_1h_per_mtok=cache_write_1h_per_mtok,
        reasoning_per_mtok=reasoning_per_mtok,
        start_date=start_date,
        service_tier=service_tier,
        batch=batch,
    )


def set_discount(provider: str, multiplier: Number, *, model: str | None = None) -> None:
    """:meth:`PriceCatalog.set_discount` on the :func:`default_catalog`.

    Example:
        >>> set_discount("azure.ai.openai", "0.85")
    """
    default_catalog().set_discount(provider, multiplier, model=model)


def set_model_alias(alias: str, target: str) -> None:
    """:meth:`PriceCatalog.set_model_alias` on the :func:`default_catalog`.

    Example:
        >>> set_model_alias("my-gpt", "openai/gpt-4o-mini")
    """
    default_catalog().set_model_alias(alias, target)


def set_model_aliases(aliases: Mapping[str, str]) -> None:
    """:meth:`PriceCatalog.set_model_aliases` on the :func:`default_catalog`."""
    default_catalog().set_model_aliases(aliases)


def load_prices(path: str | os.PathLike[str]) -> None:
    """:meth:`PriceCatalog.load_prices` on the :func:`default_catalog`.

    Example:
        >>> load_prices("prices.toml")  # doctest: +SKIP
    """
    default_catalog().load_prices(path)
