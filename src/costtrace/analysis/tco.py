"""Total cost of ownership with human rework, and the break-even between a cheap and a frontier model.

A task the model gets wrong is not free: someone fixes it. With ``L`` the labour cost of fixing one
unsuccessful task (hourly rate x hours), the cost of a *finished* task is::

    TCO per task = C + P(fail) x L          C: token cost per task, P(fail) = 1 - success rate

(the same definition as :mod:`costtrace.analysis.report`). Between a cheap model and a frontier one, the
frontier model pays for itself when its token premium is smaller than the rework it saves::

    dC < dp x L      dC = C_frontier - C_cheap,  dp = P_cheap(fail) - P_frontier(fail)

so the break-even failure-rate gap is ``dp* = dC / L``: a frontier model that fails more than ``dp*``
less often is cheaper per finished task.

Everything is exact ``Decimal`` (floats are refused: they are inexact); nothing is rounded here.
A ratio with nothing to divide by is ``None``, never 0 or infinity.

Two ways in:

- the calculator, :func:`calculate`, takes the figures directly (list prices, tokens of one
  attempt, failure rates, ``L``); :func:`worked_example` is the example of the docs;
- :func:`from_ledger` / :func:`compare_models` take the measured figures of each (feature, route)
  from the ledger, aggregated in SQL.

Example (the worked example: a $1/$5 budget model against a $10/$50 frontier model whose tokenizer
emits 30% more tokens, 40k input + 8k output tokens per attempt, failure rates 45% vs 8%,
``L`` = $150/h x 0.5 h):

    >>> c = worked_example()
    >>> c.cheap.tco_per_task_usd, c.frontier.tco_per_task_usd
    (Decimal('33.830'), Decimal('7.040'))
    >>> c.break_even.cheaper, round(c.break_even.tco_ratio, 1)
    ('frontier', Decimal('4.8'))
    >>> [b.break_even_failure_rate_delta for b in c.sensitivity]    # dp* = dC / L at L = $150, $37.50, $7.50, $3.75
    [Decimal('0.0064'), Decimal('0.0256'), Decimal('0.128'), Decimal('0.256')]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import TYPE_CHECKING, Literal, overload

from costtrace.analysis.stats import Filters, _task_conditions
from costtrace.errors import ConfigError

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine

__all__ = [
    "TCO",
    "BreakEven",
    "Comparison",
    "FeatureComparison",
    "Filters",
    "RouteTCO",
    "attempt_cost",
    "break_even",
    "calculate",
    "compare_models",
    "from_ledger",
    "rework_cost",
    "tco_per_task",
    "worked_example",
]

Amount = Decimal | int | str
"""A caller-supplied number: ``Decimal("0.45")``, ``75`` or ``"0.45"`` (floats are refused: inexact)."""

_ZERO = Decimal(0)
_ONE = Decimal(1)
_HUNDRED = Decimal(100)
_MTOK = Decimal(1_000_000)
_CTX = Context(prec=28, rounding=ROUND_HALF_EVEN)
"""Python's default Decimal context, pinned so that a host app's own context cannot round our money."""


def _amount(value: Amount, name: str, *, upper: Decimal | None = None) -> Decimal:
    """``value`` as a Decimal from 0 to ``upper`` (default: ``_validate.MAX_USD``), or ConfigError naming it.

    Floats are refused (inexact).
    """
    from costtrace import _validate

    if upper is not None:
        return _validate.number(value, name, maximum=upper, floats=False, hint="a rate is a fraction: 0.45 for 45%")
    return _validate.number(value, name, maximum=_validate.MAX_USD, floats=False, hint=f"e.g. {name}=Decimal('0.45')")


def _rate(value: Amount, name: str) -> Decimal:
    return _amount(value, name, upper=_ONE)


# --------------------------------------------------------------------------------------------------
# The figures


@dataclass(frozen=True, slots=True)
class TCO:
    """Total cost of ownership of one finished task: ``C + P(fail) x L``.

    Example:
        >>> t = tco_per_task(Decimal("0.08"), Decimal("0.45"), Decimal(75))
        >>> t.expected_rework_usd, t.tco_per_task_usd
        (Decimal('33.75'), Decimal('33.83'))
    """

    token_cost_usd: Decimal
    """``C``: the model spend of one task (all its attempts)."""
    failure_rate: Decimal
    """``P(fail)``: the share of tasks that did not succeed (0..1)."""
    rework_cost_usd: Decimal
    """``L``: the labour cost of fixing one unsuccessful task."""
    tco_per_task_usd: Decimal
    """``C + P(fail) x L``."""

    @property
    def expected_rework_usd(self) -> Decimal:
        """``P(fail) x L``: the rework one task costs on average."""
        with localcontext(_CTX):
            return self.failure_rate * self.rework_cost_usd

    @property
    def tco_per_successful_task_usd(self) -> Decimal | None:
        """``TCO per task / (1 - P(fail))`` (as :mod:`costtrace.analysis.report`); None when nothing succeeds."""
        success = _ONE - self.failure_rate
        if not success:
            return None
        with localcontext(_CTX):
            return self.tco_per_task_usd / success


def tco_per_task(token_cost_usd: Amount, failure_rate: Amount, rework_cost_usd: Amount) -> TCO:
    """``C + P(fail) x L`` for one task.

    Args:
        token_cost_usd: ``C``, the token cost of one task, USD.
        failure_rate: ``P(fail)``, 0..1 (``Decimal("0.45")`` for 45%).
        rework_cost_usd: ``L``, the cost of fixing one unsuccessful task, USD (see :func:`rework_cost`).

    Raises:
        ConfigError: a value is a float, negative, not a number, or a rate above 1.

    Example:
        >>> tco_per_task("1.04", "0.08", 75).tco_per_task_usd
        Decimal('7.04')
    """
    c = _amount(token_cost_usd, "token_cost_usd")
    p = _rate(failure_rate, "failure_rate")
    rework = _amount(rework_cost_usd, "rework_cost_usd")
    with localcontext(_CTX):
        return TCO(token_cost_usd=c, failure_rate=p, rework_cost_usd=rework, tco_per_task_usd=c + p * rework)


def rework_cost(hourly_rate_usd: Amount, hours: Amount) -> Decimal:
    """``L`` = hourly rate x hours spent fixing one unsuccessful task.

    Example:
        >>> rework_cost(150, "0.5")
        Decimal('75.0')
    """
    rate = _amount(hourly_rate_usd, "hourly_rate_usd")
    spent = _amount(hours, "hours")
    with localcontext(_CTX):
        return rate * spent


def attempt_cost(
    input_tokens: int,
    output_tokens: int,
    input_per_mtok: Amount,
    output_per_mtok: Amount,
    token_multiplier: Amount = 1,
) -> Decimal:
    """The token cost of one attempt at list prices (USD per million tokens).

    ``token_multiplier`` scales the token counts, e.g. ``Decimal("1.3")`` for a model whose tokenizer
    emits 30% more tokens for the same text; it multiplies the cost, so no token count is rounded.

    Example:
        >>> attempt_cost(40_000, 8_000, 1, 5), attempt_cost(40_000, 8_000, 10, 50, token_multiplier="1.3")
        (Decimal('0.08'), Decimal('1.04'))
    """
    from costtrace import _validate

    _validate.count(input_tokens, "input_tokens")
    _validate.count(output_tokens, "output_tokens")
    r_in = _amount(input_per_mtok, "input_per_mtok")
    r_out = _amount(output_per_mtok, "output_per_mtok")
    mult = _amount(token_multiplier, "token_multiplier")
    with localcontext(_CTX):
        return (input_tokens * r_in + output_tokens * r_out) * mult / _MTOK


@dataclass(frozen=True, slots=True)
class BreakEven:
    """Where a frontier model's token premium equals the rework it saves: ``dp* = dC / L``.

    Built by :func:`break_even` from two :class:`TCO` (then the comparison fields are set too) or
    from ``dC`` and ``L`` alone (then they are None).
    """

    delta_cost_usd: Decimal
    """``dC = C_frontier - C_cheap`` per task (negative when the "frontier" side is cheaper in tokens)."""
    rework_cost_usd: Decimal
    """``L`` the break-even is computed for."""
    break_even_failure_rate_delta: Decimal | None
    """``dp* = dC / L`` (a fraction: 0.0064 is 0.64 percentage points); None when L is 0."""
    failure_rate_delta: Decimal | None = None
    """The measured or assumed gap ``dp = P_cheap(fail) - P_frontier(fail)``."""
    cheaper: Literal["cheap", "frontier", "equal"] | None = None
    """Which side has the lower TCO per (finished) task."""
    tco_ratio: Decimal | None = None
    """Higher TCO per task / lower one (4.8: the cheaper side costs 4.8x less); None if the lower is 0."""
    cheap: TCO | None = None
    frontier: TCO | None = None

    @property
    def break_even_failure_rate_delta_pp(self) -> Decimal | None:
        """``dp*`` in percentage points (0.64 for 0.0064)."""
        d = self.break_even_failure_rate_delta
        return None if d is None else d * _HUNDRED

    @property
    def frontier_pays_off(self) -> bool | None:
        """``dC < dp x L``: the frontier model's TCO per task is lower (None without both TCOs)."""
        return None if self.cheaper is None else self.cheaper == "frontier"


