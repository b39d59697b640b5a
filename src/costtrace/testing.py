"""Helpers for tests: collect the call records and task summaries costtrace produces.

Example:
    >>> from costtrace.testing import capture
    >>> with capture() as got:                                   # doctest: +SKIP
    ...     resolve_ticket("T-1")
    >>> assert got.tasks[0].outcome == "success"                 # doctest: +SKIP
    >>> assert got.tasks[0].cost_usd < Decimal("0.01")           # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from costtrace.records import CallRecord, TaskSummary, add_listener, remove_listener


@dataclass
class Captured:
    """What :func:`capture` collected, in finishing order."""

    calls: list[CallRecord] = field(default_factory=list)
    tasks: list[TaskSummary] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_call(self, record: CallRecord) -> None:
        with self._lock:
            self.calls.append(record)

    def on_task(self, summary: TaskSummary) -> None:
        with self._lock:
            self.tasks.append(summary)

    def task(self, name: str) -> TaskSummary:
        """The one finished task called ``name`` (raises if there is none or several)."""
        found = [t for t in self.tasks if t.name == name]
        if len(found) != 1:
            raise AssertionError(f"expected one finished task named {name!r}, found {len(found)}")
        return found[0]


@contextmanager
def capture() -> Iterator[Captured]:
    """Collect every call record and task summary finished inside the ``with`` block."""
    got = Captured()
    add_listener(got)
    try:
        yield got
    finally:
        remove_listener(got)
