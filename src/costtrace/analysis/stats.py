"""Cost per successful task, retry tax and effective token prices, aggregated in the ledger's database.

The ledger counterpart of :mod:`costtrace.analysis.report`: the same definitions, read from the ledger's
rollups (:mod:`costtrace.spend.rollups`: per-period cells with exact sums and percentile sketches, raw
rows where a period is dirty or partial), so a report over millions of tasks reads thousands of cells;
or, with ``exact=True`` and for keys the rollups do not hold (customer, custom dimensions), computed
with a few SQL statements (SQLAlchemy Core, ``GROUP BY`` and window functions) over
``costtrace_tasks`` and ``costtrace_calls``. It works on SQLite and PostgreSQL alike.

- :func:`scope_stats`: per scope (feature, task name, route, final model, team, customer and/or a UTC
  time bucket),
  tasks, success and first-pass rates, attempts, tokens and cost per task (mean, p50, p95), cost per
  successful task, retry tax, escalations, cache savings, how complete the costs are, the
  latency to a correct answer next to the latency of failed tasks, and the context tax
  (:class:`~costtrace.analysis.context.ContextTax`: spend by kind of token over the scope's calls,
  with the upper bound of what caching their input would save).
- :func:`model_costs`: per requested model, what it really cost per million *useful* tokens once
  failed attempts and retries are paid for, next to its catalog price.

Definitions (the same as :class:`costtrace.analysis.report.TaskStats`):

- Money is exact ``Decimal`` USD, from integer nano-USD sums; never rounded here.
- A ratio with nothing to divide by (no tasks, no successes, no spend, no tokens) is ``None``,
  never 0 or infinity.
- ``cost per successful task = all the scope's spend (failed tasks and retries included) / successes``.
- ``retry tax = spend on failed attempts / all spend``.
- Each task row holds the cost of its *own* calls, so a scope holding a task and its subtasks
  counts every call once. Subtasks are tasks of their own: they count in ``tasks`` and ``successes``.
- A scope with unpriced calls has ``cost_complete == False``: its costs are lower bounds.
- Percentiles are **nearest-rank**: over the ``n`` tasks of a scope sorted by the value, ``pXX`` is
  the value at rank ``ceil(XX/100 * n)`` (1-based). It is always a value some task really had;
  p50 of 1, 2, 3, 4 is 2, and p95 of 20 tasks is the 19th. From the rollups (the default) they are
  within 1% of that value (rounded to a whole token, nano-USD or attempt, seconds to 4 significant
  digits); ``exact=True`` gives the value itself.
- Means are exact: ``Decimal(sum) / n``.
- Latency is the task's wall time, ``duration_s`` (from task start to its end, so every retry and
  escalation inside the task is included), in seconds. ``latency_success_s`` is over the tasks whose
  outcome is ``success`` (the latency to a correct answer); ``latency_failed_s`` over ``failure`` and
  ``escalated_to_human``. Partial and unfinished tasks are in neither. Each gives nearest-rank p50 and
  p95 over its tasks *with* a duration; tasks whose duration is NULL are left out of the percentiles
  and counted in ``no_duration``, never taken as 0.

Example:
    >>> from costtrace.spend.engine import make_engine
    >>> from costtrace.spend.schema import migrate
    >>> engine = make_engine("sqlite://"); _ = migrate(engine)
    >>> scope_stats(engine, by=("feature", "day"))
    []
    >>> rows = scope_stats(engine, filters=Filters(feature="support", since=parse_since("7d")))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from costtrace import _money
from costtrace import semconv as sc
from costtrace.analysis.context import ContextTax, empty_sums
from costtrace.analysis.report import FAILED_OUTCOMES, Latency
from costtrace.analysis.report import seconds as _seconds
from costtrace.errors import ConfigError
from costtrace.spend import schema as s
from costtrace.spend.rows import MAX_TEXT, clean_text

__all__ = [
    "GROUP_KEYS",
    "TIME_KEYS",
    "ContextTax",
    "DimensionFilters",
    "Distribution",
    "Filters",
    "Latency",
    "ModelCost",
    "ScopeStats",
    "dimension_text",
    "model_costs",
    "model_sums",
    "parse_since",
    "scope_stats",
]

GROUP_KEYS = ("feature", "task", "route", "final_model", "team", "customer", "hour", "day", "week", "month")
"""What :func:`scope_stats` can group by (any combination, in the order given). ``route`` is the models
a task's calls requested, in order of first use (``gpt-4o-mini->gpt-4o``: it escalated, whatever answered
last); ``final_model`` is the model of the task's last call, the one that produced its final answer."""
TIME_KEYS = ("hour", "day", "week", "month")
"""The time buckets among :data:`GROUP_KEYS`, on ``ended_at`` in UTC. Their key values are text:
``"2024-05-01T13:00"`` (hour), ``"2024-05-01"`` (day), ``"2024-04-29"`` (week: its Monday),
``"2024-05"`` (month)."""

