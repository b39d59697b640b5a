"""What-if re-pricing of recorded tasks under another model or route, and routing advice per feature.

:func:`whatif` answers "what would this feature have cost on gpt-4o alone, or as a cascade
gpt-4o-mini->gpt-4o?" from what the ledger recorded: each task's token need, each model's measured
failure rate on the feature, and the price catalog. :func:`advise` ranks the routes a feature
actually ran by cost per successful task (or TCO per task when a rework cost ``L`` is set), with the
evidence behind the ranking: sample sizes, 95% Wilson intervals, and warnings when the evidence is thin.

The what-if model, stated in every result's ``assumptions``:

- **Token need.** A task needs, per attempt, the tokens its FIRST recorded attempt used (input,
  output, cache and reasoning tokens as recorded, summed over the attempt's calls), on whatever model
  it runs. The first attempt is the one every task made, before any retry or escalation changed the
  prompt. A tokenizer that counts differently can be given as a per-model ``token_multipliers``.
- **Failure rates.** A model's failure rate is measured per attempt on the feature's tasks (all
  routes): an attempt on a model failed unless it is the task's last attempt and the task succeeded.
  A model with no recorded attempt needs a rate from you (``failure_rates``), else ``ConfigError``.
- **Route.** ``"m"``: every task makes one attempt on ``m``. ``"a->b"`` (a cascade): every task pays
  an attempt on ``a``; the share ``p_a`` that fails pays an attempt on ``b`` too, and so on. Successes
  = tasks x (1 - p_a x p_b x ...): the models are assumed to fail independently. No retries.
- **Prices** come from :func:`costtrace.price.catalog.default_catalog` at today's date, with the provider
  the ledger recorded for the model. Costs are summed in SQL and priced once per model: exact for
  per-token prices; a long-context tier is chosen by the mean input tokens per call.

Example:
    >>> w = whatif(engine, route="gpt-4o-mini->gpt-4o", filters=Filters(feature="support"))  # doctest: +SKIP
    >>> w.projected_cost_per_success_usd, w.recorded_cost_per_success_usd                    # doctest: +SKIP
    >>> print("\\n".join(w.assumptions))                                                      # doctest: +SKIP
    >>> for a in advise(engine, rework_cost_usd=Decimal(75)):                                # doctest: +SKIP
    ...     print(a.feature, a.best_route, a.warnings)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, Literal

from costtrace import _money
from costtrace.analysis.self_hosting import SelfHosting, project, scope_span, self_host_price
from costtrace.analysis.tco import (
    _CTX,
    ALL_TASKS,
    Amount,
    Filters,
    _amount,
    _rate,
    break_even,
    from_ledger,
    task_conditions,
    tco_per_task,
)
from costtrace.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from costtrace.price.arithmetic import Cost
    from costtrace.price.catalog import PriceCatalog

__all__ = [
    "Advice",
    "BreakEvenBound",
    "BreakEvenWins",
    "Filters",
    "ModelStep",
    "ReworkBreakEven",
    "RouteEvidence",
    "SelfHosting",
    "WhatIf",
    "advise",
    "parse_route",
    "rework_break_even",
    "whatif",
    "wilson_interval",
]

_ZERO = Decimal(0)
_ONE = Decimal(1)
_MTOK = Decimal(1_000_000)
Z_95 = Decimal("1.959963984540054")
"""The two-sided 95% standard normal quantile."""


# --------------------------------------------------------------------------------------------------
# Confidence


def wilson_interval(successes: int, tasks: int, z: Decimal = Z_95) -> tuple[Decimal, Decimal] | None:
    """The Wilson score interval of a success rate (95% by default); None when ``tasks`` is 0.

    Unlike the normal approximation it stays within [0, 1] and is sensible for small samples and
    rates near 0 or 1.

    Example:
        >>> lo, hi = wilson_interval(8, 10)
        >>> round(lo, 4), round(hi, 4)
        (Decimal('0.4902'), Decimal('0.9433'))
    """
    if tasks <= 0:
        return None
    if not 0 <= successes <= tasks:
        raise ValueError(f"successes={successes} must be between 0 and tasks={tasks}")
    with localcontext(_CTX):
        n = Decimal(tasks)
        p = Decimal(successes) / n
        z2 = z * z
        denominator = _ONE + z2 / n
        centre = (p + z2 / (2 * n)) / denominator
        half = z / denominator * (p * (_ONE - p) / n + z2 / (4 * n * n)).sqrt()
        return max(_ZERO, centre - half), min(_ONE, centre + half)


# --------------------------------------------------------------------------------------------------
# What-if


def parse_route(route: str) -> tuple[str, ...]:
    """The models of a route: ``"gpt-4o"`` -> ``("gpt-4o",)``, ``"a->b"`` -> ``("a", "b")``.

    Example:
        >>> parse_route("gpt-4o-mini -> gpt-4o")
        ('gpt-4o-mini', 'gpt-4o')
    """
    models = tuple(m.strip() for m in str(route).split("->"))
    if not models or any(not m for m in models):
        raise ConfigError(f"route={route!r} must name one model ('gpt-4o') or a cascade ('gpt-4o-mini->gpt-4o')")
    if len(set(models)) != len(models):
        raise ConfigError(f"route={route!r} names a model twice; a cascade escalates to a different model")
    return models


class UnknownFailureRate(ConfigError):
    """:func:`whatif` needs a failure rate for ``model``: it has no recorded attempt in the scope."""

    def __init__(self, message: str, *, model: str) -> None:
        super().__init__(message)
        self.model = model


@dataclass(frozen=True, slots=True)
class ModelStep:
    """One model of a projected route."""

    model: str
    provider: str | None
    """The provider the ledger recorded most often for the model (None: inferred from the model name)."""
    attempt_cost_usd: Decimal
    """Mean cost of one attempt (the recorded token need) per task on this model."""
    failure_rate: Decimal
    failure_rate_source: Literal["measured", "given"]
    attempts_sampled: int
    """Recorded attempts on this model in the scope (the failure rate's sample size)."""
    failed_attempts_sampled: int
    reach: Decimal
    """Share of tasks that get to this step (1 for the first; p_a for the second of a cascade ...)."""
    price_source: str
    price_date: str | None
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    """The rates used: the batch rates with ``batch``, after ``price_change``."""
    price_change: Decimal = _ZERO
    """The relative price change applied (0.2: +20%; -1: free)."""
    batch: bool = False


@dataclass(frozen=True, slots=True)
class WhatIf:
    """Recorded tasks re-priced under ``route``; see the module docstring for the model."""

    feature: str | None
    route: str
    tasks: int
    recorded_cost_usd: Decimal
    projected_cost_usd: Decimal
    projected_successes: Decimal
    projected_cost_per_success_usd: Decimal | None
    assumptions: list[str]
    recorded_successes: int = 0
    recorded_cost_complete: bool = True
    """False when recorded calls were unpriced: the recorded cost is then a lower bound."""
    rework_cost_usd: Decimal | None = None
    steps: tuple[ModelStep, ...] = field(default=())
    batch: bool = False
    """Re-priced at the providers' batch rates."""
    price_changes: dict[str, Decimal] = field(default_factory=dict)
    """Per model, the relative price change applied (0.2: +20%)."""
    self_hosting: SelfHosting | None = None
    """The route self-hosted against the route on the API, with the break-even monthly volume (asked for
    with ``self_host_monthly_usd``); see :mod:`costtrace.analysis.self_hosting`."""

    @property
    def recorded_cost_per_success_usd(self) -> Decimal | None:
        with localcontext(_CTX):
            return self.recorded_cost_usd / self.recorded_successes if self.recorded_successes else None

    @property
    def projected_success_rate(self) -> Decimal | None:
        with localcontext(_CTX):
            return self.projected_successes / self.tasks if self.tasks else None

    @property
    def recorded_tco_usd(self) -> Decimal | None:
        """Recorded spend + unsuccessful tasks x L (None without L)."""
        if self.rework_cost_usd is None:
            return None
        return self.recorded_cost_usd + (self.tasks - self.recorded_successes) * self.rework_cost_usd

    @property
    def projected_tco_usd(self) -> Decimal | None:
        """Projected spend + projected unsuccessful tasks x L (None without L)."""
        if self.rework_cost_usd is None:
            return None
        with localcontext(_CTX):
            return self.projected_cost_usd + (self.tasks - self.projected_successes) * self.rework_cost_usd

    @property
    def projected_tco_per_task_usd(self) -> Decimal | None:
        tco = self.projected_tco_usd
        with localcontext(_CTX):
            return None if tco is None or not self.tasks else tco / self.tasks

    @property
    def recorded_tco_per_task_usd(self) -> Decimal | None:
        tco = self.recorded_tco_usd
        with localcontext(_CTX):
            return None if tco is None or not self.tasks else tco / self.tasks


@dataclass(frozen=True, slots=True)
class _TokenNeed:
    calls: int
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_write_input_tokens: int
    cache_write_1h_input_tokens: int
    reasoning_output_tokens: int
    unknown_usage_calls: int


@dataclass(frozen=True, slots=True)
class _Rates:
    """Per-unit costs of a model, resolved from the catalog by probing (see :func:`_model_rates`)."""

    per_call: Decimal
    per_input: Decimal
    per_output: Decimal
    per_cache_read: Decimal
    """Relative to the input rate: a cache-read token is also an input token."""
    per_cache_write: Decimal
    per_cache_write_1h: Decimal
    """Relative to the cache-write rate."""
    per_reasoning: Decimal
    """Relative to the output rate."""
    price_source: str
    price_date: str | None

    def price(self, need: _TokenNeed) -> Decimal:
        with localcontext(_CTX):
            return (
                need.calls * self.per_call
                + need.input_tokens * self.per_input
                + need.output_tokens * self.per_output
                + need.cache_read_input_tokens * self.per_cache_read
                + need.cache_write_input_tokens * self.per_cache_write
                + need.cache_write_1h_input_tokens * self.per_cache_write_1h
                + need.reasoning_output_tokens * self.per_reasoning
            )


def _model_rates(
    catalog: PriceCatalog, provider: str | None, model: str, probe_input: int, *, batch: bool = False
) -> _Rates:
    """The marginal cost of each kind of token (and of a call) on ``model``, at ``probe_input`` input tokens.

    A price plan is affine in the token counts within one long-context tier, so pricing the summed
    usage with these marginal costs equals pricing each call, for calls in the probed tier. Raises
    ConfigError when the model has no price, or with ``batch`` no batch price.
    """
    from costtrace.usage import Usage

    if batch and not catalog.has_batch_price(provider, model):
        raise ConfigError(
            f"model {model!r} (provider {provider or 'inferred from the model name'}) has no batch price: "
            "its batch calls would be charged the list price, so a batch projection would be wrong; leave out "
            f"batch (--batch), or set one with costtrace.set_price({model!r}, ..., batch=True) or a prices file "
            "(docs/pricing.md)"
        )

    m = max(2, probe_input)

    def total(input_tokens: int = m, **counts: int) -> tuple[Decimal, Cost]:
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=counts.get("output_tokens", 0),
            cache_read_input_tokens=counts.get("cache_read_input_tokens", 0),
            cache_write_input_tokens=counts.get("cache_write_input_tokens", 0),
            cache_write_1h_input_tokens=counts.get("cache_write_1h_input_tokens", 0),
            reasoning_output_tokens=counts.get("reasoning_output_tokens", 0),
        )
        cost = catalog.cost(usage, provider=provider, model=model, batch=batch)
        if cost.total_usd is None:
            raise ConfigError(
                f"cannot price model {model!r} (provider {provider!r}): {cost.unpriced_reason}; set a price with "
                "costtrace.set_price(...) or a prices file (docs/pricing.md)"
            )
        return cost.total_usd, cost

    with localcontext(_CTX):
        base, cost = total()
        per_input = total(m + 1)[0] - base
        with_write = total(cache_write_input_tokens=1)[0]
        with_output = total(output_tokens=1)[0]
        return _Rates(
            per_call=base - m * per_input,
            per_input=per_input,
            per_output=with_output - base,
            per_cache_read=total(cache_read_input_tokens=1)[0] - base,
            per_cache_write=with_write - base,
            per_cache_write_1h=total(cache_write_input_tokens=1, cache_write_1h_input_tokens=1)[0] - with_write,
            per_reasoning=total(output_tokens=1, reasoning_output_tokens=1)[0] - with_output,
            price_source=cost.price_source,
            price_date=cost.price_date,
        )


