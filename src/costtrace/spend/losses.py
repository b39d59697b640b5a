"""Records the ledger lost: counted by reason, logged, alerted, observed as a metric.

A :class:`DropLog` per writer counts each lost record by reason (``queue_full``, ``spool_full``,
``invalid``..., see :mod:`costtrace.spend.writer`) and logs the first at once, then at most one summary line
per :data:`DROP_LOG_INTERVAL_S`. Each log line is also a ``ledger_records_lost`` alert (through
:mod:`costtrace.spend.alerts`), and the process's totals feed the ``costtrace.ledger.lost_records``
metric. The writer writes the counts to the ledger itself, as a ``ledger_records_lost`` event, once the
database takes writes (:meth:`DropLog.take_unrecorded`).

Example:
    >>> drops = DropLog()
    >>> drops.add("queue_full", 3)                              # doctest: +SKIP
    >>> drops.snapshot()                                        # doctest: +SKIP
    {'queue_full': 3}
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

from opentelemetry.metrics import CallbackOptions, Observation

from costtrace import semconv as sc
from costtrace._internal import logger, report_background_error

LOST_RECORDS_METRIC = sc.METRIC_LEDGER_LOST_RECORDS
"""Observable counter: records the ledger could not write, attribute ``costtrace.reason``."""
LOST_ALERT_KIND: Final = "ledger_records_lost"
"""The alert (and ledger event) kind raised when records are lost."""
DROP_LOG_INTERVAL_S = 60.0
"""A drop is logged at once, then at most one summary line per this many seconds."""

_lost_lock = threading.Lock()
_lost_totals: dict[str, int] = {}
"""Records lost by this process since it started (or forked), by reason: the ``costtrace.ledger.lost_records``
counter (kept here, not per writer, so it never goes down when a writer is replaced)."""
_lost_metric_registered = False
_alert_guard = threading.local()
"""Set while this module dispatches a loss alert: the writers skip the alert's own ledger event (each
writer records the losses itself, as a ``ledger_records_lost`` event, once the database takes writes)."""


def _observe_lost(options: CallbackOptions) -> Iterable[Observation]:
    with _lost_lock:
        items = list(_lost_totals.items())
    return [Observation(n, {sc.EVENT_ATTR_REASON: reason}) for reason, n in items]


def _register_lost_metric() -> None:
    global _lost_metric_registered
    with _lost_lock:
        if _lost_metric_registered:
            return
        _lost_metric_registered = True
    from costtrace import _otel

    _otel.meter().create_observable_counter(
        LOST_RECORDS_METRIC,
        callbacks=[_observe_lost],
        unit="{record}",
        description="Ledger records that could not be written (their cost is missing from budgets), by reason.",
    )


def _alert_lost(counts: dict[str, int]) -> None:
    """Deliver a ``ledger_records_lost`` alert through the alert dispatcher (log, span event, callbacks,
    webhooks). Its ledger event is written by the writer instead (see ``_alert_guard``)."""
    from costtrace.spend import alerts

    total = sum(counts.values())
    detail = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
    alert = alerts.Alert(
        kind=LOST_ALERT_KIND,
        rule="costtrace.ledger",
        message=f"costtrace ledger: {total} record(s) could not be written ({detail}); budgets and reports "
        "miss their cost. See docs/ledger.md",
        at=datetime.now(UTC),
    )
    _alert_guard.active = True
    try:
        alerts.default_dispatcher().dispatch(alert)
    finally:
        _alert_guard.active = False


class DropLog:
    """Counts drops by reason; logs the first at once, then at most one summary line per interval, and
    raises each such line to a ``ledger_records_lost`` alert. ``unrecorded`` holds the counts not yet
    written to the ledger as a ``ledger_records_lost`` event."""

    def __init__(self, interval_s: float = DROP_LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self.totals: dict[str, int] = {}
        self.unrecorded: dict[str, int] = {}
        self._unlogged: dict[str, int] = {}
        self._last_log: float | None = None

    def add(self, reason: str, n: int = 1) -> None:
        if n <= 0:
            return
        with _lost_lock:
            _lost_totals[reason] = _lost_totals.get(reason, 0) + n
        with self._lock:
            self.totals[reason] = self.totals.get(reason, 0) + n
            self.unrecorded[reason] = self.unrecorded.get(reason, 0) + n
            self._unlogged[reason] = self._unlogged.get(reason, 0) + n
            now = time.monotonic()
            if self._last_log is not None and now - self._last_log < self.interval_s:
                return
            self._last_log = now
            pending, self._unlogged = self._unlogged, {}
        self._emit(pending, alert=True)

    def take_unrecorded(self) -> dict[str, int]:
        with self._lock:
            taken, self.unrecorded = self.unrecorded, {}
        return taken

    def give_back(self, counts: dict[str, int]) -> None:
        """The ``ledger_records_lost`` event could not be written: keep its counts for the next try."""
        with self._lock:
            for reason, n in counts.items():
                self.unrecorded[reason] = self.unrecorded.get(reason, 0) + n

    def flush_log(self) -> None:
        """Log what was dropped since the last line (at close)."""
        with self._lock:
            pending, self._unlogged = self._unlogged, {}
        if pending:
            self._emit(pending)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.totals)

    def _emit(self, counts: dict[str, int], *, alert: bool = False) -> None:
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
        logger.warning(
            "costtrace ledger: dropped %d record(s) (%s); at most one such line per %.0f s",
            sum(counts.values()),
            detail,
            self.interval_s,
        )
        if not alert or getattr(_alert_guard, "active", False):
            return
        try:
            _register_lost_metric()
            _alert_lost(counts)
        except Exception as exc:
            report_background_error("ledger.losses.alert", exc)


def in_loss_alert() -> bool:
    """True on a thread dispatching a loss alert: the writers skip that alert's own ledger event."""
    return bool(getattr(_alert_guard, "active", False))


def _after_fork_in_child() -> None:
    global _lost_lock
    _lost_lock = threading.Lock()  # another thread of the parent may have held it at the fork
    _lost_totals.clear()  # the parent reports its own


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
