"""Price lookup: which price applies to one call.

A call is (provider, model, service tier, batch, price context) at a time. Resolving it:

- the provider: an OpenTelemetry ``gen_ai.provider.name`` maps to a genai-prices id
  (:data:`OTEL_PROVIDER_IDS`: ``azure.ai.openai`` -> ``azure``), else it is tried as a genai-prices id,
  else the provider is found from the model name;
- the model: your matching overrides (an exact name beats a glob), else an alias (``my-gpt`` ->
  ``openai/gpt-4o-mini``), else genai-prices' model matching;
- the time and tier: dated and time-of-day prices, service-tier and batch variants;
- a negotiated discount for the provider or the model.

:func:`_build_entry` does this once per key (the catalog caches the :class:`_Entry`); per call only the
dated choice remains (:func:`_plan_at`). A call nothing prices is counted (:func:`unpriced_counts`) and
warned about once. genai-prices' data is loaded here on the first lookup, not on ``import costtrace``.
"""

from __future__ import annotations

import fnmatch
import importlib
import logging
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from costtrace.errors import ConfigError
from costtrace.price.arithmetic import _SLOT_BY_PRICE_KEY, _SLOT_PRICE_KEYS, _make_plan, _Plan

if TYPE_CHECKING:
    from genai_prices import types as gp_types

__all__ = ["OTEL_PROVIDER_IDS", "unpriced_counts"]

logger = logging.getLogger("costtrace")

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

_MAX_TRACKED = 10_000
"""Bound of the unpriced counters and of the set of warned-about models."""


def _provider_names(provider_lower: str | None) -> frozenset[str]:
    """The names an override or discount may use for a call's provider."""
    if provider_lower is None:
        return frozenset()
    mapped = OTEL_PROVIDER_IDS.get(provider_lower)
    return frozenset((provider_lower, mapped) if mapped else (provider_lower,))


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
        batch_variants: list[bool] = []
        if context and use_variants:
            for variant in model.price_variants or ():
                if all(context.get(key) == value for key, value in variant.when.items()):
                    variants.append((_compile_constraint(variant.constraint), variant.prices))
                    batch_variants.append(variant.when.get("processing") == "batch")
        self.variants = tuple(variants)
        self.batch_variants = tuple(batch_variants)
        """Per variant: whether it is a batch price (``processing = batch``)."""
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
# Your overrides, discounts and aliases, as the catalog stores them, and how a call matches them


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


# --------------------------------------------------------------------------------------------------
# Resolution: one call key to the plans that may price it


def _normalise_service_tier(service_tier: str | None, batch: bool) -> tuple[str | None, bool]:
    if service_tier is None:
        return None, batch
    tier = service_tier.strip().lower()
    if tier == "batch":  # Anthropic reports batch requests as service_tier "batch"
        return None, True
    return tier or None, batch


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
    """A model's standard prices over time (:func:`_price_periods`)."""

    periods: tuple[tuple[date | None, _Plan, Decimal | None], ...]
    """(start date or None, plan, discount multiplier or None), oldest first."""
    unpriced_reason: str | None
    """Why there is no price at all (``periods`` empty)."""
    time_of_day: bool
    """Some price depends on the time of day (read at 12:00 UTC here)."""


def _build_entry(
    all_overrides: Collection[_Override],
    discounts: Collection[_Discount],
    aliases: Mapping[str, _Alias],
    provider: str | None,
    model: str,
    service_tier: str | None,
    batch: bool,
    ctx_key: tuple[tuple[str, str], ...],
    follow_alias: bool = True,
) -> _Entry:
    """Resolve one call key against your overrides, aliases and discounts, then genai-prices' data."""
    model_lower = model.strip().lower()
    provider_lower = provider.strip().lower() if provider else None
    names = _provider_names(provider_lower)
    overrides = sorted(
        (o for o in all_overrides if o.matches(model_lower, names, service_tier, batch)),
        key=_Override.priority,
        reverse=True,
    )
    alias = aliases.get(model_lower) if follow_alias else None
    if alias is not None and not overrides:
        # A name only your gateway knows (a LiteLLM proxy's "my-gpt"): priced as the model it stands for.
        entry = _build_entry(
            all_overrides, discounts, aliases, alias.provider, alias.model, service_tier, batch, ctx_key, False
        )
        if entry.unpriced_reason is not None:
            entry = replace(
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
    discount = _discount_for(discounts, model_lower, names | {call_provider_id} if call_provider_id else names)
    if catalog is not None and not catalog.timed and not overrides:
        plan = catalog.plan_at(date.min, time.min)
        if isinstance(plan, _Plan):
            return _Entry((), catalog, plan, None, discount)
    return _Entry(tuple(overrides), catalog, None, reason, discount)


def _discount_for(
    discounts: Collection[_Discount], model_lower: str, providers: frozenset[str] | set[str]
) -> Decimal | None:
    """The discount multiplier for a model of these providers: a model's beats its provider's."""
    best: tuple[Any, ...] | None = None
    multiplier: Decimal | None = None
    for d in discounts:
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


def _plan_at(entry: _Entry, at: datetime | None) -> _Plan | str:
    """The plan in force for a call at ``at`` (default now), or why there is none."""
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


def _has_batch_price(entry: _Entry, at: datetime | None) -> bool:
    """Whether a batch call's price at ``at`` is a batch price of its own, not the list price reused.

    Yours when the override in force was set for batch calls only (``batch=True``); else genai-prices'
    when a batch variant of the model is active.
    """
    at_date, at_time = _utc_date_time(at)
    for override in entry.overrides:
        if override.start_date is None or override.start_date <= at_date:
            return override.batch is True
    if entry.catalog is None:
        return False
    return any(
        is_batch and _is_active(constraint, at_date, at_time)
        for (constraint, _), is_batch in zip(entry.catalog.variants, entry.catalog.batch_variants, strict=True)
    )


def _price_periods(entry: _Entry) -> _PricePeriods:
    """The standard-tier prices of a resolved entry as dated periods (see :class:`_PricePeriods`)."""
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
        plan = _plan_at(entry, at)
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
        "set a price with costtrace.set_price(...) or a prices file (docs/pricing.md)"
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
        >>> from costtrace.price.catalog import PriceCatalog
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