def _scope_totals(engine: Engine, filters: Filters) -> tuple[int, int, int, int]:
    """(tasks, successes, cost nano-USD, unpriced calls) of the scope's tasks that made LLM calls."""
    import sqlalchemy as sa

    from costtrace.analysis.stats import scope_stats

    by_route = [r for r in scope_stats(engine, by=("route",), filters=filters) if r.key["route"] is not None]
    if by_route:  # from the rollups (raw rows where they do not apply): the same exact integers
        return (
            sum(r.tasks for r in by_route),
            sum(r.successes for r in by_route),
            sum(_money.to_nano(r.total_cost_usd) or 0 for r in by_route),
            sum(r.unpriced_calls for r in by_route),
        )

    from costtrace.spend import schema

    t = schema.tasks.c
    query = sa.select(
        sa.func.count(),
        sa.func.sum(sa.case((t.outcome == "success", 1), else_=0)),
        sa.func.sum(t.cost_nano_usd),
        sa.func.sum(t.unpriced_calls),
    ).where(*task_conditions(filters), t.route.is_not(None))
    with engine.connect() as conn:
        row = conn.execute(query).one()
    return int(row[0] or 0), int(row[1] or 0), int(row[2] or 0), int(row[3] or 0)


def _token_need(engine: Engine, filters: Filters) -> _TokenNeed:
    """Summed tokens of the first attempt of each of the scope's tasks (one aggregate query)."""
    import sqlalchemy as sa

    from costtrace.analysis.stats import model_sums

    routed = model_sums(engine, filters=filters, by=("route",))
    if routed is not None:  # the rollups' model cells
        names = ("calls", *(f"{n}_tokens" for n in ("input", "output")), "cache_read_input_tokens",
                 "cache_write_input_tokens", "cache_write_1h_input_tokens", "reasoning_output_tokens",
                 "unknown_usage_calls")  # fmt: skip
        totals = [sum(sums[f"first_{n}"] for (route,), sums in routed.items() if route is not None) for n in names]
        return _TokenNeed(*totals)

    from costtrace.spend import schema

    c, t = schema.calls.c, schema.tasks.c
    query = (
        sa.select(
            sa.func.count(),
            sa.func.sum(c.input_tokens),
            sa.func.sum(c.output_tokens),
            sa.func.sum(c.cache_read_input_tokens),
            sa.func.sum(c.cache_write_input_tokens),
            sa.func.sum(c.cache_write_1h_input_tokens),
            sa.func.sum(c.reasoning_output_tokens),
            sa.func.sum(sa.case((c.usage_source == "unknown", 1), else_=0)),
        )
        .select_from(schema.calls.join(schema.tasks, c.task_id == t.task_id))
        .where(*task_conditions(filters), t.route.is_not(None), c.attempt == 1)
    )
    with engine.connect() as conn:
        row = conn.execute(query).one()
    return _TokenNeed(*(int(v or 0) for v in row))


