"""Alerts: budget thresholds, outcome rules, and the sinks every alert is delivered to.

What fires:

- ``budget_threshold`` / ``budget_exhausted``: :func:`check_budgets` reads each budget's state and,
  for the thresholds its utilisation has reached, claims them in the ledger
  (``costtrace_alerts_fired``), so each threshold fires **once per period across every process**.
  A threshold >= 1 is ``budget_exhausted``. When one check finds several new thresholds at once
  (a jump from 10% to 120%), only the highest is delivered; the lower ones are claimed silently, so a
  channel gets one message, not three.
- ``budget_store_unavailable``: :func:`notify_store_unavailable`, at most once per budget every
  :data:`STORE_UNAVAILABLE_INTERVAL_S` per process (the shared store is what is missing).
- ``outcome_rule``: :func:`evaluate_outcome_rules` runs one aggregate query per :class:`OutcomeRule`
  over the tasks that ended in its window (cost per successful task, first-pass rate, success rate,
  retry tax, escalation rate) and fires each broken condition once per window bucket.

Where it goes (:class:`AlertDispatcher`): a WARNING on the ``costtrace`` logger, an event on the
current span when one is recording, a ``TaskEvent`` for the ledger, the callbacks registered with
:func:`on_alert`, and :class:`Webhook` targets (JSON, or Slack's shape), each posted from a background
thread and bounded queue of its own, so a stuck endpoint delays only itself. Nothing here raises into
the app, and nothing blocks it on the network.

Example:
    >>> import costtrace.spend.alerts as alerts
    >>> unsubscribe = alerts.on_alert(lambda alert: print(alert.message))
    >>> alerts.add_webhook(alerts.Webhook("https://hooks.slack.com/services/T0/B0/XXX", slack=True))  # doctest: +SKIP
    >>> unsubscribe()
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.parse
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.util.types import AttributeValue

from costtrace import _money, _otel, _validate
from costtrace import semconv as sc
from costtrace._internal import logger, report_internal_error
from costtrace._version import __version__
from costtrace.errors import ConfigError
from costtrace.records import TaskEvent, emit_event, new_event_id
from costtrace.spend.budgets import parse_duration

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from costtrace.spend.budgets import Budget
    from costtrace.spend.store import BudgetState, Touched

__all__ = [
    "Alert",
    "AlertDispatcher",
    "AlertKind",
    "OutcomeRule",
    "OutcomeStats",
    "Webhook",
    "add_webhook",
    "check_budgets",
    "default_dispatcher",
    "evaluate_outcome_rules",
    "notify_store_unavailable",
    "on_alert",
    "update_budget_gauges",
]

AlertKind = Literal[
    "budget_threshold", "budget_exhausted", "budget_store_unavailable", "outcome_rule", "ledger_records_lost"
]

STORE_UNAVAILABLE_INTERVAL_S = 300.0
"""A budget store outage alerts at most once per budget per this many seconds, per process."""
WEBHOOK_QUEUE_SIZE = 1000
"""Deliveries waiting at once for one webhook (each has its own queue); past it new ones are dropped and counted."""
_LOG_INTERVAL_S = 60.0
_EPOCH = datetime(1970, 1, 1)
_ONE = Decimal(1)
_INFINITY = Decimal("Infinity")


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


def _naive(at: datetime) -> datetime:
    return at if at.tzinfo is None else at.astimezone(UTC).replace(tzinfo=None)


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


# --- sinks -----------------------------------------------------------------------------------------

_limited_lock = threading.Lock()
_limited_last: dict[str, float] = {}


def _warn_limited(key: str, message: str, *args: object) -> None:
    """At most one WARNING per ``key`` and minute: a broken webhook must not flood the app's logs."""
    now = time.monotonic()
    with _limited_lock:
        last = _limited_last.get(key)
        if last is not None and now - last < _LOG_INTERVAL_S:
            return
        _limited_last[key] = now
    logger.warning(message, *args)


