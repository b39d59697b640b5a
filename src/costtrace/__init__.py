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

import importlib as _importlib
import typing as _typing

from costtrace import _moved
from costtrace._version import __version__

if _typing.TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports each name
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

_LAZY: dict[str, str] = {
    # public name: the module that defines it, imported on first use (``import costtrace`` stays light)
    "Alert": "costtrace.spend.alerts",
    "Budget": "costtrace.spend.budgets",
    "BudgetExceeded": "costtrace.errors",
    "BudgetStoreUnavailable": "costtrace.errors",
    "CallRecord": "costtrace.records",
    "ConfigError": "costtrace.errors",
    "Cost": "costtrace.price.arithmetic",
    "CosttraceError": "costtrace.errors",
    "LLMCall": "costtrace.calls",
    "Outcome": "costtrace.tasks",
    "OutcomeRule": "costtrace.spend.outcome_rules",
    "RetryReason": "costtrace.tasks",
    "Task": "costtrace.tasks",
    "TaskBudgetExceeded": "costtrace.errors",
    "TaskSummary": "costtrace.records",
    "TokenCount": "costtrace.price.tokens",
    "Usage": "costtrace.usage",
    "Webhook": "costtrace.spend.webhooks",
    "add_budget": "costtrace.spend.ledger",
    "budget_status": "costtrace.spend.ledger",
    "capture_content": "costtrace.content",
    "carry_context": "costtrace.task_context",
    "close_ledger": "costtrace.spend.ledger",
    "collect_tasks": "costtrace.task_context",
    "configure": "costtrace.config",
    "configure_ledger": "costtrace.spend.ledger",
    "configure_spans": "costtrace.span_options",
    "count_tokens": "costtrace.price.tokens",
    "current_task": "costtrace.tasks",
    "flush": "costtrace.config",
    "flush_ledger": "costtrace.spend.ledger",
    "instrument": "costtrace.instrumentation",
    "last_finished_task": "costtrace.task_context",
    "llm_call": "costtrace.calls",
    "load_budgets": "costtrace.spend.budgets",
    "load_prices": "costtrace.price.catalog",
    "on_alert": "costtrace.spend.alerts",
    "record_llm_call": "costtrace.calls",
    "record_outcome": "costtrace.spend.ledger",
    "set_discount": "costtrace.price.catalog",
    "set_price": "costtrace.price.catalog",
    "shutdown": "costtrace.config",
    "task": "costtrace.tasks",
    "track_task": "costtrace.task_decorator",
    "uninstrument": "costtrace.instrumentation",
}
"""Where each name of ``__all__`` lives; :func:`__getattr__` imports it the first time it is asked for."""

_EAGER_SUBMODULES = frozenset(
    # earlier releases imported these at `import costtrace`, so `costtrace.tasks.current_task` worked
    # without `import costtrace.tasks`: attribute access still imports them
    {
        "call_attributes", "caller_usage", "calls", "config", "content", "errors", "instrumentation", "metrics",
        "price", "records", "semconv", "span_options", "spend", "task_attributes", "task_context",
        "task_decorator", "tasks", "usage",
    }
)  # fmt: skip


if not _typing.TYPE_CHECKING:  # hidden from type checkers: a typo such as `costtrace.tsak` stays an error

    def __getattr__(name: str) -> object:
        """Import a public name (or an earlier-eager submodule) on first use and keep it (PEP 562).

        Example:
            >>> import costtrace
            >>> costtrace.task.__module__
            'costtrace.tasks'
        """
        module_name = _LAZY.get(name)
        if module_name is not None:
            value = getattr(_importlib.import_module(module_name), name)
        elif name in _EAGER_SUBMODULES:
            value = _importlib.import_module(f"{__name__}.{name}")
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value  # later look-ups are plain attribute reads; a race stores the same object
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))


_moved.install()  # the module paths of earlier releases (costtrace.pricing, ...) still import