def _attempt_failures(engine: Engine, filters: Filters) -> dict[str, tuple[int, int]]:
    """Per model: (attempts, failed attempts) on the scope's tasks, in SQL.

    An attempt is a (task, attempt number, requested model) of the calls table; it failed unless it is
    the task's last attempt and the task succeeded.
    """
    import sqlalchemy as sa

    from costtrace.analysis.stats import model_sums

    per_model = model_sums(engine, filters=filters, by=("request_model",))
    if per_model is not None:  # the rollups' model cells
        return {
            str(model): (sums["attempts"], sums["failed_attempts"])
            for (model,), sums in per_model.items()
            if sums["attempts"]
        }

    from costtrace.spend import schema

    c, t = schema.calls.c, schema.tasks.c
    scope = sa.select(t.task_id, t.outcome).where(*task_conditions(filters)).subquery("scope")
    attempts = (
        sa.select(c.task_id, c.attempt, c.request_model)
        .join(scope, scope.c.task_id == c.task_id)
        .where(c.attempt.is_not(None))
        .distinct()
        .subquery("attempts")
    )
    last = (
        sa.select(c.task_id, sa.func.max(c.attempt).label("last_attempt"))
        .join(scope, scope.c.task_id == c.task_id)
        .group_by(c.task_id)
        .subquery("last")
    )
    succeeded = sa.and_(attempts.c.attempt == last.c.last_attempt, scope.c.outcome == "success")
    query = (
        sa.select(
            attempts.c.request_model,
            sa.func.count(),
            sa.func.sum(sa.case((succeeded, 0), else_=1)),
        )
        .select_from(
            attempts.join(last, last.c.task_id == attempts.c.task_id).join(scope, scope.c.task_id == attempts.c.task_id)
        )
        .group_by(attempts.c.request_model)
    )
    with engine.connect() as conn:
        return {str(model): (int(n), int(failed or 0)) for model, n, failed in conn.execute(query)}