@dataclass(frozen=True, repr=False)
class Webhook:
    """An HTTP endpoint that receives every alert as a JSON POST.

    The URL may hold a secret (a Slack incoming-webhook path, a token): costtrace never logs it, only
    its ``scheme://host``. Each webhook has its own background thread and bounded queue, so a stuck
    endpoint only delays its own alerts. ``timeout_s`` bounds one whole attempt (name lookup, connect,
    TLS, sending, reading the answer), however slowly the server trickles bytes. 5xx answers, 408/429,
    connection errors and timeouts are retried with exponential backoff (``backoff_s``, doubled each
    time, with jitter); other 4xx answers and redirects are not retried. One alert therefore takes at
    most ``(retries + 1) * timeout_s + backoff_s * (2 ** retries - 1)`` seconds on its webhook.

    Args:
        url: ``https://...`` (or ``http://`` for a local relay).
        slack: Post Slack's shape (``{"text": ..., "blocks": [...]}``) instead of the alert's fields.
        headers: Extra request headers (e.g. ``{"Authorization": "Bearer ..."}``); never logged.
        timeout_s: Per attempt.
        retries: Attempts after the first.
        backoff_s: Wait before the first retry.

    Example:
        >>> Webhook("https://hooks.slack.com/services/T000/B000/secret", slack=True)
        Webhook('https://hooks.slack.com', slack=True)
    """

    url: str
    _: KW_ONLY
    slack: bool = False
    headers: Mapping[str, str] | None = None
    timeout_s: float = 5.0
    retries: int = 3
    backoff_s: float = 1.0

    def __post_init__(self) -> None:
        parsed = urllib.parse.urlsplit(self.url) if isinstance(self.url, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
            shown = f"{parsed.scheme}://{parsed.hostname}" if parsed is not None else type(self.url).__name__
            raise ConfigError(f"webhook URL {shown!r} must be an http:// or https:// URL with a host")
        where = f"webhook {self.target!r}"
        _validate.count(self.retries, f"{where}: retries", maximum=_validate.MAX_RETRIES)
        _validate.seconds(self.timeout_s, f"{where}: timeout_s", maximum=_validate.MAX_TIMEOUT_S)
        _validate.seconds(self.backoff_s, f"{where}: backoff_s", maximum=_validate.MAX_TIMEOUT_S, zero=True)
        if not isinstance(self.slack, bool):
            raise ConfigError(f"{where}: slack={self.slack!r} must be True or False")
        if self.headers is not None:
            if not isinstance(self.headers, Mapping):
                raise ConfigError(f"webhook {self.target!r}: headers must be a mapping of names to values")
            object.__setattr__(self, "headers", {str(k): str(v) for k, v in self.headers.items()})

    @property
    def target(self) -> str:
        """``scheme://host[:port]``: what logs and messages show of the URL."""
        parsed = urllib.parse.urlsplit(self.url)
        port = f":{parsed.port}" if parsed.port else ""
        return f"{parsed.scheme}://{parsed.hostname}{port}"

    def __repr__(self) -> str:
        return f"Webhook({self.target!r}{', slack=True' if self.slack else ''})"

    def body(self, alert: Alert) -> bytes:
        """The JSON this webhook posts for ``alert``."""
        if not self.slack:
            return json.dumps(alert.to_dict(), sort_keys=True).encode("utf-8")
        return json.dumps(_slack_payload(alert)).encode("utf-8")

    def _post(self, body: bytes) -> None:
        """One attempt: POST ``body``; ``timeout_s`` bounds all of it (lookup, connect, TLS, send, answer)."""
        from costtrace.spend import _deadline_http

        headers = {"Content-Type": "application/json", "User-Agent": f"costtrace/{__version__}"}
        headers.update(self.headers or {})
        _deadline_http.post(self.url, body, headers, _deadline_http.Deadline(self.timeout_s))


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_SLACK_TITLES: Mapping[str, str] = {
    "budget_threshold": ":warning: Budget threshold reached",
    "budget_exhausted": ":rotating_light: Budget exhausted",
    "budget_store_unavailable": ":rotating_light: Budget store unreachable",
    "outcome_rule": ":chart_with_downwards_trend: Outcome rule broken",
}


def _slack_payload(alert: Alert) -> dict[str, Any]:
    context = [f"*{alert.kind}*", f"rule `{_slack_escape(alert.rule)}`"]
    if alert.scope:
        context.append(", ".join(f"{_slack_escape(k)}={_slack_escape(v)}" for k, v in alert.scope.items()))
    return {
        "text": alert.message,
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _SLACK_TITLES.get(alert.kind, "costtrace alert")},
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(alert.message)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]},
        ],
    }


