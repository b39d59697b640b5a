"""costtrace: cost per successful task for LLM applications, on OpenTelemetry.

Group LLM calls under business tasks, price every call (provider usage first, local token counts
flagged), and see tokens per task, cost per task, wasted cost of retries and escalations, and cost per
successful task in any OpenTelemetry backend.

Example:
    >>> import costtrace
    >>> @costtrace.track_task("resolve_ticket", feature="support")
    ... def resolve(ticket: str) -> str:
    ...     with costtrace.llm_call(provider="openai", model="gpt-4o-mini") as call:
    ...         call.set_usage(input_tokens=900, output_tokens=120)
    ...     return "done"
    >>> resolve("T-1")
    'done'
"""

from costtrace import _moved
from costtrace._version import __version__
from costtrace.calls import LLMCall, llm_call, record_llm_call
from costtrace.config import configure, flush, shutdown
from costtrace.content import capture_content
from costtrace.errors import (
    BudgetExceeded,
    BudgetStoreUnavailable,
    ConfigError,
    CosttraceError,
    TaskBudgetExceeded,
)
from costtrace.instrumentation import instrument, uninstrument
from costtrace.price.arithmetic import Cost
from costtrace.price.catalog import load_prices, set_discount, set_price
from costtrace.price.tokens import TokenCount, count_tokens
from costtrace.records import CallRecord, TaskSummary
from costtrace.span_options import configure_spans
from costtrace.spend.alerts import Alert, on_alert
from costtrace.spend.budgets import Budget, load_budgets
from costtrace.spend.ledger import (
    add_budget,
    budget_status,
    close_ledger,
    configure_ledger,
    flush_ledger,
    record_outcome,
)
from costtrace.spend.outcome_rules import OutcomeRule
from costtrace.spend.webhooks import Webhook
from costtrace.task_context import carry_context, collect_tasks, last_finished_task
from costtrace.task_decorator import track_task
from costtrace.tasks import Outcome, RetryReason, Task, current_task, task
from costtrace.usage import Usage

_moved.install()  # the module paths of earlier releases (costtrace.pricing, ...) still import

__all__ = [
    "Alert",
    "Budget",
    "BudgetExceeded",
    "BudgetStoreUnavailable",
    "CallRecord",
    "ConfigError",
    "Cost",
    "CosttraceError",
    "LLMCall",
    "Outcome",
    "OutcomeRule",
    "RetryReason",
    "Task",
    "TaskBudgetExceeded",
    "TaskSummary",
    "TokenCount",
    "Usage",
    "Webhook",
    "__version__",
    "add_budget",
    "budget_status",
    "capture_content",
    "carry_context",
    "close_ledger",
    "collect_tasks",
    "configure",
    "configure_ledger",
    "configure_spans",
    "count_tokens",
    "current_task",
    "flush",
    "flush_ledger",
    "instrument",
    "last_finished_task",
    "llm_call",
    "load_budgets",
    "load_prices",
    "on_alert",
    "record_llm_call",
    "record_outcome",
    "set_discount",
    "set_price",
    "shutdown",
    "task",
    "track_task",
    "uninstrument",
]