def _providers(engine: Engine, models: tuple[str, ...]) -> dict[str, str]:
    """The provider recorded most often for each model, over the tasks' calls and the calls outside any task.

    (Calls of a task that was never written, e.g. its process crashed, are left out.) From the rollups'
    model cells plus one indexed statement for the calls outside tasks; from every call when the rollups
    do not apply.
    """
    import sqlalchemy as sa

    from costtrace.analysis.stats import Filters, model_sums
    from costtrace.spend import schema

    c, t = schema.calls.c, schema.tasks.c
    counts: dict[tuple[str, str], int] = {}
    tasks_calls = model_sums(engine, filters=Filters(), by=("request_model", "provider"))
    if tasks_calls is not None:
        for (model, provider), sums in tasks_calls.items():
            if model in models:
                counts[(model, provider)] = counts.get((model, provider), 0) + sums["calls"]
        outside = sa.and_(c.task_id.is_(None), c.request_model.in_(models))
    else:
        has_task = sa.exists(sa.select(t.task_id).where(t.task_id == c.task_id))
        outside = sa.and_(c.request_model.in_(models), sa.or_(c.task_id.is_(None), has_task))
    query = sa.select(c.request_model, c.provider, sa.func.count().label("n")).where(outside)
    with engine.connect() as conn:
        for model, provider, n in conn.execute(query.group_by(c.request_model, c.provider)):
            counts[(model, provider)] = counts.get((model, provider), 0) + int(n)
    best: dict[str, tuple[int, str]] = {}
    for (model, provider), n in counts.items():
        current = best.get(model)
        if current is None or (n, provider) > current:
            best[model] = (n, provider)
    return {model: provider for model, (_, provider) in best.items()}


def _fmt_rate(rate: Decimal) -> str:
    return f"{rate * 100:.1f}%"


def _fmt_change(change: Decimal) -> str:
    """``Decimal("0.2")`` -> ``+20%``, ``Decimal("-0.155")`` -> ``-15.5%``."""
    return f"{'+' if change >= 0 else '-'}{_plain(abs(change) * 100)}%"


def _price_change_text(change: Decimal, rates: _Rates) -> str:
    if change == -_ONE:
        return "; price change -100%: every price of the model set to 0 (free), as asked"
    factor = _ONE + change
    return (
        f"; price change {_fmt_change(change)}: every price x {_plain(factor)}, "
        f"${_plain(rates.per_input * factor * _MTOK)}/${_plain(rates.per_output * factor * _MTOK)} per MTok"
    )


def _plain(amount: Decimal, places: int | None = None) -> str:
    """``amount`` without trailing zeros or exponent (``2.5``, ``10``), optionally rounded to ``places``."""
    if places is not None:
        amount = amount.quantize(Decimal(1).scaleb(-places))
    return f"{amount.normalize():f}"