_ZERO = Decimal(0)
_MILLION = Decimal(1_000_000)
_CTX = Context(prec=28, rounding=ROUND_HALF_EVEN)
"""Every division here: independent of the caller's decimal context."""

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: called with ``done = 0`` first, then after each stage of a report."""


def _div(numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
    """numerator / denominator, exact to 28 digits; None when there is nothing to divide by."""
    if not denominator:
        return None
    return _CTX.divide(Decimal(numerator), Decimal(denominator))


def _usd(nanos: Any) -> Decimal:
    return _money.from_nano(int(nanos or 0)) or _ZERO


# --------------------------------------------------------------------------------------------------
# Filters


def _naive_utc(at: datetime) -> datetime:
    return at if at.tzinfo is None else at.astimezone(UTC).replace(tzinfo=None)


_TEXT_FILTERS = ("feature", "task", "route", "team", "customer")

DimensionFilters = tuple[tuple[str, str], ...]
"""``Filters.dimensions``: ``(key, value)`` pairs, sorted by key, each key once."""


@dataclass(frozen=True, init=False)
class Filters:
    """Which tasks (and calls) a report covers; every field set must match, exactly.

    Attributes:
        feature / task / route / team / customer: Exact values (``task`` is the task name; ``route``
            is the whole route, e.g. ``"gpt-4o-mini->gpt-4o"``).
        since / until: ``since <= ended_at < until`` (for calls: ``started_at``). Naive datetimes are
            UTC; aware ones are converted.
        dimensions: Any other dimension, custom ones included: ``{"region": "eu"}`` keeps the tasks
            recorded with ``costtrace.task(..., region="eu")``. Give a mapping or ``(key, value)``
            pairs; it is kept as pairs sorted by key. Every pair must match (AND), each value
            exactly as the ledger holds it: costtrace records every dimension as text, so a task
            recorded with ``tier=3`` matches ``"3"``, one with ``beta=True`` matches ``"True"``.
            Keys are the names given to ``costtrace.task``, any text (dots, quotes, spaces);
            ``user`` is the standard ``user=`` dimension. ``feature``, ``team``, ``customer``,
            ``task`` and ``route`` have fields of their own and are refused here.

    Raises:
        ConfigError: A field has the wrong type, ``since`` is not before ``until``, or a dimension
            key or value is empty, not text, a built-in filter, or given twice with different values.

    Example:
        >>> Filters(feature="support", since=datetime(2024, 5, 1)).feature
        'support'
        >>> Filters(dimensions={"region": "eu", "tier": "gold"}).dimensions
        (('region', 'eu'), ('tier', 'gold'))
    """

    feature: str | None
    task: str | None
    route: str | None
    team: str | None
    customer: str | None
    since: datetime | None
    until: datetime | None
    dimensions: DimensionFilters

    def __init__(
        self,
        feature: str | None = None,
        task: str | None = None,
        route: str | None = None,
        team: str | None = None,
        customer: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        dimensions: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    ) -> None:
        texts = {"feature": feature, "task": task, "route": route, "team": team, "customer": customer}
        for name, value in texts.items():
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"filter {name}={value!r} must be a str or None")
            object.__setattr__(self, name, value)
        for name, at in (("since", since), ("until", until)):
            if at is not None and not isinstance(at, datetime):
                raise ConfigError(f"filter {name}={at!r} must be a datetime or None; use parse_since('7d') for text")
            object.__setattr__(self, name, at)
        if since is not None and until is not None and _naive_utc(since) >= _naive_utc(until):
            raise ConfigError(f"filter since={since.isoformat()} must be before until={until.isoformat()}")
        object.__setattr__(self, "dimensions", _check_dimensions(dimensions))


def _check_dimensions(dimensions: object) -> DimensionFilters:
    """``Filters(dimensions=...)`` as sorted ``(key, value)`` pairs, each checked (see :class:`Filters`)."""
    if isinstance(dimensions, Mapping):
        pairs: list[object] = list(dimensions.items())
    elif isinstance(dimensions, Iterable) and not isinstance(dimensions, (str, bytes)):
        pairs = list(dimensions)
    else:
        raise ConfigError(
            f"filter dimensions={dimensions!r} must be a mapping of names to values, e.g. {{'region': 'eu'}}"
        )
    found: dict[str, str] = {}
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ConfigError(f"filter dimensions: {pair!r} is not a (name, value) pair, e.g. ('region', 'eu')")
        key, value = pair
        if not isinstance(key, str) or not key:
            raise ConfigError(f"filter dimension name {key!r} must be a non-empty str, e.g. 'region'")
        if not isinstance(value, str) or not value:
            raise ConfigError(
                f"filter dimension {key}={value!r}: the value must be a non-empty str, as recorded "
                "(costtrace records dimensions as text: tier=3 is '3')"
            )
        if key in _TEXT_FILTERS:
            raise ConfigError(
                f"filter dimension {key!r} is a filter of its own: use Filters({key}={value!r}) "
                f"(on the command line --{key})"
            )
        if key.startswith(sc.DIMENSION_PREFIX):
            raise ConfigError(
                f"filter dimension {key!r}: give the name passed to costtrace.task, "
                f"{key.removeprefix(sc.DIMENSION_PREFIX)!r}, not its attribute key"
            )
        if found.get(key, value) != value:
            raise ConfigError(f"filter dimension {key!r} is given twice, as {found[key]!r} and {value!r}; keep one")
        found[key] = value
    return tuple(sorted(found.items()))


_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$", re.IGNORECASE)
_UNIT = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
MAX_LOOKBACK = timedelta(days=36_525)
"""Relative bounds (``"7d"``) go back at most a century."""


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A ``since`` bound from text: ``"30m"``, ``"24h"``, ``"7d"``, ``"2w"`` ago, or an ISO date or time.

    ``m`` is minutes. Relative bounds count back from ``now`` (default: the current time). ISO values
    without a time zone are UTC. The result is an aware UTC datetime.

    Raises:
        ConfigError: The text is neither (the message shows the accepted forms).

    Example:
        >>> parse_since("7d", now=datetime(2024, 5, 8, 12, tzinfo=UTC)).isoformat()
        '2024-05-01T12:00:00+00:00'
        >>> parse_since("2024-05-01").isoformat()
        '2024-05-01T00:00:00+00:00'
    """
    if not isinstance(text, str):
        raise ConfigError(f"since={text!r} must be text such as '7d', '24h', '30m', '2w' or '2024-05-01'")
    m = _RELATIVE.match(text)
    if m:
        count = int(m.group(1))
        if count <= 0:
            raise ConfigError(f"since={text!r} must be a positive amount of time, e.g. '7d'")
        unit = _UNIT[m.group(2).lower()]
        if count > MAX_LOOKBACK // unit:
            raise ConfigError(
                f"since={text!r} reaches too far back; relative times go back at most {MAX_LOOKBACK.days:,} "
                "days (use an ISO date for older bounds)"
            )
        base = now if now is not None else datetime.now(UTC)
        base = base.replace(tzinfo=UTC) if base.tzinfo is None else base.astimezone(UTC)
        return base - count * unit
    try:
        parsed = datetime.fromisoformat(text.strip())
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except ValueError:
        raise ConfigError(
            f"since={text!r} is not a time; use '30m', '24h', '7d', '2w' (minutes, hours, days, weeks ago) "
            "or an ISO date or time such as '2024-05-01' or '2024-05-01T08:00:00+02:00'"
        ) from None
    except OverflowError:
        raise ConfigError(f"since={text!r} is outside the years 1 to 9999 in UTC; give a nearer date") from None


def _check_filters(filters: object) -> Filters:
    if not isinstance(filters, Filters):
        raise ConfigError(f"filters={filters!r} must be a costtrace.analysis.stats.Filters")
    return filters


class _DimensionText(FunctionElement[str]):
    """The text of one dimension in a ``dimensions`` JSON column, NULL when the row lacks it.

    SQLite: the value of the ``json_each`` row whose key is the key (a JSON path such as ``'$."k"'``
    can't name a key holding a double quote); PostgreSQL: ``CAST(column AS JSON) ->> key``. The key is a
    bind parameter on both, so any text is a key. Only SQLite and PostgreSQL hold ledgers.
    """

    type = sa.Text()
    name = "costtrace_dimension_text"
    inherit_cache = True


