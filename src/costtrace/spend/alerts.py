"""Alerts: the Alert, budget thresholds, and the dispatcher that hands every alert to its sinks.

What fires:

- ``budget_threshold`` / ``budget_exhausted``: :func:`check_budgets` reads each budget's state and,
  for the thresholds its utilisation has reached, claims them in the ledger
  (``costtrace_alerts_fired``), so each threshold fires **once per period across every process**.
  A threshold >= 1 is ``budget_exhausted``. When one check finds several new thresholds at once
  (a jump from 10% to 120%), only the highest is delivered; the lower ones are claimed silently, so a
  channel gets one message, not three.
- ``budget_store_unavailable``: :func:`notify_store_unavailable`, at most once per budget every
  :data:`STORE_UNAVAILABLE_INTERVAL_S` per process (the shared store is what is missing).
- ``outcome_rule``: :func:`costtrace.spend.outcome_rules.evaluate_outcome_rules` (its own module) judges
  the tasks that ended in each rule's window and fires each broken condition once per window bucket.

Where it goes (:class:`AlertDispatcher`): a WARNING on the ``costtrace`` logger, an event on the
current span when one is recording, a ``TaskEvent`` for the ledger, the callbacks registered with
:func:`on_alert`, and :class:`~costtrace.spend.webhooks.Webhook` targets (JSON, or Slack's shape), each
posted from a background thread and bounded queue of its own (:mod:`costtrace.spend.webhooks`), so a
stuck endpoint delays only itself. Nothing here raises into the app, and nothing blocks it on the network.

Example:
    >>> import costtrace.spend.alerts as alerts
    >>> from costtrace.spend.webhooks import Webhook
    >>> unsubscribe = alerts.on_alert(lambda alert: print(alert.message))
    >>> alerts.add_webhook(Webhook("https://hooks.slack.com/services/T0/B0/XXX", slack=True))  # doctest: +SKIP
    >>> unsubscribe()
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.util.types import AttributeValue

from costtrace import _otel
from costtrace import semconv as sc
from costtrace._internal import logger, report_internal_error
from costtrace.errors import ConfigError
from costtrace.records import TaskEvent, emit_event, new_event_id
from costtrace.spend.webhooks import WEBHOOK_QUEUE_SIZE, Webhook, _warn_limited, _WebhookSender
from costtrace.spend.webhooks import _reset_for_tests as _reset_webhooks_for_tests

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from costtrace.spend.budgets import Budget
    from costtrace.spend.store import BudgetState, Touched

__all__ = [
    "Alert",
    "AlertDispatcher",
    "AlertKind",
    "add_webhook",
    "check_budgets",
    "default_dispatcher",
    "notify_store_unavailable",
    "on_alert",
    "update_budget_gauges",
]

AlertKind = Literal[
    "budget_threshold", "budget_exhausted", "budget_store_unavailable", "outcome_rule", "ledger_records_lost"
]

STORE_UNAVAILABLE_INTERVAL_S = 300.0
"""A budget store outage alerts at most once per budget per this many seconds, per process."""
_EPOCH = datetime(1970, 1, 1)
_ONE = Decimal(1)


# --- the alert -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    """One alert, as every sink receives it.

    Attributes:
        kind: ``budget_threshold`` | ``budget_exhausted`` | ``budget_store_unavailable`` | ``outcome_rule`` |
            ``ledger_records_lost`` (records the ledger could not write: their cost is missing).
        rule: The budget's name, or the outcome rule's name.
        message: One human sentence saying what happened (safe to post: no URLs, no secrets).
        at: When it was detected (aware UTC).
        threshold: The budget fraction reached (``Decimal("0.8")``), or the outcome rule's bound.
        spent_usd, limit_usd, utilisation: The budget's state when it fired (utilisation = spent / limit).
        period_start, resets_at: The budget period (aware UTC; ``resets_at`` None for ``total``); for an
            outcome rule, the start of the window judged and when the same condition can fire again.
        scope: The budget's scope, or the outcome rule's filters (``{"feature": "support"}``).
        metric: Outcome rules: which figure broke its bound (``cost_per_success_usd``, ``first_pass_rate``,
            ``success_rate``, ``retry_tax``, ``escalation_rate``).
        value: Outcome rules: that figure's value over the window.
        tasks: Outcome rules: how many tasks the window held.
    """

    kind: AlertKind
    rule: str
    message: str
    at: datetime
    threshold: Decimal | None = None
    spent_usd: Decimal | None = None
    limit_usd: Decimal | None = None
    utilisation: Decimal | None = None
    period_start: datetime | None = None
    resets_at: datetime | None = None
    scope: Mapping[str, str] = field(default_factory=dict)
    metric: str | None = None
    value: Decimal | None = None
    tasks: int | None = None

    @property
    def budget(self) -> str | None:
        """The budget's name for budget alerts, else None."""
        return self.rule if self.kind != "outcome_rule" else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: money and ratios as exact decimal strings (``"Infinity"`` possible), times as ISO 8601."""

        def text(value: object) -> str | None:
            if value is None:
                return None
            return value.isoformat() if isinstance(value, datetime) else str(value)

        return {
            "source": "costtrace",
            "kind": self.kind,
            "rule": self.rule,
            "message": self.message,
            "at": text(self.at),
            "threshold": text(self.threshold),
            "spent_usd": text(self.spent_usd),
            "limit_usd": text(self.limit_usd),
            "utilisation": text(self.utilisation),
            "period_start": text(self.period_start),
            "resets_at": text(self.resets_at),
            "scope": dict(self.scope),
            "metric": self.metric,
            "value": text(self.value),
            "tasks": self.tasks,
        }

    def span_attributes(self) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {
            sc.ALERT_KIND: self.kind,
            sc.ALERT_RULE: self.rule,
            sc.ALERT_MESSAGE: self.message,
        }
        if self.budget is not None:
            attrs[sc.BUDGET_NAME] = self.rule
        optional: dict[str, object] = {
            sc.ALERT_THRESHOLD: self.threshold,
            sc.BUDGET_SPENT_USD: self.spent_usd,
            sc.BUDGET_LIMIT_USD: self.limit_usd,
            sc.ALERT_UTILISATION: self.utilisation,
            sc.ALERT_VALUE: self.value,
        }
        for key, number in optional.items():
            if number is not None:
                attrs[key] = float(number)  # type: ignore[arg-type]
        if self.metric is not None:
            attrs[sc.ALERT_METRIC] = self.metric
        if self.period_start is not None:
            attrs[sc.BUDGET_PERIOD_START] = self.period_start.isoformat()
        if self.resets_at is not None:
            attrs[sc.BUDGET_RESETS_AT] = self.resets_at.isoformat()
        return attrs


def _aware(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _usd(amount: Decimal) -> str:
    if not amount.is_finite():
        return "$∞"
    if amount == 0 or abs(amount) >= Decimal("0.01"):
        return f"${amount:,.2f}"
    return f"${amount.quantize(Decimal('0.000001')).normalize():f}"


def _pct(fraction: Decimal) -> str:
    if not fraction.is_finite():
        return "∞%"
    return f"{(fraction * 100).quantize(Decimal('0.1')).normalize():f}%"


# --- the dispatcher --------------------------------------------------------------------------------

AlertCallback = Callable[[Alert], object]


class AlertDispatcher:
    """Delivers each alert to every sink; a failing sink never stops the others or reaches the caller.

    Sinks, in order: a WARNING on the ``costtrace`` logger; an event (``costtrace.budget.alert``, or
    ``costtrace.outcome.alert``) on the current span if it is recording; a ``TaskEvent`` for the ledger
    (kind ``budget_alert`` or ``outcome_alert``); the callbacks, in the dispatching thread (keep them
    quick: it is usually the ledger's writer thread); then the webhooks, each queued for its own sender
    thread (``queue_size`` deliveries per webhook).

    Example:
        >>> d = AlertDispatcher()
        >>> got = []
        >>> unsubscribe = d.on_alert(got.append)
        >>> d.dispatch(Alert("outcome_rule", "demo", "demo rule fired", datetime.now(UTC)))
        >>> len(got)
        1
    """

    def __init__(self, webhooks: Iterable[Webhook] = (), *, queue_size: int = WEBHOOK_QUEUE_SIZE) -> None:
        self._lock = threading.Lock()
        self._callbacks: tuple[AlertCallback, ...] = ()
        self._webhooks: tuple[Webhook, ...] = ()
        self._sender = _WebhookSender(queue_size)
        for webhook in webhooks:
            self.add_webhook(webhook)
        _dispatchers.add(self)

    def on_alert(self, callback: AlertCallback) -> Callable[[], None]:
        """Call ``callback(alert)`` for every alert; returns a function that unsubscribes it."""
        if not callable(callback):
            raise ConfigError(f"on_alert needs a function taking an Alert, got {type(callback).__name__}")
        with self._lock:
            self._callbacks = (*self._callbacks, callback)

        def unsubscribe() -> None:
            with self._lock:
                self._callbacks = tuple(c for c in self._callbacks if c is not callback)

        return unsubscribe

    def add_webhook(self, webhook: Webhook) -> Callable[[], None]:
        """Post every alert to ``webhook``; returns a function that removes it."""
        if not isinstance(webhook, Webhook):
            raise ConfigError(f"add_webhook needs a costtrace.Webhook, got {type(webhook).__name__}")
        with self._lock:
            self._sender.add(webhook)
            self._webhooks = (*self._webhooks, webhook)

        def remove() -> None:
            with self._lock:
                self._webhooks = tuple(w for w in self._webhooks if w is not webhook)
                self._sender.remove(webhook)  # its queued deliveries are dropped (counted)

        return remove

    @property
    def webhooks(self) -> tuple[Webhook, ...]:
        return self._webhooks

    def stats(self) -> dict[str, int]:
        """Webhook deliveries: ``sent``, ``failed`` (gave up), ``retried`` (extra attempts), ``dropped``."""
        s = self._sender
        return {"sent": s.sent, "failed": s.failed, "retried": s.retried, "dropped": s.dropped}

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until queued webhook deliveries are done; False if ``timeout_s`` passed first."""
        return self._sender.flush(timeout_s)

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Flush, then stop the webhooks' threads (deliveries still queued after ``timeout_s`` are dropped).

        Returns within about ``timeout_s``: an attempt still in flight is abandoned to its daemon thread,
        which ends within that webhook's ``timeout_s``.
        """
        return self._sender.shutdown(timeout_s)

    def dispatch(self, alert: Alert) -> None:
        """Deliver ``alert`` to every sink. Never raises; never waits on the network."""
        for site, sink in (("log", self._log), ("span_event", self._span_event), ("ledger_event", self._ledger_event)):
            try:
                sink(alert)
            except Exception as exc:
                report_internal_error(f"alerts.{site}", exc)
        for callback in self._callbacks:
            try:
                callback(alert)
            except Exception as exc:  # the user's callback: log it, never propagate
                logger.warning(
                    "costtrace alert callback %s raised %s; ignored",
                    getattr(callback, "__qualname__", type(callback).__name__),
                    type(exc).__name__,
                )
        for webhook in self._webhooks:
            try:
                self._sender.submit(webhook, webhook.body(alert))
            except Exception as exc:
                report_internal_error("alerts.webhook_submit", exc)

    @staticmethod
    def _log(alert: Alert) -> None:
        logger.warning("costtrace alert (%s): %s", alert.kind, alert.message)

    @staticmethod
    def _span_event(alert: Alert) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            name = sc.EVENT_OUTCOME_ALERT if alert.kind == "outcome_rule" else sc.EVENT_BUDGET_ALERT
            span.add_event(name, alert.span_attributes())

    @staticmethod
    def _ledger_event(alert: Alert) -> None:
        emit_event(
            TaskEvent(
                event_id=new_event_id(),
                kind="outcome_alert" if alert.kind == "outcome_rule" else "budget_alert",
                at=alert.at,
                reason=alert.kind,
                details=alert.message,
                amount_usd=alert.spent_usd,
                data=alert.to_dict(),
            )
        )


_dispatchers: weakref.WeakSet[AlertDispatcher] = weakref.WeakSet()
_default_dispatcher = AlertDispatcher()


def default_dispatcher() -> AlertDispatcher:
    """The process's dispatcher: the one :func:`check_budgets` and :func:`evaluate_outcome_rules` use by default."""
    return _default_dispatcher


def on_alert(callback: AlertCallback) -> Callable[[], None]:
    """Call ``callback(alert)`` for every alert of this process; returns the unsubscribe function.

    Example:
        >>> unsubscribe = on_alert(lambda alert: print(alert.kind, alert.message))
        >>> unsubscribe()
    """
    return _default_dispatcher.on_alert(callback)


def add_webhook(webhook: Webhook) -> Callable[[], None]:
    """Post every alert of this process to ``webhook``; returns the function that removes it."""
    return _default_dispatcher.add_webhook(webhook)


# --- budget gauges ---------------------------------------------------------------------------------

_gauge_lock = threading.Lock()
_gauge_values: dict[str, tuple[tuple[float, float, float], str | None]] = {}
_gauges_registered = False


def update_budget_gauges(states: Iterable[BudgetState], periods: Mapping[str, str] | None = None) -> None:
    """Set the latest known spend, limit and utilisation of these budgets (read by the observable gauges).

    ``periods`` maps budget names to their period kind, added as ``costtrace.budget.period``.
    """
    global _gauges_registered
    if not _gauges_registered:
        _register_gauges()
        _gauges_registered = True
    with _gauge_lock:
        for state in states:
            period = (periods or {}).get(state.budget)
            values = (float(state.spent_usd), float(state.limit_usd), float(state.utilisation))
            _gauge_values[state.budget] = (values, period)


def _register_gauges() -> None:
    m = _otel.meter()
    m.create_observable_gauge(
        sc.METRIC_BUDGET_SPEND,
        callbacks=[_observe(0)],
        unit="USD",
        description="Spend of each budget in its current period (recorded calls; reservations excluded).",
    )
    m.create_observable_gauge(
        sc.METRIC_BUDGET_LIMIT, callbacks=[_observe(1)], unit="USD", description="Each budget's limit."
    )
    m.create_observable_gauge(
        sc.METRIC_BUDGET_UTILISATION,
        callbacks=[_observe(2)],
        unit="1",
        description="Spend / limit of each budget in its current period (1 = exhausted).",
    )


def _observe(index: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        with _gauge_lock:
            items = list(_gauge_values.items())
        out = []
        for name, (values, period) in items:
            attrs: dict[str, AttributeValue] = {sc.BUDGET_NAME: name}
            if period is not None:
                attrs[sc.BUDGET_PERIOD] = period
            out.append(Observation(values[index], attrs))
        return out

    return callback


def _reset_for_tests() -> None:
    with _gauge_lock:
        _gauge_values.clear()
    with _claims_lock:
        _claimed.clear()
    with _store_down_lock:
        _store_down_last.clear()
    _reset_webhooks_for_tests()


# --- budget thresholds -----------------------------------------------------------------------------

_claims_lock = threading.Lock()
_claimed: weakref.WeakKeyDictionary[Engine, dict[str, tuple[datetime, set[str]]]] = weakref.WeakKeyDictionary()
"""Per engine and budget: the claim period and the thresholds known to be claimed (by us or another
process). A claim is settled for good once seen, so a steady state costs no write transaction."""


def _settled(engine: Engine, budget: str, period: datetime) -> set[str]:
    with _claims_lock:
        per_engine = _claimed.setdefault(engine, {})
        known = per_engine.get(budget)
        if known is None or known[0] != period:
            if known is not None and known[0] > period:
                return set()  # a late check of a closed period: don't evict the current one
            known = (period, set())
            per_engine[budget] = known
        return set(known[1])


def _settle(engine: Engine, budget: str, period: datetime, threshold: str) -> None:
    with _claims_lock:
        known = _claimed.setdefault(engine, {}).get(budget)
        if known is not None and known[0] == period:
            known[1].add(threshold)


def _claim_period(budget: Budget, period_start: datetime) -> datetime:
    """The period a threshold fires once in: the budget period, or for a rolling budget, fixed windows
    of its length (a rolling window moves every bucket; claiming per bucket would re-fire every hour)."""
    if budget.period != "rolling" or not isinstance(budget.window, timedelta):
        return period_start
    return _EPOCH + ((period_start - _EPOCH) // budget.window) * budget.window


def _budget_alert(budget: Budget, state: BudgetState, threshold: Decimal, now: datetime) -> Alert:
    exhausted = threshold >= _ONE
    resets = f"resets {state.resets_at.isoformat()}" if state.resets_at is not None else "never resets"
    verb = "exhausted at" if exhausted else "at"
    message = (
        f"budget {budget.name!r} {verb} {_pct(threshold)} "
        f"(spent {_usd(state.spent_usd)} of {_usd(state.limit_usd)}; {resets})"
    )
    return Alert(
        kind="budget_exhausted" if exhausted else "budget_threshold",
        rule=budget.name,
        message=message,
        at=now,
        threshold=threshold,
        spent_usd=state.spent_usd,
        limit_usd=state.limit_usd,
        utilisation=state.utilisation,
        period_start=_aware(state.period_start),
        resets_at=state.resets_at,
        scope=dict(budget.scope),
    )


def _is_store_error(exc: BaseException) -> bool:
    """The database failed (unreachable, locked too long, disk full): an outage, not a bug of ours."""
    from sqlalchemy.exc import DBAPIError

    return isinstance(exc, (DBAPIError, OSError))


def check_budgets(
    engine: Engine,
    budgets: Sequence[Budget],
    touched: Sequence[Touched] | None = None,
    now: datetime | None = None,
    *,
    dispatcher: AlertDispatcher | None = None,
) -> list[Alert]:
    """Fire the budget thresholds reached, each once per period across processes; update the gauges.

    Called by the ledger writer after each committed batch (with the budget periods it ``touched``;
    None checks every budget) and after a hard-cap denial. Returns the alerts this call delivered.
    A database outage is logged (once a minute) and skipped: the next check catches up.

    Example:
        >>> check_budgets(engine, [Budget("support-daily", limit_usd=50, period="day")])  # doctest: +SKIP
        [Alert(kind='budget_threshold', rule='support-daily', message="budget 'support-daily' at 80% ...", ...)]
    """
    try:
        return _check_budgets(engine, budgets, touched, _aware(now or datetime.now(UTC)), dispatcher)
    except Exception as exc:
        if _is_store_error(exc):
            _warn_limited(
                "alerts.check_budgets.store",
                "costtrace could not check budget alerts: the ledger database failed (%s); the next check catches up",
                type(exc).__name__,
            )
            return []
        report_internal_error("alerts.check_budgets", exc)
        return []


def _check_budgets(
    engine: Engine,
    budgets: Sequence[Budget],
    touched: Sequence[Touched] | None,
    now: datetime,
    dispatcher: AlertDispatcher | None,
) -> list[Alert]:
    from costtrace.spend import store

    if touched is None:
        selected = list(budgets)
        late: list[tuple[Budget, datetime]] = []
    else:
        names = {t.budget for t in touched}
        selected = [b for b in budgets if b.name in names]
        by_name = {b.name: b for b in selected}
        late = []
        for t in sorted(set(touched), key=lambda t: (t.budget, t.period_start)):
            b = by_name.get(t.budget)
            # Records of a calendar period that has closed since (late writes) can still cross its thresholds.
            if b is not None and b.period not in ("rolling", "total") and t.period_start < b.bucket(now)[0]:
                late.append((b, t.period_start))
    if not selected:
        return []
    states = store.budget_states(engine, selected, now)
    update_budget_gauges(states, {b.name: b.period for b in selected})
    checks = list(zip(selected, states, strict=True))
    for b, period_start in late:
        checks.extend((b, s) for s in store.budget_states(engine, [b], period_start))
    fired: list[Alert] = []
    for budget, state in checks:
        alert = _fire_thresholds(engine, budget, state, now, store.claim_alert)
        if alert is not None:
            (dispatcher or _default_dispatcher).dispatch(alert)
            fired.append(alert)
    return fired


def _fire_thresholds(
    engine: Engine,
    budget: Budget,
    state: BudgetState,
    now: datetime,
    claim: Callable[[Engine, str, datetime, str, Mapping[str, Any]], bool],
) -> Alert | None:
    """Claim every threshold reached, highest first; return the alert to deliver (the highest, if it was
    claimed now), or None."""
    utilisation = state.utilisation
    reached = [t for t in budget.thresholds if isinstance(t, Decimal) and utilisation >= t]
    if not reached:
        return None
    period = _claim_period(budget, state.period_start)
    settled = _settled(engine, budget.name, period)
    top = reached[-1]
    deliver: Alert | None = None
    for threshold in reversed(reached):
        key = str(threshold)
        if key in settled:
            continue
        alert = _budget_alert(budget, state, threshold, now)
        data = alert.to_dict()
        if threshold != top:
            data["superseded_by"] = str(top)  # reached in the same check as a higher one: not delivered
        if claim(engine, budget.name, period, key, data) and threshold == top:
            deliver = alert
        _settle(engine, budget.name, period, key)
    return deliver


_store_down_lock = threading.Lock()
_store_down_last: dict[str, float] = {}


def notify_store_unavailable(
    budget: Budget,
    error: BaseException,
    now: datetime | None = None,
    *,
    dispatcher: AlertDispatcher | None = None,
) -> Alert | None:
    """Alert that ``budget``'s store cannot be reached (at most once per budget per
    :data:`STORE_UNAVAILABLE_INTERVAL_S` in this process). Returns the alert if one was delivered.

    The message names the error's type only: a driver's message can hold the database URL.
    """
    try:
        mono = time.monotonic()
        with _store_down_lock:
            last = _store_down_last.get(budget.name)
            if last is not None and mono - last < STORE_UNAVAILABLE_INTERVAL_S:
                return None
            _store_down_last[budget.name] = mono
        if budget.action == "alert":
            effect = "its spend is not being checked until the store is back"
        elif budget.fail_open:
            effect = "calls in scope are let through unchecked (fail_open=True)"
        else:
            effect = "calls in scope are blocked (fail_open=False)"
        alert = Alert(
            kind="budget_store_unavailable",
            rule=budget.name,
            message=f"budget {budget.name!r}: the budget store is unreachable ({type(error).__name__}); {effect}",
            at=_aware(now or datetime.now(UTC)),
            limit_usd=budget.limit,
            scope=dict(budget.scope),
        )
        (dispatcher or _default_dispatcher).dispatch(alert)
        return alert
    except Exception as exc:
        report_internal_error("alerts.notify_store_unavailable", exc)
        return None


def _after_fork_in_child() -> None:
    # The child starts with fresh locks (the webhooks' senders reset themselves: see spend.webhooks).
    global _gauge_lock, _claims_lock, _store_down_lock
    _gauge_lock = threading.Lock()
    _claims_lock = threading.Lock()
    _store_down_lock = threading.Lock()
    for dispatcher in list(_dispatchers):
        dispatcher._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