def whatif(
    engine: Engine,
    *,
    route: str,
    filters: Filters = ALL_TASKS,
    rework_cost_usd: Amount | None = None,
    failure_rates: Mapping[str, Amount] | None = None,
    token_multipliers: Mapping[str, Amount] | None = None,
    price_changes: Mapping[str, Amount] | None = None,
    batch: bool = False,
    self_host_monthly_usd: Amount | None = None,
    self_host_input_per_mtok: Amount | None = None,
    self_host_output_per_mtok: Amount | None = None,
    catalog: PriceCatalog | None = None,
) -> WhatIf:
    """Re-price the scope's recorded tasks as if they had run on ``route``.

    Args:
        engine: The ledger.
        route: ``"gpt-4o"`` (every task on one model) or ``"gpt-4o-mini->gpt-4o"`` (cascade: the
            first model, then the next one for the tasks it failed).
        filters: The recorded tasks to re-price (usually one feature). Only tasks that made LLM calls count.
        rework_cost_usd: ``L``, to project the TCO as well.
        failure_rates: Per model, a failure rate to use instead of the measured one (required for a
            model with no recorded attempt in the scope).
        token_multipliers: Per model, tokens it emits per recorded token (a different tokenizer).
        price_changes: Per model of the route, a relative change of all its prices: ``Decimal("0.2")``
            is +20%, ``Decimal("-0.5")`` is -50%, ``-1`` (the lowest) makes the model free. Applied
            after ``batch``. The pricing risk of depending on one rate card.
        batch: Re-price at the providers' batch rates (work that can wait). A model without a batch
            price raises ConfigError rather than silently keeping its list price.
        self_host_monthly_usd: Also project the route self-hosted: its fixed cost, USD a month (GPUs,
            ops; 0 allowed). The result's ``self_hosting`` then holds the monthly task volume at which
            self-hosting breaks even with the API route, and the measured volume's monthly costs
            (:mod:`costtrace.analysis.self_hosting`).
        self_host_input_per_mtok: Self-hosting's cost per million input tokens (default 0); needs
            ``self_host_monthly_usd``.
        self_host_output_per_mtok: The same per million output tokens (default 0).
        catalog: The price catalog (default: :func:`costtrace.price.catalog.default_catalog`).

    Raises:
        ConfigError: an invalid route or value, no recorded task in the scope, a model without a
            price (or batch price with ``batch``), a price change for a model outside the route,
            or a model without recorded attempts and no given failure rate; a self-hosting cost
            that is not a number from 0, or a per-token one without the monthly one.
    """
    from costtrace import _validate
    from costtrace.price.catalog import default_catalog

    models = parse_route(route)
    if not isinstance(batch, bool):
        raise ConfigError(f"batch={batch!r} must be True or False")
    changes = {
        m: _validate.number(
            v,
            f"price_changes[{m!r}]",
            minimum=-_ONE,
            maximum=_validate.MAX_USD,
            floats=False,
            hint="a relative change: Decimal('0.2') for +20%, Decimal('-0.5') for -50%, -1 (free) at the lowest",
        )
        for m, v in (price_changes or {}).items()
    }
    outside = sorted(set(changes) - set(models))
    if outside:
        raise ConfigError(
            f"price_changes names {', '.join(map(repr, outside))}, not a model of route {'->'.join(models)!r}; "
            "change the price of a model the route uses"
        )
    rework = None if rework_cost_usd is None else _amount(rework_cost_usd, "rework_cost_usd")
    self_host = self_host_price(self_host_monthly_usd, self_host_input_per_mtok, self_host_output_per_mtok)
    given = {m: _rate(v, f"failure_rates[{m!r}]") for m, v in (failure_rates or {}).items()}
    multipliers = {m: _amount(v, f"token_multipliers[{m!r}]") for m, v in (token_multipliers or {}).items()}
    catalog = catalog or default_catalog()

    tasks, successes, cost_nano, unpriced = _scope_totals(engine, filters)
    if not tasks:
        raise ConfigError(f"no recorded task with LLM calls matches {filters}; nothing to re-price")
    need = _token_need(engine, filters)
    rates_scope = dataclasses.replace(filters, route=None)
    measured = _attempt_failures(engine, rates_scope)
    providers = _providers(engine, models)

    with localcontext(_CTX):
        mean_in = need.input_tokens / Decimal(tasks)
        mean_out = need.output_tokens / Decimal(tasks)
        probe = need.input_tokens // need.calls if need.calls else 0
        assumptions = [
            f"token need per attempt = each task's first recorded attempt: {tasks} tasks, {need.input_tokens} "
            f"input + {need.output_tokens} output tokens in {need.calls} calls (mean {mean_in:.0f} in / "
            f"{mean_out:.0f} out per task; cache and reasoning tokens as recorded), the same on every model",
        ]
        if need.unknown_usage_calls:
            assumptions.append(
                f"{need.unknown_usage_calls} first-attempt calls have no recorded usage: their tokens are missing "
                "(projected costs are lower bounds)"
            )
        steps: list[ModelStep] = []
        reach = _ONE
        scaled_attempts = _ZERO  # attempts per task, each scaled by its model's token multiplier
        projected_cost = _ZERO
        for model in models:
            n, failed = measured.get(model, (0, 0))
            source: Literal["measured", "given"]
            if model in given:
                p, source = given[model], "given"
                sample = f"given (measured: {failed}/{n} failed attempts)" if n else "given (no recorded attempt)"
            elif n:
                p, source = Decimal(failed) / n, "measured"
                sample = f"measured: {failed}/{n} attempts failed in this scope"
            else:
                raise UnknownFailureRate(
                    f"model {model!r} has no recorded attempt in {rates_scope}: its failure rate is unknown; "
                    f"pass failure_rates={{{model!r}: Decimal('0.1')}} (or record tasks on it first)",
                    model=model,
                )
            provider = providers.get(model)
            rates = _model_rates(catalog, provider, model, probe, batch=batch)
            mult = multipliers.get(model, _ONE)
            change = changes.get(model, _ZERO)
            factor = _ONE + change
            per_task = rates.price(need) * mult * factor / tasks
            steps.append(
                ModelStep(
                    model=model,
                    provider=provider,
                    attempt_cost_usd=per_task,
                    failure_rate=p,
                    failure_rate_source=source,
                    attempts_sampled=n,
                    failed_attempts_sampled=failed,
                    reach=reach,
                    price_source=rates.price_source,
                    price_date=rates.price_date,
                    input_per_mtok=rates.per_input * factor * _MTOK,
                    output_per_mtok=rates.per_output * factor * _MTOK,
                    price_change=change,
                    batch=batch,
                )
            )
            projected_cost += tasks * reach * per_task
            assumptions.append(
                f"{model}: failure rate {_fmt_rate(p)} ({sample}); {'batch ' if batch else ''}price "
                f"${_plain(rates.per_input * _MTOK)}/${_plain(rates.per_output * _MTOK)} per MTok input/output "
                f"({rates.price_source}, price in force today, dated {rates.price_date or '(undated)'}; "
                f"provider {provider or 'inferred from the model name'})"
                + (_price_change_text(change, rates) if change else "")
                + (f"; tokens x {mult}" if mult != _ONE else "")
                + f"; ${_plain(per_task, 8)} per attempt"
            )
            scaled_attempts += reach * mult
            reach *= p
        projected_successes = tasks * (_ONE - reach)
        per_success = projected_cost / projected_successes if projected_successes else None

    if len(models) == 1:
        assumptions.append(
            f"route {models[0]}: one attempt per task, no retry; "
            f"successes = tasks x (1 - p) = {projected_successes:.2f}"
        )
    else:
        product = " x ".join(f"p_{m}" for m in models)
        assumptions.append(
            f"route {'->'.join(models)}: every task tries {models[0]}; the failed share goes on to the next model "
            f"(one attempt each, no retry); successes = tasks x (1 - {product}) = {projected_successes:.2f}, "
            "assuming the models fail independently"
        )
    assumptions.append(
        "failure rates are per attempt on the scope's tasks of every route: an attempt failed unless it was "
        "the task's last and the task succeeded"
    )
    if batch:
        assumptions.append(
            "batch: every attempt is priced at its provider's batch rate (work that can wait: results come "
            "back within the batch window, typically up to 24 hours, not at once)"
        )
    if rework is not None:
        assumptions.append(f"L = ${rework} per unsuccessful task (TCO = spend + unsuccessful tasks x L)")
    if unpriced:
        assumptions.append(f"{unpriced} recorded calls were unpriced: the recorded cost is a lower bound")
    self_hosting = None
    if self_host is not None:
        span = scope_span(engine, filters)
        assert span is not None  # the scope has tasks
        with localcontext(_CTX):
            self_hosting, texts = project(
                self_host,
                route="->".join(models),
                tasks=tasks,
                input_tokens_per_task=mean_in * scaled_attempts,
                output_tokens_per_task=mean_out * scaled_attempts,
                attempts_per_task=sum((s.reach for s in steps), _ZERO),
                api_cost_per_task_usd=projected_cost / tasks,
                success_rate=projected_successes / tasks,
                span=span,
            )
        assumptions.extend(texts)
    return WhatIf(
        feature=filters.feature,
        route="->".join(models),
        tasks=tasks,
        recorded_cost_usd=_from_nano(cost_nano),
        projected_cost_usd=projected_cost,
        projected_successes=projected_successes,
        projected_cost_per_success_usd=per_success,
        assumptions=assumptions,
        batch=batch,
        price_changes=changes,
        recorded_successes=successes,
        recorded_cost_complete=unpriced == 0,
        rework_cost_usd=rework,
        steps=tuple(steps),
        self_hosting=self_hosting,
    )


