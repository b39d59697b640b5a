"""The process-wide ledger runtime: what :func:`~costtrace.spend.ledger.configure_ledger` opened and started.

At most one :class:`Runtime` per process, :data:`current`: set by ``configure_ledger`` (replacing the
previous one), cleared by ``close_ledger``, read by :mod:`costtrace.spend.ledger` and, on every call in a
hard-capped scope, by :mod:`costtrace.spend.admission`.

Example:
    >>> rt = runtime.current                                           # doctest: +SKIP
    >>> rt.writer.stats().pending if rt is not None else 0
    0
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from costtrace._internal import report_internal_error

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from costtrace.spend.budgets import Budget
    from costtrace.spend.outcome_rules import OutcomeRule
    from costtrace.spend.writer import LedgerWriter


@dataclass
class Runtime:
    """The ledger's engines, writer, budgets and outcome rules, and the budget store's health."""

    engine: Engine
    budget_engine: Engine
    """A pool of its own for reservations (on the app's thread), with a short SQLite busy timeout."""
    writer: LedgerWriter
    url: str
    budgets: dict[str, Budget] = field(default_factory=dict)
    enforcing: tuple[Budget, ...] = ()
    store_down_since: float | None = None
    store_down_logged: float = 0.0
    admitted_fail_open: int = 0
    closed: bool = False
    rules: RuleRunner | None = None
    unsubscribe: list[Callable[[], None]] = field(default_factory=list)
    lost_reported: dict[str, int] = field(default_factory=dict)
    """The writer's lost-record counts already returned by :func:`~costtrace.spend.ledger.flush_ledger`."""

    def budget_list(self) -> tuple[Budget, ...]:
        return tuple(self.budgets.values())


lock = threading.Lock()
"""Held while :data:`current` is replaced or a flush reads the writer's lost-record counts."""
current: Runtime | None = None
"""The running ledger, if :func:`~costtrace.spend.ledger.configure_ledger` was called (and not closed)."""


class RuleRunner:
    """Evaluates outcome rules every ``interval_s`` on a daemon thread of its own."""

    def __init__(self, engine: Engine, rules: Sequence[OutcomeRule], interval_s: float) -> None:
        self._engine = engine
        self._rules = tuple(rules)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="costtrace-outcome-rules", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from costtrace.spend.outcome_rules import evaluate_outcome_rules

        while not self._stop.wait(self._interval_s):
            try:
                evaluate_outcome_rules(self._engine, self._rules)
            except Exception as exc:
                try:
                    report_internal_error("runtime.outcome_rules", exc)
                except Exception:  # under the test suite it re-raises: never kill the thread
                    pass

    def stop(self, timeout_s: float) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