@compiles(_DimensionText, "sqlite")
def _dimension_text_sqlite(element: _DimensionText, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"(SELECT d.value FROM json_each({column}) AS d WHERE d.key = {key})"


@compiles(_DimensionText, "postgresql")
def _dimension_text_postgresql(element: _DimensionText, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"(CAST({column} AS JSON) ->> CAST({key} AS TEXT))"


@compiles(_DimensionText)
def _dimension_text_other(element: _DimensionText, compiler: SQLCompiler, **kw: Any) -> str:
    raise CompileError(f"dimension filters need SQLite or PostgreSQL, not {compiler.dialect.name}")


def _dimension_key(name: str) -> str:
    """The key of dimension ``name`` in the ledger's ``dimensions`` JSON, as the row writer wrote it.

    ``user`` is the standard ``costtrace.user``; any other name is custom: ``costtrace.dimension.<name>``
    (cut to the ledger's 255 characters, as the writer does).
    """
    key = sc.USER if name == "user" else sc.DIMENSION_PREFIX + name
    return clean_text(key) or key


def dimension_text(column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[str]:
    """The recorded text of dimension ``name`` in a ``dimensions`` column (NULL when absent), in SQL."""
    return _DimensionText(column, sa.literal(_dimension_key(name), sa.Text()))


def _dimension_conditions(column: sa.ColumnElement[Any], f: Filters) -> list[sa.ColumnElement[bool]]:
    # Values as the row writer stores them (NUL replaced, cut to MAX_TEXT), so a filter matches its rows.
    return [dimension_text(column, name) == (clean_text(value, MAX_TEXT) or value) for name, value in f.dimensions]


def _task_conditions(f: Filters) -> list[sa.ColumnElement[bool]]:
    t = s.tasks
    columns = {"feature": t.c.feature, "task": t.c.name, "route": t.c.route, "team": t.c.team, "customer": t.c.customer}
    where = [columns[name] == getattr(f, name) for name in _TEXT_FILTERS if getattr(f, name) is not None]
    if f.since is not None:
        where.append(t.c.ended_at >= _naive_utc(f.since))
    if f.until is not None:
        where.append(t.c.ended_at < _naive_utc(f.until))
    where += _dimension_conditions(t.c.dimensions, f)
    return where


def _call_conditions(f: Filters) -> list[sa.ColumnElement[bool]]:
    c, t = s.calls, s.tasks
    columns = {"feature": c.c.feature, "task": c.c.task_name, "team": c.c.team, "customer": c.c.customer}
    where = [columns[name] == getattr(f, name) for name in columns if getattr(f, name) is not None]
    if f.route is not None:
        where.append(t.c.route == f.route)  # calls carry no route: their task's (calls without a task never match)
    if f.since is not None:
        where.append(c.c.started_at >= _naive_utc(f.since))
    if f.until is not None:
        where.append(c.c.started_at < _naive_utc(f.until))
    where += _dimension_conditions(c.c.dimensions, f)  # a call holds its task's dimensions
    return where


# --------------------------------------------------------------------------------------------------
# Group keys


def _check_keys(by: Sequence[str] | str) -> tuple[str, ...]:
    keys = (by,) if isinstance(by, str) else tuple(by)
    for key in keys:
        if key not in GROUP_KEYS:
            raise ConfigError(f"unknown group key {key!r}; use any of {', '.join(GROUP_KEYS)}")
    if len(set(keys)) != len(keys):
        raise ConfigError(f"by={keys!r} names a group key twice")
    return keys


def _time_bucket(key: str, at: sa.ColumnElement[datetime], dialect: str) -> sa.ColumnElement[str]:
    """``at`` (naive UTC) as the text of its bucket, the same text on every database."""
    if dialect == "postgresql":
        trunc = sa.func.date_trunc(key, at)
        fmt = {"hour": 'YYYY-MM-DD"T"HH24:00', "day": "YYYY-MM-DD", "week": "YYYY-MM-DD", "month": "YYYY-MM"}[key]
        return sa.func.to_char(trunc, fmt, type_=sa.String)
    if dialect == "sqlite":
        if key == "week":  # the Monday on or before: next Sunday (or today), minus 6 days
            return sa.func.date(at, "weekday 0", "-6 days", type_=sa.String)
        fmt = {"hour": "%Y-%m-%dT%H:00", "day": "%Y-%m-%d", "month": "%Y-%m"}[key]
        return sa.func.strftime(fmt, at, type_=sa.String)
    raise ConfigError(f"time buckets need a SQLite or PostgreSQL ledger, not {dialect!r}")


def _key_columns(keys: Sequence[str], dialect: str) -> list[sa.ColumnElement[Any]]:
    t = s.tasks
    plain = {
        "feature": t.c.feature,
        "task": t.c.name,
        "route": t.c.route,
        "final_model": t.c.final_model,
        "team": t.c.team,
        "customer": t.c.customer,
    }
    return [
        (_time_bucket(key, t.c.ended_at, dialect) if key in TIME_KEYS else plain[key]).label(f"k{i}")
        for i, key in enumerate(keys)
    ]


def _sort_key(group: tuple[str | None, ...]) -> tuple[tuple[bool, str], ...]:
    """Ascending, missing values last; the same order on every database (no collation involved)."""
    return tuple((value is None, value or "") for value in group)


# --------------------------------------------------------------------------------------------------
# scope_stats


@dataclass(frozen=True)
class Distribution:
    """Mean and nearest-rank percentiles of a per-task value over a scope (see the module docstring)."""

    mean: Decimal | None
    p50: Decimal | None
    p95: Decimal | None


@dataclass(frozen=True)
class ScopeStats:
    """Figures over the tasks of one scope. Costs are USD; rates are ``Decimal`` shares (0.25 = 25%).

    ``key`` maps each group key asked for to the scope's value (``None``: tasks without one).
    """

    key: dict[str, str | None]
    tasks: int
    successes: int
    success_rate: Decimal | None
    first_pass_rate: Decimal | None
    """Tasks that succeeded on their first attempt with no retry, escalation or failed call / tasks."""
    mean_attempts: Decimal | None
    input_tokens_per_task: Distribution
    """All input tokens, cache reads and writes included."""
    output_tokens_per_task: Distribution
    """All output tokens, reasoning included."""
    cost_per_task_usd: Distribution
    total_cost_usd: Decimal
    """The tasks' own calls, priced ones only (a lower bound when ``cost_complete`` is False)."""
    cost_per_successful_task_usd: Decimal | None
    """ALL the scope's spend (failures and retries included) / successes; None with no success."""
    wasted_cost_usd: Decimal
    """Spend on failed attempts (retried, escalated, last of a failed task); part of the total."""
    retry_tax: Decimal | None
    """wasted / total; None when nothing was spent."""
    escalation_rate: Decimal | None
    """Tasks with at least one model escalation / tasks."""
    escalation_premium_usd: Decimal | None
    """Mean cost of escalated tasks - mean cost of the others; None if either group is empty."""
    cache_savings_usd: Decimal
    rework_cost_usd: Decimal
    """Human rework recorded with late outcomes (tasks without any count 0)."""
    unpriced_calls: int
    estimated_calls: int
    """Calls whose tokens were counted locally (tokenizer or heuristic), not reported by the provider."""
    llm_calls: int
    estimated_call_share: Decimal | None
    cost_complete: bool
    escalated_tasks: int = 0
    first_pass_tasks: int = 0
    attempts: int = 0
    attempts_per_task: Distribution = field(default_factory=lambda: Distribution(None, None, None))
    """Attempts per task: mean (= ``mean_attempts``), p50 and p95."""
    latency_success_s: Latency = field(default_factory=Latency)
    """Wall time of the tasks that succeeded: the latency to a correct answer, retries and escalations included."""
    latency_failed_s: Latency = field(default_factory=Latency)
    """Wall time of the tasks that failed or were escalated to a human."""
    context: ContextTax = field(default_factory=ContextTax.empty)
    """The context tax: spend by kind of token (input, cache reads and writes, output), the cache-read
    share of input, and an upper bound of what caching the uncached input would save
    (:mod:`costtrace.analysis.context`)."""


def _count_if(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
    return sa.func.sum(sa.case((condition, 1), else_=0))


def _sum_if(condition: sa.ColumnElement[bool], value: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.func.sum(sa.case((condition, value), else_=0))


def _totals_query(keys: list[sa.ColumnElement[Any]], where: list[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    t = s.tasks
    escalated = t.c.escalations > 0
    timed, untimed = t.c.duration_s.is_not(None), t.c.duration_s.is_(None)
    return (
        sa.select(
            *keys,
            sa.func.count().label("tasks"),
            _count_if(t.c.outcome == "success").label("successes"),
            _count_if(t.c.first_pass.is_(True)).label("first_pass"),
            sa.func.sum(t.c.attempts).label("attempts"),
            sa.func.sum(t.c.input_tokens).label("input_tokens"),
            sa.func.sum(t.c.output_tokens).label("output_tokens"),
            sa.func.sum(t.c.cost_nano_usd).label("cost"),
            sa.func.sum(t.c.wasted_nano_usd).label("wasted"),
            sa.func.sum(t.c.cache_savings_nano_usd).label("savings"),
            sa.func.sum(sa.func.coalesce(t.c.rework_nano_usd, 0)).label("rework"),
            sa.func.sum(t.c.unpriced_calls).label("unpriced"),
            sa.func.sum(t.c.estimated_calls).label("estimated"),
            sa.func.sum(t.c.llm_calls).label("llm_calls"),
            _count_if(escalated).label("escalated"),
            _sum_if(escalated, t.c.cost_nano_usd).label("escalated_cost"),
            _count_if(sa.and_(_succeeded(), timed)).label("success_timed"),
            _count_if(sa.and_(_succeeded(), untimed)).label("success_untimed"),
            _count_if(sa.and_(_failed(), timed)).label("failed_timed"),
            _count_if(sa.and_(_failed(), untimed)).label("failed_untimed"),
        )
        .where(*where)
        .group_by(*keys)
        .having(sa.func.count() > 0)  # without GROUP BY, an empty ledger still gives one row
    )


def _succeeded() -> sa.ColumnElement[bool]:
    return s.tasks.c.outcome == "success"


def _failed() -> sa.ColumnElement[bool]:
    return s.tasks.c.outcome.in_(FAILED_OUTCOMES)


def _latency_query(keys: list[sa.ColumnElement[Any]], where: list[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    """Nearest-rank p50 / p95 of ``duration_s`` per group and outcome class, with :func:`_percentile_query`.

    The class (``"s"`` success, ``"f"`` failed) is one more group key, so both classes take one scan;
    tasks of neither class or without a duration are filtered out first.
    """
    t = s.tasks
    klass = sa.case((_succeeded(), sa.literal("s")), else_=sa.literal("f")).label(f"k{len(keys)}")
    timed = [*where, t.c.duration_s.is_not(None), sa.or_(_succeeded(), _failed())]
    return _percentile_query([*keys, klass], timed, (t.c.duration_s,))


def _percentile_query(
    keys: list[sa.ColumnElement[Any]], where: list[sa.ColumnElement[bool]], values: Sequence[sa.ColumnElement[int]]
) -> sa.Select[Any]:
    """Nearest-rank p50 and p95 of each of ``values`` per group, in one scan (columns p50_0, p95_0, ...).

    ``CUME_DIST()`` is the share of the group's rows whose value is <= this row's (the share of the
    last of its ties), so the smallest value with ``cume_dist >= p`` is the value ranked ceil(p * n):
    the nearest-rank percentile, ties included. One window per value, against two (ROW_NUMBER and
    COUNT) for the same result: about half the sorting. ``cume_dist`` is a double k/n; comparing it
    with ``p`` is exact while n < 2**40, as k/n and p differ by at least 1/(20n) unless equal.
    """
    partition = [k.element for k in keys] or None
    ranked = (
        sa.select(
            *keys,
            *(value.label(f"v{j}") for j, value in enumerate(values)),
            *(
                sa.func.cume_dist().over(partition_by=partition, order_by=value).label(f"cd{j}")
                for j, value in enumerate(values)
            ),
        )
        .where(*where)
        .subquery("ranked")
    )
    group = [ranked.c[f"k{i}"] for i in range(len(keys))]
    columns: list[sa.ColumnElement[Any]] = []
    for j in range(len(values)):
        v, cd = ranked.c[f"v{j}"], ranked.c[f"cd{j}"]
        columns.append(sa.func.min(sa.case((cd >= sa.literal(0.5, sa.Float), v))).label(f"p50_{j}"))
        columns.append(sa.func.min(sa.case((cd >= sa.literal(0.95, sa.Float), v))).label(f"p95_{j}"))
    return sa.select(*group, *columns).group_by(*group)


def _run_stages(
    engine: Engine, stages: Sequence[sa.Select[Any]], progress: ProgressCallback | None
) -> list[list[sa.Row[Any]]]:
    """Run the statements in one read transaction (on PostgreSQL one snapshot), reporting progress."""
    results: list[list[sa.Row[Any]]] = []
    if progress is not None:
        progress(0, len(stages))
    with engine.connect() as conn:
        _read_snapshot(conn)
        for i, stage in enumerate(stages, 1):
            results.append(list(conn.execute(stage)))
            if progress is not None:
                progress(i, len(stages))
    return results


def _read_snapshot(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        # Every statement of the report sees the same rows; reports may outlast the ledger's
        # 10-second statement timeout, which guards the writers, not analytics.
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
    # SQLite: the connection's transaction already holds one snapshot for all statements.


def scope_stats(
    engine: Engine,
    *,
    by: Sequence[str] = ("feature",),
    filters: Filters = Filters(),
    progress: ProgressCallback | None = None,
    exact: bool = False,
    percentiles: bool = True,
) -> list[ScopeStats]:
    """Figures per scope over the ledger's tasks, from the ledger's rollups where they apply.

    Sums, counts, means and rates are exact either way. Percentiles come from the rollups' sketches,
    within 1% of the exact nearest-rank value (:mod:`costtrace.spend.sketch`), unless ``exact=True``.

    Two paths, with the same definitions:

    - **Rollups** (:mod:`costtrace.spend.rollups`), the default: the coarsest clean cells (months, days,
      hours) that cover the window, plus the raw rows of the periods still marked dirty and of the
      partial hours at the window's edges; the context tax from the model cells. Its time grows with
      the groups and periods asked for, not with the tasks.
    - **Raw rows**, when ``exact=True``, or the report groups or filters by ``customer`` or filters on a
      custom dimension (neither is in the rollups): four statements over every task in the window,
      the sums per group, the nearest-rank percentiles of input and output tokens, cost and attempts
      per task (window functions), those of the wall time of successful and of failed tasks, and the
      context tax (the calls' cost and token sums per group and model, :func:`_context_query`).

    Groups come sorted by their key values, ascending, with missing values last; only groups with tasks
    appear.

    Args:
        engine: The ledger's engine (``costtrace.spend.engine.make_engine(url)``).
        by: Group keys, any of :data:`GROUP_KEYS`, in the order of ``ScopeStats.key``; ``()`` for
            one scope over everything. Time buckets are UTC (see :data:`TIME_KEYS`).
        filters: Which tasks count (on ``ended_at`` for ``since`` / ``until``).
        progress: ``progress(done, total)``, called with 0 first and after each statement.
        exact: Read every raw row, for exact nearest-rank percentiles.
        percentiles: False leaves out every percentile (None) and the context tax (empty): sums, counts,
            means and rates only, for charts that need nothing else; several times faster.

    Raises:
        ConfigError: An unknown or repeated group key, or bad filters; the message lists the allowed keys.

    Example:
        >>> rows = scope_stats(engine, by=("feature", "route"))                # doctest: +SKIP
        >>> [(r.key, r.cost_per_successful_task_usd) for r in rows]           # doctest: +SKIP
        [({'feature': 'support', 'route': 'gpt-4o-mini'}, Decimal('0.00041'))]
    """
    keys = _check_keys(by)
    filters = _check_filters(filters)
    if not isinstance(exact, bool):
        raise ConfigError(f"exact={exact!r} must be True or False")
    if not isinstance(percentiles, bool):
        raise ConfigError(f"percentiles={percentiles!r} must be True or False")
    if exact or not _rollups_apply(keys, filters):
        return _scope_stats_raw(engine, keys, filters, progress, percentiles=percentiles)
    return _scope_stats_rollups(engine, keys, filters, progress, percentiles=percentiles)


def _rollups_apply(keys: tuple[str, ...], f: Filters) -> bool:
    """Whether every key and filter is a column of the rollup cells (custom dimensions and customers are not)."""
    return "customer" not in keys and f.customer is None and not f.dimensions


def _scope_stats_raw(
    engine: Engine,
    keys: tuple[str, ...],
    filters: Filters,
    progress: ProgressCallback | None,
    *,
    percentiles: bool = True,
) -> list[ScopeStats]:
    where = _task_conditions(filters)
    key_columns = _key_columns(keys, engine.dialect.name)
    t = s.tasks
    stages = [
        _totals_query(key_columns, where),
        _percentile_query(key_columns, where, (t.c.input_tokens, t.c.output_tokens, t.c.cost_nano_usd, t.c.attempts)),
        _latency_query(key_columns, where),
        _context_query(key_columns, where),
    ]
    if not percentiles:
        stages = stages[:1]
    totals, *rest = _run_stages(engine, stages, progress)
    ranked, latencies, contexts = rest if rest else ([], [], [])
    width = len(keys)
    pct = {tuple(row[:width]): tuple(row[width:]) for row in ranked}
    lat = {tuple(row[: width + 1]): tuple(row[width + 1 :]) for row in latencies}
    ctx = _context_sums(width, contexts)
    stats = [_scope(keys, tuple(row[:width]), row._mapping, pct, lat, ctx) for row in totals]
    stats.sort(key=lambda st: _sort_key(tuple(st.key.values())))
    return stats


_CELL_COLUMN = {"feature": "feature", "task": "name", "route": "route", "final_model": "final_model", "team": "team"}
"""Group keys and filters as columns of the rollup cells."""


def _cell_filters(f: Filters) -> dict[str, str]:
    """The filters' exact values as rollup cell columns (``task`` -> ``name``)."""
    return {_CELL_COLUMN[name]: getattr(f, name) for name in _CELL_COLUMN if getattr(f, name, None) is not None}


def _bucket_text(key: str, period: datetime) -> str:
    """The text of ``period``'s time bucket, the same as :func:`_time_bucket` gives in SQL."""
    if key == "hour":
        return period.strftime("%Y-%m-%dT%H:00")
    if key == "day":
        return period.strftime("%Y-%m-%d")
    if key == "week":
        return (period - timedelta(days=period.weekday())).strftime("%Y-%m-%d")
    return period.strftime("%Y-%m")


def _quantiles(sketch: Any, *, integer: bool) -> tuple[Any, Any]:
    """p50 and p95 of a rollup sketch: whole numbers (tokens, nano-USD, attempts), or seconds to 4 digits.

    An estimate that is the sketch's exact min or max (a single value, the extremes) is kept as it is.
    """
    if not sketch.count:
        return None, None
    p50, p95 = sketch.quantiles((0.5, 0.95))
    assert p50 is not None and p95 is not None
    if integer:
        return round(p50), round(p95)
    exact = (sketch.min, sketch.max)
    return (p50 if p50 in exact else float(f"{p50:.4g}")), (p95 if p95 in exact else float(f"{p95:.4g}"))


def _window(conn: Connection, f: Filters) -> tuple[datetime, datetime] | None:
    """The hour-aligned span of the ledger's tasks within the filters' window; None when there is none."""
    from costtrace.spend import rollups

    t = s.tasks
    # Two scalar subqueries, not min() and max() in one SELECT: SQLite answers a lone min() or max()
    # from the index's first or last entry, but both in one SELECT scan the whole index (0.2 s at 1M).
    first, last = conn.execute(
        sa.select(
            sa.select(sa.func.min(t.c.ended_at)).scalar_subquery(),
            sa.select(sa.func.max(t.c.ended_at)).scalar_subquery(),
        )
    ).one()
    if first is None:
        return None
    start = rollups.hour_of(first)
    end = rollups.hour_of(last) + timedelta(hours=1)
    if f.since is not None:
        start = max(start, _naive_utc(f.since))
    if f.until is not None:
        end = min(end, _naive_utc(f.until))
    return (start, end) if start < end else None


def model_sums(
    engine: Engine, *, filters: Filters = Filters(), by: Sequence[str] = ("request_model",)
) -> dict[tuple[Any, ...], dict[str, int]] | None:
    """Sums of the calls of the filters' tasks per group of :data:`costtrace.spend.rollups.MODEL_KEYS`.

    From the rollups' model cells (raw rows where they can't be used), with the same exact integers as
    a scan; the names are :data:`costtrace.spend.rollups.MODEL_SUMS`. Calls outside any task are in no
    group. None when the filters need columns the rollups do not hold (``customer``, custom dimensions):
    read the raw rows.

    Example:
        >>> sums = model_sums(engine, filters=Filters(feature="support"))   # doctest: +SKIP
        >>> sums[("gpt-4o-mini",)]["failed_attempts"]                       # doctest: +SKIP
        12
    """
    from costtrace.spend import rollups

    f = _check_filters(filters)
    if not _rollups_apply((), f):
        return None
    key_filters = _cell_filters(f)
    names = tuple(by)
    with engine.connect() as conn:
        _read_snapshot(conn)
        window = _window(conn, f)
        if window is None:
            return {}
        return rollups.read_model_groups(
            conn,
            start=window[0],
            end=window[1],
            group_of=lambda _period, keys: tuple(keys[name] for name in names),
            key_filters=key_filters,
        )


def _scope_stats_rollups(
    engine: Engine,
    keys: tuple[str, ...],
    f: Filters,
    progress: ProgressCallback | None,
    *,
    percentiles: bool = True,
) -> list[ScopeStats]:
    from costtrace.spend import rollups

    time_keys = [k for k in keys if k in TIME_KEYS]
    grain = min((rollups.GRAIN[k] for k in time_keys), key=rollups.LEVELS.index, default="month")
    key_filters = _cell_filters(f)

    def group_of(period: datetime, cell: Any) -> tuple[Any, ...]:
        return tuple(_bucket_text(k, period) if k in TIME_KEYS else cell[_CELL_COLUMN[k]] for k in keys)

    if progress is not None:
        progress(0, 1)
    with engine.connect() as conn:
        _read_snapshot(conn)
        window = _window(conn, f)
        groups = {}
        models: dict[tuple[Any, ...], dict[str, int]] = {}
        if window is not None:
            groups = rollups.read_groups(
                conn,
                start=window[0],
                end=window[1],
                grain=grain,
                group_of=group_of,
                key_filters=key_filters,
                failed_outcomes=FAILED_OUTCOMES,
                sketches_too=percentiles,
                totals=not key_filters and all(k in TIME_KEYS for k in keys),
            )
        if window is not None and percentiles:
            models = rollups.read_model_groups(
                conn,
                start=window[0],
                end=window[1],
                grain=grain,
                group_of=lambda period, cell: (*group_of(period, cell), cell["provider"], cell["request_model"]),
                key_filters=key_filters,
            )
    ctx = _context_from_models(len(keys), models)
    if progress is not None:
        progress(1, 1)
    stats = []
    for group, g in groups.items():
        sums = dict(zip(rollups.SUMS, g.all.sums, strict=True))
        if not sums["tasks"]:
            continue
        sk = g.all.sketches
        row = {
            "tasks": sums["tasks"],
            "successes": g.success.sums[0],
            "first_pass": sums["first_pass"],
            "attempts": sums["attempts"],
            "input_tokens": sums["input_tokens"],
            "output_tokens": sums["output_tokens"],
            "cost": sums["cost_nano_usd"],
            "wasted": sums["wasted_nano_usd"],
            "savings": sums["cache_savings_nano_usd"],
            "rework": sums["rework_nano_usd"],
            "unpriced": sums["unpriced_calls"],
            "estimated": sums["estimated_calls"],
            "llm_calls": sums["llm_calls"],
            "escalated": sums["escalated"],
            "escalated_cost": sums["escalated_cost_nano_usd"],
            "success_timed": g.success.sums[-1],
            "success_untimed": g.success.sums[0] - g.success.sums[-1],
            "failed_timed": g.failed.sums[-1],
            "failed_untimed": g.failed.sums[0] - g.failed.sums[-1],
        }
        pct = {
            group: (
                *_quantiles(sk["input_tokens"], integer=True),
                *_quantiles(sk["output_tokens"], integer=True),
                *_quantiles(sk["cost"], integer=True),
                *_quantiles(sk["attempts"], integer=True),
            )
        }
        lat = {
            (*group, "s"): _quantiles(g.success.sketches["latency"], integer=False),
            (*group, "f"): _quantiles(g.failed.sketches["latency"], integer=False),
        }
        stats.append(_scope(keys, group, row, pct, lat, ctx))
    stats.sort(key=lambda st: _sort_key(tuple(st.key.values())))
    return stats


def _scope(
    keys: tuple[str, ...],
    group: tuple[Any, ...],
    row: Any,
    pct: dict[tuple[Any, ...], tuple[Any, ...]],
    lat: dict[tuple[Any, ...], tuple[Any, ...]],
    ctx: dict[tuple[Any, ...], dict[str, int]] | None = None,
) -> ScopeStats:
    n = int(row["tasks"])
    successes = int(row["successes"])
    cost_nano = int(row["cost"])
    escalated = int(row["escalated"])
    escalated_cost = int(row["escalated_cost"])
    llm_calls = int(row["llm_calls"])
    unpriced = int(row["unpriced"])
    estimated = int(row["estimated"])
    cost = _usd(cost_nano)
    wasted = _usd(row["wasted"])
    in50, in95, out50, out95, c50, c95, a50, a95 = pct.get(group, (None,) * 8)

    def tokens(total: Any, p50: Any, p95: Any) -> Distribution:
        return Distribution(
            _div(int(total or 0), n),
            None if p50 is None else Decimal(int(p50)),
            None if p95 is None else Decimal(int(p95)),
        )

    def latency(klass: str, timed: Any, untimed: Any) -> Latency:
        p50, p95 = lat.get((*group, klass), (None, None))
        return Latency(
            int(timed or 0),
            None if p50 is None else _seconds(p50),
            None if p95 is None else _seconds(p95),
            int(untimed or 0),
        )

    premium: Decimal | None = None
    if 0 < escalated < n:
        mean_escalated = _div(_usd(escalated_cost), escalated)
        mean_other = _div(_usd(cost_nano - escalated_cost), n - escalated)
        assert mean_escalated is not None and mean_other is not None
        premium = _CTX.subtract(mean_escalated, mean_other)
    return ScopeStats(
        key={key: (None if value is None else str(value)) for key, value in zip(keys, group, strict=True)},
        tasks=n,
        successes=successes,
        success_rate=_div(successes, n),
        first_pass_rate=_div(int(row["first_pass"]), n),
        mean_attempts=_div(int(row["attempts"]), n),
        input_tokens_per_task=tokens(row["input_tokens"], in50, in95),
        output_tokens_per_task=tokens(row["output_tokens"], out50, out95),
        cost_per_task_usd=Distribution(
            _div(cost, n), None if c50 is None else _usd(c50), None if c95 is None else _usd(c95)
        ),
        total_cost_usd=cost,
        cost_per_successful_task_usd=_div(cost, successes),
        wasted_cost_usd=wasted,
        retry_tax=_div(wasted, cost),
        escalation_rate=_div(escalated, n),
        escalation_premium_usd=premium,
        cache_savings_usd=_usd(row["savings"]),
        rework_cost_usd=_usd(row["rework"]),
        unpriced_calls=unpriced,
        estimated_calls=estimated,
        llm_calls=llm_calls,
        estimated_call_share=_div(estimated, llm_calls),
        cost_complete=unpriced == 0,
        escalated_tasks=escalated,
        first_pass_tasks=int(row["first_pass"]),
        attempts=int(row["attempts"]),
        attempts_per_task=tokens(row["attempts"], a50, a95),
        latency_success_s=latency("s", row["success_timed"], row["success_untimed"]),
        latency_failed_s=latency("f", row["failed_timed"], row["failed_untimed"]),
        context=ContextTax.from_sums((ctx or {}).get(group) or empty_sums()),
    )


# --------------------------------------------------------------------------------------------------
# The context tax (its own stage of scope_stats; see costtrace.analysis.context for the definitions)


_CONTEXT_COLUMNS = (
    ("input_nano", "input_nano_usd"),
    ("cache_read_nano", "cache_read_nano_usd"),
    ("cache_write_nano", "cache_write_nano_usd"),
    ("output_nano", "output_nano_usd"),
    ("reasoning_nano", "reasoning_nano_usd"),
    ("other_nano", "other_nano_usd"),
    ("input_tokens", "input_tokens"),
    ("cache_read_tokens", "cache_read_input_tokens"),
    ("cache_write_tokens", "cache_write_input_tokens"),
    ("output_tokens", "output_tokens"),
    ("reasoning_tokens", "reasoning_output_tokens"),
)
"""Sum key of :data:`costtrace.price.caching.CONTEXT_SUM_KEYS` -> the ``costtrace_calls`` column it sums."""


def _context_query(keys: list[sa.ColumnElement[Any]], where: list[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    """Per group, provider and requested model: the calls' cost components and token counts, summed.

    Calls join their task (``task_id``), whose columns give the group and the filters, exactly as for
    the tasks themselves; calls without a task are in no scope. ``uncached_calls`` counts the calls
    with uncached input (input - cache reads - cache writes > 0): those a missing cache price leaves
    out of the caching bound.
    """
    c, t = s.calls, s.tasks
    uncached = c.c.input_tokens - c.c.cache_read_input_tokens - c.c.cache_write_input_tokens
    return (
        sa.select(
            *keys,
            c.c.provider.label("provider"),
            c.c.request_model.label("model"),
            *(sa.func.sum(c.c[column]).label(name) for name, column in _CONTEXT_COLUMNS),
            _count_if(uncached > 0).label("uncached_calls"),
        )
        .select_from(c.join(t, c.c.task_id == t.c.task_id))
        .where(*where)
        .group_by(*keys, c.c.provider, c.c.request_model)
    )


def _context_from_models(
    width: int, models: Mapping[tuple[Any, ...], Mapping[str, int]]
) -> dict[tuple[Any, ...], dict[str, int]]:
    """:func:`_context_sums` from the rollups' model sums, keyed (group..., provider, model)."""
    rows = [
        {
            "group": key[:width],
            "provider": key[width],
            "model": key[width + 1],
            **{name: sums[column] for name, column in _CONTEXT_COLUMNS},
            "uncached_calls": sums["uncached_input_calls"],
        }
        for key, sums in models.items()
    ]
    return _fold_context(rows)


def _context_sums(width: int, rows: Sequence[sa.Row[Any]]) -> dict[tuple[Any, ...], dict[str, int]]:
    """Fold the rows of :func:`_context_query` into one sums dict per group (``CONTEXT_SUM_KEYS``).

    The caching bound is applied once per (group, provider, model) row, to the row's token sums
    (:func:`costtrace.price.caching.caching_bound_nano`, memoised per provider and model).
    """
    return _fold_context([{"group": tuple(row[:width]), **row._mapping} for row in rows])


def _fold_context(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[Any, ...], dict[str, int]]:
    from costtrace.price.caching import caching_bound_nano

    result: dict[tuple[Any, ...], dict[str, int]] = {}
    for m in rows:
        group = m["group"]
        sums = result.get(group)
        if sums is None:
            sums = result[group] = empty_sums()
        counts = {name: int(m[name] or 0) for name, _ in _CONTEXT_COLUMNS}
        for name, value in counts.items():
            sums[name] += value
        bound = caching_bound_nano(
            m["provider"],
            m["model"],
            input_tokens=counts["input_tokens"],
            cache_read_tokens=counts["cache_read_tokens"],
            cache_write_tokens=counts["cache_write_tokens"],
        )
        if bound is None:
            sums["caching_unknown_calls"] += int(m["uncached_calls"] or 0)
        else:
            sums["caching_bound_nano"] += bound
    return result


# --------------------------------------------------------------------------------------------------
# model_costs


@dataclass(frozen=True)
class ModelCost:
    """What one requested model cost, per million tokens at the catalog's prices and per useful one.

    ``useful_tokens`` are the input + output tokens of the calls that produced a delivered result:
    calls in the final attempt (``attempt == tasks.attempts``) of tasks whose outcome is success.
    Everything else the model was paid for (retried and escalated attempts, failed tasks, calls
    outside any task) is spend without useful tokens, so ``effective_per_mtok_useful`` is at least
    ``blended_list_per_mtok``; their ratio is the production overhead.
    """

    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    """Priced calls only (a lower bound when ``unpriced_calls > 0``)."""
    list_input_per_mtok: Decimal | None
    """The catalog's current input price of the model (its base tier), USD per million tokens."""
    list_output_per_mtok: Decimal | None
    blended_list_per_mtok: Decimal | None
    """cost / (input + output tokens) x 1e6 over all calls: the catalog prices blended by your input /
    output mix and cache use."""
    useful_tokens: int
    effective_per_mtok_useful: Decimal | None
    """ALL the model's spend / useful tokens x 1e6; None with no useful token."""
    unpriced_calls: int = 0
    provider: str | None = None
    """The provider of the model's calls (one of them, when several served the same model name)."""

    @property
    def cost_complete(self) -> bool:
        return self.unpriced_calls == 0


def _model_query(where: list[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    c, t = s.calls, s.tasks
    useful = sa.and_(t.c.outcome == "success", c.c.attempt == t.c.attempts)
    return (
        sa.select(
            c.c.request_model.label("model"),
            sa.func.max(c.c.provider).label("provider"),
            sa.func.count().label("calls"),
            sa.func.sum(c.c.input_tokens).label("input_tokens"),
            sa.func.sum(c.c.output_tokens).label("output_tokens"),
            sa.func.sum(sa.func.coalesce(c.c.cost_nano_usd, 0)).label("cost"),
            _count_if(c.c.cost_nano_usd.is_(None)).label("unpriced"),
            _sum_if(useful, c.c.input_tokens + c.c.output_tokens).label("useful"),
        )
        .select_from(c.outerjoin(t, c.c.task_id == t.c.task_id))
        .where(*where)
        .group_by(c.c.request_model)
    )


@dataclass
class _ModelRow:
    model: str
    provider: str | None
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: int = 0
    unpriced: int = 0
    useful: int = 0


def _model_rows_from_rollups(
    engine: Engine, f: Filters, where: list[sa.ColumnElement[bool]], tick: ProgressCallback | None
) -> list[Any]:
    """:func:`_model_query`'s rows for a window-less scope: the tasks' calls from the rollups' model cells,
    the calls outside any task (one indexed statement) from the raw rows; all from the raw rows when a
    count says some calls are in neither (calls of a task never written)."""
    per = model_sums(engine, filters=f, by=("request_model", "provider")) or {}
    rows: dict[str, _ModelRow] = {}
    for (model, provider), sums in sorted(per.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        row = rows.setdefault(model, _ModelRow(model, provider))
        row.provider = max(row.provider or "", provider or "") or None
        row.calls += sums["calls"]
        row.input_tokens += sums["input_tokens"]
        row.output_tokens += sums["output_tokens"]
        row.cost += sums["cost_nano_usd"]
        row.unpriced += sums["unpriced_calls"]
        row.useful += sums["useful_tokens"]
    if f.route is None:  # calls without a task have no route: a route filter never matches them
        c = s.calls
        (loose,) = _run_stages(engine, [_model_query([*where, c.c.task_id.is_(None)])], tick)
        # Calls of a task that was never written (its process crashed) are in no cell: when the calls
        # do not add up, read them all (exact, a full scan) rather than leave their cost out.
        accounted = sum(sums["calls"] for sums in per.values()) + sum(int(r.calls) for r in loose)
        with engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(c).where(*where)).scalar_one()
        if int(total) != accounted:
            (raw,) = _run_stages(engine, [_model_query(where)], tick)
            return list(raw)
        for r in loose:
            row = rows.setdefault(r.model, _ModelRow(r.model, r.provider))
            row.provider = max(row.provider or "", r.provider or "") or None
            row.calls += int(r.calls)
            row.input_tokens += int(r.input_tokens or 0)
            row.output_tokens += int(r.output_tokens or 0)
            row.cost += int(r.cost or 0)
            row.unpriced += int(r.unpriced or 0)
    return list(rows.values())


def _list_prices(provider: str | None, model: str) -> tuple[Decimal | None, Decimal | None]:
    """The catalog's (input, output) USD per million tokens for ``model`` now, or Nones when unpriced.

    Priced on 1,000 tokens and scaled, so that a tiered model shows its base tier, not the tier
    a 1M-token prompt would fall in.
    """
    from costtrace.price.catalog import default_catalog
    from costtrace.usage import Usage

    catalog = default_catalog()
    if not catalog.is_priced(provider, model):
        return None, None
    per_k = Decimal(1000)
    inp = catalog.cost(Usage(input_tokens=1000), provider=provider, model=model)
    out = catalog.cost(Usage(output_tokens=1000), provider=provider, model=model)
    return (
        inp.input_usd * per_k if inp.priced else None,
        out.output_usd * per_k if out.priced else None,
    )


def model_costs(
    engine: Engine,
    *,
    filters: Filters = Filters(),
    progress: ProgressCallback | None = None,
) -> list[ModelCost]:
    """Effective production token cost per requested model, next to its catalog price.

    One statement over ``costtrace_calls`` joined to their tasks, grouped by ``request_model``;
    then each model's catalog price. Sorted by cost, highest first.

    Args:
        engine: The ledger's engine.
        filters: feature, task (``task_name``), team, customer on the calls' own columns; route on
            their task's; ``since`` / ``until`` on the calls' ``started_at``.
        progress: ``progress(done, total)``, called with 0 first and after each stage.

    Raises:
        ConfigError: Bad filters.

    Example:
        >>> for m in model_costs(engine, filters=Filters(feature="support")):    # doctest: +SKIP
        ...     print(m.model, m.blended_list_per_mtok, m.effective_per_mtok_useful)
        gpt-4o-mini 0.21 0.58
    """
    f = _check_filters(filters)
    where = _call_conditions(f)
    tick: ProgressCallback | None = None
    if progress is not None:
        user_progress = progress

        def tick(done: int, _total: int) -> None:
            user_progress(done, 2)

    rows: list[Any]
    if f.since is None and f.until is None and _rollups_apply((), f):
        rows = _model_rows_from_rollups(engine, f, where, tick)
    else:  # a window is on the calls' own start times, which the rollups (by the task's end) do not keep
        (rows,) = _run_stages(engine, [_model_query(where)], tick)
    result = []
    for row in rows:  # one row per model, not per call
        cost = _usd(row.cost)
        calls, unpriced = int(row.calls), int(row.unpriced)
        useful = int(row.useful or 0)
        tokens = int(row.input_tokens or 0) + int(row.output_tokens or 0)
        spend = _CTX.multiply(cost, _MILLION)
        if unpriced == calls:  # no priced call: the cost is unknown, not 0, so no price per token either
            tokens = useful_priced = 0
        else:
            useful_priced = useful
        list_in, list_out = _list_prices(row.provider, row.model)
        result.append(
            ModelCost(
                model=row.model,
                calls=calls,
                input_tokens=int(row.input_tokens or 0),
                output_tokens=int(row.output_tokens or 0),
                cost_usd=cost,
                list_input_per_mtok=list_in,
                list_output_per_mtok=list_out,
                blended_list_per_mtok=_div(spend, tokens),
                useful_tokens=useful,
                effective_per_mtok_useful=_div(spend, useful_priced),
                unpriced_calls=unpriced,
                provider=row.provider,
            )
        )
    if progress is not None:
        progress(2, 2)
    result.sort(key=lambda m: (-m.cost_usd, m.model))
    return result
