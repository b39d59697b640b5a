"""The exceptions costtrace raises on purpose: while configuring, and when a budget you set blocks a call.

CosttraceError
 ├── ConfigError               a bad setting: the message names the value and the fix
 └── BudgetExceeded            a hard-capped budget would be exceeded: the call was not sent
      ├── BudgetStoreUnavailable   the budget store could not be reached and the budget fails closed
      └── TaskBudgetExceeded       a task's own cap (max_cost_usd, max_llm_calls, max_tokens) is reached

Nothing else is ever raised into your code while recording: costtrace's own errors are logged and
counted (see ``costtrace._internal``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal


class CosttraceError(Exception):
    """Base class of every exception costtrace raises on purpose."""


class ConfigError(CosttraceError, ValueError):
    """A configuration value is invalid or a needed optional package is missing.

    Raised by ``configure()``, price overrides and other set-up calls, never while recording calls.
    """


class BudgetExceeded(CosttraceError):
    """A call was blocked before it was sent: it could exceed a budget with ``action="block"``.

    Attributes:
        budget: The budget's name.
        spent_usd: What the current period has spent (recorded calls).
        reserved_usd: Worst-case cost of calls in flight, held against the budget.
        limit_usd: The budget's limit.
        requested_usd: The blocked call's worst-case cost (None when it could not be priced).
        resets_at: When the current period ends (None for a budget without period end).

    Example:
        >>> try:                                                      # doctest: +SKIP
        ...     client.chat.completions.create(model="gpt-4o", messages=msgs, max_tokens=500)
        ... except costtrace.BudgetExceeded as exc:
        ...     print(exc.budget, exc.limit_usd, exc.resets_at)
    """

    def __init__(
        self,
        message: str,
        *,
        budget: str,
        spent_usd: Decimal | None = None,
        reserved_usd: Decimal | None = None,
        limit_usd: Decimal | None = None,
        requested_usd: Decimal | None = None,
        resets_at: datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.budget = budget
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.limit_usd = limit_usd
        self.requested_usd = requested_usd
        self.resets_at = resets_at


class BudgetStoreUnavailable(BudgetExceeded):
    """The budget store (the ledger database) could not be reached and the budget has ``fail_open=False``."""


class TaskBudgetExceeded(BudgetExceeded):
    """A task reached one of its own caps (``max_cost_usd``, ``max_llm_calls``, ``max_tokens``).

    ``budget`` is ``"task:<name>"``; ``limit`` names the cap that was hit.
    """

    def __init__(self, message: str, *, task_name: str, task_id: str, cap: str, **kwargs: object) -> None:
        super().__init__(message, budget=f"task:{task_name}", **kwargs)  # type: ignore[arg-type]
        self.task_name = task_name
        self.task_id = task_id
        self.cap = cap