def _break_even_rate(delta_cost: Decimal, rework: Decimal) -> Decimal | None:
    if not rework:
        return None
    with localcontext(_CTX):
        return delta_cost / rework


@overload
def break_even(cheap: TCO, frontier: TCO, /) -> BreakEven: ...
@overload
def break_even(delta_cost_usd: Amount, rework_cost_usd: Amount, /) -> BreakEven: ...
def break_even(cheap: TCO | Amount, frontier: TCO | Amount, /) -> BreakEven:
    """The break-even failure-rate gap ``dp* = dC / L``, from two TCOs or from ``dC`` and ``L``.

    ``break_even(cheap_tco, frontier_tco)`` uses ``dC = C_frontier - C_cheap`` and their (common) ``L``,
    and also says which is cheaper per finished task and by how much. ``break_even(delta_cost_usd,
    rework_cost_usd)`` gives ``dp*`` for any other ``L`` (a sensitivity table); ``delta_cost_usd`` may
    be negative there.

    Raises:
        ConfigError: the two TCOs have different ``L``, or a value is invalid.

    Example:
        >>> break_even(Decimal("0.96"), 150).break_even_failure_rate_delta
        Decimal('0.0064')
        >>> b = break_even(tco_per_task("0.08", "0.45", 75), tco_per_task("1.04", "0.08", 75))
        >>> b.break_even_failure_rate_delta, b.failure_rate_delta, b.cheaper
        (Decimal('0.0128'), Decimal('0.37'), 'frontier')
    """
    if isinstance(cheap, TCO) and isinstance(frontier, TCO):
        return _break_even_tcos(cheap, frontier)
    if isinstance(cheap, TCO) or isinstance(frontier, TCO):
        raise ConfigError("break_even() takes two TCOs, or a cost difference and a rework cost; not a mix")
    delta = _signed(cheap, "delta_cost_usd")
    rework = _amount(frontier, "rework_cost_usd")
    return BreakEven(delta, rework, _break_even_rate(delta, rework))


