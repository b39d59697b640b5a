"""The fixed workload behind the backend recipes' figures (docs/backends.md), run as a script.

    python recipe_workload.py '<configure() kwargs as JSON>' <ledger URL>

Configures costtrace with exactly the arguments given (the environment supplies the rest, as each
recipe says), records six ``resolve_ticket`` tasks with fixed token counts, and prints one JSON line
with costtrace's own figures for them: from the task summaries (``costtrace.analysis.report.summarize``) and from
the ledger (``costtrace.analysis.stats.scope_stats``). tests/e2e/test_recipes.py evaluates each recipe's
queries on the spans a capture server received and compares them with these figures.

The child refuses any host but loopback, like tests/conftest.py: a wrong override never reaches the network.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

_real_getaddrinfo = socket.getaddrinfo


def _loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
    if host not in ("127.0.0.1", "localhost", "::1", None):
        raise OSError(f"network access blocked in tests: {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_only

FEATURE = "support"
TEAM = "cx"
TASK = "resolve_ticket"
CHEAP = ("gpt-4o-mini", 900, 120)  # model, input tokens, output tokens of one answer
FRONTIER = ("gpt-4o", 1200, 300)

# name -> (kind, outcome, status the task span gets (issue 12: failure and escalated_to_human are ERROR))
TASKS = {
    "first_pass": ("success", "UNSET"),
    "retried": ("success", "UNSET"),
    "escalated": ("success", "UNSET"),
    "failed": ("failure", "ERROR"),
    "to_human": ("escalated_to_human", "ERROR"),
    "raised": ("failure", "ERROR"),
}


def _answer(model: tuple[str, int, int]) -> None:
    import costtrace

    name, input_tokens, output_tokens = model
    costtrace.record_llm_call(provider="openai", model=name, input_tokens=input_tokens, output_tokens=output_tokens)


def run_tasks() -> dict[str, str]:
    """The six tasks; returns {kind: task id}."""
    import costtrace

    ids: dict[str, str] = {}
    with costtrace.task(TASK, feature=FEATURE, team=TEAM, kind="first_pass") as t:
        _answer(CHEAP)
        t.succeed()
    ids["first_pass"] = t.id
    with costtrace.task(TASK, feature=FEATURE, team=TEAM, kind="retried") as t:
        _answer(CHEAP)
        t.retry(reason="validation_failed", details="missing field 'refund_usd'")
        _answer(CHEAP)
        t.succeed()
    ids["retried"] = t.id
    with costtrace.task(TASK, feature=FEATURE, team=TEAM, kind="escalated") as t:
        _answer(CHEAP)
        t.escalate(to_model=FRONTIER[0], reason="low_confidence")
        _answer(FRONTIER)
        t.succeed()
    ids["escalated"] = t.id
    with costtrace.task(TASK, feature=FEATURE, team=TEAM, kind="failed") as t:
        _answer(CHEAP)
        t.retry(reason="validation_failed", details="refund above the limit")
        _answer(CHEAP)
        t.fail("validation_failed")
    ids["failed"] = t.id
    with costtrace.task(TASK, feature=FEATURE, team=TEAM, kind="to_human") as t:
        _answer(CHEAP)
        t.escalate(to_model=FRONTIER[0], reason="low_confidence")
        _answer(FRONTIER)
        t.escalate_to_human("refund_over_limit")
    ids["to_human"] = t.id
    try:
        with costtrace.task(TASK, feature=FEATURE, team=TEAM, kind="raised") as t:
            _answer(CHEAP)
            raise ValueError("the ticket system is down")
    except ValueError:
        pass
    ids["raised"] = t.id
    return ids


def main(configure_kwargs: dict[str, Any], ledger_url: str) -> dict[str, Any]:
    import costtrace
    from costtrace.analysis import report
    from costtrace.analysis import stats as analytics
    from costtrace.spend.engine import make_engine
    from costtrace.testing import capture

    costtrace.configure(**configure_kwargs)
    costtrace.configure_ledger(ledger_url)
    with capture() as captured:
        ids = run_tasks()
    flushed = costtrace.flush(timeout_s=60)
    costtrace.close_ledger(60)
    stats = report.summarize(captured.tasks)
    engine = make_engine(ledger_url)
    try:
        (scope,) = analytics.scope_stats(engine, by=("feature",))
    finally:
        engine.dispose()
    return {
        "flushed": flushed,
        "task_ids": ids,
        "task_cost_usd": {s.task_id: str(s.cost_usd) for s in captured.tasks},
        "outcomes": {s.task_id: str(s.outcome) for s in captured.tasks},
        "summaries": {
            "tasks": stats.tasks,
            "successes": stats.successes,
            "cost_usd": str(stats.cost_usd),
            "wasted_cost_usd": str(stats.wasted_cost_usd),
            "cost_per_task_usd": str(stats.cost_per_task_usd),
            "cost_per_successful_task_usd": str(stats.cost_per_successful_task_usd),
            "success_rate": stats.success_rate,
            "first_pass_rate": stats.first_pass_rate,
        },
        "ledger": {
            "feature": scope.key["feature"],
            "tasks": scope.tasks,
            "successes": scope.successes,
            "cost_usd": str(scope.total_cost_usd),
            "wasted_cost_usd": str(scope.wasted_cost_usd),
            "cost_per_task_usd": str(scope.cost_per_task_usd.mean),
            "cost_per_successful_task_usd": str(scope.cost_per_successful_task_usd),
            "success_rate": str(scope.success_rate),
            "first_pass_rate": str(scope.first_pass_rate),
        },
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]), sys.argv[2])))