def _from_nano(nanos: int) -> Decimal:

    return _money.from_nano(nanos) or _ZERO


# --------------------------------------------------------------------------------------------------
# Advice


@dataclass(frozen=True, slots=True)
class RouteEvidence:
    """One recorded route of a feature, with its figures and how sure they are."""

    route: str
    tasks: int
    successes: int
    total_cost_usd: Decimal
    cost_per_task_usd: Decimal
    cost_per_successful_task_usd: Decimal | None
    tco_per_task_usd: Decimal | None
    """``C + P(fail) x L``; None when no ``L`` was given."""
    success_rate: Decimal
    success_rate_low: Decimal
    """Lower end of the 95% Wilson interval of the success rate."""
    success_rate_high: Decimal
    metric_usd: Decimal | None
    """The ranked figure: TCO per task with ``L``, else cost per successful task (None: no success)."""
    metric_low_usd: Decimal | None
    """The metric at the top of the success-rate interval (the token cost per task held fixed)."""
    metric_high_usd: Decimal | None
    """The metric at the bottom of the interval; None when that is unbounded (lower bound 0)."""
    unpriced_calls: int = 0
    small_sample: bool = False

    @property
    def cost_complete(self) -> bool:
        return self.unpriced_calls == 0


BreakEvenWins = Literal["above", "below", "always", "never", "tie"]
"""When a route's TCO per task is lower than the reference's: for rework costs above ``L*``, below ``L*``,
at every rework cost above 0, at none, or never different (equal cost and failure rate)."""
BreakEvenBound = Literal["exact", "at_least", "at_most", "unknown"]
"""How sure a break-even is when calls were unpriced (their costs are then lower bounds): ``L*`` is
exact, a lower bound, an upper bound, or unknown; for a verdict without ``L*`` (``always``, ``never``,
``tie``), ``exact`` means unpriced calls cannot change it and ``unknown`` that they could."""


@dataclass(frozen=True, slots=True)
class ReworkBreakEven:
    """Where the TCO per task of ``route`` equals that of ``versus``, as a rework cost ``L*``.

    TCO per task = ``C + P(fail) x L`` (:func:`costtrace.analysis.tco.tco_per_task`), so the two are
    equal at ``L* = (C_route - C_versus) / (P_versus(fail) - P_route(fail))`` = ``delta_cost_usd /
    failure_rate_delta``. ``wins`` says on which side of ``L*`` ``route`` is the cheaper one.
    Failure rates are ``1 - successes / tasks``; their 95% Wilson intervals are the success rate's
    interval turned around.
    """

    route: str
    versus: str
    """The reference route: the advice's best route."""
    tasks: int
    versus_tasks: int
    cost_per_task_usd: Decimal
    """``C`` of ``route``: its spend / its tasks (a lower bound when it had unpriced calls)."""
    versus_cost_per_task_usd: Decimal
    failure_rate: Decimal
    failure_rate_low: Decimal
    failure_rate_high: Decimal
    versus_failure_rate: Decimal
    versus_failure_rate_low: Decimal
    versus_failure_rate_high: Decimal
    delta_cost_usd: Decimal
    """``C_route - C_versus`` per task."""
    failure_rate_delta: Decimal
    """``P_versus(fail) - P_route(fail)``: how much less often ``route`` fails (negative: more often)."""
    break_even_rework_usd: Decimal | None
    """``L*``; None when ``wins`` is ``always``, ``never`` or ``tie``, or when ``bound`` is ``unknown``."""
    wins: BreakEvenWins
    bound: BreakEvenBound
    unpriced_calls: int = 0
    versus_unpriced_calls: int = 0

    def sentence(self, unit: str = "task") -> str:
        """The break-even in words, with both failure rates and their 95% intervals.

        Example:
            >>> b.sentence()                                                   # doctest: +SKIP
            'gpt-4o-mini->gpt-4o beats gpt-4o-mini if an unresolved task costs you more than L* = $0.00389 ...'
        """
        r, v = self.route, self.versus
        rates = (
            f"failure rate {_fmt_rate(self.failure_rate)} (95% CI {_fmt_rate(self.failure_rate_low)}-"
            f"{_fmt_rate(self.failure_rate_high)}, {self.tasks} {unit}s) vs {_fmt_rate(self.versus_failure_rate)} "
            f"(95% CI {_fmt_rate(self.versus_failure_rate_low)}-{_fmt_rate(self.versus_failure_rate_high)}, "
            f"{self.versus_tasks} {unit}s)"
        )
        dc, dp = self.delta_cost_usd, self.failure_rate_delta
        cost = f"{_money.usd(abs(dc))} {'more' if dc > 0 else 'less'} per {unit}" if dc else f"the same per {unit}"
        fails = f"{_fmt_pp(abs(dp))} {'less' if dp > 0 else 'more'} often" if dp else "as often"
        lower_bound = [name for name, n in ((r, self.unpriced_calls), (v, self.versus_unpriced_calls)) if n]
        its = "their costs are" if len(lower_bound) > 1 else "its cost is"
        why = f"{' and '.join(lower_bound)} had unpriced calls, so {its} a lower bound"
        at = _money.usd(self.break_even_rework_usd)
        if self.wins in ("above", "below") and self.bound == "unknown":
            return (
                f"{r} vs {v}: the break-even rework cost L* is unknown ({why}); it costs {cost}, fails {fails}; {rates}"
            )
        if self.wins == "tie":
            text = f"{r} and {v} tie at any rework cost (the same cost per {unit} and failure rate; {rates})"
        else:
            verdict = {
                "above": f"{r} beats {v} if an unresolved {unit} costs you more than L* = {at} to fix",
                "below": f"{r} beats {v} only if an unresolved {unit} costs you less than L* = {at} to fix",
                "always": f"{r} beats {v} at any rework cost",
                "never": f"{r} never beats {v}, whatever the rework cost",
            }[self.wins]
            text = f"{verdict} (it costs {cost}, fails {fails}; {rates})"
        if self.bound == "at_least":
            text += f"; L* is a lower bound: {why}"
        elif self.bound == "at_most":
            text += f"; L* is an upper bound: {why}"
        elif self.bound == "unknown":
            text += f"; on the priced calls alone: {why}, this may not hold"
        return text