def _signed(value: Amount, name: str) -> Decimal:
    if isinstance(value, str) and value.strip().startswith("-"):
        return -_amount(value.strip()[1:], name)
    if isinstance(value, (Decimal, int)) and not isinstance(value, bool) and value < 0:
        return -_amount(-value, name)
    return _amount(value, name)


def _break_even_tcos(cheap: TCO, frontier: TCO) -> BreakEven:
    if cheap.rework_cost_usd != frontier.rework_cost_usd:
        raise ConfigError(
            f"the two TCOs use different rework costs (L={cheap.rework_cost_usd} and "
            f"L={frontier.rework_cost_usd}); compute both with the same L"
        )
    rework = cheap.rework_cost_usd
    with localcontext(_CTX):
        delta = frontier.token_cost_usd - cheap.token_cost_usd
        gap = cheap.failure_rate - frontier.failure_rate
        lo, hi = sorted((cheap.tco_per_task_usd, frontier.tco_per_task_usd))
        ratio = hi / lo if lo else None
    if cheap.tco_per_task_usd == frontier.tco_per_task_usd:
        cheaper: Literal["cheap", "frontier", "equal"] = "equal"
    else:
        cheaper = "frontier" if frontier.tco_per_task_usd < cheap.tco_per_task_usd else "cheap"
    return BreakEven(
        delta_cost_usd=delta,
        rework_cost_usd=rework,
        break_even_failure_rate_delta=_break_even_rate(delta, rework),
        failure_rate_delta=gap,
        cheaper=cheaper,
        tco_ratio=ratio,
        cheap=cheap,
        frontier=frontier,
    )


