"""Outcome rules: alerts on what tasks achieve over a sliding window, not only on what they cost.

An :class:`OutcomeRule` bounds figures of the tasks that ended in its window (cost per successful task,
first-pass rate, success rate, retry tax, escalation rate). :func:`evaluate_outcome_rules` runs one
aggregate query per rule over ``costtrace_tasks`` (:func:`outcome_stats`) and fires each broken condition
as an ``outcome_rule`` :class:`~costtrace.spend.alerts.Alert`, once per window bucket across processes
(claimed in ``costtrace_alerts_fired``), through the alert dispatcher.

Example:
    >>> rule = OutcomeRule("support-quality", feature="support", window="1h", min_first_pass_rate=0.8)
    >>> evaluate_outcome_rules(engine, [rule])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from costtrace import _money, _validate
from costtrace._internal import report_internal_error
from costtrace.errors import ConfigError
from costtrace.spend.alerts import (
    _EPOCH,
    Alert,
    AlertDispatcher,
    _aware,
    _is_store_error,
    _pct,
    _usd,
    default_dispatcher,
)
from costtrace.spend.budgets import parse_duration
from costtrace.spend.webhooks import _warn_limited

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["OutcomeRule", "OutcomeStats", "evaluate_outcome_rules"]

_INFINITY = Decimal("Infinity")


def _naive(at: datetime) -> datetime:
    return at if at.tzinfo is None else at.astimezone(UTC).replace(tzinfo=None)


_RULE_KEYS = (
    "name",
    "feature",
    "task",
    "window",
    "min_tasks",
    "max_cost_per_success_usd",
    "min_first_pass_rate",
    "min_success_rate",
    "max_retry_tax",
    "max_escalation_rate",
)
_RATE_BOUNDS = ("min_first_pass_rate", "min_success_rate", "max_retry_tax", "max_escalation_rate")


@dataclass(frozen=True)
class OutcomeStats:
    """What one outcome rule's query found over its window (money in USD, rates as fractions).

    A ratio with nothing to divide by is None; cost per success is infinite when tasks cost money and
    none succeeded.
    """

    tasks: int
    successes: int
    first_pass: int
    escalated: int
    cost_usd: Decimal
    wasted_usd: Decimal

    @property
    def cost_per_success_usd(self) -> Decimal | None:
        """ALL the window's spend (failures and retries included) / successful tasks."""
        if self.successes:
            return self.cost_usd / self.successes
        return _INFINITY if self.cost_usd > 0 else None

    @property
    def first_pass_rate(self) -> Decimal | None:
        return Decimal(self.first_pass) / self.tasks if self.tasks else None

    @property
    def success_rate(self) -> Decimal | None:
        return Decimal(self.successes) / self.tasks if self.tasks else None

    @property
    def retry_tax(self) -> Decimal | None:
        """Wasted cost (failed attempts) / total cost."""
        return self.wasted_usd / self.cost_usd if self.cost_usd > 0 else None

    @property
    def escalation_rate(self) -> Decimal | None:
        """Share of tasks with at least one escalation."""
        return Decimal(self.escalated) / self.tasks if self.tasks else None