def _fmt_pp(delta: Decimal) -> str:
    return f"{delta * 100:.1f} pp"


def rework_break_even(versus: RouteEvidence, route: RouteEvidence) -> ReworkBreakEven:
    """The rework cost ``L*`` at which ``route`` and ``versus`` have the same TCO per task.

    ``C`` and ``P(fail)`` are the routes' measured cost per task and failure rate, put through
    :func:`costtrace.analysis.tco.tco_per_task` and :func:`costtrace.analysis.tco.break_even`
    (``dC = C_route - C_versus``, ``dp = P_versus(fail) - P_route(fail)``); then ``L* = dC / dp``
    when it is positive. A route that costs more and fails as often or more ``never`` wins; one that
    costs no more and fails less (or costs less and fails as often) wins ``always``.

    Unpriced calls make a route's ``C`` a lower bound, so ``dC`` is known from one side only: ``L*``
    is then a lower or an upper bound (``bound``), and unknown when both routes had unpriced calls.

    Example:
        >>> (a,) = advise(engine, filters=Filters(feature="support"))          # doctest: +SKIP
        >>> cheap, cascade = a.candidates                                       # doctest: +SKIP
        >>> rework_break_even(cheap, cascade).break_even_rework_usd            # doctest: +SKIP
        Decimal('0.003888888888888888888888888889')
    """
    b = break_even(
        tco_per_task(versus.cost_per_task_usd, _ONE - versus.success_rate, 0),
        tco_per_task(route.cost_per_task_usd, _ONE - route.success_rate, 0),
    )
    dc, dp = b.delta_cost_usd, b.failure_rate_delta
    assert dp is not None  # two TCOs always give the gap
    wins: BreakEvenWins
    if dp > 0:
        wins = "above" if dc > 0 else "always"
    elif dp < 0:
        wins = "below" if dc < 0 else "never"
    else:
        wins = "always" if dc < 0 else "never" if dc > 0 else "tie"
    # An unpriced call makes a C a lower bound: the true dC is >= the recorded one when `route` had
    # some ("up"), <= when `versus` had some ("down"), either way when both had.
    up, down = route.unpriced_calls > 0, versus.unpriced_calls > 0
    bound: BreakEvenBound
    if not up and not down:
        bound = "exact"
    elif up and down:
        bound = "unknown"
    elif wins == "above":
        bound = "at_least" if up else "at_most"
    elif wins == "below":
        bound = "at_most" if up else "at_least"
    elif wins == "never":
        bound = "exact" if up else "unknown"  # a dearer `route` only gets dearer
    elif wins == "always":
        bound = "exact" if down else "unknown"
    else:
        bound = "unknown"
    even = None
    if wins in ("above", "below") and bound != "unknown":
        with localcontext(_CTX):
            even = dc / dp
    return ReworkBreakEven(
        route=route.route,
        versus=versus.route,
        tasks=route.tasks,
        versus_tasks=versus.tasks,
        cost_per_task_usd=route.cost_per_task_usd,
        versus_cost_per_task_usd=versus.cost_per_task_usd,
        failure_rate=_ONE - route.success_rate,
        failure_rate_low=_ONE - route.success_rate_high,
        failure_rate_high=_ONE - route.success_rate_low,
        versus_failure_rate=_ONE - versus.success_rate,
        versus_failure_rate_low=_ONE - versus.success_rate_high,
        versus_failure_rate_high=_ONE - versus.success_rate_low,
        delta_cost_usd=dc,
        failure_rate_delta=dp,
        break_even_rework_usd=even,
        wins=wins,
        bound=bound,
        unpriced_calls=route.unpriced_calls,
        versus_unpriced_calls=versus.unpriced_calls,
    )


@dataclass(frozen=True, slots=True)
class Advice:
    """The best recorded route of a feature and the evidence for it."""

    feature: str | None
    best_route: str | None
    """The candidate with the lowest metric; None when no route has one (no success anywhere)."""
    metric: Literal["cost_per_success", "tco"]
    candidates: list[RouteEvidence]
    """Lowest metric first; routes without a metric last."""
    warnings: list[str]
    rework_cost_usd: Decimal | None = None
    break_evens: list[ReworkBreakEven] = field(default_factory=list)
    """Each other candidate against ``best_route``: the rework cost ``L*`` at which their TCO per task
    is equal (:func:`rework_break_even`). Empty when there is no best route."""
    notes: list[str] = field(default_factory=list)
    """Without a rework cost: that none was given, then one sentence per break-even (``L*`` and the
    failure rates with their 95% Wilson intervals). Empty when a rework cost was given."""