# --------------------------------------------------------------------------------------------------
# The calculator


@dataclass(frozen=True, slots=True)
class Comparison:
    """A cheap and a frontier model side by side: attempt costs, TCO each, break-even, sensitivity."""

    cheap_attempt_cost_usd: Decimal
    frontier_attempt_cost_usd: Decimal
    cheap: TCO
    frontier: TCO
    break_even: BreakEven
    """At the comparison's own ``L``."""
    sensitivity: tuple[BreakEven, ...] = field(default=())
    """``dp*`` for the same ``dC`` at each other ``L`` asked for."""
    assumptions: tuple[str, ...] = field(default=())


def calculate(
    cheap_in_per_mtok: Amount,
    cheap_out_per_mtok: Amount,
    frontier_in_per_mtok: Amount,
    frontier_out_per_mtok: Amount,
    input_tokens: int,
    output_tokens: int,
    cheap_failure_rate: Amount,
    frontier_failure_rate: Amount,
    rework_cost_usd: Amount | None = None,
    *,
    hourly_rate_usd: Amount | None = None,
    hours: Amount | None = None,
    frontier_token_multiplier: Amount = 1,
    cheap_token_multiplier: Amount = 1,
    sensitivity_rework_costs_usd: Sequence[Amount] = (),
) -> Comparison:
    """Compare a cheap and a frontier model from figures you give (one attempt per task).

    Args:
        cheap_in_per_mtok, cheap_out_per_mtok: The cheap model's list prices, USD per million tokens.
        frontier_in_per_mtok, frontier_out_per_mtok: The frontier model's.
        input_tokens, output_tokens: The tokens of one attempt, as counted by the cheap model's tokenizer.
        cheap_failure_rate, frontier_failure_rate: ``P(fail)`` of each, 0..1.
        rework_cost_usd: ``L``; or give ``hourly_rate_usd`` and ``hours`` instead (``L`` = their product).
        frontier_token_multiplier: Tokens the frontier tokenizer emits per cheap-tokenizer token (1.3).
        cheap_token_multiplier: The same for the cheap model (1 when the counts are its own).
        sensitivity_rework_costs_usd: Other values of ``L`` to give the break-even ``dp*`` for.

    Raises:
        ConfigError: an invalid value, or ``L`` given both ways or neither way.

    Example:
        >>> c = calculate(1, 5, 10, 50, 40_000, 8_000, "0.45", "0.08", hourly_rate_usd=150, hours="0.5",
        ...               frontier_token_multiplier="1.3")
        >>> c.cheap_attempt_cost_usd, c.frontier_attempt_cost_usd, c.break_even.delta_cost_usd
        (Decimal('0.08'), Decimal('1.04'), Decimal('0.96'))
    """
    if rework_cost_usd is not None and (hourly_rate_usd is not None or hours is not None):
        raise ConfigError("give rework_cost_usd, or hourly_rate_usd and hours, not both")
    if rework_cost_usd is None:
        if hourly_rate_usd is None or hours is None:
            raise ConfigError("give rework_cost_usd (L), or hourly_rate_usd and hours (L = rate x hours)")
        rework = rework_cost(hourly_rate_usd, hours)
        rework_note = f"L = ${hourly_rate_usd}/h x {hours} h = ${rework} per unsuccessful task"
    else:
        rework = _amount(rework_cost_usd, "rework_cost_usd")
        rework_note = f"L = ${rework} per unsuccessful task"
    c_cheap = attempt_cost(input_tokens, output_tokens, cheap_in_per_mtok, cheap_out_per_mtok, cheap_token_multiplier)
    c_front = attempt_cost(
        input_tokens, output_tokens, frontier_in_per_mtok, frontier_out_per_mtok, frontier_token_multiplier
    )
    cheap = tco_per_task(c_cheap, cheap_failure_rate, rework)
    frontier = tco_per_task(c_front, frontier_failure_rate, rework)
    be = break_even(cheap, frontier)
    sensitivity = tuple(break_even(be.delta_cost_usd, other) for other in sensitivity_rework_costs_usd)
    assumptions = (
        f"one attempt per task: {input_tokens} input + {output_tokens} output tokens (cheap tokenizer)",
        f"cheap: ${cheap_in_per_mtok}/${cheap_out_per_mtok} per MTok, tokens x {cheap_token_multiplier}, "
        f"P(fail) = {cheap.failure_rate}",
        f"frontier: ${frontier_in_per_mtok}/${frontier_out_per_mtok} per MTok, tokens x "
        f"{frontier_token_multiplier}, P(fail) = {frontier.failure_rate}",
        rework_note,
        "an unsuccessful task is fixed by a human at cost L (no retry on another model)",
    )
    return Comparison(c_cheap, c_front, cheap, frontier, be, sensitivity, assumptions)