@dataclass(frozen=True)
class OutcomeRule:
    """An alert on task outcomes over a sliding window: fires when a figure breaks its bound.

    Each condition is checked on the tasks that ended in the last ``window`` (filtered by ``feature``
    and task name), once ``min_tasks`` have; each broken condition fires once per window bucket
    (windows aligned on the Unix epoch), across processes.

    Args:
        name: Unique id of the rule.
        feature: Only tasks of this feature.
        task: Only tasks of this name.
        window: ``"1h"``, ``"24h"``, seconds or a ``timedelta``.
        min_tasks: Below this many tasks in the window, nothing is judged.
        max_cost_per_success_usd: All spend / successful tasks must stay at or below this.
        min_first_pass_rate: Share of tasks that succeeded at the first attempt (0..1).
        min_success_rate: Share of tasks with outcome ``success`` (0..1).
        max_retry_tax: Wasted cost / total cost (0..1).
        max_escalation_rate: Share of tasks escalated at least once (0..1).

    Example:
        >>> OutcomeRule("support-quality", feature="support", window="1h", min_first_pass_rate=0.8).conditions()
        {'first_pass_rate': ('min', Decimal('0.8'))}
    """

    name: str
    _: KW_ONLY
    feature: str | None = None
    task: str | None = None
    window: timedelta | str | float = "1h"
    min_tasks: int = 20
    max_cost_per_success_usd: Decimal | float | str | None = None
    min_first_pass_rate: Decimal | float | str | None = None
    min_success_rate: Decimal | float | str | None = None
    max_retry_tax: Decimal | float | str | None = None
    max_escalation_rate: Decimal | float | str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 200:
            raise ConfigError(f"outcome rule name={self.name!r} must be a non-empty string of at most 200 characters")
        where = f"outcome rule {self.name!r}"
        for key in ("feature", "task"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{where}: {key}={value!r} must be a non-empty string or None")
        set_(self, "window", parse_duration(self.window, f"{where}: window"))
        _validate.count(self.min_tasks, f"{where}: min_tasks", minimum=1)
        if self.max_cost_per_success_usd is not None:
            cost = _validate.usd(self.max_cost_per_success_usd, f"{where}: max_cost_per_success_usd")
            set_(self, "max_cost_per_success_usd", cost)
        for key in _RATE_BOUNDS:
            value = getattr(self, key)
            if value is not None:
                set_(self, key, _validate.fraction(value, f"{where}: {key}"))
        if not self.conditions():
            raise ConfigError(
                f"{where}: set at least one condition: max_cost_per_success_usd, min_first_pass_rate, "
                "min_success_rate, max_retry_tax or max_escalation_rate"
            )

    def conditions(self) -> dict[str, tuple[Literal["min", "max"], Decimal]]:
        """The figures this rule checks: ``{metric: ("min" | "max", bound)}``."""
        pairs: dict[str, tuple[Literal["min", "max"], object]] = {
            "cost_per_success_usd": ("max", self.max_cost_per_success_usd),
            "first_pass_rate": ("min", self.min_first_pass_rate),
            "success_rate": ("min", self.min_success_rate),
            "retry_tax": ("max", self.max_retry_tax),
            "escalation_rate": ("max", self.max_escalation_rate),
        }
        return {k: (side, bound) for k, (side, bound) in pairs.items() if isinstance(bound, Decimal)}

    @property
    def window_length(self) -> timedelta:
        return self.window  # type: ignore[return-value]

    @property
    def scope(self) -> dict[str, str]:
        return {k: v for k, v in (("feature", self.feature), ("task", self.task)) if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OutcomeRule:
        """A rule from a config file's table (keys as the keyword arguments).

        Example:
            >>> OutcomeRule.from_dict({"name": "r", "feature": "support", "min_success_rate": 0.9}).min_success_rate
            Decimal('0.9')
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"an outcome rule must be a table of settings, got {type(data).__name__}")
        unknown = set(data) - set(_RULE_KEYS)
        if unknown:
            raise ConfigError(f"outcome rule: unknown setting(s) {sorted(unknown)}; allowed: {list(_RULE_KEYS)}")
        if "name" not in data:
            raise ConfigError("outcome rule: 'name' is required")
        kwargs = dict(data)
        return cls(kwargs.pop("name"), **kwargs)


def _window_bucket(now: datetime, window: timedelta) -> datetime:
    return _EPOCH + ((now - _EPOCH) // window) * window


def outcome_stats(engine: Engine, rule: OutcomeRule, now: datetime | None = None) -> OutcomeStats:
    """Run the rule's aggregate query (one ``SELECT`` over ``costtrace_tasks``) for the window ending ``now``."""
    import sqlalchemy as sa

    from costtrace.spend import schema as s

    end = _naive(now or datetime.now(UTC))
    start = end - rule.window_length
    t = s.tasks

    def count_if(condition: Any) -> Any:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    query = sa.select(
        sa.func.count(),
        count_if(t.c.outcome == "success"),
        count_if(t.c.first_pass.is_(True)),
        count_if(t.c.escalations > 0),
        sa.func.coalesce(sa.func.sum(t.c.cost_nano_usd), 0),
        sa.func.coalesce(sa.func.sum(t.c.wasted_nano_usd), 0),
    ).where(t.c.ended_at > start, t.c.ended_at <= end)
    if rule.feature is not None:
        query = query.where(t.c.feature == rule.feature)
    if rule.task is not None:
        query = query.where(t.c.name == rule.task)
    with engine.connect() as conn:
        row = conn.execute(query).one()
    return OutcomeStats(
        tasks=int(row[0]),
        successes=int(row[1]),
        first_pass=int(row[2]),
        escalated=int(row[3]),
        cost_usd=_money.from_nano(int(row[4])) or Decimal(0),
        wasted_usd=_money.from_nano(int(row[5])) or Decimal(0),
    )


_METRIC_LABELS: Mapping[str, str] = {
    "cost_per_success_usd": "cost per successful task",
    "first_pass_rate": "first-pass rate",
    "success_rate": "success rate",
    "retry_tax": "retry tax",
    "escalation_rate": "escalation rate",
}


def _outcome_message(rule: OutcomeRule, metric: str, value: Decimal, side: str, bound: Decimal, n: int) -> str:
    money = metric == "cost_per_success_usd"
    shown = "infinite (no task succeeded)" if not value.is_finite() else (_usd(value) if money else _pct(value))
    where = "".join(f", {k} {v!r}" for k, v in rule.scope.items())
    relation = "above" if side == "max" else "below"
    bound_text = _usd(bound) if money else _pct(bound)
    window = _duration_text(rule.window_length)
    return (
        f"outcome rule {rule.name!r}: {_METRIC_LABELS[metric]} {shown} is {relation} {bound_text} "
        f"({n} tasks in the last {window}{where})"
    )


def _duration_text(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def evaluate_outcome_rules(
    engine: Engine,
    rules: Sequence[OutcomeRule],
    now: datetime | None = None,
    *,
    dispatcher: AlertDispatcher | None = None,
) -> list[Alert]:
    """Check each rule over its window; fire each broken condition once per window bucket (across processes).

    One aggregate query per rule. Returns the alerts delivered. A database outage is logged and skipped.

    Example:
        >>> rules = [OutcomeRule("q", feature="support", min_first_pass_rate=0.8)]
        >>> evaluate_outcome_rules(engine, rules)  # doctest: +SKIP
    """
    from costtrace.spend import store

    at = _aware(now or datetime.now(UTC))
    fired: list[Alert] = []
    for rule in rules:
        try:
            fired.extend(_evaluate_rule(engine, rule, at, dispatcher or default_dispatcher(), store.claim_alert))
        except Exception as exc:
            if _is_store_error(exc):
                _warn_limited(
                    "alerts.outcome_rules.store",
                    "costtrace could not evaluate outcome rules: the ledger database failed (%s)",
                    type(exc).__name__,
                )
                break
            report_internal_error("alerts.evaluate_outcome_rules", exc)
    return fired


def _evaluate_rule(
    engine: Engine,
    rule: OutcomeRule,
    now: datetime,
    dispatcher: AlertDispatcher,
    claim: Callable[[Engine, str, datetime, str, Mapping[str, Any]], bool],
) -> list[Alert]:
    stats = outcome_stats(engine, rule, now)
    if stats.tasks < rule.min_tasks:
        return []
    bucket = _window_bucket(_naive(now), rule.window_length)
    fired: list[Alert] = []
    for metric, (side, bound) in rule.conditions().items():
        value: Decimal | None = getattr(stats, metric)
        if value is None or (value <= bound if side == "max" else value >= bound):
            continue
        alert = Alert(
            kind="outcome_rule",
            rule=rule.name,
            message=_outcome_message(rule, metric, value, side, bound, stats.tasks),
            at=now,
            threshold=bound,
            period_start=_aware(now - rule.window_length),
            resets_at=_aware(bucket + rule.window_length),
            scope=rule.scope,
            metric=metric,
            value=value,
            tasks=stats.tasks,
        )
        if claim(engine, f"outcome:{rule.name}", bucket, metric[:32], alert.to_dict()):
            dispatcher.dispatch(alert)
            fired.append(alert)
    return fired