def _retryable(exc: BaseException, timeout_s: float) -> tuple[bool, str]:
    """Whether a failed POST is worth retrying, and a log-safe reason (never the URL)."""
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        code = exc.code
        return code >= 500 or code in (408, 429), f"HTTP {code}"
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return True, f"timed out: timeout_s={timeout_s:g} per attempt"
    if isinstance(exc, OSError):  # refused, reset, DNS failure
        return True, f"connection error ({type(exc).__name__})"
    return False, type(exc).__name__


class _WebhookSender:
    """A dispatcher's webhook deliveries: one :class:`_Lane` (bounded queue + daemon thread) per webhook.

    A destination that hangs holds only its own lane's thread, for at most its delivery bound; the
    others keep delivering. Threads: one per webhook that has had an alert, exiting when the webhook is
    removed or the sender shut down. Never blocks the caller; every delivery ends counted exactly once:
    ``sent``, ``failed`` (gave up) or ``dropped`` (queue full, webhook removed, or shut down first).
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.retried = 0
        self._lock = threading.Lock()
        self._lanes: dict[int, _Lane] = {}  # id(webhook) -> its lane (the lane holds the webhook alive)
        self._stopped = False
        _senders.add(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        for lane in self._lanes.values():
            lane._reset()

    def count(self, *, sent: int = 0, failed: int = 0, dropped: int = 0, retried: int = 0) -> None:
        with self._lock:
            self.sent += sent
            self.failed += failed
            self.dropped += dropped
            self.retried += retried

    def add(self, webhook: Webhook) -> None:
        with self._lock:
            if id(webhook) not in self._lanes:
                self._lanes[id(webhook)] = _Lane(self, webhook)

    def remove(self, webhook: Webhook) -> None:
        with self._lock:
            lane = self._lanes.pop(id(webhook), None)
        if lane is not None:
            self.count(dropped=lane.close())

    def submit(self, webhook: Webhook, body: bytes) -> None:
        with self._lock:
            lane = self._lanes.get(id(webhook))
            stopped = self._stopped
        if lane is None or stopped:  # removed meanwhile, or shut down
            if stopped:
                self.count(dropped=1)
            return
        refused = lane.submit(body)
        if refused:
            self.count(dropped=1)
        if refused == "full":
            _warn_limited(
                f"alerts.webhook.dropped.{webhook.target}",
                "costtrace alert webhook %s: queue full (%d waiting), alert deliveries dropped (%d so far)",
                webhook.target,
                self.maxsize,
                self.dropped,
            )

    def _lane_list(self) -> list[_Lane]:
        with self._lock:
            return list(self._lanes.values())

    def flush(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        return all([lane.wait_idle(deadline) for lane in self._lane_list()])

    def shutdown(self, timeout_s: float) -> bool:
        done = self.flush(timeout_s)
        with self._lock:
            self._stopped = True
        lanes = self._lane_list()
        threads = []
        for lane in lanes:
            self.count(dropped=lane.close())
            threads.append(lane.thread)
        join_until = time.monotonic() + 0.1  # idle threads exit at once; a busy one ends within its timeout
        for thread in threads:
            if thread is not None:
                thread.join(timeout=max(0.0, join_until - time.monotonic()))
        return done


class _Lane:
    """One webhook's queue (bounded by the sender's ``maxsize``) and the daemon thread that drains it."""

    def __init__(self, sender: _WebhookSender, webhook: Webhook) -> None:
        self.sender = sender
        self.webhook = webhook
        self._reset()

    def _reset(self) -> None:
        # Also the child's state after a fork: the parent delivers what it queued; the child starts empty.
        self.cond = threading.Condition(threading.Lock())
        self.queue: deque[bytes] = deque()
        self.busy = False
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()

    def submit(self, body: bytes) -> Literal["full", "closed"] | None:
        """Queue ``body``; or say why not (the caller counts a drop)."""
        with self.cond:
            if self.stop.is_set():
                return "closed"
            if len(self.queue) + self.busy >= self.sender.maxsize:
                return "full"
            self.queue.append(body)
            if self.thread is None:
                thread = threading.Thread(target=self._run, name=f"costtrace-alerts {self.webhook.target}", daemon=True)
                thread.start()
                self.thread = thread
            self.cond.notify()
        return None

    def close(self) -> int:
        """Stop the lane: its thread exits after the attempt in flight (if any). Returns the deliveries dropped."""
        with self.cond:
            self.stop.set()
            dropped = len(self.queue)
            self.queue.clear()
            self.cond.notify_all()
        return dropped

    def wait_idle(self, deadline: float) -> bool:
        with self.cond:
            while self.queue or self.busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def _run(self) -> None:
        cond, queue, stop = self.cond, self.queue, self.stop
        while True:
            with cond:
                while not queue and not stop.is_set():
                    cond.wait()
                if stop.is_set():
                    return
                body = queue.popleft()
                self.busy = True
            try:
                self._deliver(body)
            except Exception as exc:  # a bug of ours: never kill the thread
                report_internal_error("alerts.webhook", exc)
            finally:
                with cond:
                    self.busy = False
                    cond.notify_all()

    def _deliver(self, body: bytes) -> None:
        webhook = self.webhook
        reason = ""
        for attempt in range(webhook.retries + 1):
            if attempt:
                self.sender.count(retried=1)
                delay = webhook.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random() / 2)
                if self.stop.wait(delay):
                    reason = "shut down"
                    break
            try:
                webhook._post(body)
            except Exception as exc:
                close = getattr(exc, "close", None)  # an HTTPError holds the response: close it, or the socket leaks
                if callable(close):
                    close()
                retry, reason = _retryable(exc, webhook.timeout_s)
                if not retry:
                    break
                continue
            self.sender.count(sent=1)
            return
        self.sender.count(failed=1)
        _warn_limited(
            f"alerts.webhook.failed.{webhook.target}",
            "costtrace alert webhook %s failed (%s) after %d attempt(s); the alert was not delivered there",
            webhook.target,
            reason,
            attempt + 1,
        )


_senders: weakref.WeakSet[_WebhookSender] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent delivers what it queued; the child starts empty, with fresh locks and no thread.
    global _limited_lock, _gauge_lock, _claims_lock, _store_down_lock
    _limited_lock = threading.Lock()
    _gauge_lock = threading.Lock()
    _claims_lock = threading.Lock()
    _store_down_lock = threading.Lock()
    for sender in list(_senders):
        sender._after_fork()
    for dispatcher in list(_dispatchers):
        dispatcher._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
            raise ConfigError(f"add_webhook needs a costtrace.spend.alerts.Webhook, got {type(webhook).__name__}")
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
    with _limited_lock:
        _limited_last.clear()


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


# --- outcome rules ---------------------------------------------------------------------------------

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
            fired.extend(_evaluate_rule(engine, rule, at, dispatcher or _default_dispatcher, store.claim_alert))
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