WORKED_EXAMPLE_SENSITIVITY_USD = (Decimal(150), Decimal("37.50"), Decimal("7.50"), Decimal("3.75"))
"""The values of ``L`` the worked example gives the break-even for."""


def worked_example() -> Comparison:
    """The worked example of the docs, for ``costtrace tco --example``.

    Budget model $1/$5 per MTok, frontier $10/$50 per MTok with a tokenizer emitting 30% more tokens,
    one attempt of 40k input / 8k output tokens, failure rates 45% vs 8%, L = $150/h x 0.5 h = $75:
    budget $0.08 + 0.45 x $75 = $33.83, frontier $1.04 + 0.08 x $75 = $7.04 per task (4.8x); break-even
    ``dp* = dC / L`` = 0.64 pp at L = $150, 2.56 pp at $37.50, 12.8 pp at $7.50, 25.6 pp at $3.75.

    Example:
        >>> worked_example().break_even.delta_cost_usd
        Decimal('0.96')
    """
    return calculate(
        1,
        5,
        10,
        50,
        40_000,
        8_000,
        Decimal("0.45"),
        Decimal("0.08"),
        hourly_rate_usd=150,
        hours=Decimal("0.5"),
        frontier_token_multiplier=Decimal("1.3"),
        sensitivity_rework_costs_usd=WORKED_EXAMPLE_SENSITIVITY_USD,
    )


# --------------------------------------------------------------------------------------------------
# Measured figures from the ledger


ALL_TASKS = Filters()
"""No filter: every task of the ledger."""


def task_conditions(filters: Filters) -> list[sa.ColumnElement[bool]]:
    """The WHERE conditions on ``costtrace_tasks`` selecting ``filters``' tasks: analysis.stats' own."""
    return _task_conditions(filters)


@dataclass(frozen=True, slots=True)
class RouteTCO:
    """The measured figures of one (feature, route) and its TCO per task.

    ``route`` is the models the tasks called in order of first use ("gpt-4o-mini->gpt-4o"); None for
    tasks without LLM calls. Costs are the tasks' own calls; a lower bound when ``cost_complete`` is False.
    """

    feature: str | None
    route: str | None
    tasks: int
    successes: int
    total_cost_usd: Decimal
    unpriced_calls: int
    tco: TCO

    @property
    def success_rate(self) -> Decimal | None:
        return Decimal(self.successes) / self.tasks if self.tasks else None

    @property
    def failure_rate(self) -> Decimal:
        """``P(fail) = 1 - successes / tasks``."""
        return self.tco.failure_rate

    @property
    def cost_per_task_usd(self) -> Decimal:
        return self.tco.token_cost_usd

    @property
    def cost_per_successful_task_usd(self) -> Decimal | None:
        """All the route's spend / successes (as :mod:`costtrace.analysis.report`); None with no success."""
        with localcontext(_CTX):
            return self.total_cost_usd / self.successes if self.successes else None

    @property
    def tco_per_task_usd(self) -> Decimal:
        return self.tco.tco_per_task_usd

    @property
    def cost_complete(self) -> bool:
        return self.unpriced_calls == 0


