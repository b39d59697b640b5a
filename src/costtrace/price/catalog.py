"""Price catalog: the prices costtrace knows, and :class:`PriceCatalog`, which prices calls with them.

Prices come from the data shipped with `genai-prices <https://github.com/pydantic/genai-prices>`_
(providers, model-name matching, cache prices, tiered prices, dated prices, service-tier and batch
variants). On top of it you can state your own prices (fine-tuned, self-hosted, negotiated) with
:func:`set_price` or a JSON/TOML file (:func:`load_prices`, or ``COSTTRACE_PRICES_FILE``), negotiated
discounts with :func:`set_discount` and a gateway's own model names with :func:`set_model_alias`.
See ``docs/pricing.md``.

costtrace does not call ``genai_prices.calc_price`` per call: a (provider, model, tier) is resolved to
its price once (:mod:`~costtrace.price.lookup`), cached here, and each call then costs a few integer
subtractions and Decimal multiplications (:mod:`~costtrace.price.arithmetic`). The result equals
``calc_price`` (a property test checks it across the catalog).

Two rules hold everywhere:

- :meth:`PriceCatalog.cost` never raises; a problem becomes an unpriced :class:`Cost` with a reason.
- Cost is never invented: a model without a price is ``priced=False, total_usd=None``, never ``$0``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import tomllib
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from costtrace import _validate
from costtrace._internal import guarded
from costtrace.errors import ConfigError
from costtrace.price.arithmetic import (
    _CR,
    _CW,
    _CW1,
    _IN,
    _OUT,
    _RS,
    _SLOT_PRICE_KEYS,
    Cost,
    _apply_plan,
    _make_plan,
    _usage_problem,
)
from costtrace.price.lookup import (
    _Alias,
    _build_entry,
    _Discount,
    _Entry,
    _has_batch_price,
    _is_glob,
    _normalise_service_tier,
    _note_unpriced,
    _Override,
    _parse_aliases,
    _plan_at,
    _price_periods,
    _PricePeriods,
    _ResolveKey,
)
from costtrace.usage import Usage

__all__ = [
    "PriceCatalog",
    "default_catalog",
    "load_prices",
    "set_discount",
    "set_model_alias",
    "set_model_aliases",
    "set_price",
]

logger = logging.getLogger("costtrace")

Number = int | float | Decimal | str
"""A price as you may write it: ``2.5``, ``Decimal("2.5")`` or ``"2.5"`` (converted exactly to Decimal)."""

_MAX_RESOLVED = 4096
"""Bound of the (provider, model, tier) resolution cache; the oldest entry is dropped beyond it."""

_INTERNAL_ERROR_COST = Cost.unpriced("internal error in costtrace pricing (logged as 'costtrace' error)")


# --------------------------------------------------------------------------------------------------
# Your prices as you write them (set_price arguments, price-file entries)


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


# --------------------------------------------------------------------------------------------------
# The catalog


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
        plan = _plan_at(entry, at)
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
        return not isinstance(_plan_at(entry, at), str)

    @guarded("pricing.has_batch_price", default=False)
    def has_batch_price(self, provider: str | None, model: str, *, at: datetime | None = None) -> bool:
        """Whether batch calls of ``model`` (at ``at``, default now) have a batch price. Never raises.

        A batch price is genai-prices' batch rate for the provider's own model, or one you set with
        ``set_price(..., batch=True)``. Without one, ``cost(..., batch=True)`` charges the list price.

        Example:
            >>> PriceCatalog().has_batch_price("openai", "gpt-4o")
            True
        """
        key: _ResolveKey = (provider, model, None, True, ())
        return _has_batch_price(self._entries.get(key) or self._resolve(key), at)

    def _price_periods(self, provider: str | None, model: str) -> _PricePeriods:
        """The standard-tier prices of ``model`` as dated periods, for exporting them to another tool.

        Each period is (start date or ``None`` for "since always", plan, discount multiplier), in
        date order, consecutive equal prices merged; a period is left out while the model has no price.
        Time-of-day prices are read at 12:00 UTC and flagged. Raises nothing a lookup would not.
        """
        key: _ResolveKey = (provider, model, None, False, ())
        return _price_periods(self._entries.get(key) or self._resolve(key))

    # -- resolution (once per key, under the lock) -------------------------------------------------

    def _resolve(self, key: _ResolveKey) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                return entry
            entry = _build_entry(self._overrides.values(), self._discounts.values(), self._aliases, *key)
            if len(self._entries) >= _MAX_RESOLVED:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = entry
            return entry

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
