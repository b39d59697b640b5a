"""Spend this process recorded but the ledger does not hold yet, for admission against hard caps.

A call recorded without a reservation (``record_llm_call``, a call let through by ``fail_open``) adds to
its budgets only once the writer commits its row. Until then :class:`PendingSpend` holds its amount per
hard-capped budget and period, and admission counts it as spent
(:meth:`costtrace.spend.writer.LedgerWriter.pending_nano`), so a burst of such calls cannot overrun a
limit between two commits. A reserved call is not pending: its reservation is in the database already.

Example:
    >>> pending = PendingSpend()
    >>> pending.track(record, enforcing=[budget])                     # doctest: +SKIP
    >>> pending.by_budget([budget], at=record.start_time)
    {'support': 2100000}
    >>> pending.settle([record.call_id])                              # written: no longer pending
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from costtrace._internal import report_internal_error
from costtrace._money import to_nano

if TYPE_CHECKING:
    from costtrace.records import CallRecord
    from costtrace.spend.budgets import Budget

_MAX_RESERVED_IDS = 100_000
_ABSENT = object()


def _spend_nano(budget: Budget, record: CallRecord) -> int:
    """What ``record`` will add to ``budget`` once written (as :func:`costtrace.spend.store.budget_spend_for_call`)."""
    cost = record.cost.total_usd
    if cost is not None:
        return to_nano(cost) or 0
    fb = budget.fallback_price
    if fb is not None and record.usage.source != "unknown" and not isinstance(fb, tuple):
        return to_nano(fb.cost_usd(record.usage.input_tokens, record.usage.output_tokens)) or 0
    return 0


class PendingSpend:
    """Per call and per (budget, period): nano-USD recorded here and not yet written. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, list[tuple[str, datetime, int]]] = {}
        self._totals: dict[tuple[str, datetime], int] = {}
        self._reserved_ids: dict[str, None] = {}

    def note_reserved(self, call_id: str) -> None:
        """This call holds a reservation in the database until its row is written: not pending spend."""
        with self._lock:
            self._reserved_ids[call_id] = None
            if len(self._reserved_ids) > _MAX_RESERVED_IDS:  # calls reserved but never recorded
                del self._reserved_ids[next(iter(self._reserved_ids))]

    def forget_reserved(self, call_id: str) -> None:
        """This call's reservation was released without a row (its request was never sent)."""
        with self._lock:
            self._reserved_ids.pop(call_id, None)

    def by_budget(self, budgets: Iterable[Budget], at: datetime) -> dict[str, int]:
        """Spend pending per budget, in the window counting at ``at``."""
        with self._lock:
            if not self._totals:
                return {}
            items = list(self._totals.items())
        out: dict[str, int] = {}
        try:
            for b in budgets:
                first, (start, _) = b.window_start(at), b.bucket(at)
                n = sum(v for (name, period), v in items if name == b.name and first <= period <= start)
                if n:
                    out[b.name] = n
        except Exception as exc:
            report_internal_error("ledger.pending.by_budget", exc)
        return out

    def track(self, record: CallRecord, enforcing: Iterable[Budget]) -> None:
        """A call was recorded: pending on each of the ``enforcing`` budgets it matches, unless reserved."""
        try:
            with self._lock:
                if self._reserved_ids.pop(record.call_id, _ABSENT) is None:
                    return
            amounts: list[tuple[str, datetime, int]] = []
            for b in enforcing:
                if b.matches(record.dimensions, task_name=record.task_name, provider=record.provider,
                             model=record.request_model):  # fmt: skip
                    nano = _spend_nano(b, record)
                    if nano:
                        amounts.append((b.name, b.bucket(record.start_time)[0], nano))
            if amounts:
                with self._lock:
                    self._calls[record.call_id] = amounts
                    for name, period, nano in amounts:
                        self._totals[(name, period)] = self._totals.get((name, period), 0) + nano
        except Exception as exc:
            report_internal_error("ledger.pending.track", exc)

    def settle(self, call_ids: Iterable[str]) -> None:
        """These calls are written (their spend is in the database now) or lost."""
        if not self._calls:
            return
        with self._lock:
            for call_id in call_ids:
                for name, period, nano in self._calls.pop(call_id, ()):
                    left = self._totals.get((name, period), 0) - nano
                    if left > 0:
                        self._totals[(name, period)] = left
                    else:
                        self._totals.pop((name, period), None)