def from_ledger(engine: Engine, *, filters: Filters = ALL_TASKS, rework_cost_usd: Amount = 0) -> list[RouteTCO]:
    """Measured TCO per (feature, route) of the ledger's tasks, from :func:`~costtrace.analysis.stats.scope_stats`.

    ``P(fail) = 1 - successes / tasks`` (partial, escalated-to-human and unfinished tasks are not
    successes); ``C`` = the route's spend / its tasks. As in :mod:`costtrace.analysis.report`, every task row
    counts (a subtask is a task of its own, with its own calls' cost, so nothing is counted twice).
    Sorted by feature, then TCO per task.

    Example:
        >>> for r in from_ledger(engine, filters=Filters(feature="support"), rework_cost_usd=75):  # doctest: +SKIP
        ...     print(r.route, r.tasks, r.failure_rate, r.tco_per_task_usd)
    """
    from costtrace.analysis.stats import scope_stats

    rework = _amount(rework_cost_usd, "rework_cost_usd")
    result = []
    for scope in scope_stats(engine, by=("feature", "route"), filters=filters):  # the rollups: exact sums
        tasks, successes = scope.tasks, scope.successes
        with localcontext(_CTX):
            per_task = scope.total_cost_usd / tasks
            failure = _ONE - Decimal(successes) / tasks
        result.append(
            RouteTCO(
                feature=scope.key["feature"],
                route=scope.key["route"],
                tasks=tasks,
                successes=successes,
                total_cost_usd=scope.total_cost_usd,
                unpriced_calls=scope.unpriced_calls,
                tco=tco_per_task(per_task, failure, rework),
            )
        )
    result.sort(key=lambda r: (r.feature is None, r.feature or "", r.tco_per_task_usd, r.route or ""))
    return result


@dataclass(frozen=True, slots=True)
class FeatureComparison:
    """One feature's routes, each with its TCO, and the break-even of each against the cheapest in tokens."""

    feature: str | None
    routes: list[RouteTCO]
    """Sorted by TCO per task, lowest first."""
    baseline: str | None
    """The route with the lowest token cost per task (the "cheap" side of every break-even)."""
    break_evens: dict[str, BreakEven]
    """Per other route: ``break_even(baseline TCO, route TCO)``."""

    @property
    def best(self) -> RouteTCO | None:
        """The route with the lowest TCO per task."""
        return self.routes[0] if self.routes else None


def compare_models(
    engine: Engine, *, filters: Filters = ALL_TASKS, rework_cost_usd: Amount = 0
) -> list[FeatureComparison]:
    """Per feature: the measured TCO of each route and the break-even of each against the cheapest.

    Tasks without LLM calls (no route) are left out.

    Example:
        >>> for f in compare_models(engine, rework_cost_usd=75):                    # doctest: +SKIP
        ...     for route, b in f.break_evens.items():
        ...         print(f.feature, f.baseline, "vs", route, b.break_even_failure_rate_delta_pp, b.cheaper)
    """
    by_feature: dict[str | None, list[RouteTCO]] = {}
    for r in from_ledger(engine, filters=filters, rework_cost_usd=rework_cost_usd):
        if r.route is not None:
            by_feature.setdefault(r.feature, []).append(r)
    result = []
    for feature, routes in by_feature.items():
        base = min(routes, key=lambda r: (r.cost_per_task_usd, r.route or ""))
        evens = {r.route: break_even(base.tco, r.tco) for r in routes if r is not base and r.route is not None}
        result.append(FeatureComparison(feature, routes, base.route, evens))
    return result