def _evidence(
    route: str, tasks: int, successes: int, total: Decimal, unpriced: int, rework: Decimal | None, min_tasks: int
) -> RouteEvidence:
    interval = wilson_interval(successes, tasks)
    assert interval is not None  # a grouped route has >= 1 task
    lo, hi = interval
    with localcontext(_CTX):
        per_task = total / tasks
        rate = Decimal(successes) / tasks
        per_success = total / successes if successes else None
        if rework is not None:
            tco: Decimal | None = per_task + (_ONE - rate) * rework
            metric: Decimal | None = tco
            m_lo: Decimal | None = per_task + (_ONE - hi) * rework
            m_hi: Decimal | None = per_task + (_ONE - lo) * rework
        else:
            tco = None
            metric = per_success
            m_lo = per_task / hi if hi else None
            m_hi = per_task / lo if lo else None
    return RouteEvidence(
        route=route,
        tasks=tasks,
        successes=successes,
        total_cost_usd=total,
        cost_per_task_usd=per_task,
        cost_per_successful_task_usd=per_success,
        tco_per_task_usd=tco,
        success_rate=rate,
        success_rate_low=lo,
        success_rate_high=hi,
        metric_usd=metric,
        metric_low_usd=m_lo,
        metric_high_usd=m_hi,
        unpriced_calls=unpriced,
        small_sample=tasks < min_tasks,
    )


def _ci(e: RouteEvidence) -> str:
    return f"success {e.successes}/{e.tasks}, 95% CI {_fmt_rate(e.success_rate_low)}-{_fmt_rate(e.success_rate_high)}"


def _no_rework_notes(evens: list[ReworkBreakEven], ranked: list[RouteEvidence]) -> list[str]:
    """What :func:`advise` says when it was given no rework cost."""
    head = (
        "no rework cost given: the routes are ranked by cost per successful task, which puts no price on "
        "an unresolved task"
    )
    if not ranked:
        return [head + "; no route has a success, so there is no break-even either"]
    if not evens:
        return [head + f"; {ranked[0].route} is the only route, so there is no ranking to flip"]
    head += (
        f"; against {ranked[0].route}, each other route's TCO per task (C + P(fail) x L) breaks even at the "
        "rework cost L* below (give one to rank by TCO)"
    )
    return [head, *(b.sentence() for b in evens)]


def advise(
    engine: Engine,
    *,
    filters: Filters = ALL_TASKS,
    rework_cost_usd: Amount | None = None,
    min_tasks: int = 30,
) -> list[Advice]:
    """Per feature, the recorded route with the lowest cost per successful task (or TCO per task with ``L``).

    Each candidate carries its sample size, success rate with its 95% Wilson interval and the metric's
    range over that interval. Warnings: a candidate with fewer than ``min_tasks`` tasks, the best two
    candidates' ranges overlapping (the ranking may flip with more data), routes without a success,
    unpriced calls (costs are lower bounds), tasks without LLM calls (left out).

    ``break_evens`` holds, for each other candidate, the rework cost ``L*`` at which its TCO per task
    equals the best route's (:func:`rework_break_even`). Without ``rework_cost_usd``, ``notes`` says
    that none was given and states each ``L*`` with the failure rates' 95% Wilson intervals, e.g.
    "gpt-4o-mini->gpt-4o beats gpt-4o-mini if an unresolved task costs you more than L* = $0.00389 to fix".

    Example:
        >>> for a in advise(engine, filters=Filters(feature="support"), rework_cost_usd=75):  # doctest: +SKIP
        ...     print(a.best_route, [(c.route, c.metric_usd, c.tasks) for c in a.candidates], a.warnings)
    """
    from costtrace import _validate

    _validate.count(min_tasks, "min_tasks", minimum=1)
    rework = None if rework_cost_usd is None else _amount(rework_cost_usd, "rework_cost_usd")
    metric: Literal["cost_per_success", "tco"] = "tco" if rework is not None else "cost_per_success"
    groups: dict[str | None, list[RouteEvidence]] = {}
    no_route: dict[str | None, int] = {}
    for r in from_ledger(engine, filters=filters, rework_cost_usd=rework or 0):
        if r.route is None:
            no_route[r.feature] = no_route.get(r.feature, 0) + r.tasks
            continue
        evidence = _evidence(r.route, r.tasks, r.successes, r.total_cost_usd, r.unpriced_calls, rework, min_tasks)
        groups.setdefault(r.feature, []).append(evidence)
    for feature in no_route:
        groups.setdefault(feature, [])

    result = []
    for feature, candidates in groups.items():
        candidates.sort(key=lambda e: (e.metric_usd is None, e.metric_usd or _ZERO, e.route))
        ranked = [e for e in candidates if e.metric_usd is not None]
        warnings = []
        for e in candidates:
            if e.small_sample:
                warnings.append(
                    f"{e.route}: only {e.tasks} tasks (< {min_tasks}), {_ci(e)}: treat its figures as rough"
                )
            if e.metric_usd is None:
                warnings.append(f"{e.route}: no success in {e.tasks} tasks; it cannot be ranked by cost per success")
        if len(ranked) >= 2:
            best, second = ranked[0], ranked[1]
            if best.metric_high_usd is None or (
                second.metric_low_usd is not None and best.metric_high_usd >= second.metric_low_usd
            ):
                warnings.append(
                    f"the best two routes overlap within their 95% intervals ({best.route}: {_ci(best)}; "
                    f"{second.route}: {_ci(second)}): the ranking may change with more tasks"
                )
        unpriced = sum(e.unpriced_calls for e in candidates)
        if unpriced:
            warnings.append(f"{unpriced} calls were unpriced: the costs are lower bounds")
        if no_route.get(feature):
            warnings.append(f"{no_route[feature]} tasks without LLM calls were left out")
        if not ranked:
            warnings.append("no route has a success: no advice")
        evens = [rework_break_even(ranked[0], e) for e in candidates if e is not ranked[0]] if ranked else []
        notes = [] if rework is not None or not candidates else _no_rework_notes(evens, ranked)
        result.append(
            Advice(
                feature=feature,
                best_route=ranked[0].route if ranked else None,
                metric=metric,
                candidates=candidates,
                warnings=warnings,
                rework_cost_usd=rework,
                break_evens=evens,
                notes=notes,
            )
        )
    result.sort(key=lambda a: (a.feature is None, a.feature or ""))
    return result
